// @ts-check
// One turn's DOM: the user's message, then the assistant's answer (its model, parts, error and
// statistics). Every piece of model output goes in as text, or through renderMarkdown's
// sanitiser; images only as `data:` URLs (isImageDataUrl).

import { addCodeActions } from "./codeblocks.js";
import { h } from "./dom.js";
import {
  describeTool,
  formatStats,
  leftOutLabel,
  shortModelName,
  thinkingLabel,
} from "./format.js";
import { isImageDataUrl } from "./images.js";
import { renderMarkdown } from "./markdown.js";
import { contextBlock } from "./mentions.js";
import { continueButton, editButton, updateToolExtras } from "./steer.js";

/**
 * @typedef {import("./protocol.js").Turn} Turn
 * @typedef {import("./protocol.js").Part} Part
 * @typedef {import("./steer.js").TurnActions} TurnActions
 */

/**
 * Render markdown into `node` and give every code block its Copy and Insert buttons.
 * @param {HTMLElement} node
 * @param {string} text
 */
function fillMarkdown(node, text) {
  node.innerHTML = renderMarkdown(text);
  for (const pre of node.querySelectorAll("pre")) addCodeActions(pre);
}

/**
 * A DOM node for one part; `updatePart` fills it.
 * @param {Part} part
 * @returns {HTMLElement}
 */
function createPart(part) {
  if (part.kind === "thinking") {
    const details = h("details", { class: "mlxnb-thinking", "data-testid": "thinking" });
    const summary = h("summary", { "data-testid": "thinking-summary" });
    details.append(summary);
    details.append(h("div", { class: "mlxnb-thinking-text", "data-testid": "thinking-text" }));
    // Only a person opens or closes the pane by the summary (a click, or Enter/Space, which
    // click it); from then on the stream leaves it as they set it. "toggle" events cannot
    // tell: they fire later, for programmatic changes too, and two quick changes race.
    summary.addEventListener("click", () => {
      details.dataset.touched = "1";
    });
    return details;
  }
  if (part.kind === "content") {
    return h("div", { class: "mlxnb-content mlxnb-markdown", "data-testid": "content" });
  }
  const box = h("div", { class: "mlxnb-tool", "data-testid": "tool-call" });
  const head = h("div", { class: "mlxnb-tool-head" });
  head.append(h("span", { class: "mlxnb-tool-label" }, "tool"));
  head.append(h("code", { class: "mlxnb-tool-name", "data-testid": "tool-name" }));
  head.append(h("span", { class: "mlxnb-badge", "data-testid": "tool-status" }));
  box.append(head);
  box.append(h("pre", { class: "mlxnb-tool-args", "data-testid": "tool-args" }));
  box.append(h("pre", { class: "mlxnb-tool-result", "data-testid": "tool-result", hidden: "" }));
  return box;
}

/**
 * @param {HTMLElement} node
 * @param {boolean} open
 */
function setOpen(node, open) {
  const details = /** @type {HTMLDetailsElement} */ (node);
  if (details.open !== open && !details.dataset.touched) {
    details.open = open;
  }
}

/**
 * Bring a part's node up to date (markdown is re-rendered only when its text changed).
 * @param {HTMLElement} node
 * @param {Part} part
 */
function updatePart(node, part) {
  if (part.kind === "thinking") {
    const live = part.seconds === null;
    node.dataset.state = live ? "live" : "done";
    /** @type {HTMLElement} */ (node.firstChild).textContent = thinkingLabel(part.seconds);
    /** @type {HTMLElement} */ (node.lastChild).textContent = part.text;
    setOpen(node, live);
    return;
  }
  if (part.kind === "content") {
    if (node.dataset.rendered !== String(part.text.length)) {
      fillMarkdown(node, part.text);
      node.dataset.rendered = String(part.text.length);
    }
    return;
  }
  const { name, args } = describeTool(part);
  node.dataset.status = part.status;
  const q = (/** @type {string} */ id) =>
    /** @type {HTMLElement} */ (node.querySelector(`[data-testid="${id}"]`));
  q("tool-name").textContent = name;
  q("tool-status").textContent = part.status;
  q("tool-args").textContent = args;
  const result = q("tool-result");
  const shown = part.error ?? part.result;
  result.hidden = shown === null;
  result.textContent = shown ?? "";
  result.classList.toggle("mlxnb-tool-failed", part.error !== null);
}

/**
 * The user's message: thumbnails of its images (if any), then its text.
 * @param {Turn} turn
 * @returns {HTMLElement}
 */
function userMessage(turn) {
  const node = h("div", { class: "mlxnb-msg mlxnb-user", "data-testid": "user-message" });
  const images = (turn.images ?? []).filter(isImageDataUrl);
  if (images.length) {
    const row = h("div", { class: "mlxnb-user-images", "data-testid": "user-images" });
    images.forEach((url, i) => {
      const alt =
        images.length > 1 ? `Attached image ${i + 1} of ${images.length}` : "Attached image";
      row.append(
        h("img", { src: url, alt, class: "mlxnb-user-image", "data-testid": "user-image" }),
      );
    });
    node.append(row);
  }
  if (turn.user) node.append(document.createTextNode(turn.user));
  const context = contextBlock(turn.context ?? [], isImageDataUrl);
  if (context) node.append(context);
  return node;
}

/**
 * One turn's DOM: a divider when the request left earlier messages out, the user's message,
 * then the assistant's answer: the model that wrote it, its parts, error and stats.
 */
export class TurnView {
  /**
   * @param {Turn} turn
   * @param {TurnActions} [actions] what the turn may ask of the kernel (steer.js)
   */
  constructor(turn, actions = {}) {
    this.turn = turn;
    this.actions = actions;
    /** @type {HTMLElement[]} */
    this.partNodes = [];
    this.el = h("div", { class: "mlxnb-turn", "data-testid": "turn", "data-turn-id": turn.id });
    this.leftOut = h("div", {
      class: "mlxnb-left-out",
      "data-testid": "left-out",
      role: "note",
      hidden: "",
    });
    const message = userMessage(turn);
    this.el.append(this.leftOut, message);
    if (actions.edit) this.el.append(editButton(message, turn.user, actions.edit));
    this.body = h("div", {
      class: "mlxnb-msg mlxnb-assistant",
      "data-testid": "assistant-message",
    });
    if (turn.model) {
      const label = h(
        "div",
        { class: "mlxnb-answer-model", "data-testid": "answer-model", title: turn.model },
        shortModelName(turn.model),
      );
      this.body.append(label);
    }
    this.parts = h("div", { class: "mlxnb-parts" });
    this.error = h("div", { class: "mlxnb-error", "data-testid": "turn-error", hidden: "" });
    this.stats = h("div", { class: "mlxnb-stats", "data-testid": "stats" });
    this.body.append(this.parts, this.error, this.stats);
    this.continue = actions.continue ? continueButton(actions.continue) : null;
    if (this.continue) this.body.append(this.continue);
    this.el.append(this.body);
    for (let i = 0; i < turn.parts.length; i++) this.updatePart(i);
    this.updateTurn();
  }

  /** @param {number} index */
  updatePart(index) {
    const part = this.turn.parts[index];
    if (!part) return;
    let node = this.partNodes[index];
    if (!node) {
      node = createPart(part);
      this.partNodes[index] = node;
      this.parts.append(node);
    }
    updatePart(node, part);
    if (part.kind === "tool") updateToolExtras(node, part, this.actions.approve);
  }

  updateTurn() {
    const { status, error, stats } = this.turn;
    this.el.dataset.status = status;
    const leftOut = this.turn.left_out ?? 0;
    this.leftOut.hidden = leftOut <= 0;
    this.leftOut.textContent = leftOut > 0 ? leftOutLabel(leftOut) : "";
    this.error.hidden = !error;
    this.error.textContent = error ?? "";
    let text = formatStats(stats);
    if (status === "cancelled") text = text ? `stopped · ${text}` : "stopped";
    this.stats.textContent = text;
    if (this.continue) {
      this.continue.hidden = !(status === "done" && stats?.finish_reason === "length");
    }
  }

  /** @param {Set<number>} changed */
  update(changed) {
    for (const index of changed) {
      if (index === -1) this.updateTurn();
      else this.updatePart(index);
    }
  }
}
