// @ts-check
// The chat view: DOM for the transcript (a synced traitlet) plus the turn streaming now (custom
// messages), and the input row with its pending images. Every piece of model output goes in as
// text, or through renderMarkdown's sanitiser; images only as `data:` URLs (isImageDataUrl).

import { ImageAttacher } from "./attach.js";
import { h } from "./dom.js";
import { describeTool, formatStats, shortModelName, thinkingLabel } from "./format.js";
import { isImageDataUrl } from "./images.js";
import { renderMarkdown } from "./markdown.js";
import { applyOps, newTurn } from "./protocol.js";

/**
 * @typedef {import("./protocol.js").Turn} Turn
 * @typedef {import("./protocol.js").Part} Part
 * @typedef {import("./protocol.js").KernelMessage} KernelMessage
 * @typedef {import("./protocol.js").ViewRequest} ViewRequest
 * @typedef {import("./protocol.js").SendRequest} SendRequest
 * @typedef {import("./images.js").PendingImage} PendingImage
 * @typedef {import("./images.js").PreparedImage} PreparedImage
 * @typedef {import("./protocol.js").WidgetState} WidgetState
 * @typedef {import("./protocol.js").WidgetStatus} WidgetStatus
 */

/**
 * The part of anywidget's model interface (AnyModel<WidgetState>) the view uses. Listeners get
 * what Backbone passes: nothing they need for `change:*`, the message for `msg:custom`.
 * @typedef {`change:${keyof WidgetState}` | "msg:custom"} ModelEvent
 * @typedef {(...args: unknown[]) => void} Listener
 * @typedef {{
 *   get<K extends keyof WidgetState>(name: K): WidgetState[K],
 *   set<K extends keyof WidgetState>(name: K, value: WidgetState[K]): void,
 *   save_changes(): void,
 *   on(event: ModelEvent, listener: Listener): void,
 *   off(event: ModelEvent, listener: Listener): void,
 *   send(content: ViewRequest): void
 * }} Model
 *
 * What the view can be given besides its model (tests replace the browser-only image reader).
 * @typedef {{prepareImage?: (file: File) => Promise<PreparedImage>}} ViewOptions
 */

/** @type {Record<WidgetStatus, string>} */
const STATUS_TEXT = {
  loading: "Loading model…",
  ready: "Ready",
  generating: "Generating…",
  error: "Error",
};

/**
 * @param {string} text
 * @returns {Promise<void>}
 */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

/**
 * Render markdown into `node` and give every code block a copy button.
 * @param {HTMLElement} node
 * @param {string} text
 */
function fillMarkdown(node, text) {
  node.innerHTML = renderMarkdown(text);
  for (const pre of node.querySelectorAll("pre")) {
    const code = pre.textContent ?? "";
    const button = h(
      "button",
      { class: "mlxnb-copy", "data-testid": "copy", type: "button" },
      "Copy",
    );
    button.addEventListener("click", () => {
      copyText(code).then(
        () => {
          button.textContent = "Copied";
        },
        () => {
          button.textContent = "Copy failed";
        },
      );
    });
    pre.prepend(button);
  }
}

/**
 * A DOM node for one part; `updatePart` fills it.
 * @param {Part} part
 * @returns {HTMLElement}
 */
function createPart(part) {
  if (part.kind === "thinking") {
    const details = h("details", { class: "mlxnb-thinking", "data-testid": "thinking" });
    details.append(h("summary", { "data-testid": "thinking-summary" }));
    details.append(h("div", { class: "mlxnb-thinking-text", "data-testid": "thinking-text" }));
    details.addEventListener("toggle", () => {
      if (details.dataset.programmatic) delete details.dataset.programmatic;
      else details.dataset.touched = "1";
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
    details.dataset.programmatic = "1";
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
  return node;
}

/** One turn's DOM: the user's message, then the assistant's parts, error and stats. */
class TurnView {
  /** @param {Turn} turn */
  constructor(turn) {
    this.turn = turn;
    /** @type {HTMLElement[]} */
    this.partNodes = [];
    this.el = h("div", { class: "mlxnb-turn", "data-testid": "turn", "data-turn-id": turn.id });
    this.el.append(userMessage(turn));
    this.body = h("div", {
      class: "mlxnb-msg mlxnb-assistant",
      "data-testid": "assistant-message",
    });
    this.parts = h("div", { class: "mlxnb-parts" });
    this.error = h("div", { class: "mlxnb-error", "data-testid": "turn-error", hidden: "" });
    this.stats = h("div", { class: "mlxnb-stats", "data-testid": "stats" });
    this.body.append(this.parts, this.error, this.stats);
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
  }

  updateTurn() {
    const { status, error, stats } = this.turn;
    this.el.dataset.status = status;
    this.error.hidden = !error;
    this.error.textContent = error ?? "";
    let text = formatStats(stats);
    if (status === "cancelled") text = text ? `stopped · ${text}` : "stopped";
    this.stats.textContent = text;
  }

  /** @param {Set<number>} changed */
  update(changed) {
    for (const index of changed) {
      if (index === -1) this.updateTurn();
      else this.updatePart(index);
    }
  }
}

/** The whole widget: header, transcript, live turn, pending images and input row. */
export class ChatView {
  /**
   * @param {Model} model
   * @param {HTMLElement} el
   * @param {ViewOptions} [options]
   */
  constructor(model, el, options = {}) {
    this.model = model;
    this.el = el;
    /** @type {TurnView | null} */
    this.live = null;
    this.pending = false;
    /**
     * What was sent last, until the kernel starts it (or refuses it: then it is put back).
     * @type {{text: string, images: PendingImage[]} | null}
     */
    this.draft = null;

    const root = h("div", { class: "mlxnb-chat", "data-testid": "mlxnb-chat" });
    const header = h("div", { class: "mlxnb-header" });
    this.modelName = h("span", { class: "mlxnb-model", "data-testid": "model" });
    this.statusText = h("span", { class: "mlxnb-status", "data-testid": "status" });
    const toggle = h("label", {
      class: "mlxnb-toggle",
      title: "Let the model think before it answers",
    });
    this.thinkingToggle = h("input", { type: "checkbox", "data-testid": "thinking-toggle" });
    toggle.append(this.thinkingToggle, document.createTextNode(" Thinking"));
    this.toggleLabel = toggle;
    this.clearButton = h(
      "button",
      { type: "button", "data-testid": "clear", class: "mlxnb-button" },
      "Clear",
    );
    header.append(
      this.modelName,
      this.statusText,
      h("span", { class: "mlxnb-spacer" }),
      toggle,
      this.clearButton,
    );
    this.banner = h("div", {
      class: "mlxnb-banner",
      "data-testid": "banner",
      role: "alert",
      hidden: "",
    });
    this.log = h("div", { class: "mlxnb-log", "data-testid": "log", "aria-live": "polite" });
    this.notice = h("div", {
      class: "mlxnb-notice",
      "data-testid": "notice",
      role: "status",
      hidden: "",
    });
    const inputRow = h("div", { class: "mlxnb-input-row" });
    this.input = h("textarea", {
      class: "mlxnb-input",
      "data-testid": "input",
      rows: "2",
      placeholder: "Message (Enter to send, Shift+Enter for a new line)",
    });
    this.sendButton = h(
      "button",
      { type: "button", "data-testid": "send", class: "mlxnb-button mlxnb-primary" },
      "Send",
    );
    this.stopButton = h(
      "button",
      { type: "button", "data-testid": "stop", class: "mlxnb-button" },
      "Stop",
    );
    this.regenButton = h(
      "button",
      { type: "button", "data-testid": "regenerate", class: "mlxnb-button" },
      "Regenerate",
    );
    this.attacher = new ImageAttacher({
      root,
      input: this.input,
      refusal: () => this.imageRefusal(),
      notify: (text) => this.showNotice(text),
      changed: () => this.updateControls(),
      prepareImage: options.prepareImage,
    });
    inputRow.append(
      this.attacher.button,
      this.attacher.fileInput,
      this.input,
      this.sendButton,
      this.stopButton,
      this.regenButton,
    );
    root.append(header, this.banner, this.log, this.notice, this.attacher.list, inputRow);
    this.root = root;
    this.el.append(root);
    this.bindControls();

    /** @type {Array<[ModelEvent, Listener]>} */
    this.listeners = [
      ["change:transcript", () => this.renderTranscript()],
      [
        "change:status",
        () => {
          this.pending = false;
          this.updateControls();
        },
      ],
      ["change:error", () => this.updateControls()],
      ["change:model_name", () => this.updateControls()],
      ["change:enable_thinking", () => this.updateControls()],
      ["change:supports_thinking", () => this.updateControls()],
      ["change:supports_images", () => this.updateControls()],
      ["msg:custom", (msg) => this.onMessage(msg)],
    ];
    for (const [event, listener] of this.listeners) model.on(event, listener);
    this.renderTranscript();
  }

  /** Wire the input row, the toggle and the buttons to the model. */
  bindControls() {
    this.input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (
        event.key === "Enter" &&
        !event.shiftKey &&
        !event.altKey &&
        !event.ctrlKey &&
        !event.metaKey &&
        !event.isComposing
      ) {
        event.preventDefault();
        this.submit();
      }
    });
    this.sendButton.addEventListener("click", () => this.submit());
    this.stopButton.addEventListener("click", () => this.model.send({ type: "stop" }));
    this.regenButton.addEventListener("click", () => this.request({ type: "regenerate" }));
    this.clearButton.addEventListener("click", () => this.model.send({ type: "clear" }));
    this.thinkingToggle.addEventListener("change", () => {
      this.model.set("enable_thinking", this.thinkingToggle.checked);
      this.model.save_changes();
    });
  }

  /** Why images cannot be added now (loading, or a text-only model), or null. */
  imageRefusal() {
    if (this.model.get("supports_images")) return null;
    const status = this.model.get("status");
    if (status === "loading") return "The model is still loading; add images once it is ready.";
    if (status === "error") return "The model did not load, so images cannot be sent.";
    const name = shortModelName(this.model.get("model_name") ?? "") || "This model";
    return `${name} is a text-only model: it cannot see images. Load a vision model to send images.`;
  }

  /** @param {string} text empty hides the notice */
  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  get generating() {
    return this.pending || this.model.get("status") === "generating";
  }

  submit() {
    const text = this.input.value;
    const images = this.attacher.images.urls();
    if (!text.trim() && !images.length) return;
    if (this.generating || this.attacher.preparing || this.model.get("status") !== "ready") return;
    this.input.value = "";
    this.draft = { text, images: this.attacher.take() };
    this.showNotice("");
    /** @type {SendRequest} */
    const message = images.length ? { type: "send", text, images } : { type: "send", text };
    this.request(message);
  }

  /** The kernel refused the last message: put its text and images back to edit or resend. */
  restoreDraft() {
    const draft = this.draft;
    this.draft = null;
    if (!draft) return;
    if (!this.input.value) this.input.value = draft.text;
    this.attacher.restore(draft.images);
  }

  /** @param {ViewRequest} message */
  request(message) {
    this.pending = true;
    this.updateControls();
    this.model.send(message);
  }

  /** @param {unknown} data a custom message from the kernel */
  onMessage(data) {
    if (!data || typeof data !== "object") return;
    const msg = /** @type {KernelMessage} */ (data);
    if (msg.type === "start") {
      this.pending = false;
      this.draft = null;
      this.live?.el.remove();
      this.live = new TurnView(newTurn(msg.turn.id, msg.turn.user, msg.turn.images ?? []));
      this.log.querySelector('[data-testid="empty"]')?.remove();
      this.append(this.live.el);
    } else if (msg.type === "ops" && this.live && this.live.turn.id === msg.id) {
      const stick = this.atBottom();
      this.live.update(applyOps(this.live.turn, msg.ops));
      if (stick) this.log.scrollTop = this.log.scrollHeight;
    } else if (msg.type === "refused") {
      this.pending = false;
      this.restoreDraft();
      this.showNotice(msg.message);
    }
    this.updateControls();
  }

  atBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 48;
  }

  /** @param {HTMLElement} node */
  append(node) {
    const stick = this.atBottom();
    this.log.append(node);
    if (stick) this.log.scrollTop = this.log.scrollHeight;
  }

  renderTranscript() {
    /** @type {Turn[]} */
    const turns = this.model.get("transcript") ?? [];
    if (this.live && turns.some((turn) => turn.id === this.live?.turn.id)) this.live = null;
    this.log.replaceChildren();
    for (const turn of turns) this.log.append(new TurnView(structuredClone(turn)).el);
    if (this.live) this.log.append(this.live.el);
    if (!turns.length && !this.live) {
      this.log.append(
        h("div", { class: "mlxnb-empty", "data-testid": "empty" }, "No messages yet."),
      );
    }
    this.log.scrollTop = this.log.scrollHeight;
    this.updateControls();
  }

  updateControls() {
    const status = this.model.get("status") ?? "loading";
    const error = this.model.get("error") ?? "";
    const generating = this.generating;
    const ready = status === "ready" && !generating;
    this.root.dataset.status = generating ? "generating" : status;
    const modelName = this.model.get("model_name") ?? "";
    this.modelName.textContent = shortModelName(modelName);
    this.modelName.title = modelName;
    this.statusText.textContent = generating
      ? STATUS_TEXT.generating
      : (STATUS_TEXT[status] ?? status);
    this.banner.hidden = !error;
    this.banner.textContent = error;
    this.toggleLabel.hidden = !this.model.get("supports_thinking");
    this.thinkingToggle.checked = Boolean(this.model.get("enable_thinking"));
    this.thinkingToggle.disabled = generating;
    this.input.disabled = !ready;
    this.sendButton.disabled = !ready || this.attacher.preparing > 0;
    this.attacher.update(Boolean(this.model.get("supports_images")), ready);
    this.stopButton.disabled = !generating;
    const turns = this.model.get("transcript") ?? [];
    this.regenButton.disabled = !ready || turns.length === 0;
    const empty = this.log.querySelector('[data-testid="empty"]');
    if (empty) empty.textContent = status === "loading" ? STATUS_TEXT.loading : "No messages yet.";
    this.clearButton.disabled = generating || (turns.length === 0 && !this.live);
  }

  destroy() {
    for (const [event, listener] of this.listeners) this.model.off(event, listener);
    this.root.remove();
  }
}
