"""Decoded text → typed events: the one parser for streaming and non-streaming output.

Marker matching (with hold-back of partial markers) is mlx-lm's ``TextStateMachine``; tool-call
text is parsed by the tokenizer's own mlx-lm tool parser. Stop strings are terminal transitions
of the same machine, so they are matched across chunk boundaries too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlx_lm.generate import TextStateMachine

from mlxnb._ids import new_tool_call_id
from mlxnb.events import ContentDelta, Event, ThinkingDelta, ToolCall, ToolCallDelta, ToolCallError

NORMAL, REASONING, TOOL = "normal", "reasoning", "tool"
ToolParser = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Markers:
    """The control strings a model family uses.

    Attributes:
        think_start: Opens reasoning (e.g. ``<think>``), or ``None``.
        think_end: Closes reasoning.
        tool_start: Opens a tool call (e.g. ``<tool_call>``), or ``None``.
        tool_end: Closes a tool call; ``None`` when a call runs to the end of the output.
    """

    think_start: str | None = None
    think_end: str | None = None
    tool_start: str | None = None
    tool_end: str | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Markers:
        """Read the markers mlx-lm's ``TokenizerWrapper`` inferred for this model."""
        thinking = bool(getattr(tokenizer, "has_thinking", False))
        tools = bool(getattr(tokenizer, "has_tool_calling", False))
        return cls(
            think_start=tokenizer.think_start if thinking else None,
            think_end=tokenizer.think_end if thinking else None,
            tool_start=tokenizer.tool_call_start if tools else None,
            tool_end=(tokenizer.tool_call_end or None) if tools else None,
        )


STOPPED = "\x00stopped:"
"""Prefix of the terminal state a stop string leads to (followed by the string)."""


def build_state_machine(markers: Markers, stop: Sequence[str] = ()) -> TextStateMachine:
    """Build the text state machine for ``markers`` with ``stop`` strings as terminal edges."""
    transitions: dict[str, list[tuple[str, str | None]]] = {NORMAL: [], REASONING: [], TOOL: []}
    if markers.think_start and markers.think_end:
        transitions[NORMAL].append((markers.think_start, REASONING))
        transitions[REASONING].append((markers.think_end, NORMAL))
    if markers.tool_start:
        transitions[NORMAL].append((markers.tool_start, TOOL))
        transitions[REASONING].append((markers.tool_start, TOOL))
        if markers.tool_end:
            transitions[TOOL].append((markers.tool_end, NORMAL))
    for word in dict.fromkeys(s for s in stop if s):
        # Each stop string ends in a state of its own, so the parser knows which one matched.
        transitions[NORMAL].append((word, STOPPED + word))
        transitions[REASONING].append((word, STOPPED + word))
        transitions[STOPPED + word] = []
    return TextStateMachine(transitions)


class EventParser:
    """Turn decoded text, fed in chunks of any size, into events.

    Feeding a text in one piece or split at any points yields the same events once adjacent
    deltas of the same kind are merged: the parser holds back text that may be the start of a
    marker or stop string until it knows.

    Args:
        markers: The model family's control strings.
        tool_parser: mlx-lm tool parser ``(text, tools) -> dict | list[dict]``.
        tools: The request's tool definitions, passed to the tool parser.
        initial_state: ``"reasoning"`` when the prompt already opened a thinking block.
        stop: Stop strings; output ends before the first one.
        id_factory: Makes tool-call ids.
        trim_block_starts: Drop the whitespace a block (the answer, a thinking block) opens
            with, as chat templates leave it; a raw completion keeps its text as generated.
        trim_first_block: With ``trim_block_starts``, trim the first block too; a continued
            message carries on a block already open, whose text goes on as generated.
    """

    def __init__(
        self,
        markers: Markers,
        *,
        tool_parser: ToolParser | None = None,
        tools: Any = None,
        initial_state: str = NORMAL,
        stop: Sequence[str] = (),
        id_factory: Callable[[], str] = new_tool_call_id,
        trim_block_starts: bool = True,
        trim_first_block: bool = True,
    ) -> None:
        self._machine = build_state_machine(markers, stop)
        self._state = self._machine.make_state(initial_state)
        self._starts: dict[str, frozenset[str]] = {}  # per state: characters a marker begins with
        self._current = initial_state
        self._tool_parser = tool_parser
        self._tools = tools
        self._new_id = id_factory
        self._trim = trim_block_starts
        self._block_start = trim_block_starts and trim_first_block
        self._tool_text: list[str] = []
        self._blocks = 0
        self._calls = 0
        self.stopped = False
        self.stop_sequence: str | None = None

    @property
    def in_reasoning(self) -> bool:
        """Whether the text fed so far ends inside a thinking block."""
        return bool(self._state[0] == REASONING)

    @property
    def made_tool_calls(self) -> bool:
        """Whether at least one tool call was parsed."""
        return self._calls > 0

    def feed(self, text: str) -> list[Event]:
        """Consume a chunk of decoded text and return the events it completes."""
        if self.stopped or not text:
            return []
        name, node, states, held = self._state
        if not held and node is states[name][0] and self._starts_no_marker(name, text):
            # Nothing held back and no character that could begin a marker or stop string: the
            # state machine (a Python loop over every character) would pass the text through.
            if name == self._current:
                # Most tokens: more of the same block, with no transition to look for.
                return self._text_event(name, text)
            return self._segments_to_events(((name, text),))
        self._state, segments = TextStateMachine.split(self._state, text)
        return self._segments_to_events(segments)

    def _starts_no_marker(self, state: str, text: str) -> bool:
        """Whether no character of ``text`` begins a transition out of ``state``."""
        starts = self._starts.get(state)
        if starts is None:
            root = self._state[2][state][0]
            starts = self._starts[state] = frozenset(key for key in root if len(key) == 1)
        return starts.isdisjoint(text)

    def finish(self) -> list[Event]:
        """End the output: release held-back text and close an unterminated tool call."""
        events: list[Event] = []
        if not self.stopped:
            self._state, rest, state = TextStateMachine.flush(self._state)
            events = self._segments_to_events([(state, rest)])
        if self._current == TOOL:
            events.extend(self._close_tool_call())
            self._current = NORMAL
        return events

    def _segments_to_events(self, segments: Iterable[tuple[str, str]]) -> list[Event]:
        events: list[Event] = []
        for state, text in segments:
            if state != self._current:
                if self._current == TOOL:
                    events.extend(self._close_tool_call())
                if state.startswith(STOPPED):
                    self.stopped = True
                    self.stop_sequence = state.removeprefix(STOPPED)
                    return events
                self._current = state
                self._block_start = self._trim
                if state == TOOL:
                    self._tool_text = []
            if text:
                events.extend(self._text_event(state, text))
        return events

    def _text_event(self, state: str, text: str) -> list[Event]:
        if state == TOOL:
            self._tool_text.append(text)
            return [ToolCallDelta(self._blocks, text)]
        if self._block_start:
            text = text.lstrip()
            if not text:
                return []
            self._block_start = False
        return [ThinkingDelta(text) if state == REASONING else ContentDelta(text)]

    def _close_tool_call(self) -> list[Event]:
        raw = "".join(self._tool_text)
        self._tool_text = []
        index = self._blocks
        self._blocks += 1
        if self._tool_parser is None:
            return [ToolCallError(index, raw, "this model has no tool-call parser")]
        try:
            parsed = self._tool_parser(raw, self._tools)
            calls = parsed if isinstance(parsed, list) else [parsed]
            events: list[Event] = [self._to_call(call) for call in calls]
        except Exception as error:
            return [ToolCallError(index, raw, f"{type(error).__name__}: {error}")]
        return events

    def _to_call(self, call: Any) -> ToolCall:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError("a tool call needs a string 'name'")
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError("tool-call arguments must be a JSON object")
        event = ToolCall(
            self._calls, str(call.get("id") or self._new_id()), call["name"], arguments
        )
        self._calls += 1
        return event


def initial_state_for(prompt_tokens: Sequence[int], tokenizer: Any) -> str:
    """``"reasoning"`` when the prompt ends inside an open thinking block, else ``"normal"``.

    Some templates (Qwen3 thinking variants and others) end the generation prompt with
    ``<think>``, so the model's output begins in reasoning without emitting the opener.
    """
    if not getattr(tokenizer, "has_thinking", False):
        return NORMAL
    tokens = list(prompt_tokens)
    start = tokenizer.rfind_think_start(tokens)
    end = tokenizer.rfind_think_end(tokens)
    return REASONING if start >= 0 and start > end else NORMAL
