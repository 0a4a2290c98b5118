// @ts-check
// Answers back into the notebook: each code block of an answer gets Copy and "Insert as new
// cell". The cell goes below the widget's own cell, through the notebook's shared model, which
// JupyterLab and Notebook 7 hand to ipywidgets' manager (`model.widget_manager.context`); where
// there is no such notebook (another front end, an output view moved out of its cell) the code
// is copied instead and the notice says so.

import { h } from "./dom.js";

/** The event a code block's Insert button raises; the view (which knows its model) handles it. */
export const INSERT_EVENT = "mlxnb-insert-cell";

/**
 * @typedef {{code: string, button: HTMLButtonElement}} InsertDetail
 * @typedef {{cell_type: string}} SharedCell
 * @typedef {{
 *   cells: SharedCell[],
 *   insertCell(index: number, cell: {cell_type: "code", source: string}): unknown
 * }} SharedNotebook
 */

/**
 * @param {string} text
 * @returns {Promise<void>}
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused to copy");
}

/**
 * Say on a button what its click did, then put its label back.
 * @param {HTMLButtonElement} button
 * @param {string} text
 */
function flash(button, text) {
  const label = button.dataset.label ?? button.textContent ?? "";
  button.dataset.label = label;
  button.textContent = text;
  setTimeout(() => {
    button.textContent = label;
  }, 1500);
}

/**
 * Give a rendered code block its Copy and "Insert as new cell" buttons.
 * @param {HTMLPreElement} pre
 */
export function addCodeActions(pre) {
  const code = pre.textContent ?? "";
  const bar = h("div", { class: "mlxnb-code-actions" });
  const copy = h("button", { class: "mlxnb-copy", "data-testid": "copy", type: "button" }, "Copy");
  copy.addEventListener("click", () => {
    copyText(code).then(
      () => flash(copy, "Copied"),
      () => flash(copy, "Copy failed"),
    );
  });
  const insert = h(
    "button",
    {
      class: "mlxnb-copy",
      "data-testid": "insert-cell",
      type: "button",
      title: "Insert this code as a new cell below the chat's cell",
    },
    "Insert as new cell",
  );
  insert.addEventListener("click", () => {
    /** @type {InsertDetail} */
    const detail = { code, button: insert };
    insert.dispatchEvent(new CustomEvent(INSERT_EVENT, { bubbles: true, detail }));
  });
  bar.append(copy, insert);
  pre.prepend(bar);
}

/**
 * The notebook the widget's manager belongs to (JupyterLab, Notebook 7), or null.
 * @param {unknown} manager anywidget's `model.widget_manager`
 * @returns {SharedNotebook | null}
 */
export function sharedNotebook(manager) {
  const context = /** @type {{context?: {model?: {sharedModel?: unknown}}} | undefined} */ (manager)
    ?.context;
  const shared = /** @type {Partial<SharedNotebook> | undefined} */ (context?.model?.sharedModel);
  if (!shared || typeof shared.insertCell !== "function" || !Array.isArray(shared.cells)) {
    return null;
  }
  return /** @type {SharedNotebook} */ (shared);
}

/**
 * The index of the notebook cell that shows `el` (JupyterLab's cells carry their index), or -1.
 * @param {HTMLElement} el
 * @returns {number}
 */
export function cellIndex(el) {
  const raw = el.closest(".jp-Cell")?.getAttribute("data-windowed-list-index");
  const index = raw ? Number(raw) : Number.NaN;
  return Number.isInteger(index) && index >= 0 ? index : -1;
}

/**
 * Insert code as a new code cell right below the widget's cell.
 * @param {unknown} manager anywidget's `model.widget_manager`
 * @param {HTMLElement} el the widget's element
 * @param {string} code
 * @returns {boolean} false when there is no notebook cell to insert below
 */
export function insertBelow(manager, el, code) {
  const notebook = sharedNotebook(manager);
  const index = cellIndex(el);
  if (!notebook || index < 0 || notebook.cells[index]?.cell_type !== "code") return false;
  notebook.insertCell(index + 1, { cell_type: "code", source: code.replace(/\n$/, "") });
  return true;
}

/**
 * Handle the Insert buttons of every code block under `root`.
 * @param {HTMLElement} root
 * @param {() => unknown} manager anywidget's `model.widget_manager`, read at click time
 * @param {(text: string) => void} notify shows a notice
 */
export function handleInserts(root, manager, notify) {
  root.addEventListener(INSERT_EVENT, (event) => {
    const { code, button } = /** @type {CustomEvent<InsertDetail>} */ (event).detail;
    if (insertBelow(manager(), root, code)) {
      flash(button, "Inserted");
      notify("");
      return;
    }
    copyText(code).then(
      () => {
        flash(button, "Copied");
        notify("No notebook cell to insert into here: the code was copied instead.");
      },
      () => notify("No notebook cell to insert into here, and copying failed."),
    );
  });
}
