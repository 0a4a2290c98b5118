"""Heartbeats between a sharded model's ranks: real sockets on loopback, no MLX."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mlxnb._engine import heartbeat
from mlxnb._engine.heartbeat import HeartbeatListener, HeartbeatSender


class Recorder:
    """Collects what ``on_lost`` reports; waits for the first report."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._seen = threading.Event()

    def __call__(self, why: str) -> None:
        self.reasons.append(why)
        self._seen.set()

    def wait(self, timeout: float = 5.0) -> str:
        assert self._seen.wait(timeout), "no loss reported"
        return self.reasons[0]


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat, "INTERVAL", 0.05)
    monkeypatch.setattr(heartbeat, "TIMEOUT", 0.5)


def test_a_follower_that_keeps_beating_is_not_lost_and_a_dead_one_is() -> None:
    lost = Recorder()
    listener = HeartbeatListener(1, lost, "127.0.0.1")
    sender = HeartbeatSender("127.0.0.1", listener.port, 3, Recorder())
    time.sleep(1.0)  # twice the timeout: beats keep it alive
    assert lost.reasons == []
    sender._connection.close()  # as a killed process's socket closes (no farewell)
    sender._closed.set()
    assert lost.wait() == "rank 3 closed its heartbeat connection"
    listener.close()


def test_a_silent_follower_is_lost_after_the_timeout() -> None:
    lost = Recorder()
    listener = HeartbeatListener(1, lost, "127.0.0.1")
    with socket.create_connection(("127.0.0.1", listener.port)):  # connects, never beats
        started = time.monotonic()
        assert "sent no heartbeat for 0.5 s" in lost.wait()
        assert time.monotonic() - started >= 0.4
    listener.close()


def test_ranks_parting_on_purpose_report_nothing() -> None:
    lost, gone = Recorder(), Recorder()
    listener = HeartbeatListener(1, lost, "127.0.0.1")
    sender = HeartbeatSender("127.0.0.1", listener.port, 1, gone)
    time.sleep(0.2)
    listener.close()  # rank 0 first, as the closing tick does
    sender.close()
    time.sleep(1.0)
    assert lost.reasons == [] and gone.reasons == []


def test_a_follower_learns_that_rank_zero_is_gone() -> None:
    gone = Recorder()
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = HeartbeatSender("127.0.0.1", server.getsockname()[1], 1, gone)
        connection, _ = server.accept()
        connection.close()  # rank 0's process ends
    assert "rank 0 stopped taking heartbeats" in gone.wait()
    sender.close()
