"""Structured output: keep a model's answer inside a JSON schema while it is generated.

Grammars come from llguidance (installed with mlx-vlm). :func:`compile_json_schema` checks and
compiles a schema anywhere (no MLX); :class:`JsonSchemaProcessor` is an mlx-lm logits processor,
so it runs where every logits processor runs: on the engine's worker thread.

The grammar is any llguidance grammar: :func:`compile_json_schema` makes one from a JSON schema,
:mod:`mlxnb._engine.tool_choice` one for tool calls in the model's own format.

Reasoning stays free: while the model is inside a thinking block the processor leaves the logits
alone (except that it may not open a tool call there), and the grammar starts with the first
token after the block closes. When the prompt holds no thinking block at all, the model may open
one with its first token; when the template already closed one (``enable_thinking=False``), the
answer starts at once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from mlxnb.errors import DependencyError, InvalidRequestError

_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as error:  # pragma: no cover - installed with mlx-vlm
        raise DependencyError(
            "JSON response formats and forced tool calls need llguidance: pip install llguidance"
        ) from error
    return llguidance


def compile_lark(lark: str, what: str) -> str:
    """Check an llguidance Lark grammar and compile it for :class:`JsonSchemaProcessor`.

    Args:
        lark: The grammar, in llguidance's Lark dialect.
        what: What the grammar is for, to start the error message with.

    Raises:
        InvalidRequestError: The grammar is not valid (for example a JSON schema it embeds).
    """
    matcher = _llguidance().LLMatcher
    grammar: str = matcher.grammar_from_lark(lark)
    error_text = matcher.validate_grammar(grammar)
    if error_text:
        raise InvalidRequestError(f"{what}: {error_text}")
    return grammar


def compile_json_schema(schema: dict[str, Any]) -> str:
    """Check a JSON schema and compile it to an llguidance grammar.

    Args:
        schema: The schema (``{"type": "object"}`` for any JSON object).

    Returns:
        The grammar, for :class:`JsonSchemaProcessor`.

    Raises:
        InvalidRequestError: The schema is not valid or not supported.
    """
    matcher = _llguidance().LLMatcher
    try:
        grammar: str = matcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(f"invalid JSON schema: {error}") from error
    error_text = matcher.validate_grammar(grammar)
    if error_text:
        raise InvalidRequestError(f"unsupported JSON schema: {error_text}")
    return grammar


def _ll_tokenizer(tokenizer: Any) -> Any:
    # Walking the vocabulary takes about a second for 150k tokens: once per tokenizer.
    with _tokenizers_lock:
        cached = _tokenizers.get(tokenizer)
        if cached is None:
            from llguidance.hf import from_tokenizer

            eos = sorted(getattr(tokenizer, "eos_token_ids", None) or []) or None
            cached = from_tokenizer(getattr(tokenizer, "_tokenizer", tokenizer), eos_token=eos)
            _tokenizers[tokenizer] = cached
        return cached


class JsonSchemaProcessor:
    """An mlx-lm logits processor that allows only tokens keeping the answer in the grammar.

    Make one per request: it follows that request's tokens.

    Args:
        grammar: From :func:`compile_json_schema`.
        tokenizer: The model's mlx-lm ``TokenizerWrapper``.
    """

    def __init__(self, grammar: str, tokenizer: Any) -> None:
        self._grammar = grammar
        self._tokenizer = tokenizer
        thinking = bool(getattr(tokenizer, "has_thinking", False))
        self._think_start: int | None = tokenizer.think_start_id if thinking else None
        self._think_end: int | None = tokenizer.think_end_id if thinking else None
        self._tool_start = marker_token(tokenizer, "tool_call_start")
        self._matcher: Any = None
        self._calls = 0
        self._thinking = False
        self._fed = False

    def __call__(self, tokens: Any, logits: Any) -> Any:
        """Mask the logits of tokens the grammar does not allow next."""
        history = tokens.reshape(-1)
        self._calls += 1
        if self._calls == 1:
            state = self._thinking_state(history.tolist())
            self._thinking = state == "inside"
            if self._thinking:
                return self._no_tool_call(logits)
            # Thinking first is allowed only where the template left it open.
            return self._constrain(logits, allow_thinking=state == "undecided")
        last = int(history[-1].item())
        if self._thinking:
            if last == self._think_end:
                self._thinking = False
                return self._constrain(logits)
            return self._no_tool_call(logits)
        if self._matcher is not None and not self._fed and last == self._think_start:
            # The model chose to think first: the grammar starts after the block.
            self._thinking = True
            self._matcher = None
            return self._no_tool_call(logits)
        if self._matcher is not None:
            self._matcher.consume_token(last)
            self._fed = True
        return self._constrain(logits)

    def _no_tool_call(self, logits: Any) -> Any:
        # The parser would end the thinking block at a tool call while this processor still
        # counted it as thinking: the two would disagree, and a call could slip past the grammar.
        if self._tool_start is None or self._tool_start >= logits.shape[-1]:
            return logits
        import mlx.core as mx

        banned = mx.arange(logits.shape[-1]) == self._tool_start
        return mx.where(banned, mx.array(-float("inf"), dtype=logits.dtype), logits)

    def _thinking_state(self, history: list[int]) -> str:
        if self._think_start is None or self._think_end is None:
            return "none"
        start = max((i for i, t in enumerate(history) if t == self._think_start), default=-1)
        end = max((i for i, t in enumerate(history) if t == self._think_end), default=-1)
        if start > end:
            return "inside"
        return "undecided" if end < 0 else "closed"

    def _constrain(self, logits: Any, allow_thinking: bool = False) -> Any:
        import mlx.core as mx
        import numpy as np

        if self._matcher is None:
            self._matcher = _llguidance().LLMatcher(
                _ll_tokenizer(self._tokenizer), self._grammar, log_level=0
            )
            self._fed = False
        if self._matcher.is_error():
            return logits  # a broken grammar state must not wedge generation
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        vocab = logits.shape[-1]
        allowed = np.unpackbits(bits, bitorder="little")[:vocab].astype(bool)
        if allowed.size < vocab:
            allowed = np.concatenate([allowed, np.zeros(vocab - allowed.size, dtype=bool)])
        if allow_thinking and self._think_start is not None and self._think_start < vocab:
            allowed[self._think_start] = True
        return mx.where(mx.array(allowed), logits, mx.array(-float("inf"), dtype=logits.dtype))


def marker_token(tokenizer: Any, marker: str) -> int | None:
    """The id of the tokenizer's ``marker`` (``tool_call_start``…) when it is one token."""
    tools = bool(getattr(tokenizer, "has_tool_calling", False))
    text = getattr(tokenizer, marker, None) if tools else None
    if not text:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None
