// @ts-check
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cellIndex, insertBelow, sharedNotebook } from "../src/codeblocks.js";
import { exportName } from "../src/export.js";
import { ChatView } from "../src/view.js";
import { FakeModel } from "./fake-model.js";

/** @typedef {import("../src/protocol.js").Turn} Turn */

/** A notebook's shared model as JupyterLab gives it to ipywidgets' manager: cells, insertCell. */
class FakeNotebook {
  /** @param {string[]} kinds */
  constructor(kinds) {
    this.cells = kinds.map((cell_type) => ({ cell_type, source: "" }));
  }
  /**
   * @param {number} index
   * @param {{cell_type: string, source: string}} cell
   */
  insertCell(index, cell) {
    this.cells.splice(index, 0, cell);
  }
}

/** @param {FakeNotebook} notebook */
const manager = (notebook) => ({ context: { model: { sharedModel: notebook } } });

/**
 * An element inside a JupyterLab cell's DOM (the cell carries its index).
 * @param {number | null} index
 */
function inCell(index) {
  const cell = document.createElement("div");
  cell.className = "jp-Cell";
  if (index !== null) cell.setAttribute("data-windowed-list-index", String(index));
  const el = document.createElement("div");
  cell.append(el);
  document.body.append(cell);
  return el;
}

afterEach(() => document.body.replaceChildren());

describe("insertBelow", () => {
  it("inserts a code cell right below the widget's cell", () => {
    const notebook = new FakeNotebook(["markdown", "code", "code"]);
    expect(insertBelow(manager(notebook), inCell(1), "print(1)\n")).toBe(true);
    expect(notebook.cells.map((c) => c.cell_type)).toEqual(["markdown", "code", "code", "code"]);
    expect(notebook.cells[2]).toEqual({ cell_type: "code", source: "print(1)" });
  });

  it("refuses without a notebook, outside a cell, or below a cell that is not code", () => {
    const notebook = new FakeNotebook(["markdown", "code"]);
    expect(insertBelow(undefined, inCell(1), "x")).toBe(false);
    expect(insertBelow({ context: {} }, inCell(1), "x")).toBe(false);
    expect(insertBelow(manager(notebook), document.createElement("div"), "x")).toBe(false);
    expect(insertBelow(manager(notebook), inCell(null), "x")).toBe(false);
    expect(insertBelow(manager(notebook), inCell(0), "x")).toBe(false);
    expect(notebook.cells.length).toBe(2);
  });

  it("reads the shared model and the cell index defensively", () => {
    expect(sharedNotebook({ context: { model: { sharedModel: { cells: [] } } } })).toBeNull();
    expect(cellIndex(inCell(3))).toBe(3);
    expect(cellIndex(inCell(null))).toBe(-1);
  });
});

describe("in the view", () => {
  /** @type {FakeModel & {widget_manager?: unknown}} */
  let model;
  /** @type {ChatView} */
  let view;
  /** @type {FakeNotebook} */
  let notebook;

  /** @type {Turn} */
  const turn = {
    id: "t1",
    user: "code?",
    parts: [{ kind: "content", text: "Run:\n\n```python\nx = 1\n```\n" }],
    status: "done",
    error: null,
    stats: null,
  };

  beforeEach(() => {
    notebook = new FakeNotebook(["code"]);
    model = new FakeModel({ transcript: [turn] });
    model.widget_manager = manager(notebook);
    view = new ChatView(model, inCell(0));
  });
  afterEach(() => view.destroy());

  const button = (/** @type {string} */ id) =>
    /** @type {HTMLButtonElement} */ (view.root.querySelector(`[data-testid="${id}"]`));

  it("each code block has Copy and Insert; Insert adds the cell below", () => {
    expect(button("copy").textContent).toBe("Copy");
    button("insert-cell").click();
    expect(notebook.cells).toEqual([
      { cell_type: "code", source: "" },
      { cell_type: "code", source: "x = 1" },
    ]);
    expect(button("insert-cell").textContent).toBe("Inserted");
  });

  it("without a notebook the code is copied instead, and the notice says so", async () => {
    model.widget_manager = undefined;
    button("insert-cell").click();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(button("notice").textContent).toMatch(/^No notebook cell to insert into here/);
    expect(notebook.cells.length).toBe(1);
  });

  it("Export asks the kernel and saves its markdown as a file", () => {
    /** @type {Array<[string, string]>} */
    const saved = [];
    view.exporter.save = (name, text) => saved.push([name, text]);
    expect(button("export").disabled).toBe(false);
    button("export").click();
    expect(model.sent).toEqual([{ type: "export" }]);
    model.custom({ type: "export", markdown: "# Chat\n" });
    expect(saved).toEqual([[saved[0][0], "# Chat\n"]]);
    expect(saved[0][0]).toMatch(/^chat-\d{4}-\d\d-\d\d-\d{4}\.md$/);
    model.update("transcript", []);
    expect(button("export").disabled).toBe(true);
  });
});

it("an export is named by its date and time", () => {
  expect(exportName(new Date(2026, 0, 2, 3, 4))).toBe("chat-2026-01-02-0304.md");
});
