"""The ``%%mlx`` / ``%mlx`` magics: pure helpers, then a real IPython kernel on the tiny model.

The kernel tests share one kernel (module scope). Its model is the offline tiny model, made to
say a scripted text by a forced-output logits processor (``Scripted`` below), so every turn runs
the real engine, parser and audit log; what the model was asked is read back from the audit
row's ``request`` column.
"""

from __future__ import annotations

import json
import queue
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from mlxnb._magic import MagicOptions, expand, keep_questions, parse_line
from mlxnb._magic_view import CellView, answer_bundle, fenced, thinking_bundle
from mlxnb.errors import InvalidRequestError
from mlxnb.events import ContentDelta, ThinkingDelta, Turn, Usage

# -- pure helpers --------------------------------------------------------------------------


def test_options_come_first_and_the_rest_is_the_prompt() -> None:
    options, rest = parse_line(
        "--model coder --system 'Be brief, please.' --no-think --json=City --out t Why {x}?"
    )
    assert options == MagicOptions(
        model="coder", system="Be brief, please.", json="City", out="t", no_think=True
    )
    assert rest == "Why {x}?"
    assert parse_line("  --model m -- --not-an-option") == (
        MagicOptions(model="m"),
        "--not-an-option",
    )
    assert parse_line("") == (MagicOptions(), "")


@pytest.mark.parametrize("line", ["--modle x", "--model", "--no-think=yes"])
def test_bad_options_are_refused(line: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_line(line)


def test_expressions_are_filled_from_the_namespace() -> None:
    namespace = {"x": 42, "items": ["a", "b"], "d": {"k": "}"}}
    text = "x={x}, joined={', '.join(items)}, d={d['k']}, {{literal}}, lone } kept, {x + 1}"
    assert expand(text, namespace) == "x=42, joined=a, b, d=}, {literal}, lone } kept, 43"
    assert expand("no braces at all", {}) == "no braces at all"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("What is {missing}?", "{missing} failed: NameError"),
        ('Answer as {"name": "..."}', "write {{ and }} for literal braces"),
        ("empty {} braces", "write {{ and }}"),
        ("unclosed {x", "write {{ and }}"),
        ("{1 / 0}", "ZeroDivisionError"),
    ],
)
def test_a_failing_expression_says_which_and_why(text: str, says: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        expand(text, {"x": 1})
    assert says in str(caught.value)


def test_questions_on_the_line_magic_are_not_help_requests() -> None:
    lines = ["x = 1\n", "  %mlx What is {x}?\n", "city = %mlx --json City Capital?  \n"]
    assert keep_questions(lines) == [
        "x = 1\n",
        "  get_ipython().run_line_magic('mlx', 'What is {x}?')\n",
        "city = get_ipython().run_line_magic('mlx', '--json City Capital?')\n",
    ]
    untouched = ["%mlx?\n", "%mlx No question.\n", "print('%mlx a?')\n"]
    assert keep_questions(untouched) == untouched
    cell = ["%%mlx\n", "%mlx in a cell's body?\n"]
    assert keep_questions(cell) == cell


def test_thinking_is_escaped_html_in_a_collapsible_block() -> None:
    streaming = thinking_bundle("<script>alert(1)</script> & <b>", None)
    assert "<script>" not in streaming["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in streaming["text/html"]
    assert "<details" in streaming["text/html"] and " open>" in streaming["text/html"]
    done = thinking_bundle('"quoted"', 1.26)
    assert "Thought for 1.3 s" in done["text/html"] and " open" not in done["text/html"]
    assert "&quot;quoted&quot;" in done["text/html"]


def test_a_json_answer_is_fenced_longer_than_its_backticks() -> None:
    assert fenced("a ``` b", "json") == "````json\na ``` b\n````"
    bundle = answer_bundle('{"a": 1}', json_answer=True, note="*Stopped.*")
    assert bundle["text/markdown"] == '```json\n{"a": 1}\n```\n\n*Stopped.*'
    assert bundle["text/plain"] == '{"a": 1}\n\n*Stopped.*'


@dataclass
class Cell:
    """Outputs a :class:`CellView` made, as a front end would hold them."""

    outputs: list[list[dict[str, str]]] = field(default_factory=list)

    def show(self, bundle: dict[str, str]) -> Any:
        history = [bundle]
        self.outputs.append(history)
        return history.append


def test_the_view_coalesces_updates_and_always_shows_the_end() -> None:
    now = [0.0]
    cell = Cell()
    view = CellView(show=cell.show, clock=lambda: now[0], interval=0.1)
    view.add(ThinkingDelta("Hmm"))  # the first event shows at once
    for _ in range(50):  # within one interval: no update
        now[0] += 0.001
        view.add(ThinkingDelta("."))
    assert [len(history) for history in cell.outputs] == [1]
    now[0] += 0.15
    view.add(ContentDelta("Hel"))  # the thinking closes at once, the answer appears
    thinking, answer = cell.outputs
    assert "Thought for 0.2 s" in thinking[-1]["text/html"]
    assert "Hmm" + "." * 50 in thinking[-1]["text/html"]
    assert answer[-1]["text/markdown"] == "Hel"
    now[0] += 0.01
    view.add(ContentDelta("lo"))  # too soon: held back
    assert answer[-1]["text/markdown"] == "Hel"
    view.finish(Turn("Hello", "Hmm" + "." * 50, (), (), "cancelled", Usage()))
    assert answer[-1]["text/markdown"] == "Hello\n\n*Stopped.*"
    assert len(cell.outputs) == 2 and len(thinking) == 2  # the thinking did not change again


def test_an_empty_answer_still_shows_something() -> None:
    cell = Cell()
    view = CellView(show=cell.show)
    view.finish(Turn("", "", (), (), "stop", Usage()))
    assert cell.outputs == [[{"text/markdown": "*(no answer)*", "text/plain": "*(no answer)*"}]]


# -- a real kernel -------------------------------------------------------------------------

SETUP = """
import json, time
import mlxnb
from mlxnb.testing import forced_output

engine = mlxnb.load({model!r})


class Scripted:
    '''The real engine, made to say ``text`` (a token every ``delay`` seconds).'''

    def __init__(self, text, delay=0.0):
        self.text, self.delay = text, delay

    def stream_sync(self, messages, tools=None, enable_thinking=None, **options):
        def slow(tokens, logits):
            time.sleep(self.delay)
            return logits

        processors = [forced_output(engine.tokenizer, self.text), slow]
        return engine.stream_sync(
            messages, tools, enable_thinking, logits_processors=processors, **options
        )


def magic_rows():
    return engine.audit.to_pandas(source="magic")


def last_row(status="any", wait=10.0):
    deadline = time.monotonic() + wait
    while True:
        rows = magic_rows()
        if len(rows) and (status == "any" or rows.iloc[-1]["status"] == status):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no magic row with status {{status}}")
        time.sleep(0.02)
    row = rows.iloc[-1]
    keys = ["source", "model", "status", "finish_reason", "content", "completion_tokens"]
    found = {{key: row[key] for key in keys}}
    found["completion_tokens"] = int(row["completion_tokens"])
    found["request"] = json.loads(row["request"])
    found["sampling"] = json.loads(row["sampling"])
    found["rows"] = len(rows)
    print(json.dumps(found, default=str))


%load_ext mlxnb
"""

THOUGHT = "<think>\nSix sevens: 7, 14, 21, 28, 35, 42. So <42> & done.\n</think>\n\n"
ANSWER = "The answer is **42**. " + "It is six times seven, as a short check shows. " * 4


@dataclass
class Run:
    """What one cell sent back: its outputs in order, with display updates by display id."""

    messages: list[dict[str, Any]]
    reply: dict[str, Any]

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in kinds]

    @property
    def stdout(self) -> str:
        streams = self.of_type("stream")
        return "".join(m["content"]["text"] for m in streams if m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        streams = self.of_type("stream")
        return "".join(m["content"]["text"] for m in streams if m["content"]["name"] == "stderr")

    def displays(self) -> dict[str, list[dict[str, str]]]:
        """Each display's bundles, first shown then every update, by display id."""
        found: dict[str, list[dict[str, str]]] = {}
        for message in self.of_type("display_data", "update_display_data"):
            display_id = message["content"].get("transient", {}).get("display_id", "")
            found.setdefault(display_id, []).append(message["content"]["data"])
        return found

    def shown(self, mime: str) -> list[list[dict[str, str]]]:
        """The histories of the displays that show ``mime``."""
        return [history for history in self.displays().values() if mime in history[0]]

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


class Kernel:
    """One IPython kernel for the module's tests."""

    def __init__(self, manager: KernelManager, client: BlockingKernelClient) -> None:
        self.manager = manager
        self.client = client

    def run(self, code: str, *, timeout: float = 30.0, interrupt_when: Any = None) -> Run:
        """Execute ``code``; with ``interrupt_when``, interrupt once it holds for the outputs."""
        msg_id = self.client.execute(textwrap.dedent(code).strip())
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        interrupted = interrupt_when is None
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the cell did not finish in {timeout} s") from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            content = message["content"]
            if message["msg_type"] == "status" and content["execution_state"] == "idle":
                break
            messages.append({"msg_type": message["msg_type"], "content": content})
            if not interrupted and interrupt_when(Run(messages, {})):
                self.manager.interrupt_kernel()
                interrupted = True
        # A late reply to an earlier request (start_new_kernel's kernel_info, sent again when
        # the kernel is slow to answer under load) may come first: skip it.
        while True:
            reply = self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return Run(messages, reply["content"])
            assert reply["msg_type"] == "kernel_info_reply", reply

    def ok(self, code: str, **options: Any) -> Run:
        run = self.run(code, **options)
        assert run.reply["status"] == "ok", (run.reply, run.stderr)
        return run


@pytest.fixture(scope="module")
def kernel(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    manager, client = start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path_factory.mktemp("magic-kernel"))
    )
    try:
        shared = Kernel(manager, client)
        shared.ok(SETUP.format(model=str(tiny_model_dir)), timeout=120)
        yield shared
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_answer_streams_with_its_thinking(kernel: Kernel) -> None:
    kernel.ok(f"script = Scripted({THOUGHT + ANSWER!r}, delay=0.01)")
    run = kernel.ok("%%mlx --model script\nWhat is six times seven?")
    (thinking,) = run.shown("text/html")
    (answer,) = run.shown("text/markdown")
    final = answer[-1]["text/markdown"]
    assert final == ANSWER
    # More than one update arrived before the end, each a longer piece of the answer.
    partial = [bundle["text/markdown"] for bundle in answer[:-1]]
    assert len(partial) >= 2 and all(ANSWER.startswith(text) for text in partial)
    assert len(set(partial)) == len(partial) and len(partial[0]) < len(final)
    # The thinking: escaped, open while streaming, then closed with its duration.
    assert "<details" in thinking[0]["text/html"] and " open>" in thinking[0]["text/html"]
    assert "Thought for " in thinking[-1]["text/html"]
    assert "So &lt;42&gt; &amp; done." in thinking[-1]["text/html"]
    assert "<42>" not in thinking[-1]["text/html"]
    row = kernel.ok("last_row()").json()
    assert (row["source"], row["status"], row["finish_reason"]) == ("magic", "ok", "stop")
    assert row["request"]["messages"] == [{"role": "user", "content": "What is six times seven?"}]
    assert row["request"]["enable_thinking"] is None


def test_expressions_in_the_cell_are_filled_in(kernel: Kernel) -> None:
    kernel.ok("x = 6 * 7\nitems = ['red', 'blue']\nscript = Scripted('Done.')")
    kernel.ok(
        """
        %%mlx --model script
        What is {x}? Colours: {", ".join(items)}.
        Keep {{braces}} as written.
        """
    )
    row = kernel.ok("last_row()").json()
    (message,) = row["request"]["messages"]
    assert message["content"] == "What is 42? Colours: red, blue.\nKeep {braces} as written."


def test_a_failing_expression_is_a_clear_error_and_asks_nothing(kernel: Kernel) -> None:
    before = kernel.ok("print(len(magic_rows()))").stdout
    run = kernel.run("%mlx --model script What is {no_such_name + 1}?")
    assert run.reply["status"] == "error"
    said = run.stderr + json.dumps(run.reply)
    assert "UsageError" in said and "{no_such_name + 1} failed: NameError" in said
    assert kernel.ok("print(len(magic_rows()))").stdout == before


def test_system_prompt_and_no_think_reach_the_model(kernel: Kernel) -> None:
    kernel.ok("script = Scripted('Brief.')")
    run = kernel.ok("%%mlx --model script --system 'You are terse, {x}.' --no-think\nHi")
    assert run.shown("text/html") == []  # no thinking, so no thinking block
    row = kernel.ok("last_row()").json()
    assert row["request"]["messages"] == [
        {"role": "system", "content": "You are terse, 42."},
        {"role": "user", "content": "Hi"},
    ]
    assert row["request"]["enable_thinking"] is False


def test_json_parses_the_answer_and_out_keeps_the_turn(kernel: Kernel) -> None:
    answer = '{"name":"Paris","country":"France"}'
    kernel.ok(
        f"""
        from pydantic import BaseModel

        class City(BaseModel):
            name: str
            country: str

        script = Scripted({answer!r})
        """
    )
    run = kernel.ok("%%mlx --model script --json City --out turn\nThe capital of France?")
    (result,) = run.of_type("execute_result")
    assert result["content"]["data"]["text/plain"] == "City(name='Paris', country='France')"
    (shown,) = run.shown("text/markdown")
    assert shown[-1]["text/markdown"] == f"```json\n{answer}\n```"
    checked = kernel.ok(
        "print(json.dumps([type(turn).__name__, turn.content, turn.finish_reason,"
        " turn.parsed.model_dump(), turn.usage.completion_tokens > 0]))"
    ).json()
    assert checked == ["Turn", answer, "stop", {"name": "Paris", "country": "France"}, True]
    row = kernel.ok("last_row()").json()
    assert row["sampling"]["response_format"] == "City"
    # The line magic's value is the parsed answer, so it can be assigned.
    kernel.ok(f"script = Scripted({answer!r})")
    run = kernel.ok("city = %mlx --model script --json City Capital?\nprint(repr(city))")
    assert run.stdout.strip() == "City(name='Paris', country='France')"


def test_the_line_magic_and_its_default_model(kernel: Kernel) -> None:
    kernel.ok("script = Scripted('Hello from the line magic.')")
    assert "now use script" in kernel.ok("%mlx --model script").stdout
    run = kernel.ok("%mlx What about {items[0]}?")
    (answer,) = run.shown("text/markdown")
    assert answer[-1]["text/markdown"] == "Hello from the line magic."
    row = kernel.ok("last_row()").json()
    # A question mark at the end is the question's, not IPython's help syntax.
    assert row["request"]["messages"] == [{"role": "user", "content": "What about red?"}]
    # Inside a function, its locals are in scope too.
    kernel.ok(
        """
        def describe(colour):
            %mlx Describe {colour} and {x}.

        describe("green")
        """
    )
    row = kernel.ok("last_row()").json()
    assert row["request"]["messages"] == [{"role": "user", "content": "Describe green and 42."}]
    run = kernel.run("%mlx --model no-such-model hi")
    assert run.reply["status"] == "error" and "not registered" in run.stderr


def test_a_profile_by_name_goes_through_the_pool(kernel: Kernel, tiny_model_dir: Path) -> None:
    kernel.ok(f"mlxnb.profile('tiny-brief', {str(tiny_model_dir)!r}, max_tokens=5)")
    kernel.ok("%mlx --model tiny-brief --out short Hi")
    row = kernel.ok("last_row()").json()
    # The profile's model ran with the profile's defaults.
    assert row["source"] == "magic" and row["model"] == tiny_model_dir.name
    assert row["sampling"]["max_tokens"] == 5 and row["completion_tokens"] <= 5
    assert kernel.ok("print(short.usage.completion_tokens)").stdout.strip() == str(
        row["completion_tokens"]
    )


def test_a_refused_request_shows_its_error_and_fails_the_cell(
    kernel: Kernel, tiny_model_dir: Path
) -> None:
    kernel.ok(f"mlxnb.profile('tiny-huge', {str(tiny_model_dir)!r}, max_tokens=10**6)")
    run = kernel.run("%mlx --model tiny-huge Hi")
    assert run.reply["status"] == "error" and run.reply["ename"] == "ContextLengthError"
    (answer,) = run.shown("text/markdown")
    shown = answer[-1]["text/markdown"]
    assert shown.startswith("**Error:**") and "ContextLengthError: " in shown
    row = kernel.ok("last_row()").json()
    assert (row["source"], row["status"]) == ("magic", "error")


def test_an_interrupt_cancels_the_request_and_keeps_the_partial_answer(kernel: Kernel) -> None:
    words = "word " * 400
    kernel.ok(f"script = Scripted({words!r}, delay=0.02)")

    def answering(run: Run) -> bool:
        return any(len(history) >= 2 for history in run.shown("text/markdown"))

    run = kernel.run("%%mlx --model script --out stopped\nTalk.", interrupt_when=answering)
    assert run.reply["status"] == "error" and run.reply["ename"] == "KeyboardInterrupt"
    (answer,) = run.shown("text/markdown")
    final = answer[-1]["text/markdown"]
    assert final.startswith("word word") and final.endswith("*Stopped.*")
    kept = final.removesuffix("*Stopped.*").strip()
    assert len(kept) < len(words.strip())
    # The kernel is still usable; the turn and its audit row say cancelled.
    turn = kernel.ok("print(json.dumps([stopped.finish_reason, stopped.content]))").json()
    assert turn[0] == "cancelled" and turn[1].strip() == kept
    row = kernel.ok("last_row(status='cancelled')").json()
    assert (row["source"], row["finish_reason"]) == ("magic", "cancelled")
    assert 0 < row["completion_tokens"] < 400
