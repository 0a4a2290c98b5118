// @ts-check
// Run / Deny on a pending tool call, a tool's output, Continue and edit-and-resend in the view.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { FakeModel } from "./fake-model.js";

/**
 * @typedef {import("../src/protocol.js").Turn} Turn
 * @typedef {import("../src/protocol.js").WidgetState} WidgetState
 */

/** @type {FakeModel} */
let model;
/** @type {HTMLElement} */
let el;
/** @type {() => void} */
let cleanup;

/** @param {string} id */
const $$ = (id) => /** @type {HTMLElement[]} */ ([...el.querySelectorAll(`[data-testid="${id}"]`)]);
/** @param {string} id */
function $(id) {
  const [node] = $$(id);
  if (!node) throw new Error(`no element with data-testid="${id}"`);
  return node;
}
/** @param {string} id */
const $button = (id) => /** @type {HTMLButtonElement} */ ($(id));

/** @param {Partial<WidgetState>} [state] */
function mount(state) {
  model = new FakeModel(state);
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
}

/**
 * @param {string} user
 * @param {string} text
 * @param {string} finish
 * @returns {Turn}
 */
function saved(user, text, finish = "stop") {
  return {
    id: `t-${user}`,
    user,
    parts: [{ kind: "content", text }],
    status: "done",
    error: null,
    stats: {
      ttft: 0.1,
      tps: 10,
      prompt_tokens: 5,
      completion_tokens: 6,
      seconds: 1,
      rounds: 1,
      finish_reason: finish,
    },
  };
}

beforeEach(() => mount());
afterEach(() => {
  cleanup();
  el.remove();
});

describe("tool approval", () => {
  it("a pending call shows Run and Deny, which answer it once", () => {
    model.update("status", "generating");
    model.custom({ type: "start", turn: { id: "t1", user: "Weather?" } });
    model.custom({
      type: "ops",
      id: "t1",
      ops: [
        ["tool_call", "0-0", "call_9", "get_weather", { city: "Paris" }],
        ["tool_status", "0-0", "pending"],
      ],
    });
    expect($("tool-status").textContent).toBe("pending");
    $button("tool-deny").click();
    expect(model.sent).toEqual([{ type: "approve", id: "call_9", run: false }]);
    expect($button("tool-run").disabled).toBe(true);
    model.custom({
      type: "ops",
      id: "t1",
      ops: [["tool_result", "0-0", "", "the user denied this call; the tool did not run"]],
    });
    expect($$("tool-approval")).toEqual([]);
    expect($("tool-result").textContent).toContain("denied");
  });

  it("a saved turn never shows the buttons", () => {
    const turn = saved("Weather?", "");
    turn.parts = [
      {
        kind: "tool",
        key: "0-0",
        id: "c",
        name: "f",
        arguments: {},
        raw: "",
        status: "pending",
        result: null,
        error: null,
      },
    ];
    model.update("transcript", [turn]);
    expect($$("tool-approval")).toEqual([]);
  });
});

describe("tool output", () => {
  it("shows what the tool printed, its table (as text) and its figure", () => {
    model.custom({ type: "start", turn: { id: "t1", user: "Readings?" } });
    const image = "data:image/png;base64,iVBORw0KGgo=";
    model.custom({
      type: "ops",
      id: "t1",
      ops: [
        ["tool_call", "0-0", "c1", "readings", {}],
        [
          "tool_output",
          "0-0",
          {
            stdout: "fetching\n",
            table: {
              columns: ["hour", "<b>x</b>"],
              index: ["0"],
              rows: [["1", "<img src=x>"]],
              shape: [30, 2],
            },
            image,
          },
        ],
        ["tool_result", "0-0", "(table)", null],
      ],
    });
    expect($("tool-stdout").textContent).toBe("fetching\n");
    const cells = [...$("tool-table").querySelectorAll("th, td")].map((c) => c.textContent);
    expect(cells).toEqual(["", "hour", "<b>x</b>", "0", "1", "<img src=x>"]);
    expect($("tool-table").querySelectorAll("b, img").length).toBe(0);
    expect($("tool-table-note").textContent).toBe("30 rows × 2 columns (first 1 × 2 shown)");
    expect(/** @type {HTMLImageElement} */ ($("tool-image")).src).toBe(image);
  });

  it("an image that is not a data URL is not shown", () => {
    model.custom({ type: "start", turn: { id: "t1", user: "?" } });
    model.custom({
      type: "ops",
      id: "t1",
      ops: [["tool_output", "0-0", { stdout: "", image: "https://example.com/x.png" }]],
    });
    expect($$("tool-image")).toEqual([]);
  });
});

describe("continue", () => {
  it("only the last answer, cut by max_tokens, has Continue; it sends continue", () => {
    model.update("transcript", [saved("a", "one", "length"), saved("b", "Once upon", "length")]);
    const buttons = $$("continue");
    expect(buttons.length).toBe(1);
    expect(buttons[0].hidden).toBe(false);
    buttons[0].click();
    expect(model.sent).toEqual([{ type: "continue" }]);
    expect(/** @type {HTMLButtonElement} */ (buttons[0]).disabled).toBe(true);
  });

  it("a finished answer has no visible Continue", () => {
    model.update("transcript", [saved("a", "Done.")]);
    expect($("continue").hidden).toBe(true);
  });

  it("the continued answer streams on from its parts", () => {
    model.update("transcript", []);
    model.update("status", "generating");
    model.custom({
      type: "start",
      turn: { id: "t-b", user: "b", parts: [{ kind: "content", text: "Once upon" }] },
    });
    model.custom({ type: "ops", id: "t-b", ops: [["text", " a time."]] });
    expect($("content").textContent?.trim()).toBe("Once upon a time.");
  });
});

describe("edit and resend", () => {
  it("Edit opens the message in a box; Send sends an edit of that turn", () => {
    model.update("transcript", [saved("first", "one"), saved("second", "two")]);
    $$("edit")[0].click();
    const box = /** @type {HTMLTextAreaElement} */ ($("edit-input"));
    expect(box.value).toBe("first");
    expect($$("user-message")[0].hidden).toBe(true);
    box.value = "first, reworded";
    $button("edit-send").click();
    expect(model.sent).toEqual([{ type: "edit", index: 0, text: "first, reworded" }]);
  });

  it("Cancel puts the message back; Edit is disabled while generating", () => {
    model.update("transcript", [saved("first", "one")]);
    $button("edit").click();
    $button("edit-cancel").click();
    expect($$("edit-form")).toEqual([]);
    expect($("user-message").hidden).toBe(false);
    model.update("status", "generating");
    expect($button("edit").disabled).toBe(true);
  });
});
