"""Tool calls on the OpenAI wire as they are written: raw call text → ``tool_calls`` deltas.

A call written as one JSON object between markers (``{"name": "f", "arguments": {...}}``, the
Qwen and Hermes format) is scanned as its raw text streams in. Once its name is known the call
opens on the wire (``index``, ``id``, ``type``, ``function.name``), and then the text of its
``arguments`` object goes out piece by piece, exactly as the model writes it. Any split of the
raw text gives the same wire text, because the scanner reads it one character at a time.

The canonical ``arguments`` string, streamed or not, is that raw text, kept only when the parser
agrees (it decodes to the parsed call's arguments); otherwise, and for formats that are not one
JSON object, it is ``json.dumps`` of the parsed arguments, sent whole when the call is parsed.

A call that opened on the wire and then does not parse (a :class:`ToolCallError`: cut short by
``max_tokens``, malformed) or parses to something else keeps what was streamed: its entry stays,
with arguments that may not be complete JSON. The parsed call, if any, follows at the next index;
an unparseable call's raw text follows as content. The non-streamed body lists only parsed calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxnb._ids import new_tool_call_id
from mlxnb.events import Event, ToolCall, ToolCallDelta, ToolCallError

_SPACE = " \t\n\r"


class CallScanner:
    """Reads the raw text of one call, fed in pieces, for its name and its arguments' text.

    Only a JSON object at the top level is read; any other text makes the scanner give up
    (``opaque``), and the call is sent whole once parsed.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self.opaque = False
        self.arguments_done = False
        self._state = "lead"
        self._key: list[str] = []
        self._string: list[str] = []
        self._escaped = False
        self._in_string = False
        self._depth = 0
        self._current_key: str | None = None
        self._seen_arguments = False

    def feed(self, text: str) -> str:
        """Consume a piece of raw call text; return the piece of the arguments' text it adds."""
        out: list[str] = []
        for char in text:
            if self.opaque:
                break
            self._step(char, out)
        return "".join(out)

    def _step(self, char: str, out: list[str]) -> None:
        state = self._state
        if state in ("args", "skip"):
            self._nested(char, out if state == "args" else None)
        elif state in ("key", "name"):
            self._string_char(char)
        elif state == "primitive":
            if char in _SPACE or char in ",}":
                self._state = "after"
                self._step(char, out)
        elif char in _SPACE and state != "done":
            return
        elif state == "lead":
            self._expect(char, "{", "key?")
        elif state == "key?":
            if char == "}":
                self._state = "done"
            else:
                self._expect(char, '"', "key")
        elif state == "colon":
            self._expect(char, ":", "value")
        elif state == "value":
            self._value(char, out)
        elif state == "after":
            if char == ",":
                self._state = "key?"
            else:
                self._expect(char, "}", "done")

    def _expect(self, char: str, wanted: str, then: str) -> None:
        if char != wanted:
            self.opaque = True
            return
        self._state = then
        if then == "key":
            self._key, self._escaped = [], False

    def _string_char(self, char: str) -> None:
        target = self._key if self._state == "key" else self._string
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == '"':
            self._end_string("".join(target))
            return
        target.append(char)

    def _end_string(self, raw: str) -> None:
        try:
            value = json.loads(f'"{raw}"')
        except json.JSONDecodeError:
            self.opaque = True
            return
        if self._state == "key":
            self._current_key = value
            self._state = "colon"
        else:
            self.name = value
            self._state = "after"

    def _value(self, char: str, out: list[str]) -> None:
        key = self._current_key
        if key == "name" and char == '"' and self.name is None:
            self._state, self._string, self._escaped = "name", [], False
        elif key == "arguments" and char == "{" and not self._seen_arguments:
            self._seen_arguments = True
            self._state, self._depth, self._in_string, self._escaped = "args", 1, False, False
            out.append(char)
        elif char in '"{[':
            self._state, self._in_string, self._escaped = "skip", char == '"', False
            self._depth = 0 if char == '"' else 1
        else:
            self._state = "primitive"

    def _nested(self, char: str, out: list[str] | None) -> None:
        """One character inside an arguments object (sent) or a value being skipped."""
        if out is not None:
            out.append(char)
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
        elif char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
        if not self._in_string and self._depth == 0:
            self.arguments_done = self.arguments_done or self._state == "args"
            self._state = "after"


@dataclass(frozen=True)
class WireCall:
    """A parsed call as the non-streamed body lists it.

    Attributes:
        id: The call's id.
        name: The function name.
        arguments: The canonical arguments string (the same text the stream sent).
    """

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``tool_calls`` shape."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class _Open:
    index: int
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ToolCallWire:
    """Turns one stream's tool-call events into ``tool_calls`` delta entries, in order.

    Feed every event; :meth:`feed` returns the entries for that event's chunk, and
    :attr:`calls` gathers the parsed calls for the non-streamed body.

    Args:
        new_id: Makes the id of a call that opens before it is parsed (the parser's id comes
            only with the parsed call).
    """

    def __init__(self, new_id: Callable[[], str] = new_tool_call_id) -> None:
        self.new_id = new_id
        self.calls: list[WireCall] = []
        self._block: int | None = None
        self._scanner = CallScanner()
        self._pending: list[str] = []
        self._open: _Open | None = None
        self._next = 0

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The ``tool_calls`` entries that ``event`` adds (none for other events)."""
        if isinstance(event, ToolCallDelta):
            return self._delta(event)
        if isinstance(event, ToolCall):
            return self._parsed(event)
        if isinstance(event, ToolCallError) and event.index == self._block:
            self._open = None  # what was streamed stands; the raw text follows as content
            self._block = -1
        return []

    def _delta(self, event: ToolCallDelta) -> list[dict[str, Any]]:
        if event.index != self._block:
            self._block, self._scanner, self._pending, self._open = (
                event.index,
                CallScanner(),
                [],
                None,
            )
        piece = self._scanner.feed(event.text)
        entries: list[dict[str, Any]] = []
        if self._open is None and self._scanner.name is not None:
            self._open = _Open(self._take_index(), self.new_id(), self._scanner.name)
            entries.append(self._entry(self._open, name=self._open.name, arguments=""))
            piece = "".join(self._pending) + piece
        if self._open is None:
            self._pending.append(piece)
        elif piece:
            self._open.arguments.append(piece)
            entries.append(self._entry(self._open, arguments=piece))
        return entries

    def _parsed(self, call: ToolCall) -> list[dict[str, Any]]:
        opened, self._open, self._block = self._open, None, -1
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        if opened is not None and opened.name == call.name:
            text = "".join(opened.arguments)
            if not text:
                self.calls.append(WireCall(call.id, call.name, arguments))
                return [self._entry(opened, arguments=arguments)]
            if self._scanner.arguments_done and _decodes_to(text, call.arguments):
                self.calls.append(WireCall(call.id, call.name, text))
                return []
        whole = WireCall(call.id, call.name, arguments)
        self.calls.append(whole)
        return [{"index": self._take_index(), **whole.to_openai()}]

    def _take_index(self) -> int:
        self._next += 1
        return self._next - 1

    @staticmethod
    def _entry(opened: _Open, **function: str) -> dict[str, Any]:
        if "name" not in function:
            return {"index": opened.index, "function": function}
        return {"index": opened.index, "id": opened.id, "type": "function", "function": function}


def _decodes_to(text: str, arguments: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(text) == arguments)
    except (json.JSONDecodeError, RecursionError):
        return False
