// @ts-check
// The header's Export button: the kernel writes the conversation as markdown (the same text as
// `widget.to_markdown()`), and the page saves it as a file download.

import { h } from "./dom.js";

/**
 * Save text as a file download.
 * @param {string} name
 * @param {string} text
 */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
  const link = h("a", { href: url, download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * The file name of an export: the date and time it was made.
 * @param {Date} [now]
 * @returns {string}
 */
export function exportName(now = new Date()) {
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  const day = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
  return `chat-${day}-${pad(now.getHours())}${pad(now.getMinutes())}.md`;
}

export class ExportButton {
  /**
   * @param {{request: () => void, save?: (name: string, text: string) => void}} options
   *   `request`: ask the kernel for the markdown (it comes back to `receive`); `save`: how a
   *   file is saved (a download; tests replace it).
   */
  constructor({ request, save = download }) {
    this.save = save;
    this.button = h(
      "button",
      {
        type: "button",
        "data-testid": "export",
        class: "mlxnb-button",
        title: "Download the conversation as markdown (chat.to_notebook(path) writes a notebook)",
      },
      "Export",
    );
    this.button.addEventListener("click", () => request());
  }

  /** @param {string} markdown the kernel's answer */
  receive(markdown) {
    this.save(exportName(), markdown);
  }
}
