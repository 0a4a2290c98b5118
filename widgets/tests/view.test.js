// @ts-check
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { FakeModel } from "./fake-model.js";

/**
 * @typedef {import("../src/protocol.js").KernelMessage} KernelMessage
 * @typedef {import("../src/protocol.js").Op} Op
 * @typedef {import("../src/protocol.js").Turn} Turn
 * @typedef {import("../src/protocol.js").ViewRequest} ViewRequest
 * @typedef {import("../src/protocol.js").WidgetState} WidgetState
 */

/** @type {FakeModel} */
let model;
/** @type {HTMLElement} */
let el;
/** @type {() => void} */
let cleanup;

/**
 * The element with this data-testid (it must be there), checked to be of the given class.
 * @template {Element} [T=HTMLElement]
 * @param {string} id
 * @param {{new (): T, prototype: T}} [type]
 * @returns {T}
 */
function $(id, type) {
  const node = el.querySelector(`[data-testid="${id}"]`);
  if (!node) throw new Error(`no element with data-testid="${id}"`);
  if (!(node instanceof (type ?? HTMLElement))) throw new TypeError(`${id} is a ${node.tagName}`);
  return /** @type {T} */ (node);
}
/** @param {string} id */
const $$ = (id) => [...el.querySelectorAll(`[data-testid="${id}"]`)];
const $input = () => $("input", HTMLTextAreaElement);
/** @param {string} id */
const $button = (id) => $(id, HTMLButtonElement);
const $toggle = () => $("thinking-toggle", HTMLInputElement);
const $thinking = () => $("thinking", HTMLDetailsElement);

/** @param {Partial<WidgetState>} [state] */
function mount(state) {
  model = new FakeModel(state);
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
}

/**
 * @param {Element} target
 * @param {KeyboardEventInit} [init]
 */
function key(target, init) {
  const event = new KeyboardEvent("keydown", {
    key: "Enter",
    bubbles: true,
    cancelable: true,
    ...init,
  });
  target.dispatchEvent(event);
  return event;
}

beforeEach(() => mount());
afterEach(() => {
  cleanup();
  el.remove();
});

describe("input", () => {
  it("Enter sends the message and clears the box", () => {
    $input().value = "Hello there";
    const event = key($("input"));
    expect(event.defaultPrevented).toBe(true);
    expect(model.sent).toEqual([{ type: "send", text: "Hello there" }]);
    expect($input().value).toBe("");
  });

  it.each([{ shiftKey: true }, { isComposing: true }, { altKey: true }])(
    "Enter with %o does not send (newline or IME)",
    (init) => {
      $input().value = "line one";
      const event = key($("input"), init);
      expect(event.defaultPrevented).toBe(false);
      expect(model.sent).toEqual([]);
    },
  );

  it("keystrokes do not reach the notebook's shortcuts", () => {
    let reached = false;
    el.addEventListener("keydown", () => {
      reached = true;
    });
    key($("input"), { key: "a" });
    expect(reached).toBe(false);
  });

  it("blank messages are not sent", () => {
    $input().value = "   \n";
    $("send").click();
    expect(model.sent).toEqual([]);
  });

  it("is disabled while generating; Stop is enabled and sends stop", () => {
    $input().value = "hi";
    $("send").click();
    expect($input().disabled).toBe(true);
    expect($button("send").disabled).toBe(true);
    expect($button("stop").disabled).toBe(false);
    model.update("status", "generating");
    expect($input().disabled).toBe(true);
    $("stop").click();
    expect(model.sent.at(-1)).toEqual({ type: "stop" });
    model.update("status", "ready");
    expect($input().disabled).toBe(false);
    expect($button("stop").disabled).toBe(true);
  });

  it("a refused request re-enables the input", () => {
    $input().value = "hi";
    $("send").click();
    expect($input().disabled).toBe(true);
    model.custom({ type: "refused", message: "still loading" });
    expect($input().disabled).toBe(false);
  });
});

describe("status", () => {
  it("shows loading, then ready", () => {
    cleanup();
    mount({ status: "loading" });
    expect($("status").textContent).toBe("Loading model…");
    expect($("empty").textContent).toBe("Loading model…");
    expect($input().disabled).toBe(true);
    model.update("status", "ready");
    expect($("status").textContent).toBe("Ready");
    expect($("model").textContent).toBe("tiny-model");
    expect($input().disabled).toBe(false);
  });

  it("shows a load error in the chat", () => {
    cleanup();
    mount({ status: "error", error: "ModelNotFoundError: no model at /x" });
    expect($("banner").hidden).toBe(false);
    expect($("banner").textContent).toContain("no model at /x");
    expect($input().disabled).toBe(true);
  });

  it("the thinking toggle follows and sets enable_thinking", () => {
    expect($toggle().checked).toBe(true);
    $toggle().click();
    expect(model.get("enable_thinking")).toBe(false);
    expect(model.saved).toBe(1);
  });

  it("hides the thinking toggle for models that cannot think", () => {
    model.update("supports_thinking", false);
    expect($toggle().closest("label")?.hidden).toBe(true);
  });
});

describe("streaming", () => {
  const start = () => model.custom({ type: "start", turn: { id: "t1", user: "Why?" } });
  /** @param {Op[]} list */
  const ops = (list) => model.custom({ type: "ops", id: "t1", ops: list });

  it("fills the thinking pane live, then collapses it with the time", () => {
    start();
    ops([["think", "Let me "]]);
    ops([["think", "think."]]);
    const pane = $thinking();
    expect(pane.open).toBe(true);
    expect(pane.dataset.state).toBe("live");
    expect($("thinking-summary").textContent).toBe("Thinking…");
    expect($("thinking-text").textContent).toBe("Let me think.");
    ops([
      ["think_end", 1.26],
      ["text", "Because."],
    ]);
    expect(pane.open).toBe(false);
    expect($("thinking-summary").textContent).toBe("Thought for 1.3 s");
    expect($("content").textContent.trim()).toBe("Because.");
  });

  it("leaves a thinking pane open that the user opened themself", () => {
    start();
    ops([
      ["think", "a"],
      ["think_end", 0.2],
    ]);
    const pane = $thinking();
    pane.dataset.touched = "1";
    pane.open = true;
    ops([["text", "b"]]);
    expect(pane.open).toBe(true);
  });

  it("renders markdown as it grows, with highlighted code and a copy button", () => {
    start();
    ops([["text", "Here:\n\n```python\nprint("]]);
    expect($("content").querySelector("code.language-python")).not.toBeNull();
    ops([["text", "1)\n```\n"]]);
    expect($("content").querySelector("code")?.textContent).toBe("print(1)");
    expect($$("copy")).toHaveLength(1);
  });

  it("shows a tool call's name, streaming arguments, status and result", () => {
    start();
    ops([["tool_delta", "0-0", '{"name": "get_weather", "arguments": {"city": "Pa']]);
    expect($("tool-name").textContent).toBe("get_weather");
    expect($("tool-args").textContent).toBe('{\n  "city": "Pa"\n}');
    expect($("tool-call").dataset.status).toBe("streaming");
    ops([["tool_call", "0-0", "c1", "get_weather", { city: "Paris" }]]);
    expect($("tool-status").textContent).toBe("running");
    expect($("tool-result").hidden).toBe(true);
    ops([["tool_result", "0-0", '{"sky": "sunny"}', null]]);
    expect($("tool-call").dataset.status).toBe("done");
    expect($("tool-result").textContent).toBe('{"sky": "sunny"}');
  });

  it("shows a failing tool's error", () => {
    start();
    ops([
      ["tool_call", "0-0", "c1", "boom", {}],
      ["tool_result", "0-0", "", "ValueError: no"],
    ]);
    expect($("tool-call").dataset.status).toBe("error");
    expect($("tool-result").textContent).toBe("ValueError: no");
  });

  it("ignores ops of another turn", () => {
    start();
    model.custom({ type: "ops", id: "other", ops: [["text", "stray"]] });
    expect($$("content")).toHaveLength(0);
  });

  it("shows stats and errors when the turn ends", () => {
    start();
    ops([
      ["text", "Par"],
      [
        "end",
        "cancelled",
        null,
        {
          ttft: 0.05,
          tps: 100,
          prompt_tokens: 3,
          completion_tokens: 4,
          seconds: 0.2,
          rounds: 1,
          finish_reason: "cancelled",
        },
      ],
    ]);
    expect($("turn").dataset.status).toBe("cancelled");
    expect($("stats").textContent).toMatch(/^stopped · first token 0.05 s · 100.0 tok\/s/);
    ops([["end", "error", "GenerationError: boom", null]]);
    expect($("turn-error").hidden).toBe(false);
    expect($("turn-error").textContent).toBe("GenerationError: boom");
  });

  it("model output with HTML stays inert in every pane", () => {
    start();
    const payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>';
    ops([
      ["think", payload],
      ["think_end", 0.1],
      ["text", payload],
      ["tool_call", "0-0", "c", payload, { x: payload }],
      ["tool_result", "0-0", payload, null],
    ]);
    expect(el.querySelector("img, script")).toBeNull();
    expect($("thinking-text").textContent).toBe(payload);
    expect($("content").textContent).toContain("<img src=x");
  });
});

describe("transcript", () => {
  /** @type {Turn} */
  const finished = {
    id: "t1",
    user: "Hi",
    status: "done",
    error: null,
    stats: {
      ttft: 0.1,
      tps: 10,
      prompt_tokens: 1,
      completion_tokens: 2,
      seconds: 0.3,
      rounds: 1,
      finish_reason: "stop",
    },
    parts: [
      { kind: "thinking", text: "hm", seconds: 0.4 },
      { kind: "content", text: "**Hello**" },
    ],
  };

  it("renders the saved conversation (re-display, reopened notebook)", () => {
    cleanup();
    mount({ transcript: [finished] });
    expect($("user-message").textContent).toBe("Hi");
    expect($("content").querySelector("strong")?.textContent).toBe("Hello");
    expect($thinking().open).toBe(false);
    expect($("thinking-summary").textContent).toBe("Thought for 0.4 s");
    expect($("stats").textContent).toContain("1 prompt + 2 completion tokens");
    expect($button("regenerate").disabled).toBe(false);
  });

  it("replaces the live turn when the finished turn arrives", () => {
    model.custom({ type: "start", turn: { id: "t1", user: "Hi" } });
    model.custom({ type: "ops", id: "t1", ops: [["text", "**Hel"]] });
    model.update("transcript", [finished]);
    expect($$("turn")).toHaveLength(1);
    expect($("content").textContent.trim()).toBe("Hello");
  });

  it("keeps the live turn below earlier turns when they change", () => {
    model.custom({ type: "start", turn: { id: "t2", user: "Again" } });
    model.update("transcript", [finished]);
    expect($$("user-message").map((n) => n.textContent)).toEqual(["Hi", "Again"]);
  });

  it("regenerate and clear send their requests", () => {
    cleanup();
    mount({ transcript: [finished] });
    $("clear").click();
    expect(model.sent).toEqual([{ type: "clear" }]);
    $("regenerate").click();
    expect(model.sent.at(-1)).toEqual({ type: "regenerate" });
    expect($button("regenerate").disabled).toBe(true);
  });

  it("clearing shows the empty state", () => {
    cleanup();
    mount({ transcript: [finished] });
    model.update("transcript", []);
    expect($$("turn")).toHaveLength(0);
    expect($$("empty")).toHaveLength(1);
    expect($button("regenerate").disabled).toBe(true);
  });
});

it("unmounting removes the DOM and every listener", () => {
  expect(model.listenerCount).toBeGreaterThan(0);
  cleanup();
  expect(model.listenerCount).toBe(0);
  expect(el.children).toHaveLength(0);
  cleanup = () => {};
});
