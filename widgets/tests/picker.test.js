// @ts-check
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { leftOutLabel, progressLabel } from "../src/format.js";
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
let cleanup = () => {};

/** @param {Partial<WidgetState>} [state] */
function mount(state) {
  model = new FakeModel(state);
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const node = el.querySelector(`[data-testid="${id}"]`);
  if (!(node instanceof HTMLElement)) throw new Error(`no element with data-testid="${id}"`);
  return node;
}
const $picker = () => /** @type {HTMLSelectElement} */ ($("model-picker"));
/** @param {string} id */
const $$ = (id) => [...el.querySelectorAll(`[data-testid="${id}"]`)];

beforeEach(() => mount({ models: ["tiny-model", "coder", "org/big-model"] }));
afterEach(() => {
  cleanup();
  el.remove();
});

describe("model picker", () => {
  it("lists the models with the current one selected, in place of the name", () => {
    expect($picker().hidden).toBe(false);
    expect([...$picker().options].map((o) => o.value)).toEqual([
      "tiny-model",
      "coder",
      "org/big-model",
    ]);
    expect($picker().value).toBe("tiny-model");
    expect($("model").hidden).toBe(true);
  });

  it("is hidden when there is only one choice", () => {
    cleanup();
    mount({ models: ["tiny-model"] });
    expect($picker().hidden).toBe(true);
    expect($("model").hidden).toBe(false);
  });

  it("sends the picked name; opening it asks for a fresh list", () => {
    $picker().dispatchEvent(new FocusEvent("focus"));
    $picker().value = "coder";
    $picker().dispatchEvent(new Event("change"));
    expect(model.sent).toEqual([{ type: "models" }, { type: "model", name: "coder" }]);
  });

  it("follows the kernel's model, and goes back after a refused switch", () => {
    model.update("model_name", "coder");
    expect($picker().value).toBe("coder");
    $picker().value = "org/big-model";
    $picker().dispatchEvent(new Event("change"));
    model.custom({ type: "refused", message: "a reply is being generated" });
    expect($picker().value).toBe("coder");
    expect($("notice").textContent).toBe("a reply is being generated");
  });

  it("is disabled while a reply streams", () => {
    model.update("status", "generating");
    expect($picker().disabled).toBe(true);
    model.update("status", "ready");
    expect($picker().disabled).toBe(false);
  });

  it("a new list keeps the current model listed", () => {
    model.update("models", ["coder"]);
    expect([...$picker().options].map((o) => o.value)).toEqual(["tiny-model", "coder"]);
  });
});

describe("load progress", () => {
  it("shows the stage and fraction, then hides when done", () => {
    expect($("load-progress").hidden).toBe(true);
    model.update("load_progress", {
      model: "org/big-model",
      stage: "downloading",
      fraction: 0.25,
      message: "",
    });
    expect($("load-progress").hidden).toBe(false);
    expect($("load-progress-text").textContent).toBe("Downloading org/big-model… 25%");
    expect($("load-progress").getAttribute("aria-valuenow")).toBe("25");
    model.update("load_progress", {
      model: "coder",
      stage: "loading",
      fraction: null,
      message: "",
    });
    expect($("load-progress-text").textContent).toBe("Loading coder…");
    expect($("load-progress").dataset.indeterminate).toBe("1");
    model.update("load_progress", {});
    expect($("load-progress").hidden).toBe(true);
  });
});

describe("answers", () => {
  /** @type {Turn} */
  const older = {
    id: "t1",
    user: "Hi",
    model: "tiny-model",
    parts: [{ kind: "content", text: "Hello" }],
    status: "done",
    error: null,
    stats: null,
  };

  it("each answer shows the model that wrote it; old transcripts without one still render", () => {
    cleanup();
    /** @type {Turn} */
    const legacy = { ...older, id: "t0", model: undefined };
    delete legacy.model;
    mount({ transcript: [legacy, older] });
    expect($$("turn")).toHaveLength(2);
    expect($$("answer-model").map((n) => n.textContent)).toEqual(["tiny-model"]);
  });

  it("the live turn is labelled from its start message", () => {
    model.custom({ type: "start", turn: { id: "t2", user: "Again", model: "/models/coder-7b" } });
    expect($("answer-model").textContent).toBe("coder-7b");
    expect($("answer-model").title).toBe("/models/coder-7b");
  });

  it("a left_out op draws a divider above the turn", () => {
    model.custom({ type: "start", turn: { id: "t2", user: "Again", model: "coder" } });
    expect($("left-out").hidden).toBe(true);
    model.custom({ type: "ops", id: "t2", ops: [["left_out", 3]] });
    expect($("left-out").hidden).toBe(false);
    expect($("left-out").textContent).toBe("3 earlier messages left out to fit the context");
  });
});

describe("labels", () => {
  it("left out", () => {
    expect(leftOutLabel(1)).toBe("1 earlier message left out to fit the context");
    expect(leftOutLabel(4)).toBe("4 earlier messages left out to fit the context");
  });

  it("progress", () => {
    expect(progressLabel({})).toBe("");
    expect(progressLabel({ stage: "resolving", model: "a/b", fraction: null })).toBe(
      "Finding a/b…",
    );
    expect(progressLabel({ stage: "downloading", model: "/x/y", fraction: 1 })).toBe(
      "Downloading y… 100%",
    );
  });
});
