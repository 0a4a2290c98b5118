"""The prompt cache for vision models: filed by image, served to lone requests, as cold answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlxnb
from mlxnb._engine.request import RequestMeta
from mlxnb._engine.vision import keyed_by_image
from mlxnb._images.load import load_image
from mlxnb._messages import normalize_messages
from mlxnb.testing import tiny_vision_model

PAD = 9
OPTIONS: dict[str, Any] = {
    "max_tokens": 8,
    "temperature": 0.0,
    "chat_template_kwargs": {"enable_thinking": False},
}


def picture(seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def asking(text: str, *images: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def test_each_image_s_placeholders_stand_for_its_digest() -> None:
    red, blue = load_image(picture(1)), load_image(picture(2))
    tokens = [1, 2, PAD, PAD, PAD, 3, PAD, PAD, 4]
    keyed = keyed_by_image(tokens, PAD, [red, blue])
    assert keyed is not None
    assert keyed[:2] == [1, 2] and keyed[5] == 3 and keyed[8] == 4
    assert len(set(keyed[2:5])) == 1 and len(set(keyed[6:8])) == 1
    assert keyed[2] < 0 and keyed[6] < 0 and keyed[2] != keyed[6]
    # The same images give the same key; another first image changes it from its first pad.
    assert keyed_by_image(tokens, PAD, [load_image(picture(1)), blue]) == keyed
    other = keyed_by_image(tokens, PAD, [blue, blue])
    assert other is not None and other[:2] == keyed[:2] and other[2] != keyed[2]


@pytest.mark.parametrize(
    ("tokens", "count"),
    [([1, PAD, PAD, 2], 2), ([1, PAD, 2, PAD, 3], 1), ([1, 2], 1)],
    ids=["one run for two images", "two runs for one image", "no run for an image"],
)
def test_placeholders_that_do_not_match_the_images_make_the_prompt_uncached(
    tokens: list[int], count: int
) -> None:
    assert keyed_by_image(tokens, PAD, [load_image(picture(i)) for i in range(count)]) is None


def test_a_prompt_without_images_is_keyed_by_its_tokens() -> None:
    assert keyed_by_image([1, 2, 3], PAD, []) == [1, 2, 3]
    assert keyed_by_image([1, 2, 3], None, []) == [1, 2, 3]


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen2_5_vl"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    return tiny_vision_model(arch=request.param)


def cold_answer(model_dir: Path, messages: list[dict[str, Any]]) -> str:
    with mlxnb.load(model_dir, audit=False) as cold:
        turn = cold.generate(messages, **OPTIONS)
    assert turn.usage.cached_tokens == 0
    return turn.content


def test_turns_about_an_image_are_served_from_the_cache_as_a_cold_engine_answers(
    model_dir: Path,
) -> None:
    first = asking("What is it?", picture(21))
    again_with_more = [
        *first,
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "What colour is it?"},
    ]
    another_image = asking("What is it?", picture(22))
    turns = [first, again_with_more, another_image]
    with mlxnb.load(model_dir, audit=False) as warm:
        image_tokens = warm.count_tokens(first) - warm.count_tokens(asking("What is it?"))
        warm.generate(first, **OPTIONS)
        served = [warm.generate(messages, **OPTIONS) for messages in turns]
    exact, longer, other = (turn.usage for turn in served)
    assert exact.cached_tokens == exact.prompt_tokens - 1  # all but the token whose logits it needs
    # Only a few template tokens come before the image: a hit longer than the image went past it.
    assert longer.cached_tokens > image_tokens
    # Another image at the same place: only the template's tokens before it are served.
    assert 0 < other.cached_tokens < other.prompt_tokens - image_tokens
    for messages, turn in zip(turns, served, strict=True):
        assert turn.content == cold_answer(model_dir, messages)


def test_batched_vision_requests_neither_take_nor_fill_the_cache(model_dir: Path) -> None:
    messages = asking("What is it?", picture(23))
    with mlxnb.load(model_dir, solo_fast_path=False, audit=False) as batched:
        turns = [batched.generate(messages, **OPTIONS) for _ in range(2)]
        stats = batched.memory()
    assert [turn.usage.cached_tokens for turn in turns] == [0, 0]
    assert stats.prompt_cache_entries == 0
    assert turns[1].content == turns[0].content


class CountingTower:
    """The model's own vision tower, counting its calls."""

    def __init__(self, tower: Any) -> None:
        self.tower = tower
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.tower(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tower, name)


def test_the_vision_tower_runs_only_for_images_the_cache_does_not_hold(model_dir: Path) -> None:
    image = picture(31)
    first = asking("What is it?", image)
    follow_up = [
        *first,
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "What colour is it?"},
    ]
    with mlxnb.load(model_dir, audit=False) as warm:
        model = warm._worker.backend.model
        tower = model.vision_tower = CountingTower(model.vision_tower)
        warm.count_tokens(follow_up)
        assert tower.calls == 0  # counting a prompt embeds nothing
        warm.generate(first, **OPTIONS)
        assert tower.calls == 1
        again = warm.generate(follow_up, **OPTIONS)
        assert tower.calls == 1  # the picture's KV came from the cache
        warm.generate(asking("What is it?", picture(32)), **OPTIONS)
        assert tower.calls == 2
    assert again.usage.cached_tokens > 0
    assert again.content == cold_answer(model_dir, follow_up)


@pytest.fixture(scope="module")
def qwen2_5_vl() -> Path:
    return tiny_vision_model(arch="qwen2_5_vl")


class RowCountingTower(CountingTower):
    """The vision tower, also counting the patches it was given."""

    def __init__(self, tower: Any) -> None:
        super().__init__(tower)
        self.patches = 0

    def __call__(self, pixels: Any, *args: Any, **kwargs: Any) -> Any:
        self.patches += pixels.shape[0]
        return super().__call__(pixels, *args, **kwargs)


def test_an_image_shown_again_does_not_go_through_the_tower_again(qwen2_5_vl: Path) -> None:
    """Batched requests (no prompt cache) about a picture, then one with a second picture: the
    tower sees each picture once, and every answer is a cold engine's."""
    old, new = picture(41), picture(42)  # one size: as many patches each
    questions = [asking(f"What is {n}?", old) for n in ("it", "this", "that")]
    both = asking("Which came first?", old, new)
    with mlxnb.load(qwen2_5_vl, solo_fast_path=False, audit=False) as warm:
        model = warm._worker.backend.model
        tower = model.vision_tower = RowCountingTower(model.vision_tower)
        answers = [warm.generate(messages, **OPTIONS).content for messages in questions]
        assert (tower.calls, len(warm._worker.backend.image_features)) == (1, 1)
        once = tower.patches
        mixed = warm.generate(both, **OPTIONS).content
        assert tower.calls == 2
        assert tower.patches == 2 * once  # the new picture's patches only
    assert answers == [cold_answer(qwen2_5_vl, messages) for messages in questions]
    assert mixed == cold_answer(qwen2_5_vl, both)


def test_kept_outputs_make_the_tower_s_output_for_the_whole_prompt(qwen2_5_vl: Path) -> None:
    """Per image, kept or not, the output is what the tower gives for all the images at once
    (mlx-vlm's own embedding), so a prompt's embedding does not depend on what was kept."""
    import mlx.core as mx

    from mlxnb._engine.image_features import ImageFeatures, tower_output

    messages = asking("Compare them.", picture(51), picture(52, height=96, width=64))
    with mlxnb.load(qwen2_5_vl, audit=False) as engine:
        backend = engine._worker.backend
        normalized = normalize_messages(messages, policy=engine._image_policy(RequestMeta()))

        def outputs() -> tuple[Any, ...]:  # on the worker, which owns MLX
            prompt = backend.render(normalized.messages, None, False, None, normalized.images)
            (inputs,) = prompt.generator_kwargs["prompt_kwargs"]
            model, grids = backend.model, inputs.extra["image_grid_thw"]
            dtype = model.vision_tower.patch_embed.proj.weight.dtype
            at_once = model.vision_tower(
                inputs.pixel_values.astype(dtype), grids, output_hidden_states=False
            )
            kept = ImageFeatures()
            fresh = tower_output(model, inputs.pixel_values, grids, inputs.digests, kept)
            again = tower_output(model, inputs.pixel_values, grids, inputs.digests, kept)
            return (
                (len(inputs.digests), grids.shape[0]),
                (fresh.shape, at_once.shape),
                mx.allclose(fresh, at_once, atol=1e-5).item(),
                mx.array_equal(again, fresh).item(),
            )

        counts, shapes, close, same = engine._worker.ask(outputs, 60.0)
    assert counts == (2, 2)
    assert shapes[0] == shapes[1]
    assert close and same


def test_a_failing_per_image_tower_falls_back_to_mlx_vlm_s_embedding(
    qwen2_5_vl: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen on the H200: the per-image call failed to build its CUDA graph. The request is
    then embedded as mlx-vlm embeds it, and outputs are no longer kept."""
    import mlxnb._engine.vision as vision

    def failing(*_: Any) -> Any:
        raise RuntimeError("cudaGraphAddKernelNode failed: invalid argument")

    monkeypatch.setattr(vision, "tower_output", failing)
    messages = asking("What is it?", picture(61))
    with mlxnb.load(qwen2_5_vl, audit=False) as engine:
        turns = [engine.generate(messages, **OPTIONS) for _ in range(2)]
        kept = engine._worker.backend.image_features
    assert kept.failure is not None and "invalid argument" in kept.failure
    assert len(kept) == 0
    assert "no longer kept" in caplog.text
    assert [turn.finish_reason for turn in turns] == ["length", "length"]
    assert turns[0].content == cold_answer(qwen2_5_vl, messages)


def test_kept_outputs_stay_within_their_bound() -> None:
    import mlx.core as mx

    from mlxnb._engine.image_features import ImageFeatures

    kept = ImageFeatures(max_bytes=3 * 4 * 10)  # three outputs of ten float32 values
    for name in "abcd":
        kept.put(name, mx.zeros(10))
    assert kept.get("a") is None and len(kept) == 3 and kept.nbytes == 120
    assert kept.get("b") is not None  # now the most recently used: "c" goes next
    kept.put("e", mx.zeros(10))
    assert kept.get("c") is None and kept.get("b") is not None
    kept.put("huge", mx.zeros(31))  # larger than the bound: not kept, nothing dropped
    assert kept.get("huge") is None and len(kept) == 3
