"""Ids, in one place: request ids (time-sortable), tool-call ids, conversation and run ids.

Every door and the audit log use these, so an id's shape is decided here once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_id_lock = threading.Lock()
_id_last_ms = 0
_id_seq = 0


def new_request_id() -> str:
    """A new time-sortable request id (UUIDv7 layout, RFC 9562).

    The first 48 bits are Unix milliseconds, so ids sort by creation time as text. Within one
    process ids are strictly increasing: a 12-bit counter orders ids of the same millisecond.
    The last 62 bits are random, which keeps ids from different processes apart.

    Returns:
        The id as a 36-character lowercase UUID string.
    """
    global _id_last_ms, _id_seq
    with _id_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _id_last_ms:
            _id_last_ms, _id_seq = now_ms, 0
        else:
            _id_seq += 1
            if _id_seq > 0xFFF:  # counter spent: borrow the next millisecond
                _id_last_ms, _id_seq = _id_last_ms + 1, 0
        ms, seq = _id_last_ms, _id_seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))


def new_tool_call_id() -> str:
    """A fresh id in OpenAI's ``call_…`` style."""
    return f"call_{uuid.uuid4().hex[:24]}"


def new_conversation_id() -> str:
    """A fresh id grouping the turns of one conversation."""
    return uuid.uuid4().hex


def new_run_id() -> str:
    """A fresh evaluation-run id."""
    return f"eval-{uuid.uuid4().hex[:12]}"


def new_message_id() -> str:
    """A fresh id for one message shown in the chat widget."""
    return uuid.uuid4().hex
