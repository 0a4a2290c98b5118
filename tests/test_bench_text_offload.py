"""bench.text_offload: both sides decode every token and the report carries each work size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.models import bench_model
from bench.text_offload import Decoder, main


def test_each_work_size_reports_both_sides_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "offload.json"
    main(
        [
            "--shape",
            "tiny",
            "--tokens",
            "8",
            "--pairs",
            "2",
            "--work",
            "0",
            "50",
            "--json",
            str(out),
        ]
    )

    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["work_0", "work_50"]
    for entry in results.values():
        figures = entry["figures"]
        assert figures["inline_tps"]["n"] == figures["thread_tps"]["n"] == 2
        assert figures["thread_vs_inline"]["median"] > 0
    assert results["work_50"]["figures"]["work_us"]["value"] > 0


@pytest.mark.parametrize("side", ["inline", "thread"])
def test_the_per_token_work_sees_every_token_in_order_on_either_side(side: str) -> None:
    decoder = Decoder(bench_model("tiny", "bfloat16"))
    detokenizer = decoder._tokenizer.detokenizer
    kind = type(detokenizer)
    original = kind.add_token
    seen: list[int] = []

    def counting(self: object, token: int) -> None:
        seen.append(token)
        original(self, token)

    kind.add_token = counting  # type: ignore[method-assign]
    try:
        decoder.run("inline", 6, 0)
        inline, seen[:] = list(seen), []
        decoder.run(side, 6, 0)
    finally:
        kind.add_token = original  # type: ignore[method-assign]
    assert len(seen) == 6
    assert seen == inline  # greedy: the same tokens whichever thread reads them
