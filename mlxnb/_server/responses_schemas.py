"""The body of ``POST /v1/responses`` (OpenAI's Responses API) as pydantic models.

Validation lives here so a malformed request is refused naming the field before anything reaches
the engine; :mod:`mlxnb._server.responses` turns a validated body into engine arguments. Fields
with no effect on the answer (``service_tier``, ``prompt_cache_key`` …) are ignored, as
on the other routes. Input items, content parts and tools of a type the server cannot serve
(``item_reference``, ``input_file``, ``web_search`` …) are accepted here as ``Other*`` models so
the translation can refuse them with a 400 naming the type, rather than a union error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from mlxnb._server.schemas import (
    MAX_MESSAGES,
    MAX_TOKENS,
    MAX_TOOLS,
    FunctionName,
    ImageURL,
    Name,
    Text,
)

MAX_PARTS = 1024
"""Most content parts in one message."""
MAX_METADATA = 16
"""Most ``metadata`` keys, as OpenAI allows."""
LOGPROBS_INCLUDE = "message.output_text.logprobs"
"""The ``include`` value that asks for the answer's log-probabilities. The others name output of
tools this server refuses, or of inputs the client already has: they ask for nothing here."""


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _tagger(known: frozenset[str], untyped: str | None = None) -> Any:
    """A discriminator: the value's ``type`` when known, else ``other`` (``untyped`` if none)."""

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        if kind is None and untyped is not None:
            return untyped
        if not isinstance(kind, str):
            return None  # pydantic reports the missing or malformed type
        return kind if kind in known else "other"

    return Discriminator(tag)


class InputTextPart(_In):
    """Text the user (or system) wrote."""

    type: Literal["input_text"]
    text: Text


class OutputTextPart(_In):
    """Text the assistant wrote, sent back in the history."""

    type: Literal["output_text"]
    text: Text


class RefusalPart(_In):
    """A refusal the assistant wrote, sent back in the history (read as text)."""

    type: Literal["refusal"]
    refusal: Text


class InputImagePart(_In):
    """An image by URL: a ``data:`` URL, or ``http(s)`` where the engine's policy allows it."""

    type: Literal["input_image"]
    image_url: ImageURL | None = None
    file_id: Name | None = Field(None, description="Refused: there is no Files API here.")
    detail: Literal["auto", "low", "high", "original"] | None = None


class OtherPart(_In):
    """A content part this server cannot use (``input_file``, ``input_audio`` …): refused."""

    type: Name


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("input_text")]
    | Annotated[OutputTextPart, Tag("output_text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[InputImagePart, Tag("input_image")]
    | Annotated[OtherPart, Tag("other")],
    _tagger(frozenset({"input_text", "output_text", "refusal", "input_image"})),
]
Content = Text | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)]


class MessageItem(_In):
    """A message: ``type`` may be left out (OpenAI's "easy" input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content


class FunctionCallItem(_In):
    """A function call the assistant made, sent back in the history."""

    type: Literal["function_call"]
    call_id: Name
    name: FunctionName
    arguments: Text = Field("{}", description="The arguments as a JSON object's text.")


class FunctionCallOutputItem(_In):
    """The result of a function call."""

    type: Literal["function_call_output"]
    call_id: Name
    output: Content


class SummaryText(_In):
    """A summary of the assistant's reasoning."""

    type: Literal["summary_text"]
    text: Text


class ReasoningText(_In):
    """The assistant's reasoning text."""

    type: Literal["reasoning_text"]
    text: Text


class ReasoningItem(_In):
    """The assistant's reasoning, sent back in the history (``encrypted_content`` is ignored)."""

    type: Literal["reasoning"]
    summary: list[SummaryText] = Field(default_factory=list, max_length=MAX_PARTS)
    content: list[ReasoningText] | None = Field(None, max_length=MAX_PARTS)


class OtherItem(_In):
    """An input item this server cannot use (``item_reference``, built-in tool calls …)."""

    type: Name


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    _tagger(
        frozenset({"message", "function_call", "function_call_output", "reasoning"}),
        untyped="message",
    ),
]
"""One item of ``input`` (or of a stored response's conversation)."""


class FunctionTool(_In):
    """A function the model may call (``strict`` is accepted; arguments are not enforced)."""

    type: Literal["function"]
    name: FunctionName
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(_In):
    """A built-in tool (``web_search``, ``file_search`` …): refused, naming its type."""

    type: Name


ToolDef = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[OtherTool, Tag("other")],
    _tagger(frozenset({"function"})),
]


class TextFormatText(_In):
    """Free text."""

    type: Literal["text"]


class TextFormatJsonObject(_In):
    """Any JSON object (enforced while decoding)."""

    type: Literal["json_object"]


class TextFormatJsonSchema(_In):
    """JSON matching ``schema`` (enforced while decoding)."""

    type: Literal["json_schema"]
    name: Name = "response"
    schema_: dict[str, Any] = Field(alias="schema")
    description: Text | None = None
    strict: bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextConfig(_In):
    """``text``: the answer's format (``verbosity`` is accepted and ignored)."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_In):
    """``reasoning``: ``effort`` none/minimal turns thinking off, low and above turns it on."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = Field(
        None, description="Accepted; reasoning comes back as text, never summarised."
    )


class ResponsesRequest(_In):
    """Body of ``POST /v1/responses``."""

    # Unknown fields are kept (``model_extra``) so the route can refuse, by name, those that
    # would change the answer (:mod:`mlxnb._server.unserved`); the rest are ignored.
    model_config = ConfigDict(extra="allow")

    model: Name
    input: Text | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)] | None = None
    instructions: Text | None = None
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(
        None, description="'auto' or 'none'; forcing a call is refused (not enforced yet)."
    )
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    previous_response_id: Name | None = None
    store: bool | None = Field(None, description="Keep the response for previous_response_id.")
    stream: bool = False
    metadata: dict[Name, Text] | None = Field(None, max_length=MAX_METADATA)
    user: Name | None = None
    parallel_tool_calls: bool | None = Field(
        None, description="false is refused: one call per turn cannot be enforced yet."
    )
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="'auto' is refused: the server never drops input."
    )
    background: bool | None = Field(None, description="true is refused.")
    max_tool_calls: int | None = Field(None, ge=1, description="Refused: not enforced.")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Alternatives per token (log-probabilities are returned)."
    )
    conversation: str | dict[str, Any] | None = Field(None, description="Refused.")
    prompt: dict[str, Any] | None = Field(None, description="Refused: no stored prompts.")
    include: list[Name] | None = Field(
        None,
        max_length=64,
        description=f"{LOGPROBS_INCLUDE!r} returns log-probabilities; the rest ask nothing.",
    )


class InputTokensRequest(ResponsesRequest):
    """Body of ``POST /v1/responses/input_tokens``.

    A Responses body whose ``model`` may be left out when the server serves one model.
    """

    model: Name | None = None  # type: ignore[assignment]
