// @ts-check
// The chat view: the header (model picker, status), the transcript (a synced traitlet) plus the
// turn streaming now (custom messages, drawn by turn.js), and the input row with its pending
// images.

import { ImageAttacher } from "./attach.js";
import { handleInserts } from "./codeblocks.js";
import { h } from "./dom.js";
import { ExportButton } from "./export.js";
import { shortModelName } from "./format.js";
import { MentionCompleter } from "./mentions.js";
import { ModelPicker } from "./picker.js";
import { applyOps, newTurn } from "./protocol.js";
import { RecentMenu } from "./recent.js";
import { TurnView } from "./turn.js";

/**
 * @typedef {import("./protocol.js").Turn} Turn
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
 *   send(content: ViewRequest): void,
 *   widget_manager?: unknown
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
    this.exporter = new ExportButton({ request: () => this.model.send({ type: "export" }) });
    this.picker = new ModelPicker({
      pick: (name) => this.model.send({ type: "model", name }),
      opening: () => this.model.send({ type: "models" }),
    });
    this.recent = new RecentMenu({
      resume: (id) => this.model.send({ type: "resume", id }),
      opening: () => this.model.send({ type: "recent" }),
    });
    header.append(
      this.modelName,
      this.picker.select,
      this.statusText,
      h("span", { class: "mlxnb-spacer" }),
      this.recent.select,
      toggle,
      this.exporter.button,
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
    // before bindControls: its keys (Enter picks a name) go first
    this.mentions = new MentionCompleter({
      input: this.input,
      ask: () => this.model.send({ type: "names" }),
    });
    inputRow.append(
      this.attacher.button,
      this.attacher.fileInput,
      this.input,
      this.sendButton,
      this.stopButton,
      this.regenButton,
    );
    root.append(
      header,
      this.picker.progress,
      this.banner,
      this.log,
      this.notice,
      this.attacher.list,
      this.mentions.list,
      inputRow,
    );
    this.root = root;
    this.el.append(root);
    this.bindControls();
    handleInserts(
      this.log,
      () => this.model.widget_manager,
      (text) => this.showNotice(text),
    );

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
      ["change:models", () => this.updateControls()],
      ["change:load_progress", () => this.updateControls()],
      ["change:conversation_id", () => this.updateControls()],
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
      const { id, user, images, model, context, parts } = msg.turn;
      const turn = newTurn(id, user, images ?? [], model);
      if (context?.length) turn.context = context;
      if (parts?.length) turn.parts = structuredClone(parts); // a continued answer goes on
      this.live = new TurnView(turn, {
        approve: (callId, run) => this.model.send({ type: "approve", id: callId, run }),
      });
      this.log.querySelector('[data-testid="empty"]')?.remove();
      this.append(this.live.el);
    } else if (msg.type === "ops" && this.live && this.live.turn.id === msg.id) {
      const stick = this.atBottom();
      this.live.update(applyOps(this.live.turn, msg.ops));
      if (stick) this.log.scrollTop = this.log.scrollHeight;
    } else if (msg.type === "export") {
      this.exporter.receive(msg.markdown);
    } else if (msg.type === "recent") {
      this.recent.receive(msg.conversations);
    } else if (msg.type === "names") {
      this.mentions.receive(msg.names);
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
    turns.forEach((turn, i) => {
      this.log.append(new TurnView(structuredClone(turn), this.actionsFor(i, turns.length)).el);
    });
    if (this.live) this.log.append(this.live.el);
    if (!turns.length && !this.live) {
      this.log.append(
        h("div", { class: "mlxnb-empty", "data-testid": "empty" }, "No messages yet."),
      );
    }
    this.log.scrollTop = this.log.scrollHeight;
    this.updateControls();
  }

  /**
   * What a saved turn's view may ask: edit and resend (any turn), Continue (the last one).
   * @param {number} index
   * @param {number} count
   * @returns {import("./steer.js").TurnActions}
   */
  actionsFor(index, count) {
    /** @type {import("./steer.js").TurnActions} */
    const actions = { edit: (text) => this.request({ type: "edit", index, text }) };
    if (index === count - 1) actions.continue = () => this.request({ type: "continue" });
    return actions;
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
    this.picker.update({
      models: this.model.get("models") ?? [],
      current: modelName,
      disabled: generating,
      progress: this.model.get("load_progress") ?? {},
    });
    this.modelName.hidden = !this.picker.select.hidden;
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
    const steering = '[data-testid="edit"], [data-testid="edit-send"], [data-testid="continue"]';
    for (const button of this.log.querySelectorAll(steering)) {
      /** @type {HTMLButtonElement} */ (button).disabled = !ready;
    }
    this.exporter.button.disabled = turns.length === 0;
    this.recent.update(this.model.get("conversation_id") ?? "", !ready);
  }

  destroy() {
    for (const [event, listener] of this.listeners) this.model.off(event, listener);
    this.root.remove();
  }
}
