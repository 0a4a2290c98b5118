"""bench_env: one warm process per MLX setting, rounds alternating, ratios to the defaults."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from bench.bench_env import main, parse_setting, ratio


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MLX_MAX_OPS_PER_BUFFER=100", {"MLX_MAX_OPS_PER_BUFFER": "100"}),
        ("A=1,B=", {"A": "1", "B": ""}),
    ],
)
def test_a_setting_names_one_or_more_variables(text: str, expected: dict[str, str]) -> None:
    assert parse_setting(text) == expected


@pytest.mark.parametrize("text", ["", "A", "=1", "A=1,B"])
def test_a_malformed_setting_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_setting(text)


@pytest.mark.parametrize(("side", "prompt_tokens"), [("raw", "0"), ("engine", "40")])
def test_each_setting_runs_in_its_own_process_every_round(
    tmp_path: Path, side: str, prompt_tokens: str
) -> None:
    out = tmp_path / "env.json"
    # A variable this process does not have, so only the second child can see it.
    setting = "MLXNB_BENCH_ENV_PROBE=1"
    argv = ["--set", setting, "--rounds", "2", "--tokens", "4", "--warmup", "0"]
    argv += ["--side", side, "--prompt-tokens", prompt_tokens, "--dtype", "float32"]

    main([*argv, "--json", str(out)])

    results = json.loads(out.read_text())["results"]
    assert results["environments"] == {
        "defaults": {"MLXNB_BENCH_ENV_PROBE": None},
        setting: {"MLXNB_BENCH_ENV_PROBE": "1"},
    }
    if side == "engine":
        assert results["prompt_tokens"] == {"defaults": 40, setting: 40}
    figures = results["figures"]
    assert list(figures) == ["defaults", setting]
    for side in figures.values():
        for metric in ("tokens_per_s", "ttft_s", "peak_gb"):
            assert len(side[metric]["values"]) == 2
            assert all(value > 0 for value in side[metric]["values"])
        assert all(value >= 0 for value in side["cache_gb"]["values"])
    assert figures["defaults"]["ttft_s_vs_defaults"]["values"] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("value", "base", "expected"), [(3.0, 2.0, 1.5), (0.0, 0.0, 1.0), (1.0, 0.0, math.inf)]
)
def test_a_ratio_to_an_empty_cache_is_defined(value: float, base: float, expected: float) -> None:
    assert ratio(value, base) == expected


def test_without_a_setting_there_is_nothing_to_compare() -> None:
    with pytest.raises(SystemExit):
        main([])
