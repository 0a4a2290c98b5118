"""bench.bookkeeping: both sides run on stubs that hand out the same text, and the stubs go away."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from mlx_lm import load

import mlxnb
from bench.bench_overhead import ENGINE_OPTIONS, PROMPT
from bench.bookkeeping import (
    TEXT,
    main,
    stubbed_generate_step,
    stubbed_solo_decoder,
    text_tokens,
)
from bench.models import bench_model
from mlxnb._engine.solo import SoloDecoder


def test_every_side_reports_its_cpu_per_token(tmp_path: Path) -> None:
    out = tmp_path / "bookkeeping.json"
    main(["--tokens", "300", "--repeats", "2", "--json", str(out)])

    figures = json.loads(out.read_text())["results"]["figures"]
    assert figures["raw_us"]["n"] == 2
    for consume in ("sync", "loop"):
        assert figures[f"{consume}_worker_us"]["median"] > 0
        overhead = figures[f"{consume}_overhead_us"]
        worker, raw = figures[f"{consume}_worker_us"]["values"], figures["raw_us"]["values"]
        assert overhead["values"] == [w - r for w, r in zip(worker, raw, strict=True)]


def test_the_stubs_write_the_same_text_on_both_sides_and_are_undone_after() -> None:
    import mlx_lm

    path = bench_model("nano", "bfloat16")
    model, tokenizer = load(str(path))
    cycle = text_tokens(tokenizer)
    generate = importlib.import_module("mlx_lm.generate")
    originals = (SoloDecoder.advance, generate.generate_step)
    tokens = 2 * len(cycle)
    engine = mlxnb.load(path, **ENGINE_OPTIONS)
    try:
        with stubbed_generate_step(cycle), stubbed_solo_decoder(cycle):
            prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
            responses = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens)
            raw = "".join(response.text for response in responses)
            turn = engine.generate(PROMPT, max_tokens=tokens)
    finally:
        engine.close()
    assert (SoloDecoder.advance, generate.generate_step) == originals
    assert raw.strip() == (2 * TEXT).strip()
    assert turn.content.strip() == raw.strip()
    assert turn.usage.completion_tokens == tokens
