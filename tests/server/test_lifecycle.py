"""Client disconnects, the background server's handle, and the ``mlxnb serve`` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlxnb
from mlxnb._server.background import ServerHandle, serve, warn_if_exposed
from mlxnb.errors import InsecureServerWarning, ServerStartError

SPIN_TOKENS = 4000  # far more than the test ever waits for


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_disconnect_cancels_generation_and_frees_the_slot(
    server: ServerHandle,
    scripted: Any,
    engine: mlxnb.Engine,
    chat_body: Any,
    wait_until: Any,
    stream: bool,
) -> None:
    spinners = len(scripted.spinners)
    cancelled = server.app.state.stats.cancelled
    body = chat_body("spin:", stream=stream, max_tokens=SPIN_TOKENS)
    url = f"{server.url}/chat/completions"
    with httpx.Client(timeout=60) as http:
        if stream:
            with http.stream("POST", url, json=body) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
        else:
            # Wait until generation runs, then give up on the answer.
            with pytest.raises(httpx.ReadTimeout):
                http.post(url, json=body, timeout=httpx.Timeout(60, read=0.5))
    assert len(scripted.spinners) == spinners + 1
    spinner = scripted.spinners[-1]
    wait_until(lambda: engine.pending == 0)  # EOS is banned: only a cancel ends it early
    assert 0 < spinner.steps < SPIN_TOKENS
    wait_until(lambda: server.app.state.stats.cancelled == cancelled + 1)
    row = engine.audit.to_pandas().iloc[-1]
    assert (row["status"], row["source"]) == ("cancelled", "server")
    assert row["endpoint"] == "/v1/chat/completions" and row["client"]
    with httpx.Client(timeout=60) as http:
        again = http.post(url, json=chat_body("say:next one"))
    assert again.json()["choices"][0]["message"]["content"] == "next one"


def test_handle_reports_url_model_and_requests(
    scripted: Any, model_id: str, chat_body: Any
) -> None:
    with serve(scripted) as handle:
        assert handle.url == f"http://127.0.0.1:{handle.port}/v1"
        assert handle.running and handle.models == [model_id]
        httpx.post(f"{handle.url}/chat/completions", json=chat_body("say:one"), timeout=60)
        assert handle.requests_served == 1
        page = handle._repr_html_()
        assert handle.url in page and model_id in page and "running" in page
        assert "1 served" in page
        assert "running" in repr(handle)
    assert not handle.running
    assert "stopped" in handle._repr_html_()


def test_second_server_on_the_same_port_fails_clearly(scripted: Any) -> None:
    with serve(scripted) as first:
        with pytest.raises(ServerStartError, match="already in use"):
            serve(scripted, port=first.port)
        assert httpx.get(f"{first.url}/models").status_code == 200


def test_stop_is_idempotent_and_frees_the_port(scripted: Any) -> None:
    handle = serve(scripted)
    port = handle.port
    handle.stop()
    handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")
    with serve(scripted, port=port) as again:
        assert httpx.get(f"{again.url}/models").status_code == 200


def test_stop_cancels_an_open_stream(
    scripted: Any, engine: mlxnb.Engine, chat_body: Any, wait_until: Any
) -> None:
    handle = serve(scripted)
    body = chat_body("spin:", stream=True, max_tokens=SPIN_TOKENS)
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{handle.url}/chat/completions", json=body) as response,
    ):
        assert next(response.iter_lines()).startswith("data: ")
        handle.stop()
    wait_until(lambda: engine.pending == 0)
    assert scripted.spinners[-1].steps < SPIN_TOKENS


@pytest.mark.parametrize(
    ("host", "key", "warns"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
        ("192.168.1.20", None, True),
        ("0.0.0.0", "secret", False),
    ],
)
def test_exposed_host_without_key_warns(host: str, key: str | None, warns: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_exposed(host, key)
    assert [w.category for w in caught] == ([InsecureServerWarning] if warns else [])


def test_cli_serves_the_same_api(engine: mlxnb.Engine) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "mlxnb",
        "serve",
        engine.path,
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    with process:  # closes the stderr pipe whatever happens
        try:
            assert process.stderr is not None
            for line in process.stderr:  # the CLI says where it serves once about to listen
                if "serving" in line:
                    break
            headers = {"Authorization": "Bearer cli-key"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
                # The socket listens before the line is printed: no retry loop needed.
                assert http.get("/health").json()["status"] == "ok"
                models = http.get("/v1/models").json()["data"]
                # A fresh process names the model after its directory (this process's shared
                # pool may know the same directory under a name another test gave it).
                assert [m["id"] for m in models] == [Path(engine.path).name]
                busy = subprocess.run(command, capture_output=True, text=True, timeout=120)
                assert busy.returncode == 2 and "already in use" in busy.stderr
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130  # the shell convention for Ctrl-C


@pytest.mark.parametrize(
    ("arguments", "options"),
    [
        ([], {}),
        (["--kv-bits", "4"], {"kv_bits": 4, "kv_group_size": 64, "quantized_kv_start": 5000}),
        (
            ["--kv-bits", "8", "--kv-group-size", "32", "--quantized-kv-start", "0"],
            {"kv_bits": 8, "kv_group_size": 32, "quantized_kv_start": 0},
        ),
        (["--adapter-path", "runs/adapters"], {"adapter_path": "runs/adapters"}),
    ],
)
def test_cli_engine_options(arguments: list[str], options: dict[str, Any]) -> None:
    from mlxnb._server.cli import _parser, engine_options

    assert engine_options(_parser().parse_args(["serve", *arguments])) == options


def test_cli_refuses_adapters_for_several_models(capsys: pytest.CaptureFixture[str]) -> None:
    from mlxnb._server.cli import main

    assert main(["serve", "a", "b", "--adapter-path", "runs/adapters"]) == 2
    assert "--adapter-path applies to one model" in capsys.readouterr().err
