// @ts-check
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { completeMention, matchNames, mentionAt } from "../src/mentions.js";
import { FakeModel } from "./fake-model.js";

/** @typedef {import("../src/protocol.js").Turn} Turn */

describe("mentionAt", () => {
  it.each([
    ["@", 1, { start: 0, prefix: "" }],
    ["look at @d", 10, { start: 8, prefix: "d" }],
    ["(@df_2", 6, { start: 1, prefix: "df_2" }],
    ["line\n@x", 7, { start: 5, prefix: "x" }],
  ])("%j at %i is a mention", (text, caret, expected) => {
    expect(mentionAt(text, caret)).toEqual(expected);
  });

  it.each([
    ["me@host", 7],
    ["@df ", 4],
    ["a.@b", 4],
    ["@@x", 3],
    ["@1x", 3],
    ["no mention", 10],
  ])("%j at %i is not", (text, caret) => {
    expect(mentionAt(text, caret)).toBeNull();
  });
});

describe("matchNames", () => {
  /** @type {Array<[string, string]>} */
  const names = [
    ["area", "function"],
    ["df", "DataFrame 2x2"],
    ["old_df", "DataFrame 1x1"],
    ["Dfx", "int"],
  ];
  it("puts names that start with the prefix first, then those containing it", () => {
    expect(matchNames(names, "df").map(([n]) => n)).toEqual(["df", "Dfx", "old_df"]);
    expect(matchNames(names, "").length).toBe(4);
    expect(matchNames(names, "zz")).toEqual([]);
    expect(matchNames(names, "", 2).length).toBe(2);
  });
});

describe("completeMention", () => {
  it("replaces the typed prefix (and the rest of the word) and adds a space", () => {
    expect(completeMention("see @d", 4, 6, "df")).toEqual({ text: "see @df ", caret: 8 });
    expect(completeMention("see @dxx now", 4, 6, "df")).toEqual({
      text: "see @df now",
      caret: 8,
    });
  });
});

describe("in the view", () => {
  /** @type {FakeModel} */
  let model;
  /** @type {HTMLElement} */
  let el;
  /** @type {() => void} */
  let cleanup = () => {};

  beforeEach(() => {
    model = new FakeModel();
    el = document.createElement("div");
    document.body.append(el);
    cleanup = widget.render({ model, el });
  });
  afterEach(() => {
    cleanup();
    el.remove();
  });

  const input = () =>
    /** @type {HTMLTextAreaElement} */ (el.querySelector('[data-testid="input"]'));
  const list = () => /** @type {HTMLElement} */ (el.querySelector('[data-testid="mention-list"]'));
  const options = () =>
    [...el.querySelectorAll('[data-testid="mention-option"]')].map((o) =>
      o.getAttribute("data-name"),
    );
  /** @param {string} text */
  function type(text) {
    const box = input();
    box.focus();
    box.value = text;
    box.setSelectionRange(text.length, text.length);
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }
  /** @param {string} key */
  function press(key) {
    const event = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true });
    input().dispatchEvent(event);
    return event;
  }
  const names = () =>
    model.custom({
      type: "names",
      names: [
        ["area", "function"],
        ["df", "DataFrame 2x2"],
        ["dogs", "list"],
      ],
    });

  it("typing @ asks the kernel once per mention, then filters its names", () => {
    type("Plot @");
    expect(model.sent).toEqual([{ type: "names" }]);
    expect(list().hidden).toBe(true);
    names();
    expect(options()).toEqual(["area", "df", "dogs"]);
    type("Plot @d");
    expect(model.sent.length).toBe(1);
    expect(options()).toEqual(["df", "dogs"]);
    expect(list().textContent).toContain("DataFrame 2x2");
    type("Plot @dz");
    expect(list().hidden).toBe(true);
  });

  it("Enter picks the highlighted name instead of sending", () => {
    type("Plot @d");
    names();
    press("ArrowDown");
    expect(input().getAttribute("aria-expanded")).toBe("true");
    const active = input().getAttribute("aria-activedescendant") ?? "";
    expect(document.getElementById(active)?.getAttribute("data-name")).toBe("dogs");
    const event = press("Enter");
    expect(event.defaultPrevented).toBe(true);
    expect(input().value).toBe("Plot @dogs ");
    expect(list().hidden).toBe(true);
    expect(input().getAttribute("aria-expanded")).toBe("false");
    expect(model.sent).toEqual([{ type: "names" }]);
    press("Enter");
    expect(model.sent.at(-1)).toEqual({ type: "send", text: "Plot @dogs " });
  });

  it("Escape closes the list; a click on a name picks it", () => {
    type("@");
    names();
    press("Escape");
    expect(list().hidden).toBe(true);
    type("see @a");
    names();
    const option = /** @type {HTMLElement} */ (
      el.querySelector('[data-testid="mention-option"][data-name="area"]')
    );
    option.dispatchEvent(new MouseEvent("mousedown", { bubbles: true, cancelable: true }));
    expect(input().value).toBe("see @area ");
  });

  it("a message shows what its mentions inserted, and notes unknown names", () => {
    /** @type {Turn} */
    const turn = {
      id: "t1",
      user: "Summarise @df and @ghost",
      context: [
        { name: "df", kind: "DataFrame 2x2", text: "df: pandas DataFrame", found: true },
        { name: "ghost", kind: "", text: "no variable of this name", found: false },
      ],
      parts: [],
      status: "done",
      error: null,
      stats: null,
    };
    model.update("transcript", [turn]);
    const item = /** @type {HTMLDetailsElement} */ (
      el.querySelector('[data-testid="context-item"]')
    );
    expect(item.open).toBe(false);
    expect(item.querySelector("summary")?.textContent).toBe("@df · DataFrame 2x2");
    expect(item.querySelector("pre")?.textContent).toBe("df: pandas DataFrame");
    expect(el.querySelector('[data-testid="context-missing"]')?.textContent).toBe(
      "@ghost: no variable of this name",
    );
  });

  it("the live turn shows its context from the start message", () => {
    model.custom({
      type: "start",
      turn: {
        id: "t2",
        user: "@x?",
        context: [{ name: "x", kind: "int", text: "x: int = 3", found: true }],
      },
    });
    expect(el.querySelector('[data-testid="context-text"]')?.textContent).toBe("x: int = 3");
  });
});
