// @ts-check
// The user's say over a turn, drawn into turn.js's DOM: Run / Deny on a tool call waiting for
// approval, what a tool printed and returned (a table, a figure), Continue on an answer cut by
// max_tokens, and editing a user message to send it again. Everything goes in as text; images
// only as `data:` URLs (isImageDataUrl).

import { h } from "./dom.js";
import { isImageDataUrl } from "./images.js";

/**
 * @typedef {import("./protocol.js").ToolPart} ToolPart
 * @typedef {import("./protocol.js").ToolOutput} ToolOutput
 * What a turn's view may ask of the kernel; each is left out where it does not apply.
 * @typedef {{
 *   approve?: (id: string, run: boolean) => void,
 *   edit?: (text: string) => void,
 *   continue?: () => void
 * }} TurnActions
 */

/**
 * The child of `node` with this test id, made by `make` (and appended) when missing.
 * @param {HTMLElement} node
 * @param {string} testid
 * @param {() => HTMLElement} make
 * @returns {HTMLElement}
 */
function child(node, testid, make) {
  const found = node.querySelector(`:scope > [data-testid="${testid}"]`);
  if (found) return /** @type {HTMLElement} */ (found);
  const made = make();
  node.append(made);
  return made;
}

/**
 * Run / Deny under a pending call (only while `approve` can answer), and the call's output.
 * @param {HTMLElement} node the tool pane (turn.js)
 * @param {ToolPart} part
 * @param {TurnActions["approve"]} approve
 */
export function updateToolExtras(node, part, approve) {
  const waiting = part.status === "pending" && approve !== undefined && part.id !== null;
  const existing = node.querySelector(':scope > [data-testid="tool-approval"]');
  if (waiting && !existing) {
    const row = h("div", { class: "mlxnb-tool-approval", "data-testid": "tool-approval" });
    row.append(h("span", { class: "mlxnb-tool-ask" }, "Run this call?"));
    const answer = (/** @type {boolean} */ run) => () => {
      for (const button of row.querySelectorAll("button")) button.disabled = true;
      if (approve && part.id !== null) approve(part.id, run);
    };
    const run = h(
      "button",
      { type: "button", class: "mlxnb-button mlxnb-primary", "data-testid": "tool-run" },
      "Run",
    );
    const deny = h(
      "button",
      { type: "button", class: "mlxnb-button", "data-testid": "tool-deny" },
      "Deny",
    );
    run.addEventListener("click", answer(true));
    deny.addEventListener("click", answer(false));
    row.append(run, deny);
    node.append(row);
  } else if (!waiting && existing) {
    existing.remove();
  }
  if (part.output) {
    const box = child(node, "tool-output", () =>
      h("div", { class: "mlxnb-tool-output", "data-testid": "tool-output" }),
    );
    if (box.dataset.filled !== "1") {
      fillToolOutput(box, part.output);
      box.dataset.filled = "1";
    }
  }
}

/**
 * What a tool printed (a `pre`), then its table or its figure.
 * @param {HTMLElement} box
 * @param {ToolOutput} output
 */
export function fillToolOutput(box, output) {
  box.replaceChildren();
  if (output.stdout) {
    box.append(
      h("pre", { class: "mlxnb-tool-stdout", "data-testid": "tool-stdout" }, output.stdout),
    );
  }
  const table = output.table;
  if (table) {
    const wrap = h("div", { class: "mlxnb-tool-table-wrap" });
    const grid = h("table", { class: "mlxnb-tool-table", "data-testid": "tool-table" });
    const head = h("tr");
    head.append(h("th"));
    for (const column of table.columns) head.append(h("th", {}, column));
    grid.append(head);
    table.rows.forEach((row, i) => {
      const line = h("tr");
      line.append(h("th", {}, table.index[i] ?? ""));
      for (const cell of row) line.append(h("td", {}, cell));
      grid.append(line);
    });
    wrap.append(grid);
    const [rows, columns] = table.shape;
    if (rows > table.rows.length || columns > table.columns.length) {
      const note = `${rows} rows × ${columns} columns (first ${table.rows.length} × ${table.columns.length} shown)`;
      wrap.append(
        h("div", { class: "mlxnb-tool-table-note", "data-testid": "tool-table-note" }, note),
      );
    }
    box.append(wrap);
  }
  if (output.image && isImageDataUrl(output.image)) {
    box.append(
      h("img", {
        src: output.image,
        alt: "Figure returned by the tool",
        class: "mlxnb-tool-image",
        "data-testid": "tool-image",
      }),
    );
  }
}

/**
 * An Edit button for a user message: it swaps the message for a text box with Send and Cancel.
 * @param {HTMLElement} message the user message's node
 * @param {string} text its text as written
 * @param {(text: string) => void} send
 * @returns {HTMLElement} the button (append it next to the message)
 */
export function editButton(message, text, send) {
  const button = h(
    "button",
    { type: "button", class: "mlxnb-link-button", "data-testid": "edit", title: "Edit and resend" },
    "Edit",
  );
  button.addEventListener("click", () => {
    const form = h("div", { class: "mlxnb-edit", "data-testid": "edit-form" });
    const box = h("textarea", { class: "mlxnb-input", "data-testid": "edit-input", rows: "2" });
    box.value = text;
    const resend = h(
      "button",
      { type: "button", class: "mlxnb-button mlxnb-primary", "data-testid": "edit-send" },
      "Send",
    );
    const cancel = h(
      "button",
      { type: "button", class: "mlxnb-button", "data-testid": "edit-cancel" },
      "Cancel",
    );
    const close = () => {
      form.remove();
      message.hidden = false;
      button.hidden = false;
    };
    resend.addEventListener("click", () => {
      if (!box.value.trim()) return;
      send(box.value);
      resend.disabled = true;
    });
    cancel.addEventListener("click", close);
    box.addEventListener("keydown", (event) => {
      event.stopPropagation(); // keep JupyterLab's shortcuts out of the text box
      if (event.key === "Escape") close();
    });
    form.append(box, resend, cancel);
    message.hidden = true;
    button.hidden = true;
    message.after(form);
    box.focus();
  });
  return button;
}

/**
 * The Continue button under an answer cut by max_tokens.
 * @param {() => void} carryOn
 * @returns {HTMLButtonElement}
 */
export function continueButton(carryOn) {
  const button = h(
    "button",
    {
      type: "button",
      class: "mlxnb-button mlxnb-continue",
      "data-testid": "continue",
      title: "The answer stopped at max_tokens: carry on from where it stopped",
    },
    "Continue",
  );
  button.addEventListener("click", () => {
    button.disabled = true;
    carryOn();
  });
  return button;
}
