"""bench.gil_release: the probe sees a step hand the GIL over and a pure-Python call never."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.gil_release import main


def test_a_step_lets_a_waiting_thread_run_and_pure_python_does_not(tmp_path: Path) -> None:
    interval = sys.getswitchinterval()
    out = tmp_path / "gil.json"
    main(["--calls", "40", "--json", str(out)])

    figures = json.loads(out.read_text())["results"]["figures"]
    assert figures["pure Python (control)"]["value"] == 0
    assert figures["async_eval, then item() (a step)"]["value"] > 0
    assert all(0 <= figure["value"] <= 40 for figure in figures.values())
    assert sys.getswitchinterval() == interval  # the probe puts the interval back
