"""The model pool: one engine per model per kernel, loaded on first use, evicted under a budget.

Every door that names a model (``mlxnb.load``, the widget's picker, ``evaluate(model=...)``, the
``model`` of an HTTP request) goes through a pool, so a model is loaded once however many doors
use it. Loading runs on a loader thread (resolve, download, then the engine's own worker loads
the weights); callers wait on it, and watchers get :class:`LoadProgress` events. Before a load,
least recently used idle models are closed until the new one fits the memory budget and the
model count; a model that is serving requests, or is pinned, is never closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxnb._engine.catalog import (
    estimate_bytes,
)
from mlxnb._engine.download import LoadProgress, notebook_progress, resolve_model
from mlxnb._engine.engine import Engine
from mlxnb._engine.registry import ModelRegistry
from mlxnb._engine.residency import (
    BUDGET_FRACTION,
    PoolEntry,
    Watcher,
    physical_memory,
    plan_room,
    state_name,
)
from mlxnb.errors import (
    EngineBusyError,
    InvalidRequestError,
    MemoryBudgetError,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlxnb._engine.handle import ModelHandle


DEFAULT_LOAD_TIMEOUT = 600.0
HF_CACHE_RESCAN_S = 30.0


class ModelPool(ModelRegistry):
    """Models by name, loaded once and shared; the least recently used idle one makes room.

    Args:
        budget_bytes: Most bytes of weights resident at once (estimated from the weight files
            before loading). ``None``: a fraction of physical memory.
        max_models: Most models resident at once (``None``: no count limit).
        idle_unload: Close an unpinned model after this many seconds unused (``None``: never).
        load_timeout: Longest a request waits for its model to load.
        engine_options: Options for every engine this pool starts (see :class:`Engine`).
        directories: Folders whose models are registered (each a model or holding models).
        hf_cache: Register the models already in the local Hugging Face cache (scanned
            offline, again at most every 30 s); ``True`` for the default cache, or its path.
    """

    def __init__(
        self,
        *,
        budget_bytes: int | None = None,
        max_models: int | None = None,
        idle_unload: float | None = None,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        engine_options: Mapping[str, Any] | None = None,
        directories: Iterable[str | Path] = (),
        hf_cache: bool | str | Path = False,
    ) -> None:
        self.budget_bytes = (
            budget_bytes if budget_bytes is not None else int(physical_memory() * BUDGET_FRACTION)
        )
        self.max_models = max_models
        self.idle_unload = idle_unload
        self.load_timeout = load_timeout
        super().__init__(engine_options=engine_options, hf_cache=hf_cache)
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self.unloads = 0
        for directory in directories:
            self.add_directory(directory)
        if idle_unload is not None:
            threading.Thread(
                target=self._unload_idle_forever, name="mlxnb-pool-idle", daemon=True
            ).start()

    # -- loading ---------------------------------------------------------------------------

    def engine(self, name: str, *, timeout: float | None = None) -> Engine:
        """The loaded engine for a registered model, loading it first if needed (blocking).

        Raises:
            ModelNotFoundError: Not registered.
            ModelLoadError: Loading failed (``MemoryBudgetError`` when it cannot fit).
            TimeoutError: Loading did not finish within ``timeout``.
        """
        wait = self.load_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            entry = self._start(self.lookup(name)[0])
            if not entry.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{entry.name} did not load within {wait} s")
            if not self._retry(entry, deadline):
                return self._ready_engine(entry)

    async def aengine(self, name: str, *, timeout: float | None = None) -> Engine:
        """Awaitable :meth:`engine`: waits for a load without blocking the event loop."""
        deadline = time.monotonic() + (self.load_timeout if timeout is None else timeout)
        while True:
            entry = self._start(self.lookup(name)[0])
            while not entry.done.is_set():
                if time.monotonic() > deadline:
                    raise EngineBusyError(f"{entry.name} is still loading; try again later")
                await asyncio.sleep(0.02)
            if not self._retry(entry, deadline):
                return self._ready_engine(entry)

    def _retry(self, entry: PoolEntry, deadline: float) -> bool:
        """Whether to load again: the load found no room in time, and this caller may wait on.

        A load waits for room only as long as the pool's timeout was when it started; a caller
        that joined it with more patience (or after the timeout was raised) loads again.
        """
        with self._lock:
            busy = isinstance(entry.error, EngineBusyError) and not entry.resident
        return busy and time.monotonic() < deadline

    def load(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        pin: bool = True,
        wait: bool = True,
        **options: Any,
    ) -> Engine:
        """Register and load a model; what :func:`mlxnb.load` does.

        The same model with the same options gives the same engine. Asked for with other engine
        options while loaded, a second engine is started (and counted against the budget). A
        model that fails to load is not left registered.

        Args:
            model: A local model directory or a Hugging Face repo id.
            name: Its name (default: the repo id or the directory's name).
            pin: Never evict it to make room (the default for models loaded by hand).
            wait: Block until loaded (``False``: return once its engine exists, still loading;
                a download still happens first).
            **options: Engine options (see :class:`Engine`).
        """
        with self._lock:
            known = set(self._entries)
        name = self.register(model, name=name, pin=pin, **options)
        with self._lock:
            wanted = {**self.engine_options, **options}
            entry = self._entries[name]
            if entry.options != wanted:  # no options means the defaults, not "any"
                entry = self._entries[self._twin(entry, wanted, pin)]
        unsubscribe = self.watch(entry.name, _DownloadBar(entry.name))
        self._start(entry.name)
        try:
            if not wait:
                while entry.engine is None and not entry.done.wait(0.01):
                    pass
                if entry.engine is not None:
                    return entry.engine
            return self.engine(entry.name)
        except BaseException:
            if entry.name not in known:
                with self._lock:
                    self._entries.pop(entry.name, None)
            raise
        finally:
            unsubscribe()

    def _twin(self, entry: PoolEntry, options: dict[str, Any], pin: bool) -> str:
        """The entry with these engine options for ``entry``'s model (made if needed)."""
        if not entry.resident and not entry.loading:
            entry.options = options
            return entry.name
        twins = [e for key, e in self._entries.items() if key.startswith(entry.name + "#")]
        for twin in twins:
            if twin.options == options:
                twin.pinned = twin.pinned or pin
                return twin.name
            if not twin.resident and not twin.loading:
                del self._entries[twin.name]  # a closed twin with other options: forget it
        number = 2
        while f"{entry.name}#{number}" in self._entries:
            number += 1
        twin = PoolEntry(f"{entry.name}#{number}", entry.ref, options, pinned=pin)
        self._entries[twin.name] = twin
        return twin.name

    def _ready_engine(self, entry: PoolEntry) -> Engine:
        with self._lock:
            if entry.error is not None:
                raise entry.error
            assert entry.engine is not None  # done without an error means loaded
            entry.last_used = time.time()
            return entry.engine

    def _start(self, name: str) -> PoolEntry:
        """The entry for ``name`` with a load started unless it is loaded or loading."""
        with self._lock:
            if self._closed:
                raise InvalidRequestError("the model pool is closed")
            entry = self._entries[name]
            if entry.loading or (entry.resident and entry.error is None):
                return entry
            entry.drop_engine()  # closed by its user, or never loaded
            entry.error, entry.stage = None, "resolving"
            entry.done.clear()
            entry.loads += 1
        threading.Thread(
            target=self._load, args=(entry,), name=f"mlxnb-load-{name}", daemon=True
        ).start()
        return entry

    def _load(self, entry: PoolEntry) -> None:
        """On a loader thread: resolve (download), make room, start the engine, wait for it."""
        try:
            path = resolve_model(entry.ref, lambda event: self._report(entry, event))
            entry.estimate = estimate_bytes(path)
            self._make_room(entry)
            self._report(entry, LoadProgress(entry.name, "loading", 0, entry.estimate))
            # A twin (same model, other engine options) answers under the model's own name.
            engine = Engine(path, wait=False, name=entry.name.partition("#")[0], **entry.options)
            with self._lock:
                entry.engine = engine
            engine.wait_ready()
            kind = engine.kind
            with self._lock:
                entry.kind, entry.last_used = kind, time.time()
        except BaseException as error:  # any failure ends the load; callers get it
            with self._lock:
                entry.error = error
            self._report(entry, LoadProgress(entry.name, "error", message=str(error)))
        else:
            self._report(entry, LoadProgress(entry.name, "ready", entry.estimate, entry.estimate))
        finally:
            entry.done.set()
            with self._changed:
                self._changed.notify_all()

    def _report(self, entry: PoolEntry, event: LoadProgress) -> None:
        with self._lock:
            entry.stage, entry.progress = event.stage, event
            watchers = list(entry.watchers)
        for watcher in watchers:
            try:
                watcher(event)
            except Exception:  # a broken watcher must not break the load
                continue

    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with each :class:`LoadProgress` of a model; returns an unsubscribe.

        The latest event so far is delivered at once. Watchers run on the loader thread.
        """
        entry = self._entries[self.lookup(name)[0]]
        with self._lock:
            entry.watchers.append(watcher)
            latest = entry.progress
        if latest is not None:
            watcher(latest)

        def unsubscribe() -> None:
            with self._lock:
                if watcher in entry.watchers:
                    entry.watchers.remove(watcher)

        return unsubscribe

    # -- room ------------------------------------------------------------------------------

    def _make_room(self, entry: PoolEntry) -> None:
        """Close idle unpinned models, least recently used first, until ``entry`` fits."""
        deadline = time.monotonic() + self.load_timeout
        with self._changed:
            while True:
                others = [
                    e
                    for e in self._entries.values()
                    if e is not entry and (e.resident or e.loading)
                ]
                plan = plan_room(entry, others, self.budget_bytes, self.max_models)
                if plan.fits:
                    return
                if plan.refusal is not None:
                    raise MemoryBudgetError(plan.refusal)
                if plan.victim is not None:
                    self._unload(plan.victim)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineBusyError(f"no idle model to unload for {entry.name}; try later")
                self._changed.wait(min(remaining, 0.1))  # a busy model becomes idle

    def _unload(self, entry: PoolEntry) -> bool:
        engine = entry.engine
        if engine is None or not engine.close_if_idle():
            return False
        entry.drop_engine()
        entry.stage, entry.progress = "unloaded", None
        self.unloads += 1
        return True

    def unload(self, name: str) -> None:
        """Close a model's engine now (it loads again when next used).

        Raises:
            EngineBusyError: It is serving requests.
        """
        with self._lock:
            entry = self._entries[self.lookup(name)[0]]
            if entry.resident and not self._unload(entry):
                raise EngineBusyError(f"{entry.name} is serving requests")
            self._changed.notify_all()

    def pin(self, name: str, pinned: bool = True) -> None:
        """Keep a model loaded (``pinned=False`` makes it evictable again)."""
        with self._lock:
            self._entries[self.lookup(name)[0]].pinned = pinned

    def _unload_idle_forever(self) -> None:
        assert self.idle_unload is not None
        while not self._closed:
            time.sleep(min(self.idle_unload / 4, 5.0))
            cutoff = time.time() - self.idle_unload
            with self._lock:
                for entry in list(self._entries.values()):
                    if entry.evictable() and entry.last_used < cutoff:
                        self._unload(entry)

    def touch(self, name: str) -> None:
        """Mark a model used now (handles call this per request; LRU order)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.last_used = time.time()

    # -- reading ---------------------------------------------------------------------------

    def state(self, name: str) -> dict[str, Any]:
        """One model's or profile's state as plain data (``GET /v1/models/{id}``)."""
        model, profile = self.lookup(name)
        with self._lock:
            entry = self._entries[model]
            progress = entry.progress
            state: dict[str, Any] = {
                "id": name,
                "model": model,
                "kind": entry.kind,
                "state": state_name(entry),
                "memory_bytes": entry.estimate if entry.resident else 0,
                "pinned": entry.pinned,
                "requests_served": entry.requests_served(),
                "last_used": entry.last_used or None,
            }
            if progress is not None and progress.stage in ("downloading", "loading"):
                state["progress"] = {
                    "done_bytes": progress.done_bytes,
                    "total_bytes": progress.total_bytes,
                }
            if entry.error is not None:
                state["error"] = str(entry.error)
        if profile is not None:
            state["profile"] = profile.describe()
        return state

    def models(self) -> pd.DataFrame:
        """Every model and profile: id, kind, state, memory, requests served, last used."""
        import pandas as pd

        rows = [self.state(name) for name in self.names()]
        frame: pd.DataFrame = pd.DataFrame(
            rows,
            columns=[
                "id",
                "model",
                "kind",
                "state",
                "memory_bytes",
                "pinned",
                "requests_served",
                "last_used",
            ],
        )
        frame["last_used"] = pd.to_datetime(frame["last_used"], unit="s", utc=True)
        frame["is_profile"] = frame["id"] != frame["model"]
        return frame

    def handle(self, name: str) -> ModelHandle:
        """A served-engine view of a model or profile (what the doors use)."""
        from mlxnb._engine.handle import ModelHandle

        model, profile = self.lookup(name)
        return ModelHandle(self, name, model, profile)

    # -- the server's engine source --------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Names the HTTP API lists and accepts (the allow-list)."""
        return self.names()

    def engine_for(self, model: str) -> ModelHandle:
        """The handle for ``model`` (an allowed name); :class:`ModelNotFoundError` otherwise."""
        return self.handle(model)

    def close(self) -> None:
        """Close every engine the pool started. Idempotent."""
        with self._lock:
            self._closed = True
            engines = [e.engine for e in self._entries.values() if e.engine is not None]
        for engine in engines:
            engine.close()

    def __repr__(self) -> str:
        with self._lock:
            resident = [e.name for e in self._entries.values() if e.resident]
        known, profiles = len(self._entries), len(self._profiles)
        return f"ModelPool(resident={resident}, known={known}, profiles={profiles})"


class _DownloadBar:
    """A notebook progress bar for a load, shown only once it downloads (local loads are quick)."""

    def __init__(self, name: str) -> None:
        self._bar = notebook_progress(name)
        self._shown = False

    def __call__(self, event: LoadProgress) -> None:
        self._shown = self._shown or event.stage == "downloading"
        if self._shown:
            self._bar(event)
