"""LoRA adapters (``adapter_path=``): the fine-tuned model answers, as mlx-lm's own loading does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx_lm
import pytest

import mlxnb
from mlxnb._engine.disk_cache import model_fingerprint
from mlxnb._engine.pool import ModelPool
from mlxnb.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from mlxnb.testing import tiny_adapter, tiny_model, tiny_vision_model

HI = [{"role": "user", "content": "Hi"}]
TOKENS = 12


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path) -> Path:
    return tiny_adapter(tiny_model_dir)


def mlx_lm_answer(model_dir: Path, adapters: Path) -> str:
    """The adapted model's greedy answer by mlx-lm alone (its load applies the adapters)."""
    model, tokenizer = mlx_lm.load(str(model_dir), adapter_path=str(adapters))
    prompt = tokenizer.apply_chat_template(HI, add_generation_prompt=True)
    return str(mlx_lm.generate(model, tokenizer, prompt, max_tokens=TOKENS))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, adapters: Path) -> str:
    return mlx_lm_answer(tiny_model_dir, adapters)


def test_dora_adapters_apply_too(tiny_model_dir: Path, reference: str) -> None:
    dora = tiny_adapter(tiny_model_dir, dora=True)
    with mlxnb.Engine(tiny_model_dir, adapter_path=dora, audit=False) as tuned:
        answer = tuned.generate(HI, max_tokens=TOKENS).content
    assert answer == mlx_lm_answer(tiny_model_dir, dora)
    assert answer != reference  # not the LoRA adapters' answer


@pytest.mark.parametrize("solo", [True, False])
def test_the_adapted_model_answers_as_mlx_lm_loads_it(
    tiny_model_dir: Path, adapters: Path, reference: str, solo: bool
) -> None:
    with (
        mlxnb.Engine(tiny_model_dir, audit=False, solo_fast_path=solo) as base,
        mlxnb.Engine(
            tiny_model_dir, adapter_path=adapters, audit=False, solo_fast_path=solo
        ) as tuned,
    ):
        answer = tuned.generate(HI, max_tokens=TOKENS)
        assert answer.content == reference
        # The adapters change the answer: the same engine without them says something else.
        assert base.generate(HI, max_tokens=TOKENS).content != reference


def test_the_name_and_the_audit_row_say_which_adapters(
    tiny_model_dir: Path, adapters: Path, tmp_path: Path
) -> None:
    with (
        mlxnb.AuditLog(tmp_path / "audit.sqlite3") as audit,
        mlxnb.Engine(tiny_model_dir, adapter_path=adapters, audit=audit) as tuned,
    ):
        assert tuned.model_id == f"{tiny_model_dir.name}+{adapters.name}"
        assert tuned.adapter_path == str(adapters)
        tuned.generate(HI, max_tokens=2)
        assert audit.df["model"].tolist() == [tuned.model_id]


def test_the_pool_keeps_base_and_adapted_models_apart(tiny_model_dir: Path, adapters: Path) -> None:
    pool = ModelPool(engine_options={"audit": False, "max_tokens": 4})
    try:
        base = pool.load(tiny_model_dir)
        tuned = pool.load(tiny_model_dir, adapter_path=adapters)
        assert tuned is not base
        assert pool.load(tiny_model_dir, adapter_path=adapters) is tuned
        assert sorted(pool.names()) == sorted([base.model_id, tuned.model_id])
        assert pool.engine(tuned.model_id) is tuned  # by name, as every door asks
    finally:
        pool.close()


def test_the_disk_cache_tells_adapters_apart(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Both folders have the name mlx_lm.lora gives them by default.
    first = tiny_adapter(tiny_model_dir, tmp_path / "run1" / "adapters", seed=1)
    second = tiny_adapter(tiny_model_dir, tmp_path / "run2" / "adapters", seed=2)
    name = "same-name"
    prints = {
        model_fingerprint(tiny_model_dir, name),
        model_fingerprint(tiny_model_dir, name, first),
        model_fingerprint(tiny_model_dir, name, second),
    }
    assert len(prints) == 3


@pytest.mark.parametrize(
    ("folder", "error", "words"),
    [
        ("missing", ModelNotFoundError, "the folder does not exist"),
        ("empty", ModelNotFoundError, "adapter_config.json, adapters.safetensors missing"),
        ("other-shape", ModelLoadError, "could not apply the adapters"),
    ],
)
def test_adapters_that_cannot_apply_are_refused_clearly(
    tiny_model_dir: Path, tmp_path: Path, folder: str, error: type[Exception], words: str
) -> None:
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    if folder == "other-shape":  # adapters trained for a wider model
        tiny_adapter(tiny_model(hidden_size=32, intermediate_size=64), path)
    with pytest.raises(error, match=words):
        mlxnb.Engine(tiny_model_dir, adapter_path=path, audit=False)


@pytest.mark.parametrize("options", [{"kind": "vision"}, {"distributed": True}])
def test_adapters_refused_where_they_are_not_served(
    adapters: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if options.get("distributed"):
        from mlxnb._engine import engine as engine_module

        # As a rank of an mlx.launch group sees it: refused before anything loads.
        monkeypatch.setattr(engine_module, "join_group", lambda: object())
        model: Path = tiny_model()
    else:
        model = tiny_vision_model()
    with pytest.raises(InvalidRequestError, match="adapter_path"):
        mlxnb.Engine(model, adapter_path=adapters, audit=False, **options)


@pytest.fixture
def served(tiny_model_dir: Path, adapters: Path) -> Iterator[Any]:
    with (
        mlxnb.Engine(tiny_model_dir, adapter_path=adapters, audit=False) as tuned,
        mlxnb.serve(tuned) as server,
    ):
        yield tuned, server


def test_the_adapted_model_is_served_by_its_name(served: Any, reference: str) -> None:
    import openai

    tuned, server = served
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == [tuned.model_id]
        reply = client.chat.completions.create(
            model=tuned.model_id, messages=HI, max_tokens=TOKENS, temperature=0
        )
        assert reply.model == tuned.model_id
        assert reply.choices[0].message.content == reference
        with pytest.raises(openai.BadRequestError, match="adapter_path"):
            client.chat.completions.create(
                model=tuned.model_id, messages=HI, extra_body={"adapters": "other"}
            )
