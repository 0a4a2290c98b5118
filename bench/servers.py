"""Servers in subprocesses for the benches: a free loopback port, start, wait, stop; and
clients that send their requests to a server at the same moment."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import httpx

Client = TypeVar("Client")
Result = TypeVar("Result")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A server process and the loopback port it answers on."""

    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        """Terminate it and wait (kill after 30 s)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(command: list[str], port: int, deadline_s: float = 300.0) -> Server:
    """Run ``command`` and wait until ``/health`` on ``port`` answers 200."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early: {' '.join(command)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return Server(process, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not start: {' '.join(command)}")


def released_together(
    count: int,
    connect: Callable[[], AbstractContextManager[Client]],
    request: Callable[[Client, int], Result],
) -> tuple[list[Result], list[str]]:
    """``count`` client threads, each with its own client, released at once by a barrier.

    Each thread opens ``connect()``, waits at the barrier, then runs ``request(client, index)``
    (``index`` from 0 to ``count - 1``) and closes its client.

    Returns:
        The requests' results, in the order they finished, and one line per request that
        failed (a server that resets connections under load must show it, not lose them).
    """
    barrier = threading.Barrier(count)
    results: list[Result] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_thread(index: int) -> None:
        with connect() as client:
            barrier.wait()
            try:
                result = request(client, index)
            except Exception as error:  # counted by the caller, not printed and dropped
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")
                return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, failures
