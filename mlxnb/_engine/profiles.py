"""Profiles: a named model plus the defaults a request gets when it does not say otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from mlxnb._engine.request import SamplingOptions
from mlxnb.errors import InvalidRequestError, UnknownOptionError


@dataclass(frozen=True)
class Profile:
    """A model with defaults: usable by name wherever a model name is.

    Attributes:
        name: The profile's name (``"coder"``); a request's ``model`` may be this.
        model: The model it runs (a name the pool knows, a directory or a repo id).
        system: A system prompt put first when the request has none.
        enable_thinking: Thinking on or off when the request does not say.
        sampling: Sampling defaults (``temperature``, ``max_tokens``, ...) for options the
            request leaves unset.
    """

    name: str
    model: str
    system: str | None = None
    enable_thinking: bool | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip() or self.name.startswith(("/", "~", ".")):
            raise InvalidRequestError(f"profile name {self.name!r}: give a short name")
        unknown = sorted(set(self.sampling) - {f.name for f in fields(SamplingOptions)})
        if unknown:
            raise UnknownOptionError(
                f"profile {self.name!r}: unknown sampling option(s) {', '.join(unknown)}"
            )
        object.__setattr__(self, "sampling", MappingProxyType(dict(self.sampling)))

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``messages`` with the profile's system prompt first, unless they bring their own."""
        ordered = list(messages)
        if self.system is None or (ordered and ordered[0].get("role") in ("system", "developer")):
            return ordered
        return [{"role": "system", "content": self.system}, *ordered]

    def thinking(self, enable_thinking: bool | None) -> bool | None:
        """The request's thinking switch, or the profile's when the request does not say."""
        return self.enable_thinking if enable_thinking is None else enable_thinking

    def options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The request's options over the profile's defaults (``None`` means unset)."""
        merged = dict(self.sampling)
        merged.update({key: value for key, value in options.items() if value is not None})
        return merged

    def describe(self) -> dict[str, Any]:
        """A plain summary (for listings and ``/v1/models``)."""
        return {
            "model": self.model,
            "system": self.system,
            "enable_thinking": self.enable_thinking,
            "sampling": dict(self.sampling),
        }
