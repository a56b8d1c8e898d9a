import { describe, expect, it } from "vitest";
import { connectionSummary, isIceUrl, isServerUrl, parseIceServers, safetyGroups } from "./format";

describe("format", () => {
  it("splits a safety number into 12 groups of 5 whatever the separators", () => {
    const digits = Array.from({ length: 60 }, (_, i) => String(i % 10)).join("");
    const spaced = safetyGroups(digits.replace(/(\d{5})/g, "$1 ").trim());
    expect(spaced).toHaveLength(12);
    expect(spaced.every((g) => /^\d{5}$/.test(g))).toBe(true);
    expect(safetyGroups(digits)).toEqual(spaced);
  });

  it("parses and checks ICE and server URLs", () => {
    expect(parseIceServers(" stun:a.example:3478 \n\nturn:b.example ,stuns:c")).toEqual([
      "stun:a.example:3478",
      "turn:b.example",
      "stuns:c",
    ]);
    expect(isIceUrl("stun:stun.l.google.com:19302")).toBe(true);
    expect(isIceUrl("http://x")).toBe(false);
    expect(isServerUrl("wss://signal.example.org")).toBe(true);
    expect(isServerUrl("ws://127.0.0.1:9000")).toBe(true);
    expect(isServerUrl("https://signal.example.org")).toBe(false);
    expect(isServerUrl("nonsense")).toBe(false);
  });

  it("summarises a connection", () => {
    expect(connectionSummary({ mode: "direct", state: "connected", rtt_ms: 12.4 })).toBe(
      "Direct peer-to-peer (connected, 12 ms)",
    );
    expect(connectionSummary({ mode: "mailbox", state: "disconnected" })).toMatch(/^Mailbox/);
  });
});
