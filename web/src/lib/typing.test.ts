import { describe, expect, it } from "vitest";
import { applyTyping, expireTyping, isTyping, TypingThrottle, typingText, TYPING_EXPIRY_MS } from "./typing";

describe("typing expiry", () => {
  it("expires 6 s after the last refresh", () => {
    let map = applyTyping({}, "bob", true, 1000);
    expect(isTyping(map, "bob", 1000 + TYPING_EXPIRY_MS - 1)).toBe(true);
    map = applyTyping(map, "bob", true, 4000); // refresh
    expect(isTyping(map, "bob", 1000 + TYPING_EXPIRY_MS + 1)).toBe(true);
    expect(isTyping(map, "bob", 4000 + TYPING_EXPIRY_MS)).toBe(false);
    const pruned = expireTyping(map, 4000 + TYPING_EXPIRY_MS);
    expect(pruned).toEqual({});
  });

  it("stops on active=false and keeps identity when nothing expires", () => {
    const map = applyTyping({}, "bob", true, 0);
    expect(applyTyping(map, "bob", false, 10)).toEqual({});
    expect(expireTyping(map, 10)).toBe(map);
    const empty = {};
    expect(applyTyping(empty, "carol", false, 0)).toBe(empty);
  });
});

describe("TypingThrottle", () => {
  it("sends at most once per 3 s while typing, and a stop only after a start", () => {
    const t = new TypingThrottle();
    expect(t.stop()).toBe(false);
    expect(t.keystroke(0)).toBe(true);
    expect(t.keystroke(100)).toBe(false);
    expect(t.keystroke(2999)).toBe(false);
    expect(t.keystroke(3000)).toBe(true);
    expect(t.keystroke(3500)).toBe(false);
    expect(t.stop()).toBe(true);
    expect(t.stop()).toBe(false);
    expect(t.keystroke(3600)).toBe(true);
  });

  it("says who is typing", () => {
    expect(typingText([])).toBe("");
    expect(typingText(["Bob"])).toBe("Bob is typing…");
    expect(typingText(["Bob", "Carol"])).toBe("Bob and Carol are typing…");
  });
});
