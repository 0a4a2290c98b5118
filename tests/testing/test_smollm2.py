"""The real SmolLM2-135M-Instruct, converted offline from the GGUF in a PyPI wheel."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mlxnb._engine import fallback_model as _smollm2
from mlxnb._engine.fallback_model import smollm2_gguf, smollm2_model
from mlxnb._engine.gguf import unpermute_rows
from mlxnb.errors import ModelNotFoundError

FRANCE = "What is the capital of France?"


def ask(model: Any, tokenizer: Any, question: str, max_tokens: int = 40) -> tuple[str, Any]:
    import mlx_lm

    messages = [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text, last = "", None
    for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        text, last = text + response.text, response
    return text, last


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh mlxnb cache holding only the (machine-wide cached) GGUF, so conversion runs."""
    gguf = smollm2_gguf()
    cache = tmp_path_factory.mktemp("mlxnb-cache")
    (cache / "downloads").mkdir()
    (cache / "downloads" / gguf.name).symlink_to(gguf)
    return cache


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLXNB_CACHE", str(smollm2_cache))
        return smollm2_model()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any]:
    import mlx_lm

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model, tokenizer = mlx_lm.load(str(smollm2_dir))
    return model, tokenizer


def llama_cpp_permute(weight: Any, n_heads: int) -> Any:
    """What llama.cpp's converter does to q/k rows (HF layout -> GGUF layout)."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def test_unpermute_rows_inverts_llama_cpp_permutation() -> None:
    import mlx.core as mx

    hf = mx.arange(3 * 8 * 5).reshape(3 * 8, 5)
    gguf = llama_cpp_permute(hf, 3)
    assert not mx.array_equal(gguf, hf)
    assert mx.array_equal(unpermute_rows(gguf, 3), hf)
    # Each head's rows stay within the head: [0, 4, 1, 5, 2, 6, 3, 7] is head 0 in GGUF order.
    assert gguf[:8, 0].tolist() == [0, 20, 5, 25, 10, 30, 15, 35]


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="int3"):
        smollm2_model(dtype="int3")


def test_failed_download_raises_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(command: list[str], **kwargs: Any) -> None:
        assert "--no-deps" in command and "download" in command
        raise subprocess.CalledProcessError(1, command, stderr="ERROR: no network\n")

    monkeypatch.setenv("MLXNB_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(ModelNotFoundError, match="no network"):
        smollm2_model(tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_default_directory_holds_a_complete_fp32_model(
    smollm2_dir: Path, smollm2_cache: Path
) -> None:
    assert smollm2_dir == smollm2_cache / "models" / "smollm2-135m-instruct-float32"
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["rms_norm_eps"] == 1e-5
    assert "quantization" not in config
    assert not list(smollm2_dir.parent.glob(".smollm2-*")), "staging directory left behind"


@pytest.mark.slow
def test_loads_offline_through_mlx_lm(smollm2: tuple[Any, Any]) -> None:
    import mlx.core as mx

    model, tokenizer = smollm2
    assert type(model).__module__ == "mlx_lm.models.llama"
    assert model.model.embed_tokens.weight.dtype == mx.float32
    assert model.model.embed_tokens.weight.shape == (49152, 576)
    assert len(model.layers) == 30
    assert type(tokenizer.detokenizer).__name__ == "BPEStreamingDetokenizer"


@pytest.mark.slow
def test_chat_ends_on_im_end(smollm2: tuple[Any, Any]) -> None:
    _, tokenizer = smollm2
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_ids == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_generates_through_stream_generate(smollm2: tuple[Any, Any]) -> None:
    text, last = ask(*smollm2, "Name three primary colors.", max_tokens=12)
    assert text.strip()
    assert last.generation_tokens > 0
    assert last.prompt_tokens > 10


@pytest.mark.slow
def test_answers_the_capital_of_france(smollm2: tuple[Any, Any]) -> None:
    text, last = ask(*smollm2, FRANCE)
    assert "Paris" in text
    assert last.finish_reason == "stop"


@pytest.mark.slow
def test_second_call_returns_cached_directory(
    smollm2_dir: Path, smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished model was converted again")

    monkeypatch.setenv("MLXNB_CACHE", str(smollm2_cache))
    monkeypatch.setattr(_smollm2, "convert_gguf", must_not_run)
    monkeypatch.setattr(_smollm2, "smollm2_gguf", must_not_run)
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert smollm2_model() == smollm2_dir
    assert smollm2_model(smollm2_dir) == smollm2_dir
    assert time.perf_counter() - start < 0.5
    assert weights.stat().st_mtime_ns == before


ROUND_TRIP = [
    "What is 12345 + 678?",
    "Héllo wörld — naïve café ☕ 日本語 😀",
    "  leading spaces,\ttabs\nand newlines  ",
    "<|im_start|>user\nIn 2024?<|im_end|>\n",
]


@pytest.mark.slow
@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tokenizer_round_trips(smollm2: tuple[Any, Any], text: str) -> None:
    _, tokenizer = smollm2
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text


@pytest.mark.slow
def test_digits_are_split_individually(smollm2: tuple[Any, Any], smollm2_dir: Path) -> None:
    _, tokenizer = smollm2
    ids = tokenizer.encode("In 2024")
    assert [tokenizer.decode([i]) for i in ids] == ["In", " ", "2", "0", "2", "4"]
    # SmolLM2's vocabulary has no multi-digit tokens, so behaviour alone cannot show the split
    # that llama.cpp's "smollm" pre-tokenizer names; check the pipeline itself.
    pre = json.loads((smollm2_dir / "tokenizer.json").read_text())["pre_tokenizer"]
    assert [step["type"] for step in pre["pretokenizers"]] == ["Digits", "ByteLevel"]
    assert pre["pretokenizers"][0]["individual_digits"] is True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("token", "token_id"), [("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)]
)
def test_chat_special_tokens_are_single_ids(
    smollm2: tuple[Any, Any], token: str, token_id: int
) -> None:
    _, tokenizer = smollm2
    assert tokenizer.encode(token) == [token_id]
    assert tokenizer.encode(f"a{token}b")[1] == token_id
    assert tokenizer.decode([token_id], skip_special_tokens=True) == ""


@pytest.mark.slow
def test_quantized_keeps_gguf_bits_and_answers(
    smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx_lm

    monkeypatch.setenv("MLXNB_CACHE", str(smollm2_cache))
    directory = smollm2_model(dtype="quantized")
    assert directory.name == "smollm2-135m-instruct-quantized"
    quantization = json.loads((directory / "config.json").read_text())["quantization"]
    assert (quantization["group_size"], quantization["bits"]) == (32, 4)
    assert quantization["model.embed_tokens"]["bits"] == 8
    model, tokenizer = mlx_lm.load(str(directory))
    assert model.layers[0].self_attn.q_proj.bits == 4
    text, _ = ask(model, tokenizer, FRANCE)
    assert "Paris" in text


@pytest.mark.slow
def test_incomplete_directory_is_rebuilt(smollm2_cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "half"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLXNB_CACHE", str(smollm2_cache))
        assert smollm2_model(target, dtype="quantized") == target
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
    assert (target / "model.safetensors").stat().st_size > 90_000_000


def test_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        smollm2_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
