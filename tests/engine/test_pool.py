"""The model pool with real engines on tiny models: one load per model, eviction, progress."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._engine import engine as engine_module
from mlxnb._engine.catalog import estimate_bytes
from mlxnb._engine.download import LoadProgress
from mlxnb._engine.pool import ModelPool
from mlxnb._engine.profiles import Profile
from mlxnb.errors import (
    EngineBusyError,
    InvalidRequestError,
    MemoryBudgetError,
    ModelNotFoundError,
    UnknownOptionError,
)
from mlxnb.testing import tiny_model

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def models() -> list[Path]:
    """Three distinct tiny models (different random weights, different names)."""
    return [tiny_model(seed=seed) for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def one_model_bytes(models: list[Path]) -> int:
    return max(estimate_bytes(path) for path in models)


@pytest.fixture
def make_pool() -> Iterator[Callable[..., ModelPool]]:
    pools: list[ModelPool] = []

    def make(**options: Any) -> ModelPool:
        options.setdefault("engine_options", {"audit": False, "max_tokens": 4})
        pool = ModelPool(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real text-model load (``mlx_lm.load`` through the backend), by path."""
    seen: list[str] = []
    real = engine_module.load_text_model

    def counting(ref: Any, adapter_path: Any = None) -> Any:
        seen.append(str(ref))
        return real(ref, adapter_path)

    monkeypatch.setattr(engine_module, "load_text_model", counting)
    return seen


def resident(pool: ModelPool) -> list[str]:
    frame = pool.models()
    return sorted(frame.loc[frame["state"] == "ready", "id"])


async def test_eight_concurrent_first_requests_load_the_model_once(
    make_pool: Callable[..., ModelPool], models: list[Path], loads: list[str]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    handle = pool.handle(name)
    turns = await asyncio.gather(*(handle.agenerate(HELLO) for _ in range(8)))
    assert len(loads) == 1
    assert all(turn.finish_reason in ("length", "stop") for turn in turns)
    assert pool.state(name)["requests_served"] == 8


def test_blocking_first_requests_from_threads_load_once(
    make_pool: Callable[..., ModelPool], models: list[Path], loads: list[str]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    engines: list[Any] = []
    threads = [threading.Thread(target=lambda: engines.append(pool.engine(name))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len({id(engine) for engine in engines}) == 1


def test_least_recently_used_idle_model_is_evicted_first(
    make_pool: Callable[..., ModelPool], models: list[Path], one_model_bytes: int
) -> None:
    pool = make_pool(budget_bytes=int(one_model_bytes * 2.5))  # room for two
    a, b, c = (pool.register(path) for path in models)
    pool.handle(a).generate(HELLO)
    pool.handle(b).generate(HELLO)
    pool.handle(a).generate(HELLO)  # a is now the more recently used
    pool.handle(c).generate(HELLO)
    assert resident(pool) == sorted([a, c])
    assert pool.state(b)["state"] == "unloaded"
    pool.handle(b).generate(HELLO)  # comes back, evicting a (now the least recent)
    assert resident(pool) == sorted([b, c])


def test_count_limit_holds_one_model(
    make_pool: Callable[..., ModelPool], models: list[Path], loads: list[str]
) -> None:
    pool = make_pool(max_models=1)
    a, b = (pool.register(path) for path in models[:2])
    for name in (a, b, a):
        pool.handle(name).generate(HELLO)
        assert resident(pool) == [name]
    assert len(loads) == 3
    assert pool.unloads == 2


async def test_a_model_serving_a_request_is_never_evicted(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool(max_models=1)
    a, b = (pool.register(path) for path in models[:2])
    stream = pool.handle(a).stream(HELLO, max_tokens=4000)
    await anext(stream)  # a is generating
    pool.load_timeout = 1.0  # how long b waits for room
    with pytest.raises(EngineBusyError):
        await pool.handle(b).agenerate(HELLO)  # no idle model to make room with
    assert resident(pool) == [a]
    later = [await anext(stream) for _ in range(5)]
    assert all(event.type != "done" for event in later)  # a's stream goes on, never cut
    await stream.aclose()
    pool.load_timeout = 600.0
    await pool.handle(b).agenerate(HELLO)  # a is idle now: it makes room
    assert resident(pool) == [b]


async def test_a_patient_caller_is_not_failed_by_a_load_that_gave_up_on_room(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool(max_models=1)
    a, b = (pool.register(path) for path in models[:2])
    stream = pool.handle(a).stream(HELLO, max_tokens=4000)
    await anext(stream)  # a is generating: no room for b until it ends
    pool.load_timeout = 0.5
    hasty = asyncio.create_task(pool.handle(b).agenerate(HELLO))
    await asyncio.sleep(0.1)  # b's load has started, and waits 0.5 s for room
    pool.load_timeout = 600.0
    patient = asyncio.create_task(pool.handle(b).agenerate(HELLO))  # joins that load
    with pytest.raises(EngineBusyError):
        await hasty
    await asyncio.sleep(0.6)  # the first load gave up on room
    assert not patient.done()  # ... but the patient caller loads again and waits on
    await stream.aclose()  # a is idle: it makes room
    turn = await asyncio.wait_for(patient, 120)
    assert turn.finish_reason in ("stop", "length") and resident(pool) == [b]


def test_pinned_models_are_never_evicted(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool(max_models=1)
    a = pool.register(models[0], pin=True)
    b = pool.register(models[1])
    pool.engine(a)
    with pytest.raises(MemoryBudgetError, match="pinned"):
        pool.engine(b)
    pool.pin(a, False)
    pool.engine(b)
    assert resident(pool) == [b]


def test_a_model_over_the_whole_budget_is_refused_before_loading(
    make_pool: Callable[..., ModelPool], models: list[Path], loads: list[str]
) -> None:
    pool = make_pool(budget_bytes=1024)
    name = pool.register(models[0])
    with pytest.raises(MemoryBudgetError, match="budget"):
        pool.engine(name)
    assert loads == []
    assert pool.state(name)["state"] == "error"


def test_progress_events_arrive_in_order_and_end_in_ready(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    seen: list[LoadProgress] = []
    unsubscribe = pool.watch(name, seen.append)
    pool.engine(name)
    unsubscribe()
    stages = [event.stage for event in seen]
    assert stages == ["resolving", "loading", "ready"]
    assert seen[-1].total_bytes == estimate_bytes(models[0])
    late: list[LoadProgress] = []
    pool.watch(name, late.append)
    assert [event.stage for event in late] == ["ready"]  # the latest state, at once


def test_a_failed_load_ends_in_error_and_raises(
    make_pool: Callable[..., ModelPool], tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    (broken / "model.safetensors").write_bytes(b"not weights")
    pool = make_pool()
    name = pool.register(broken)
    seen: list[LoadProgress] = []
    pool.watch(name, seen.append)
    with pytest.raises(mlxnb.ModelLoadError):
        pool.engine(name)
    assert [event.stage for event in seen][-1] == "error"
    assert pool.state(name)["error"]


def test_a_profiles_defaults_reach_the_request(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    log = mlxnb.AuditLog(":memory:")
    pool = make_pool(engine_options={"audit": log})
    name = pool.register(models[0])
    pool.add_profile(
        Profile("terse", name, system="Answer in one word.", sampling={"max_tokens": 2})
    )
    pool.handle("terse").generate(HELLO)
    pool.handle("terse").generate(HELLO, max_tokens=3)  # the request's own setting wins
    system = [{"role": "system", "content": "Answer in one word."}, *HELLO]
    pool.handle(name).generate(system, max_tokens=1)
    pool.handle(name).generate(HELLO, max_tokens=1)
    rows = log.to_pandas().sort_values("started_at")
    assert list(rows["completion_tokens"]) == [2, 3, 1, 1]
    assert list(rows["model"]) == [name] * 4
    with_profile, _, explicit, bare = rows["prompt_tokens"]
    assert with_profile == explicit > bare


def test_profiles_are_checked_and_names_do_not_collide(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    with pytest.raises(UnknownOptionError, match="temprature"):
        Profile("typo", name, sampling={"temprature": 0.1})
    with pytest.raises(InvalidRequestError, match="model's name"):
        pool.add_profile(Profile(name, name))
    profile = pool.add_profile(Profile("by-path", str(models[1])))
    assert profile.model in pool.names()  # its model was registered under its name


def test_unknown_names_list_what_is_available(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    pool.add_profile(Profile("coder", name))
    with pytest.raises(ModelNotFoundError, match=f"available: {name}, coder"):
        pool.handle("gpt-4")


def test_models_frame_reports_state_memory_and_use(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    a, b = (pool.register(path) for path in models[:2])
    pool.add_profile(Profile("coder", a))
    pool.handle("coder").generate(HELLO)
    pool.engine(a).generate(HELLO)  # straight through the engine: counted too
    frame = pool.models().set_index("id")
    assert list(frame.index) == [a, b, "coder"]
    assert frame.loc[a, "state"] == "ready" and frame.loc[b, "state"] == "registered"
    assert frame.loc[a, "kind"] == "text"
    assert frame.loc[a, "memory_bytes"] == estimate_bytes(models[0])
    assert frame.loc[b, "memory_bytes"] == 0
    assert frame.loc[a, "requests_served"] == 2
    assert bool(frame.loc["coder", "is_profile"]) and frame.loc["coder", "model"] == a
    assert frame["last_used"].dtype.kind == "M"


def test_unload_then_the_next_request_loads_again(
    make_pool: Callable[..., ModelPool], models: list[Path], loads: list[str]
) -> None:
    pool = make_pool()
    name = pool.register(models[0])
    first = pool.engine(name)
    first.generate(HELLO)
    pool.unload(name)
    assert first.closed and pool.state(name)["state"] == "unloaded"
    pool.handle(name).generate(HELLO)
    assert len(loads) == 2
    assert pool.state(name)["requests_served"] == 2  # counted across both engines


def test_idle_models_unload_when_asked_to(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool(idle_unload=0.2)
    name = pool.register(models[0])
    pool.handle(name).generate(HELLO)
    deadline = time.monotonic() + 30
    while pool.state(name)["state"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.state(name)["state"] == "unloaded"


def test_load_gives_the_same_engine_and_a_twin_for_other_options(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    first = pool.load(models[0])
    assert pool.load(models[0]) is first
    twin = pool.load(models[0], max_batch=1)
    assert twin is not first and twin.model_id == first.model_id
    assert pool.names() == [first.model_id]  # the twin answers under the model's name
    assert pool.load(models[0], max_batch=1) is twin


def test_a_failed_load_is_not_left_registered(
    make_pool: Callable[..., ModelPool], tmp_path: Path
) -> None:
    pool = make_pool()
    with pytest.raises(ModelNotFoundError):
        pool.load(tmp_path / "missing")
    assert pool.names() == []


def test_names_never_expose_absolute_paths(
    make_pool: Callable[..., ModelPool], models: list[Path]
) -> None:
    pool = make_pool()
    engine = pool.load(models[0])
    assert engine.model_id == models[0].name
    assert all(not name.startswith("/") for name in pool.names())


def test_mlxnb_load_shares_one_engine_per_model(tiny_model_dir: Path) -> None:
    first = mlxnb.load(tiny_model_dir, name="shared-tiny", audit=False)
    try:
        assert mlxnb.load(tiny_model_dir, name="shared-tiny", audit=False) is first
        assert "shared-tiny" in list(mlxnb.models()["id"])
    finally:
        first.close()
