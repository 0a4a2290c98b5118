"""Evaluation loops: many prompts in, one tidy DataFrame out, batched through the engine.

Every row runs as its own request on the engine, so rows share the model through continuous
batching. Finished rows are appended to an optional checkpoint file as they complete, so an
interrupted run resumes without redoing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mlxnb._blocking import run_blocking
from mlxnb._engine import Engine, ModelHandle, ModelPool, default_pool
from mlxnb._engine.request import RequestMeta
from mlxnb._evaluate_choices import answer_index, choice_columns, row_choices
from mlxnb._evaluate_judge import grade, is_graded_key
from mlxnb._evaluate_rows import (
    LOGPROB_DTYPES,
    RESULT_DTYPES,
    Prompts,
    RowTask,
    ScorerSpec,
    grid_points,
    input_rows,
    result_columns,
    row_seed,
    scorer_items,
    task_key,
)
from mlxnb._ids import new_run_id
from mlxnb.errors import InvalidRequestError, MlxnbError, ModelNotFoundError
from mlxnb.events import Turn
from mlxnb.scorers import Judge


@dataclass
class EvaluationRun:
    """The state of one :func:`evaluate` call; rows survive interruption."""

    engines: dict[str, Engine | ModelHandle]
    tasks: list[RowTask]
    tools: Any
    enable_thinking: bool | None
    sampling: dict[str, Any]
    scorers: list[tuple[str, Callable[..., Any]]]
    concurrency: int
    checkpoint: Path | None
    progress: bool
    run_id: str
    row_options: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    choices: str | None = None
    answer: str | None = None
    judges: list[Judge] = field(default_factory=list)
    pool: ModelPool | None = None
    samples: int = 1
    release: Callable[[str], None] = lambda label: None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False

    def load_checkpoint(self) -> None:
        """Take finished rows (and the run id) from the checkpoint file, if any."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        wanted = {task.key for task in self.tasks}
        for line in self.checkpoint.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if row.get("_key") in wanted:
                self.rows[row["_key"]] = row
                self.run_id = row.get("run_id") or self.run_id

    async def execute(self) -> None:
        """Run every unfinished task, at most ``concurrency`` at a time."""
        from tqdm.auto import tqdm

        todo = [task for task in self.tasks if task.key not in self.rows]
        bar = tqdm(
            total=len(self.tasks),
            initial=len(self.tasks) - len(todo),
            desc="evaluate",
            unit="row",
            disable=not self.progress,
        )
        limit = asyncio.Semaphore(self.concurrency)
        started = time.perf_counter()
        tokens = 0

        async def one(task: RowTask) -> None:
            nonlocal tokens
            async with limit:
                row = await self._run(task)
            self._keep(task, row)
            tokens += int(row.get("completion_tokens") or 0)
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - started):.1f}", refresh=False)
            bar.update(1)

        try:
            # One model at a time (all its rows batched, then it is released) so several
            # models never have to be resident together.
            for label in dict.fromkeys(task.model for task in self.tasks):
                try:
                    await self._gather([one(task) for task in todo if task.model == label])
                finally:
                    self.release(label)
        finally:
            bar.close()
        for judge in self.judges:
            await self._judge(judge)

    async def _judge(self, judge: Judge) -> None:
        """Grade every finished row with ``judge``'s model (then release it, if loaded here)."""
        models = _models(judge.model, self.pool)
        ((label, engine),) = models.engines.items()
        rows = list(self.rows.values())
        try:
            await grade(
                judge, rows, engine, self.concurrency, self.run_id, model=label, keep=self._save
            )
        finally:
            models.release(label)

    async def _gather(self, rows: list[Any]) -> None:
        pending = [asyncio.ensure_future(row) for row in rows]
        try:
            await asyncio.gather(*pending)
        except asyncio.CancelledError:
            self.interrupted = True
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise

    async def _run(self, task: RowTask) -> dict[str, Any]:
        if self.choices is not None:
            return await self._score(task, self.choices)
        engine = self.engines[task.model]
        started = time.perf_counter()
        turn: Turn | None = None
        error: BaseException | None = None
        try:
            extra = dict(self.row_options(task.inputs)) if self.row_options else {}
            tools = extra.pop("tools", self.tools)
            thinking = extra.pop("enable_thinking", self.enable_thinking)
            options = {**self.sampling, **task.params, **extra}
            if options.get("seed") is not None:
                options["seed"] = row_seed(options["seed"], task.key)
            turn = await engine.agenerate(
                task.messages,
                tools,
                thinking,
                meta=RequestMeta(
                    source="eval",
                    run_id=self.run_id,
                    # The samples of one prompt are consecutive tasks: they prefill it once.
                    sample_group=f"{self.run_id}/{task.order - task.sample}"
                    if self.samples > 1
                    else None,
                ),
                **options,
            )
        except Exception as exc:  # a failing row is recorded and the run goes on
            error = exc
        row = {**task.inputs, "model": task.model, **task.params, "sample": task.sample}
        row.update(result_columns(turn, time.perf_counter() - started, error))
        if self.sampling.get("response_format") or self.sampling.get("json_schema"):
            row["parsed"] = None if turn is None else turn.parsed
        for name, scorer in self.scorers:
            try:
                row[name] = scorer(row)
            except Exception as exc:  # a broken scorer must not lose the row
                row[name] = None
                warnings.warn(f"scorer {name!r} failed: {exc!r}", stacklevel=2)
        return row

    async def _score(self, task: RowTask, column: str) -> dict[str, Any]:
        """A multiple-choice row: each choice's log-likelihood after the prompt, no decoding."""
        engine = self.engines[task.model]
        started = time.perf_counter()
        row: dict[str, Any] = {**task.inputs, "model": task.model, "sample": task.sample}
        try:
            choices = row_choices(task.inputs, column, task.order)
            prompt = task.inputs.get("prompt")
            context = prompt if isinstance(prompt, str) else self._rendered(engine, task)
            meta = RequestMeta(source="eval", run_id=self.run_id)
            scores = await engine.ascore(context, choices, meta=meta)
            answer = None
            if self.answer is not None:
                answer = answer_index(task.inputs.get(self.answer), choices)
            row.update(choice_columns(scores, answer, graded=self.answer is not None))
            row["duration"] = time.perf_counter() - started
        except Exception as exc:  # a failing row is recorded and the run goes on
            row.update(result_columns(None, time.perf_counter() - started, exc))
        return row

    def _rendered(self, engine: Engine | ModelHandle, task: RowTask) -> list[int]:
        """A chat row's context: its messages through the chat template, ready for the answer."""
        template = engine.tokenizer.apply_chat_template
        kwargs = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return list(template(task.messages, add_generation_prompt=True, **kwargs))

    def _keep(self, task: RowTask, row: dict[str, Any]) -> None:
        row = {**row, "_key": task.key, "run_id": self.run_id}
        self.rows[task.key] = row
        self._save(row)

    def _save(self, row: dict[str, Any]) -> None:
        """Append ``row`` to the checkpoint (a later line for the same key replaces it)."""
        if self.checkpoint is not None:
            with self.checkpoint.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
                handle.flush()

    def frame(self) -> pd.DataFrame:
        """The finished rows in input order, with explicit dtypes."""
        order = {task.key: task.order for task in self.tasks}
        rows = sorted(
            (r for k, r in self.rows.items() if k in order), key=lambda r: order[r["_key"]]
        )
        frame: pd.DataFrame = pd.DataFrame(
            [{k: v for k, v in r.items() if k != "_key" and not is_graded_key(k)} for r in rows]
        )
        for column, dtype in RESULT_DTYPES.items():
            if column not in frame.columns:
                frame[column] = pd.Series([None] * len(frame), dtype=dtype)
            else:
                frame[column] = frame[column].astype(dtype)
        for column, dtype in LOGPROB_DTYPES.items():
            if column in frame.columns:
                frame[column] = frame[column].astype(dtype)
        if "run_id" not in frame.columns:
            frame["run_id"] = self.run_id
        frame["run_id"] = frame["run_id"].astype("string")
        frame.attrs["run_id"] = self.run_id
        frame.attrs["interrupted"] = self.interrupted
        return frame


@dataclass(frozen=True)
class _Models:
    """The models of one evaluation by row label, and which of them it loads itself."""

    engines: dict[str, Engine | ModelHandle]
    pool: ModelPool
    loaded_here: frozenset[str]

    def release(self, label: str) -> None:
        """Unload a model this evaluation loaded, once its rows are done."""
        if label in self.loaded_here:
            with contextlib.suppress(MlxnbError):  # busy elsewhere: the pool keeps it
                self.pool.unload(label)


def _remote(spec: Any) -> bool:
    """Whether ``spec`` is a model served elsewhere (:func:`mlxnb.endpoint`, ``endpoints``)."""
    return type(spec).__module__.startswith("mlxnb._remote.")


def _models(model: Any, pool: ModelPool | None) -> _Models:
    pool = pool or default_pool()
    specs = model if isinstance(model, (list, tuple)) else [model]
    engines: dict[str, Engine | ModelHandle] = {}
    loaded_here: set[str] = set()
    for spec in specs:
        if spec is None:
            from mlxnb._engine.models import default_model

            spec = default_model()
        if isinstance(spec, (Engine, ModelHandle)):
            engines[spec.model_id] = spec
            continue
        if _remote(spec):  # mlxnb.endpoint(s): served elsewhere, nothing to load or release
            engines[spec.model_id] = spec
            continue
        try:
            model_name, profile = pool.lookup(str(spec))
            name = profile.name if profile is not None else model_name
        except ModelNotFoundError:
            name = pool.register(spec)  # Python may name any local model or repo
        handle = pool.handle(name)
        if pool.state(handle.model)["state"] not in (
            "ready",
            "resolving",
            "downloading",
            "loading",
        ):
            loaded_here.add(handle.model_id)
        engines[handle.model_id] = handle
    return _Models(engines, pool, frozenset(loaded_here))


@dataclass(frozen=True, kw_only=True)
class EvaluationSpec:
    """Everything one evaluation call asks for; :func:`evaluate` and :func:`aevaluate` share it.

    The attributes are the keyword arguments of :func:`evaluate` (see there).
    """

    prompts: Prompts
    model: Any = None
    system: str | None = None
    images: str | None = None
    tools: Any = None
    n: int = 1
    scorers: ScorerSpec = ()
    grid: Mapping[str, Sequence[Any]] | None = None
    concurrency: int = 16
    checkpoint: str | Path | None = None
    progress: bool = True
    enable_thinking: bool | None = None
    run_id: str | None = None
    row_options: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    pool: ModelPool | None = None
    choices: str | None = None
    answer: str | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1 or self.concurrency < 1:
            raise InvalidRequestError("n and concurrency must be at least 1")


def _prepare(spec: EvaluationSpec) -> EvaluationRun:
    for name, column in (("choices", spec.choices), ("answer", spec.answer)):
        if column is not None and not (
            isinstance(spec.prompts, pd.DataFrame) and column in spec.prompts.columns
        ):
            raise InvalidRequestError(f"{name}={column!r} names a column the prompts lack")
    if spec.answer is not None and spec.choices is None:
        raise InvalidRequestError("answer= grades multiple-choice rows: pass choices= too")
    inputs = input_rows(spec.prompts, spec.system, spec.images)
    scored = scorer_items(spec.scorers)
    models = _models(spec.model, spec.pool)
    engines = models.engines
    tasks: list[RowTask] = []
    for label, params, (index, (row, messages)), sample in itertools.product(
        engines, grid_points(spec.grid), enumerate(inputs), range(spec.n)
    ):
        key = task_key(label, params, index, sample, messages)
        tasks.append(RowTask(key, len(tasks), row, label, params, sample, messages))
    run = EvaluationRun(
        engines=engines,
        tasks=tasks,
        tools=spec.tools,
        enable_thinking=spec.enable_thinking,
        sampling=dict(spec.sampling),
        scorers=[(name, s) for name, s in scored if not isinstance(s, Judge)],
        judges=[replace(s, name=name) for name, s in scored if isinstance(s, Judge)],
        pool=spec.pool,
        samples=spec.n,
        concurrency=spec.concurrency,
        checkpoint=Path(spec.checkpoint) if spec.checkpoint is not None else None,
        progress=spec.progress,
        run_id=spec.run_id or new_run_id(),
        row_options=spec.row_options,
        choices=spec.choices,
        answer=spec.answer,
        release=models.release,
    )
    run.load_checkpoint()
    return run


async def aevaluate(
    prompts: Prompts,
    *,
    model: Any = None,
    system: str | None = None,
    images: str | None = None,
    tools: Any = None,
    n: int = 1,
    scorers: ScorerSpec = (),
    grid: Mapping[str, Sequence[Any]] | None = None,
    concurrency: int = 16,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    enable_thinking: bool | None = None,
    run_id: str | None = None,
    row_options: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    pool: ModelPool | None = None,
    choices: str | None = None,
    answer: str | None = None,
    **sampling: Any,
) -> pd.DataFrame:
    """Async twin of :func:`evaluate`; cancelling it keeps finished rows in the checkpoint."""
    # The parameters are the spec's fields by name; the dataclass rejects any drift.
    run = _prepare(EvaluationSpec(**locals()))
    await run.execute()
    return run.frame()


def evaluate(
    prompts: Prompts,
    *,
    model: Any = None,
    system: str | None = None,
    images: str | None = None,
    tools: Any = None,
    n: int = 1,
    scorers: ScorerSpec = (),
    grid: Mapping[str, Sequence[Any]] | None = None,
    concurrency: int = 16,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    enable_thinking: bool | None = None,
    run_id: str | None = None,
    row_options: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    pool: ModelPool | None = None,
    choices: str | None = None,
    answer: str | None = None,
    **sampling: Any,
) -> pd.DataFrame:
    """Run many prompts through one or more models and return a tidy DataFrame.

    Rows run concurrently through the engine's continuous batching. A failing row records its
    error and the run goes on. Interrupting (Ctrl-C, the kernel's stop button) returns the rows
    finished so far (``df.attrs["interrupted"]`` is True); with ``checkpoint=`` a later call with
    the same arguments resumes without redoing them. Every row is an audit row with source
    ``"eval"`` and the run's id.

    Args:
        prompts: Strings, message lists, or a DataFrame with a ``prompt`` or ``messages``
            column (other columns, such as ``expected``, are kept).
        model: A model or profile name, a path / repo id, an :class:`Engine`, or a list of
            them to compare; ``None`` uses :func:`mlxnb.default_model`. Rows run model by
            model (all of one model's rows batched, then the next), and a model the pool had
            not loaded is unloaded after its rows, so models are never resident together.
        system: A system prompt put before every conversation.
        images: A column of ``prompts`` holding each row's image(s) (PIL images, numpy
            arrays, figures, paths, bytes, data URLs; None for none); needs a vision model.
        tools: OpenAI-style tool definitions offered to the model.
        n: Samples per prompt.
        scorers: Callables ``(row) -> value`` (see :mod:`mlxnb.scorers`), or a dict of them
            by column name; a :func:`scorers.judge <mlxnb.scorers.judge>` grades the rows
            with a second model once they are done (a score and a ``_reasoning`` column).
        grid: Sampling parameters to sweep, e.g. ``{"temperature": [0.0, 0.7]}``.
        concurrency: Most rows in flight at once.
        checkpoint: A JSONL file finished rows are appended to; resumes from it.
        progress: Show a progress bar with live tokens/s.
        enable_thinking: Passed to the chat template.
        run_id: Names the run in the audit log (generated when omitted).
        row_options: Per-row request options computed from the input row, e.g.
            ``lambda row: {"max_tokens": row["budget"]}`` (``tools`` and ``enable_thinking``
            there replace the run's for that row).
        pool: The model pool that loads models by name (default: the kernel's); its memory
            budget bounds what is resident.
        choices: A column of ``prompts`` listing each row's choices (strings): the row is
            scored, not generated: each choice's log-likelihood after the prompt (raw text as
            the context; a chat row through its chat template), batched and sharing the
            prompt's KV cache. Adds ``logprob_<i>`` and ``logprob_norm_<i>`` (per token) for
            each choice and ``predicted`` / ``predicted_norm`` (the index of the best one).
        answer: With ``choices``, a column holding the right choice (its index or its text):
            adds ``correct`` and ``correct_norm``.
        **sampling: Sampling options for every row (``max_tokens``, ``temperature``, …).
            ``seed=`` gives each row its own seed derived from it and the row (model, grid
            point, prompt, sample): the whole run reproduces, in any order or concurrency.

    Returns:
        One row per (model, grid point, prompt, sample): the input columns, ``model``, the grid
        parameters, ``sample``, ``content``, ``reasoning``, ``tool_calls`` (JSON),
        ``finish_reason``, token counts, ``time_to_first_token``, ``duration``,
        ``tokens_per_s``, ``error``, ``run_id`` and one column per scorer; with
        ``logprobs=True``, also ``mean_logprob``, ``min_logprob`` and ``perplexity``; with
        ``response_format=`` (a pydantic model class or a JSON schema), ``parsed`` (the
        model's instances, or JSON values; ``None`` where an answer does not parse).
    """
    # The parameters are the spec's fields by name; the dataclass rejects any drift.
    run = _prepare(EvaluationSpec(**locals()))
    try:
        run_blocking(run.execute(), name="mlxnb-evaluate")
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.interrupted = True
        warnings.warn(
            f"evaluation interrupted: returning {len(run.rows)} of {len(run.tasks)} rows",
            stacklevel=2,
        )
    return run.frame()
