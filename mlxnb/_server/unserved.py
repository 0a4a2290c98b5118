"""Fields other servers take that would change the answer here, and are not served.

The request models ignore fields they do not know, so clients that send ``user``, ``store`` or a
vendor's bookkeeping keep working. A field that would change the answer must not vanish that
way: a client that asks vLLM's ``min_tokens`` or the legacy ``functions`` and gets an answer
without them has been misled. Each one listed here is refused with a 400 naming it, unless it
is set to the value that changes nothing (``ignore_eos: false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Unserved:
    """Why a field is refused, and the values that ask for nothing (accepted).

    Attributes:
        reason: What the 400 says after the field's name.
        harmless: Values that change nothing (the field's default elsewhere).
    """

    reason: str
    harmless: tuple[Any, ...] = (None,)


_FROM_VLLM = "vLLM's field is not served here"
_SAMPLING = {
    # vLLM's sampling and output extensions
    "min_tokens": Unserved(_FROM_VLLM, (None, 0)),
    "ignore_eos": Unserved(_FROM_VLLM, (None, False)),
    "stop_token_ids": Unserved(f"{_FROM_VLLM}; use stop strings", (None, [])),
    "include_stop_str_in_output": Unserved(_FROM_VLLM, (None, False)),
    "skip_special_tokens": Unserved(_FROM_VLLM, (None, True)),
    "spaces_between_special_tokens": Unserved(_FROM_VLLM, (None, True)),
    "bad_words": Unserved(f"{_FROM_VLLM}; use logit_bias", (None, [])),
    "allowed_token_ids": Unserved(f"{_FROM_VLLM}; use logit_bias", (None, [])),
    "length_penalty": Unserved(_FROM_VLLM, (None, 1, 1.0)),
    "use_beam_search": Unserved(_FROM_VLLM, (None, False)),
    "truncate_prompt_tokens": Unserved(_FROM_VLLM),
    "prompt_logprobs": Unserved(_FROM_VLLM, (None, 0)),
    "guided_json": Unserved(f"{_FROM_VLLM}; use response_format"),
    "guided_regex": Unserved(_FROM_VLLM),
    "guided_choice": Unserved(_FROM_VLLM),
    "guided_grammar": Unserved(_FROM_VLLM),
    "structured_outputs": Unserved(f"{_FROM_VLLM}; use response_format"),
    "logits_processors": Unserved("logits processors run only in Python (engine.stream)"),
    # mlx_lm.server's sampling extensions
    "repetition_context_size": Unserved("mlx_lm.server's field is not served here"),
    "xtc_probability": Unserved("mlx_lm.server's field is not served here", (None, 0, 0.0)),
    "xtc_threshold": Unserved("mlx_lm.server's field is not served here"),
    "adapters": Unserved(
        "LoRA adapters are applied when a model is loaded (mlxnb.load(model, adapter_path=...),"
        " mlxnb serve --adapter-path), not per request"
    ),
    "draft_model": Unserved("a draft model is chosen when a model is loaded (draft_model=)"),
    "num_draft_tokens": Unserved("a draft model is chosen when a model is loaded (draft_model=)"),
}
CHAT_UNSERVED: Mapping[str, Unserved] = {
    **_SAMPLING,
    "functions": Unserved("the legacy function fields are not served; use tools", (None, [])),
    "function_call": Unserved("the legacy function fields are not served; use tool_choice"),
    "audio": Unserved("audio output is not served"),
    "modalities": Unserved("only text output is served", (None, ["text"])),
    "web_search_options": Unserved("web search is not served"),
    "verbosity": Unserved("verbosity is not served"),
    "add_generation_prompt": Unserved(
        f"{_FROM_VLLM}; use continue_final_message to carry on the last message", (None, True)
    ),
    "chat_template": Unserved("the model's own chat template is used"),
    "documents": Unserved(_FROM_VLLM),
    "echo": Unserved(f"{_FROM_VLLM} for chat", (None, False)),
    "best_of": Unserved(f"{_FROM_VLLM} for chat", (None, 1)),
}
"""``/v1/chat/completions`` fields refused by name (see the module's docstring)."""
COMPLETION_UNSERVED: Mapping[str, Unserved] = _SAMPLING
"""``/v1/completions`` fields refused by name."""

_ON_CHAT = "served on /v1/chat/completions, not on this route"
_CHAT_SAMPLING = {
    # Chat Completions' (and this server's) sampling fields, sent to a route without them
    "seed": Unserved(_ON_CHAT),
    "min_p": Unserved(_ON_CHAT, (None, 0, 0.0)),
    "repetition_penalty": Unserved(_ON_CHAT, (None, 1, 1.0)),
    "presence_penalty": Unserved(_ON_CHAT, (None, 0, 0.0)),
    "frequency_penalty": Unserved(_ON_CHAT, (None, 0, 0.0)),
    "logit_bias": Unserved(_ON_CHAT, (None, {})),
    "prompt_lookup": Unserved(_ON_CHAT, (None, 0)),
    "logprobs": Unserved(_ON_CHAT, (None, False)),
    "n": Unserved(_ON_CHAT, (None, 1)),
    "chat_template_kwargs": Unserved(_ON_CHAT, (None, {})),
    "continue_final_message": Unserved(_ON_CHAT, (None, False)),
    "functions": CHAT_UNSERVED["functions"],
    "function_call": CHAT_UNSERVED["function_call"],
    "audio": CHAT_UNSERVED["audio"],
    "modalities": CHAT_UNSERVED["modalities"],
    "context_management": Unserved("context management (compaction) is not served", (None, [])),
}
RESPONSES_UNSERVED: Mapping[str, Unserved] = {
    **_SAMPLING,
    **_CHAT_SAMPLING,
    "top_k": Unserved(_ON_CHAT, (None, 0, -1)),
    "stop": Unserved(_ON_CHAT, (None, [])),
    "max_tokens": Unserved("use max_output_tokens"),
    "max_completion_tokens": Unserved("use max_output_tokens"),
    "response_format": Unserved("use text.format"),
    "reasoning_effort": Unserved("use reasoning.effort"),
    "moderation": Unserved("moderation is not served"),
}
"""``/v1/responses`` fields refused by name."""
MESSAGES_UNSERVED: Mapping[str, Unserved] = {
    **_SAMPLING,
    **_CHAT_SAMPLING,
    "stop": Unserved("use stop_sequences", (None, [])),
    "max_completion_tokens": Unserved("use max_tokens"),
    "response_format": Unserved("use output_config.format"),
    "reasoning_effort": Unserved("use thinking"),
    "container": Unserved("containers (code execution) are not served"),
    "mcp_servers": Unserved("MCP servers are not connected here; send their tools", (None, [])),
}
"""``/v1/messages`` fields refused by name."""


def first_unserved(
    extra: Mapping[str, Any] | None, unserved: Mapping[str, Unserved]
) -> tuple[str, str] | None:
    """The first field of ``extra`` (a request's unknown fields) that asks for something.

    Returns:
        ``(field, reason)``, or ``None`` when every unknown field is harmless or unlisted.
    """
    for name, value in (extra or {}).items():
        field = unserved.get(name)
        if field is not None and value not in field.harmless:
            return name, field.reason
    return None
