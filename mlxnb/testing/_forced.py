"""Forced output: make a real model emit an exact text through the real generation path."""

from __future__ import annotations

from typing import Any


class ForcedOutput:
    """A logits processor that leaves only the next scripted token finite.

    mlx-lm calls a request's logits processors once per generated token, so a fresh instance
    per request walks the script in order. After the script it forces end-of-sequence (or, with
    ``then="free"``, lets the model continue on its own).

    Attributes:
        token_ids: The scripted tokens.
        step: How many tokens have been forced so far.
    """

    def __init__(self, token_ids: list[int], eos_token_id: int | None, *, then: str = "eos"):
        if then not in ("eos", "free"):
            raise ValueError("then must be 'eos' or 'free'")
        if then == "eos" and eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-sequence token to force")
        self.token_ids = list(token_ids)
        self.step = 0
        self._eos = eos_token_id
        self._then = then

    def __call__(self, tokens: Any, logits: Any) -> Any:
        """Mask every logit but the scripted one (mlx-lm's logits-processor signature)."""
        import mlx.core as mx

        index = self.step
        self.step += 1
        if index < len(self.token_ids):
            target = self.token_ids[index]
        elif self._then == "eos" and self._eos is not None:
            target = self._eos
        else:
            return logits
        keep = mx.arange(logits.shape[-1]) == target
        return mx.where(keep, logits, mx.array(-float("inf"), dtype=logits.dtype))


def forced_output(tokenizer: Any, text: str, *, then: str = "eos") -> ForcedOutput:
    """Build a :class:`ForcedOutput` that makes the model say ``text`` exactly.

    Pass it per request (``engine.stream(..., logits_processors=[proc])`` or mlx-lm's
    ``logits_processors=``); make a new one for every request, since it counts its steps.
    It is a test tool: the text comes from the script, not from the model.

    Args:
        tokenizer: The model's tokenizer (mlx-lm ``TokenizerWrapper`` or a Hugging Face one).
        text: The exact text to emit; special markers such as ``<think>`` map to their tokens.
        then: ``"eos"`` to end after the script, ``"free"`` to let the model continue.

    Returns:
        A fresh logits processor.
    """
    token_ids = tokenizer.encode(text, add_special_tokens=False)
    eos_ids = getattr(tokenizer, "eos_token_ids", None)
    if isinstance(eos_ids, int):  # transformers 5 tokenizers (mlx-vlm's) give one id, not a set
        eos_ids = [eos_ids]
    eos = min(eos_ids) if eos_ids else getattr(tokenizer, "eos_token_id", None)
    return ForcedOutput(token_ids, eos, then=then)
