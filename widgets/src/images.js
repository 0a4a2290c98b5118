// @ts-check
// Images the user attaches before sending: which files are taken, how a large image is scaled
// down in the browser before it travels, and the list of pending images the input row shows.
// The rules are plain functions (unit-tested); only prepareImage needs a real browser.

/**
 * An image ready to send: a `data:` URL and what the pending list shows of it.
 * @typedef {{id: number, name: string, url: string, width: number, height: number}} PendingImage
 * @typedef {Omit<PendingImage, "id">} PreparedImage
 * @typedef {{
 *   maxImages: number, maxFileBytes: number, maxSide: number, keepBytes: number,
 *   maxMessageChars: number
 * }} ImageLimits
 * @typedef {{keep: true} | {keep: false, width: number, height: number, type: string}} ImagePlan
 */

/** @type {Readonly<ImageLimits>} */
export const IMAGE_LIMITS = Object.freeze({
  // images in one message (ImageLimits.max_images in mlxnb/_images.py)
  maxImages: 8,
  // a file over this is refused before it is read (ImageLimits.max_bytes)
  maxFileBytes: 20 * 1024 * 1024,
  // a longer side is scaled down to this in the browser
  maxSide: 2048,
  // an image file this small (and no larger than maxSide) is sent as it is
  keepBytes: 1.5 * 1024 * 1024,
  // all images of one message, as data URLs: the server takes 10 MiB per websocket message
  maxMessageChars: 8 * 1024 * 1024,
});

/** Encodings the kernel reads as they are; other images the browser can show are converted. */
export const SENT_AS_IS = Object.freeze(["image/png", "image/jpeg", "image/webp", "image/gif"]);

/** A data URL the view may show as an image (never a remote or script URL). */
const SAFE_IMAGE_URL = /^data:image\/(png|jpeg|gif|webp|bmp);base64,[A-Za-z0-9+/=]+$/;

/**
 * Whether `url` is an image data URL the view may put in an `<img src>`.
 * @param {unknown} url
 * @returns {url is string}
 */
export function isImageDataUrl(url) {
  return typeof url === "string" && SAFE_IMAGE_URL.test(url);
}

/**
 * @param {number} bytes
 * @returns {string}
 */
export function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

/**
 * Why a file cannot be attached (before reading it), or null when it can.
 * @param {{name: string, type: string, size: number}} file
 * @param {ImageLimits} [limits]
 * @returns {string | null}
 */
export function checkFile(file, limits = IMAGE_LIMITS) {
  const name = file.name || "The pasted item";
  if (!file.type.startsWith("image/")) return `${name} is not an image.`;
  if (file.size > limits.maxFileBytes) {
    return (
      `${name} is too large (${formatBytes(file.size)}); ` +
      `images up to ${formatBytes(limits.maxFileBytes)} can be attached.`
    );
  }
  return null;
}

/**
 * The size an image is drawn at so that its longer side is at most `maxSide` (never enlarged).
 * @param {number} width
 * @param {number} height
 * @param {number} maxSide
 * @returns {{width: number, height: number}}
 */
export function fitWithin(width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  };
}

/**
 * Send a decoded image as it is, or redraw it: scaled down, and as PNG or JPEG.
 * Small files in a format the kernel reads go as they are (nothing lost); a JPEG stays a JPEG,
 * anything else becomes a PNG (transparency and sharp edges kept).
 * @param {{type: string, size: number, width: number, height: number}} image
 * @param {ImageLimits} [limits]
 * @returns {ImagePlan}
 */
export function planImage(image, limits = IMAGE_LIMITS) {
  const fits = Math.max(image.width, image.height) <= limits.maxSide;
  if (fits && image.size <= limits.keepBytes && SENT_AS_IS.includes(image.type)) {
    return { keep: true };
  }
  const size = fitWithin(image.width, image.height, limits.maxSide);
  return { keep: false, ...size, type: image.type === "image/jpeg" ? "image/jpeg" : "image/png" };
}

/** The images waiting to be sent with the next message. */
export class PendingImages {
  /** @param {ImageLimits} [limits] */
  constructor(limits = IMAGE_LIMITS) {
    this.limits = limits;
    /** @type {PendingImage[]} */
    this.items = [];
    this.nextId = 1;
  }

  get length() {
    return this.items.length;
  }

  /** Characters of all pending data URLs (what the send message will carry). */
  get chars() {
    return this.items.reduce((total, item) => total + item.url.length, 0);
  }

  /**
   * Why no further image can be added (`reserved` are being read now), or null.
   * @param {number} [reserved]
   * @returns {string | null}
   */
  full(reserved = 0) {
    if (this.items.length + reserved >= this.limits.maxImages) {
      return `At most ${this.limits.maxImages} images can be sent with one message.`;
    }
    return null;
  }

  /**
   * Add a prepared image; returns why it was refused, or null.
   * @param {PreparedImage} image
   * @returns {string | null}
   */
  add(image) {
    const full = this.full();
    if (full) return full;
    if (this.chars + image.url.length > this.limits.maxMessageChars) {
      return (
        `${image.name} does not fit: the images of one message may take ` +
        `${formatBytes(this.limits.maxMessageChars)} in all.`
      );
    }
    this.items.push({ id: this.nextId++, ...image });
    return null;
  }

  /**
   * @param {number} id
   * @returns {boolean} whether it was there
   */
  remove(id) {
    const before = this.items.length;
    this.items = this.items.filter((item) => item.id !== id);
    return this.items.length < before;
  }

  /**
   * Empty the list and return what was in it (to restore it if the kernel refuses).
   * @returns {PendingImage[]}
   */
  take() {
    const items = this.items;
    this.items = [];
    return items;
  }

  /**
   * Put images back in front of any added since.
   * @param {PendingImage[]} items
   */
  restore(items) {
    this.items = [...items, ...this.items];
  }

  /** @returns {string[]} the data URLs, in order */
  urls() {
    return this.items.map((item) => item.url);
  }
}

/**
 * The files of a paste or drop, falling back to its items (some browsers list pasted
 * screenshots only there).
 * @param {DataTransfer | null | undefined} transfer
 * @returns {File[]}
 */
export function transferFiles(transfer) {
  if (!transfer) return [];
  const files = Array.from(transfer.files ?? []);
  if (files.length) return files;
  /** @type {File[]} */
  const found = [];
  for (const item of Array.from(transfer.items ?? [])) {
    const file = item.kind === "file" ? item.getAsFile() : null;
    if (file) found.push(file);
  }
  return found;
}

/**
 * Whether a drag carries files (not text or a link being dragged within the page).
 * @param {DataTransfer | null | undefined} transfer
 * @returns {boolean}
 */
export function carriesFiles(transfer) {
  return Boolean(transfer && Array.from(transfer.types ?? []).includes("Files"));
}

/**
 * @param {Blob} blob
 * @returns {Promise<string>}
 */
export function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error("the file could not be read"));
    reader.readAsDataURL(blob);
  });
}

/**
 * @param {string} url
 * @returns {Promise<HTMLImageElement>}
 */
async function decode(url) {
  const image = new Image();
  image.src = url;
  await image.decode();
  return image;
}

/**
 * Read an image file in the browser and make it ready to send: as it is when small, else
 * scaled down on a canvas (longer side at most `limits.maxSide`) and re-encoded.
 * @param {File} file
 * @param {ImageLimits} [limits]
 * @returns {Promise<PreparedImage>}
 */
export async function prepareImage(file, limits = IMAGE_LIMITS) {
  const name = file.name || "pasted image";
  const original = await readDataUrl(file);
  let image;
  try {
    image = await decode(original);
  } catch {
    throw new Error(`${name} could not be read as an image.`);
  }
  const width = image.naturalWidth;
  const height = image.naturalHeight;
  if (!width || !height) throw new Error(`${name} has no size to draw it at.`);
  const plan = planImage({ type: file.type, size: file.size, width, height }, limits);
  if (plan.keep) return { name, url: original, width, height };
  const canvas = document.createElement("canvas");
  canvas.width = plan.width;
  canvas.height = plan.height;
  const context = canvas.getContext("2d");
  if (!context) throw new Error(`${name} could not be scaled down (no canvas).`);
  if (plan.type === "image/jpeg") {
    context.fillStyle = "#fff"; // JPEG has no transparency: lay it over white, as the kernel does
    context.fillRect(0, 0, plan.width, plan.height);
  }
  context.imageSmoothingQuality = "high";
  context.drawImage(image, 0, 0, plan.width, plan.height);
  let url = canvas.toDataURL(plan.type, 0.9);
  if (plan.type === "image/png" && url.length > limits.keepBytes * 2) {
    // a photo that was not a JPEG: PNG keeps it needlessly large
    context.globalCompositeOperation = "destination-over";
    context.fillStyle = "#fff";
    context.fillRect(0, 0, plan.width, plan.height);
    url = canvas.toDataURL("image/jpeg", 0.9);
  }
  return { name, url, width: plan.width, height: plan.height };
}
