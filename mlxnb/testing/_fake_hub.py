"""A tiny Hugging Face hub on 127.0.0.1 and a hand-made hub cache, for tests without network.

:func:`fake_hub` serves local model directories to ``snapshot_download``.

It answers the few endpoints ``huggingface_hub`` calls to download a snapshot over plain HTTP:
the model info (``/api/models/{repo}[/revision/{rev}]``, siblings with sizes), the recursive tree
(``/api/models/{repo}/tree/{rev}``) and the files (``HEAD``/``GET /{repo}/resolve/{rev}/{file}``
with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``). An unknown repo gets the hub's
``RepoNotFound`` answer. Point ``snapshot_download(..., endpoint=url)`` at it; nothing leaves
the machine.

:func:`cache_snapshot` lays a directory out as the hub cache does (``models--org--name`` with
``blobs``, ``snapshots/<commit>`` of relative links, ``refs/main``), as if downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<what>revision|tree)/[^/]+.*)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass(frozen=True)
class _File:
    path: str
    source: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    sha: str
    files: dict[str, _File]


def _repo(repo_id: str, directory: Path) -> _Repo:
    files: dict[str, _File] = {}
    for source in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = source.relative_to(directory).as_posix()
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        files[relative] = _File(relative, source, source.stat().st_size, digest)
    commit = hashlib.sha1(
        "".join(f"{f.path}:{f.sha256}\n" for f in files.values()).encode(), usedforsecurity=False
    ).hexdigest()
    return _Repo(repo_id, commit, files)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so no handler thread outlives a test.
    repos: Mapping[str, _Repo] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if match := _API.match(path):
            repo = self.repos.get(match["repo"])
            if repo is None:
                return self._not_found("RepoNotFound", "Repository not found")
            if match["what"] == "tree":
                return self._json(_tree(repo), body=body)
            return self._json(_info(repo), body=body)
        if match := _RESOLVE.match(path):
            repo = self.repos.get(match["repo"])
            if repo is None:
                return self._not_found("RepoNotFound", "Repository not found")
            found = repo.files.get(match["file"])
            if found is None:
                return self._not_found("EntryNotFound", "Entry not found", commit=repo.sha)
            return self._file(repo, found, body=body)
        self._not_found("", "Not found")

    def _file(self, repo: _Repo, found: _File, *, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(found.size))
        self.send_header("ETag", f'"{found.sha256}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if body:
            with found.source.open("rb") as handle:
                while chunk := handle.read(64 * 1024):
                    self.wfile.write(chunk)

    def _json(self, value: Any, *, body: bool) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _not_found(self, code: str, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _info(repo: _Repo) -> dict[str, Any]:
    return {
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "sha": repo.sha,
        "private": False,
        "siblings": [
            {"rfilename": f.path, "size": f.size, "blobId": f.sha256} for f in repo.files.values()
        ],
    }


def _tree(repo: _Repo) -> list[dict[str, Any]]:
    return [
        {"type": "file", "path": f.path, "size": f.size, "oid": f.sha256}
        for f in repo.files.values()
    ]


@contextmanager
def fake_hub(repos: Mapping[str, Path]) -> Iterator[str]:
    """Serve local directories as hub repos on ``127.0.0.1`` for the ``with`` block.

    Args:
        repos: Repo id (``"org/name"``) → the directory whose files (recursively) the repo holds.

    Yields:
        The endpoint URL (``http://127.0.0.1:<port>``), for ``snapshot_download(endpoint=...)``.
    """
    built = {repo_id: _repo(repo_id, Path(directory)) for repo_id, directory in repos.items()}
    handler = type("_BoundHandler", (_Handler,), {"repos": built})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False
    server.block_on_close = True  # server_close() joins every request thread
    thread = threading.Thread(target=server.serve_forever, name="mlxnb-fake-hub", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def cache_snapshot(
    cache_dir: Path,
    repo_id: str,
    directory: Path,
    *,
    files: Iterable[str] | None = None,
    revision: str | None = None,
    ref: str | None = "main",
) -> Path:
    """Put ``directory``'s files into a Hugging Face cache as a downloaded snapshot of a repo.

    Blobs are hard links to the originals where the file system allows (copies elsewhere), so
    large weights cost no space.

    Args:
        cache_dir: The hub cache folder (``HF_HUB_CACHE``); created if missing.
        repo_id: ``"org/name"``.
        directory: Where the files come from (top-level files only).
        files: Only these file names (default: all); leave some out for a partial download.
        revision: The commit hash (default: 40 hex digits derived from the repo id).
        ref: The branch whose ref points at it (``None`` for none).

    Returns:
        The snapshot folder (``.../models--org--name/snapshots/<revision>``).
    """
    revision = revision or hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    chosen = set(files) if files is not None else None
    for source in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        if chosen is not None and source.name not in chosen:
            continue
        blob = repo_dir / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        if not blob.exists():
            try:
                os.link(source, blob)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(source, blob)
        link = snapshot / source.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    if ref is not None:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(revision)
    return snapshot
