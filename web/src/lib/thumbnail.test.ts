import { describe, expect, it } from "vitest";
import { thumbSize } from "./thumbnail";

describe("thumbnail sizes", () => {
  it("scales the longer side down, never up", () => {
    expect(thumbSize(4032, 3024)).toEqual({ width: 160, height: 120 });
    expect(thumbSize(300, 1200)).toEqual({ width: 40, height: 160 });
    expect(thumbSize(64, 48)).toEqual({ width: 64, height: 48 });
    expect(thumbSize(10000, 1)).toEqual({ width: 160, height: 1 });
    expect(thumbSize(0, 5)).toEqual({ width: 1, height: 1 });
  });
});
