"""Streaming endpoints send headers and SSE comments while a long prompt is prefilled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

import mlxnb
from mlxnb._server.background import ServerHandle
from mlxnb.testing import tiny_model

LONG = "Tell me everything about lighthouses and their keepers. " * 30


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ServerHandle, mlxnb.Engine]]:
    path: Path = tiny_model()
    engine = mlxnb.Engine(path, name="slow-prefill", audit=False, prefill_step=16, max_tokens=3)
    with engine, mlxnb.serve(engine) as handle:
        yield handle, engine


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "1 " + LONG}]}),
        ("/completions", {"prompt": "2 " + LONG, "max_tokens": 3}),
        ("/responses", {"input": "3 " + LONG, "max_output_tokens": 3}),
        ("/messages", {"messages": [{"role": "user", "content": "4 " + LONG}], "max_tokens": 3}),
    ],
)
def test_comments_report_progress_before_the_first_event(
    server: tuple[ServerHandle, mlxnb.Engine], path: str, body: dict[str, Any]
) -> None:
    handle, engine = server
    payload = {"model": engine.model_id, "stream": True, **body}
    with httpx.Client(timeout=60) as http:
        lines = http.post(handle.url + path, json=payload).text.splitlines()
    comments = [i for i, line in enumerate(lines) if line.startswith(": prefill ")]
    data = [i for i, line in enumerate(lines) if line.startswith("data: ")]
    assert len(comments) >= 5 and data
    # Progress counts up to the prompt's length, 16 tokens a forward pass.
    progress = [lines[i].split()[2].split("/") for i in comments]
    done, total = [int(p[0]) for p in progress], {int(p[1]) for p in progress}
    assert done == sorted(done) and len(total) == 1
    assert done[0] == 16 and done[-1] >= total.pop() - 16 > 200
    assert comments[0] < data[-1]  # before the answer ends, not after


def test_without_streaming_no_comment_reaches_the_body(
    server: tuple[ServerHandle, mlxnb.Engine],
) -> None:
    handle, engine = server
    body = {"model": engine.model_id, "messages": [{"role": "user", "content": "5 " + LONG}]}
    response = httpx.post(handle.url + "/chat/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"]


def test_the_official_clients_ignore_the_comments(
    server: tuple[ServerHandle, mlxnb.Engine],
) -> None:
    handle, engine = server
    messages: Any = [{"role": "user", "content": "6 " + LONG}]
    with openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(model=engine.model_id, messages=messages, stream=True)
        )
        assert chunks[-1].choices[0].finish_reason == "length"
    base = handle.url.removesuffix("/v1")
    with anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as claude:
        with claude.messages.stream(
            model=engine.model_id, max_tokens=3, messages=[{"role": "user", "content": "7 " + LONG}]
        ) as stream:
            message = stream.get_final_message()
        assert message.stop_reason == "max_tokens"


def test_a_client_whose_read_timeout_is_shorter_than_the_prefill_gets_its_answer() -> None:
    # One prompt token per forward pass: thousands of passes before the first token, each
    # followed by a comment, so the stream is silent for milliseconds at a time while the
    # whole prefill lasts several times the read timeout (margins a loaded CI machine keeps).
    engine = mlxnb.Engine(tiny_model(), name="crawl", audit=False, prefill_step=1, max_tokens=2)
    prompt = "0 " + "Keepers trim the lamp wick every night. " * 600
    with engine, mlxnb.serve(engine) as handle:
        engine.wait_ready(60)  # the read timeout is for the prefill, not the model's load
        timeout = httpx.Timeout(60.0, read=1.5)
        with openai.OpenAI(
            base_url=handle.url, api_key="x", max_retries=0, timeout=timeout
        ) as client:
            started = time.perf_counter()
            stream = client.chat.completions.create(
                model="crawl", messages=[{"role": "user", "content": prompt}], stream=True
            )
            chunks = list(stream)
            took = time.perf_counter() - started
    assert chunks[-1].choices[0].finish_reason == "length"
    assert took > 1.5  # the prefill alone outlasted the read timeout
