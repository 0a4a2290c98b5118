"""Resolving and downloading models: a local folder, the hub cache offline, and a real download
from a hub on 127.0.0.1 (``mlxnb.testing._fake_hub``), with the progress it reports."""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from mlxnb._engine import download
from mlxnb._engine.download import LoadProgress, notebook_progress, resolve_model
from mlxnb.errors import ModelLoadError, ModelNotFoundError
from mlxnb.testing._fake_hub import cache_snapshot, fake_hub

WANTED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed, but only ever from the fake hub each test names as its endpoint."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    resolve = socket.getaddrinfo

    def loopback_only(host: object, *args: object, **kwargs: object) -> object:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise OSError(f"a test tried to reach {host!r}")
        return resolve(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture
def repo_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """The tiny model as a hub repo would hold it, with files mlx-lm does not need."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for file in tiny_model_dir.iterdir():
        try:
            os.link(file, repo / file.name)
        except OSError:
            shutil.copyfile(file, repo / file.name)
    (repo / "README.md").write_text("# tiny\n")
    (repo / "tiny-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(1000))
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.safetensors").write_bytes(bytes(1000))
    return repo


def _unused_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- LoadProgress --------------------------------------------------------------------------------


def test_fraction_is_none_until_the_total_is_known() -> None:
    assert LoadProgress("m", "resolving").fraction is None
    assert LoadProgress("m", "downloading", 25, 100).fraction == 0.25
    assert LoadProgress("m", "downloading", 120, 100).fraction == 1.0
    event = LoadProgress("m", "ready")
    assert event.at > 0 and event.message == "" and event.done_bytes == event.total_bytes == 0


# -- local and cached ----------------------------------------------------------------------------


def test_a_local_directory_resolves_to_itself(tiny_model_dir: Path) -> None:
    events: list[LoadProgress] = []
    assert resolve_model(tiny_model_dir, events.append) == tiny_model_dir
    assert [(e.model, e.stage) for e in events] == [(tiny_model_dir.name, "resolving")]


def test_a_directory_that_is_no_model_or_a_bad_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model(tmp_path, lambda event: None)
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face repo id"):
        resolve_model(tmp_path / "missing", lambda event: None)


def test_a_cached_repo_resolves_offline(
    offline: None, tmp_path: Path, tiny_model_dir: Path
) -> None:
    snapshot = cache_snapshot(tmp_path / "hub", "org/tiny", tiny_model_dir)
    events: list[LoadProgress] = []
    assert resolve_model("org/tiny", events.append, cache_dir=tmp_path / "hub") == snapshot
    assert [(e.model, e.stage) for e in events] == [("org/tiny", "resolving")]


def test_a_missing_repo_offline_is_not_found(offline: None, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"'org/missing'.*not in the.*HF_HUB_OFFLINE"):
        resolve_model("org/missing", lambda event: None, cache_dir=tmp_path / "hub")


def test_a_partial_download_offline_is_not_found(
    offline: None, tmp_path: Path, tiny_model_dir: Path
) -> None:
    cache_snapshot(tmp_path / "hub", "org/tiny", tiny_model_dir, files=["config.json"])
    with pytest.raises(ModelNotFoundError, match="only partly downloaded"):
        resolve_model("org/tiny", lambda event: None, cache_dir=tmp_path / "hub")


# -- downloading from a hub ----------------------------------------------------------------------


def test_a_download_reports_its_bytes_and_loads(
    online: None, tmp_path: Path, repo_dir: Path
) -> None:
    import mlx_lm

    cache = tmp_path / "hub"
    expected_total = sum((repo_dir / name).stat().st_size for name in WANTED)
    events: list[LoadProgress] = []
    with fake_hub({"org/tiny": repo_dir}) as endpoint:
        path = resolve_model("org/tiny", events.append, cache_dir=cache, endpoint=endpoint)

    assert path.parent.parent == cache / "models--org--tiny"
    assert sorted(p.name for p in path.iterdir()) == sorted(WANTED)
    assert events[0].stage == "resolving"
    assert {e.model for e in events} == {"org/tiny"}
    downloading = events[1:]
    assert len(downloading) >= 2 and {e.stage for e in downloading} == {"downloading"}
    assert {e.total_bytes for e in downloading} == {expected_total}
    done = [e.done_bytes for e in downloading]
    assert done == sorted(done) and done[0] == 0 and done[-1] == expected_total
    assert downloading[-1].fraction == 1.0
    times = [e.at for e in events]
    assert times == sorted(times)

    model, tokenizer = mlx_lm.load(str(path))
    assert tokenizer.encode("hello") and model.layers

    # Now in the cache: found again with the hub gone, without any network call.
    later: list[LoadProgress] = []
    assert resolve_model("org/tiny", later.append, cache_dir=cache, endpoint=endpoint) == path
    assert [e.stage for e in later] == ["resolving"]


def test_a_partial_download_is_completed_counting_what_is_there(
    online: None, tmp_path: Path, repo_dir: Path
) -> None:
    cache = tmp_path / "hub"
    events: list[LoadProgress] = []
    with fake_hub({"org/tiny": repo_dir}) as endpoint:
        first = resolve_model("org/tiny", events.append, cache_dir=cache, endpoint=endpoint)
        (first / "model.safetensors").unlink()
        events.clear()
        again = resolve_model("org/tiny", events.append, cache_dir=cache, endpoint=endpoint)

    assert again == first and (again / "model.safetensors").is_file()
    small = sum((repo_dir / n).stat().st_size for n in WANTED if n != "model.safetensors")
    assert events[1].done_bytes == small
    assert events[-1].done_bytes == events[-1].total_bytes > small


def test_an_unknown_repo_on_the_hub_is_not_found(online: None, tmp_path: Path) -> None:
    with (
        fake_hub({}) as endpoint,
        pytest.raises(ModelNotFoundError, match=r"'org/nope'.*has no such repo"),
    ):
        resolve_model("org/nope", lambda event: None, cache_dir=tmp_path, endpoint=endpoint)


def test_an_unreachable_hub_is_not_found(online: None, tmp_path: Path) -> None:
    endpoint = _unused_endpoint()
    with pytest.raises(ModelNotFoundError, match=r"'org/tiny'.*could not be asked"):
        resolve_model("org/tiny", lambda event: None, cache_dir=tmp_path, endpoint=endpoint)


def test_a_repo_without_mlx_weights_is_refused_before_downloading(
    online: None, tmp_path: Path
) -> None:
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "model-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(100))
    (gguf / "README.md").write_text("# gguf\n")
    with (
        fake_hub({"org/gguf": gguf}) as endpoint,
        pytest.raises(ModelNotFoundError, match="not an MLX model"),
    ):
        resolve_model("org/gguf", lambda event: None, cache_dir=tmp_path / "hub", endpoint=endpoint)
    assert not (tmp_path / "hub" / "models--org--gguf" / "blobs").exists()


def test_a_failing_callback_stops_the_download_with_its_own_error(
    online: None, tmp_path: Path, repo_dir: Path
) -> None:
    class Stop(Exception):
        pass

    def stop_midway(event: LoadProgress) -> None:
        if event.done_bytes > 0:
            raise Stop

    with (
        fake_hub({"org/tiny": repo_dir}) as endpoint,
        pytest.raises(Stop),
    ):
        resolve_model("org/tiny", stop_midway, cache_dir=tmp_path / "hub", endpoint=endpoint)


def test_events_are_throttled_but_the_last_one_always_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[LoadProgress] = []
    reporter = download._Reporter("m", 10_000, 0, events.append, "")
    reporter.advance(0, force=True)
    for _ in range(10_000):
        reporter.advance(1)
    reporter.finish()
    assert 2 <= len(events) <= 5
    assert events[-1].done_bytes == events[-1].total_bytes == 10_000

    ticks = iter(range(10**6))
    monkeypatch.setattr(download.time, "monotonic", lambda: float(next(ticks)))
    events.clear()
    reporter = download._Reporter("m", 100, 0, events.append, "")
    reporter.advance(150)  # a resumed file restarting: never above the total, never backwards
    reporter.advance(-100)
    reporter.finish()
    assert [e.done_bytes for e in events] == [100, 100, 100]
    assert events[-1].total_bytes == 100


def test_a_download_error_midway_is_a_load_error(
    online: None, tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def broken(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with (
        fake_hub({"org/tiny": repo_dir}) as endpoint,
        pytest.raises(ModelLoadError, match="disk full"),
    ):
        resolve_model("org/tiny", lambda event: None, cache_dir=tmp_path / "hub", endpoint=endpoint)


# -- the notebook bar ----------------------------------------------------------------------------


def test_notebook_progress_draws_bytes_and_closes_on_ready() -> None:
    out = io.StringIO()
    show = notebook_progress("org/tiny", file=out, mininterval=0)
    show(LoadProgress("org/tiny", "resolving"))
    show(LoadProgress("org/tiny", "downloading", 512, 2048))
    show(LoadProgress("org/tiny", "downloading", 2048, 2048))
    show(LoadProgress("org/tiny", "loading"))
    show(LoadProgress("org/tiny", "ready"))
    text = out.getvalue()
    assert "org/tiny" in text and "2.00k/2.00k" in text and "ready" in text
    show(LoadProgress("org/tiny", "downloading", 1, 2))  # closed: ignored
    assert out.getvalue() == text


def test_notebook_progress_closes_on_error() -> None:
    out = io.StringIO()
    show = notebook_progress("org/tiny", file=out, mininterval=0)
    show(LoadProgress("org/tiny", "resolving"))
    show(LoadProgress("org/tiny", "error", message="not found"))
    assert "error: not found" in out.getvalue()
    assert show.closed  # type: ignore[attr-defined]
