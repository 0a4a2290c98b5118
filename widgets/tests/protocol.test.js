// @ts-check
import { describe, expect, it } from "vitest";
import { applyOp, applyOps, newTurn } from "../src/protocol.js";
import fixtureData from "./fixtures/protocol.json" with { type: "json" };

/**
 * @typedef {import("../src/protocol.js").Op} Op
 * @typedef {import("../src/protocol.js").Turn} Turn
 * @typedef {{name: string, ops: Op[], expected: Omit<Turn, "id" | "user">}} Case
 */

/** The cases shared with tests/widget/test_widget_protocol.py (JSON's own types are too wide). */
const fixture = /** @type {{cases: Case[]}} */ (/** @type {unknown} */ (fixtureData));

describe("applyOps agrees with the shared fixture", () => {
  it.each(fixture.cases.map((c) => [c.name, c]))("%s", (_name, c) => {
    const turn = newTurn("t1", "hi");
    applyOps(turn, c.ops);
    expect(turn).toEqual({ id: "t1", user: "hi", images: [], ...c.expected });
  });
});

describe("applyOp", () => {
  it("reports which part changed", () => {
    const turn = newTurn("t", "u");
    expect(applyOp(turn, ["think", "a"])).toBe(0);
    expect(applyOp(turn, ["text", "b"])).toBe(1);
    expect(applyOp(turn, ["think_end", 1])).toBe(0);
    expect(applyOp(turn, ["tool_delta", "0-0", "{"])).toBe(2);
    expect(applyOp(turn, ["end", "done", null, null])).toBe(-1);
    // @ts-expect-error an op this view does not know (say, from a newer kernel) is ignored
    expect(applyOp(turn, ["nonsense"])).toBe(-1);
  });

  it("applyOps collects every changed index once", () => {
    const turn = newTurn("t", "u");
    const changed = applyOps(turn, [
      ["text", "a"],
      ["text", "b"],
      ["end", "done", null, null],
    ]);
    expect([...changed].sort()).toEqual([-1, 0]);
  });
});
