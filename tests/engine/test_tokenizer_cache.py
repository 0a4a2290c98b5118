"""A model directory's tokenizer is loaded once per process, until its files change."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import mlxnb
from mlxnb._engine.tokenizer_cache import load_local_model

HELLO = [{"role": "user", "content": "Tell me about lighthouses."}]


def test_a_second_load_reuses_the_tokenizer_not_the_model(tiny_model_dir: Path) -> None:
    first_model, first = load_local_model(tiny_model_dir)
    second_model, second = load_local_model(tiny_model_dir)
    assert second is first
    assert second_model is not first_model


def test_changed_tokenizer_files_load_afresh(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    _, before = load_local_model(copy)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    config_path.write_text(json.dumps(config))
    _, after = load_local_model(copy)
    assert after is not before
    rendered = after.apply_chat_template(HELLO, tokenize=False)
    assert rendered == "<<Tell me about lighthouses.>>"
    assert before.apply_chat_template(HELLO, tokenize=False) != rendered


async def test_engines_sharing_a_tokenizer_stream_at_once_as_each_would_alone(
    tiny_model_dir: Path,
) -> None:
    with (
        mlxnb.Engine(tiny_model_dir, audit=False, name="one") as one,
        mlxnb.Engine(tiny_model_dir, audit=False, name="two") as two,
    ):
        assert one.tokenizer is two.tokenizer
        alone = await one.agenerate(HELLO, max_tokens=24)
        together = await asyncio.gather(
            one.agenerate(HELLO, max_tokens=24), two.agenerate(HELLO, max_tokens=24)
        )
    assert [turn.content for turn in together] == [alone.content, alone.content]
    assert len(alone.content) > 10
