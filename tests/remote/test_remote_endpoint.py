"""mlxnb.endpoint against a real mlxnb server on loopback: events, tools, audit, refusals."""

from __future__ import annotations

import asyncio
import time

import pytest
from remote_scripts import API_KEY, TOOL_TURN, add

import mlxnb
from mlxnb._server.background import ServerHandle


async def test_content_streams_with_measured_usage(remote: mlxnb.Endpoint) -> None:
    events = [
        event async for event in remote.stream([{"role": "user", "content": "say:Hello there"}])
    ]
    assert "".join(e.text for e in events if isinstance(e, mlxnb.ContentDelta)) == "Hello there"
    done = events[-1]
    assert isinstance(done, mlxnb.Done) and done.finish_reason == "stop"
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.usage.time_to_first_token is not None and done.usage.time_to_first_token > 0


async def test_conversation_streams_thinking_and_runs_the_tool(remote: mlxnb.Endpoint) -> None:
    chat = mlxnb.Conversation(remote, tools=[add], generation_options={"max_tokens": 200})
    seen = [event async for event in chat.stream(TOOL_TURN)]
    thinking = "".join(e.text for e in seen if isinstance(e, mlxnb.ThinkingDelta))
    assert "I should add them." in thinking
    calls = [e for e in seen if isinstance(e, mlxnb.ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 2, "b": 3})]
    assert any(isinstance(e, mlxnb.ToolCallDelta) for e in seen)
    messages = chat.messages
    assert messages[-2]["role"] == "tool" and messages[-2]["content"] == "5"
    assert messages[-1] == {"role": "assistant", "content": "Result: 5"}
    assert chat.turns[-1].content == "Result: 5"


def test_audit_row_names_the_endpoint_never_the_key(
    remote: mlxnb.Endpoint, client_audit: mlxnb.AuditLog, server: ServerHandle
) -> None:
    turn = remote.generate([{"role": "user", "content": "say:audited"}], temperature=0.0)
    assert turn.content == "audited"
    frame = client_audit.to_pandas()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["endpoint"] == server.url
    assert row["model"] == remote.model_id
    assert row["source"] == "python" and row["finish_reason"] == "stop"
    assert row["content"] == "audited"
    assert API_KEY not in frame.to_json(date_format="iso")
    assert API_KEY not in repr(remote)


def test_evaluate_on_one_endpoint_has_the_engine_columns(
    remote: mlxnb.Endpoint, client_audit: mlxnb.AuditLog
) -> None:
    frame = mlxnb.evaluate(["say:one", "say:two words"], model=remote, progress=False)
    assert list(frame["content"]) == ["one", "two words"]
    assert frame["error"].isna().all()
    assert (frame["time_to_first_token"] > 0).all()
    assert (frame["completion_tokens"] > 0).all()
    rows = client_audit.to_pandas()
    assert set(rows["source"]) == {"eval"}
    assert set(rows["run_id"]) == {frame.attrs["run_id"]}


def test_log_probabilities_come_from_the_server(
    remote: mlxnb.Endpoint, served_engine: mlxnb.Engine
) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    options = {"max_tokens": 5, "temperature": 0.0, "logprobs": True, "top_logprobs": 2}
    far = remote.generate(hi, **options)
    near = served_engine.generate(hi, **options)
    assert far.content == near.content and len(far.logprobs) == 5
    assert [e.token for e in far.logprobs] == [e.token for e in near.logprobs]
    assert [e.logprob for e in far.logprobs] == pytest.approx([e.logprob for e in near.logprobs])
    assert all(len(e.top_logprobs) == 2 and e.id == -1 for e in far.logprobs)
    frame = mlxnb.evaluate(["Hi"], model=remote, progress=False, **options)
    assert frame["mean_logprob"].iloc[0] == pytest.approx(sum(e.logprob for e in near.logprobs) / 5)


def test_what_only_a_local_engine_does_is_refused(remote: mlxnb.Endpoint) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="logits_processors"):
        remote.generate([{"role": "user", "content": "x"}], logits_processors=[print])
    with pytest.raises(TypeError, match="unknown option"):
        remote.generate([{"role": "user", "content": "x"}], temprature=0.5)
    with pytest.raises(mlxnb.InvalidRequestError, match="score"):
        remote.score("context", ["a", "b"])


def test_client_errors_are_mlxnb_errors(server: ServerHandle, served_engine: mlxnb.Engine) -> None:
    wrong_key = mlxnb.endpoint(server.url, model=served_engine.model_id, api_key="nope")
    with pytest.raises(mlxnb.RemoteError) as raised:
        wrong_key.generate([{"role": "user", "content": "say:x"}])
    assert raised.value.status == 401 and "nope" not in str(raised.value)
    unknown = mlxnb.endpoint(server.url, model="no-such-model", api_key=API_KEY)
    with pytest.raises(mlxnb.ModelNotFoundError):
        unknown.generate([{"role": "user", "content": "say:x"}])
    gone = mlxnb.endpoint("http://127.0.0.1:9/v1", model="m", retries=1, backoff=0.01)
    with pytest.raises(mlxnb.RemoteError, match="could not be reached"):
        gone.generate([{"role": "user", "content": "x"}])


async def test_closing_the_stream_cancels_the_request_on_the_server(
    remote: mlxnb.Endpoint, server_audit: mlxnb.AuditLog, client_audit: mlxnb.AuditLog
) -> None:
    before = len(server_audit.to_pandas())
    events = remote.stream([{"role": "user", "content": "spin:go"}], max_tokens=20_000)
    count = 0
    async for event in events:
        count += isinstance(event, mlxnb.ContentDelta | mlxnb.ThinkingDelta)
        if count >= 3:
            break
    await events.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = server_audit.to_pandas()
        if len(rows) > before:
            break
        await asyncio.sleep(0.05)
    assert list(rows["finish_reason"])[before:] == ["cancelled"]
    assert rows["completion_tokens"].iloc[-1] < 1000
    mine = client_audit.to_pandas()
    assert list(mine["finish_reason"]) == ["cancelled"]


def test_stream_sync_yields_the_same_events_and_closing_it_cancels(
    remote: mlxnb.Endpoint, server_audit: mlxnb.AuditLog
) -> None:
    events = list(remote.stream_sync([{"role": "user", "content": "say:in a script"}]))
    assert "".join(e.text for e in events if isinstance(e, mlxnb.ContentDelta)) == "in a script"
    assert isinstance(events[-1], mlxnb.Done) and events[-1].finish_reason == "stop"
    before = len(server_audit.to_pandas())
    stream = remote.stream_sync([{"role": "user", "content": "spin:go"}], max_tokens=20_000)
    for count, _ in enumerate(stream):
        if count >= 3:
            break
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while len(rows := server_audit.to_pandas()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(rows["finish_reason"])[before:] == ["cancelled"]


async def test_endpoints_skip_a_dead_server_before_the_first_event(
    server: ServerHandle, served_engine: mlxnb.Engine, client_audit: mlxnb.AuditLog
) -> None:
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    group = mlxnb.endpoints(
        [dead, server.url], model=served_engine.model_id, api_key=API_KEY, audit=client_audit
    )
    chat = mlxnb.Conversation(group, generation_options={"max_tokens": 50})
    turn = await chat.ask("say:from the live one")
    assert turn.content == "from the live one"
    assert group.alive == [server.url]
    rows = client_audit.to_pandas()
    assert list(rows["endpoint"]) == [dead, server.url]
    assert list(rows["finish_reason"]) == ["error", "stop"]


async def test_a_text_endpoint_refuses_images_before_sending(
    server: ServerHandle, served_engine: mlxnb.Engine
) -> None:
    text_only = mlxnb.endpoint(
        server.url, model=served_engine.model_id, api_key=API_KEY, kind="text", audit=False
    )
    from PIL import Image

    chat = mlxnb.Conversation(text_only)
    with pytest.raises(mlxnb.InvalidRequestError, match="text-only model"):
        await chat.ask("what is this?", images=[Image.new("RGB", (8, 8))])
