// @ts-check
import { describe, expect, it } from "vitest";
import {
  carriesFiles,
  checkFile,
  fitWithin,
  formatBytes,
  IMAGE_LIMITS,
  isImageDataUrl,
  PendingImages,
  planImage,
  readDataUrl,
  transferFiles,
} from "../src/images.js";

const MB = 1024 * 1024;

/**
 * @param {string} name
 * @param {number} [chars]
 * @returns {import("../src/images.js").PreparedImage}
 */
const prepared = (name, chars = 100) => ({
  name,
  url: `data:image/png;base64,${"A".repeat(chars - 22)}`,
  width: 10,
  height: 10,
});

describe("checkFile", () => {
  it("takes any image type the browser may draw, up to the size cap", () => {
    expect(checkFile({ name: "a.png", type: "image/png", size: 1000 })).toBeNull();
    expect(checkFile({ name: "a.avif", type: "image/avif", size: 1000 })).toBeNull();
    const atTheCap = { name: "big.jpg", type: "image/jpeg", size: IMAGE_LIMITS.maxFileBytes };
    expect(checkFile(atTheCap)).toBeNull();
  });

  it("refuses what is not an image, and files over the cap, naming them", () => {
    expect(checkFile({ name: "notes.pdf", type: "application/pdf", size: 10 })).toBe(
      "notes.pdf is not an image.",
    );
    expect(checkFile({ name: "", type: "", size: 10 })).toBe("The pasted item is not an image.");
    expect(checkFile({ name: "huge.png", type: "image/png", size: 25 * MB })).toBe(
      "huge.png is too large (25.0 MB); images up to 20.0 MB can be attached.",
    );
  });
});

describe("scaling", () => {
  it("fits the longer side within the limit, keeping the aspect, never enlarging", () => {
    expect(fitWithin(4096, 3072, 2048)).toEqual({ width: 2048, height: 1536 });
    expect(fitWithin(1000, 5000, 2048)).toEqual({ width: 410, height: 2048 });
    expect(fitWithin(640, 480, 2048)).toEqual({ width: 640, height: 480 });
    expect(fitWithin(10000, 1, 2048)).toEqual({ width: 2048, height: 1 });
  });

  it("sends small images in a readable format as they are", () => {
    const small = { type: "image/png", size: 200_000, width: 800, height: 600 };
    expect(planImage(small)).toEqual({ keep: true });
    expect(planImage({ ...small, type: "image/webp" })).toEqual({ keep: true });
  });

  it("redraws large images, large files and other formats", () => {
    const photo = { type: "image/jpeg", size: 5 * MB, width: 4032, height: 3024 };
    expect(planImage(photo)).toEqual({
      keep: false,
      width: 2048,
      height: 1536,
      type: "image/jpeg",
    });
    const screenshot = { type: "image/png", size: 3 * MB, width: 1600, height: 1000 };
    expect(planImage(screenshot)).toEqual({
      keep: false,
      width: 1600,
      height: 1000,
      type: "image/png",
    });
    const svg = { type: "image/svg+xml", size: 2000, width: 300, height: 150 };
    expect(planImage(svg)).toEqual({ keep: false, width: 300, height: 150, type: "image/png" });
    const wide = { type: "image/png", size: 1000, width: 3000, height: 100 };
    expect(planImage(wide)).toMatchObject({ keep: false, width: 2048, height: 68 });
  });
});

describe("PendingImages", () => {
  it("adds, removes, takes and restores in order", () => {
    const pending = new PendingImages();
    expect(pending.add(prepared("a"))).toBeNull();
    expect(pending.add(prepared("b"))).toBeNull();
    expect(pending.add(prepared("c"))).toBeNull();
    expect(pending.items.map((i) => i.id)).toEqual([1, 2, 3]);
    expect(pending.remove(2)).toBe(true);
    expect(pending.remove(2)).toBe(false);
    expect(pending.items.map((i) => i.name)).toEqual(["a", "c"]);
    expect(pending.chars).toBe(200);
    const taken = pending.take();
    expect(pending.length).toBe(0);
    pending.add(prepared("d"));
    pending.restore(taken);
    expect(pending.items.map((i) => i.name)).toEqual(["a", "c", "d"]);
    expect(pending.urls()).toHaveLength(3);
  });

  it("holds at most maxImages, counting those still being read", () => {
    const pending = new PendingImages({ ...IMAGE_LIMITS, maxImages: 2 });
    expect(pending.full(1)).toBeNull();
    pending.add(prepared("a"));
    expect(pending.full(1)).toBe("At most 2 images can be sent with one message.");
    expect(pending.add(prepared("b"))).toBeNull();
    expect(pending.add(prepared("c"))).toBe("At most 2 images can be sent with one message.");
    expect(pending.length).toBe(2);
  });

  it("keeps one message's images within the websocket budget", () => {
    const pending = new PendingImages({ ...IMAGE_LIMITS, maxMessageChars: 250 });
    expect(pending.add(prepared("a", 120))).toBeNull();
    expect(pending.add(prepared("b", 120))).toBeNull();
    expect(pending.add(prepared("c", 20 + 22))).toBe(
      "c does not fit: the images of one message may take 250 bytes in all.",
    );
    expect(IMAGE_LIMITS.maxMessageChars).toBeLessThan(10 * MB);
  });
});

describe("transfers", () => {
  const png = new File(["x"], "shot.png", { type: "image/png" });

  it("takes a paste's or drop's files, else its file items", () => {
    const files = /** @type {DataTransfer} */ (/** @type {unknown} */ ({ files: [png] }));
    expect(transferFiles(files)).toEqual([png]);
    const items = /** @type {DataTransfer} */ (
      /** @type {unknown} */ ({
        files: [],
        items: [
          { kind: "string", getAsFile: () => null },
          { kind: "file", getAsFile: () => png },
        ],
      })
    );
    expect(transferFiles(items)).toEqual([png]);
    expect(transferFiles(null)).toEqual([]);
  });

  it("tells a drag of files from a drag of text", () => {
    const drag = (/** @type {string[]} */ types) =>
      /** @type {DataTransfer} */ (/** @type {unknown} */ ({ types }));
    expect(carriesFiles(drag(["Files"]))).toBe(true);
    expect(carriesFiles(drag(["text/plain", "text/html"]))).toBe(false);
    expect(carriesFiles(undefined)).toBe(false);
  });

  it("reads a file as a data URL", async () => {
    const url = await readDataUrl(new File([new Uint8Array([1, 2, 3])], "a.png", png));
    expect(url).toBe("data:image/png;base64,AQID");
  });
});

describe("display", () => {
  it("shows only image data URLs", () => {
    expect(isImageDataUrl("data:image/jpeg;base64,/9j/4AAQ+/==")).toBe(true);
    expect(isImageDataUrl("data:image/svg+xml;base64,PHN2Zz4=")).toBe(false);
    expect(isImageDataUrl("https://example.com/a.png")).toBe(false);
    expect(isImageDataUrl('data:image/png;base64,AAAA" onerror="x')).toBe(false);
    expect(isImageDataUrl(42)).toBe(false);
  });

  it("formats sizes", () => {
    expect(formatBytes(512)).toBe("512 bytes");
    expect(formatBytes(30_000)).toBe("29 KB");
    expect(formatBytes(8 * MB)).toBe("8.0 MB");
  });
});
