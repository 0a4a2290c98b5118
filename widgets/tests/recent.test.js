// @ts-check
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { FakeModel } from "./fake-model.js";

/** @typedef {import("../src/protocol.js").WidgetState} WidgetState */

/** @type {FakeModel} */
let model;
/** @type {HTMLElement} */
let el;
/** @type {() => void} */
let cleanup = () => {};

const SAVED = [
  {
    id: "b",
    title: "Weather in Paris?",
    model: "tiny",
    turns: 2,
    updated_at: "2026-12-02T09:30:00Z",
  },
  { id: "a", title: "", model: "tiny", turns: 1, updated_at: "2026-12-01T08:00:00Z" },
];

/** @param {Partial<WidgetState>} [state] */
function mount(state) {
  model = new FakeModel(state);
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
}

const $recent = () => {
  const node = el.querySelector('[data-testid="recent"]');
  if (!(node instanceof HTMLSelectElement)) throw new Error("no Recent menu");
  return node;
};

beforeEach(() => {
  mount({ conversation_id: "b" });
  model.custom({ type: "recent", conversations: SAVED });
});
afterEach(() => {
  cleanup();
  el.remove();
});

describe("Recent menu", () => {
  it("lists the saved conversations newest first, the shown one marked", () => {
    const options = [...$recent().options];
    expect(options.map((o) => o.value)).toEqual(["", "b", "a"]);
    expect(options.map((o) => o.textContent)).toEqual([
      "Recent…",
      "• Weather in Paris?",
      "(untitled)",
    ]);
    expect(options[1].title).toContain("2 turns");
    expect($recent().value).toBe("");
  });

  it("asks for the list when the pointer comes or on focus, and resumes the chosen one", () => {
    $recent().dispatchEvent(new Event("pointerenter"));
    expect(model.sent).toEqual([{ type: "recent" }]);
    $recent().dispatchEvent(new Event("focus"));
    expect(model.sent).toEqual([{ type: "recent" }, { type: "recent" }]);
    $recent().value = "a";
    $recent().dispatchEvent(new Event("change"));
    expect(model.sent).toContainEqual({ type: "resume", id: "a" });
    expect($recent().value).toBe("");
  });

  it("follows the kernel's list and is disabled while a reply streams", () => {
    model.custom({ type: "recent", conversations: [SAVED[1]] });
    expect([...$recent().options].map((o) => o.value)).toEqual(["", "a"]);
    model.update("conversation_id", "a");
    expect($recent().options[1].textContent).toBe("• (untitled)");
    model.update("status", "generating");
    expect($recent().disabled).toBe(true);
  });
});
