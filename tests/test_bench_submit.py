"""bench_submit: both sides run on the real engine, and the engine is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bench_submit import main
from mlxnb._engine.engine import Engine


def test_both_submissions_reach_a_first_token_and_the_engine_is_restored(tmp_path: Path) -> None:
    submit_off_loop = Engine._submit_off_loop
    out = tmp_path / "submit.json"
    main(["--pairs", "2", "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    for run in results["runs"]:
        assert run["helper_thread"] > 0 and run["on_loop"] > 0
    differences = results["figures"]["difference"]["values"]
    assert differences == [run["helper_thread"] - run["on_loop"] for run in results["runs"]]
    assert Engine._submit_off_loop is submit_off_loop
