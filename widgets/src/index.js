// @ts-check
// anywidget entry point of mlxnb.ChatWidget (bundled to mlxnb/static/widget.js by build.mjs).

import "./style.css";
import { ChatView } from "./view.js";

export default {
  /**
   * @param {{model: import("./view.js").Model, el: HTMLElement}} context
   * @returns {() => void}
   */
  render({ model, el }) {
    const view = new ChatView(model, el);
    return () => view.destroy();
  },
};
