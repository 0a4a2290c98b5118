"""The offline fixtures load and generate through the real mlx-lm paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx_lm
import pytest
from mlx_lm.generate import BatchGenerator

from mlxnb.testing import forced_output, tiny_model

SCRIPT = (
    "<think>\nLet me think: 2 + 2 = 4.\n</think>\n\nThe answer is **4** — café ☕.\n"
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>'
)


@pytest.fixture(scope="module", params=["qwen3", "bpe"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = tiny_model(tmp_path_factory.mktemp("m") / "model", tokenizer=request.param)
    model, tokenizer = mlx_lm.load(str(path))
    return path, model, tokenizer


def prompt(tokenizer: object, **kwargs: object) -> list[int]:
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)  # type: ignore[attr-defined]


def test_loads_offline_with_thinking_and_tools(loaded: tuple) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    path, _, tokenizer = loaded
    assert tokenizer.has_thinking and tokenizer.think_start == "<think>"
    assert tokenizer.has_tool_calling and tokenizer.tool_call_start == "<tool_call>"
    assert tokenizer.tool_parser is not None
    config = json.loads((path / "config.json").read_text())
    assert config["vocab_size"] >= len(tokenizer)


def test_chat_template_renders_tools_and_thinking_switch(loaded: tuple) -> None:
    _, _, tokenizer = loaded
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    rendered = tokenizer.decode(prompt(tokenizer, tools=[tool]))
    assert '"name": "add"' in rendered and "<tool_call>" in rendered
    off = tokenizer.decode(prompt(tokenizer, enable_thinking=False))
    assert off.rstrip().endswith("</think>")


def test_generates_through_stream_generate(loaded: tuple) -> None:
    _, model, tokenizer = loaded
    responses = list(mlx_lm.stream_generate(model, tokenizer, prompt(tokenizer), max_tokens=8))
    assert responses[-1].generation_tokens == 8
    assert responses[-1].finish_reason == "length"


def test_forced_output_round_trips_through_stream_generate(loaded: tuple) -> None:
    _, model, tokenizer = loaded
    proc = forced_output(tokenizer, SCRIPT)
    responses = list(
        mlx_lm.stream_generate(
            model, tokenizer, prompt(tokenizer), max_tokens=500, logits_processors=[proc]
        )
    )
    assert "".join(r.text for r in responses) == SCRIPT
    assert responses[-1].finish_reason == "stop"


def test_forced_output_round_trips_through_batch_generator(loaded: tuple) -> None:
    _, model, tokenizer = loaded
    texts = [SCRIPT, "Second, shorter reply."]
    generator = BatchGenerator(model, stop_tokens=[[t] for t in tokenizer.eos_token_ids])
    uids = generator.insert(
        [prompt(tokenizer)] * 2,
        max_tokens=[500, 500],
        logits_processors=[[forced_output(tokenizer, t)] for t in texts],
    )
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    finished: set[int] = set()
    while len(finished) < len(uids):
        for response in generator.next_generated():
            if response.finish_reason == "stop":
                finished.add(response.uid)
            else:
                tokens[response.uid].append(response.token)
    assert [tokenizer.decode(tokens[uid]) for uid in uids] == texts


def test_forced_output_then_free_keeps_generating(loaded: tuple) -> None:
    _, model, tokenizer = loaded
    proc = forced_output(tokenizer, "Start", then="free")
    responses = list(
        mlx_lm.stream_generate(
            model, tokenizer, prompt(tokenizer), max_tokens=20, logits_processors=[proc]
        )
    )
    text = "".join(r.text for r in responses)
    assert text.startswith("Start") and len(text) > len("Start")


def test_cached_model_is_reused(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "m")
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert tiny_model(tmp_path / "m") == path
    assert weights.stat().st_mtime_ns == stamp


def test_default_path_is_keyed_by_shape() -> None:
    assert tiny_model() == tiny_model()
    assert tiny_model(hidden_size=32) != tiny_model()


def test_llama_architecture(tmp_path: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model(tmp_path / "llama", arch="llama")))
    assert type(model).__module__.endswith("llama")
    proc = forced_output(tokenizer, "llama says hi")
    text = "".join(
        r.text
        for r in mlx_lm.stream_generate(
            model, tokenizer, prompt(tokenizer), max_tokens=50, logits_processors=[proc]
        )
    )
    assert text == "llama says hi"


def test_without_npm_falls_back_to_local_bpe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLXNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    path = tiny_model(tmp_path / "m")
    _, tokenizer = mlx_lm.load(str(path))
    assert len(tokenizer) < 5000
    assert tokenizer.has_thinking and tokenizer.has_tool_calling


def test_unknown_arch_and_tokenizer_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch"):
        tiny_model(tmp_path / "a", arch="nope")
    with pytest.raises(ValueError, match="tokenizer"):
        tiny_model(tmp_path / "b", tokenizer="nope")
