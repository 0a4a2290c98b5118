"""Vision models through the same engine: real mlx-vlm on the CPU, the offline Qwen3-VL fixture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlxnb
from mlxnb.events import ContentDelta, ThinkingDelta
from mlxnb.testing import forced_output, tiny_vision_model

NO_THINKING = {"enable_thinking": False}


@pytest.fixture(scope="module")
def vision_dir() -> Path:
    return tiny_vision_model()


@pytest.fixture(scope="module", params=["batched", "solo"])
def vision(vision_dir: Path, request: pytest.FixtureRequest) -> Iterator[mlxnb.Engine]:
    """The engine both ways a lone request can decode: in the batch, or on its own."""
    solo = request.param == "solo"
    with mlxnb.load(vision_dir, solo_fast_path=solo, audit=False) as shared:
        yield shared


def picture(seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def asking(text: str, *images: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def image_tokens(model_dir: Path, height: int, width: int) -> int:
    vision = json.loads((model_dir / "config.json").read_text())["vision_config"]
    patch, merge = vision["patch_size"], vision["spatial_merge_size"]
    return (height // patch) * (width // patch) // merge**2


def test_the_kind_is_read_from_the_config(vision: mlxnb.Engine, engine: mlxnb.Engine) -> None:
    assert (vision.kind, engine.kind) == ("vision", "text")


def test_an_image_adds_exactly_its_tokens_to_the_prompt(
    vision: mlxnb.Engine, vision_dir: Path
) -> None:
    options: dict[str, Any] = {"max_tokens": 1, "chat_template_kwargs": NO_THINKING}
    plain = vision.generate(asking("What is this?"), **options)
    seen = vision.generate(asking("What is this?", picture(0)), **options)
    # The placeholder is <|vision_start|><|image_pad|>*n<|vision_end|>.
    extra = seen.usage.prompt_tokens - plain.usage.prompt_tokens
    assert extra == image_tokens(vision_dir, 64, 96) + 2


async def test_a_stream_with_an_image_thinks_and_answers(vision: mlxnb.Engine) -> None:
    force = forced_output(vision.tokenizer, "<think>Red pixels.</think>A red square.")
    events = [
        event
        async for event in vision.stream(
            asking("What is this?", picture(1)), logits_processors=[force], max_tokens=32
        )
    ]
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert (thinking.strip(), content.strip()) == ("Red pixels.", "A red square.")


async def test_eight_mixed_requests_share_the_batch_without_cross_talk(
    vision: mlxnb.Engine,
) -> None:
    async def one(i: int) -> str:
        messages = asking(f"Question {i}", picture(i)) if i % 2 else asking(f"Question {i}")
        force = forced_output(vision.tokenizer, f"Answer number {i}.")
        turn = await vision.agenerate(
            messages,
            logits_processors=[force],
            max_tokens=24,
            temperature=0.7 if i % 3 else 0.0,
            chat_template_kwargs=NO_THINKING,
        )
        return turn.content

    answers = await asyncio.gather(*(one(i) for i in range(8)))
    assert answers == [f"Answer number {i}." for i in range(8)]


async def test_cancelling_a_vision_stream_stops_within_a_step(vision: mlxnb.Engine) -> None:
    calls = 0

    def counting(tokens: Any, logits: Any) -> Any:
        nonlocal calls
        calls += 1
        return logits

    stream = vision.stream(
        asking("Go on.", picture(2)), logits_processors=[counting], max_tokens=200
    )
    async for _ in stream:
        if calls >= 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    seen = calls
    await asyncio.sleep(0.3)
    assert calls <= seen + 1


async def test_a_second_image_in_a_later_turn(vision: mlxnb.Engine) -> None:
    chat = mlxnb.Conversation(vision, generation_options={"max_tokens": 4})
    first = await chat.ask("Look.", images=picture(3))
    second = await chat.ask("And now this one.", images=[picture(4, 64, 64)])
    assert first.finish_reason == second.finish_reason == "length"
    kinds = [[part["type"] for part in m["content"]] for m in chat.messages if m["role"] == "user"]
    assert kinds == [["image", "text"], ["image", "text"]]
    # Both images are in the second prompt: it is longer than the first by more than one image.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 4


def raw_mlx_vlm_answer(model_dir: Path, image: np.ndarray, tokens: int, step: int) -> str:
    import mlx_vlm
    from mlx_vlm.prompt_utils import apply_chat_template
    from PIL import Image

    model, processor = mlx_vlm.load(str(model_dir))
    prompt = apply_chat_template(
        processor, model.config, "What is it?", num_images=1, enable_thinking=False
    )
    pieces = mlx_vlm.stream_generate(
        model,
        processor,
        prompt,
        image=[Image.fromarray(image)],
        max_tokens=tokens,
        temperature=0.0,
        prefill_step_size=step,
    )
    return "".join(piece.text for piece in pieces)


@pytest.mark.parametrize("prefill_step", [8, 2048])
@pytest.mark.parametrize("solo", [True, False], ids=["solo", "batched"])
def test_greedy_tokens_are_raw_mlx_vlm_s(vision_dir: Path, solo: bool, prefill_step: int) -> None:
    # A prompt longer than one chunk once caught mlx-vlm's batch decoder slicing the deepstack
    # features out of step with the visual mask; the solo path must agree with raw at any chunk.
    image = picture(11)
    with mlxnb.load(
        vision_dir, solo_fast_path=solo, prefill_step=prefill_step, audit=False
    ) as engine:
        turn = engine.generate(
            asking("What is it?", image),
            max_tokens=12,
            temperature=0.0,
            chat_template_kwargs=NO_THINKING,
        )
    assert turn.usage.prompt_tokens > 16
    assert turn.content.strip() == raw_mlx_vlm_answer(vision_dir, image, 12, 2048).strip()


async def test_a_lone_stream_keeps_decoding_while_a_batch_forms_beside_it(
    vision_dir: Path,
) -> None:
    with mlxnb.load(vision_dir, solo_fast_path=True, audit=False) as engine:
        scripts = [f"Answer {i}: " + " ".join(["word"] * (30 - 8 * i)) + "." for i in range(3)]
        first_tokens = asyncio.Event()

        async def one(i: int, image: np.ndarray | None) -> str:
            if i:
                await first_tokens.wait()
            messages = asking(f"Q{i}", image) if image is not None else asking(f"Q{i}")
            force = forced_output(engine.tokenizer, scripts[i])
            text = ""
            async for event in engine.stream(
                messages, logits_processors=[force], max_tokens=64, chat_template_kwargs=NO_THINKING
            ):
                if isinstance(event, ContentDelta):
                    text += event.text
                    if i == 0 and len(text) > 10:
                        first_tokens.set()
            return text

        answers = await asyncio.gather(one(0, picture(12)), one(1, picture(13)), one(2, None))
    assert [a.strip() for a in answers] == scripts


def test_evaluate_runs_an_image_column(vision: mlxnb.Engine) -> None:
    frame = pd.DataFrame(
        {
            "prompt": ["What is this?"] * 4 + ["No picture."],
            "img": [picture(i) for i in range(4)] + [None],
        }
    )
    result = mlxnb.evaluate(frame, model=vision, images="img", progress=False, max_tokens=3)
    assert result["error"].isna().all() and (result["completion_tokens"] == 3).all()
    # The rows with an image have the longer prompt.
    prompt_tokens = result["prompt_tokens"].tolist()
    assert min(prompt_tokens[:4]) > prompt_tokens[4]


@pytest.mark.parametrize(
    "door", ["generate", "conversation", "evaluate"], ids=lambda door: f"{door}"
)
def test_a_text_model_refuses_images_in_every_door(engine: mlxnb.Engine, door: str) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="text-only model: it cannot see images"):
        if door == "generate":
            engine.generate(asking("What is this?", picture(5)))
        elif door == "conversation":
            asyncio.run(mlxnb.Conversation(engine).ask("What is this?", images=picture(5)))
        else:
            frame = pd.DataFrame({"prompt": ["What is this?"], "img": [picture(5)]})
            result = mlxnb.evaluate(frame, model=engine, images="img", progress=False)
            raise mlxnb.InvalidRequestError(str(result["error"].iloc[0]))


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("data:image/png;base64,bm90IGFuIGltYWdl", "image"),
        ("https://example.com/cat.png", "remote"),
        (np.zeros((10, 10, 7), dtype=np.uint8), "array"),
    ],
)
def test_unusable_images_are_refused_before_any_work(
    vision: mlxnb.Engine, image: Any, problem: str
) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match=problem):
        vision.generate(asking("What is this?", image), max_tokens=2)


def test_kind_can_be_forced_and_is_checked(vision_dir: Path) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="kind"):
        mlxnb.load(vision_dir, kind="audio", audit=False)


def test_the_audit_row_counts_and_hashes_the_images(vision_dir: Path, tmp_path: Path) -> None:
    audit = mlxnb.AuditLog(tmp_path / "audit.sqlite3")
    with mlxnb.load(vision_dir, audit=audit) as audited:
        audited.generate(asking("Two pictures.", picture(6), picture(7, 64, 64)), max_tokens=2)
        audited.generate(asking("None."), max_tokens=2)
    frame = audit.df
    assert frame["image_count"].tolist() == [2, 0]
    summaries = json.loads(frame["images"].iloc[0])
    assert [(s["width"], s["height"]) for s in summaries] == [(96, 64), (64, 64)]
    assert len({s["sha256"] for s in summaries}) == 2 and pd.isna(frame["images"].iloc[1])
    audit.close()


def test_a_repo_id_is_recognised_from_the_hub_cache(
    vision_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from mlxnb._engine.vision import model_kind

    snapshot = tmp_path / "models--org--some-vl" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((vision_dir / "config.json").read_text())
    (tmp_path / "models--org--some-vl" / "refs").mkdir()
    (tmp_path / "models--org--some-vl" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    # Offline, as CI is: the uncached id is not asked of the hub (that waits for a timeout).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert model_kind("org/some-vl") == "vision"
    assert model_kind("org/not-cached") == "text"  # offline: the text loader reports it


def test_counting_a_prompt_with_images_matches_the_request(vision: mlxnb.Engine) -> None:
    one, two = asking("Describe.", picture(1)), asking("Compare.", picture(1), picture(2, 32, 32))
    for messages in (one, two):
        turn = vision.generate(messages, max_tokens=1)
        assert vision.count_tokens(messages) == turn.usage.prompt_tokens
    assert vision.count_tokens(two) > vision.count_tokens(one)
