"""The engine on a real tiny model: events, batching, cancellation, errors, threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

import mlxnb
from mlxnb.events import ContentDelta, Done, ThinkingDelta, ToolCall, ToolCallDelta
from mlxnb.testing import ForcedOutput, forced_output

HI = [{"role": "user", "content": "hi"}]
WARM_UP = [{"role": "user", "content": "A first request, so that the engine is warm."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def collect(engine: mlxnb.Engine, **kwargs: Any) -> list[Any]:
    return [event async for event in engine.stream(HI, **kwargs)]


async def test_thinking_content_and_tool_call_arrive_in_order(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    script = (
        "<think>\nThe user wants weather.\n</think>\n\nLet me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    events = await collect(engine, tools=[WEATHER_TOOL], logits_processors=[force(script)])
    kinds = [type(e) for e in events]
    first = {kind: kinds.index(kind) for kind in set(kinds)}
    assert first[ThinkingDelta] < first[ContentDelta] < first[ToolCallDelta] < first[ToolCall]
    assert kinds[-1] is Done and kinds.count(Done) == 1
    turn = mlxnb.events.collect(events)
    assert turn.reasoning == "The user wants weather.\n"
    assert turn.content == "Let me check.\n"
    assert [(c.name, c.arguments) for c in turn.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert turn.finish_reason == "tool_calls"
    assert turn.usage.completion_tokens == len(engine.tokenizer.encode(script)) + 1


def test_blocking_generate_matches_streaming(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    script = "<think>a</think>Streaming and blocking agree."
    streamed = asyncio.run(collect(engine, logits_processors=[force(script)]))
    blocking = engine.generate(HI, logits_processors=[force(script)])
    assert (
        mlxnb.events.collect(streamed).content
        == blocking.content
        == ("Streaming and blocking agree.")
    )
    assert blocking.reasoning == "a"


def scripts(n: int) -> list[str]:
    return [f"Answer number {i}: " + " ".join(["token"] * (5 + 3 * i)) for i in range(n)]


@pytest.mark.parametrize("n", [2, 8])
def test_concurrent_streams_from_threads_and_loops_do_not_cross_talk(
    engine: mlxnb.Engine, n: int
) -> None:
    texts = scripts(n)
    results: dict[int, tuple[str, float, float]] = {}
    barrier = threading.Barrier(n)

    async def one(i: int) -> None:
        proc = forced_output(engine.tokenizer, texts[i])
        barrier.wait()
        parts, first = [], None
        async for event in engine.stream(HI, logits_processors=[proc]):
            first = first or time.perf_counter()
            if isinstance(event, ContentDelta):
                parts.append(event.text)
        results[i] = ("".join(parts), first or 0.0, time.perf_counter())

    threads = [threading.Thread(target=asyncio.run, args=(one(i),)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert {i: r[0] for i, r in results.items()} == dict(enumerate(texts))
    # Batched, not one after another: every stream started before any stream ended.
    assert max(r[1] for r in results.values()) < min(r[2] for r in results.values())


@pytest.fixture
def single_slot_engine(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_model_dir, max_batch=1, audit=False) as engine:
        yield engine


async def test_cancel_frees_the_slot_within_a_step_and_queued_request_runs(
    single_slot_engine: mlxnb.Engine,
) -> None:
    engine = single_slot_engine
    long_proc = forced_output(engine.tokenizer, "word " * 2000, then="free")
    short_proc = forced_output(engine.tokenizer, "queued request done")
    stream = engine.stream(HI, logits_processors=[long_proc], max_tokens=5000)
    seen = 0
    queued_task = None
    async for event in stream:
        seen += isinstance(event, ContentDelta)
        if seen == 1:
            # Queued behind the long request: the engine has a single slot.
            queued_task = asyncio.create_task(engine.agenerate(HI, logits_processors=[short_proc]))
        if seen == 5:
            break
    await stream.aclose()
    # Closing has set the request's cancel flag. How far the worker got before it is not the
    # cancel's doing: deliveries batch up to a wake interval of tokens. From the flag on, the
    # worker may finish only the step mlx-lm already has in flight.
    steps_at_cancel = long_proc.step
    assert queued_task is not None
    queued = await queued_task
    assert queued.content == "queued request done"
    assert short_proc.step > 0
    await asyncio.sleep(0.2)
    assert long_proc.step <= steps_at_cancel + 1, "the cancelled request kept generating"
    assert engine.pending == 0


async def test_task_cancellation_ends_generation(single_slot_engine: mlxnb.Engine) -> None:
    engine = single_slot_engine
    proc = forced_output(engine.tokenizer, "x " * 3000, then="free")

    async def consume() -> None:
        async for _ in engine.stream(HI, logits_processors=[proc], max_tokens=5000):
            pass

    task = asyncio.create_task(consume())
    while proc.step < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    steps_at_cancel = proc.step  # the stream's cleanup has set the cancel flag
    after = await engine.agenerate(HI, max_tokens=3)
    assert after.finish_reason == "length"
    assert proc.step <= steps_at_cancel + 1, "the cancelled request kept generating"


class Boom(RuntimeError):
    pass


def exploding(tokens: Any, logits: Any) -> Any:
    raise Boom("processor exploded")


async def test_worker_exception_reaches_consumer_and_engine_recovers(
    engine: mlxnb.Engine,
) -> None:
    with pytest.raises(mlxnb.GenerationError) as info:
        await collect(engine, logits_processors=[exploding])
    assert isinstance(info.value.__cause__, Boom)
    assert (await engine.agenerate(HI, max_tokens=2)).finish_reason == "length"


def test_closed_engine_refuses_requests(tiny_model_dir: Path) -> None:
    engine = mlxnb.load(tiny_model_dir, audit=False)
    engine.close()
    engine.close()
    with pytest.raises(mlxnb.EngineClosedError):
        engine.generate(HI)
    with pytest.raises(mlxnb.EngineClosedError):
        asyncio.run(collect(engine))


def test_close_ends_a_running_stream(tiny_model_dir: Path) -> None:
    engine = mlxnb.load(tiny_model_dir, audit=False)
    proc = forced_output(engine.tokenizer, "y " * 3000, then="free")
    stream = engine.stream_sync(HI, logits_processors=[proc], max_tokens=5000)
    next(stream)
    engine.close()
    with pytest.raises(mlxnb.EngineClosedError):
        list(stream)


def test_every_mlx_call_happens_on_the_engine_thread(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    for name in ("eval", "async_eval", "load"):
        original = getattr(mx, name)

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(mx, name, spy)
    with mlxnb.load(tiny_model_dir, audit=False) as engine:
        engine.generate(HI, max_tokens=4)
        asyncio.run(collect(engine, max_tokens=4))
    assert threads == {"mlxnb-engine"}


async def test_follow_up_turn_reuses_the_prompt_cache(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    history = [{"role": "user", "content": "Tell me something about caches, please."}]
    first = await engine.agenerate(history, logits_processors=[force("Caches keep work.")])
    history += [first.to_message(), {"role": "user", "content": "And more?"}]
    second = await engine.agenerate(history, logits_processors=[force("More.")])
    assert second.usage.cached_tokens >= first.usage.prompt_tokens - 1
    assert second.usage.cached_tokens < second.usage.prompt_tokens


async def test_stop_strings_end_the_output(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    turn = await engine.agenerate(
        HI, logits_processors=[force("alpha beta gamma delta")], stop=["gamma"]
    )
    assert turn.content == "alpha beta "
    assert turn.finish_reason == "stop"


@pytest.mark.parametrize("max_tokens", [1, 7])
async def test_max_tokens_cuts_off_with_length(engine: mlxnb.Engine, max_tokens: int) -> None:
    turn = await engine.agenerate(HI, max_tokens=max_tokens, temperature=0.8, seed=1)
    assert turn.finish_reason == "length"
    assert turn.usage.completion_tokens == max_tokens


async def test_seeded_sampling_is_reproducible(engine: mlxnb.Engine) -> None:
    runs = [await engine.agenerate(HI, max_tokens=12, temperature=1.0, seed=7) for _ in range(2)]
    other = await engine.agenerate(HI, max_tokens=12, temperature=1.0, seed=8)
    assert runs[0].content == runs[1].content
    assert other.content != runs[0].content


@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("top_k", [151_669, 890_640])  # the tokenizer's length; far past it
async def test_a_top_k_past_the_vocabulary_filters_nothing_and_breaks_nothing(
    engine: mlxnb.Engine, top_k: int, seed: int | None
) -> None:
    # mlx-lm's top-k raises inside a compiled function, and MLX then fails every later
    # sampled request in the process ("eval an array without a primitive").
    sampled = {"max_tokens": 4, "temperature": 1.0, "seed": seed}
    wide = await engine.agenerate(HI, top_k=top_k, **sampled)
    after = await engine.agenerate(HI, top_k=5, **sampled)
    assert wide.finish_reason == after.finish_reason == "length"
    assert wide.usage.completion_tokens == after.usage.completion_tokens == 4


async def test_enable_thinking_reaches_the_template(engine: mlxnb.Engine) -> None:
    on = await engine.agenerate(HI, max_tokens=1, enable_thinking=True)
    off = await engine.agenerate(HI, max_tokens=1, enable_thinking=False)
    # Qwen3's template closes an empty <think></think> block when thinking is off.
    assert off.usage.prompt_tokens > on.usage.prompt_tokens


async def test_tools_reach_the_template(engine: mlxnb.Engine) -> None:
    plain = await engine.agenerate(HI, max_tokens=1)
    with_tools = await engine.agenerate(HI, tools=[WEATHER_TOOL], max_tokens=1)
    tokens = len(engine.tokenizer.encode(json.dumps(WEATHER_TOOL)))
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + tokens


@pytest.mark.parametrize(
    ("messages", "options"),
    [
        ([], {}),
        ([{"content": "no role"}], {}),
        (HI, {"temperature": -1}),
        (HI, {"max_tokens": 0}),
        (HI, {"top_p": 0}),
    ],
)
async def test_bad_requests_raise_invalid_request(
    engine: mlxnb.Engine, messages: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    with pytest.raises(mlxnb.InvalidRequestError):
        async for _ in engine.stream(messages, **options):
            pass


def test_missing_model_names_what_was_tried(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(mlxnb.ModelNotFoundError, match="no-such-model"):
        mlxnb.load(missing, audit=False)


def test_unknown_repo_id_offline_is_not_found() -> None:
    with pytest.raises(mlxnb.ModelNotFoundError, match="not-a-real-org/not-a-model"):
        mlxnb.load("not-a-real-org/not-a-model", audit=False)


def test_broken_model_is_a_load_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(mlxnb.ModelLoadError, match="broken"):
        mlxnb.load(broken, audit=False)


def test_background_load_reports_readiness(tiny_model_dir: Path) -> None:
    engine = mlxnb.load(tiny_model_dir, wait=False, audit=False)
    try:
        engine.wait_ready(60)
        assert engine.ready and "ready" in repr(engine)
        assert engine.supports_thinking and engine.supports_tools
    finally:
        engine.close()


async def test_a_failing_request_leaves_its_batch_neighbours_alone(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    calls = 0

    def explode_later(tokens: Any, logits: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Boom("late failure")
        return logits

    healthy = asyncio.create_task(engine.agenerate(HI, logits_processors=[force("steady " * 30)]))
    with pytest.raises(mlxnb.GenerationError) as info:
        await engine.agenerate(HI, logits_processors=[explode_later], max_tokens=200)
    assert isinstance(info.value.__cause__, Boom)
    assert not healthy.done(), "the healthy request should still be generating"
    turn = await healthy
    assert (turn.content, turn.finish_reason) == ("steady " * 30, "stop")


async def test_raw_prompt_completion_skips_the_chat_template(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput]
) -> None:
    text = "Once upon a time"
    turn = await engine.agenerate([], prompt=text, logits_processors=[force(" there was")])
    assert turn.content == " there was"  # the continuation of the text keeps its space
    assert turn.usage.prompt_tokens == len(engine.tokenizer.encode(text))


async def test_unknown_option_is_a_type_error(engine: mlxnb.Engine) -> None:
    with pytest.raises(TypeError, match="temprature"):
        await engine.agenerate(HI, temprature=0.5)


def test_engines_reuse_parked_threads(tiny_model_dir: Path) -> None:
    def engine_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "mlxnb-engine")

    before = engine_threads()
    for _ in range(3):
        with mlxnb.load(tiny_model_dir, audit=False) as engine:
            assert engine.generate(HI, max_tokens=1).finish_reason == "length"
        with pytest.raises(mlxnb.EngineClosedError):
            _ = engine.tokenizer
    # A closed engine parks its thread for the next one: three in a row add at most one.
    assert engine_threads() <= before + 1


@pytest.fixture
def small_prefill_engine(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_model_dir, prefill_step=8, solo_fast_path=True, audit=False) as engine:
        yield engine


@pytest.mark.parametrize("join_after", [0, 3, 12])
async def test_a_lone_request_joins_the_batch_without_losing_or_repeating_tokens(
    small_prefill_engine: mlxnb.Engine, join_after: int
) -> None:
    """The first request decodes alone, then hands over when the second arrives.

    ``join_after == 0`` hands over while the long prompt is still being prefilled.
    """
    engine = small_prefill_engine
    long_prompt = [{"role": "user", "content": "Please count slowly. " * 30}]
    first_script = " ".join(f"w{i}" for i in range(60))
    first = engine.stream(
        long_prompt, logits_processors=[forced_output(engine.tokenizer, first_script)]
    )
    parts: list[str] = []
    second: asyncio.Task[Any] | None = None
    if join_after == 0:
        second = asyncio.create_task(
            engine.agenerate(
                HI, logits_processors=[forced_output(engine.tokenizer, "second answer")]
            )
        )
    async for event in first:
        if isinstance(event, ContentDelta):
            parts.append(event.text)
            if len(parts) == join_after and second is None:
                second = asyncio.create_task(
                    engine.agenerate(
                        HI, logits_processors=[forced_output(engine.tokenizer, "second answer")]
                    )
                )
    assert second is not None
    assert "".join(parts) == first_script
    assert (await second).content == "second answer"


async def test_a_question_asked_while_a_lone_request_decodes_is_answered_between_its_steps(
    small_prefill_engine: mlxnb.Engine,
) -> None:
    """The lone request's own loop takes no command, so it must leave to the worker's loop as
    soon as one is queued: a question (or a newcomer) waits a step, not the whole answer."""
    engine = small_prefill_engine
    script = " ".join(f"w{i}" for i in range(400))
    stream = engine.stream(HI, logits_processors=[forced_output(engine.tokenizer, script)])
    worker = engine._worker
    parts: list[str] = []
    answered: list[list[int]] = []
    async for event in stream:
        if isinstance(event, ContentDelta):
            parts.append(event.text)
            if len(parts) == 3:
                running = await asyncio.to_thread(
                    worker.ask, lambda: [a.generated for a in worker._active.values()], 10.0
                )
                answered.append(running)
    assert "".join(parts) == script
    # Answered while the request was still decoding, with tokens still to come.
    ((generated,),) = answered
    assert generated < 400


@pytest.fixture
def solo_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tokens each single-sequence model call gave (0: a prefill chunk), in order."""
    from mlxnb._engine.solo import SoloDecoder

    calls: list[int] = []
    original_advance = SoloDecoder.advance

    def counting_advance(self: SoloDecoder) -> list[int]:
        tokens = original_advance(self)
        calls.append(len(tokens))
        return tokens

    monkeypatch.setattr(SoloDecoder, "advance", counting_advance)
    return calls


class HeldBurst:
    """Requests for forced answers from threads: the first, then the others once the first
    is held inside the worker (``first_held``), all queued before it is let go."""

    def __init__(
        self, engine: mlxnb.Engine, scripts: list[str], first_held: threading.Event
    ) -> None:
        self.engine, self.scripts, self.first_held = engine, scripts, first_held
        self.queued = threading.Event()  # the worker's hold waits on this
        self.results: dict[int, Any] = {}
        self.threads: list[threading.Thread] = []

    def _ask(self, index: int) -> None:
        processor = forced_output(self.engine.tokenizer, self.scripts[index])
        self.results[index] = self.engine.generate(HI, logits_processors=[processor])

    def turns(self) -> list[Any]:
        """Send the first, then the others; let the first go once they are queued.

        Returns:
            Every request's turn, in order.
        """
        first = threading.Thread(target=self._ask, args=(0,))
        first.start()
        assert self.first_held.wait(10)
        others = range(1, len(self.scripts))
        self.threads = [first, *(threading.Thread(target=self._ask, args=(i,)) for i in others)]
        for thread in self.threads[1:]:
            thread.start()
        deadline = time.monotonic() + 10
        while self.engine._worker._commands.qsize() < len(others):
            assert time.monotonic() < deadline, "the others never queued"
            time.sleep(0.001)
        self.queued.set()
        for thread in self.threads:
            thread.join(30)
        return [self.results[i] for i in range(len(self.scripts))]


def test_a_burst_that_arrives_while_its_first_request_is_admitted_is_prefilled_together(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, solo_calls: list[int]
) -> None:
    """The first request of a burst wakes the worker alone; the rest queue while the worker
    admits it (looks up its prompt cache). None of them takes the single-sequence path ahead
    of the others: all start in one batch."""
    from mlxnb._engine.prompt_cache import PromptCache

    with mlxnb.load(tiny_model_dir, solo_fast_path=True, audit=False) as engine:
        assert engine.generate(WARM_UP, max_tokens=2).finish_reason == "length"  # HI uncached
        assert solo_calls, "a lone request takes the single-sequence path"
        solo_calls.clear()
        admitting = threading.Event()
        original_fetch = PromptCache.fetch_nearest_cache

        def held_fetch(self: PromptCache, *args: Any) -> Any:
            if not admitting.is_set():
                admitting.set()
                assert burst.queued.wait(10)
            return original_fetch(self, *args)

        monkeypatch.setattr(PromptCache, "fetch_nearest_cache", held_fetch)
        burst = HeldBurst(engine, ["first of the burst", "second one", "and a third"], admitting)
        turns = burst.turns()
    assert [turn.content for turn in turns] == burst.scripts
    assert solo_calls == [], "the burst's first request did not run ahead on its own"


def test_a_prefilled_lone_request_gives_its_first_token_before_newcomers_prefill(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, solo_calls: list[int]
) -> None:
    """Others arrive once the lone request's prompt is in its cache: its first token comes
    from its own next step, not after the batch has prefilled theirs."""
    from mlxnb._engine.solo import SoloDecoder

    with mlxnb.load(tiny_model_dir, solo_fast_path=True, audit=False) as engine:
        assert engine.generate(WARM_UP, max_tokens=2).finish_reason == "length"  # HI uncached
        solo_calls.clear()
        prefilling = threading.Event()
        original_chunk = SoloDecoder._prefill_chunk

        def held_chunk(self: SoloDecoder) -> None:
            original_chunk(self)
            if not prefilling.is_set():
                prefilling.set()
                assert burst.queued.wait(10)

        monkeypatch.setattr(SoloDecoder, "_prefill_chunk", held_chunk)
        scripts = ["first and already prefilled", "second one", "and a third"]
        burst = HeldBurst(engine, scripts, prefilling)
        turns = burst.turns()
    assert [turn.content for turn in turns] == scripts
    # the prefill chunk, then the first token's step (with the second computed ahead)
    assert solo_calls == [0, 1]


@pytest.mark.parametrize(
    ("max_batch", "expected"),
    [
        # Every waiting prompt in one pass (GPUs' default): they wait for the first token.
        (8, ["insert", "token", "insert", "insert"]),
        # Fewer per pass (8 of 32, the CPU's default): mlx-lm's queue mixes waves anyway.
        (32, ["insert", "insert", "insert", "token"]),
    ],
    ids=["one-pass-prefill", "prefill-in-groups"],
)
def test_newcomers_start_once_the_batch_has_given_its_due_first_tokens(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, max_batch: int, expected: list[str]
) -> None:
    """Others arrive while a request's prompt is being prefilled in the batch: they wait until
    its first token is out, instead of being prefilled in the pass that would give it (when a
    pass takes every waiting prompt; with fewer, they join at once as before)."""
    from mlx_lm.generate import BatchGenerator

    with mlxnb.load(
        tiny_model_dir, solo_fast_path=False, max_batch=max_batch, audit=False
    ) as engine:
        assert engine.generate(WARM_UP, max_tokens=2).finish_reason == "length"
        order: list[str] = []
        prefilling = threading.Event()
        original_next, original_insert = BatchGenerator.next, BatchGenerator.insert

        def held_next(self: BatchGenerator) -> Any:
            result = original_next(self)
            if not prefilling.is_set():
                prefilling.set()
                assert burst.queued.wait(10)
            order.extend("token" for _ in result[1])
            return result

        def recorded_insert(self: BatchGenerator, *args: Any, **kwargs: Any) -> Any:
            order.append("insert")
            return original_insert(self, *args, **kwargs)

        monkeypatch.setattr(BatchGenerator, "next", held_next)
        monkeypatch.setattr(BatchGenerator, "insert", recorded_insert)
        burst = HeldBurst(engine, ["the first one", "second one", "and a third"], prefilling)
        turns = burst.turns()
    assert [turn.content for turn in turns] == burst.scripts
    assert order[:4] == expected


def test_prompts_render_on_the_callers_threads_and_the_template_errors_before_queueing(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight threads ask at once: each prompt is rendered on its own thread (the worker only
    admits it), each the same tokens as rendered alone; a prompt the template rejects is
    refused on the caller's thread and never reaches the worker."""
    with mlxnb.load(tiny_model_dir, audit=False) as engine:
        assert engine.generate(WARM_UP, max_tokens=1).finish_reason == "length"
        backend = engine._worker.backend
        assert backend is not None
        asks = [[{"role": "user", "content": f"question {i}: " + "word " * i}] for i in range(8)]
        alone = [len(backend.render(messages, None, None).tokens) for messages in asks]
        rendered_on: list[str] = []
        original_render = backend.render

        def recording_render(*args: Any, **kwargs: Any) -> Any:
            rendered_on.append(threading.current_thread().name)
            return original_render(*args, **kwargs)

        monkeypatch.setattr(backend, "render", recording_render)
        turns: dict[int, Any] = {}

        def ask(index: int) -> None:
            turns[index] = engine.generate(asks[index], max_tokens=2)

        threads = [threading.Thread(target=ask, args=(i,), name=f"asker-{i}") for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(rendered_on) == [f"asker-{i}" for i in range(8)]
        assert [turns[i].usage.prompt_tokens for i in range(8)] == alone

        def rejecting_render(*args: Any, **kwargs: Any) -> Any:
            raise mlxnb.InvalidRequestError("the chat template rejected the messages: no")

        monkeypatch.setattr(backend, "render", rejecting_render)
        sent: list[Any] = []
        monkeypatch.setattr(engine._worker, "submit", sent.append)
        with pytest.raises(mlxnb.InvalidRequestError, match="template rejected"):
            engine.generate(HI, max_tokens=2)
        assert sent == [] and engine.pending == 0


async def test_async_callers_render_off_their_loop_and_in_parallel(
    engine: mlxnb.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two streams started together render at once, each on a helper thread. Rendering on the
    caller's loop, or one prompt at a time, breaks the barrier both renders must reach."""
    backend = engine._worker.backend
    assert backend is not None
    original_render = backend.render
    together = threading.Barrier(2, timeout=10)
    rendered_on: list[threading.Thread] = []

    def meeting_render(*args: Any, **kwargs: Any) -> Any:
        rendered_on.append(threading.current_thread())
        together.wait()
        return original_render(*args, **kwargs)

    monkeypatch.setattr(backend, "render", meeting_render)
    turns = await asyncio.gather(
        engine.agenerate(HI, max_tokens=2), engine.agenerate(WARM_UP, max_tokens=2)
    )
    assert [turn.finish_reason for turn in turns] == ["length", "length"]
    assert len(rendered_on) == 2 and threading.current_thread() not in rendered_on
    assert all(thread.name.startswith("mlxnb-submit") for thread in rendered_on)


async def test_a_full_default_executor_does_not_hold_up_requests(engine: mlxnb.Engine) -> None:
    """A notebook's own ``asyncio.to_thread`` calls (or ``ascore``'s waits) may fill the loop's
    default executor: submissions run on the engines' own threads, so a request still goes."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blockers = [loop.run_in_executor(None, release.wait, 60) for _ in range(64)]
    try:
        turn = await asyncio.wait_for(engine.agenerate(HI, max_tokens=2), 30)
    finally:
        release.set()
        await asyncio.gather(*blockers)
    assert turn.finish_reason == "length"


async def test_a_caller_gone_while_its_request_renders_gets_that_request_cancelled(
    engine: mlxnb.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's task is cancelled while its prompt renders on a helper thread: the request
    that thread then queues is cancelled, not generated for nobody."""
    backend = engine._worker.backend
    assert backend is not None
    original_render = backend.render
    rendering, release = threading.Event(), threading.Event()

    def held_render(*args: Any, **kwargs: Any) -> Any:
        rendering.set()
        release.wait(10)
        return original_render(*args, **kwargs)

    original_submit = engine._worker.submit
    queued = threading.Event()

    def noted_submit(request: Any) -> None:
        original_submit(request)
        queued.set()

    monkeypatch.setattr(backend, "render", held_render)
    monkeypatch.setattr(engine._worker, "submit", noted_submit)
    proc = forced_output(engine.tokenizer, "x " * 3000, then="free")
    task = asyncio.create_task(engine.agenerate(HI, logits_processors=[proc], max_tokens=2000))
    while not rendering.is_set():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await asyncio.to_thread(queued.wait, 10)
    deadline = time.monotonic() + 30
    while engine.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert engine.pending == 0
    assert proc.step < 10, "the request ran on after its caller left"


@pytest.mark.parametrize("solo", [True, False])
async def test_solo_and_batched_decoding_agree(tiny_model_dir: Path, solo: bool) -> None:
    with mlxnb.load(tiny_model_dir, solo_fast_path=solo, audit=False) as engine:
        script = "<think>plan</think>Same answer either way."
        turn = await engine.agenerate(
            HI, logits_processors=[forced_output(engine.tokenizer, script)]
        )
        follow = await engine.agenerate(
            [*HI, turn.to_message(), {"role": "user", "content": "again"}], max_tokens=3
        )
        script_tokens = len(engine.tokenizer.encode(script))
    assert (turn.reasoning, turn.content, turn.finish_reason) == (
        "plan",
        "Same answer either way.",
        "stop",
    )
    assert turn.usage.completion_tokens == script_tokens + 1
    assert follow.usage.cached_tokens > 0 and follow.finish_reason == "length"


@pytest.mark.parametrize("thinking", ["", "<think>\nA few words of thought.\n</think>\n\n"])
def test_reasoning_tokens_count_the_tokens_inside_thinking(
    engine: mlxnb.Engine, force: Callable[..., ForcedOutput], thinking: str
) -> None:
    turn = engine.generate(HI, logits_processors=[force(thinking + "The answer.")])
    opened = len(engine.tokenizer.encode(thinking)) if thinking else 0
    # The streaming detokenizer may hold a token's text back by one token.
    assert abs(turn.usage.reasoning_tokens - opened) <= (1 if thinking else 0)
    assert turn.usage.completion_tokens > turn.usage.reasoning_tokens
