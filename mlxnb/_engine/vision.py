"""Vision models through mlx-vlm: loading, prompts with images, and batched decoding.

The worker drives a vision model exactly as it drives a text model; this module adapts the
differences. mlx-vlm renders the prompt, preprocesses the images and runs the vision tower into
input embeddings (on the worker thread, like every MLX call); mlx-vlm's ``BatchGenerator``
decodes. Two of its limits shape the adapter:

- It takes one sampler for the whole batch, so each request samples inside its own logits
  processor (:class:`SampleInProcessor`, last in its list) and the batch only takes the argmax.
- It takes no per-request KV cache, so only a lone request, decoded on its own
  (:mod:`mlxnb._engine.vision_solo`), reuses and fills the prompt cache (filed under
  :func:`keyed_by_image`), and it cannot join the batch later; and it prefills one prompt at a
  time, because mlx-vlm 0.7.10 mis-merges Qwen3-VL's
  deepstack inputs when it prefills several image prompts together (wrong tokens, measured
  against solo runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mlxnb._engine.backend import Prompt, load_error, read_config, reopened_thought, resolve_model
from mlxnb._engine.image_features import FAMILIES as IMAGE_FEATURE_FAMILIES
from mlxnb._engine.image_features import ImageFeatures, tower_output
from mlxnb._engine.parser import Markers, initial_state_for
from mlxnb._engine.vision_solo import VisionSoloDecoder
from mlxnb._images import Image
from mlxnb.errors import GenerationError, InvalidRequestError

ModelKind = Literal["text", "vision"]
VISION_CONFIG_KEYS = ("vision_config", "image_token_id", "image_token_index")


def model_kind(ref: str | Path, kind: str | None = None) -> ModelKind:
    """Whether ``ref`` is a text or a vision model (its ``config.json`` says; see :func:`kind_of`).

    Args:
        ref: A model directory or a Hugging Face repo id.
        kind: ``"text"`` or ``"vision"`` to decide it yourself.

    Raises:
        InvalidRequestError: ``kind`` is neither.
    """
    return kind_of(read_config(ref) or {}, kind)


def kind_of(config: Mapping[str, Any], kind: str | None = None) -> ModelKind:
    """Whether a model with this ``config.json`` is a text or a vision model.

    Args:
        config: The model's config (a vision config or image-token fields mean vision).
        kind: ``"text"`` or ``"vision"`` to decide it yourself, whatever the config says.

    Raises:
        InvalidRequestError: ``kind`` is neither.
    """
    if kind is not None:
        if kind not in ("text", "vision"):
            raise InvalidRequestError(f"kind must be 'text' or 'vision', not {kind!r}")
        return kind  # type: ignore[return-value]
    return "vision" if any(key in config for key in VISION_CONFIG_KEYS) else "text"


def load_vision_model(ref: str | Path) -> tuple[Any, Any, Any, str]:
    """Load ``ref`` with ``mlx_vlm.load``, mapping failures to mlxnb errors.

    Returns:
        ``(model, processor, tokenizer, model_id)``; the tokenizer is mlx-lm's
        ``TokenizerWrapper`` (thinking and tool-call markers, streaming detokenizer).

    Raises:
        ModelNotFoundError: Nothing at the path, and not a repo id that can be found.
        ModelLoadError: The model exists but mlx-vlm cannot load it.
    """
    import mlx_vlm
    from mlx_lm.utils import load_tokenizer
    from mlx_vlm.utils import get_model_path

    text, target = str(ref), resolve_model(ref)
    try:
        model, processor = mlx_vlm.load(target)
        tokenizer = load_tokenizer(Path(get_model_path(target)))
    except Exception as error:
        raise load_error(text, target, error) from error
    return model, processor, tokenizer, text


_PASSED_APART = ("input_ids", "pixel_values", "attention_mask")
# A chunk longer than any prompt: mlx-vlm's batch decoder then prefills all but the last token
# in one pass. (``None`` would also mean one pass, but its path computes the logits of every
# prompt position: 3.7x the time to first token on the CPU.)
ONE_PASS = 1 << 30


class _Response(NamedTuple):
    uid: int
    token: int
    finish_reason: str | None
    prompt_cache: Any = None
    all_tokens: Any = None


def keyed_by_image(
    tokens: Sequence[int], image_token: int | None, images: Sequence[Image]
) -> list[int] | None:
    """``tokens`` with each image placeholder standing for its image's digest instead.

    A prompt's image placeholders are the same token id whatever the image, so the prompt cache
    could not tell two images apart by its tokens. Here each run of placeholders takes a
    negative id made from its image's SHA-256 (no real token is negative): the same images at
    the same places in the same conversation share a prefix, and a cached prefix ends before
    the first image that differs.

    Returns:
        The keyed tokens (``tokens`` as they are without images), or ``None`` when the runs of
        placeholders cannot be matched to the images one to one: such a prompt is not cached.
    """
    keyed = list(tokens)
    if not images:
        return keyed
    if image_token is None:
        return None
    runs = [i for i, t in enumerate(keyed) if t == image_token and (i == 0 or keyed[i - 1] != t)]
    if len(runs) != len(images):
        return None
    for start, image in zip(runs, images, strict=True):
        digest = -1 - int(image.sha256[:15], 16)
        end = start
        while end < len(keyed) and keyed[end] == image_token:
            keyed[end] = digest
            end += 1
    return keyed


# Families whose language model takes text tokens after the images from their token
# embeddings and the whole prompt's rope index alone (checked against cold runs in the tests).
_POSITIONS_WITHOUT_TOWER = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl"})


@dataclass(frozen=True)
class PromptInputs:
    """A vision prompt as its processor left it; embedded only once the worker starts it.

    Embedding runs the vision tower; a turn whose images the prompt cache already holds does
    not need it (:meth:`past_images`), and counting a prompt's tokens never does.

    Args:
        model: The mlx-vlm model.
        ids: The prompt's token ids (``1 x n``).
        pixel_values: The processed images (``None`` without images).
        mask: The attention mask.
        extra: The processor's other outputs (image grids and the like).
        digests: Each image's SHA-256, in the prompt's order.
        kept: The model's vision-tower outputs kept per image (``None``: none are kept).
    """

    model: Any
    ids: Any
    pixel_values: Any
    mask: Any
    extra: Mapping[str, Any]
    digests: tuple[str, ...] = ()
    kept: ImageFeatures | None = None

    def embedded(self) -> dict[str, Any]:
        """The language model's keyword arguments: input embeddings and the model's extras.

        Images whose tower output is kept are not run through the tower again (see
        :mod:`~mlxnb._engine.image_features`).
        """
        towered = self._tower_output()
        given = {} if towered is None else {"cached_image_features": towered}
        features = self.model.get_input_embeddings(
            self.ids, self.pixel_values, mask=self.mask, **self.extra, **given
        )
        embedded = {k: v for k, v in features.to_dict().items() if v is not None}
        return {**self.extra, **embedded}

    def _tower_output(self) -> Any:
        """The tower's output, kept images' from the cache (``None``: mlx-vlm runs the tower).

        ``None`` for models and inputs this does not cover: other families, videos, or images
        that cannot be matched to their grids one to one.
        """
        grids = self.extra.get("image_grid_thw")
        if (
            self.kept is None
            or self.pixel_values is None
            or grids is None
            or self.extra.get("video_grid_thw") is not None
            or self._family not in IMAGE_FEATURE_FAMILIES
            or len(self.digests) != grids.shape[0]
            or self.kept.failure is not None
        ):
            return None
        try:
            return tower_output(self.model, self.pixel_values, grids, self.digests, self.kept)
        except Exception as error:  # mlx-vlm's own embedding is the fallback
            self.kept.give_up(error)
            return None

    @property
    def _family(self) -> str | None:
        """The model's type in its config (``qwen2_5_vl``...), which decides what it allows."""
        return getattr(self.model.config, "model_type", None)

    def past_images(self) -> dict[str, Any] | None:
        """The same for tokens after every image, without running the vision tower.

        The token embeddings and the positions of the whole prompt (the images' included, from
        their grids), from which the language model takes the window after the cached tokens.
        ``None`` for models not known to allow it.
        """
        if self._family not in _POSITIONS_WITHOUT_TOWER:
            return None
        language = self.model.language_model
        grids = self.extra.get("image_grid_thw"), self.extra.get("video_grid_thw")
        positions, deltas = language.get_rope_index(self.ids, *grids, self.mask)
        return {
            **self.extra,
            "inputs_embeds": language.model.embed_tokens(self.ids),
            "position_ids": positions,
            "rope_deltas": deltas,
        }


@dataclass
class SampleInProcessor:
    """A request's own sampler, run as its last logits processor.

    The batch then takes the argmax, which is the token this request sampled: rows with
    different temperatures share one mlx-vlm batch.

    Args:
        sampler: mlx-lm sampler over log-probabilities.
    """

    sampler: Callable[[Any], Any]

    def __call__(self, tokens: Any, logits: Any) -> Any:
        """Replace the logits by a one-hot of the sampled token."""
        import mlx.core as mx

        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        token = self.sampler(logprobs)
        chosen = mx.arange(logits.shape[-1]) == token.reshape(-1, 1)
        return mx.where(chosen, mx.array(0.0, logits.dtype), mx.array(-mx.inf, logits.dtype))


@dataclass
class VisionBatch:
    """mlx-vlm's ``BatchGenerator`` behind the interface the worker uses for mlx-lm's.

    Args:
        generator: The mlx-vlm ``BatchGenerator``.
    """

    generator: Any

    @property
    def stream(self) -> Any:
        """The MLX stream the batch computes on (a lone sequence decodes on it too)."""
        return self.generator.stream

    def insert(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_tokens: Sequence[int],
        caches: Sequence[Any],
        all_tokens: Sequence[Any],
        samplers: Sequence[Any],
        logits_processors: Sequence[list[Any]],
        prompt_kwargs: Sequence[Mapping[str, Any]] = (),
    ) -> list[int]:
        """Queue prompts; returns their uids (caches and token histories are not supported)."""
        uids: list[int] = []
        for i, prompt in enumerate(prompts):
            processors = list(logits_processors[i])
            if samplers[i] is not None:
                processors.append(SampleInProcessor(samplers[i]))
            (uid,) = self.generator.insert(
                [list(prompt)],
                max_tokens=max_tokens[i],
                prompt_kwargs=[dict(prompt_kwargs[i])],
                logits_processors=[processors],
            )
            uids.append(uid)
        return uids

    def next(self) -> tuple[Any, list[_Response]]:
        """One step of every active sequence."""
        progress, responses = self.generator.next()
        return progress, [_Response(r.uid, r.token, r.finish_reason) for r in responses]

    def remove(self, uids: Sequence[int], return_prompt_caches: bool = False) -> dict[int, Any]:
        """Drop sequences (queued, prefilling or decoding); no caches come back."""
        for uid in uids:
            self.generator.remove(uid)
        return {}


class VisionBackend:
    """An mlx-vlm model with its processor: renders prompts with images into embeddings.

    Args:
        model: The mlx-vlm model.
        processor: Its processor (image preprocessing and chat template).
        tokenizer: mlx-lm's ``TokenizerWrapper`` for the same tokenizer.
        model_id: The name requests and audit rows use.
    """

    kind: ModelKind = "vision"
    reuses_prompt_cache = False  # mlx-vlm's batch decoder takes no per-request KV cache
    draft_model: Any = None  # no speculative decoding for vision models

    def __init__(
        self,
        model: Any,
        processor: Any,
        tokenizer: Any,
        model_id: str,
        context_length: int | None = None,
        generation_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.markers = Markers.from_tokenizer(tokenizer)
        self.context_length = context_length
        self.generation_defaults = dict(generation_defaults or {})
        #: Vision-tower outputs kept per image, for the prompts that show an image again.
        self.image_features = ImageFeatures()

    @property
    def _has_deepstack(self) -> bool:
        vision_config = getattr(self.model.config, "vision_config", None)
        return bool(getattr(vision_config, "deepstack_visual_indexes", None))

    @property
    def language_model(self) -> Any:
        """The model whose KV cache requests fill (the vision tower keeps none)."""
        return self.model.language_model

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        enable_thinking: bool | None,
        template_kwargs: Mapping[str, Any] | None = None,
        images: Sequence[Image] = (),
    ) -> Prompt:
        """Render messages with their images into prompt tokens and input embeddings.

        Raises:
            InvalidRequestError: The template rejects the messages, or the processor the images.
        """
        kwargs: dict[str, Any] = dict(template_kwargs or {})
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        # continue_final_message: the prompt ends inside the last (assistant) message, to carry
        # it on (inside its thought when it was cut while thinking); no generation prompt then.
        prompt_after = not kwargs.get("continue_final_message")
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages),
                tools=list(tools) if tools else None,
                add_generation_prompt=prompt_after,
                tokenize=False,
                **kwargs,
            )
            if not prompt_after:
                text = reopened_thought(self.tokenizer, messages, tools, kwargs) or text
        except Exception as error:
            message = f"the chat template rejected the messages: {error}"
            raise InvalidRequestError(message) from error
        return self._embed(text, images)

    def render_text(self, text: str | Sequence[Any]) -> Prompt:
        """Encode a raw completion prompt (no chat template).

        Raises:
            InvalidRequestError: The prompt is token ids (text only, for a vision model).
        """
        if not isinstance(text, str):
            raise InvalidRequestError("a vision model takes a raw prompt as text, not token ids")
        return self._embed(text, ())

    def _embed(self, text: str, images: Sequence[Image]) -> Prompt:
        from mlx_vlm.utils import prepare_inputs

        pictures = [image.to_rgb() for image in images] or None
        try:
            inputs = prepare_inputs(self.processor, images=pictures, prompts=[text])
        except Exception as error:
            raise InvalidRequestError(f"the processor rejected the input: {error}") from error
        ids = inputs["input_ids"]
        tokens = ids[0].tolist()
        if not tokens:
            raise InvalidRequestError("the rendered prompt is empty")
        keyed = keyed_by_image(tokens, self._image_token, images)
        inputs = PromptInputs(
            self.model,
            ids,
            inputs.get("pixel_values"),
            inputs.get("attention_mask"),
            {k: v for k, v in inputs.items() if k not in _PASSED_APART},
            tuple(image.sha256 for image in images),
            self.image_features,
        )
        return Prompt(
            tokens,
            initial_state_for(tokens, self.tokenizer),
            {"prompt_kwargs": [inputs]},
            cache_tokens=keyed,
            cacheable=keyed is not None,
        )

    def embedded(self, prompt: Prompt, cached: int) -> Prompt:
        """``prompt`` with what its language model takes computed, now that the cache hit is known.

        When the prompt cache holds every image of the prompt (``cached`` tokens), the vision
        tower is not run: the tokens left are text, and the models that can take their
        positions without it do (:meth:`PromptInputs.past_images`).

        Raises:
            GenerationError: mlx-vlm could not embed the prompt.
        """
        (inputs,) = prompt.generator_kwargs["prompt_kwargs"]
        image_token = self._image_token
        after_images = image_token is None or image_token not in prompt.tokens[cached:]
        try:
            light = inputs.past_images() if cached and after_images else None
            kwargs = inputs.embedded() if light is None else light
        except Exception as error:
            raise GenerationError(f"the model could not embed the prompt: {error}") from error
        return replace(prompt, generator_kwargs={"prompt_kwargs": [kwargs]})

    @property
    def _image_token(self) -> int | None:
        config = self.model.config
        token = getattr(config, "image_token_index", None)
        return getattr(config, "image_token_id", None) if token is None else int(token)

    def new_solo(
        self,
        prompt: Prompt,
        sampler: Callable[[Any], Any],
        processors: Sequence[Any],
        stream: Any,
        prefill_step: int,
        cache: list[Any] | None = None,
        rest: Sequence[int] | None = None,
        prompt_lookup: int = 0,
        speculate: bool = False,
        max_tokens: int = 0,
    ) -> VisionSoloDecoder:
        """A single-sequence decoder for a request that runs alone.

        Args as :meth:`TextBackend.new_solo <mlxnb._engine.backend.TextBackend.new_solo>`;
        vision requests decode without drafts (``prompt_lookup`` and ``speculate`` are
        ignored). ``max_tokens`` bounds the steps computed ahead.
        """
        from mlx_vlm.models.cache import make_prompt_cache

        language_model = self.model.language_model
        (prompt_kwargs,) = prompt.generator_kwargs["prompt_kwargs"]
        decoder = VisionSoloDecoder(
            language_model,
            make_prompt_cache(language_model) if cache is None else cache,
            prompt.tokens,
            prompt_kwargs,
            sampler,
            processors,
            stream,
            prefill_step,
            max_tokens=max_tokens or None,
            rest=rest,
        )
        decoder.cache_key, decoder.cacheable = prompt.cache_tokens, prompt.cacheable
        return decoder

    def new_generator(self, max_batch: int, prefill_step: int) -> VisionBatch:
        """A fresh batch decoder for this model.

        Models with deepstack visual features (Qwen3-VL) prefill each prompt in one pass: mlx-vlm
        0.7.10's batch decoder slices their visual mask per chunk but not the features, so a
        prompt longer than one chunk gets wrong tokens (measured against
        ``mlx_vlm.stream_generate``, which is right at any chunk size).
        """
        from mlx_vlm.generate import BatchGenerator

        eos = sorted(self.tokenizer.eos_token_ids)
        generator = BatchGenerator(
            self.model.language_model,
            self.processor,
            stop_tokens=eos,
            completion_batch_size=max_batch,
            prefill_batch_size=1,
            prefill_step_size=ONE_PASS if self._has_deepstack else prefill_step,
            compute_logprobs=False,
            greedy_sampling=True,
        )
        return VisionBatch(generator)
