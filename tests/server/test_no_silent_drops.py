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


def _body(path: str, model_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A small request to ``path`` with ``extra`` fields."""
    if path == "/v1/responses":
        return {"model": model_id, "input": "Hi", "max_output_tokens": 2, **extra}
    body: dict[str, Any] = {"model": model_id, "max_tokens": 2, **extra}
    body.update({"prompt": "Hi"} if path == "/v1/completions" else {"messages": HI})
    return body


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        # the Responses and Messages APIs have no such fields; the chat route serves some
        ("/v1/responses", {"seed": 7}, "seed"),
        ("/v1/responses", {"stop": ["."]}, "stop"),
        ("/v1/responses", {"max_tokens": 5}, "max_tokens"),
        ("/v1/responses", {"min_tokens": 5}, "min_tokens"),
        ("/v1/responses", {"context_management": [{"type": "compaction"}]}, "context_management"),
        ("/v1/messages", {"stop": ["."]}, "stop"),
        ("/v1/messages", {"repetition_penalty": 1.3}, "repetition_penalty"),
        ("/v1/messages", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/messages", {"container": "container_1"}, "container"),
        ("/v1/messages", {"mcp_servers": [{"type": "url", "url": "http://x"}]}, "mcp_servers"),
    ],
)
def test_fields_other_apis_take_are_named_on_responses_and_messages(
    http: httpx.Client, model_id: str, path: str, extra: dict[str, Any], field: str
) -> None:
    response = http.post(path, json=_body(path, model_id, extra))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{field}: ")
    if path == "/v1/responses":
        assert error["param"] == field and error["code"] == "unsupported_value"


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/v1/responses", {"seed": None, "n": 1, "logprobs": False, "prompt_cache_key": "k"}),
        ("/v1/responses", {"include": ["reasoning.encrypted_content"], "safety_identifier": "s"}),
        ("/v1/messages", {"stop": [], "min_p": 0, "inference_geo": "us", "speed": "standard"}),
    ],
)
def test_responses_and_messages_accept_what_asks_for_nothing(
    http: httpx.Client, model_id: str, path: str, extra: dict[str, Any]
) -> None:
    response = http.post(path, json=_body(path, model_id, extra))
    assert response.status_code == 200, response.text


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


def test_the_sdks_see_the_refusal_name_the_field(
    client: openai.OpenAI, server: ServerHandle, model_id: str
) -> None:
    import anthropic

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model_id, input="Hi", extra_body={"seed": 7})
    assert refused.value.param == "seed"
    base = server.url.removesuffix("/v1")
    with (
        anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as claude,
        pytest.raises(anthropic.BadRequestError) as named,
    ):
        claude.messages.create(
            model=model_id, max_tokens=2, messages=HI, extra_body={"stop": ["."]}
        )
    assert isinstance(named.value.body, dict)
    assert named.value.body["error"]["message"] == "stop: use stop_sequences"
