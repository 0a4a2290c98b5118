"""The body of ``POST /v1/messages`` (Anthropic's Messages API) as pydantic models.

Validation lives here so a malformed request is refused naming the field before anything reaches
the engine; :mod:`mlxnb._server.anthropic` turns a validated body into engine arguments. Fields
with no effect on the answer (``metadata``, ``service_tier``, ``cache_control``, ``citations`` …)
are ignored, as on the OpenAI routes, and those that would change it are refused by name
(:mod:`mlxnb._server.unserved`); block types it cannot serve (documents, server tools) fail
validation rather than being dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mlxnb._server.schemas import (
    MAX_MESSAGES,
    MAX_STOP,
    MAX_TOKENS,
    MAX_TOOLS,
    FunctionName,
    ImageURL,
    Name,
    StopString,
    Text,
)

MAX_BLOCKS = 1024
"""Most content blocks in one message."""
Base64Data = Annotated[str, StringConstraints(min_length=1, max_length=40_000_000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_In):
    """A text block."""

    type: Literal["text"]
    text: Text


class Base64Source(_In):
    """Image bytes inline, base64-encoded."""

    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: Base64Data


class UrlSource(_In):
    """An image by URL (fetched only when the engine's image policy allows remote images)."""

    type: Literal["url"]
    url: ImageURL


class ImageBlock(_In):
    """An image in a user message (vision models)."""

    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(_In):
    """A tool call the assistant made, sent back in the history."""

    type: Literal["tool_use"]
    id: Name
    name: FunctionName
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_In):
    """The result of a tool call, in a user message."""

    type: Literal["tool_result"]
    tool_use_id: Name
    content: Text | list[TextBlock] = ""
    is_error: bool | None = None


class ThinkingBlock(_In):
    """The assistant's reasoning, sent back in the history (its signature is not checked)."""

    type: Literal["thinking"]
    thinking: Text
    signature: Text | None = None


class RedactedThinkingBlock(_In):
    """Encrypted reasoning from another provider: accepted in the history, unreadable here."""

    type: Literal["redacted_thinking"]
    data: Text


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_In):
    """One message of the conversation."""

    role: Literal["user", "assistant"]
    content: Text | Annotated[list[ContentBlock], Field(max_length=MAX_BLOCKS)]


class ToolDef(_In):
    """A client tool offered to the model (server tools such as web search are not served)."""

    type: Literal["custom"] | None = None
    name: FunctionName
    description: Text | None = None
    input_schema: dict[str, Any]


class ToolChoiceAuto(_In):
    """The model decides whether to call a tool."""

    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_In):
    """No tool calls: the tools are not shown to the model."""

    type: Literal["none"]


class ToolChoiceAny(_In):
    """Some tool must be called (the engine forces a call)."""

    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_In):
    """This tool must be called (the engine forces a call of it)."""

    type: Literal["tool"]
    name: FunctionName
    disable_parallel_tool_use: bool | None = None


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceNone | ToolChoiceAny | ToolChoiceTool,
    Field(discriminator="type"),
]


class ThinkingEnabled(_In):
    """Thinking on, for at most ``budget_tokens`` tokens (then the block is closed)."""

    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1, le=MAX_TOKENS)


class ThinkingDisabled(_In):
    """Thinking off."""

    type: Literal["disabled"]


class ThinkingAdaptive(_In):
    """The model decides: the chat template's default."""

    type: Literal["adaptive"]


Thinking = Annotated[
    ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")
]


class JsonOutputFormat(_In):
    """The answer must be JSON matching ``schema`` (enforced while decoding)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_In):
    """``output_config``: the answer's format (``effort`` is accepted and ignored)."""

    format: JsonOutputFormat | None = None
    effort: str | None = None


class MessagesRequest(_In):
    """Body of ``POST /v1/messages``."""

    # Unknown fields are kept (``model_extra``) so the translation can refuse, by name, those
    # that would change the answer (:mod:`mlxnb._server.unserved`); the rest are ignored.
    model_config = ConfigDict(extra="allow")

    model: Name
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: Text | list[TextBlock] | None = None
    stop_sequences: list[StopString] | None = Field(None, max_length=MAX_STOP)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


class CountTokensRequest(MessagesRequest):
    """Body of ``POST /v1/messages/count_tokens``: a Messages body, ``max_tokens`` optional."""

    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)  # type: ignore[assignment]
