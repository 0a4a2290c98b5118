"""Decoding a lone vision request with a single-sequence loop, as ``mlx_vlm.stream_generate`` does.

mlx-vlm's batch decoder costs a lone request a quarter of its speed on fast devices (measured on
an H200: 0.74 of raw ``mlx_vlm.stream_generate``). A vision request that arrives alone is decoded
here instead: the prompt's embeddings (image features merged in) are prefilled chunk by chunk,
then one language-model call per token, the next step queued before the current one is read.

mlx-vlm's batch decoder takes no per-request KV cache, so this sequence cannot join it: when
other requests arrive they form a batch of their own, and the worker advances both each step
until this one ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlxnb._engine.solo import Processor, SoloDecoder

# What a language-model output may carry into the next call (models with cross-attention or an
# encoder); mlx-vlm's own decode loop passes these on the same way.
_CARRIED_OUTPUTS = ("cross_attention_states", "encoder_outputs")


class VisionSoloDecoder(SoloDecoder):
    """One vision sequence's prefill (from input embeddings) and decode loop.

    A prompt-cache hit is a prefill that stopped after its first chunk: the model's extras
    are the whole prompt's (position ids, visual masks, deepstack features), and mlx-vlm's
    language models take from them the window after the tokens the cache holds, as they do for
    every chunk after the first.

    Args:
        language_model: The mlx-vlm model's language model.
        cache: A KV cache for it: empty, or holding the prompt's first tokens.
        tokens: The prompt's token ids (image placeholders included).
        prompt_kwargs: What rendering the prompt produced for the language model:
            ``inputs_embeds`` and the model's own extras (position ids, rope deltas, visual masks).
        sampler: mlx-lm sampler.
        processors: mlx-lm logits processors.
        stream: The MLX stream to compute on.
        prefill_step: Prompt tokens per model call while prefilling.
        max_tokens: Tokens the request may generate (``None``: no bound).
        rest: The prompt tokens ``cache`` does not hold (``None``: all of them).
    """

    hands_over = False

    def __init__(
        self,
        language_model: Any,
        cache: list[Any],
        tokens: Sequence[int],
        prompt_kwargs: Mapping[str, Any],
        sampler: Callable[[Any], Any],
        processors: Sequence[Processor],
        stream: Any,
        prefill_step: int,
        max_tokens: int | None = None,
        rest: Sequence[int] | None = None,
    ) -> None:
        rest = tokens if rest is None else rest
        super().__init__(
            language_model,
            cache,
            tokens,
            rest,
            sampler,
            processors,
            stream,
            prefill_step,
            max_tokens=max_tokens,
        )
        kwargs = dict(prompt_kwargs)
        self._embeds: Any = kwargs.pop("inputs_embeds")[:, len(tokens) - len(rest) :]
        self._prompt_kwargs = kwargs
        # Positions after the prompt follow from the rope deltas the prompt was rendered with;
        # passed on every call, so a batch decoding beside this sequence cannot overwrite them.
        self._rope_deltas = kwargs.get("rope_deltas")
        self._carried: dict[str, Any] = {}

    def _prefill(self, inputs: Any) -> None:
        count = inputs.shape[0]
        embeds, self._embeds = self._embeds[:, :count], self._embeds[:, count:]
        self._model(
            inputs[None],
            inputs_embeds=embeds,
            cache=self.cache,
            n_to_process=count,
            logits_to_keep=1,
            **self._prompt_kwargs,
        )

    def _logits(self, inputs: Any) -> Any:
        kwargs: dict[str, Any] = {"logits_to_keep": 1, **self._carried}
        first = self._embeds is not None
        if first:
            # The prompt's last token: its embedding and the prompt's extras, once.
            kwargs.update(self._prompt_kwargs, inputs_embeds=self._embeds)
            self._embeds = None
        elif self._rope_deltas is not None:
            kwargs["rope_deltas"] = self._rope_deltas
        output = self._model(inputs.reshape(1, -1), cache=self.cache, **kwargs)
        if first and self._rope_deltas is None:
            # Models that derive the deltas while prefilling keep them on themselves.
            self._rope_deltas = getattr(self._model, "_rope_deltas", None)
        self._carried = {
            name: value
            for name in _CARRIED_OUTPUTS
            if (value := getattr(output, name, None)) is not None
        }
        return output.logits[:, -1, :]
