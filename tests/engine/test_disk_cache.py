"""System-prompt caches on disk: the next engine (the next kernel) skips a long system prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlxnb
from mlxnb._engine.disk_cache import DiskPromptCache
from mlxnb.testing import tiny_model

SYSTEM = "You are the keeper of a lighthouse on a rocky northern coast. " * 30


def ask(system: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def first_turn(path: Path, folder: Path | None, messages: list[dict[str, str]]) -> mlxnb.Usage:
    """One engine's first turn (a new engine, as a new kernel would make), then closed."""
    options = {"prompt_cache_dir": folder} if folder is not None else {}
    with mlxnb.Engine(path, audit=False, max_tokens=2, **options) as engine:
        return engine.generate(messages).usage


def saved(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.safetensors"))


def test_the_next_engine_starts_with_the_system_prompt_cached(tmp_path: Path) -> None:
    model = tiny_model()
    cold = first_turn(model, tmp_path, ask(SYSTEM, "When is the lamp lit?"))
    assert cold.cached_tokens == 0 and len(saved(tmp_path)) == 1
    warm = first_turn(model, tmp_path, ask(SYSTEM, "Who trims the wick?"))
    assert warm.cached_tokens >= 256  # the whole system prompt, from the file
    without = first_turn(model, None, ask(SYSTEM, "Who trims the wick?"))
    assert without.cached_tokens == 0  # control: no folder, no reuse


def test_another_model_never_loads_these_caches(tmp_path: Path) -> None:
    first_turn(tiny_model(), tmp_path, ask(SYSTEM, "Hello?"))
    other = first_turn(tiny_model(seed=1), tmp_path, ask(SYSTEM, "Hello?"))
    assert other.cached_tokens == 0
    assert len({path.parent for path in saved(tmp_path)}) == 2  # a subfolder per model


def test_short_system_prompts_are_not_saved(tmp_path: Path) -> None:
    first_turn(tiny_model(), tmp_path, ask("Be brief.", "Hello?"))
    assert saved(tmp_path) == []


def test_the_folder_keeps_under_its_cap_dropping_the_least_recently_used(tmp_path: Path) -> None:
    model = tiny_model()
    first_turn(model, tmp_path, ask(SYSTEM, "One?"))
    size = saved(tmp_path)[0].stat().st_size
    other = "You guard the harbour light in a southern port. " * 40
    with mlxnb.Engine(
        model, audit=False, max_tokens=2, prompt_cache_dir=tmp_path, prompt_cache_dir_bytes=size
    ) as engine:
        engine.generate(ask(other, "Two?"))
    files = saved(tmp_path)
    assert len(files) == 1 and files[0].stat().st_size != size  # the newer one stayed


def test_a_damaged_file_is_skipped_and_removed(tmp_path: Path) -> None:
    model = tiny_model()
    first_turn(model, tmp_path, ask(SYSTEM, "One?"))
    (damaged,) = saved(tmp_path)
    damaged.write_bytes(b"not a cache")
    usage = first_turn(model, tmp_path, ask(SYSTEM, "Two?"))
    assert usage.cached_tokens == 0
    assert saved(tmp_path) == [damaged] and damaged.stat().st_size > 100  # saved again


def test_saving_needs_a_bound_model(tmp_path: Path) -> None:
    disk = DiskPromptCache(tmp_path)
    disk.queue(list(range(300)), object())
    assert not disk.pending
    with pytest.raises(AssertionError, match="bind"):
        _ = disk.folder
