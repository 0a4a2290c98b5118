"""``/v1/completions`` with a batch of prompts: one choice per prompt and sample, as OpenAI does.

Against the real server, engine and tiny model. ``say:TEXT`` prompts make the model emit exactly
``TEXT`` (see ``conftest.py``); other prompts decode freely, greedily with ``temperature: 0``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

import mlxnb
from mlxnb._server import completions as cp
from mlxnb._server import openai as oa
from mlxnb._server.background import ServerHandle
from mlxnb._server.response import Choices
from mlxnb._server.schemas import MAX_CHOICES, MAX_N, MAX_PROMPTS, CompletionRequest
from mlxnb.errors import InvalidRequestError
from mlxnb.events import (
    ContentDelta,
    Done,
    Event,
    ThinkingDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)

FREE = ["The capital of France is", "The capital of Italy is", "Hello, my name is"]
SPIN_TOKENS = 4000


@pytest.fixture
def complete(http: httpx.Client, model_id: str) -> Any:
    """POST ``/v1/completions`` with ``fields`` and return the response."""

    def post(**fields: Any) -> httpx.Response:
        return http.post("/v1/completions", json={"model": model_id, "max_tokens": 8, **fields})

    return post


def texts(body: dict[str, Any]) -> list[str]:
    assert [c["index"] for c in body["choices"]] == list(range(len(body["choices"])))
    return [c["text"] for c in body["choices"]]


def events_of(response: httpx.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    lines = [
        line.removeprefix("data: ")
        for line in response.text.splitlines()
        if line and not line.startswith(":")
    ]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture
def still_serves(complete: Any) -> Iterator[None]:
    yield
    response = complete(prompt=["say:still", "say:here"])
    assert response.status_code == 200, response.text
    assert texts(response.json()) == ["still", "here"]


# -- one choice per prompt ------------------------------------------------------------------


def test_each_prompt_gets_its_own_choice_in_order(complete: Any) -> None:
    answers = ["Paris.", "Rome, of course.", "Oslo"]
    response = complete(prompt=[f"say:{a}" for a in answers], max_tokens=16)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert texts(body) == answers
    assert [c["finish_reason"] for c in body["choices"]] == ["stop"] * 3


def test_batched_prompt_answers_as_if_asked_alone(complete: Any) -> None:
    alone = [texts(complete(prompt=p, temperature=0).json())[0] for p in FREE]
    assert len(set(alone)) > 1  # the prompts really lead to different answers
    batched = complete(prompt=FREE, temperature=0).json()
    assert texts(batched) == alone
    usages = [complete(prompt=p, temperature=0).json()["usage"] for p in FREE]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert batched["usage"][name] == sum(u[name] for u in usages)


def test_token_id_prompts_answer_as_their_text(complete: Any, engine: mlxnb.Engine) -> None:
    ids = [engine.tokenizer.encode(p) for p in FREE]
    as_text = complete(prompt=FREE, temperature=0).json()
    as_ids = complete(prompt=ids, temperature=0).json()
    assert texts(as_ids) == texts(as_text)
    assert as_ids["usage"]["prompt_tokens"] == sum(map(len, ids))
    one = complete(prompt=ids[1], temperature=0).json()  # a flat list is one prompt
    assert texts(one) == [texts(as_text)[1]]


def test_engine_takes_token_ids_as_they_are(engine: mlxnb.Engine) -> None:
    ids = engine.tokenizer.encode(FREE[0])
    by_text = engine.generate([], prompt=FREE[0], max_tokens=6)
    by_ids = engine.generate([], prompt=ids, max_tokens=6)
    assert (by_ids.content, by_ids.usage.prompt_tokens) == (by_text.content, len(ids))
    eos = min(engine.tokenizer.eos_token_ids)  # a special token: no text encodes to it alone
    assert engine.generate([], prompt=[*ids, eos], max_tokens=2).usage.prompt_tokens == len(ids) + 1


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [
        ([], "empty"),
        ([1, True], "integers"),
        ([1, 2.0], "integers"),
        ([-1], "integers"),
        ([10**9], "vocabulary"),
    ],
)
def test_engine_refuses_bad_token_ids(engine: mlxnb.Engine, prompt: Any, problem: str) -> None:
    with pytest.raises(InvalidRequestError, match=problem):
        engine.generate([], prompt=prompt, max_tokens=2)


# -- n, echo, best_of -----------------------------------------------------------------------


def test_n_gives_n_choices_per_prompt_in_openai_order(complete: Any) -> None:
    response = complete(prompt=["say:A one", "say:B two"], n=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert texts(body) == ["A one", "A one", "B two", "B two"]  # index = prompt * n + sample
    single = [complete(prompt=p).json()["usage"] for p in ("say:A one", "say:B two")]
    # As OpenAI counts n: every sample's completion, each prompt once.
    assert body["usage"]["completion_tokens"] == 2 * sum(u["completion_tokens"] for u in single)
    assert body["usage"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in single)


def test_seeded_samples_differ(complete: Any) -> None:
    body = complete(prompt=FREE[0], n=4, temperature=1.5, seed=7, max_tokens=6).json()
    assert len(set(texts(body))) > 1


def test_samples_get_distinct_reproducible_seeds() -> None:
    request = CompletionRequest.model_validate(
        {"model": "m", "prompt": ["a", "b"], "n": 3, "seed": 2**32 - 1}
    )
    call = cp.completion_call(request)
    choices = call.choices()
    assert [prompt for prompt, _ in choices] == ["a"] * 3 + ["b"] * 3
    seeds = [options["seed"] for _, options in choices]
    assert seeds[0] == 2**32 - 1  # the first sample keeps the request's seed
    assert len(set(seeds[:3])) == 3 and seeds[:3] == seeds[3:]
    assert all(0 <= s < 2**32 for s in seeds)
    assert [o["seed"] for _, o in cp.completion_call(request).choices()] == seeds
    unseeded = cp.completion_call(request.model_copy(update={"seed": None})).choices()
    assert all("seed" not in options for _, options in unseeded)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_echo_starts_each_choice_with_its_prompt(
    complete: Any, engine: mlxnb.Engine, stream: bool
) -> None:
    response = complete(prompt=["say:Yes", "say:No"], echo=True, n=2, stream=stream)
    assert _texts(response, stream) == ["say:YesYes", "say:YesYes", "say:NoNo", "say:NoNo"]
    ids = engine.tokenizer.encode("Bonjour tout le monde")  # echoed decoded
    response = complete(prompt=[ids], echo=True, temperature=0, stream=stream)
    plain = complete(prompt=[ids], temperature=0).json()
    assert _texts(response, stream) == ["Bonjour tout le monde" + texts(plain)[0]]


def _texts(response: httpx.Response, stream: bool) -> list[str]:
    if not stream:
        assert response.status_code == 200, response.text
        return texts(response.json())
    gathered: dict[int, str] = {}
    for chunk in events_of(response):
        for choice in chunk["choices"]:
            gathered[choice["index"]] = gathered.get(choice["index"], "") + choice["text"]
    return [gathered[i] for i in sorted(gathered)]


@pytest.mark.parametrize(("n", "best_of"), [(1, 1), (2, 2)])
def test_best_of_equal_to_n_is_accepted(complete: Any, n: int, best_of: int) -> None:
    response = complete(prompt="say:ok", n=n, best_of=best_of, logprobs=None)
    assert texts(response.json()) == ["ok"] * n


# -- streaming -------------------------------------------------------------------------------


def test_streamed_batch_interleaves_every_choice(complete: Any) -> None:
    whole = complete(prompt=FREE, temperature=0).json()
    chunks = events_of(
        complete(prompt=FREE, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    *pieces, usage = chunks
    # The same prompts again: the second request may find them in the prompt cache.
    cached = usage["usage"]["prompt_tokens_details"].pop("cached_tokens")
    whole["usage"]["prompt_tokens_details"].pop("cached_tokens")
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert 0 <= cached <= whole["usage"]["prompt_tokens"]
    assert all(len(p["choices"]) == 1 and p["usage"] is None for p in pieces)
    assert len({p["id"] for p in chunks}) == 1  # one id throughout
    finished: dict[int, str] = {}
    gathered = {i: "" for i in range(len(FREE))}
    first_finish = None
    for position, piece in enumerate(pieces):
        choice = piece["choices"][0]
        index = choice["index"]
        assert index not in finished, "a chunk after its choice's finish chunk"
        if choice["finish_reason"] is not None:
            assert choice["text"] == ""
            finished[index] = choice["finish_reason"]
            first_finish = position if first_finish is None else first_finish
        else:
            assert choice["text"]
            gathered[index] += choice["text"]
    assert finished == {i: c["finish_reason"] for i, c in enumerate(whole["choices"])}
    assert [gathered[i] for i in range(len(FREE))] == texts(whole)
    # Run together, not one after another: every choice streams before the first one ends.
    started = {p["choices"][0]["index"] for p in pieces[:first_finish]}
    assert started == set(range(len(FREE)))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failure_in_one_choice_fails_the_request(
    complete: Any, engine: mlxnb.Engine, wait_until: Any, stream: bool
) -> None:
    prompt = ["say:fine", "boom:One two three four five six seven", "say:also fine"]
    response = complete(prompt=prompt, stream=stream, max_tokens=32)
    if not stream:
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert "boom" in error["message"] and error["type"] == "server_error"
    else:
        chunks = events_of(response)
        assert "boom" in chunks[-1]["error"]["message"]
        assert all("error" not in c for c in chunks[:-1])
    wait_until(lambda: engine.pending == 0)
    assert texts(complete(prompt=["say:still", "say:here"]).json()) == ["still", "here"]


# -- the official client ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_official_client_gets_one_choice_per_prompt(
    client: openai.OpenAI, model_id: str, engine: mlxnb.Engine, stream: bool
) -> None:
    prompts = ["say:Paris", "say:Rome", "say:Oslo"]
    if not stream:
        response = client.completions.create(model=model_id, prompt=prompts, max_tokens=8)
        assert len(response.choices) == len(prompts)
        by_index = {c.index: c.text for c in response.choices}
        assert response.usage is not None and response.usage.completion_tokens >= 3
    else:
        by_index = {}
        finishes: dict[int, list[str]] = {}
        for chunk in client.completions.create(
            model=model_id, prompt=prompts, max_tokens=8, stream=True
        ):
            for choice in chunk.choices:
                by_index[choice.index] = by_index.get(choice.index, "") + choice.text
                if choice.finish_reason:
                    finishes.setdefault(choice.index, []).append(choice.finish_reason)
        assert finishes == {0: ["stop"], 1: ["stop"], 2: ["stop"]}
    assert by_index == {0: "Paris", 1: "Rome", 2: "Oslo"}
    ids = [engine.tokenizer.encode(p) for p in FREE[:2]]
    by_ids = client.completions.create(model=model_id, prompt=ids, max_tokens=4, temperature=0)
    by_text = client.completions.create(
        model=model_id, prompt=FREE[:2], max_tokens=4, temperature=0
    )
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]


def test_official_client_refusals_name_the_field(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=model_id, prompt=["a", "b"], logprobs=6)
    assert refused.value.status_code == 400 and refused.value.param == "logprobs"
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        client.completions.create(model=model_id, prompt="a", n=MAX_N + 1)
    assert too_many.value.param == "n"
    assert client.completions.create(model=model_id, prompt="say:fine").choices[0].text == "fine"


# -- refusals ---------------------------------------------------------------------------------

REFUSALS = {
    "empty prompt list": ({"prompt": []}, 422, "prompt", "empty list"),
    "empty prompt": ({"prompt": ""}, 422, "prompt", "empty string"),
    "empty prompt in list": ({"prompt": ["a", ""]}, 422, "prompt", "prompt 1 is an empty string"),
    "empty token list in list": ({"prompt": [[1], []]}, 422, "prompt", "prompt 1"),
    "mixed prompt list": ({"prompt": ["a", [1]]}, 422, "prompt", "only strings"),
    "strings and ids": ({"prompt": [1, "a"]}, 422, "prompt", "only strings"),
    "negative token id": ({"prompt": [1, -2]}, 422, "prompt", "integers"),
    "float token id": ({"prompt": [[1, 2.5]]}, 422, "prompt", "integers"),
    "boolean token id": ({"prompt": [True]}, 422, "prompt", "integers"),
    "prompt not text": ({"prompt": {"text": "a"}}, 422, "prompt", "must be a string"),
    "too many prompts": (
        {"prompt": ["a"] * (MAX_PROMPTS + 1)},
        422,
        "prompt",
        f"at most {MAX_PROMPTS}",
    ),
    "n zero": ({"prompt": "a", "n": 0}, 422, "n", None),
    "n too large": ({"prompt": "a", "n": MAX_N + 1}, 422, "n", str(MAX_N)),
    "too many choices": (
        {"prompt": ["a"] * (MAX_CHOICES // MAX_N + 1), "n": MAX_N},
        422,
        "n",
        f"at most {MAX_CHOICES}",
    ),
    "best_of above n": ({"prompt": "a", "best_of": 3}, 400, "best_of", "best_of"),
    "best_of below n": ({"prompt": "a", "n": 2, "best_of": 1}, 400, "best_of", "best_of"),
    "logprobs over 5": ({"prompt": ["a", "b"], "logprobs": 6}, 400, "logprobs", "0 to 5"),
    "logprobs negative": ({"prompt": "a", "logprobs": -1}, 400, "logprobs", "0 to 5"),
    "logprobs true": ({"prompt": "a", "logprobs": True}, 400, "logprobs", "logprobs"),
    "token id past the vocabulary": ({"prompt": [[1], [10**9]]}, 400, None, "vocabulary"),
    "max_tokens over server limit": (
        {"prompt": ["a"], "max_tokens": 4097},
        422,
        "max_tokens",
        None,
    ),
}


@pytest.mark.usefixtures("still_serves")
@pytest.mark.parametrize(
    ("fields", "status", "param", "says"), list(REFUSALS.values()), ids=list(REFUSALS)
)
def test_refusal_names_the_field(
    complete: Any, fields: dict[str, Any], status: int, param: str | None, says: str | None
) -> None:
    response = complete(**fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if says is not None:
        assert says in error["message"]


def test_refused_prompt_refuses_the_whole_batch(
    complete: Any, engine: mlxnb.Engine, wait_until: Any
) -> None:
    response = complete(prompt=[[1, 2], [3, 10**9], [4]], stream=True)
    assert response.status_code == 400, response.text  # before any header: its own status
    assert "prompt token 1" in response.json()["error"]["message"]
    wait_until(lambda: engine.pending == 0)


# -- audit and cancellation --------------------------------------------------------------------


def test_every_choice_gets_its_audit_row(complete: Any, engine: mlxnb.Engine) -> None:
    body = complete(prompt=["say:one", "say:two three"], n=2).json()
    assert engine.audit is not None
    rows = [engine.audit.get(f"{body['id']}-{index}") for index in range(4)]
    assert all(row is not None for row in rows)
    assert [row.content for row in rows if row] == ["one", "one", "two three", "two three"]
    assert {(row.status, row.source, row.endpoint) for row in rows if row} == {
        ("ok", "server", "/v1/completions")
    }
    assert sum(row.completion_tokens for row in rows if row) == body["usage"]["completion_tokens"]
    assert engine.audit.get(body["id"]) is None  # no row for the request as a whole


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_disconnect_cancels_every_choice(
    server: ServerHandle,
    scripted: Any,
    engine: mlxnb.Engine,
    model_id: str,
    wait_until: Any,
    stream: bool,
) -> None:
    spinners = len(scripted.spinners)
    cancelled = server.app.state.stats.cancelled
    body = {
        "model": model_id,
        "prompt": ["spin:a", "spin:b", "spin:c"],
        "max_tokens": SPIN_TOKENS,
        "stream": stream,
    }
    url = f"{server.url}/completions"
    with httpx.Client(timeout=60) as http:
        if stream:
            with http.stream("POST", url, json=body) as response:
                first = next(line for line in response.iter_lines() if line)
                request_id = json.loads(first.removeprefix("data: "))["id"]
        else:
            with pytest.raises(httpx.ReadTimeout):
                http.post(url, json=body, timeout=httpx.Timeout(60, read=1.0))
    assert len(scripted.spinners) == spinners + 3
    wait_until(lambda: engine.pending == 0)  # EOS is banned: only a cancel ends them early
    assert all(0 < s.steps < SPIN_TOKENS for s in scripted.spinners[-3:])
    wait_until(lambda: server.app.state.stats.cancelled == cancelled + 1)
    assert engine.audit is not None
    rows = engine.audit.to_pandas().tail(3)
    assert list(rows["status"]) == ["cancelled"] * 3
    if stream:
        assert sorted(rows["request_id"]) == [f"{request_id}-{i}" for i in range(3)]


# -- the merge on its own ----------------------------------------------------------------------


class Probe:
    """An engine-like stream that records whether it was closed and how far it got."""

    def __init__(self, events: list[Event], *, hang: bool = False, fail: bool = False) -> None:
        self.events, self.hang, self.fail = events, hang, fail
        self.closed = False
        self.started = False

    async def __call__(self) -> AsyncIterator[Event]:
        self.started = True
        try:
            if self.fail:
                raise InvalidRequestError("refused")
            for event in self.events:
                yield event
            if self.hang:
                await asyncio.Event().wait()
        finally:
            self.closed = True


async def test_choices_merge_and_close_every_stream() -> None:
    done = Done("stop", Usage(completion_tokens=1))
    probes = [
        Probe([ContentDelta("a"), done]),
        Probe([ContentDelta("b")], hang=True),
        Probe([ContentDelta("c")], hang=True),
    ]
    streams = [probe() for probe in probes]
    choices = Choices(streams)
    await choices.start()
    got: dict[int, list[Event]] = {}
    for _ in range(4):
        index, event = await choices.__anext__()
        got.setdefault(index, []).append(event)
    assert got == {0: [ContentDelta("a"), done], 1: [ContentDelta("b")], 2: [ContentDelta("c")]}
    assert not any(p.closed for p in probes[1:])
    await choices.aclose()
    assert all(p.closed for p in probes)


async def test_choices_join_the_deltas_a_choice_queued_together() -> None:
    """A batch of one choice's deltas is served as one delta per run of text; other events,
    other choices' events, and the order stay as they were."""
    done = Done("stop", Usage(completion_tokens=7))
    first = [
        ThinkingDelta("hm"),
        ThinkingDelta("m"),
        ContentDelta("a"),
        ContentDelta("b"),
        ToolCallDelta(0, "{"),
        ToolCallDelta(0, "}"),
        ToolCallDelta(1, "{"),
        TokenLogprob("c", 3, -0.1),
        ContentDelta("c"),
        ContentDelta("d"),
        done,
    ]
    probes = [Probe(first), Probe([ContentDelta("x"), ContentDelta("y"), ContentDelta("z"), done])]
    choices = Choices([probe() for probe in probes])
    await choices.start()
    got: dict[int, list[Event]] = {}
    async for index, event in choices:
        got.setdefault(index, []).append(event)
    assert got[0] == [
        ThinkingDelta("hmm"),
        ContentDelta("ab"),
        ToolCallDelta(0, "{}"),
        ToolCallDelta(1, "{"),
        TokenLogprob("c", 3, -0.1),
        ContentDelta("cd"),
        done,
    ]
    assert got[1] == [ContentDelta("xyz"), done]
    await choices.aclose()


async def test_choices_serve_a_failure_after_the_deltas_before_it() -> None:
    async def failing() -> AsyncIterator[Event]:
        for text in "abc":
            yield ContentDelta(text)
        raise RuntimeError("boom")

    choices = Choices([failing()])
    await choices.start()
    assert await choices.__anext__() == (0, ContentDelta("abc"))
    with pytest.raises(RuntimeError, match="boom"):
        await choices.__anext__()
    await choices.aclose()


async def test_choices_refusal_is_raised_and_the_rest_closed() -> None:
    probes = [Probe([ContentDelta("a")], hang=True), Probe([], fail=True), Probe([], hang=True)]
    choices = Choices([probe() for probe in probes])
    with pytest.raises(InvalidRequestError, match="refused"):
        await choices.start()
    await choices.aclose()
    assert all(p.closed for p in probes if p.started)
    # A stream whose task never ran was closed too: iterating it now ends at once.
    for stream in choices._streams:
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


async def test_choices_empty_stream_reads_as_a_failed_choice() -> None:
    choices = Choices([Probe([])()])
    await choices.start()
    index, event = await choices.__anext__()
    assert index == 0 and isinstance(event, Done) and event.finish_reason == "error"
    await choices.aclose()


def test_usage_chunk_is_shared_by_chat_and_text() -> None:
    usage = Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=1)
    chat = oa.ChatChunks("c", "m", include_usage=True).done(Done("stop", usage))[-1]
    text = cp.TextChunks("c", "m", include_usage=True, created=chat["created"])
    text.event(0, Done("stop", usage))
    assert text.end() == [{**chat, "object": "text_completion"}]
    assert chat["usage"]["total_tokens"] == 7 and chat["choices"] == []


def test_text_usage_counts_each_prompt_once_and_every_sample() -> None:
    chunks = cp.TextChunks("c", "m", n=2)
    choices: list[list[Event]] = [
        [ContentDelta("x"), Done("stop", Usage(prompt_tokens=p, completion_tokens=c))]
        for p, c in [(4, 1), (4, 2), (6, 3), (6, 4)]
    ]
    body = chunks.whole(choices)
    assert body["usage"]["prompt_tokens"] == 10
    assert body["usage"]["completion_tokens"] == 10
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_completion_logprobs_per_choice_in_the_legacy_shape(
    client: openai.OpenAI, model_id: str, stream: bool
) -> None:
    options: dict[str, Any] = {"max_tokens": 5, "temperature": 0, "logprobs": 2}
    prompts = FREE[:2]
    per_choice: dict[int, dict[str, list[Any]]] = {}
    if stream:
        for chunk in client.completions.create(
            model=model_id, prompt=prompts, n=2, stream=True, **options
        ):
            for choice in chunk.choices:
                got = per_choice.setdefault(choice.index, {"tokens": [], "top": [], "text": []})
                got["text"].append(choice.text)
                if choice.logprobs is not None:
                    got["tokens"].extend(choice.logprobs.tokens or [])
                    got["top"].extend(choice.logprobs.top_logprobs or [])
    else:
        body = client.completions.create(model=model_id, prompt=prompts, n=2, **options)
        for choice in body.choices:
            assert choice.logprobs is not None
            assert choice.logprobs.text_offset is not None
            assert choice.logprobs.text_offset[0] == 0
            per_choice[choice.index] = {
                "tokens": list(choice.logprobs.tokens or []),
                "top": list(choice.logprobs.top_logprobs or []),
                "text": [choice.text],
            }
    assert sorted(per_choice) == [0, 1, 2, 3]
    for got in per_choice.values():
        assert len(got["tokens"]) == 5 and all(len(top) == 2 for top in got["top"])
        # The text is its tokens', the space the first one opens with included.
        assert "".join(got["tokens"]) == "".join(got["text"])
    # Greedy: both samples of a prompt agree, token for token.
    assert per_choice[0]["tokens"] == per_choice[1]["tokens"]
