"""Conversations that outlive the kernel: saved after each turn, resumed by id in a new process.

Real engine on the offline fixture model (forced output): the history with a tool call, its
result and thinking goes to the audit log's file and comes back in a child Python, whose next
request (its audit row) carries the old history.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

import mlxnb
from mlxnb import AuditLog, Conversation
from mlxnb._chat_saved import conversations
from mlxnb.errors import ConversationNotFoundError
from mlxnb.testing import FakeEngine, ForcedOutput, fake_reply

REPO = Path(__file__).resolve().parent.parent
Force = Callable[..., ForcedOutput]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
FIRST = "<think>\nI should look it up.\n</think>\n\n" + CALL


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"Sunny in {city}"


def scripted(force: Force, *replies: str) -> Callable[[], Mapping[str, Any]]:
    pending = list(replies)
    return lambda: {"logits_processors": [force(pending.pop(0))], "max_tokens": 200}


def chat_with_a_tool(engine: mlxnb.Engine, force: Force, **options: Any) -> Conversation:
    conversation = Conversation(
        engine,
        tools=[get_weather],
        enable_thinking=True,
        generation_options=scripted(force, FIRST, "It is sunny."),
        **options,
    )
    turn = asyncio.run(conversation.ask("Weather in Paris?"))
    assert turn.tool_results[0].content == "Sunny in Paris" and turn.reasoning
    return conversation


def test_a_resumed_conversation_has_the_history_tools_and_thinking(
    engine: mlxnb.Engine, force: Force
) -> None:
    first = chat_with_a_tool(engine, force)
    back = Conversation(
        engine, tools=[get_weather], resume=first.conversation_id, generation_options=None
    )
    assert back.conversation_id == first.conversation_id
    assert back.messages == first.messages
    [turn] = back.turns
    assert turn.user == "Weather in Paris?" and turn.content == "It is sunny."
    assert "look it up" in turn.reasoning
    assert [c.name for c in turn.tool_calls] == ["get_weather"]
    assert turn.tool_calls[0].arguments == {"city": "Paris"}
    assert [r.content for r in turn.tool_results] == ["Sunny in Paris"]
    assert turn.finish_reason == "stop" and turn.seconds == first.turns[0].seconds
    listed = engine.audit.conversations() if engine.audit else None
    assert listed is not None and listed["id"].iloc[0] == first.conversation_id
    assert listed["title"].iloc[0] == "Weather in Paris?" and listed["turns"].iloc[0] == 1
    assert listed["model"].iloc[0] == engine.model_id


def test_a_missing_id_is_a_clear_error(engine: mlxnb.Engine) -> None:
    with pytest.raises(ConversationNotFoundError, match="no saved conversation 'nope'"):
        Conversation(engine, resume="nope")


def test_nothing_is_saved_when_saving_or_content_logging_is_off(
    engine: mlxnb.Engine, force: Force, tmp_path: Path
) -> None:
    off = chat_with_a_tool(engine, force, save=False)
    private = AuditLog(tmp_path / "private.sqlite3", log_content=False)
    hidden = chat_with_a_tool(engine, force, save=private)
    for conversation in (off, hidden):
        with pytest.raises(ConversationNotFoundError):
            Conversation(engine, resume=conversation.conversation_id)
    assert private.conversations().empty
    private.close()


def test_clear_starts_a_new_conversation_and_keeps_the_old_one(
    engine: mlxnb.Engine, force: Force
) -> None:
    conversation = chat_with_a_tool(engine, force)
    old_id = conversation.conversation_id
    conversation.clear()
    assert conversation.conversation_id != old_id
    assert len(Conversation(engine, resume=old_id).turns) == 1


CHILD = """
import asyncio, json, sys
import mlxnb
from mlxnb.testing import forced_output

def get_weather(city: str) -> str:
    \"\"\"The weather in a city.

    Args:
        city: The city.
    \"\"\"
    return "Rainy in " + city

with mlxnb.load(sys.argv[1]) as engine:
    force = lambda: {"logits_processors": [forced_output(engine.tokenizer, "Still sunny.")]}
    chat = mlxnb.Conversation(
        engine, tools=[get_weather], resume=sys.argv[2], generation_options=force
    )
    turn = asyncio.run(chat.ask("And tomorrow?"))
    row = engine.audit.tail(1)
    print(json.dumps({
        "content": turn.content,
        "turns": len(chat.turns),
        "request": json.loads(row["request"].iloc[0]),
        "conversation_id": row["conversation_id"].iloc[0],
    }))
"""


def test_a_conversation_resumes_in_a_new_process(
    engine: mlxnb.Engine, force: Force, tiny_model_dir: Path
) -> None:
    first = chat_with_a_tool(engine, force)
    assert engine.audit is not None and engine.audit.path is not None
    env = {
        **os.environ,
        "MLXNB_AUDIT": str(engine.audit.path),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tiny_model_dir), first.conversation_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["content"] == "Still sunny." and result["turns"] == 2
    assert result["conversation_id"] == first.conversation_id
    sent = result["request"]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "look it up" in sent[1].get("reasoning_content", sent[1].get("reasoning", ""))
    assert sent[2]["content"] == "Sunny in Paris"  # the old result, not the child's tool
    assert sent[3]["content"] == "It is sunny." and sent[4]["content"] == "And tomorrow?"
    # the parent sees the continued conversation too
    listed = conversations(audit=engine.audit)
    assert listed.set_index("id").loc[first.conversation_id, "turns"] == 2


class VisionFake(FakeEngine):
    kind = "vision"


def test_images_are_saved_as_data_urls_and_sent_again_on_resume(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "vision.sqlite3")
    picture = PILImage.new("RGB", (8, 8), (200, 30, 30))
    first = Conversation(VisionFake([fake_reply("Red.")]), save=log)
    asyncio.run(first.ask("What colour?", images=picture))
    engine = VisionFake([fake_reply("Still red.")])
    back = Conversation(engine, save=log, resume=first.conversation_id)
    image = back.messages[0]["content"][0]["image"]
    assert isinstance(image, str) and image.startswith("data:image/png;base64,")
    asyncio.run(back.ask("Sure?"))
    [request] = engine.calls
    assert request.messages[0]["content"][0]["image"] == image
    log.close()
