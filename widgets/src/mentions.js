// @ts-check
// `@name` mentions: completing the kernel's variable names while `@` is typed in the input, and
// the "context" a user message shows for what its mentions inserted. The kernel resolves the
// mentions when the message is sent (mlxnb/_widget/mentions.py); this module only helps typing
// them and shows the result.

import { h } from "./dom.js";

/**
 * @typedef {import("./protocol.js").ContextEntry} ContextEntry
 * @typedef {[name: string, kind: string]} NameEntry
 */

/**
 * The mention being typed at the caret: an `@` (at the start, or after a character that is not
 * part of a word, an address or another mention) and the name characters up to the caret.
 * @param {string} text
 * @param {number} caret
 * @returns {{start: number, prefix: string} | null} `start`: where the `@` is
 */
export function mentionAt(text, caret) {
  const match = /(?:^|[^\w@.])@([A-Za-z_]\w*)?$/.exec(text.slice(0, caret));
  if (!match) return null;
  const prefix = match[1] ?? "";
  return { start: caret - prefix.length - 1, prefix };
}

/**
 * The names a prefix matches: those that start with it first, then those that contain it
 * (case-insensitive), at most `limit`.
 * @param {NameEntry[]} names
 * @param {string} prefix
 * @param {number} [limit]
 * @returns {NameEntry[]}
 */
export function matchNames(names, prefix, limit = 8) {
  const wanted = prefix.toLowerCase();
  const starts = names.filter(([name]) => name.toLowerCase().startsWith(wanted));
  const contains = names.filter(([name]) => {
    const lower = name.toLowerCase();
    return !lower.startsWith(wanted) && lower.includes(wanted);
  });
  return [...starts, ...contains].slice(0, limit);
}

/**
 * The text with the mention at `start` completed to `@name` and a space after it.
 * @param {string} text
 * @param {number} start where the `@` is
 * @param {number} caret
 * @param {string} name
 * @returns {{text: string, caret: number}} the new text and where the caret goes
 */
export function completeMention(text, start, caret, name) {
  let end = caret;
  while (end < text.length && /\w/.test(text[end])) end += 1;
  const tail = text.slice(end);
  const inserted = `@${name}${tail.startsWith(" ") ? "" : " "}`;
  return {
    text: text.slice(0, start) + inserted + tail,
    caret: start + inserted.length + (tail.startsWith(" ") ? 1 : 0),
  };
}

let lists = 0; // ids for the listbox each completer owns (aria-controls, aria-activedescendant)

/** The list of names under the input while a mention is typed, and its keys. */
export class MentionCompleter {
  /**
   * @param {{input: HTMLTextAreaElement, ask: () => void}} options `ask`: request the kernel's
   *   names (the answer comes to `receive`).
   */
  constructor({ input, ask }) {
    this.input = input;
    this.ask = ask;
    /** @type {NameEntry[] | null} the kernel's names, null until it answers */
    this.names = null;
    /** @type {NameEntry[]} */
    this.matches = [];
    this.active = 0;
    /** @type {{start: number, prefix: string} | null} */
    this.mention = null;
    lists += 1;
    this.id = `mlxnb-mentions-${lists}`;
    this.list = h("div", {
      id: this.id,
      class: "mlxnb-mentions",
      role: "listbox",
      "aria-label": "Kernel variables",
      "data-testid": "mention-list",
      hidden: "",
    });
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", this.id);
    input.setAttribute("aria-expanded", "false");
    input.addEventListener("input", () => this.refresh());
    input.addEventListener("keydown", (event) => this.onKey(event));
    input.addEventListener("blur", () => this.close());
  }

  /** Follow the text at the caret: open, filter or close the list. */
  refresh() {
    const mention = mentionAt(this.input.value, this.input.selectionStart ?? 0);
    if (!mention) {
      this.close();
      return;
    }
    if (!this.mention || this.mention.start !== mention.start) {
      this.names = null; // a new mention: ask for the names again (they may have changed)
      this.ask();
    }
    this.mention = mention;
    this.render();
  }

  /** @param {NameEntry[]} names the kernel's answer */
  receive(names) {
    this.names = names;
    if (this.mention) this.render();
  }

  render() {
    const prefix = this.mention?.prefix ?? "";
    this.matches = this.names ? matchNames(this.names, prefix) : [];
    this.active = Math.min(this.active, Math.max(0, this.matches.length - 1));
    this.list.replaceChildren();
    this.matches.forEach(([name, kind], i) => {
      const option = h("div", {
        id: `${this.id}-${i}`,
        class: "mlxnb-mention",
        role: "option",
        "data-testid": "mention-option",
        "data-name": name,
        "aria-selected": String(i === this.active),
      });
      option.append(h("code", {}, `@${name}`), h("span", { class: "mlxnb-mention-kind" }, kind));
      // mousedown, not click: the input must keep the focus (its blur closes the list)
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        this.accept(name);
      });
      this.list.append(option);
    });
    this.list.hidden = this.matches.length === 0;
    this.input.setAttribute("aria-expanded", String(!this.list.hidden));
    if (this.list.hidden) this.input.removeAttribute("aria-activedescendant");
    else this.input.setAttribute("aria-activedescendant", `${this.id}-${this.active}`);
  }

  /** @param {KeyboardEvent} event */
  onKey(event) {
    if (this.list.hidden || !this.matches.length || event.isComposing) return;
    const keys = ["ArrowDown", "ArrowUp", "Enter", "Tab", "Escape"];
    if (!keys.includes(event.key) || event.shiftKey || event.altKey || event.ctrlKey) return;
    event.preventDefault();
    event.stopImmediatePropagation(); // before the view's own keys: Enter must not send
    if (event.key === "Escape") this.close();
    else if (event.key === "ArrowDown") this.move(1);
    else if (event.key === "ArrowUp") this.move(-1);
    else this.accept(this.matches[this.active][0]);
  }

  /** @param {number} step */
  move(step) {
    const count = this.matches.length;
    this.active = (this.active + step + count) % count;
    this.render();
  }

  /** @param {string} name */
  accept(name) {
    if (!this.mention) return;
    const caret = this.input.selectionStart ?? this.input.value.length;
    const done = completeMention(this.input.value, this.mention.start, caret, name);
    this.input.value = done.text;
    this.input.setSelectionRange(done.caret, done.caret);
    this.close();
  }

  close() {
    this.mention = null;
    this.matches = [];
    this.active = 0;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }
}

/**
 * What a user message's mentions inserted: one collapsible entry per known name (its
 * description, and the figure it sent as an image), one note per unknown name. Null for none.
 * @param {ContextEntry[]} entries
 * @param {(url: string) => boolean} isImage which `data:` URLs may be shown
 * @returns {HTMLElement | null}
 */
export function contextBlock(entries, isImage) {
  if (!entries.length) return null;
  const block = h("div", { class: "mlxnb-context", "data-testid": "context" });
  for (const entry of entries) {
    if (!entry.found) {
      block.append(
        h(
          "div",
          { class: "mlxnb-context-missing", "data-testid": "context-missing", role: "note" },
          `@${entry.name}: ${entry.text}`,
        ),
      );
      continue;
    }
    const item = h("details", { class: "mlxnb-context-item", "data-testid": "context-item" });
    const summary = h("summary", { "data-testid": "context-summary" });
    summary.append(h("code", {}, `@${entry.name}`), document.createTextNode(` · ${entry.kind}`));
    item.append(summary, h("pre", { "data-testid": "context-text" }, entry.text));
    if (entry.image && isImage(entry.image)) {
      item.append(h("img", { src: entry.image, alt: `@${entry.name}`, class: "mlxnb-user-image" }));
    }
    block.append(item);
  }
  return block;
}
