"""A model pool behind /v1: listing, the allow-list, profiles and loading on first request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mlxnb import ModelPool, Profile, serve
from mlxnb._server.background import ServerHandle
from mlxnb.testing import tiny_model

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def paths() -> list[Path]:
    return [tiny_model(seed=seed) for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def pool(paths: list[Path]) -> Iterator[ModelPool]:
    pool = ModelPool(engine_options={"audit": False, "max_tokens": 4})
    pool.register(paths[0], name="alpha")
    pool.register(paths[1], name="beta")
    pool.add_profile(
        Profile("coder", "alpha", system="You write code.", sampling={"max_tokens": 2})
    )
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def server(pool: ModelPool) -> Iterator[ServerHandle]:
    with serve(pool) as handle:
        yield handle


@pytest.fixture
def client(server: ServerHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def test_models_lists_registered_models_and_profiles_with_their_state(
    client: openai.OpenAI, server: ServerHandle
) -> None:
    listed = client.models.list()
    assert [model.id for model in listed.data] == ["alpha", "beta", "coder"]
    cards = {card["id"]: card for card in httpx.get(f"{server.url}/models").json()["data"]}
    assert cards["beta"]["state"] in ("registered", "unloaded", "ready")
    assert cards["coder"]["profile"]["model"] == "alpha"
    assert cards["coder"]["profile"]["sampling"] == {"max_tokens": 2}
    assert not any(str(card).count("/root") or "/tmp" in str(card) for card in cards.values())


@pytest.mark.parametrize("model", ["gpt-4", "tiny-qwen3-xyz", "PATH"])
def test_an_unregistered_model_is_404_listing_what_is_available(
    client: openai.OpenAI, paths: list[Path], model: str
) -> None:
    asked = str(paths[2]) if model == "PATH" else model  # on disk, but never registered
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=asked, messages=HELLO)  # type: ignore[arg-type]
    body: Any = caught.value.body
    assert body["code"] == "model_not_found"
    assert "available: alpha, beta, coder" in body["message"]
    assert caught.value.response.status_code == 404


def test_a_profile_answers_under_its_name_with_its_defaults(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="coder", messages=HELLO)  # type: ignore[arg-type]
    assert reply.model == "coder"
    assert reply.usage is not None and reply.usage.completion_tokens <= 2
    plain = client.chat.completions.create(model="alpha", messages=HELLO)  # type: ignore[arg-type]
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens  # type: ignore[union-attr]


def test_model_state_is_reported_and_first_requests_wait_for_the_load(
    server: ServerHandle, pool: ModelPool
) -> None:
    pool.unload("beta") if pool.state("beta")["state"] == "ready" else None
    assert httpx.get(f"{server.url}/models/beta").json()["state"] in ("registered", "unloaded")

    async def ask_four() -> list[openai.types.chat.ChatCompletion]:
        async with openai.AsyncOpenAI(
            base_url=server.url, api_key="unused", max_retries=0, timeout=120
        ) as aclient:
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(model="beta", messages=HELLO)  # type: ignore[arg-type]
                    for _ in range(4)
                )
            )

    replies = asyncio.run(ask_four())
    assert [reply.model for reply in replies] == ["beta"] * 4
    card = httpx.get(f"{server.url}/models/beta").json()
    assert card["state"] == "ready" and card["kind"] == "text" and card["memory_bytes"] > 0
    assert httpx.get(f"{server.url}/models/nope").status_code == 404


def test_health_is_ok_while_models_wait_unloaded(server: ServerHandle) -> None:
    reply = httpx.get(server.url.removesuffix("/v1") + "/health")
    assert reply.status_code == 200 and reply.json()["status"] == "ok"


def test_models_in_the_hub_cache_are_listed_and_served_offline(
    paths: list[Path], tmp_path: Path
) -> None:
    from mlxnb.testing._fake_hub import cache_snapshot

    cache = tmp_path / "hub"
    cache_snapshot(cache, "mlx-community/tiny-cached", paths[2])
    pool = ModelPool(engine_options={"audit": False, "max_tokens": 2}, hf_cache=cache)
    try:
        with (
            serve(pool) as server,
            openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0) as client,
        ):
            assert [m.id for m in client.models.list().data] == ["mlx-community/tiny-cached"]
            reply = client.chat.completions.create(
                model="mlx-community/tiny-cached",
                messages=HELLO,  # type: ignore[arg-type]
            )
            assert reply.model == "mlx-community/tiny-cached"
    finally:
        pool.close()


@pytest.mark.parametrize("name", ["alpha", "coder"])
def test_counted_tokens_are_a_pooled_model_s_or_profile_s_own(
    client: openai.OpenAI, name: str
) -> None:
    counted = client.responses.input_tokens.count(model=name, input="hello")
    reply = client.chat.completions.create(model=name, messages=HELLO)  # type: ignore[arg-type]
    assert reply.usage is not None
    assert counted.input_tokens == reply.usage.prompt_tokens  # the profile's system prompt too


def test_a_profile_s_system_prompt_is_counted(client: openai.OpenAI) -> None:
    plain = client.responses.input_tokens.count(model="alpha", input="hello").input_tokens
    profiled = client.responses.input_tokens.count(model="coder", input="hello").input_tokens
    assert profiled > plain


async def test_a_profile_s_handle_counts_and_fits_with_its_system_prompt(pool: ModelPool) -> None:
    coder, alpha = pool.handle("coder"), pool.handle("alpha")
    assert await coder.afits_context(HELLO) and await alpha.afits_context(HELLO)
    engine = alpha.engine
    limit = engine.context_length
    assert isinstance(limit, int)
    room = limit - await coder.acount_tokens(HELLO)
    assert await coder.afits_context(HELLO, max_tokens=room)
    assert not await coder.afits_context(HELLO, max_tokens=room + 1)
