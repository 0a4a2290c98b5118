"""Fields that change the answer are honoured or refused by name, never silently dropped."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

import mlxnb
from mlxnb._server.background import ServerHandle

HI = [{"role": "user", "content": "Hi"}]


def token_of(engine: mlxnb.Engine, text: str) -> int:
    (token,) = engine.tokenizer.encode(text, add_special_tokens=False)
    return int(token)


def test_logit_bias_is_honoured_in_python(engine: mlxnb.Engine) -> None:
    cat = token_of(engine, " cat")
    turn = engine.generate(HI, max_tokens=4, logit_bias={cat: 100})
    assert turn.usage.completion_tokens == 4 and turn.content.strip() == "cat cat cat cat"
    free = engine.generate(HI, max_tokens=4)
    assert free.content != turn.content


def test_logit_bias_is_honoured_over_http(client: openai.OpenAI, engine: mlxnb.Engine) -> None:
    cat = token_of(engine, " cat")
    reply = client.chat.completions.create(
        model=engine.model_id, messages=HI, max_tokens=3, logit_bias={str(cat): 100}
    )
    assert (reply.choices[0].message.content or "").strip() == "cat cat cat"
    completion = client.completions.create(
        model=engine.model_id, prompt="Hi", max_tokens=2, logit_bias={str(cat): 100}
    )
    assert completion.choices[0].text.strip() == "cat cat"


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [("logit_bias", {"7": 101}, 422), ("logit_bias", {"not-an-id": 1}, 422)],
)
def test_bad_logit_bias_is_refused(
    http: httpx.Client, chat_body: Any, field: str, value: Any, status: int
) -> None:
    response = http.post("/v1/chat/completions", json=chat_body("say:Hi", **{field: value}))
    assert response.status_code == status and field in response.json()["error"]["message"]


def test_a_logit_bias_past_the_vocabulary_is_a_400(http: httpx.Client, chat_body: Any) -> None:
    response = http.post("/v1/chat/completions", json=chat_body("Hi", logit_bias={"999999999": 5}))
    assert response.status_code == 400 and "vocabulary" in response.json()["error"]["message"]
    assert http.post("/v1/chat/completions", json=chat_body("say:ok")).status_code == 200


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        ("/v1/completions", {"suffix": " world"}, "suffix"),
        # other servers' fields that would change the answer (mlxnb._server.unserved)
        ("/v1/chat/completions", {"min_tokens": 5}, "min_tokens"),
        ("/v1/completions", {"ignore_eos": True}, "ignore_eos"),
        ("/v1/chat/completions", {"guided_json": {"type": "object"}}, "guided_json"),
        ("/v1/completions", {"stop_token_ids": [7]}, "stop_token_ids"),
        ("/v1/chat/completions", {"xtc_probability": 0.5}, "xtc_probability"),
        (
            "/v1/chat/completions",
            {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
            "functions",
        ),
        ("/v1/chat/completions", {"modalities": ["text", "audio"]}, "modalities"),
        ("/v1/chat/completions", {"add_generation_prompt": False}, "add_generation_prompt"),
    ],
)
def test_unsupported_fields_are_named(
    http: httpx.Client, model_id: str, path: str, extra: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {"model": model_id, "max_tokens": 2, **extra}
    body.update({"messages": HI} if "chat" in path else {"prompt": "Hi"})
    response = http.post(path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "unsupported_value"


@pytest.mark.parametrize(
    "extra",
    [
        {"ignore_eos": False, "min_tokens": 0, "skip_special_tokens": True},
        {"modalities": ["text"], "functions": []},
        {"user": "u1", "store": False, "some_future_field": 1},  # no effect on the answer
    ],
)
def test_fields_that_ask_for_nothing_are_accepted(
    http: httpx.Client, chat_body: Any, extra: dict[str, Any]
) -> None:
    response = http.post("/v1/chat/completions", json=chat_body("say:ok", **extra))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("effort", "thinks"), [("none", False), ("high", True)])
def test_reasoning_effort_turns_thinking_off_or_on(
    server: ServerHandle, engine: mlxnb.Engine, effort: str, thinks: bool
) -> None:
    body = {"model": engine.model_id, "messages": HI, "max_tokens": 1, "reasoning_effort": effort}
    response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    # The template renders the prompt differently: thinking off closes an empty think block.
    off = engine.generate(HI, max_tokens=1, chat_template_kwargs={"enable_thinking": False})
    on = engine.generate(HI, max_tokens=1, chat_template_kwargs={"enable_thinking": True})
    assert off.usage.prompt_tokens != on.usage.prompt_tokens
    expected = on if thinks else off
    assert response.json()["usage"]["prompt_tokens"] == expected.usage.prompt_tokens
