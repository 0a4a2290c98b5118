"""One KV budget for every engine of a process: two models never count on the same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._engine import memory, worker
from mlxnb._engine.kv_ledger import KvLedger
from mlxnb.errors import EngineBusyError
from mlxnb.testing import forced_output, tiny_model

MB = 1 << 20
DEVICE = 64 * MB  # each engine's own budget: 48 MB less its 39 MB of weights, ~9 MB
LONG = 5000  # tokens of KV a request projects: ~2.6 MB at 512 bytes a token
HI = [{"role": "user", "content": "Hi"}]


def test_the_total_is_the_device_share_less_what_every_member_holds() -> None:
    ledger = KvLedger()
    share = int(DEVICE * 3 / 4)
    ledger.join(1, weights=10 * MB, device=DEVICE)
    assert ledger.room(1) == share - 10 * MB  # alone: its own weights
    ledger.join(2, weights=20 * MB, device=DEVICE)
    assert ledger.room(1) == ledger.room(2) == share - 30 * MB
    ledger.project(2, 3 * MB, held=5 * MB)  # running requests, and a prompt cache's contents
    assert ledger.room(1) == share - 35 * MB - 3 * MB
    assert ledger.room(2) == share - 35 * MB  # its own running requests are not "others"
    ledger.join(3, weights=60 * MB, device=DEVICE)
    assert ledger.room(3) == DEVICE // 16 - 3 * MB  # the floor, less the others' requests
    ledger.leave(3)
    ledger.leave(2)
    assert ledger.room(1) == share - 10 * MB and len(ledger) == 1
    ledger.project(2, MB)  # a member that left projects nothing
    assert ledger.room(1) == share - 10 * MB


class NoEnd:
    """Bans the end of sequence: the request runs until it is cancelled."""

    def __init__(self, eos: Any) -> None:
        self.eos = sorted(eos)

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        banned = mx.zeros(logits.shape[-1], dtype=mx.bool_)
        banned[mx.array(self.eos)] = True
        return mx.where(banned, mx.array(-float("inf"), dtype=logits.dtype), logits)


@pytest.fixture
def two_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[mlxnb.Engine, mlxnb.Engine]]:
    """Two engines on a 64 MB device, counted in a ledger of their own."""
    monkeypatch.setattr(memory, "device_memory", lambda mx: DEVICE)
    monkeypatch.setattr(worker, "LEDGER", KvLedger())
    options: dict[str, Any] = {"audit": False, "prompt_cache_bytes": 0, "admission_timeout": 30}
    with (
        mlxnb.Engine(tiny_model(seed=0), **options) as first,
        mlxnb.Engine(tiny_model(seed=1), **options) as second,
    ):
        yield first, second


async def test_a_request_waits_while_another_model_holds_the_memory(
    two_models: tuple[mlxnb.Engine, mlxnb.Engine],
) -> None:
    first, second = two_models
    assert first.memory().kv_budget_bytes > 2 * LONG * 512  # each alone would take both
    spinning = first.stream(HI, logits_processors=[NoEnd(first.tokenizer.eos_token_ids)])
    await anext(aiter(spinning))  # running: its KV projects LONG tokens
    proc = forced_output(second.tokenizer, "ok")
    answer = asyncio.create_task(second.agenerate(HI, max_tokens=LONG, logits_processors=[proc]))
    await asyncio.sleep(0.5)
    assert not answer.done() and proc.step == 0  # waiting, nothing computed
    assert second.memory().waiting == 1
    await spinning.aclose()  # the first model's request ends: its memory is free
    turn = await asyncio.wait_for(answer, 30)
    assert turn.content == "ok" and proc.step > 0


async def test_waiting_on_another_model_too_long_is_busy(
    two_models: tuple[mlxnb.Engine, mlxnb.Engine],
) -> None:
    first, second = two_models
    second._worker._admission.timeout = 0.3
    spinning = first.stream(HI, logits_processors=[NoEnd(first.tokenizer.eos_token_ids)])
    await anext(aiter(spinning))
    try:
        with pytest.raises(EngineBusyError, match="other models"):
            await second.agenerate(HI, max_tokens=LONG)
        small = await second.agenerate(HI, max_tokens=8)  # what fits beside it still runs
        assert small.finish_reason in ("stop", "length")
    finally:
        await spinning.aclose()


async def test_a_closed_model_leaves_its_memory_to_the_others(
    two_models: tuple[mlxnb.Engine, mlxnb.Engine],
) -> None:
    first, second = two_models
    spinning = first.stream(HI, logits_processors=[NoEnd(first.tokenizer.eos_token_ids)])
    await anext(aiter(spinning))
    proc = forced_output(second.tokenizer, "ok")
    answer = asyncio.create_task(second.agenerate(HI, max_tokens=LONG, logits_processors=[proc]))
    await asyncio.sleep(0.3)
    assert not answer.done()
    await asyncio.to_thread(first.close)  # its request ends and its weights no longer count
    assert (await asyncio.wait_for(answer, 30)).content == "ok"


def test_engines_without_a_budget_are_not_counted(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = KvLedger()
    monkeypatch.setattr(worker, "LEDGER", ledger)
    with mlxnb.Engine(tiny_model_dir, audit=False, kv_budget_bytes=None) as engine:
        engine.generate(HI, max_tokens=2)
        assert len(ledger) == 0
    with mlxnb.Engine(tiny_model_dir, audit=False) as engine:
        assert len(ledger) == 1
    assert len(ledger) == 0  # closed: it left
