"""The ``%%mlx`` cell magic and ``%mlx`` line magic: a cell is a prompt, its output the answer.

``%load_ext mlxnb`` registers them. The prompt goes through the same engine as every other door
(a model or profile name resolves through the kernel's pool), streams into the cell's output
(:mod:`mlxnb._magic_view`), and lands in the audit log with source ``magic``. Interrupting the
kernel cancels the request; what was written so far stays shown.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)

from mlxnb._engine import ModelHandle, ModelPool, default_pool
from mlxnb._engine.download import LoadProgress, notebook_progress
from mlxnb._engine.models import default_model
from mlxnb._engine.request import RequestMeta
from mlxnb._engine.response_format import as_response_format, with_parsed
from mlxnb._magic_view import CellView
from mlxnb.errors import InvalidRequestError, MlxnbError, ModelNotFoundError
from mlxnb.events import TurnBuilder

SOURCE = "magic"
"""The audit rows' ``source`` for turns asked through the magic."""

_VALUED = {"--model": "model", "--system": "system", "--json": "json", "--out": "out"}
_FLAGS = {"--no-think": "no_think"}
_TOKEN = re.compile(r"\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S+)")


@dataclass(frozen=True)
class MagicOptions:
    """The options of one ``%%mlx`` / ``%mlx`` call.

    Attributes:
        model: A model or profile name, a local directory, a repo id, or the name of a
            variable holding an engine (``None``: the magic's default model).
        system: A system prompt.
        json: An expression (usually a name) for a pydantic class or JSON schema: the answer
            is held to it and parsed.
        out: A variable to store the finished :class:`~mlxnb.Turn` in.
        no_think: Ask the model not to think (``enable_thinking=False``).
    """

    model: str | None = None
    system: str | None = None
    json: str | None = None
    out: str | None = None
    no_think: bool = False


def parse_line(line: str) -> tuple[MagicOptions, str]:
    """Split a magic's line into its leading options and the rest (a line magic's prompt).

    Options come first: ``--model NAME``, ``--system TEXT`` (quote it when it has spaces),
    ``--json SCHEMA``, ``--out NAME``, ``--no-think``; ``--name=value`` works too, and ``--``
    ends the options.

    Raises:
        InvalidRequestError: An unknown option, or one without its value.
    """
    values: dict[str, Any] = {}
    position = 0
    while True:
        found = _TOKEN.match(line, position)
        if found is None or not found.group(1).startswith("--"):
            break
        token, position = found.group(1), found.end()
        if token == "--":
            break
        name, equals, value = token.partition("=")
        if name in _FLAGS and not equals:
            values[_FLAGS[name]] = True
            continue
        if name not in _VALUED:
            known = ", ".join([*_VALUED, *_FLAGS])
            raise InvalidRequestError(f"unknown option {token!r}; the options are {known}")
        if not equals:
            following = _TOKEN.match(line, position)
            if following is None:
                raise InvalidRequestError(f"{name} needs a value")
            value, position = following.group(1), following.end()
        values[_VALUED[name]] = _unquote(value)
    return MagicOptions(**values), line[position:].strip()


def _unquote(value: str) -> str:
    if value[:1] in ("'", '"'):
        return shlex.split(value)[0]
    return value


def _fields(text: str) -> Iterator[tuple[str, str | None]]:
    """``text`` as pieces: ``(literal, None)`` and ``("", expression)``, in order."""
    literal: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in "{}" and text[index : index + 2] == char * 2:
            literal.append(char)
            index += 2
        elif char == "{":
            yield "".join(literal), None
            literal = []
            expression, index = _expression(text, index + 1)
            yield "", expression
        else:
            literal.append(char)
            index += 1
    yield "".join(literal), None


def _expression(text: str, start: int) -> tuple[str, int]:
    """The Python expression from ``start`` to the first ``}`` that ends one, and what follows."""
    closing = start
    while (closing := text.find("}", closing)) != -1:
        candidate = text[start:closing].strip()
        if not candidate:
            break
        try:
            compile(candidate, "<cell>", "eval")
        except SyntaxError:
            closing += 1
            continue
        return candidate, closing + 1
    line = text.count("\n", 0, start) + 1
    snippet = text[start - 1 : start + 30].split("\n")[0]
    raise InvalidRequestError(
        f"line {line}: {snippet!r} does not start a Python expression in braces; "
        "write {{ and }} for literal braces"
    )


def expand(text: str, namespace: Mapping[str, Any]) -> str:
    """Fill each ``{expression}`` in ``text`` with its value's ``str()``, as in an f-string.

    Expressions are evaluated in ``namespace`` (the kernel's); ``{{`` and ``}}`` are literal
    braces (a lone ``}`` is kept as is). Conversions and format specs (``!r``, ``:.2f``) are not
    read: write ``{repr(x)}`` or ``{format(x, '.2f')}``.

    Raises:
        InvalidRequestError: A brace that starts no expression, or an expression that fails
            (the message names it and its error).
    """
    scope = namespace if isinstance(namespace, dict) else dict(namespace)
    parts: list[str] = []
    for literal, expression in _fields(text):
        if expression is None:
            parts.append(literal)
            continue
        try:
            value = eval(expression, scope)
        except Exception as error:
            raise InvalidRequestError(
                f"{{{expression}}} failed: {type(error).__name__}: {error}"
            ) from error
        parts.append(str(value))
    return "".join(parts)


def _is_path_or_repo(name: str) -> bool:
    return Path(name).expanduser().exists() or "/" in name or name.startswith(("~", "."))


def resolve_model(name: str, namespace: Mapping[str, Any]) -> Any:
    """What ``--model NAME`` asks: something with the engine's ``stream_sync``.

    A variable of that name holding an engine (or a model handle) comes first; then a model or
    profile the kernel's pool knows; then a local directory or repo id, registered with the
    pool as :func:`mlxnb.chat` registers it.

    Raises:
        ModelNotFoundError: None of these (the message lists the pool's names).
    """
    value = namespace.get(name) if name.isidentifier() else None
    if callable(getattr(value, "stream_sync", None)):
        return value
    pool = default_pool()
    try:
        pool.lookup(name)
    except ModelNotFoundError:
        if not _is_path_or_repo(name):
            raise
        name = pool.register(name)
    return pool.handle(name)


def _response_format(expression: str, namespace: Mapping[str, Any]) -> Any:
    try:
        value = eval(expression, namespace if isinstance(namespace, dict) else dict(namespace))
    except Exception as error:
        raise UsageError(f"--json {expression}: {type(error).__name__}: {error}") from error
    try:
        as_response_format(value)
    except InvalidRequestError as error:
        raise UsageError(f"--json {expression}: {error}") from error
    return value


@contextmanager
def _download_bar(model: Any) -> Iterator[None]:
    """A progress bar while a pooled model downloads, as :func:`mlxnb.load` shows one."""
    pool = getattr(model, "pool", None)
    if not isinstance(model, ModelHandle) or not isinstance(pool, ModelPool) or model.ready:
        yield
        return
    bar = notebook_progress(model.model)
    downloading = False

    def watch(event: LoadProgress) -> None:  # on the pool's loader thread
        nonlocal downloading
        downloading = downloading or event.stage == "downloading"
        if downloading:
            bar(event)

    unwatch = pool.watch(model.model, watch)
    try:
        yield
    finally:
        unwatch()


@magics_class
class MlxMagics(Magics):
    """``%%mlx`` and ``%mlx``: ask a local model from a cell (see :meth:`mlx`)."""

    default: str | None = None
    """The model a call without ``--model`` uses (``None``: :func:`mlxnb.default_model`)."""

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def mlx(self, line: str, cell: str | None = None, local_ns: Any = None) -> Any:
        """Ask a local model; the answer streams into the cell's output as markdown.

        Usage::

            %%mlx [--model NAME] [--system TEXT] [--json SCHEMA] [--out NAME] [--no-think]
            The prompt: the whole cell, with {expression} filled from the kernel's namespace
            (and a function's locals, for ``%mlx`` inside one).

            %mlx [options] A one-line prompt about {df.shape}
            %mlx --model NAME        (alone: the default model of later calls)

        Options:
            --model NAME: a model or profile name, a local directory, a Hugging Face repo id,
                or a variable holding an engine (default: the last ``%mlx --model NAME``
                alone, else ``mlxnb.default_model()``).
            --system TEXT: a system prompt (quoted when it has spaces).
            --json SCHEMA: a pydantic model class or JSON-schema dict in the namespace; the
                answer is held to it, and the parsed value is the cell's result.
            --out NAME: store the finished ``Turn`` in the namespace (also when interrupted).
            --no-think: ask the model not to think.

        ``{{`` and ``}}`` are literal braces. The thinking shows in a collapsible block.
        Interrupting the kernel stops the answer (the request is cancelled; its audit row
        says ``cancelled``) and keeps what was written. Every turn is audited with source
        ``magic``.
        """
        namespace: MutableMapping[str, Any] = self.shell.user_ns if self.shell else {}
        inside = local_ns is not None and local_ns is not namespace  # %mlx in a function
        scope = {**namespace, **local_ns} if inside else namespace
        try:
            options, rest = parse_line(line)
            if cell is not None and rest:
                raise InvalidRequestError(
                    f"%%mlx takes only options on its first line (the prompt is the cell): {rest!r}"
                )
            prompt = (cell if cell is not None else rest).strip()
            if not prompt:
                return self._configure(options)
            prompt = expand(prompt, scope)
            system = None if options.system is None else expand(options.system, scope)
        except InvalidRequestError as error:
            raise UsageError(str(error)) from error
        if options.out is not None and not options.out.isidentifier():
            raise UsageError(f"--out {options.out}: not a variable name")
        response_format = None if options.json is None else _response_format(options.json, scope)
        model = self._model(options.model, scope)
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": prompt})
        return self._ask(model, messages, options, response_format, namespace)

    def _configure(self, options: MagicOptions) -> None:
        if options.model is None or options != MagicOptions(model=options.model):
            raise UsageError("nothing to ask: write a prompt (see %mlx? for the options)")
        self._model(options.model, self.shell.user_ns if self.shell else {})
        self.default = options.model
        print(f"%mlx and %%mlx now use {options.model}")

    def _model(self, name: str | None, namespace: Mapping[str, Any]) -> Any:
        if name is None:
            if self.default is None:
                self.default = os.fspath(default_model())
            name = self.default
        try:
            return resolve_model(name, namespace)
        except MlxnbError as error:
            raise UsageError(f"--model {name}: {error}") from error

    def _ask(
        self,
        model: Any,
        messages: list[dict[str, Any]],
        options: MagicOptions,
        response_format: Any,
        namespace: MutableMapping[str, Any],
    ) -> Any:
        request: dict[str, Any] = {"meta": RequestMeta(source=SOURCE)}
        if response_format is not None:
            request["response_format"] = response_format
        thinking = False if options.no_think else None
        view = CellView(json_answer=response_format is not None)
        builder = TurnBuilder()
        events = model.stream_sync(messages, None, thinking, **request)
        interrupted = False
        try:
            with _download_bar(model):
                for event in events:
                    builder.add(event)
                    view.add(event)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as error:  # shown under the answer so far, then raised
            failed = f"{type(error).__name__}: {error}"
            view.finish(replace(builder.build(), finish_reason="error", error=failed))
            raise
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # cancels the request if it is still running
        turn = builder.build()
        if interrupted:  # the turn's Done never came: it was cancelled here
            turn = replace(turn, finish_reason="cancelled", error=None)
        turn = with_parsed(turn, request)
        view.finish(turn)
        if options.out is not None:
            namespace[options.out] = turn
        if interrupted:  # so that "run all" stops here too
            raise KeyboardInterrupt("stopped: the request was cancelled; its answer so far is kept")
        return turn.parsed if response_format is not None else None


_QUESTION = re.compile(
    r"^(?P<indent>[ \t]*)(?:(?P<target>[\w.]+)[ \t]*=[ \t]*)?%mlx[ \t]+(?P<rest>.*\?)[ \t]*$"
)


def keep_questions(lines: list[str]) -> list[str]:
    """Read ``%mlx What is x?`` as the magic, not as IPython's ``x?`` help (a cell transformer).

    IPython reads a line that ends in ``word?`` as a request for help on ``word``, before any
    magic sees it; most one-line questions end that way. This rewrites such ``%mlx`` lines
    (also ``name = %mlx …?``) into the call IPython would make for them.
    """
    if lines and lines[0].lstrip().startswith("%%"):
        return lines  # a cell magic's body is its own text
    rewritten = []
    for line in lines:
        found = _QUESTION.match(line.rstrip("\r\n"))
        if found is None:
            rewritten.append(line)
            continue
        target = f"{found['target']} = " if found["target"] else ""
        call = f"get_ipython().run_line_magic('mlx', {found['rest']!r})"
        rewritten.append(f"{found['indent']}{target}{call}\n")
    return rewritten


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%mlx`` and ``%mlx`` (what ``%load_ext mlxnb`` calls).

    Args:
        ipython: The running IPython shell.
    """
    ipython.register_magics(MlxMagics)
    cleanup = ipython.input_transformers_cleanup
    if keep_questions not in cleanup:
        cleanup.append(keep_questions)
