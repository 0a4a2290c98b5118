"""Test doubles for the chat widget's narrow unit tests (the real engine is in conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from mlxnb.events import ContentDelta, Done, Event, ThinkingDelta, Usage

Script = Callable[..., Callable[[], Mapping[str, Any]]]
"""``script(text, ...)``: a generation-options factory forcing one text per request."""


class FakeEngine:
    """Follows ENGINE_API.md's ``stream`` contract with scripted events (narrow tests only)."""

    def __init__(
        self,
        replies: Sequence[Sequence[Event]] = (),
        *,
        delay: float = 0.0,
        ready: bool = True,
        load_error: Exception | None = None,
        raises: Exception | None = None,
        supports_thinking: bool = True,
    ) -> None:
        self.model_id = "fake/model"
        self.replies = [list(r) for r in replies]
        self.delay = delay
        self.is_ready = ready
        self.load_error = load_error
        self.raises = raises
        self.thinking = supports_thinking
        self.calls: list[dict[str, Any]] = []
        self.closed_streams = 0

    @property
    def ready(self) -> bool:
        return self.is_ready

    @property
    def supports_thinking(self) -> bool:
        return self.thinking

    def wait_ready(self, timeout: float | None = None) -> None:
        if not self.is_ready:
            raise TimeoutError("loading")
        if self.load_error is not None:
            raise self.load_error

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        self.calls.append(
            {
                "messages": list(messages),
                "tools": tools,
                "enable_thinking": enable_thinking,
                **options,
            }
        )
        if self.raises is not None:
            raise self.raises
        reply = self.replies.pop(0) if self.replies else [ContentDelta("ok"), done()]
        try:
            for event in reply:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield event
        finally:
            self.closed_streams += 1


def done(reason: str = "stop", completion: int = 2, error: str | None = None) -> Done:
    usage = Usage(
        prompt_tokens=5,
        completion_tokens=completion,
        time_to_first_token=0.01,
        generation_tps=100.0,
    )
    return Done(reason, usage, error)  # type: ignore[arg-type]


def reply(text: str = "", thinking: str = "") -> list[Event]:
    events: list[Event] = [ThinkingDelta(thinking)] if thinking else []
    return [*events, *(ContentDelta(t) for t in text.split(" ") if t), done()]


class Wire:
    """Records what a widget puts on its comm (outside a kernel the comm is a DummyComm)."""

    def __init__(self, widget: Any) -> None:
        self.log: list[tuple[str, Any]] = []
        widget.comm.publish_msg = self._publish

    def _publish(self, msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(data, dict) and data.get("method") == "custom":
            self.log.append(("custom", data["content"]))
        elif isinstance(data, dict) and data.get("method") == "update":
            self.log.append(("update", data["state"]))

    def customs(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [c for k, c in self.log if k == "custom" and (kind is None or c["type"] == kind)]

    def ops(self) -> list[list[Any]]:
        return [op for message in self.customs("ops") for op in message["ops"]]

    def updates(self, name: str) -> list[Any]:
        return [state[name] for k, state in self.log if k == "update" and name in state]
