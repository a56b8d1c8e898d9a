import { describe, expect, it } from "vitest";
import { isActive, normalizeVerification } from "../components/SasVerification";

describe("SAS verification view", () => {
  it("keeps the documented fields and at most seven emoji", () => {
    const v = normalizeVerification({
      state: "compare",
      txn: "ab",
      emoji: Array.from({ length: 9 }, (_, i) => ({ symbol: "🐶", name: `Dog${i}` })),
      decimals: [1, 2, 3],
    });
    expect(v.state).toBe("compare");
    expect(v.emoji).toHaveLength(7);
    expect(v.decimals).toEqual([1, 2, 3]);
  });

  it("reads anything malformed as no verification", () => {
    expect(normalizeVerification(null).state).toBe("none");
    expect(normalizeVerification({ state: "hacked" }).state).toBe("none");
    expect(normalizeVerification({ state: "compare", emoji: [{ symbol: 1 }] }).emoji).toEqual([]);
  });

  it("polls only while the other side can still act", () => {
    expect(isActive(null)).toBe(false);
    expect(isActive({ state: "waiting" })).toBe(true);
    expect(isActive({ state: "compare" })).toBe(true);
    expect(isActive({ state: "confirmed" })).toBe(true);
    expect(isActive({ state: "verified" })).toBe(false);
    expect(isActive({ state: "cancelled" })).toBe(false);
  });
});
