"""evaluate() over mlxnb.endpoints: three `mlxnb serve` processes, one killed mid-run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mlxnb
from mlxnb.testing import tiny_model

PROMPTS = [f"Tell me about the number {i}." for i in range(18)]
COMMAND = (sys.executable, "-m", "mlxnb", "serve")
SAMPLING: dict[str, Any] = {"max_tokens": 12, "temperature": 0.0}


class Server:
    """One `python -m mlxnb serve PATH --port 0` process; its URL read from its log."""

    def __init__(self, model: Path, log: Path) -> None:
        self.log = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [*COMMAND, str(model), "--port", "0", "--log-level", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.url = ""

    def wait(self, deadline: float) -> str:
        while not self.url:
            found = re.search(r"at (http://\S+/v1)", self.log.read_text())
            if found:
                self.url = found.group(1)
            elif self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log.read_text()}")
            else:
                time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    folder = tmp_path_factory.mktemp("servers")
    started = [Server(tiny_model(), folder / f"server{i}.log") for i in range(3)]
    try:
        deadline = time.monotonic() + 60
        for server in started:
            server.wait(deadline)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def local_frame() -> pd.DataFrame:
    """The same rows through one local engine: the reference."""
    with mlxnb.AuditLog(":memory:") as audit, mlxnb.load(tiny_model(), audit=audit) as engine:
        return mlxnb.evaluate(PROMPTS, model=engine, progress=False, **SAMPLING)


def test_fanned_out_rows_equal_one_engine_even_when_a_server_dies(
    servers: list[Server], local_frame: pd.DataFrame, tmp_path: Path
) -> None:
    name = tiny_model().name
    with mlxnb.AuditLog(":memory:") as audit:
        group = mlxnb.endpoints(
            [s.url for s in servers], model=name, max_concurrency=2, audit=audit
        )
        frame = mlxnb.evaluate(PROMPTS, model=group, progress=False, **SAMPLING)
        assert frame["error"].isna().all()
        assert list(frame["content"]) == list(local_frame["content"])
        assert set(frame.columns) == set(local_frame.columns)
        used = audit.to_pandas()["endpoint"].value_counts()
        assert set(used.index) == {s.url for s in servers}  # every server answered rows

        finished = 0

        def kill_after_three(row: Any) -> None:
            nonlocal finished
            finished += 1
            if finished == 3:
                servers[0].process.kill()  # rows in flight there break mid-answer

        checkpoint = tmp_path / "rows.jsonl"
        again = mlxnb.evaluate(
            PROMPTS,
            model=group,
            progress=False,
            checkpoint=checkpoint,
            scorers={"_": kill_after_three},
            **SAMPLING,
        )
        assert servers[0].process.wait(10) is not None
        assert again["error"].isna().all()
        assert list(again["content"]) == list(local_frame["content"])
        failed = audit.to_pandas().query("finish_reason == 'error'")
        assert len(failed) >= 1 and set(failed["endpoint"]) == {servers[0].url}
        assert servers[0].url not in group.alive

    # Resume from the checkpoint with every server gone: nothing left to ask.
    for server in servers:
        server.stop()
    gone = mlxnb.endpoints([s.url for s in servers], model=name, audit=False)
    resumed = mlxnb.evaluate(PROMPTS, model=gone, progress=False, checkpoint=checkpoint, **SAMPLING)
    assert list(resumed["content"]) == list(local_frame["content"])
    assert resumed.attrs["run_id"] == again.attrs["run_id"]
