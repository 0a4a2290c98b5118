// @ts-check
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ChatView } from "../src/view.js";
import { FakeModel } from "./fake-model.js";

/**
 * @typedef {import("../src/protocol.js").Turn} Turn
 * @typedef {import("../src/protocol.js").WidgetState} WidgetState
 * @typedef {import("../src/images.js").PreparedImage} PreparedImage
 */

/** @type {FakeModel} */
let model;
/** @type {HTMLElement} */
let el;
/** @type {ChatView} */
let view;
/** @type {File[]} */
let prepared;

/** What the browser would make of a file: a data URL named after it (jsdom cannot decode). */
const URL_OF = (/** @type {string} */ name) => `data:image/png;base64,${btoa(name)}`;

/**
 * A stand-in for the canvas reader: "broken*" files fail to decode, "slow*" ones wait.
 * @param {File} file
 * @returns {Promise<PreparedImage>}
 */
async function fakePrepare(file) {
  prepared.push(file);
  if (file.name.startsWith("broken")) {
    throw new Error(`${file.name} could not be read as an image.`);
  }
  if (file.name.startsWith("slow")) await new Promise((resolve) => setTimeout(resolve, 30));
  return { name: file.name, url: URL_OF(file.name), width: 40, height: 30 };
}

/** @param {Partial<WidgetState>} [state] */
function mount(state) {
  model = new FakeModel({ supports_images: true, ...state });
  el = document.createElement("div");
  document.body.append(el);
  view = new ChatView(model, el, { prepareImage: fakePrepare });
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const node = el.querySelector(`[data-testid="${id}"]`);
  if (!(node instanceof HTMLElement)) throw new Error(`no element with data-testid="${id}"`);
  return node;
}
/** @param {string} id */
const $$ = (id) => [...el.querySelectorAll(`[data-testid="${id}"]`)];
const $input = () => /** @type {HTMLTextAreaElement} */ ($("input"));
const $attach = () => /** @type {HTMLButtonElement} */ ($("attach"));
const $fileInput = () => /** @type {HTMLInputElement} */ ($("file-input"));
const pendingNames = () =>
  $$("pending-image").map((node) => node.querySelector("img")?.getAttribute("alt"));

/** Let the view's file reading (promises, timers) finish. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 60));

/**
 * @param {string} name
 * @param {string} [type]
 * @param {number} [size]
 */
function file(name, type = "image/png", size = 100) {
  const made = new File(["x"], name, { type });
  if (size !== 100) Object.defineProperty(made, "size", { value: size });
  return made;
}

/**
 * A paste/drag/drop event carrying files (jsdom has no DataTransfer to build one).
 * @param {string} type
 * @param {File[]} files
 * @param {string} [text] the clipboard's text/plain
 */
function transferEvent(type, files, text = "") {
  const event = new Event(type, { bubbles: true, cancelable: true });
  const transfer = {
    files,
    items: [],
    types: files.length ? ["Files"] : ["text/plain"],
    dropEffect: "none",
    getData: (/** @type {string} */ format) => (format === "text/plain" ? text : ""),
  };
  Object.defineProperty(event, type === "paste" ? "clipboardData" : "dataTransfer", {
    value: transfer,
  });
  return event;
}

/** @param {File[]} files */
function choose(files) {
  Object.defineProperty($fileInput(), "files", { value: files, configurable: true });
  $fileInput().dispatchEvent(new Event("change"));
}

beforeEach(() => {
  prepared = [];
  mount();
});
afterEach(() => {
  view.destroy();
  el.remove();
});

describe("the attach button", () => {
  it("shows for a vision model, labelled, and opens the file picker", () => {
    expect($attach().hidden).toBe(false);
    expect($attach().getAttribute("aria-label")).toBe("Add images");
    expect($attach().type).toBe("button");
    expect($fileInput().accept).toBe("image/*");
    expect($fileInput().multiple).toBe(true);
    const picker = vi.spyOn($fileInput(), "click").mockImplementation(() => {});
    $attach().click();
    expect(picker).toHaveBeenCalledOnce();
  });

  it("is hidden for a text-only model, and follows supports_images", () => {
    model.update("supports_images", false);
    expect($attach().hidden).toBe(true);
    model.update("supports_images", true);
    expect($attach().hidden).toBe(false);
  });

  it("keeps its keys from the notebook's shortcuts", () => {
    let reached = false;
    el.addEventListener("keydown", () => {
      reached = true;
    });
    $attach().dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(reached).toBe(false);
  });
});

describe("adding images", () => {
  it("picked files become pending thumbnails with remove buttons", async () => {
    choose([file("cat.png"), file("dog.jpg", "image/jpeg")]);
    await settle();
    expect($("pending-images").hidden).toBe(false);
    expect($("pending-images").getAttribute("role")).toBe("list");
    expect(pendingNames()).toEqual(["Attached image 1 (cat.png)", "Attached image 2 (dog.jpg)"]);
    expect($$("pending-image").map((n) => n.querySelector("img")?.getAttribute("src"))).toEqual([
      URL_OF("cat.png"),
      URL_OF("dog.jpg"),
    ]);
    expect($$("remove-image").map((b) => b.getAttribute("aria-label"))).toEqual([
      "Remove image 1 (cat.png)",
      "Remove image 2 (dog.jpg)",
    ]);
    expect($fileInput().value).toBe("");
  });

  it("a pasted image is taken and the paste does not insert anything", async () => {
    const event = transferEvent("paste", [file("image.png")]);
    $input().dispatchEvent(event);
    expect(event.defaultPrevented).toBe(true);
    await settle();
    expect(pendingNames()).toEqual(["Attached image 1 (image.png)"]);
  });

  it("pasted text stays text, even when a picture of it comes along", async () => {
    const event = transferEvent("paste", [file("rendered.png")], "a cell of a table");
    $input().dispatchEvent(event);
    expect(event.defaultPrevented).toBe(false);
    const plain = transferEvent("paste", [], "just text");
    $input().dispatchEvent(plain);
    expect(plain.defaultPrevented).toBe(false);
    await settle();
    expect($$("pending-image")).toHaveLength(0);
    expect(prepared).toEqual([]);
  });

  it("files dragged over the chat are accepted and dropped ones added", async () => {
    const root = $("mlxnb-chat");
    const over = transferEvent("dragover", [file("a.png")]);
    $("log").dispatchEvent(over);
    expect(over.defaultPrevented).toBe(true);
    expect(root.dataset.dragging).toBe("");
    let bubbled = false;
    el.addEventListener("drop", () => {
      bubbled = true;
    });
    const drop = transferEvent("drop", [file("a.png"), file("b.gif", "image/gif")]);
    $("log").dispatchEvent(drop);
    expect(drop.defaultPrevented).toBe(true);
    expect(bubbled).toBe(false);
    expect(root.dataset.dragging).toBeUndefined();
    await settle();
    expect(pendingNames()).toEqual(["Attached image 1 (a.png)", "Attached image 2 (b.gif)"]);
  });

  it("a drag of text is left to the page", () => {
    const over = transferEvent("dragover", []);
    $("input").dispatchEvent(over);
    expect(over.defaultPrevented).toBe(false);
    expect($("mlxnb-chat").dataset.dragging).toBeUndefined();
  });

  it("refuses non-images, files over the cap and broken images, keeping the good ones", async () => {
    choose([
      file("notes.pdf", "application/pdf"),
      file("huge.png", "image/png", 21 * 1024 * 1024),
      file("broken.png"),
      file("fine.png"),
    ]);
    await settle();
    expect(pendingNames()).toEqual(["Attached image 1 (fine.png)"]);
    expect(prepared.map((f) => f.name)).toEqual(["broken.png", "fine.png"]);
    expect($("notice").hidden).toBe(false);
    expect($("notice").getAttribute("role")).toBe("status");
    expect($("notice").textContent).toBe(
      [
        "notes.pdf is not an image.",
        "huge.png is too large (21.0 MB); images up to 20.0 MB can be attached.",
        "broken.png could not be read as an image.",
      ].join("\n"),
    );
    choose([file("more.png")]);
    await settle();
    expect($("notice").hidden).toBe(true);
  });

  it("takes at most eight images per message", async () => {
    choose(Array.from({ length: 10 }, (_, i) => file(`p${i}.png`)));
    await settle();
    expect($$("pending-image")).toHaveLength(8);
    expect($("notice").textContent).toBe(
      Array(2).fill("At most 8 images can be sent with one message.").join("\n"),
    );
  });

  it("explains that a text-only model cannot see images, on drop and on paste", async () => {
    model.update("supports_images", false);
    const drop = transferEvent("drop", [file("a.png")]);
    $("log").dispatchEvent(drop);
    expect(drop.defaultPrevented).toBe(true);
    await settle();
    expect($$("pending-image")).toHaveLength(0);
    expect($("notice").textContent).toBe(
      "tiny-model is a text-only model: it cannot see images. Load a vision model to send images.",
    );
    view.showNotice("");
    $input().dispatchEvent(transferEvent("paste", [file("b.png")]));
    await settle();
    expect($("notice").textContent).toContain("text-only model");
    expect(prepared).toEqual([]);
  });

  it("says to wait while the model loads", async () => {
    model.update("supports_images", false);
    model.update("status", "loading");
    $("log").dispatchEvent(transferEvent("drop", [file("a.png")]));
    await settle();
    expect($("notice").textContent).toBe(
      "The model is still loading; add images once it is ready.",
    );
  });
});

describe("removing images", () => {
  it("the remove button drops one image and moves the focus along", async () => {
    choose([file("a.png"), file("b.png"), file("c.png")]);
    await settle();
    /** @type {HTMLButtonElement} */ ($$("remove-image")[1]).click();
    expect(pendingNames()).toEqual(["Attached image 1 (a.png)", "Attached image 2 (c.png)"]);
    expect(document.activeElement).toBe($$("remove-image")[1]);
    /** @type {HTMLButtonElement} */ ($$("remove-image")[1]).click();
    expect(document.activeElement).toBe($$("remove-image")[0]);
    /** @type {HTMLButtonElement} */ ($$("remove-image")[0]).click();
    expect($("pending-images").hidden).toBe(true);
    expect(document.activeElement).toBe($input());
  });

  it("its keys stay out of the notebook's shortcuts", async () => {
    choose([file("a.png")]);
    await settle();
    let reached = false;
    el.addEventListener("keydown", () => {
      reached = true;
    });
    $("remove-image").dispatchEvent(new KeyboardEvent("keydown", { key: " ", bubbles: true }));
    expect(reached).toBe(false);
  });
});

describe("sending", () => {
  it("sends the text with the images' data URLs and empties the pending row", async () => {
    choose([file("a.png"), file("b.png")]);
    await settle();
    $input().value = "What are these?";
    $("send").click();
    expect(model.sent).toEqual([
      { type: "send", text: "What are these?", images: [URL_OF("a.png"), URL_OF("b.png")] },
    ]);
    expect($$("pending-image")).toHaveLength(0);
    expect($input().value).toBe("");
  });

  it("an image alone can be sent; nothing at all cannot", async () => {
    $("send").click();
    expect(model.sent).toEqual([]);
    choose([file("a.png")]);
    await settle();
    $("send").click();
    expect(model.sent).toEqual([{ type: "send", text: "", images: [URL_OF("a.png")] }]);
  });

  it("waits for images still being read", async () => {
    choose([file("slow.png")]);
    await Promise.resolve();
    expect(/** @type {HTMLButtonElement} */ ($("send")).disabled).toBe(true);
    $input().value = "now?";
    $("send").click();
    expect(model.sent).toEqual([]);
    await settle();
    expect(/** @type {HTMLButtonElement} */ ($("send")).disabled).toBe(false);
    $("send").click();
    expect(model.sent).toEqual([{ type: "send", text: "now?", images: [URL_OF("slow.png")] }]);
  });

  it("a refusal from the kernel is shown and puts the text and images back", async () => {
    choose([file("a.png")]);
    await settle();
    $input().value = "look";
    $("send").click();
    model.custom({
      type: "refused",
      message: "images[0]: the data URL is not an image",
    });
    expect($("notice").hidden).toBe(false);
    expect($("notice").textContent).toBe("images[0]: the data URL is not an image");
    expect($input().value).toBe("look");
    expect(pendingNames()).toEqual(["Attached image 1 (a.png)"]);
    expect($input().disabled).toBe(false);
  });

  it("once the turn starts, the draft is gone and the thumbnails are in the user's message", async () => {
    choose([file("a.png")]);
    await settle();
    $input().value = "look";
    $("send").click();
    const thumbnail = "data:image/jpeg;base64,/9j/AAAA";
    model.custom({ type: "start", turn: { id: "t1", user: "look", images: [thumbnail] } });
    model.custom({ type: "refused", message: "a reply is being generated; stop it first" });
    expect($input().value).toBe("");
    expect($$("pending-image")).toHaveLength(0);
    const images = $$("user-image");
    expect(images.map((img) => img.getAttribute("src"))).toEqual([thumbnail]);
    expect(images[0].getAttribute("alt")).toBe("Attached image");
    expect($("user-message").textContent).toBe("look");
  });
});

describe("the transcript", () => {
  /** @type {Turn} */
  const turn = {
    id: "t1",
    user: "Two?",
    images: [
      "data:image/jpeg;base64,/9j/AAAA",
      "https://tracker.example/pixel.png",
      "javascript:alert(1)",
      "data:image/jpeg;base64,/9j/BBBB",
    ],
    parts: [{ kind: "content", text: "Yes." }],
    status: "done",
    error: null,
    stats: null,
  };

  it("shows the saved thumbnails, and only data URLs of images", () => {
    view.destroy();
    el.remove();
    mount({ transcript: [turn] });
    expect($$("user-image").map((img) => img.getAttribute("src"))).toEqual([
      "data:image/jpeg;base64,/9j/AAAA",
      "data:image/jpeg;base64,/9j/BBBB",
    ]);
    expect($$("user-image").map((img) => img.getAttribute("alt"))).toEqual([
      "Attached image 1 of 2",
      "Attached image 2 of 2",
    ]);
  });

  it("a turn saved before images existed shows as before", () => {
    view.destroy();
    el.remove();
    const { images: _, ...old } = turn;
    mount({ transcript: [old] });
    expect($$("user-images")).toHaveLength(0);
    expect($("user-message").textContent).toBe("Two?");
  });
});
