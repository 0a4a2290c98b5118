// @ts-check
// The wire protocol between the kernel (mlxnb/_widget/) and the view, and the reducer that
// folds streamed ops into a turn. mlxnb/_widget/protocol.py implements the same reducer; both
// are tested against tests/fixtures/protocol.json so the live view and the saved transcript
// agree. Display helpers live in format.js.

/**
 * A transcript turn and its parts, as the reducer builds them and the kernel saves them.
 * @typedef {{kind: "thinking", text: string, seconds: number | null}} ThinkingPart
 * @typedef {{kind: "content", text: string}} ContentPart
 * A tool call is `pending` while it waits for the user's Run or Deny (`approve=True`).
 * @typedef {"streaming" | "pending" | "running" | "done" | "error"} ToolStatus
 * What a tool's pane shows besides its result (a `tool_output` op): what it printed, and a
 * returned DataFrame's first rows (`shape` is the whole frame's) or a figure as a PNG.
 * @typedef {{columns: string[], index: string[], rows: string[][], shape: number[]}} ToolTable
 * @typedef {{stdout?: string, table?: ToolTable, image?: string}} ToolOutput
 * @typedef {{
 *   kind: "tool", key: string, id: string | null, name: string | null,
 *   arguments: Record<string, unknown> | null, raw: string, status: ToolStatus,
 *   result: string | null, error: string | null, output?: ToolOutput
 * }} ToolPart
 * @typedef {ThinkingPart | ContentPart | ToolPart} Part
 * @typedef {{
 *   ttft: number | null, tps: number | null, prompt_tokens: number,
 *   completion_tokens: number, seconds: number, rounds: number, finish_reason: string,
 *   context_tokens?: number, context_limit?: number | null
 * }} Stats
 * @typedef {"streaming" | "done" | "cancelled" | "error"} TurnStatus
 *
 * `images`: thumbnails (small JPEG `data:` URLs) of the images sent with the user's message;
 * absent in transcripts saved before images existed. `model`: the name of the model that
 * answered (absent in older transcripts). No op changes either. `left_out`: how many earlier
 * messages the request left out to fit the model's context (set by a `left_out` op; only when
 * the widget truncates). `context`: what the message's `@name` mentions inserted (set by the
 * `start` message; absent when none): a known name's description (and, for a figure sent to a
 * vision model, its thumbnail), or a note for an unknown name.
 * @typedef {{
 *   name: string, kind: string, text: string, found: boolean, image?: string
 * }} ContextEntry
 * @typedef {{
 *   id: string, user: string, images?: string[], model?: string, left_out?: number,
 *   context?: ContextEntry[],
 *   parts: Part[], status: TurnStatus, error: string | null, stats: Stats | null
 * }} Turn
 */

/**
 * The ops (TurnRecorder in protocol.py): `key` names a tool call within the turn.
 * @typedef {["think", text: string]} ThinkOp
 * @typedef {["think_end", seconds: number]} ThinkEndOp
 * @typedef {["text", text: string]} TextOp
 * @typedef {["tool_delta", key: string, text: string]} ToolDeltaOp
 * @typedef {[
 *   "tool_call", key: string, id: string, name: string, args: Record<string, unknown>
 * ]} ToolCallOp
 * @typedef {["tool_error", key: string, raw: string, error: string]} ToolErrorOp
 * @typedef {["tool_result", key: string, result: string, error: string | null]} ToolResultOp
 * @typedef {["tool_status", key: string, status: ToolStatus]} ToolStatusOp
 * @typedef {["tool_output", key: string, output: ToolOutput]} ToolOutputOp
 * @typedef {["left_out", messages: number]} LeftOutOp
 * @typedef {["end", status: TurnStatus, error: string | null, stats: Stats | null]} EndOp
 * @typedef {ThinkOp | ThinkEndOp | TextOp | ToolDeltaOp | ToolCallOp | ToolErrorOp
 *   | ToolResultOp | ToolStatusOp | ToolOutputOp | LeftOutOp | EndOp} Op
 */

/**
 * Custom messages, kernel → view (ChatWidget.send in widget.py).
 * @typedef {{
 *   type: "start",
 *   turn: {
 *     id: string, user: string, images?: string[], model?: string, context?: ContextEntry[],
 *     parts?: Part[]
 *   }
 * }} StartMessage
 * @typedef {{type: "ops", id: string, ops: Op[]}} OpsMessage
 * @typedef {{type: "refused", message: string}} RefusedMessage
 * `names`: the kernel's variables `@` may complete, as [name, kind] pairs (the answer to a
 * `names` request).
 * @typedef {{type: "names", names: Array<[string, string]>}} NamesMessage
 * `export`: the conversation as markdown (the answer to an `export` request).
 * @typedef {{type: "export", markdown: string}} ExportMessage
 * `recent`: saved conversations, newest first (the answer to a `recent` request).
 * @typedef {{id: string, title: string, model: string, turns: number, updated_at: string}}
 *   RecentConversation
 * @typedef {{type: "recent", conversations: RecentConversation[]}} RecentMessage
 * @typedef {StartMessage | OpsMessage | RefusedMessage | NamesMessage | ExportMessage
 *   | RecentMessage} KernelMessage
 *
 * Custom messages, view → kernel (ChatWidget._on_frontend_message). `images` are `data:` URLs
 * of the attached images (scaled down in the browser, see images.js); left out when none.
 * `model` switches the conversation to another model (a name from the `models` trait);
 * `models` asks the kernel to refresh that list (the picker is being opened).
 * @typedef {{type: "send", text: string, images?: string[]}} SendRequest
 * @typedef {{type: "model", name: string}} ModelRequest
 * `approve` answers a pending tool call (`run`: Run or Deny); `continue` carries on the last
 * answer (cut by max_tokens; its `start` message brings the parts so far); `edit` resends turn
 * `index` with new text, replacing the turns after it.
 * @typedef {{type: "approve", id: string, run: boolean}} ApproveRequest
 * @typedef {{type: "edit", index: number, text: string}} EditRequest
 * `recent` asks for the saved conversations (the Recent menu is being opened); `resume` shows
 * saved conversation `id` and goes on with it.
 * @typedef {{type: "resume", id: string}} ResumeRequest
 * @typedef {SendRequest | ModelRequest | {type: "models"} | {type: "regenerate"} | {type: "stop"}
 *   | {type: "clear"} | {type: "names"} | {type: "export"} | ApproveRequest | {type: "continue"}
 *   | EditRequest | {type: "recent"} | ResumeRequest} ViewRequest
 *
 * The synced traits of ChatWidget. `load_progress` is empty unless a model is being fetched or
 * loaded; `fraction` is null when the size is unknown.
 * @typedef {"loading" | "ready" | "generating" | "error"} WidgetStatus
 * @typedef {"resolving" | "downloading" | "loading"} LoadStage
 * @typedef {{model: string, stage: LoadStage, fraction: number | null, message: string}}
 *   LoadProgress
 * `conversation_id`: the conversation shown (its id in the audit log's file).
 * @typedef {{
 *   transcript: Turn[], status: WidgetStatus, error: string, model_name: string,
 *   models: string[], load_progress: LoadProgress | Record<string, never>,
 *   enable_thinking: boolean, supports_thinking: boolean, supports_images: boolean,
 *   tool_names: string[], conversation_id: string
 * }} WidgetState
 */

/**
 * A new, empty turn as the kernel announces it in a `start` message.
 * @param {string} id
 * @param {string} user
 * @param {string[]} [images] thumbnails of the images sent with the message
 * @param {string} [model] the model that answers
 * @returns {Turn}
 */
export function newTurn(id, user, images = [], model = undefined) {
  /** @type {Turn} */
  const turn = { id, user, images, parts: [], status: "streaming", error: null, stats: null };
  if (model !== undefined) turn.model = model;
  return turn;
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
    kind: "tool",
    key,
    id: null,
    name: null,
    arguments: null,
    raw: "",
    status: "streaming",
    result: null,
    error: null,
  });
  return turn.parts.length - 1;
}

/**
 * The tool part with this key (created when missing) and its index.
 * @param {Turn} turn
 * @param {string} key
 * @returns {[number, ToolPart]}
 */
function toolPart(turn, key) {
  const i = toolIndex(turn, key);
  return [i, /** @type {ToolPart} */ (turn.parts[i])];
}

/**
 * Fold one op into the turn (in place). Unknown ops are ignored.
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
      const [i, part] = toolPart(turn, op[1]);
      part.raw += op[2];
      return i;
    }
    case "tool_call": {
      const [i, part] = toolPart(turn, op[1]);
      part.id = op[2];
      part.name = op[3];
      part.arguments = op[4];
      part.status = "running";
      return i;
    }
    case "tool_error": {
      const [i, part] = toolPart(turn, op[1]);
      if (op[2]) part.raw = op[2];
      part.status = "error";
      part.error = op[3];
      return i;
    }
    case "tool_result": {
      const [i, part] = toolPart(turn, op[1]);
      part.result = op[2];
      part.error = op[3];
      part.status = op[3] ? "error" : "done";
      return i;
    }
    case "tool_status": {
      const [i, part] = toolPart(turn, op[1]);
      part.status = op[2];
      return i;
    }
    case "tool_output": {
      const [i, part] = toolPart(turn, op[1]);
      part.output = op[2];
      return i;
    }
    case "left_out": {
      turn.left_out = op[1];
      return -1;
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
  /** @type {Set<number>} */
  const changed = new Set();
  for (const op of ops) changed.add(applyOp(turn, op));
  return changed;
}
