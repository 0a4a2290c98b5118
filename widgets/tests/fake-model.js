// @ts-check
// A stand-in for anywidget's model, shared by the view tests.

/**
 * @typedef {import("../src/protocol.js").KernelMessage} KernelMessage
 * @typedef {import("../src/protocol.js").ViewRequest} ViewRequest
 * @typedef {import("../src/protocol.js").WidgetState} WidgetState
 * @typedef {import("../src/view.js").Listener} Listener
 */

/** A stand-in for anywidget's model: synced state, events, and a log of what the view sent. */
export class FakeModel {
  /** @param {Partial<WidgetState>} [state] */
  constructor(state) {
    /** @type {WidgetState} */
    this.state = {
      transcript: [],
      status: "ready",
      error: "",
      model_name: "tiny-model",
      models: ["tiny-model"],
      load_progress: {},
      enable_thinking: true,
      supports_thinking: true,
      supports_images: false,
      tool_names: [],
      conversation_id: "",
      ...state,
    };
    /** @type {Map<string, Listener[]>} */
    this.listeners = new Map();
    /** @type {ViewRequest[]} */
    this.sent = [];
    this.saved = 0;
  }
  /**
   * @template {keyof WidgetState} K
   * @param {K} name
   * @returns {WidgetState[K]}
   */
  get(name) {
    return this.state[name];
  }
  /**
   * @template {keyof WidgetState} K
   * @param {K} name
   * @param {WidgetState[K]} value
   */
  set(name, value) {
    this.state[name] = value;
  }
  save_changes() {
    this.saved += 1;
  }
  /** @param {ViewRequest} content */
  send(content) {
    this.sent.push(content);
  }
  /**
   * @param {string} event
   * @param {Listener} cb
   */
  on(event, cb) {
    this.listeners.set(event, [...(this.listeners.get(event) ?? []), cb]);
  }
  /**
   * @param {string} event
   * @param {Listener} cb
   */
  off(event, cb) {
    this.listeners.set(
      event,
      (this.listeners.get(event) ?? []).filter((f) => f !== cb),
    );
  }
  /**
   * Kernel side: change a trait and notify, as a comm update would.
   * @template {keyof WidgetState} K
   * @param {K} name
   * @param {WidgetState[K]} value
   */
  update(name, value) {
    this.state[name] = value;
    for (const cb of this.listeners.get(`change:${name}`) ?? []) cb();
  }
  /**
   * Kernel side: deliver a custom message.
   * @param {KernelMessage} msg
   */
  custom(msg) {
    for (const cb of this.listeners.get("msg:custom") ?? []) cb(msg, []);
  }
  get listenerCount() {
    return [...this.listeners.values()].reduce((n, list) => n + list.length, 0);
  }
}
