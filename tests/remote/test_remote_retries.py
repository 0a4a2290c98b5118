"""Retries and wire edge cases against a tiny scripted HTTP stub on loopback.

A real server cannot be made to answer 429 once, or to break a stream half-way, on demand; the
stub answers each request with the next scripted reply and counts what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import mlxnb


@dataclass
class Reply:
    """One scripted answer: a status with an error body, or a 200 stream of chunks."""

    status: int = 200
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = True  # end with ``data: [DONE]`` and a proper end of body
    headers: dict[str, str] = field(default_factory=dict)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
OK = Reply(chunks=[chunk({"content": "fine"}), chunk({}, "stop"), {"choices": [], "usage": USAGE}])


class QuietServer(ThreadingHTTPServer):
    """Prints no traceback when a client hangs up mid-answer (a client that stops reading
    after ``[DONE]``, or one cancelled on purpose): anything else is still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Stub:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.bodies: list[dict[str, Any]] = []
        self.delay = 0.0
        self.running = self.most_running = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with stub.lock:
                    stub.running += 1
                    stub.most_running = max(stub.most_running, stub.running)
                try:
                    time.sleep(stub.delay)
                    self.answer()
                finally:
                    with stub.lock:
                        stub.running -= 1

            def answer(self) -> None:
                length = int(self.headers["Content-Length"])
                stub.bodies.append(json.loads(self.rfile.read(length)))
                reply = stub.script.pop(0) if stub.script else OK
                if reply.status != 200:
                    body = json.dumps({"error": {"message": f"scripted {reply.status}"}}).encode()
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                lines = [f"data: {json.dumps(c)}\n\n" for c in reply.chunks]
                if reply.done:
                    lines.append("data: [DONE]\n\n")
                for line in lines:
                    data = line.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                if reply.done:
                    self.wfile.write(b"0\r\n\r\n")
                else:  # the server dies mid-answer: the body never ends
                    self.close_connection = True

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


@pytest.fixture
def remote(stub: Stub) -> Iterator[mlxnb.Endpoint]:
    stub.script.clear()
    stub.bodies.clear()
    stub.delay, stub.most_running = 0.0, 0
    with mlxnb.AuditLog(":memory:") as audit:
        yield mlxnb.endpoint(stub.url, model="stub", backoff=0.01, audit=audit)


ASK = [{"role": "user", "content": "hi"}]


def test_429_then_200_is_retried(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(429, headers={"Retry-After": "0"}), OK]
    turn = remote.generate(ASK, max_tokens=5)
    assert turn.content == "fine" and turn.finish_reason == "stop"
    assert len(stub.bodies) == 2
    assert turn.usage.prompt_tokens == 7 and turn.usage.completion_tokens == 3
    assert remote.audit is not None and len(remote.audit.to_pandas()) == 1


def test_5xx_is_retried_and_429_gives_up_as_busy(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(503), Reply(500), OK]
    assert remote.generate(ASK).content == "fine"
    assert len(stub.bodies) == 3
    stub.script[:] = [Reply(429)] * (remote.retries + 1)
    with pytest.raises(mlxnb.EngineBusyError, match="429"):
        remote.generate(ASK)
    assert len(stub.bodies) == 3 + remote.retries + 1


def test_4xx_is_not_retried(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(400)]
    with pytest.raises(mlxnb.InvalidRequestError, match="scripted 400"):
        remote.generate(ASK)
    assert len(stub.bodies) == 1


def test_a_half_streamed_answer_is_never_replayed(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(chunks=[chunk({"content": "half"})], done=False)]
    with pytest.raises(mlxnb.RemoteError) as raised:
        remote.generate(ASK)
    assert raised.value.streamed and raised.value.status is None
    assert len(stub.bodies) == 1
    assert remote.audit is not None
    assert list(remote.audit.to_pandas()["finish_reason"]) == ["error"]


def test_body_carries_the_engine_options(stub: Stub, remote: mlxnb.Endpoint) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    remote.generate(
        ASK, tools, False, max_tokens=9, temperature=0.5, stop="x", tool_choice={"name": "f"}
    )
    body = stub.bodies[-1]
    assert body["stream"] is True and body["model"] == "stub"
    assert body["max_tokens"] == 9 and body["temperature"] == 0.5 and body["stop"] == ["x"]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["tools"] == tools


async def test_reasoning_and_tool_call_fragments_become_events(
    stub: Stub, remote: mlxnb.Endpoint
) -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add"}}
    stub.script[:] = [
        Reply(
            chunks=[
                chunk({"reasoning": "let me"}),
                chunk({"reasoning_content": " think"}),
                chunk({"tool_calls": [call]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": "2}"}}]}),
                chunk({"tool_calls": [{"index": 1, "function": {"name": "bad"}}]}),
                chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"a": '}}]}),
                chunk({}, "tool_calls"),
            ]
        )
    ]
    events = [e async for e in remote.stream(ASK)]
    assert "".join(e.text for e in events if isinstance(e, mlxnb.ThinkingDelta)) == "let me think"
    calls = [e for e in events if isinstance(e, mlxnb.ToolCall)]
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_1", "add", {"a": 2})]
    errors = [e for e in events if isinstance(e, mlxnb.ToolCallError)]
    assert [(e.index, e.raw) for e in errors] == [(1, '{"a": ')]
    done = events[-1]
    assert isinstance(done, mlxnb.Done) and done.finish_reason == "tool_calls"


async def test_at_most_max_concurrency_requests_are_in_flight(stub: Stub) -> None:
    stub.delay = 0.1
    remote = mlxnb.endpoint(stub.url, model="stub", max_concurrency=2, audit=False)
    turns = await asyncio.gather(*(remote.agenerate(ASK) for _ in range(6)))
    assert [t.content for t in turns] == ["fine"] * 6
    assert stub.most_running == 2


def test_user_information_in_the_url_is_never_recorded(stub: Stub) -> None:
    with mlxnb.AuditLog(":memory:") as audit:
        url = stub.url.replace("http://", "http://me:hunter2@")
        remote = mlxnb.endpoint(url, model="stub", audit=audit)
        assert remote.generate(ASK).content == "fine"
        rows = audit.to_pandas()
        assert list(rows["endpoint"]) == [stub.url]
        assert "hunter2" not in rows.to_json(date_format="iso") and "hunter2" not in repr(remote)


def test_images_travel_as_data_urls_and_are_not_stored(stub: Stub) -> None:
    from PIL import Image as PILImage

    picture = PILImage.new("RGB", (8, 8), "red")
    with mlxnb.AuditLog(":memory:") as audit:
        remote = mlxnb.endpoint(stub.url, model="stub", audit=audit)
        parts: list[dict[str, Any]] = [
            {"type": "image", "image": picture},
            {"type": "text", "text": "what?"},
        ]
        message = {"role": "user", "content": parts}
        assert remote.generate([message]).content == "fine"
        [image, text] = stub.bodies[-1]["messages"][0]["content"]
        assert image["type"] == "image_url"
        assert image["image_url"]["url"].startswith("data:image/")
        assert text == {"type": "text", "text": "what?"}
        stored = audit.to_pandas()["request"].iloc[0]
        assert "data:image" not in str(stored)


def test_an_error_chunk_ends_the_turn_with_its_message(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(chunks=[chunk({"content": "par"}), {"error": {"message": "boom"}}])]
    turn = remote.generate(ASK)
    assert (turn.content, turn.finish_reason, turn.error) == ("par", "error", "boom")
    assert len(stub.bodies) == 1


def test_a_stream_that_ends_unfinished_is_an_error(stub: Stub, remote: mlxnb.Endpoint) -> None:
    stub.script[:] = [Reply(chunks=[chunk({"content": "cut"})])]  # [DONE] without a finish
    with pytest.raises(mlxnb.RemoteError, match="without finishing"):
        remote.generate(ASK)
