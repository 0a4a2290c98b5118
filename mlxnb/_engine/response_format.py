"""Typed structured answers: a response format given as a JSON schema or a pydantic model.

The engine holds the answer to the schema while generating (:mod:`mlxnb._engine.structured`);
here a format is read from what a caller passes, and a finished answer parsed back: into the
pydantic model when one was given, else into plain JSON values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mlxnb.errors import InvalidRequestError
from mlxnb.events import Turn


@dataclass(frozen=True)
class ResponseFormat:
    """What the answer must be.

    Attributes:
        schema: The JSON schema the answer follows.
        name: Its name, as the audit row records it (a pydantic model's class name, the
            OpenAI wrapper's ``name``, the schema's ``title``, or ``"json_schema"``).
        model: The pydantic model class answers are validated into, if one was given.
    """

    schema: Mapping[str, Any]
    name: str
    model: Any = None

    def parse(self, text: str) -> Any:
        """The answer as an object: the model's instance, or JSON values.

        ``None`` if it does not parse or validate (an answer cut short by ``max_tokens``).
        """
        try:
            value = json.loads(text)
            return self.model.model_validate(value) if self.model is not None else value
        except Exception:  # a cut or invalid answer has no parsed value; the text remains
            return None


def as_response_format(value: Any) -> ResponseFormat | None:
    """Read a response format: a pydantic model class, a JSON schema, or OpenAI's wrapper.

    OpenAI's wrapper is ``{"type": "json_schema", "json_schema": {"name", "schema"}}`` (or
    ``{"type": "json_object"}`` for any object).

    Raises:
        InvalidRequestError: Anything else.
    """
    if value is None:
        return None
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return ResponseFormat(_closed(value.model_json_schema()), value.__name__, value)
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            "response_format must be a JSON schema, a pydantic model class or OpenAI's "
            f"{{'type': 'json_schema', ...}}, not {type(value).__name__}"
        )
    if value.get("type") == "json_object" and len(value) == 1:
        return ResponseFormat({"type": "object"}, "json_object")
    if value.get("type") == "json_schema" and isinstance(value.get("json_schema"), Mapping):
        wrapped = value["json_schema"]
        schema = wrapped.get("schema") or {}
        return ResponseFormat(schema, str(wrapped.get("name") or "json_schema"))
    return ResponseFormat(value, str(value.get("title") or "json_schema"))


def requested_format(options: Mapping[str, Any]) -> ResponseFormat | None:
    """The response format among a request's options: ``response_format`` or ``json_schema``.

    Raises:
        InvalidRequestError: Both given, or an unusable format.
    """
    given = [options[key] for key in ("response_format", "json_schema") if options.get(key)]
    if len(given) > 1:
        raise InvalidRequestError("pass response_format or json_schema, not both")
    return as_response_format(given[0]) if given else None


def with_parsed(turn: Turn, options: Mapping[str, Any]) -> Turn:
    """``turn`` with its answer parsed when the request asked for a response format."""
    shape = requested_format(options)
    return turn if shape is None else replace(turn, parsed=shape.parse(turn.content))


def _closed(schema: Any) -> Any:
    """A pydantic schema with no room for keys the model does not define.

    Pydantic leaves objects open (extra keys are ignored when validating), but a grammar that
    allows any key lets a model wander through keys nobody reads, as OpenAI's strict mode
    closes them too; a schema that says otherwise keeps its word.
    """
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if closed.get("type") == "object" and "properties" in closed:
            closed.setdefault("additionalProperties", False)
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema
