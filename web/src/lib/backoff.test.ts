import { describe, expect, it } from "vitest";
import { backoffDelay, BACKOFF_BASE_MS, BACKOFF_MAX_MS } from "./backoff";

describe("backoffDelay", () => {
  it("doubles per attempt within [half, full] of nominal and is capped", () => {
    expect(backoffDelay(0, 0)).toBe(BACKOFF_BASE_MS / 2);
    expect(backoffDelay(0, 0.999999)).toBeLessThanOrEqual(BACKOFF_BASE_MS);
    expect(backoffDelay(3, 0)).toBe((BACKOFF_BASE_MS * 8) / 2);
    for (const attempt of [10, 50, 1000]) {
      expect(backoffDelay(attempt, 0.999999)).toBeLessThanOrEqual(BACKOFF_MAX_MS);
      expect(backoffDelay(attempt, 0)).toBe(BACKOFF_MAX_MS / 2);
    }
  });
});
