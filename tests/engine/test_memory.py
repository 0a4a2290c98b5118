"""Memory guard rails: engine.memory(), MLX's limits set on the worker, the byte-capped cache."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from mlxnb._engine import MemoryStats
from mlxnb._engine.engine import Engine
from mlxnb.errors import EngineClosedError

SYSTEM = {"role": "system", "content": "You answer questions about rivers. " * 12}


def safetensors_bytes(directory: Path) -> int:
    """The tensor bytes of a model's safetensors files, read from their headers (no MLX)."""
    total = 0
    for path in directory.glob("*.safetensors"):
        with path.open("rb") as file:
            (size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(size))
        total += sum(
            end - begin
            for name, entry in header.items()
            if name != "__metadata__"
            for begin, end in [entry["data_offsets"]]
        )
    return total


def test_memory_reports_the_weights_and_mlx_counters(engine: Engine, tiny_model_dir: Path) -> None:
    stats = engine.memory()
    assert isinstance(stats, MemoryStats)
    assert stats.weights_bytes == safetensors_bytes(tiny_model_dir)
    assert stats.active_bytes >= stats.weights_bytes
    assert stats.peak_bytes >= stats.active_bytes
    assert stats.kv_bytes_per_token == 2 * 2 * 16 * 2 * 4  # layers, kv heads, head dim, k+v, f32
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.active_bytes = 0  # type: ignore[misc]


def test_memory_of_a_closed_engine_raises(tiny_model_dir: Path) -> None:
    closed = Engine(tiny_model_dir, audit=False)
    closed.close()
    with pytest.raises(EngineClosedError):
        closed.memory()


def test_limits_are_set_on_the_worker(tiny_model_dir: Path) -> None:
    import mlx.core as mx

    with Engine(tiny_model_dir, audit=False) as plain:
        ask: Any = plain._worker.ask
        before = ask(mx.get_memory_limit, 10)
        cache_before = ask(lambda: mx.set_cache_limit(1 << 40), 10)
        ask(lambda: mx.set_cache_limit(cache_before), 10)
    memory_limit, cache_limit = before - 4096, 123_456_789
    try:
        with Engine(
            tiny_model_dir, audit=False, memory_limit=memory_limit, cache_limit=cache_limit
        ) as limited:
            ask = limited._worker.ask
            assert ask(mx.get_memory_limit, 10) == memory_limit
            # set_cache_limit answers the limit it replaces: the one the engine set.
            assert ask(lambda: mx.set_cache_limit(cache_limit), 10) == cache_limit
    finally:
        with Engine(tiny_model_dir, audit=False) as restore:
            restore._worker.ask(lambda: mx.set_memory_limit(before), 10)
            restore._worker.ask(lambda: mx.set_cache_limit(cache_before), 10)


def test_the_prompt_cache_stays_within_its_byte_cap_and_keeps_the_system_prompt(
    tiny_model_dir: Path,
) -> None:
    cap = 400_000  # about three conversations of this size (512 bytes a token)
    with Engine(tiny_model_dir, audit=False, prompt_cache_bytes=cap, prompt_cache_size=64) as e:
        histories = []
        for n in range(40):
            history: list[dict[str, Any]] = [
                SYSTEM,
                {"role": "user", "content": f"Tell me about river number {n}, {'in depth ' * 6}"},
            ]
            for follow_up in ("And its source?", "And its mouth?"):
                turn = e.generate(history, max_tokens=6, enable_thinking=False)
                history += [
                    {"role": "assistant", "content": turn.content},
                    {"role": "user", "content": follow_up},
                ]
                stats = e.memory()
                assert 0 < stats.prompt_cache_bytes <= cap
                assert stats.prompt_cache_limit_bytes == cap
            histories.append(history)
        assert stats.prompt_cache_system_bytes > 0

        # The first conversation's entries are long gone; its system prompt's is not.
        first = e.generate(histories[0], max_tokens=2, enable_thinking=False).usage
        system_only = len(e.tokenizer.apply_chat_template([SYSTEM], add_generation_prompt=False))
        assert system_only <= first.cached_tokens < first.prompt_tokens - 40
        fresh = [SYSTEM, {"role": "user", "content": "A question nobody asked before."}]
        assert e.generate(fresh, max_tokens=2).usage.cached_tokens >= system_only


def test_each_prefill_chunk_hands_mlx_cached_buffers_back(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx

    from mlxnb._engine.solo import SoloDecoder

    cached_after_chunk: list[int] = []
    prefill_chunk = SoloDecoder._prefill_chunk

    def recording(self: SoloDecoder) -> None:
        prefill_chunk(self)
        cached_after_chunk.append(mx.get_cache_memory())

    monkeypatch.setattr(SoloDecoder, "_prefill_chunk", recording)
    with Engine(tiny_model_dir, audit=False, prefill_step=16, prompt_cache_size=0) as engine:
        turn = engine.generate([], prompt=list(range(100, 300)), max_tokens=2)
    assert turn.usage.prompt_tokens == 200
    # Each chunk's temporaries are the next one's size or larger: kept, they pile up.
    assert len(cached_after_chunk) == 13  # 199 tokens before the last, 16 a chunk
    assert cached_after_chunk == [0] * 13
