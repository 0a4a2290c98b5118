"""Speculative decoding with a draft model: real mlx-lm models, output unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb.events import ContentDelta
from mlxnb.testing import forced_output, tiny_model, tiny_vision_model

STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
PLAIN = {"temperature": 0.0, "max_tokens": 64, "chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    with mlxnb.load(tiny_model_dir, audit=False, name="reference") as engine:
        yield engine


@pytest.fixture(scope="module", params=["itself", "another-model"])
def drafted(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    """The tiny model drafted for by a copy of itself, or by another random model."""
    draft = tiny_model_dir if request.param == "itself" else tiny_model(seed=7, hidden_size=32)
    with mlxnb.load(
        tiny_model_dir, audit=False, name=f"drafted-{request.param}", draft_model=draft
    ) as engine:
        yield engine


def test_draft_model_output_equals_plain_decoding(
    reference: mlxnb.Engine, drafted: mlxnb.Engine
) -> None:
    plain = reference.generate(STORY, **PLAIN)
    turn = drafted.generate(STORY, **PLAIN)
    assert (turn.content, turn.usage.completion_tokens) == (
        plain.content,
        plain.usage.completion_tokens,
    )
    assert turn.usage.draft_tokens > 0
    if drafted.model_id == "drafted-itself":
        # A model drafting for itself guesses every token (its cache follows every step).
        assert turn.usage.accepted_draft_tokens == turn.usage.draft_tokens


def test_prompt_lookup_and_the_draft_model_together(
    reference: mlxnb.Engine, drafted: mlxnb.Engine
) -> None:
    code = [{"role": "user", "content": "Copy: " + "x = compute(y, z)\n" * 6}]
    plain = reference.generate(code, **PLAIN)
    turn = drafted.generate(code, prompt_lookup=6, **PLAIN)
    assert turn.content == plain.content and turn.usage.draft_tokens > 0


async def test_a_drafted_request_joins_the_batch_when_another_arrives(
    reference: mlxnb.Engine, drafted: mlxnb.Engine
) -> None:
    alone = reference.generate(STORY, **PLAIN)
    pieces: list[str] = []
    second: asyncio.Task[mlxnb.Turn] | None = None
    async for event in drafted.stream(STORY, **PLAIN):
        if isinstance(event, ContentDelta):
            pieces.append(event.text)
            if len(pieces) == 5:
                force = forced_output(drafted.tokenizer, "second")
                second = asyncio.create_task(drafted.agenerate(STORY, logits_processors=[force]))
    assert second is not None
    assert "".join(pieces) == alone.content
    assert (await second).content == "second"


def test_a_stateful_processor_decodes_without_drafts(drafted: mlxnb.Engine) -> None:
    force = forced_output(drafted.tokenizer, "Exactly this.")
    turn = drafted.generate(STORY, logits_processors=[force])
    assert (turn.content, turn.usage.draft_tokens) == ("Exactly this.", 0)


@pytest.mark.parametrize(
    ("draft", "error", "match"),
    [
        (lambda: tiny_model(tokenizer="bpe"), mlxnb.ModelLoadError, "another tokenizer"),
        (lambda: "/nonexistent/draft", mlxnb.ModelNotFoundError, "draft"),
    ],
    ids=["other-tokenizer", "missing"],
)
def test_an_unusable_draft_model_fails_the_load(
    tiny_model_dir: Path, draft: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        mlxnb.Engine(tiny_model_dir, audit=False, draft_model=draft())


def test_vision_models_take_no_draft_model(tiny_model_dir: Path) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="text models only"):
        mlxnb.Engine(tiny_vision_model(), audit=False, draft_model=tiny_model_dir)


@pytest.mark.parametrize("count", [0, 65, 2.5])
def test_num_draft_tokens_is_checked(tiny_model_dir: Path, count: Any) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="num_draft_tokens"):
        mlxnb.Engine(tiny_model_dir, audit=False, num_draft_tokens=count)


@pytest.mark.parametrize("agree", [0, 1, 3, 4], ids=lambda n: f"{n}-drafts-agree")
def test_the_draft_model_s_cache_follows_the_sequence_after_rejections(
    tiny_model_dir: Path, agree: int
) -> None:
    """After drafts are rejected, it drafts exactly as a drafter fed the true sequence."""
    import mlx_lm

    from mlxnb._engine.speculative import ModelDrafter

    model, tokenizer = mlx_lm.load(str(tiny_model_dir))
    prompt = tokenizer.encode("The lighthouse keeper climbed the stairs")
    drafter = ModelDrafter(model, prefill_step=4)
    drafter.extend(prompt)
    first = drafter.draft(4)
    # The main model kept ``agree`` drafts, then chose a token of its own (never the draft's).
    chosen = (first[agree] + 1) % 1000 if agree < 4 else 17
    produced = [*first[:agree], chosen]
    drafter.extend(produced)
    fresh = ModelDrafter(model, prefill_step=4)
    fresh.extend([*prompt, *produced])
    assert drafter.draft(4) == fresh.draft(4)
