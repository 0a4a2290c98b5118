// @ts-check
// The header's Recent menu: saved conversations, newest first; choosing one asks the kernel to
// resume it, which redraws the transcript with its thinking and tool panes. The list comes as a
// `recent` message (never a synced trait: other conversations' titles stay out of the notebook
// file), asked for when the pointer reaches the menu (before a click opens it) and on focus.

import { h } from "./dom.js";

/** @typedef {import("./protocol.js").RecentConversation} RecentConversation */

const PROMPT = "Recent…";

export class RecentMenu {
  /**
   * @param {{resume: (id: string) => void, opening: () => void}} actions `resume`: the user chose
   *   a conversation; `opening`: the menu is about to open (a chance to refresh the list).
   */
  constructor(actions) {
    this.select = h("select", {
      class: "mlxnb-recent",
      "data-testid": "recent",
      "aria-label": "Recent conversations",
      title: "Go on with a saved conversation (also from before a kernel restart)",
    });
    this.select.addEventListener("change", () => {
      const id = this.select.value;
      this.select.value = "";
      if (id) actions.resume(id);
    });
    this.select.addEventListener("pointerenter", () => actions.opening());
    this.select.addEventListener("focus", () => actions.opening());
    /** @type {RecentConversation[]} */
    this.conversations = [];
    this.current = "";
    this.shown = "";
    this.draw();
  }

  /** @param {RecentConversation[]} conversations The kernel's list (a `recent` message). */
  receive(conversations) {
    this.conversations = conversations;
    this.draw();
  }

  /**
   * @param {string} current The conversation shown now (marked in the list).
   * @param {boolean} disabled
   */
  update(current, disabled) {
    this.current = current;
    this.select.disabled = disabled;
    this.draw();
  }

  draw() {
    const key = JSON.stringify([this.conversations, this.current]);
    if (key === this.shown) return;
    const options = this.conversations.map((c) => {
      const when = c.updated_at.slice(0, 16).replace("T", " ");
      const label = `${c.id === this.current ? "• " : ""}${c.title || "(untitled)"}`;
      const title = `${c.title}\n${c.model} · ${c.turns} turns · ${when} UTC`;
      return h("option", { value: c.id, title }, label);
    });
    this.select.replaceChildren(h("option", { value: "" }, PROMPT), ...options);
    this.select.value = "";
    this.shown = key;
  }
}
