// @ts-check
// The header's model picker (a <select> of the kernel's model and profile names, hidden when
// there is only one) and the bar showing a model's download or load progress.

import { h } from "./dom.js";
import { progressLabel, shortModelName } from "./format.js";

/**
 * @typedef {import("./protocol.js").LoadProgress} LoadProgress
 * @typedef {{
 *   models: string[], current: string, disabled: boolean,
 *   progress: Partial<LoadProgress>
 * }} PickerState
 */

export class ModelPicker {
  /**
   * @param {{pick: (name: string) => void, opening: () => void}} actions `pick`: the user chose
   *   another model; `opening`: the list is about to open (a chance to refresh it).
   */
  constructor(actions) {
    this.select = h("select", {
      class: "mlxnb-picker",
      "data-testid": "model-picker",
      "aria-label": "Model",
      title: "Switch model (the conversation stays)",
      hidden: "",
    });
    this.select.addEventListener("change", () => actions.pick(this.select.value));
    this.select.addEventListener("focus", () => actions.opening());
    this.progress = h("div", {
      class: "mlxnb-progress",
      "data-testid": "load-progress",
      role: "progressbar",
      hidden: "",
    });
    this.progressFill = h("div", { class: "mlxnb-progress-fill" });
    this.progressText = h("span", {
      class: "mlxnb-progress-text",
      "data-testid": "load-progress-text",
    });
    this.progress.append(this.progressFill, this.progressText);
    /** @type {string[]} */
    this.shown = [];
  }

  /** @param {PickerState} state */
  update({ models, current, disabled, progress }) {
    const names = models.includes(current) || !current ? models : [current, ...models];
    if (names.join("\n") !== this.shown.join("\n")) {
      this.select.replaceChildren(
        ...names.map((name) => h("option", { value: name, title: name }, shortModelName(name))),
      );
      this.shown = names;
    }
    this.select.value = current; // a refused switch puts the choice back
    this.select.hidden = names.length < 2;
    this.select.disabled = disabled;

    const label = progressLabel(progress);
    this.progress.hidden = !label;
    this.progressText.textContent = label;
    const fraction = typeof progress.fraction === "number" ? progress.fraction : null;
    this.progress.dataset.stage = progress.stage ?? "";
    this.progress.dataset.indeterminate = fraction === null ? "1" : "";
    this.progressFill.style.width = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
    if (fraction === null) this.progress.removeAttribute("aria-valuenow");
    else this.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  }
}
