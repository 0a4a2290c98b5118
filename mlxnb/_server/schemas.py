"""Request bodies of the ``/v1`` API as pydantic models, with the limits the server enforces.

Validation lives here so a malformed request is a 422 naming the field, before anything reaches
the engine; :mod:`mlxnb._server.openai` turns a validated body into engine arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

MAX_MESSAGES = 2048
MAX_TOOLS = 128
MAX_STOP = 16
MAX_STOP_CHARS = 256
MAX_TOKENS = 131_072
MAX_TEMPLATE_KWARGS = 32
MAX_PROMPTS = 64
"""Most prompts one ``/v1/completions`` request may batch."""
MAX_N = 16
"""Most choices (``n``) per prompt."""
MAX_CHOICES = 128
"""Most choices one request may ask for in all (prompts times ``n``)."""

Text = Annotated[str, StringConstraints(max_length=4_000_000)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
PromptText = Annotated[str, StringConstraints(min_length=1, max_length=4_000_000)]
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class _In(BaseModel):
    # Clients send fields this server does not use (user, metadata, store, …): ignore them.
    model_config = ConfigDict(extra="ignore")


class TextPart(_In):
    """A text part of a message's content."""

    type: Literal["text"]
    text: Text


ImageURL = Annotated[str, StringConstraints(min_length=1, max_length=40_000_000)]


class ImageUrl(_In):
    """Where an image is: a ``data:`` URL (or, when the engine allows it, ``http(s)``)."""

    url: ImageURL
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_In):
    """An image part of a user message's content (vision models)."""

    type: Literal["image_url"]
    image_url: ImageUrl | ImageURL


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
    content: Text | list[TextPart | ImagePart] | None = None
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


MAX_LOGIT_BIAS = 1024
TokenKey = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}$")]
"""A token id as a JSON object key (OpenAI's ``logit_bias`` keys are strings)."""


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
    prompt_lookup: int | None = Field(
        None, ge=0, le=64, description="mlxnb: prompt-lookup draft tokens per step (0: off)."
    )
    logit_bias: dict[TokenKey, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS
    )


class ChatCompletionRequest(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    # Unknown fields are kept (``model_extra``) so the route can refuse, by name, those that
    # would change the answer (:mod:`mlxnb._server.unserved`); the rest are ignored.
    model_config = ConfigDict(extra="allow")

    n: int = Field(1, ge=1, le=MAX_N, description="Choices (samples of the one prompt).")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=MAX_TEMPLATE_KWARGS)
    logprobs: bool | None = Field(None, description="Log-probabilities of the output tokens.")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Most likely tokens listed at each position."
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="none/minimal turn thinking off; low/medium/high turn it on."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="false: at most one tool call (generation ends after it)."
    )
    continue_final_message: bool | None = Field(
        None,
        description="vLLM's: carry on the final assistant message (a prefill) instead of"
        " answering after it; the reply holds what follows it.",
    )


class CompletionRequest(_Sampling):
    """Body of ``POST /v1/completions``: raw text continuation of one prompt or a batch.

    ``prompt`` is a string, a list of strings, a list of token ids or a list of token-id lists;
    every prompt gets ``n`` choices. ``best_of`` (only equal to ``n``) is accepted here so the
    server can refuse other values with a 400 naming the field, and ``logprobs`` (0 to 5) so
    a boolean gets a 400 too.
    """

    model_config = ConfigDict(extra="allow")  # as ChatCompletionRequest's

    prompt: PromptText | list[PromptText] | TokenIds | list[TokenIds] = Field(
        description=f"One prompt or up to {MAX_PROMPTS}: text, or token ids used as they are."
    )
    n: int = Field(1, ge=1, le=MAX_N, description="Choices per prompt.")
    best_of: int | None = Field(None, ge=1, description="Only equal to n.")
    echo: bool | None = None
    suffix: Text | None = Field(None, description="Refused unless empty: no fill-in-the-middle.")
    logprobs: bool | int | None = Field(
        None, description="Log-probabilities of the output tokens, with this many alternatives."
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        # Checked here, in one place, so a bad prompt gets one clear message instead of an error
        # for every member of the union.
        problem = prompt_problem(value)
        if problem is not None:
            raise PydanticCustomError("invalid_prompt", problem)
        return value


def _token_ids_problem(ids: list[Any], name: str | None) -> str | None:
    if not ids:
        return f"{name or 'the prompt'} is an empty token-id list"
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
        return (f"{name}: " if name else "") + "token ids must be integers >= 0"
    return None


def prompt_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid completion ``prompt``, or ``None`` when it is."""
    if isinstance(value, str):
        return "must not be an empty string" if not value else None
    if not isinstance(value, list):
        return "must be a string, a list of strings, a token-id list or a list of token-id lists"
    if not value:
        return "must not be an empty list"
    nested = all(isinstance(p, list) for p in value)
    if all(isinstance(p, str) for p in value) or nested:
        if len(value) > MAX_PROMPTS:
            return f"at most {MAX_PROMPTS} prompts per request, got {len(value)}"
        for i, prompt in enumerate(value):
            problem = _token_ids_problem(prompt, f"prompt {i}") if nested else None
            if problem is not None or not prompt:
                return problem or f"prompt {i} is an empty string"
        return None
    if any(isinstance(p, str | list) for p in value):
        return "a prompt list must hold only strings, only token ids, or only token-id lists"
    return _token_ids_problem(value, None)
