"""bench_overhead --instructions: callgrind's per-thread files read back, per-token arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_overhead import RAW, main, other_threads, per_token, round_order
from bench.callgrind import thread_counts


def profile(path: Path, thread: int, total: int, functions: str = "") -> None:
    """A callgrind output file of one thread (the parts the bench reads)."""
    path.write_text(
        "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\n"
        f"cmd:  python -c os_getsid os_getpgid\npart: 1\nthread: {thread}\n"
        f"events: Ir\nsummary: 0\n\nfl=(1) x.c\n{functions}\ntotals: {total}\n"
    )


def test_threads_are_named_by_the_mark_they_called(tmp_path: Path) -> None:
    out = tmp_path / "engine-16-0"
    out.write_text("")  # callgrind's own, empty
    profile(tmp_path / "engine-16-0-01", 1, 100, "fn=(7) os_getsid\n0 3\n")
    profile(tmp_path / "engine-16-0-03", 3, 5000)
    profile(tmp_path / "engine-16-0-04", 4, 300, "cfn=(9) os_getpgid\ncalls=1 0\n0 8\n")
    profile(tmp_path / "engine-16-0-05", 5, 0)
    profile(tmp_path / "engine-16-00-01", 1, 1)  # another run's file: not this one's
    counts = thread_counts(out)
    assert counts == {"main": 100, "thread-03": 5000, "worker": 300}


def test_per_token_is_the_difference_of_two_runs() -> None:
    short = {"tokens": 16, "total": 1_000, "threads": {"main": 600, "thread-03": 400}}
    long = {"tokens": 80, "total": 7_400, "threads": {"main": 3_800, "thread-03": 3_600}}
    assert per_token(short, long) == 100.0
    assert per_token(short, long, "main") == 50.0
    assert per_token(short, long, "worker") == 0.0
    assert other_threads(long) == 3_600


def test_the_long_run_must_be_longer() -> None:
    with pytest.raises(SystemExit):
        main(["--instructions", "--tokens", "8", "--short-tokens", "8"])


def test_timed_pairs_report_the_a_a_and_sync_sides(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"

    sides = ["--raw-on-thread", "--sync-consumer"]
    main(["--pairs", "1", "--tokens", "4", *sides, "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    for side in (results, results["sync_consumer"], results["raw_on_thread"]):
        assert side["figures"]["engine_vs_raw"]["values"][0] > 0
        assert side["runs"][0]["engine_tokens"] == 4  # the call to the last token
    assert results["raw_on_thread"]["figures"]["consumer_cpu_us"]["values"] == [0.0]
    # The notifier hands both consumers their events (at least the end); raw has none.
    for side in (results, results["sync_consumer"]):
        assert side["runs"][0]["engine_notifier_cpu_s"] > 0
    assert results["raw_on_thread"]["runs"][0]["engine_notifier_cpu_s"] == 0
    # Each side is also compared with the A/A side of its own round (not A/A with itself).
    (aa,) = results["raw_on_thread"]["runs"]
    for side in (results, results["sync_consumer"]):
        (run,) = side["runs"]
        ratio = (run["engine_tokens"] / run["engine_wall_s"]) / (
            aa["engine_tokens"] / aa["engine_wall_s"]
        )
        assert side["figures"]["engine_vs_aa"]["values"] == [pytest.approx(ratio)]
    assert "engine_vs_aa" not in results["raw_on_thread"]["figures"]


@pytest.mark.parametrize("sides", [["engine"], ["engine", "sync"], ["engine", "sync", "aa"]])
def test_every_side_runs_before_raw_as_often_as_after(sides: list[str]) -> None:
    rounds = [round_order(index, sides) for index in range(4 * len(sides))]

    for order in rounds:
        assert sorted(order) == sorted([RAW, *sides])
    for side in sides:
        before = sum(order.index(side) < order.index(RAW) for order in rounds)
        assert before == len(rounds) // 2
        assert {order.index(side) for order in rounds} == set(range(len(sides) + 1))


def test_every_delivery_variant_runs_and_reports_its_deliveries(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    variants = [
        "--no-yield",
        "--direct-wakeups",
        "--coalesced-direct",
        "--eager-wakeups",
        "--yield-at-most",
        "2",
    ]
    main(["--pairs", "1", "--tokens", "4", *variants, "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    names = ("no_yield", "direct_wakeups", "coalesced_direct", "eager_wakeups", "yield_at_most")
    for side in (results, *(results[name] for name in names)):
        run = side["runs"][0]
        assert run["engine_tokens"] == 4
        assert 1 <= run["engine_deliveries"] <= 5  # four tokens and the end, at most
        assert run["engine_yield_timeouts"] <= run["engine_yields"]
        # The same greedy tokens: the same text, in as many pieces.
        assert run["engine_text_head"] == run["raw_text_head"] != ""
        assert run["engine_text_pieces"] == run["raw_text_pieces"] >= 1
    # The worker itself woke the loop: no notifier thread took the GIL.
    assert results["coalesced_direct"]["runs"][0]["engine_notifier_cpu_s"] == 0


def test_a_quiet_consumer_is_handed_only_the_end_and_the_intervals_apply(
    tmp_path: Path,
) -> None:
    out = tmp_path / "overhead.json"
    variants = ["--quiet-consumer", "--wake-interval", "50", "--switch-interval", "200"]
    interval = sys.getswitchinterval()
    main(["--pairs", "1", "--tokens", "6", *variants, "--json", str(out)])
    assert sys.getswitchinterval() == interval  # the run's interval is put back

    results = json.loads(out.read_text())["results"]
    assert results["switch_interval_s"] == pytest.approx(200e-6)
    quiet = results["quiet_consumer"]["runs"][0]
    assert quiet["engine_tokens"] == 6
    assert quiet["engine_deliveries"] == 1  # the end alone, with its last token's text
    assert quiet["engine_text_pieces"] <= 1 < quiet["raw_text_pieces"]
    slow = results["wake_interval"]["runs"][0]
    assert slow["engine_tokens"] == 6
    # At most one wake-up per 50 ms, besides the first token's batch and the end (both sent
    # at once): six tokens usually come within 50 ms, but a loaded machine may take longer.
    assert 1 <= slow["engine_deliveries"] <= 2 + slow["engine_wall_s"] / 0.050
    assert slow["engine_text_head"] == slow["raw_text_head"] != ""


def test_gaps_time_each_sides_python_between_model_calls(tmp_path: Path) -> None:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    add_token = BPEStreamingDetokenizer.add_token
    out = tmp_path / "gaps.json"
    main(["--pairs", "2", "--tokens", "6", "--gaps", "--raw-on-thread", "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    for side in (results, results["raw_on_thread"]):
        for run in side["runs"]:
            # Python only: a wait that held a step's compute (the device's turn) would be a
            # sixth of the run, not a twentieth.
            assert 0 < run["raw_gap_s"] < run["raw_wall_s"] / 20
            assert 0 < run["engine_gap_s"] < run["engine_wall_s"] / 20
        assert "gap_overhead_us" in side["figures"]
    assert BPEStreamingDetokenizer.add_token is add_token  # the patch is undone


def test_a_traced_run_records_each_step_on_its_way_to_the_consumer(tmp_path: Path) -> None:
    """In a process of its own: the trace patches the engine's classes for good."""
    trace = tmp_path / "trace.jsonl"
    command = ["-m", "bench.bench_overhead", "--pairs", "1", "--tokens", "4"]
    subprocess.run(
        [sys.executable, *command, "--trace", str(trace), "--json", str(tmp_path / "o.json")],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    kinds = {json.loads(line)["what"] for line in trace.read_text().splitlines()}
    assert {"submit", "first", "flush", "wake", "hand_over", "take"} <= kinds
