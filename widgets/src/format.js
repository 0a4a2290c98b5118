// @ts-check
// Pure display helpers of the view: text for tool panes, statistics, model names and thinking
// labels. No DOM, no state; the reducer they read from lives in protocol.js.

/**
 * @typedef {import("./protocol.js").ToolPart} ToolPart
 * @typedef {import("./protocol.js").Stats} Stats
 */

/**
 * Close open strings, arrays and objects of a JSON prefix so that it parses; `null` when the
 * prefix cannot be completed (e.g. it stops inside a key or after a colon).
 * @param {string} text
 * @returns {unknown}
 */
export function parsePartialJson(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  try {
    return JSON.parse(trimmed);
  } catch {
    // complete it below
  }
  /** @type {string[]} */
  const closers = [];
  let inString = false;
  let escaped = false;
  for (const ch of trimmed) {
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{") closers.push("}");
    else if (ch === "[") closers.push("]");
    else if (ch === "}" || ch === "]") closers.pop();
  }
  let candidate = trimmed;
  if (escaped) candidate = candidate.slice(0, -1);
  if (inString) candidate += '"';
  candidate = candidate.replace(/[,\s]+$/, "");
  const tail = closers.reverse().join("");
  for (const attempt of [candidate + tail, `${candidate} null${tail}`]) {
    try {
      return JSON.parse(attempt);
    } catch {
      // try the next completion
    }
  }
  return null;
}

/**
 * What a tool pane shows: the call's name and pretty-printed arguments, from the parsed call
 * when it has arrived, else from the raw text streamed so far.
 * @param {ToolPart} part
 * @returns {{name: string, args: string}}
 */
export function describeTool(part) {
  if (part.name !== null) {
    return { name: part.name, args: JSON.stringify(part.arguments ?? {}, null, 2) };
  }
  const parsed = parsePartialJson(part.raw);
  if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
    const record = /** @type {Record<string, unknown>} */ (parsed);
    const name = typeof record.name === "string" ? record.name : "…";
    const args = record.arguments ?? record.parameters;
    return { name, args: args === undefined ? "" : JSON.stringify(args, null, 2) };
  }
  return { name: "…", args: part.raw.trim() };
}

/**
 * One line of per-answer statistics.
 * @param {Stats | null} stats
 * @returns {string}
 */
export function formatStats(stats) {
  if (!stats) return "";
  const items = [];
  if (stats.ttft !== null && stats.ttft !== undefined) {
    items.push(`first token ${stats.ttft.toFixed(2)} s`);
  }
  if (stats.tps !== null && stats.tps !== undefined) items.push(`${stats.tps.toFixed(1)} tok/s`);
  items.push(
    stats.prompt_tokens > 0
      ? `${stats.prompt_tokens} prompt + ${stats.completion_tokens} completion tokens`
      : `${stats.completion_tokens} completion tokens`,
  );
  items.push(`${stats.seconds.toFixed(2)} s`);
  if (stats.rounds > 1) items.push(`${stats.rounds} rounds`);
  if (stats.context_limit && stats.context_tokens) {
    // How full the model's context is after this answer: the next message starts from here.
    const share = Math.round((100 * stats.context_tokens) / stats.context_limit);
    items.push(`context ${stats.context_tokens}/${stats.context_limit} (${share} %)`);
  }
  if (!["stop", "cancelled", ""].includes(stats.finish_reason ?? "")) {
    items.push(stats.finish_reason);
  }
  return items.join(" · ");
}

/**
 * A short display name for a model: a local path's last folder, a repo id as it is.
 * @param {string} modelId
 * @returns {string}
 */
export function shortModelName(modelId) {
  if (!/^([/~.]|[A-Za-z]:\\)/.test(modelId)) return modelId;
  const pieces = modelId.split(/[\\/]/).filter(Boolean);
  return pieces.length ? pieces[pieces.length - 1] : modelId;
}

/**
 * The summary of a thinking pane: live, or how long the model thought.
 * @param {number | null} seconds
 * @returns {string}
 */
export function thinkingLabel(seconds) {
  return seconds === null ? "Thinking…" : `Thought for ${seconds.toFixed(1)} s`;
}

/**
 * The divider shown above a turn whose request left earlier messages out.
 * @param {number} count
 * @returns {string}
 */
export function leftOutLabel(count) {
  const messages = count === 1 ? "1 earlier message" : `${count} earlier messages`;
  return `${messages} left out to fit the context`;
}

/** @type {Record<import("./protocol.js").LoadStage, string>} */
const STAGE_TEXT = { resolving: "Finding", downloading: "Downloading", loading: "Loading" };

/**
 * What the progress bar says while a model is fetched or loaded ("" when nothing is).
 * @param {Partial<import("./protocol.js").LoadProgress>} progress
 * @returns {string}
 */
export function progressLabel(progress) {
  if (!progress.stage) return "";
  const stage = STAGE_TEXT[progress.stage] ?? progress.stage;
  const name = shortModelName(progress.model ?? "");
  const fraction = typeof progress.fraction === "number" ? progress.fraction : null;
  const percent = fraction === null ? "" : ` ${Math.round(fraction * 100)}%`;
  return `${stage} ${name || "model"}…${percent}`;
}
