// @ts-check
// The input row's images: the attach button (and its file picker), paste and drag and drop onto
// the chat, and the pending thumbnails with their remove buttons. Which files are taken and how
// large images are scaled down is decided in images.js; sending is the view's (view.js).

import { h } from "./dom.js";
import { carriesFiles, checkFile, PendingImages, prepareImage, transferFiles } from "./images.js";

/**
 * @typedef {import("./images.js").PendingImage} PendingImage
 * @typedef {import("./images.js").PreparedImage} PreparedImage
 *
 * What the attacher needs from the view:
 * - `root`: where pastes and drops are caught (the whole chat);
 * - `input`: where the focus goes when the last pending image is removed;
 * - `refusal`: why images cannot be added now (a text-only or loading model), or null;
 * - `notify`: show a notice (an empty string hides it);
 * - `changed`: the pending images, or whether some are being read, changed;
 * - `prepareImage`: reads a file into a PreparedImage (tests replace the canvas reader).
 * @typedef {{
 *   root: HTMLElement, input: HTMLElement, refusal: () => string | null,
 *   notify: (text: string) => void, changed: () => void,
 *   prepareImage?: (file: File) => Promise<PreparedImage>
 * }} AttachOptions
 */

/** Pending images and every way to add them. */
export class ImageAttacher {
  /** @param {AttachOptions} options */
  constructor(options) {
    this.options = options;
    this.prepareImage = options.prepareImage ?? ((/** @type {File} */ file) => prepareImage(file));
    this.images = new PendingImages();
    /** images being read now */
    this.preparing = 0;
    this.button = h(
      "button",
      {
        type: "button",
        "data-testid": "attach",
        class: "mlxnb-button mlxnb-attach",
        "aria-label": "Add images",
        title: "Add images (or paste them, or drop them on the chat)",
        hidden: "",
      },
      "+ Image",
    );
    this.fileInput = h("input", {
      type: "file",
      accept: "image/*",
      multiple: "",
      hidden: "",
      tabindex: "-1",
      "aria-hidden": "true",
      "data-testid": "file-input",
    });
    this.list = h("div", {
      class: "mlxnb-pending",
      "data-testid": "pending-images",
      role: "list",
      "aria-label": "Images to send",
      hidden: "",
    });
    this.bind();
  }

  bind() {
    const root = this.options.root;
    this.button.addEventListener("click", () => this.fileInput.click());
    this.button.addEventListener("keydown", (event) => event.stopPropagation());
    this.fileInput.addEventListener("change", () => {
      const files = Array.from(this.fileInput.files ?? []);
      this.fileInput.value = ""; // picking the same file again fires change again
      this.add(files);
    });
    root.addEventListener("paste", (event) => {
      const transfer = event.clipboardData;
      // text wins: copying from an office app also puts a picture of the text on the clipboard
      if (transfer?.getData("text/plain")) return;
      const files = transferFiles(transfer);
      if (!files.length) return;
      event.preventDefault();
      this.add(files);
    });
    /** @param {DragEvent} event */
    const over = (event) => {
      if (!carriesFiles(event.dataTransfer)) return;
      event.preventDefault(); // accept the drop: the page must not open the file instead
      event.stopPropagation();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      root.dataset.dragging = "";
    };
    root.addEventListener("dragenter", over);
    root.addEventListener("dragover", over);
    root.addEventListener("dragleave", (event) => {
      const into = event.relatedTarget;
      if (!(into instanceof Node) || !root.contains(into)) delete root.dataset.dragging;
    });
    root.addEventListener("drop", (event) => {
      delete root.dataset.dragging;
      if (!carriesFiles(event.dataTransfer)) return;
      event.preventDefault();
      event.stopPropagation();
      this.add(transferFiles(event.dataTransfer));
    });
  }

  /**
   * Check, read and add files as pending images; what was refused is said in the notice.
   * @param {File[]} files
   * @returns {Promise<void>}
   */
  async add(files) {
    if (!files.length) return;
    const refusal = this.options.refusal();
    if (refusal) {
      this.options.notify(refusal);
      return;
    }
    /** @type {string[]} */
    const notes = [];
    for (const file of files) {
      const problem = checkFile(file) ?? this.images.full(this.preparing);
      if (problem) {
        notes.push(problem);
        continue;
      }
      this.preparing += 1;
      this.options.changed();
      try {
        const refused = this.images.add(await this.prepareImage(file));
        if (refused) notes.push(refused);
      } catch (error) {
        notes.push(error instanceof Error ? error.message : String(error));
      } finally {
        this.preparing -= 1;
      }
      this.render();
    }
    this.options.notify(notes.join("\n"));
    this.options.changed();
  }

  /** Draw the pending images, each with its remove button. */
  render() {
    const items = this.images.items;
    this.list.replaceChildren();
    this.list.hidden = items.length === 0;
    items.forEach((item, i) => {
      const label = `image ${i + 1}${item.name ? ` (${item.name})` : ""}`;
      const box = h("div", {
        class: "mlxnb-thumb",
        role: "listitem",
        "data-testid": "pending-image",
        title: `${item.name} · ${item.width}×${item.height}`,
      });
      box.append(h("img", { src: item.url, alt: `Attached ${label}` }));
      const remove = h(
        "button",
        {
          type: "button",
          class: "mlxnb-remove",
          "data-testid": "remove-image",
          "aria-label": `Remove ${label}`,
          title: "Remove",
        },
        "×",
      );
      remove.addEventListener("keydown", (event) => event.stopPropagation());
      remove.addEventListener("click", () => this.remove(item.id, i));
      box.append(remove);
      this.list.append(box);
    });
  }

  /**
   * Remove a pending image and keep the focus in the row (next image, else the input).
   * @param {number} id
   * @param {number} index
   */
  remove(id, index) {
    this.images.remove(id);
    this.render();
    this.options.notify("");
    this.options.changed();
    const buttons = this.list.querySelectorAll("button");
    const next = buttons[Math.min(index, buttons.length - 1)];
    (next instanceof HTMLElement ? next : this.options.input).focus();
  }

  /**
   * Empty the pending row for sending; returns what was in it.
   * @returns {PendingImage[]}
   */
  take() {
    const items = this.images.take();
    this.render();
    return items;
  }

  /** @param {PendingImage[]} items images of a refused message, put back */
  restore(items) {
    this.images.restore(items);
    this.render();
  }

  /**
   * @param {boolean} shown whether the model can see images
   * @param {boolean} enabled whether the input takes a message now
   */
  update(shown, enabled) {
    this.button.hidden = !shown;
    this.button.disabled = !enabled;
  }
}
