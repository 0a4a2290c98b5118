"""The offline catalog: names, model directories and the Hugging Face cache, on real files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants

from mlxnb._engine import catalog
from mlxnb._engine.catalog import (
    LocalModel,
    estimate_bytes,
    is_model_dir,
    model_name,
    scan_directories,
    scan_hf_cache,
)
from mlxnb.testing import tiny_vision_model
from mlxnb.testing._fake_hub import cache_snapshot


def _weights_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def _link_copy(source: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a model directory whose large files are hard links (copies across devices)."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and file.name not in skip:
            try:
                os.link(file, target / file.name)
            except OSError:
                shutil.copyfile(file, target / file.name)
    return target


@pytest.fixture(scope="module")
def vision_dir() -> Path:
    return tiny_vision_model()


# -- names ---------------------------------------------------------------------------------------


def test_a_repo_id_is_its_own_name() -> None:
    assert model_name("mlx-community/Qwen3-0.6B-4bit") == "mlx-community/Qwen3-0.6B-4bit"


def test_a_directory_is_named_by_its_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert model_name(tiny_model_dir) == tiny_model_dir.name
    assert model_name(str(tiny_model_dir)) == tiny_model_dir.name
    assert model_name(tmp_path / "gone" / "my-model") == "my-model"
    assert model_name("/no/such/place/my-model/") == "my-model"


def test_a_relative_directory_is_named_without_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_name("./org/local") == "local"
    assert model_name("org/local") == "local"  # an existing folder wins over a repo id
    assert model_name(".") == tmp_path.name


def test_a_snapshot_in_the_hub_cache_is_named_by_its_repo(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--mlx-community--Qwen3-0.6B-4bit" / "snapshots" / "ab12"
    assert model_name(snapshot) == "mlx-community/Qwen3-0.6B-4bit"
    assert model_name(str(snapshot)) == "mlx-community/Qwen3-0.6B-4bit"
    assert model_name(tmp_path / "models--gpt2" / "snapshots" / "ab12") == "gpt2"


def test_no_name_is_an_absolute_path(tiny_model_dir: Path) -> None:
    for ref in (tiny_model_dir, "/", "/tmp", str(tiny_model_dir.parent)):
        assert not model_name(ref).startswith("/")


# -- directories ---------------------------------------------------------------------------------


def test_scan_lists_models_below_a_folder(
    tmp_path: Path, tiny_model_dir: Path, vision_dir: Path
) -> None:
    root = tmp_path / "models"
    _link_copy(tiny_model_dir, root / "text-model")
    _link_copy(vision_dir, root / "vision-model")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a model")
    _link_copy(tiny_model_dir, root / "no-weights", skip=("model.safetensors",))
    _link_copy(tiny_model_dir, root / "no-config", skip=("config.json",))
    _link_copy(tiny_model_dir, root / ".hidden")
    (root / "loose-file.safetensors").write_bytes(b"x")

    found = scan_directories([root, tmp_path / "missing"])

    assert found == [
        LocalModel(
            "text-model",
            root / "text-model",
            "text",
            _weights_size(tiny_model_dir),
            "directory",
        ),
        LocalModel(
            "vision-model",
            root / "vision-model",
            "vision",
            _weights_size(vision_dir),
            "directory",
        ),
    ]


def test_scan_takes_a_folder_that_is_a_model_and_lists_each_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    root = tmp_path / "models"
    model = _link_copy(tiny_model_dir, root / "mine")

    found = scan_directories([model, root, Path(str(model))])

    assert [(m.name, m.path, m.kind) for m in found] == [("mine", model, "text")]


def test_a_sharded_model_needs_every_shard(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = _link_copy(tiny_model_dir, tmp_path / "sharded")
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    assert not is_model_dir(model)
    assert scan_directories([tmp_path]) == []

    (model / "model-00002-of-00002.safetensors").write_bytes(b"12345")
    assert is_model_dir(model)
    [found] = scan_directories([tmp_path])
    assert found.size_bytes == _weights_size(tiny_model_dir) + 5


def test_estimate_bytes_counts_the_safetensors(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert estimate_bytes(tiny_model_dir) == _weights_size(tiny_model_dir)
    assert estimate_bytes(tiny_model_dir) > 0
    assert estimate_bytes(tmp_path / "missing") == 0
    assert estimate_bytes(tmp_path) == 0


# -- the Hugging Face cache ----------------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path: Path, tiny_model_dir: Path, vision_dir: Path) -> Path:
    """A hub cache: two models, a partial download, a GGUF-only repo, a dataset, a broken one."""
    cache = tmp_path / "hub"
    cache_snapshot(cache, "org/text", tiny_model_dir)
    cache_snapshot(cache, "org/vision", vision_dir)
    cache_snapshot(cache, "org/partial", tiny_model_dir, files=["config.json", "tokenizer.json"])
    gguf = tmp_path / "gguf-files"
    gguf.mkdir()
    (gguf / "model-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(64))
    (gguf / "README.md").write_text("a GGUF repo")
    cache_snapshot(cache, "org/gguf-only", gguf)
    dataset = cache / "datasets--org--text" / "snapshots" / ("d" * 40)
    dataset.mkdir(parents=True)
    shutil.copyfile(tiny_model_dir / "config.json", dataset / "config.json")
    broken = cache_snapshot(cache, "org/broken", tiny_model_dir)
    for blob in (broken.parent.parent / "blobs").iterdir():
        if (broken / "model.safetensors").resolve() == blob.resolve():
            blob.unlink()
    return cache


def _expected(cache: Path, tiny_model_dir: Path, vision_dir: Path) -> list[tuple[object, ...]]:
    def snapshot(repo: str) -> Path:
        folder = cache / ("models--" + repo.replace("/", "--")) / "snapshots"
        [only] = folder.iterdir()
        return only

    return [
        ("org/text", snapshot("org/text"), "text", _weights_size(tiny_model_dir), "hf-cache"),
        ("org/vision", snapshot("org/vision"), "vision", _weights_size(vision_dir), "hf-cache"),
    ]


def _rows(found: list[LocalModel]) -> list[tuple[object, ...]]:
    return [(m.name, m.path, m.kind, m.size_bytes, m.source) for m in found]


def test_hf_cache_lists_complete_models_only(
    hub_cache: Path, tiny_model_dir: Path, vision_dir: Path
) -> None:
    assert _rows(scan_hf_cache(hub_cache)) == _expected(hub_cache, tiny_model_dir, vision_dir)


def test_hf_cache_without_scan_cache_dir_reads_the_layout(
    hub_cache: Path, tiny_model_dir: Path, vision_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError("no")

    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", unreadable)
    assert _rows(scan_hf_cache(hub_cache)) == _expected(hub_cache, tiny_model_dir, vision_dir)


def test_hf_cache_takes_the_snapshot_main_points_at(tmp_path: Path, tiny_model_dir: Path) -> None:
    cache = tmp_path / "hub"
    cache_snapshot(cache, "org/m", tiny_model_dir, files=["config.json"], revision="1" * 40)
    main = cache_snapshot(cache, "org/m", tiny_model_dir, revision="2" * 40)
    [found] = scan_hf_cache(cache)
    assert found.path == main

    cache_snapshot(cache, "org/m", tiny_model_dir, files=["config.json"], revision="3" * 40)
    assert scan_hf_cache(cache) == []  # main now points at a partial download


def test_hf_cache_default_location_and_missing_cache(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    assert [m.name for m in scan_hf_cache()] == ["org/text", "org/vision"]
    assert scan_hf_cache(tmp_path / "nowhere") == []
    assert catalog.scan_hf_cache(tmp_path) == []
