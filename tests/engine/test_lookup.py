"""Prompt-lookup decoding: n-gram drafts checked by the real model, output unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxnb
from mlxnb._engine.lookup import NgramIndex
from mlxnb.events import ContentDelta
from mlxnb.testing import forced_output

CODE = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n" * 3
COPY = [{"role": "user", "content": "Repeat this code exactly:\n" + CODE}]
HI = [{"role": "user", "content": "hi"}]
PLAIN = {"temperature": 0.0, "chat_template_kwargs": {"enable_thinking": False}}


@pytest.mark.parametrize(
    ("tokens", "count", "draft"),
    [
        ([1, 2, 3, 9, 1, 2, 3], 3, [9, 1, 2]),  # the trigram 1 2 3 was followed by 9
        ([5, 6, 7, 5, 6, 8, 4, 5, 6], 2, [8, 4]),  # the latest occurrence of 5 6 wins
        ([1, 2, 3, 4], 4, []),  # nothing repeats
        ([7, 7, 7], 5, [7, 7, 7, 7, 7]),  # a copy reaching the end goes on copying itself
        ([1, 2, 1, 2], 5, [1, 2, 1, 2, 1]),
        ([1, 2, 3, 1, 2], 0, []),
    ],
)
def test_the_index_drafts_what_followed_the_suffix(
    tokens: list[int], count: int, draft: list[int]
) -> None:
    assert NgramIndex(tokens).draft(count) == draft


def test_the_index_learns_tokens_as_they_come() -> None:
    index = NgramIndex([4, 5, 6, 7])
    assert index.draft(2) == []
    index.extend([4, 5])
    assert index.draft(2) == [6, 7]


@pytest.fixture(scope="module")
def lookup_engine(tiny_model_dir: Path) -> Iterator[mlxnb.Engine]:
    audit = mlxnb.AuditLog(":memory:")
    with mlxnb.load(tiny_model_dir, audit=audit) as engine:
        yield engine
    audit.close()


def answer(engine: mlxnb.Engine, messages: list[dict[str, Any]], **options: Any) -> mlxnb.Turn:
    return engine.generate(messages, **{**PLAIN, **options})


@pytest.mark.parametrize(
    "options",
    [{}, {"repetition_penalty": 1.3}, {"logit_bias": {16: 5.0}}, {"stop": ["b\n"]}],
    ids=["greedy", "repetition-penalty", "logit-bias", "stop-string"],
)
@pytest.mark.parametrize("messages", [COPY, HI], ids=["copying", "short"])
def test_drafts_leave_the_greedy_output_unchanged(
    lookup_engine: mlxnb.Engine, messages: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    plain = answer(lookup_engine, messages, max_tokens=96, **options)
    drafted = answer(lookup_engine, messages, max_tokens=96, prompt_lookup=8, **options)
    assert (drafted.content, drafted.finish_reason) == (plain.content, plain.finish_reason)
    assert drafted.usage.completion_tokens == plain.usage.completion_tokens
    assert plain.usage.draft_tokens == 0
    if messages is COPY and not options:
        # The random model repeats itself: most drafts hold, each saving a model call.
        assert drafted.usage.accepted_draft_tokens > drafted.usage.completion_tokens // 2
        assert 0.5 < (drafted.usage.draft_acceptance or 0) <= 1


@pytest.mark.parametrize("max_tokens", [1, 2, 7, 33])
def test_drafts_never_run_past_max_tokens(lookup_engine: mlxnb.Engine, max_tokens: int) -> None:
    turn = answer(lookup_engine, COPY, max_tokens=max_tokens, prompt_lookup=16)
    assert (turn.usage.completion_tokens, turn.finish_reason) == (max_tokens, "length")
    assert turn.usage.draft_tokens <= max(max_tokens - 1, 0) * 16


def test_a_processor_with_state_turns_drafts_off(lookup_engine: mlxnb.Engine) -> None:
    # A rejected draft would have advanced the script: the request decodes without drafts.
    script = "add add add add add add add add."
    force = forced_output(lookup_engine.tokenizer, script)
    turn = answer(lookup_engine, COPY, prompt_lookup=8, logits_processors=[force])
    assert (turn.content, turn.usage.draft_tokens) == (script, 0)


class Prefer:
    """A logits processor that only reads its arguments, and says so."""

    stateless = True

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        chosen = mx.arange(logits.shape[-1]) == self.token
        return mx.where(chosen, logits + 30.0, logits)


def test_a_stateless_processor_keeps_drafts_on(lookup_engine: mlxnb.Engine) -> None:
    (token,) = lookup_engine.tokenizer.encode(" add", add_special_tokens=False)
    options = {"max_tokens": 32, "logits_processors": [Prefer(token)]}
    plain = answer(lookup_engine, COPY, max_tokens=32)
    without = answer(lookup_engine, COPY, **options)
    drafted = answer(lookup_engine, COPY, prompt_lookup=8, **options)
    assert without.content != plain.content and "add" in without.content  # it applies...
    assert drafted.content == without.content  # ...at every drafted position too
    assert drafted.usage.draft_tokens > 0


async def test_a_drafting_request_joins_the_batch_when_another_arrives(
    lookup_engine: mlxnb.Engine,
) -> None:
    alone = answer(lookup_engine, COPY, max_tokens=80, prompt_lookup=8)
    pieces: list[str] = []
    second: asyncio.Task[mlxnb.Turn] | None = None
    async for event in lookup_engine.stream(COPY, max_tokens=80, prompt_lookup=8, **PLAIN):
        if isinstance(event, ContentDelta):
            pieces.append(event.text)
            if len(pieces) == 10:
                script = "second answer"
                force = forced_output(lookup_engine.tokenizer, script)
                second = asyncio.create_task(
                    lookup_engine.agenerate(HI, logits_processors=[force], **PLAIN)
                )
    assert second is not None
    assert "".join(pieces) == alone.content
    assert (await second).content == "second answer"


def test_the_audit_row_records_the_drafts(lookup_engine: mlxnb.Engine) -> None:
    turn = answer(lookup_engine, COPY, max_tokens=40, prompt_lookup=4)
    assert lookup_engine.audit is not None
    row = lookup_engine.audit.df.iloc[-1]
    assert (row["draft_tokens"], row["accepted_draft_tokens"]) == (
        turn.usage.draft_tokens,
        turn.usage.accepted_draft_tokens,
    )
    assert turn.usage.draft_tokens > 0
    assert '"prompt_lookup": 4' in row["sampling"]


@pytest.mark.parametrize("bad", [-1, 65, 2.5])
def test_a_bad_prompt_lookup_is_refused(lookup_engine: mlxnb.Engine, bad: Any) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match="prompt_lookup"):
        answer(lookup_engine, HI, prompt_lookup=bad)
