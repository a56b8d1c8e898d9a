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

import { displayName } from "./format";

describe("names and title", () => {
  it("falls back to a short ID when a contact has no name yet", () => {
    const id = "dopus1" + "q".repeat(58);
    expect(displayName({ display_name: "  ", user_id: id })).toBe(`${id.slice(0, 10)}…${id.slice(-4)}`);
    expect(displayName({ display_name: "Bob", user_id: id })).toBe("Bob");
  });
});

describe("connection with nulls", () => {
  it("treats a null RTT as unknown, not 0 ms", () => {
    expect(connectionSummary({ mode: "mailbox", state: "new", rtt_ms: null })).toBe(
      "Mailbox (stored encrypted until they are online) (new)",
    );
  });
});

import { formatRtt } from "./format";

describe("formatRtt", () => {
  it("shows sub-millisecond paths as < 1 ms", () => {
    expect(formatRtt(0.08)).toBe("< 1 ms");
    expect(formatRtt(12.6)).toBe("13 ms");
  });
});

import { snippetParts } from "./format";

describe("snippetParts", () => {
  it("splits marked matches and leaves text as text", () => {
    expect(snippetParts("the \u0002dog\u0003 and <b>\u0002cat\u0003</b>")).toEqual([
      { text: "the ", match: false },
      { text: "dog", match: true },
      { text: " and <b>", match: false },
      { text: "cat", match: true },
      { text: "</b>", match: false },
    ]);
    expect(snippetParts("plain")).toEqual([{ text: "plain", match: false }]);
  });
});
