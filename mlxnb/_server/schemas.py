"""Request bodies of the ``/v1`` API as pydantic models, with the limits the server enforces.

Validation lives here so a malformed request is a 422 naming the field, before anything reaches
the engine; :mod:`mlxnb._server.openai` turns a validated body into engine arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_MESSAGES = 2048
MAX_TOOLS = 128
MAX_STOP = 16
MAX_STOP_CHARS = 256
MAX_TOKENS = 131_072
MAX_TEMPLATE_KWARGS = 32

Text = Annotated[str, StringConstraints(max_length=4_000_000)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class _In(BaseModel):
    # Clients send fields this server does not use (user, metadata, store, …): ignore them.
    model_config = ConfigDict(extra="ignore")


class TextPart(_In):
    """A text part of a message's content."""

    type: Literal["text"]
    text: Text


class FunctionCallIn(_In):
    """The function of an assistant tool call sent back in the history."""

    name: FunctionName
    arguments: Text | dict[str, Any] = "{}"


class ToolCallIn(_In):
    """An assistant tool call sent back in the history."""

    id: Name | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class Message(_In):
    """One chat message; ``reasoning`` is accepted as an alias of ``reasoning_content``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: Name | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: Name | None = None
    reasoning_content: Text | None = None
    reasoning: Text | None = None


class FunctionDef(_In):
    """A function offered to the model."""

    name: FunctionName
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_In):
    """A tool offered to the model."""

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_In):
    """``{"name": ...}`` inside a named ``tool_choice``."""

    name: FunctionName


class NamedToolChoice(_In):
    """``tool_choice`` naming one function."""

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_In):
    """The ``json_schema`` member of ``response_format``."""

    name: Name = "response"
    description: Text | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_In):
    """``response_format``: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(_In):
    """``stream_options``."""

    include_usage: bool = False


class _Sampling(_In):
    model: Name
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: StopString | list[StopString] | None = Field(None, max_length=MAX_STOP)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")


class ChatCompletionRequest(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=MAX_TEMPLATE_KWARGS)
    logprobs: Literal[False] | None = Field(None, description="Log-probabilities: unsupported.")


class CompletionRequest(_Sampling):
    """Body of ``POST /v1/completions`` (one prompt, text continuation)."""

    prompt: Text | list[Text] = Field(min_length=1)
    echo: Literal[False] | None = None
    logprobs: Literal[None] = None
