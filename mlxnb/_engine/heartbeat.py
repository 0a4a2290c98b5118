"""Heartbeats: whether the other ranks of a sharded model are still there, watched outside MLX.

A collective waiting on a rank that died does not always return: MLX's ring backend reports the
lost connection, but an evaluation already waiting on it can stay blocked (seen here when a rank
was killed mid-step), and a machine that vanishes from the network (power, cable) closes no
socket at all. So each follower keeps a TCP connection of its own to rank 0 and writes a byte on
it every :data:`INTERVAL` seconds. Rank 0 declares the group lost when a connection closes or
stays silent for :data:`TIMEOUT` seconds; a follower whose writes fail knows rank 0 is gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("mlxnb.engine")

INTERVAL = 0.5
"""Seconds between a follower's heartbeats."""
TIMEOUT = 15.0
"""Seconds of silence after which rank 0 takes a follower for gone (a killed process is seen at
once: its connection closes). Generous, because a beat needs the follower's GIL, which a
C extension may hold for seconds on a loaded machine."""

Lost = Callable[[str], None]


def leader_address() -> str:
    """The address the other ranks reach rank 0 at: its first ring address, else loopback."""
    hostfile = os.environ.get("MLX_HOSTFILE", "")
    try:
        with open(hostfile) as file:
            hosts = json.load(file)
        return str(hosts[0][0]).rsplit(":", 1)[0]
    except (OSError, ValueError, LookupError, TypeError):
        return "127.0.0.1"


class HeartbeatListener:
    """Rank 0's side: accepts one connection per follower and watches each.

    Args:
        followers: How many connections to expect.
        on_lost: Called once, on a watcher thread, when a follower is gone (with why).
        host: The address to listen on.
    """

    def __init__(self, followers: int, on_lost: Lost, host: str) -> None:
        self._on_lost = on_lost
        self._lost = threading.Event()
        self._closed = threading.Event()
        self._server = socket.create_server((host, 0))
        self.port = int(self._server.getsockname()[1])
        self._followers = followers
        threading.Thread(target=self._accept, name="mlxnb-heartbeat", daemon=True).start()

    def _accept(self) -> None:
        for _ in range(self._followers):
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            connection.settimeout(TIMEOUT)
            thread = threading.Thread(
                target=self._watch, args=(connection,), name="mlxnb-heartbeat", daemon=True
            )
            thread.start()

    def _watch(self, connection: socket.socket) -> None:
        with connection:
            rank = "a follower"
            while not self._closed.is_set():
                try:
                    data = connection.recv(64)
                except TimeoutError:
                    if not self._closed.is_set():
                        self._lose(f"{rank} sent no heartbeat for {TIMEOUT:g} s")
                    return
                except OSError as error:
                    self._lose(f"{rank}'s heartbeat connection failed ({error})")
                    return
                if not data:
                    if not self._closed.is_set():
                        self._lose(f"{rank} closed its heartbeat connection")
                    return
                rank = f"rank {data[-1]}"

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            self._lost.set()
            self._on_lost(why)

    def close(self) -> None:
        """Stop watching (the engine closes: followers leave on purpose)."""
        self._closed.set()
        self._server.close()


class HeartbeatSender:
    """A follower's side: writes its rank to rank 0 every :data:`INTERVAL` seconds.

    Args:
        host: Rank 0's address.
        port: Its heartbeat port.
        rank: This process's rank (one byte on the wire).
        on_lost: Called once, on the sender thread, when rank 0 no longer takes heartbeats.
    """

    def __init__(self, host: str, port: int, rank: int, on_lost: Lost) -> None:
        self._connection = socket.create_connection((host, port), timeout=TIMEOUT)
        self._beat = bytes([rank % 256])
        self._on_lost = on_lost
        self._closed = threading.Event()
        threading.Thread(target=self._run, name="mlxnb-heartbeat", daemon=True).start()

    def _run(self) -> None:
        while not self._closed.wait(INTERVAL):
            try:
                self._connection.sendall(self._beat)
            except OSError as error:
                if not self._closed.is_set():
                    self._on_lost(f"rank 0 stopped taking heartbeats ({error})")
                return

    def close(self) -> None:
        """Stop (the engine closes on purpose)."""
        self._closed.set()
        self._connection.close()
