// The wire protocol between the kernel (mlxnb/_widget.py) and the view, and the reducer that
// folds streamed ops into a turn. mlxnb/_widget.py implements the same reducer; both are tested
// against tests/fixtures/protocol.json so the live view and the saved transcript agree.

/**
 * @typedef {{kind: "thinking", text: string, seconds: number | null}} ThinkingPart
 * @typedef {{kind: "content", text: string}} ContentPart
 * @typedef {{
 *   kind: "tool", key: string, id: string | null, name: string | null,
 *   arguments: Record<string, unknown> | null, raw: string,
 *   status: "streaming" | "running" | "done" | "error",
 *   result: string | null, error: string | null
 * }} ToolPart
 * @typedef {ThinkingPart | ContentPart | ToolPart} Part
 * @typedef {{
 *   ttft: number | null, tps: number | null, prompt_tokens: number,
 *   completion_tokens: number, seconds: number, rounds: number, finish_reason: string
 * }} Stats
 * @typedef {{
 *   id: string, user: string, parts: Part[],
 *   status: "streaming" | "done" | "cancelled" | "error",
 *   error: string | null, stats: Stats | null
 * }} Turn
 * @typedef {Array<any>} Op  e.g. ["text", "Hello"], ["tool_call", key, id, name, args]
 */

/**
 * A new, empty turn as the kernel announces it in a `start` message.
 * @param {string} id
 * @param {string} user
 * @returns {Turn}
 */
export function newTurn(id, user) {
  return { id, user, parts: [], status: "streaming", error: null, stats: null };
}

/**
 * @param {Turn} turn
 * @param {string} key
 * @returns {number} index of the tool part with this key (created when missing)
 */
function toolIndex(turn, key) {
  const found = turn.parts.findIndex((p) => p.kind === "tool" && p.key === key);
  if (found >= 0) return found;
  turn.parts.push({
    kind: "tool", key, id: null, name: null, arguments: null, raw: "",
    status: "streaming", result: null, error: null,
  });
  return turn.parts.length - 1;
}

/**
 * Fold one op into the turn (in place).
 * @param {Turn} turn
 * @param {Op} op
 * @returns {number} index of the part that changed, or -1 when the turn itself changed
 */
export function applyOp(turn, op) {
  const parts = turn.parts;
  const last = parts[parts.length - 1];
  switch (op[0]) {
    case "think": {
      if (last && last.kind === "thinking" && last.seconds === null) {
        last.text += op[1];
        return parts.length - 1;
      }
      parts.push({ kind: "thinking", text: op[1], seconds: null });
      return parts.length - 1;
    }
    case "think_end": {
      for (let i = parts.length - 1; i >= 0; i--) {
        const part = parts[i];
        if (part.kind === "thinking" && part.seconds === null) {
          part.seconds = op[1];
          return i;
        }
      }
      return -1;
    }
    case "text": {
      if (last && last.kind === "content") {
        last.text += op[1];
        return parts.length - 1;
      }
      parts.push({ kind: "content", text: op[1] });
      return parts.length - 1;
    }
    case "tool_delta": {
      const i = toolIndex(turn, op[1]);
      /** @type {ToolPart} */ (parts[i]).raw += op[2];
      return i;
    }
    case "tool_call": {
      const i = toolIndex(turn, op[1]);
      const part = /** @type {ToolPart} */ (parts[i]);
      Object.assign(part, { id: op[2], name: op[3], arguments: op[4], status: "running" });
      return i;
    }
    case "tool_error": {
      const i = toolIndex(turn, op[1]);
      const part = /** @type {ToolPart} */ (parts[i]);
      if (op[2]) part.raw = op[2];
      Object.assign(part, { status: "error", error: op[3] });
      return i;
    }
    case "tool_result": {
      const i = toolIndex(turn, op[1]);
      const part = /** @type {ToolPart} */ (parts[i]);
      Object.assign(part, { result: op[2], error: op[3], status: op[3] ? "error" : "done" });
      return i;
    }
    case "end": {
      turn.status = op[1];
      turn.error = op[2];
      turn.stats = op[3];
      return -1;
    }
    default:
      return -1;
  }
}

/**
 * Fold a batch of ops; returns the indices of the parts that changed.
 * @param {Turn} turn
 * @param {Op[]} ops
 * @returns {Set<number>}
 */
export function applyOps(turn, ops) {
  const changed = new Set();
  for (const op of ops) changed.add(applyOp(turn, op));
  return changed;
}

/**
 * Close open strings, arrays and objects of a JSON prefix so that it parses; `null` when the
 * prefix cannot be completed (e.g. it stops inside a key or after a colon).
 * @param {string} text
 * @returns {unknown | null}
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
  for (const attempt of [candidate + tail, candidate + " null" + tail]) {
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
  items.push(stats.prompt_tokens > 0
    ? `${stats.prompt_tokens} prompt + ${stats.completion_tokens} completion tokens`
    : `${stats.completion_tokens} completion tokens`);
  items.push(`${stats.seconds.toFixed(2)} s`);
  if (stats.rounds > 1) items.push(`${stats.rounds} rounds`);
  if (!["stop", "cancelled", ""].includes(stats.finish_reason ?? "")) items.push(stats.finish_reason);
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
 * @param {number | null} seconds
 * @returns {string}
 */
export function thinkingLabel(seconds) {
  return seconds === null ? "Thinking…" : `Thought for ${seconds.toFixed(1)} s`;
}
