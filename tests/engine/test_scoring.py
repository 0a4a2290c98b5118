"""Scoring continuations without decoding: real mlx-lm, checked against one reference pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import pandas as pd
import pytest

import mlxnb
from mlxnb._engine.scoring import BATCH_TOKENS, _score_whole
from mlxnb.testing import tiny_vision_model

CONTEXT = "The capital of France is"
CONTINUATIONS = [" Paris", " Rome, said the guide with a smile", " a", " Paris"]


def reference(model_dir: Path, context: list[int], continuation: list[int]) -> float:
    """The continuation's log-likelihood from one forward pass over the whole sequence."""
    import mlx_lm

    model, _ = mlx_lm.load(str(model_dir))
    logits = model(mx.array([*context, *continuation])[None])[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(context) - 1
    return sum(float(logprobs[start + i, token].item()) for i, token in enumerate(continuation))


def test_scores_match_a_reference_forward_pass(engine: mlxnb.Engine, tiny_model_dir: Path) -> None:
    scores = engine.score(CONTEXT, CONTINUATIONS)
    tokenizer = engine.tokenizer
    context = tokenizer.encode(CONTEXT)
    for score, text in zip(scores, CONTINUATIONS, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert score.tokens == len(ids)
        assert score.logprob == pytest.approx(reference(tiny_model_dir, context, ids), abs=1e-3)
        assert score.logprob_per_token == pytest.approx(score.logprob / score.tokens)
    assert scores[0] == scores[3]  # the same continuation, in order


def test_the_greedy_continuation_is_flagged(engine: mlxnb.Engine) -> None:
    context = engine.tokenizer.encode(CONTEXT)
    turn = engine.generate([], prompt=context, max_tokens=4, temperature=0.0, logprobs=True)
    greedy = [entry.id for entry in turn.logprobs]
    other = [*greedy[:-1], (greedy[-1] + 1) % 1000]
    first, second = engine.score(context, [greedy, other])
    assert (first.greedy, second.greedy) == (True, False)
    assert first.logprob == pytest.approx(sum(e.logprob for e in turn.logprobs), abs=1e-3)
    assert second.logprob < first.logprob


async def test_many_continuations_split_into_batches_keep_their_order(
    engine: mlxnb.Engine,
) -> None:
    long = [f" option number {i} " + "and more words " * (20 + i) for i in range(20)]
    assert sum(len(engine.tokenizer.encode(text)) for text in long) > BATCH_TOKENS
    together = await engine.ascore(CONTEXT, long)
    picked = [0, 1, 10, 19]  # from the first batch and from later ones
    alone = [(await engine.ascore(CONTEXT, [long[i]]))[0] for i in picked]
    for batched, single in zip([together[i] for i in picked], alone, strict=True):
        assert batched.tokens == single.tokens
        assert batched.logprob == pytest.approx(single.logprob, abs=1e-3)


def test_the_uncached_path_agrees_with_the_shared_one(engine: mlxnb.Engine) -> None:
    tokenizer = engine.tokenizer
    context = tokenizer.encode(CONTEXT * 250)  # past BATCH_TOKENS: the shared-cache path
    assert len(context) > BATCH_TOKENS
    continuation = tokenizer.encode(CONTINUATIONS[1], add_special_tokens=False)
    (shared,) = engine.score(context, [continuation])
    backend = engine._worker.backend
    assert backend is not None
    whole = engine._worker.ask(lambda: _score_whole(backend.model, context, continuation), 30)
    assert whole.logprob == pytest.approx(shared.logprob, abs=1e-3)
    assert (whole.tokens, whole.greedy) == (shared.tokens, shared.greedy)


def test_a_one_token_context_works(engine: mlxnb.Engine) -> None:
    (score,) = engine.score([9707], [" world"])
    assert score.tokens >= 1 and score.logprob < 0


@pytest.mark.parametrize(
    ("context", "continuations", "match"),
    [
        ("", [" a"], "context"),
        ("Hi", [""], "continuation"),
        ("Hi", [], "continuation"),
        ([1, -2], [" a"], "token ids"),
    ],
)
def test_bad_input_is_refused(
    engine: mlxnb.Engine, context: Any, continuations: Any, match: str
) -> None:
    with pytest.raises(mlxnb.InvalidRequestError, match=match):
        engine.score(context, continuations)


def test_a_vision_model_refuses_scoring() -> None:
    with (
        mlxnb.load(tiny_vision_model(), audit=False) as vision,
        pytest.raises(mlxnb.InvalidRequestError, match="vision"),
    ):
        vision.score("Hi", [" there"])


@pytest.fixture
def audited(tiny_model_dir: Path, tmp_path: Path) -> Any:
    audit = mlxnb.AuditLog(tmp_path / "audit.sqlite3")
    with mlxnb.Engine(tiny_model_dir, audit=audit) as engine:
        yield engine, audit
    audit.close()


def test_each_scoring_call_is_one_audit_row(audited: Any) -> None:
    engine, audit = audited
    scores = engine.score(CONTEXT, CONTINUATIONS[:2])
    (row,) = audit.df.to_dict("records")
    assert (row["endpoint"], row["source"], row["status"]) == ("score", "python", "ok")
    assert row["model"] == engine.model_id and row["completion_tokens"] == 0
    recorded = json.loads(row["content"])
    assert [entry["logprob"] for entry in recorded] == [score.logprob for score in scores]
    assert [entry["tokens"] for entry in recorded] == [score.tokens for score in scores]
    assert json.loads(row["request"]) == {"context": CONTEXT, "continuations": CONTINUATIONS[:2]}
    read = len(engine.tokenizer.encode(CONTEXT)) + sum(score.tokens for score in scores)
    assert row["prompt_tokens"] == read


def test_a_refused_scoring_call_is_recorded_too(audited: Any) -> None:
    engine, audit = audited
    with pytest.raises(mlxnb.InvalidRequestError):
        engine.score(CONTEXT, [""])
    (row,) = audit.df.to_dict("records")
    assert (row["endpoint"], row["status"], row["error_type"]) == (
        "score",
        "error",
        "InvalidRequestError",
    )


def test_multiple_choice_rows_are_audited_under_their_run(audited: Any) -> None:
    engine, audit = audited
    questions = pd.DataFrame({"prompt": ["Pick one:"], "choices": [[" yes", " no"]]})
    frame = mlxnb.evaluate(questions, model=engine, choices="choices", progress=False)
    (row,) = audit.df.to_dict("records")
    assert (row["source"], row["run_id"]) == ("eval", frame.attrs["run_id"])
    assert json.loads(row["request"])["continuations"] == [" yes", " no"]


def test_a_scoring_row_is_not_replayed_as_chat(audited: Any) -> None:
    engine, audit = audited
    engine.score(CONTEXT, [" Paris"])
    with pytest.raises(mlxnb.InvalidRequestError, match="scoring call"):
        mlxnb.replay(audit.df, model=engine)
