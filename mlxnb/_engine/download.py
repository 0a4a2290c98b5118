"""Finding a model's files, downloading them when needed, and reporting progress as data.

:func:`resolve_model` turns a reference (a local directory or a Hugging Face repo id) into a
directory on disk, emitting :class:`LoadProgress` values: ``resolving``, then ``downloading``
with bytes done/total while files come from the hub. The caller (the pool) emits ``loading``,
``ready`` and ``error``. :func:`notebook_progress` renders those values as a ``tqdm`` bar.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from mlxnb._engine.backend import _looks_like_repo_id
from mlxnb._engine.catalog import is_model_dir, model_name
from mlxnb.errors import ModelLoadError, ModelNotFoundError

Stage = Literal["resolving", "downloading", "loading", "ready", "error"]

#: What mlx-lm and mlx-vlm read from a repo: config, tokenizer, chat template, weights.
ALLOW_PATTERNS = (
    "*.json",
    "*.jsonl",
    "model*.safetensors",
    "*.py",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)
#: At most this many ``downloading`` events per second (the last one always goes out).
EVENTS_PER_SECOND = 10
# snapshot_download names its progress bars; this one counts bytes written to the cache.
_BYTES_BAR = "huggingface_hub.snapshot_download"


@dataclass(frozen=True)
class LoadProgress:
    """One step of getting a model ready.

    Attributes:
        model: The model's public name (see :func:`mlxnb._engine.catalog.model_name`).
        stage: ``resolving``, ``downloading``, ``loading``, ``ready`` or ``error``.
        done_bytes: Bytes downloaded so far (counting files already in the cache).
        total_bytes: Bytes to download in all; ``0`` when unknown.
        message: A human-readable detail (the error's text for ``error``).
        at: When it happened (``time.time()``).
    """

    model: str
    stage: Stage
    done_bytes: int = 0
    total_bytes: int = 0
    message: str = ""
    at: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float | None:
        """``done_bytes / total_bytes`` in ``[0, 1]``, or ``None`` when the total is unknown."""
        if self.total_bytes <= 0:
            return None
        return min(1.0, max(0.0, self.done_bytes / self.total_bytes))


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "on", "yes", "true")


def resolve_model(
    ref: str | Path,
    on_progress: Callable[[LoadProgress], None],
    *,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """The local directory holding ``ref``, downloading it from the hub when needed.

    In order: an existing directory is used as it is; a repo id whose ``main`` snapshot in the
    Hugging Face cache is complete is used without any network call; otherwise (unless
    ``HF_HUB_OFFLINE`` is set) the files mlx-lm needs (:data:`ALLOW_PATTERNS`) are downloaded.

    Args:
        ref: A local model directory or a Hugging Face repo id (``"org/name"``).
        on_progress: Called with ``resolving``, then ``downloading`` events (at most
            :data:`EVENTS_PER_SECOND` a second, always a final one with ``done == total``). It
            may be called from download threads, never two calls at once; keep it quick.
        cache_dir: The Hugging Face cache (default: ``huggingface_hub``'s ``HF_HUB_CACHE``).
        endpoint: The hub's URL (default: ``HF_ENDPOINT``, else huggingface.co).

    Returns:
        The model's directory (for a repo id, its snapshot folder in the cache).

    Raises:
        ModelNotFoundError: No such directory, a directory without ``config.json``, an unknown
            or gated repo, a repo without MLX weights, or not cached while offline or the hub
            is unreachable; the message says what was tried.
        ModelLoadError: The hub has the model but the download failed midway.
    """
    name = model_name(ref)
    text = str(ref)
    path = Path(text).expanduser()
    on_progress(LoadProgress(name, "resolving", message=text))
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelNotFoundError(
                f"{path.resolve()} exists but holds no config.json: not a model"
            )
        return path
    if not _looks_like_repo_id(text):
        raise ModelNotFoundError(
            f"no model at {path.resolve()} (no such directory), and {text!r} is not a "
            "Hugging Face repo id of the form 'org/name'"
        )
    cached = _cached_snapshot(text, cache_dir)
    if cached is not None and is_model_dir(cached):
        return cached
    if _offline():
        where = _cache_root(cache_dir)
        state = "only partly downloaded" if cached is not None else "not"
        raise ModelNotFoundError(
            f"model {text!r} not found: no local directory {path.resolve()}, {state} in the "
            f"Hugging Face cache ({where}), and downloads are off (HF_HUB_OFFLINE is set)"
        )
    return _download(text, name, on_progress, cache_dir, endpoint)


def _cache_root(cache_dir: Path | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()


def _cached_snapshot(repo: str, cache_dir: Path | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        found = snapshot_download(
            repo, local_files_only=True, allow_patterns=list(ALLOW_PATTERNS), cache_dir=cache_dir
        )
    except Exception:  # not cached, or cached incompletely: both mean "download it"
        return None
    return Path(found)


def _download(
    repo: str,
    name: str,
    on_progress: Callable[[LoadProgress], None],
    cache_dir: Path | None,
    endpoint: str | None,
) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    hub = endpoint or "the Hugging Face hub"
    try:
        info = HfApi(endpoint=endpoint).model_info(repo, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(
            f"model {repo!r} not found: not a local directory, not in the Hugging Face cache "
            f"({_cache_root(cache_dir)}), and {hub} has no such repo (or it is private or gated)"
        ) from error
    except Exception as error:  # no user code runs here: any failure means the hub is unusable
        raise ModelNotFoundError(
            f"model {repo!r} not found: not a local directory, not in the Hugging Face cache "
            f"({_cache_root(cache_dir)}), and {hub} could not be asked "
            f"({type(error).__name__}: {error})"
        ) from error
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    wanted = [file for file in sizes if any(fnmatch(file, p) for p in ALLOW_PATTERNS)]
    if "config.json" not in wanted or not any(f.endswith(".safetensors") for f in wanted):
        raise ModelNotFoundError(
            f"{repo!r} on {hub} is not an MLX model: it lacks config.json or "
            f"model*.safetensors weights (files: {', '.join(sorted(sizes)[:8]) or 'none'})"
        )
    total = sum(sizes[file] for file in wanted)
    snapshot = _cache_root(cache_dir) / repo_folder_name(repo_id=repo, repo_type="model")
    snapshot = snapshot / "snapshots" / str(info.sha)
    already = sum(sizes[file] for file in wanted if (snapshot / file).is_file())
    reporter = _Reporter(name, total, already, on_progress, f"{len(wanted)} files from {hub}")
    reporter.advance(0, force=True)
    try:
        found = snapshot_download(
            repo,
            allow_patterns=list(ALLOW_PATTERNS),
            cache_dir=cache_dir,
            endpoint=endpoint,
            tqdm_class=reporter.bar_class(),
        )
    except Exception as error:
        if any(error is failed for failed in reporter.callback_errors):
            raise
        raise ModelLoadError(
            f"downloading {repo!r} from {hub} failed ({type(error).__name__}: {error})"
        ) from error
    reporter.finish()
    path = Path(found)
    if not is_model_dir(path):
        raise ModelLoadError(f"{repo!r} was downloaded to {path} but its weights are incomplete")
    return path


class _Reporter:
    """Adds up the bytes of every file's download into throttled ``downloading`` events."""

    def __init__(
        self,
        name: str,
        total: int,
        done: int,
        on_progress: Callable[[LoadProgress], None],
        message: str,
    ) -> None:
        self.name, self.total, self.message = name, total, message
        self.on_progress = on_progress
        self.raw = done  # may step back when a resumed download restarts; events never do
        self.shown = -1
        self.last = -math.inf
        self.lock = threading.Lock()
        self.callback_errors: list[BaseException] = []  # one per download thread it failed in

    def advance(self, n: int, *, force: bool = False) -> None:
        with self.lock:
            self.raw += n
            now = time.monotonic()
            if not force and now - self.last < 1.0 / EVENTS_PER_SECOND:
                return
            done = max(self.shown, min(self.raw, self.total))
            self.shown, self.last = done, now
            try:
                self.on_progress(
                    LoadProgress(self.name, "downloading", done, self.total, self.message)
                )
            except BaseException as error:
                self.callback_errors.append(error)
                raise

    def finish(self) -> None:
        with self.lock:
            self.total = self.raw = max(self.total, self.raw)
        self.advance(0, force=True)

    def bar_class(self) -> type[Any]:
        """A ``tqdm`` class for ``snapshot_download`` that feeds this reporter and draws nothing."""
        from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

        reporter = self

        class _Bar(hub_tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.counts_bytes = kwargs.get("name") == _BYTES_BAR
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

            def update(self, n: float | None = 1) -> bool | None:
                if self.counts_bytes and n:
                    reporter.advance(int(n))
                result: bool | None = super().update(n)
                return result

        return _Bar


def notebook_progress(model: str, **tqdm_kwargs: Any) -> Callable[[LoadProgress], None]:
    """A progress callback that draws a ``tqdm.auto`` bar (a widget in Jupyter).

    The bar counts bytes, is labelled with the model's name, shows the stage as its postfix,
    and closes on ``ready`` (filled) or ``error``; later events are ignored.

    Args:
        model: The label (the model's name).
        **tqdm_kwargs: Passed to ``tqdm`` (``file=``, ``leave=``, ...).

    Returns:
        A callable to pass as ``on_progress``.
    """
    return _NotebookBar(model, tqdm_kwargs)


class _NotebookBar:
    def __init__(self, model: str, tqdm_kwargs: dict[str, Any]) -> None:
        self.model = model
        self.tqdm_kwargs = tqdm_kwargs
        self.bar: Any = None
        self.closed = False
        self.lock = threading.Lock()

    def __call__(self, event: LoadProgress) -> None:
        with self.lock:
            if self.closed:
                return
            if self.bar is None:
                from tqdm.auto import tqdm

                options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
                self.bar = tqdm(
                    total=event.total_bytes or None, desc=self.model, **options, **self.tqdm_kwargs
                )
            bar = self.bar
            if event.total_bytes and bar.total != event.total_bytes:
                bar.total = event.total_bytes
            done = bar.total if event.stage == "ready" and bar.total else event.done_bytes
            if done > bar.n:
                bar.update(done - bar.n)
            detail = f"{event.stage}: {event.message}" if event.stage == "error" else event.stage
            bar.set_postfix_str(detail, refresh=False)
            if event.stage in ("ready", "error"):
                self.closed = True
                bar.close()
            else:
                bar.refresh()
