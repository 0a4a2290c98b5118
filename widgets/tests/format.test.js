// @ts-check
import { describe, expect, it } from "vitest";
import {
  describeTool,
  formatStats,
  parsePartialJson,
  shortModelName,
  thinkingLabel,
} from "../src/format.js";

/** @typedef {import("../src/protocol.js").ToolPart} ToolPart */

describe("parsePartialJson", () => {
  it.each([
    ['{"a": 1}', { a: 1 }],
    ['{"name": "get_wea', { name: "get_wea" }],
    ['{"name": "f", "arguments": {"city": "Par', { name: "f", arguments: { city: "Par" } }],
    ['{"a": [1, 2', { a: [1, 2] }],
    ['{"a": 1,', { a: 1 }],
    ['{"a": "x\\', { a: "x" }],
    ['{"a": "brace } in string', { a: "brace } in string" }],
    ['{"a":', { a: null }],
  ])("%s", (text, expected) => {
    expect(parsePartialJson(text)).toEqual(expected);
  });

  it.each(["", "   ", '{"na', "not json"])("gives up on %j", (text) => {
    expect(parsePartialJson(text)).toBeNull();
  });
});

describe("describeTool", () => {
  /** @type {ToolPart} */
  const base = {
    kind: "tool",
    key: "0-0",
    id: null,
    name: null,
    arguments: null,
    raw: "",
    status: "streaming",
    result: null,
    error: null,
  };

  it("prefers the parsed call", () => {
    const part = { ...base, name: "get_weather", arguments: { city: "Paris" }, raw: "garbage" };
    expect(describeTool(part)).toEqual({ name: "get_weather", args: '{\n  "city": "Paris"\n}' });
  });

  it("pretty-prints arguments while they stream", () => {
    const part = { ...base, raw: '\n{"name": "get_weather", "arguments": {"city": "Pa' };
    expect(describeTool(part)).toEqual({ name: "get_weather", args: '{\n  "city": "Pa"\n}' });
  });

  it("shows raw text it cannot parse", () => {
    expect(describeTool({ ...base, raw: " <call>f(x) " })).toEqual({
      name: "…",
      args: "<call>f(x)",
    });
  });
});

describe("formatStats", () => {
  it("is empty without stats", () => {
    expect(formatStats(null)).toBe("");
  });

  it("shows time to first token, speed and token counts", () => {
    const text = formatStats({
      ttft: 0.123,
      tps: 45.67,
      prompt_tokens: 12,
      completion_tokens: 34,
      seconds: 2,
      rounds: 2,
      finish_reason: "length",
    });
    expect(text).toBe(
      "first token 0.12 s · 45.7 tok/s · 12 prompt + 34 completion tokens · 2.00 s · 2 rounds · length",
    );
  });

  it("shows how full the context is when the model's limit is known", () => {
    const stats = {
      ttft: null,
      tps: null,
      prompt_tokens: 900,
      completion_tokens: 124,
      seconds: 1,
      rounds: 1,
      finish_reason: "stop",
      context_tokens: 1024,
    };
    expect(formatStats({ ...stats, context_limit: 4096 })).toBe(
      "900 prompt + 124 completion tokens · 1.00 s · context 1024/4096 (25 %)",
    );
    expect(formatStats({ ...stats, context_limit: null })).not.toContain("context");
  });

  it("leaves out what is unknown", () => {
    const text = formatStats({
      ttft: null,
      tps: null,
      prompt_tokens: 1,
      completion_tokens: 2,
      seconds: 0.5,
      rounds: 1,
      finish_reason: "stop",
    });
    expect(text).toBe("1 prompt + 2 completion tokens · 0.50 s");
  });

  it("a stopped answer has no prompt count and no finish reason", () => {
    const text = formatStats({
      ttft: 0.1,
      tps: 20,
      prompt_tokens: 0,
      completion_tokens: 7,
      seconds: 0.5,
      rounds: 1,
      finish_reason: "cancelled",
    });
    expect(text).toBe("first token 0.10 s · 20.0 tok/s · 7 completion tokens · 0.50 s");
  });
});

it.each([
  [null, "Thinking…"],
  [1.23, "Thought for 1.2 s"],
  [0, "Thought for 0.0 s"],
])("thinkingLabel(%s)", (seconds, label) => {
  expect(thinkingLabel(seconds)).toBe(label);
});

it.each([
  ["mlx-community/Qwen3-0.6B-4bit", "mlx-community/Qwen3-0.6B-4bit"],
  ["/root/.cache/mlxnb/models/tiny-qwen3-1234", "tiny-qwen3-1234"],
  ["./models/mine/", "mine"],
  ["~/m", "m"],
  ["C:\\models\\phi", "phi"],
])("shortModelName(%j) is %j", (id, name) => {
  expect(shortModelName(id)).toBe(name);
});
