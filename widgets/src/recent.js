// @ts-check
// The header's Recent menu: saved conversations (the `recent` trait, newest first); choosing one
// asks the kernel to resume it, which redraws the transcript with its thinking and tool panes.

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
    this.select.addEventListener("focus", () => actions.opening());
    /** @type {string} */
    this.shown = "";
    this.update([], "", false);
  }

  /**
   * @param {RecentConversation[]} conversations
   * @param {string} current The conversation shown now (marked in the list).
   * @param {boolean} disabled
   */
  update(conversations, current, disabled) {
    const key = JSON.stringify([conversations, current]);
    if (key !== this.shown) {
      const options = conversations.map((c) => {
        const when = c.updated_at.slice(0, 16).replace("T", " ");
        const label = `${c.id === current ? "• " : ""}${c.title || "(untitled)"}`;
        const title = `${c.title}\n${c.model} · ${c.turns} turns · ${when} UTC`;
        return h("option", { value: c.id, title, "data-id": c.id }, label);
      });
      this.select.replaceChildren(h("option", { value: "" }, PROMPT), ...options);
      this.shown = key;
    }
    this.select.value = "";
    this.select.disabled = disabled;
  }
}
