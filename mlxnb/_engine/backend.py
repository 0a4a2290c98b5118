"""Loading a text model with mlx-lm and rendering chat prompts for it.

Everything here runs on the engine's worker thread: loading creates MLX arrays, which belong to
the thread that made them.
"""

from __future__ import annotations

import contextlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from mlxnb._engine.lookup import NgramIndex
from mlxnb._engine.parser import Markers, initial_state_for
from mlxnb._engine.solo import SoloDecoder
from mlxnb._engine.speculative import Drafter, FirstDraft, ModelDrafter, SpeculativeDecoder
from mlxnb._engine.tokenizer_cache import load_local_model
from mlxnb.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
)


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt.

    Attributes:
        tokens: The prompt's token ids.
        initial_state: ``"reasoning"`` when the prompt ends inside a thinking block.
        generator_kwargs: Extra arguments for the batch decoder's ``insert`` (a vision model's
            input embeddings).
        system_tokens: How many leading tokens hold the system prompt (``0``: none marked): the
            prompt cache keeps that prefix as a ``"system"`` entry, evicted last.
        cache_tokens: What the prompt cache files the prompt under, when not ``tokens``: a
            vision prompt's image placeholders are one token id whatever the image, so there
            each placeholder stands for its image's digest instead.
        cacheable: Whether the prompt cache may serve and keep this prompt at all.
    """

    tokens: list[int]
    initial_state: str
    generator_kwargs: dict[str, Any] = field(default_factory=dict)
    system_tokens: int = 0
    cache_tokens: list[int] | None = None
    cacheable: bool = True

    @property
    def cache_key(self) -> list[int] | None:
        """The tokens the prompt cache files this prompt under (``None``: not cached)."""
        if not self.cacheable:
            return None
        return self.tokens if self.cache_tokens is None else self.cache_tokens


def _looks_like_repo_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~"))


def read_config(ref: str | Path, name: str = "config.json") -> dict[str, Any] | None:
    """The model's ``config.json`` (or another JSON file ``name``), or ``None`` when there is none.

    From its directory; for a repo id from the Hugging Face cache, fetching that one small file
    when it is not there yet (the loader would fetch it anyway; ``HF_HUB_OFFLINE`` is respected).
    """
    path = Path(str(ref)).expanduser()
    if path.is_dir():
        found: Path | None = path / name
    elif _looks_like_repo_id(str(ref)):
        try:
            from huggingface_hub import hf_hub_download

            found = Path(hf_hub_download(str(ref), name))
        except Exception:  # not on the hub, offline, no hub library: the loader reports it
            found = None
    else:
        found = None
    if found is None or not found.is_file():
        return None
    try:
        config = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


GENERATION_KEYS = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repetition_penalty": float,
}
"""The sampling settings a model's ``generation_config.json`` may give, and their types."""


def generation_defaults(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sampling defaults a model's ``generation_config.json`` recommends.

    Only :data:`GENERATION_KEYS` are taken, and only when the file does not turn sampling off
    (``"do_sample": false`` means greedy decoding to transformers, whatever else it says).
    A value that is not a number of the right kind is skipped; range checks come later, with
    the request's own settings (:func:`mlxnb._engine.request.sampling_options`).
    """
    if not config or config.get("do_sample") is False:
        return {}
    defaults: dict[str, Any] = {}
    for key, kind in GENERATION_KEYS.items():
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if kind is int and value != int(value):
            continue
        defaults[key] = kind(value)
    if defaults.get("repetition_penalty") == 1.0:
        del defaults["repetition_penalty"]  # 1.0 is no penalty: no processor needed
    return defaults


CONTEXT_KEYS = (
    "max_position_embeddings",
    "max_sequence_length",
    "seq_length",
    "n_positions",
    "max_seq_len",
)


def context_length(config: Mapping[str, Any]) -> int | None:
    """The most tokens (prompt and answer) the model was built for, from its ``config.json``.

    A vision model's figure is in its ``text_config``; ``None`` when the config does not say.
    """
    for section in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            value = section.get(key) if isinstance(section, Mapping) else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def check_logit_bias(bias: Sequence[tuple[int, float]], tokenizer: Any) -> None:
    """Refuse a ``logit_bias`` naming a token id the tokenizer does not have.

    Raises:
        InvalidRequestError: An id at or past the vocabulary's end.
    """
    size = len(tokenizer)
    outside = [token for token, _ in bias if token >= size]
    if outside:
        raise InvalidRequestError(
            f"logit_bias names token id {outside[0]}, past the vocabulary (ids 0 to {size - 1})"
        )


def check_context(prompt_tokens: int, max_tokens: int, limit: int | None, model_id: str) -> None:
    """Refuse, before any forward pass, a request that cannot fit the model's context.

    Raises:
        ContextLengthError: ``prompt_tokens + max_tokens`` exceeds ``limit``.
    """
    if limit is not None and prompt_tokens + max_tokens > limit:
        raise ContextLengthError(
            f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
            f"{prompt_tokens + max_tokens} tokens do not fit {model_id}'s context of {limit} "
            "tokens. Shorten the conversation or lower max_tokens."
        )


def resolve_model(ref: str | Path) -> str:
    """What to hand a loader: a local model directory, or a Hugging Face repo id.

    Raises:
        ModelNotFoundError: Nothing at the path, and not a repo id.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} exists but holds no config.json: not a model")
        return str(path)
    if _looks_like_repo_id(text):
        return text
    raise ModelNotFoundError(
        f"no model at {path.resolve()} (no such directory), and {text!r} is not a "
        "Hugging Face repo id of the form 'org/name'"
    )


def load_error(text: str, target: str, error: BaseException) -> Exception:
    """The mlxnb error for a loader's failure on ``target`` (named ``text`` by the user)."""
    path = Path(text).expanduser()
    if target == text and not path.exists() and _is_hub_miss(error):
        return ModelNotFoundError(
            f"model {text!r} not found: no local directory {path.resolve()}, not in the "
            f"Hugging Face cache, and the hub could not provide it ({type(error).__name__}: "
            f"{error})"
        )
    return ModelLoadError(f"could not load {text!r}: {type(error).__name__}: {error}")


def load_text_model(
    ref: str | Path, adapter_path: str | Path | None = None
) -> tuple[Any, Any, str]:
    """Load ``ref`` as ``mlx_lm.load`` does, mapping failures to mlxnb errors.

    A local directory's tokenizer is loaded once per process while its files stay the same
    (:mod:`mlxnb._engine.tokenizer_cache`).

    Args:
        ref: A local model directory or a Hugging Face repo id (``org/name``).
        adapter_path: LoRA adapters to apply, as ``mlx_lm.load(..., adapter_path=...)`` does.

    Returns:
        ``(model, tokenizer, model_id)``.

    Raises:
        ModelNotFoundError: Nothing at the path (or no adapters at ``adapter_path``), and not a
            repo id that can be found.
        ModelLoadError: The model exists but mlx-lm cannot load it, or the adapters do not fit
            it.
    """
    import mlx_lm

    text, target = str(ref), resolve_model(ref)
    adapters = None if adapter_path is None else _adapter_folder(adapter_path)
    try:
        if Path(target).is_dir():
            model, tokenizer = load_local_model(Path(target))
        else:
            model, tokenizer = mlx_lm.load(target)
    except Exception as error:
        raise load_error(text, target, error) from error
    if adapters is not None:
        from mlx_lm.utils import load_adapters

        try:
            model = load_adapters(model, str(adapters))
        except Exception as error:
            raise ModelLoadError(
                f"could not apply the adapters in {str(adapter_path)!r} to {text!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        model.eval()
    return model, tokenizer, text


ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
"""What ``mlx_lm.lora`` writes into an adapters folder, and ``mlx_lm.load`` reads from it."""


def _adapter_folder(adapter_path: str | Path) -> Path:
    """The adapters folder, checked before the model loads.

    Raises:
        ModelNotFoundError: It is missing, or lacks one of :data:`ADAPTER_FILES`.
    """
    folder = Path(adapter_path).expanduser()
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"no LoRA adapters in {str(adapter_path)!r}: "
            + (
                "the folder does not exist"
                if not folder.is_dir()
                else f"{', '.join(missing)} missing"
            )
            + " (mlx_lm.lora writes adapter_config.json and adapters.safetensors)"
        )
    return folder


def load_draft_model(ref: str | Path, tokenizer: Any) -> Any:
    """Load a draft model for speculative decoding, checking that it shares ``tokenizer``.

    Raises:
        ModelNotFoundError: Nothing at the path, and not a repo id that can be found.
        ModelLoadError: It cannot be loaded, or its vocabulary differs from the main model's
            (its drafts would be other tokens).
    """
    model, draft_tokenizer, text = load_text_model(ref)
    if draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ModelLoadError(
            f"draft model {text!r} has another tokenizer than the model it drafts for: "
            "a draft model must share the model's vocabulary"
        )
    return model


def _is_hub_miss(error: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(error)}
    misses = {
        "RepositoryNotFoundError",
        "LocalEntryNotFoundError",
        "GatedRepoError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "OfflineModeIsEnabled",
        "ConnectionError",
        "FileNotFoundError",
        "HFValidationError",
    }
    return bool(names & misses)


def _chain(error: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _settle(tokenizer: Any) -> None:
    """Encode once, so later encodes on many threads at once only read the tokenizer.

    A Hugging Face fast tokenizer whose file sets truncation or padding clears them at its
    first plain encode, a write; two threads rendering at once must not race over it. Prompts
    render on callers' threads in parallel (the encode releases the GIL).
    """
    with contextlib.suppress(Exception):  # a tokenizer that cannot encode fails its first render
        tokenizer.encode("settle")


def reopened_thought(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    kwargs: Mapping[str, Any],
) -> str | None:
    """The prompt of a continued answer that was cut while thinking, ending inside the thought.

    Chat templates render an assistant message's reasoning as a closed thinking block, so
    carrying on such a message would make the model answer without finishing its thought.
    When the last message is reasoning alone (no content, no tool calls), its rendering is
    cut back to just before the closing marker, and the reasoning's own trailing whitespace
    restored. ``None`` when this does not apply, or the template rendered the reasoning
    otherwise than as the text right before that marker.

    Args:
        tokenizer: mlx-lm's ``TokenizerWrapper`` (its thinking markers and chat template).
        messages: The normalised messages, the continued one last.
        tools: The tools offered.
        kwargs: The chat template's other arguments.
    """
    last = messages[-1] if messages else {}
    reasoning = last.get("reasoning_content")
    think_end = getattr(tokenizer, "think_end", None)
    if (
        last.get("role") != "assistant"
        or not isinstance(reasoning, str)
        or not reasoning.strip()
        or last.get("content")
        or last.get("tool_calls")
        or not getattr(tokenizer, "has_thinking", False)
        or not think_end
    ):
        return None
    text = tokenizer.apply_chat_template(
        list(messages),
        tools=list(tools) if tools else None,
        add_generation_prompt=False,
        tokenize=False,
        **kwargs,
    )
    end = text.rfind(think_end)
    if end < 0 or text[end + len(think_end) :].strip():
        return None  # no closed thought at the end of the prompt
    body = text[:end].rstrip()
    if not body.endswith(reasoning.strip()):
        return None
    return str(body + reasoning[len(reasoning.rstrip()) :])


class TextBackend:
    """An mlx-lm model and tokenizer, with prompt rendering and marker knowledge.

    Args:
        model: The mlx-lm model.
        tokenizer: mlx-lm's ``TokenizerWrapper``.
        model_id: The name requests and audit rows use.
    """

    kind: Literal["text", "vision"] = "text"
    #: Whether batched requests reuse and fill the prompt cache too (a lone request, decoded
    #: on its own, always does).
    reuses_prompt_cache = True
    #: A small model with the same tokenizer whose drafts speed up lone requests, if any.
    draft_model: Any = None
    num_draft_tokens = 3

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_id: str,
        context_length: int | None = None,
        generation_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.markers = Markers.from_tokenizer(tokenizer)
        self.context_length = context_length
        self.generation_defaults = dict(generation_defaults or {})
        _settle(tokenizer)

    @property
    def language_model(self) -> Any:
        """The model whose KV cache requests fill."""
        return self.model

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
    ) -> SoloDecoder:
        """A single-sequence decoder for a request that runs alone.

        Args:
            prompt: The request's prompt.
            sampler: Its sampler.
            processors: Its logits processors.
            stream: The MLX stream to compute on.
            prefill_step: Prompt tokens per model call while prefilling.
            cache: A prompt-cache hit holding the prompt's first tokens (``None``: empty).
            rest: The prompt tokens ``cache`` does not hold (all of them without a cache).
            prompt_lookup: Prompt-lookup drafts per step (:mod:`mlxnb._engine.lookup`; 0: off).
            speculate: Whether drafts may be checked at all (its processors hold no state);
                with a draft model, they are.
            max_tokens: Tokens the request may still generate: no step is computed past them, and
                no draft runs past them (0: no bound).
        """
        if cache is None:
            from mlx_lm.models.cache import make_prompt_cache

            cache = make_prompt_cache(self.model)
        rest = prompt.tokens if rest is None else rest
        arguments = (self.model, cache, prompt.tokens, rest, sampler, processors, stream)
        drafters: list[Drafter] = []
        if speculate and prompt_lookup:
            drafters.append(NgramIndex(()))
        if speculate and self.draft_model is not None:
            drafters.append(ModelDrafter(self.draft_model, prefill_step))
        if not drafters:
            return SoloDecoder(*arguments, prefill_step, max_tokens=max_tokens or None)
        width = max(prompt_lookup, self.num_draft_tokens if self.draft_model is not None else 0)
        return SpeculativeDecoder(
            *arguments,
            prefill_step,
            drafter=drafters[0] if len(drafters) == 1 else FirstDraft(drafters),
            draft_tokens=width,
            max_tokens=max_tokens,
        )

    def embedded(self, prompt: Prompt, cached: int) -> Prompt:
        """``prompt`` as the decoders take it, ``cached`` of its tokens held by the cache.

        A text prompt is its tokens: nothing is left to compute (vision prompts embed here).
        """
        return prompt

    def new_generator(self, max_batch: int, prefill_batch: int, prefill_step: int) -> Any:
        """A fresh mlx-lm ``BatchGenerator`` for this model."""
        from mlx_lm.generate import BatchGenerator

        eos = sorted(self.tokenizer.eos_token_ids)
        return BatchGenerator(
            self.model,
            stop_tokens=[[token] for token in eos],
            completion_batch_size=max_batch,
            prefill_batch_size=min(prefill_batch, max_batch),
            prefill_step_size=prefill_step,
        )

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        enable_thinking: bool | None,
        template_kwargs: Mapping[str, Any] | None = None,
        images: Sequence[Any] = (),
    ) -> Prompt:
        """Render messages (and tools) through the chat template into prompt tokens.

        ``messages`` come normalised (:func:`mlxnb._messages.normalize_messages`).

        Raises:
            InvalidRequestError: The messages are malformed or the template rejects them.
        """
        normalized = list(messages)
        kwargs: dict[str, Any] = dict(template_kwargs or {})
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        # continue_final_message: the prompt ends inside the last (assistant) message, to carry
        # it on; it excludes a generation prompt.
        prompt_after = not kwargs.get("continue_final_message")
        if getattr(self.tokenizer, "chat_template", None):
            try:
                tokens = self.tokenizer.apply_chat_template(
                    normalized,
                    tools=list(tools) if tools else None,
                    add_generation_prompt=prompt_after,
                    **kwargs,
                )
            except Exception as error:
                raise InvalidRequestError(
                    f"the chat template rejected the messages: {error}"
                ) from error
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in normalized) + "assistant:"
            tokens = self.tokenizer.encode(text)
        tokens = list(tokens)
        if not prompt_after and getattr(self.tokenizer, "chat_template", None):
            reopened = reopened_thought(self.tokenizer, normalized, tools, kwargs)
            if reopened is not None:
                tokens = list(self.tokenizer.encode(reopened, add_special_tokens=False))
        if not tokens:
            raise InvalidRequestError("the rendered prompt is empty")
        templated = getattr(self.tokenizer, "chat_template", None)
        system = self._system_tokens(normalized, tools, kwargs, tokens) if templated else 0
        return Prompt(tokens, initial_state_for(tokens, self.tokenizer), system_tokens=system)

    def _system_tokens(
        self,
        messages: list[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        kwargs: Mapping[str, Any],
        tokens: list[int],
    ) -> int:
        """How many leading prompt tokens are the system prompt's, as mlx-lm's server finds it.

        The system messages are rendered before an empty user message; the prompt shares that
        rendering up to where the user's text begins. Only for a chat that ends in a user
        message: other prompts are one segment in mlx-lm's server too.
        """
        count = 0
        while count < len(messages) and messages[count].get("role") == "system":
            count += 1
        if count == 0 or messages[-1].get("role") != "user":
            return 0
        try:
            system = self.tokenizer.apply_chat_template(
                [*messages[:count], {"role": "user", "content": ""}],
                tools=list(tools) if tools else None,
                add_generation_prompt=False,
                **kwargs,
            )
        except Exception:  # the template insists on more: no system entry, nothing else lost
            return 0
        for index, (ours, theirs) in enumerate(zip(system, tokens, strict=False)):
            if ours != theirs:
                return index
        return 0

    @cached_property
    def vocab_size(self) -> int:
        """How many token ids a prompt may use: the tokenizer's (added tokens included)."""
        size = len(self.tokenizer)
        embedded = getattr(getattr(self.model, "args", None), "vocab_size", None)
        return min(size, embedded) if isinstance(embedded, int) else size

    def render_text(self, text: str | Sequence[Any]) -> Prompt:
        """Encode a raw completion prompt (no chat template), as mlx-lm does.

        Token ids are used as they are, after checking them.

        Raises:
            InvalidRequestError: The prompt encodes to no tokens, or holds an id that is not
                an integer in ``[0, vocab_size)``.
        """
        if not isinstance(text, str):
            return Prompt(self._token_ids(text), "normal")
        bos = getattr(self.tokenizer, "bos_token", None)
        tokens = list(
            self.tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))
        )
        if not tokens:
            raise InvalidRequestError("the prompt is empty")
        return Prompt(tokens, "normal")

    def _token_ids(self, ids: Sequence[Any]) -> list[int]:
        if not ids:
            raise InvalidRequestError("the prompt is an empty list of token ids")
        tokens: list[int] = []
        for position, token in enumerate(ids):
            try:
                value = -1 if isinstance(token, bool) else operator.index(token)
            except TypeError:
                value = -1
            if not 0 <= value < self.vocab_size:
                raise InvalidRequestError(
                    f"prompt token {position} is {token!r}: token ids must be integers from 0 "
                    f"to {self.vocab_size - 1} (the vocabulary)"
                )
            tokens.append(value)
        return tokens
