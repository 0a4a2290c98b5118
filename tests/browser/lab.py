"""A throw-away JupyterLab (or Jupyter Notebook 7) server for browser tests and the benchmark.

Everything it touches lives in one temporary directory (config, data, runtime, settings,
workspaces, notebooks), so it never sees the user's setup and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import nbformat

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip

SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Light"},
}


# The front end a server runs: its module, the config class of its app, its notebook URL.
APPS: dict[str, tuple[str, str, str]] = {
    "lab": ("jupyterlab", "LabApp", "/lab/tree/{name}?reset&"),
    "notebook": ("notebook", "JupyterNotebookApp", "/notebooks/{name}?"),
}


class JupyterLab:
    """Start JupyterLab (or Notebook 7) on a free port in an isolated temporary directory.

    Args:
        startup_timeout: Seconds to wait for the server to answer.
        app: ``"lab"`` for JupyterLab, ``"notebook"`` for Jupyter Notebook 7 (same server and
            settings, its own single-document front end).
    """

    def __init__(
        self, startup_timeout: float = 60.0, app: Literal["lab", "notebook"] = "lab"
    ) -> None:
        self.app = app
        module, config, _ = APPS[app]
        self._tmp = tempfile.TemporaryDirectory(prefix="mlxnb-lab-")
        base = Path(self._tmp.name)
        self.root = base / "notebooks"
        dirs = {name: base / name for name in ("config", "data", "runtime", "ipython", "settings")}
        for path in [self.root, *dirs.values()]:
            path.mkdir()
        for name, value in SETTINGS.items():
            target = dirs["settings"] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(value))
        self.token = secrets.token_hex(16)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "IPYTHONDIR": str(dirs["ipython"]),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        env.pop("ANYWIDGET_HMR", None)
        # Notebook 7 also loads JupyterLab's server extension: the LabApp flags still apply.
        command = [
            sys.executable, "-m", module, "--no-browser", "--allow-root",
            "--ServerApp.port=0", "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--{config}.expose_app_in_browser=True",
            f"--{config}.user_settings_dir={dirs['settings']}",
            f"--{config}.workspaces_dir={base / 'workspaces'}",
        ]  # fmt: skip
        self.log_path = base / "server.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = self._wait_for_url(dirs["runtime"], startup_timeout)

    def _wait_for_url(self, runtime: Path, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.app} server exited:\n{self.log_path.read_text()[-3000:]}"
                )
            for info in runtime.glob(f"jpserver-{self.process.pid}.json"):
                try:
                    url = str(json.loads(info.read_text())["url"]).rstrip("/")
                    self._request("GET", f"{url}/api/status")
                    return url
                except (ValueError, KeyError, OSError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.app} server did not start in {timeout} s")

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API (``path`` starts with ``/api/``)."""
        return self._request(method, f"{self.url}{path}", body)

    def shutdown_kernels(self) -> None:
        """End every session and kernel (they outlive browser pages)."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def write_notebook(self, name: str, cells: list[str]) -> str:
        """Write a notebook (with a kernelspec, so no kernel dialog) and return its path."""
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nbformat.write(nb, self.root / name)
        return name

    def notebook_url(self, name: str) -> str:
        """Where the notebook opens (in JupyterLab, with restored tabs reset)."""
        return f"{self.url}{APPS[self.app][2].format(name=name)}token={self.token}"

    def stop(self) -> None:
        """Shut the server down (REST first, then its process group). Idempotent."""
        if self.process.poll() is None:
            try:
                self.api("POST", "/api/shutdown")
                self.process.wait(timeout=10)
            except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
        self._log.close()
        self._tmp.cleanup()


@contextlib.contextmanager
def launch_chromium(executable: str) -> Iterator[Any]:
    """Playwright's driver and a headless Debian Chromium, started without ``LD_PRELOAD``.

    ``make`` preloads OpenBLAS for MLX's sake; Node (Playwright's driver) and Chromium fail to
    create threads with it preloaded. JupyterLab and its kernels keep it.
    """
    from playwright.sync_api import sync_playwright

    saved = os.environ.pop("LD_PRELOAD", None)
    try:
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    finally:
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
