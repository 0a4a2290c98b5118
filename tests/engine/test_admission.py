"""Admission by projected KV memory: wait beside running requests, refuse what never fits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxnb._audit import AuditLog
from mlxnb._engine.engine import Engine
from mlxnb._server.background import serve
from mlxnb.errors import EngineBusyError, KvBudgetError
from mlxnb.events import Done

PER_TOKEN = 512  # the tiny model: 2 layers x 2 KV heads x 16 dims x (K, V) x 4 bytes
BUDGET = 200_000  # 390 tokens alone; two requests of up to 195 tokens each side by side


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def tight(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Engine]:
    audit = AuditLog(tmp_path / "audit.sqlite3")
    with Engine(tiny_model_dir, audit=audit, kv_budget_bytes=BUDGET) as engine:
        yield engine
    audit.close()


async def run(engine: Engine, name: str, log: list[tuple[str, Any]], **options: Any) -> None:
    async for event in engine.stream(ask(f"request {name}"), enable_thinking=False, **options):
        log.append((name, event))


def first_and_done(log: list[tuple[str, Any]], name: str) -> tuple[int, int]:
    places = [i for i, (who, _) in enumerate(log) if who == name]
    done = [i for i, (who, event) in enumerate(log) if who == name and isinstance(event, Done)]
    return places[0], done[0]


def test_the_budget_and_footprint_are_reported(tight: Engine) -> None:
    stats = tight.memory()
    assert (stats.kv_budget_bytes, stats.kv_bytes_per_token) == (BUDGET, PER_TOKEN)


async def test_a_request_that_does_not_fit_waits_while_one_that_fits_goes_ahead(
    tight: Engine,
) -> None:
    log: list[tuple[str, Any]] = []
    # long: ~15 + 170 tokens (fits alone); big: ~15 + 300 (alone only); small: ~15 + 20.
    long = asyncio.create_task(run(tight, "long", log, max_tokens=170))
    while not log:
        await asyncio.sleep(0.01)
    big = asyncio.create_task(run(tight, "big", log, max_tokens=300))
    await asyncio.sleep(0)
    small = asyncio.create_task(run(tight, "small", log, max_tokens=20))
    await asyncio.gather(long, big, small)
    _, long_done = first_and_done(log, "long")
    big_first, _ = first_and_done(log, "big")
    _, small_done = first_and_done(log, "small")
    assert big_first > long_done  # it waited for the long one to end
    assert small_done < long_done  # the small one did not wait behind the big one
    rows = tight.audit.df.set_index("finish_reason")  # type: ignore[union-attr]
    assert list(tight.audit.df["status"]) == ["ok"] * 3  # type: ignore[union-attr]
    assert sorted(rows.index) == ["length"] * 3


def test_a_request_that_never_fits_is_refused_with_no_forward_pass(
    tight: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tight._worker.backend.model  # type: ignore[union-attr]
    original = type(model).__call__
    calls = [0]

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", counting)
    with pytest.raises(KvBudgetError) as refused:
        tight.generate(ask("too much"), max_tokens=1000)
    assert calls[0] == 0
    message = str(refused.value)
    assert "max_tokens is 1000" in message and f"KV budget is {BUDGET} bytes" in message
    row = tight.audit.df.iloc[-1]  # type: ignore[union-attr]
    assert (row["status"], row["error_type"]) == ("error", "KvBudgetError")
    assert tight.generate(ask("fits"), max_tokens=3).usage.completion_tokens == 3


async def test_a_waiting_request_cancelled_ends_at_once_and_is_audited(tight: Engine) -> None:
    log: list[tuple[str, Any]] = []
    long = asyncio.create_task(run(tight, "long", log, max_tokens=300))
    while not log:
        await asyncio.sleep(0.01)
    waiting = tight.stream(ask("waiting"), max_tokens=300)
    pending = asyncio.ensure_future(waiting.__anext__())
    while tight.memory().waiting == 0:
        await asyncio.sleep(0.01)
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await waiting.aclose()
    await long
    frame = tight.audit.df  # type: ignore[union-attr]
    assert list(frame["status"]) == ["cancelled", "ok"]  # audited before the long one ended
    assert frame["completion_tokens"].iloc[0] == 0


async def test_a_request_that_waits_too_long_is_busy(tiny_model_dir: Path) -> None:
    with Engine(tiny_model_dir, audit=False, kv_budget_bytes=BUDGET, admission_timeout=0.05) as e:
        log: list[tuple[str, Any]] = []
        long = asyncio.create_task(run(e, "long", log, max_tokens=300))
        while not log:
            await asyncio.sleep(0.01)
        with pytest.raises(EngineBusyError, match="waited"):
            await e.agenerate(ask("late"), max_tokens=300)
        long.cancel()
        await asyncio.gather(long, return_exceptions=True)


def test_over_http_waiting_too_long_is_a_429_with_retry_after(tiny_model_dir: Path) -> None:
    with (
        Engine(tiny_model_dir, audit=False, kv_budget_bytes=BUDGET, admission_timeout=0.05) as e,
        serve(e) as server,
    ):
        running = e.stream_sync(ask("long"), max_tokens=300)
        next(running)
        body = {"model": e.model_id, "messages": ask("late"), "max_tokens": 300}
        response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
        running.close()
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "engine_busy"
        assert response.headers["retry-after"] == "1"
        body["max_tokens"] = 1000
        response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "kv_budget_exceeded"
