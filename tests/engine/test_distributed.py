"""A model sharded over two processes with MLX's ring backend, on loopback, under mlx.launch.

Each test starts ``mlx.launch --backend ring -n 2`` (two real processes, the tiny model split
tensor-parallel: 4 query and 2 key/value heads divide by 2) and compares with a single-process
engine on the same model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import mlxnb
from mlxnb._engine.lockstep import CLOSE, Lockstep, Tick, WireRequest, _warn_alone, join_group
from mlxnb._engine.request import Request, RequestMeta, SamplingOptions
from mlxnb._engine.sharding import sharding_plans
from mlxnb.errors import InvalidRequestError
from mlxnb.testing import tiny_model

SCRIPTS = Path(__file__).parent / "distributed_scripts"
LAUNCH = Path(sys.executable).parent / "mlx.launch"
PROMPTS = ["Tell me a story.", "Count to ten."]
RING_NOT_FORMED = "[ring] Couldn't connect"


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_ports(count: int) -> int:
    """A base port with ``count`` free ports above it (the ring listens on base + rank)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def launch(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``mlx.launch --backend ring -n 2 COMMAND`` on loopback, its output into ``log``."""
    ring = _free_ports(2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(LAUNCH), "--backend", "ring", "-n", "2", "-p", str(ring), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the test can end the launcher and both ranks at once
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def rank_pid(rank: int, marker: str) -> int:
    """The pid of the launched process of ``rank`` whose command line holds ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if f"MLX_RANK={rank}".encode() in environ and marker.encode() in cmdline:
            return int(entry.name)
    raise LookupError(f"no rank {rank} process with {marker!r}")


# -- the pieces, without launching ------------------------------------------------------------


@pytest.mark.parametrize(
    ("heads", "kv_heads", "size", "plans"),
    [
        (4, 2, 2, ["tensor", "pipeline"]),
        (8, 8, 4, ["tensor", "pipeline"]),
        (4, 2, 4, ["pipeline"]),  # 2 key/value heads cannot split four ways
        (3, 3, 2, ["pipeline"]),
    ],
)
def test_tensor_parallel_only_where_the_heads_divide(
    heads: int, kv_heads: int, size: int, plans: list[str]
) -> None:
    config = {"num_attention_heads": heads, "num_key_value_heads": kv_heads}
    assert sharding_plans(config, size) == plans


def _request(**options: Any) -> Request:
    from mlxnb._engine.delivery import SyncSink

    return Request(
        messages=[{"role": "user", "content": "hi"}],
        tools=None,
        enable_thinking=None,
        template_kwargs=None,
        options=SamplingOptions(**options),
        meta=RequestMeta(),
        request_id="r1",
        sink=SyncSink(),
    )


def test_a_request_travels_without_its_callers_sink_and_flag() -> None:
    request = _request(max_tokens=7, seed=3)
    request.cancel.set()
    copy = WireRequest.of(request).request()
    assert copy.request_id == "r1" and copy.options == request.options
    assert copy.sink is not request.sink and copy.sink.put([]) is True  # discarded
    assert not copy.cancel.is_set()  # cancellation reaches followers by tick only
    assert Tick() == Tick()  # an empty tick is recognised (sent as zero bytes)


def test_a_request_that_cannot_travel_is_refused_with_a_reason() -> None:
    def local_processor(tokens: Any, logits: Any) -> Any:
        return logits

    with pytest.raises(InvalidRequestError, match="cannot be sent to the other ranks"):
        WireRequest.of(_request(logits_processors=(local_processor,)))


def test_alone_in_its_group_the_model_loads_whole(caplog: pytest.LogCaptureFixture) -> None:
    _warn_alone.cache_clear()  # said once per process: an earlier test may have heard it
    with mlxnb.Engine(tiny_model(), distributed=True, audit=False) as engine:
        turn = engine.generate([{"role": "user", "content": "hi"}], max_tokens=3)
        assert turn.usage.completion_tokens > 0
        assert not engine.follows
    assert "alone in its group" in caplog.text


def test_a_lone_process_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    _warn_alone.cache_clear()
    # load() asks before the pool makes the engine, and the engine asks again.
    assert join_group() is None and join_group() is None
    assert caplog.text.count("alone in its group") == 1


class _FollowerSeat(Lockstep):
    """Rank 1 of 2 with no rank 0: shares nothing, and its turns bring no commands."""

    def __init__(self) -> None:
        self.group, self.rank, self.size, self.stream = None, 1, 2, None
        self.cancelled = self.expired = frozenset()

    def share(self, value: Any = None) -> Any:
        return 0 if value is None else value  # its own settings and plan; seed 0

    def start_heartbeat(self, on_lost: Any) -> None:
        pass

    closing = False

    def tick(self, tick: Tick | None) -> Tick:
        time.sleep(0.01)
        return Tick((CLOSE,)) if self.closing else Tick()


def test_a_followers_engine_refuses_requests_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlxnb._engine import engine as engine_module
    from mlxnb._engine.backend import load_text_model

    seat = _FollowerSeat()
    monkeypatch.setattr(engine_module, "join_group", lambda: seat)
    monkeypatch.setattr(engine_module, "load_sharded_text_model", lambda p, g: load_text_model(p))
    engine = mlxnb.Engine(tiny_model(), distributed=True, audit=False)
    assert engine.follows
    with pytest.raises(InvalidRequestError, match="not rank 0"):
        engine.generate([{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(InvalidRequestError, match="not rank 0"):
        engine.score("hi", [" there"])
    seat.closing = True  # rank 0 closes: the follower's loop ends
    assert engine.follow() == 0


# -- two ranks under mlx.launch ----------------------------------------------------------------


@pytest.fixture(scope="module")
def single_engine() -> Iterator[mlxnb.Engine]:
    with mlxnb.Engine(tiny_model(), audit=False) as engine:
        yield engine


def test_two_ranks_take_exactly_the_single_process_turns(
    single_engine: mlxnb.Engine, tmp_path: Path
) -> None:
    out, log = tmp_path / "rank0.json", tmp_path / "launch.log"
    script = SCRIPTS / "sharded_turns.py"
    for _ in range(2):  # MLX's ring gives up connecting when one rank starts slowly: once more
        process = launch([sys.executable, str(script), str(tiny_model()), str(out)], log)
        try:
            code = process.wait(240)
        finally:
            stop(process)
        output = log.read_text(errors="replace")
        if RING_NOT_FORMED not in output:
            break
    # mlx.launch names each rank that exits non-zero: none did (rank 1 left when rank 0 closed).
    assert code == 0 and "exited with code" not in output and out.exists(), output
    sharded = json.loads(out.read_text())
    expected = asyncio.run(_load_script("sharded_turns").turns(single_engine))
    assert sharded["rank"] == 0
    assert any(len(set(t["ids"])) > 3 for t in sharded["sampled"])  # varied tokens compared
    for key in ("greedy", "after_cancel", "scores"):
        assert sharded[key] == expected[key], key
    # At temperature 1 a random model's distribution is nearly flat, so the split matrix
    # products' different rounding can flip one draw to a neighbouring token (seen once in CI,
    # at the 24th of 24); a seed that did not reach the follower diverges at the first draw.
    for ours, single in zip(sharded["sampled"], expected["sampled"], strict=True):
        assert common_prefix(ours["ids"], single["ids"]) >= len(single["ids"]) // 2, (ours, single)


def common_prefix(left: list[int], right: list[int]) -> int:
    """How many leading tokens two sequences share."""
    return next(
        (i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
        min(len(left), len(right)),
    )


@pytest.fixture(scope="module")
def sharded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    folder = tmp_path_factory.mktemp("sharded")
    log = folder / "launch.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "mlxnb", "serve", str(tiny_model()), "--distributed"]
    process = launch([*command, "--port", str(port), "--log-level", "warning"], log)
    try:
        deadline = time.monotonic() + 180
        retried = False
        while not re.search(r"at (http://\S+/v1)", log.read_text(errors="replace")):
            if process.poll() is not None and not retried and RING_NOT_FORMED in log.read_text():
                retried = True  # MLX's ring gave up connecting while a rank started: once more
                process = launch([*command, "--port", str(port), "--log-level", "warning"], log)
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sharded server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        url = re.search(r"at (http://\S+/v1)", log.read_text()).group(1)  # type: ignore[union-attr]
        yield url, process, log
    finally:
        stop(process)


def _chat(client: openai.OpenAI, prompt: str, **options: Any) -> str:
    reply = client.chat.completions.create(
        model=tiny_model().name,
        messages=[{"role": "user", "content": prompt}],
        **{"max_tokens": 16, "temperature": 0.0, **options},
    )
    return reply.choices[0].message.content or ""


def _local(engine: mlxnb.Engine, prompt: str, **options: Any) -> str:
    turn = engine.generate(
        [{"role": "user", "content": prompt}], **{"max_tokens": 16, "temperature": 0.0, **options}
    )
    return turn.content


def test_rank_zero_serves_v1_cancels_on_every_rank_and_a_lost_rank_fails_clearly(
    sharded_server: tuple[str, Any, Path], single_engine: mlxnb.Engine
) -> None:
    url, process, log = sharded_server
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    with client:
        _serve_then_lose_a_rank(client, process, log, single_engine)


def _serve_then_lose_a_rank(
    client: openai.OpenAI, process: Any, log: Path, single_engine: mlxnb.Engine
) -> None:
    for prompt in PROMPTS:
        assert _chat(client, prompt) == _local(single_engine, prompt)

    # A stream broken off: rank 0 cancels it and tells rank 1 at the next step. Were rank 1
    # still decoding it, the next turn's collectives would pair with the wrong work.
    stream = client.chat.completions.create(
        model=tiny_model().name,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=4000,
        stream=True,
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    assert _chat(client, PROMPTS[1]) == _local(single_engine, PROMPTS[1])

    # Rank 1 killed mid-answer: the stream ends with an error naming the group, not a hang.
    marker = "--distributed"
    long_stream = client.chat.completions.create(
        model=tiny_model().name,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=30_000,
        stream=True,
    )
    started = time.monotonic()
    with pytest.raises(openai.APIError) as raised:
        for index, _chunk in enumerate(long_stream):
            if index == 3:
                os.kill(rank_pid(1, marker), signal.SIGKILL)

    assert time.monotonic() - started < 30
    assert "distributed group failed" in str(raised.value)
    # mlx.launch ends the remaining rank once one has died (its own status is 0 either way).
    process.wait(30)
    # Whichever notices first names the lost rank: our heartbeat, or MLX's ring itself (seen
    # when the machine is loaded).
    output = log.read_text(errors="replace")
    assert any(
        cause in output
        for cause in (
            "rank 1 closed its heartbeat connection",
            "[ring] connection to a peer was lost",
        )
    ), output
