import { describe, expect, it } from "vitest";
import { checkUserId, decodeBech32m, encodeUserId, shortId } from "./userId";

describe("bech32m", () => {
  it("accepts the BIP-350 valid bech32m vectors", () => {
    for (const v of [
      "A1LQFN3A",
      "a1lqfn3a",
      "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
      "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
      "?1v759aa",
    ]) {
      expect(decodeBech32m(v), v).not.toBeNull();
    }
  });

  it("refuses bech32 (not m) checksums and mixed case", () => {
    // Valid *bech32* (BIP-173) strings must fail the bech32m constant.
    expect(decodeBech32m("a12uel5l")).toBeNull();
    expect(decodeBech32m("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw")).toBeNull();
    expect(decodeBech32m("A1lqfn3a")).toBeNull();
  });
});

describe("checkUserId", () => {
  const id = encodeUserId(new Uint8Array(32).map((_, i) => i * 3));

  it("accepts a well-formed ID in any case and with whitespace", () => {
    expect(id).toHaveLength(64);
    expect(id.startsWith("dopus1")).toBe(true);
    expect(checkUserId(id)).toEqual({ ok: true, id });
    expect(checkUserId(`  ${id.toUpperCase()}\n`)).toEqual({ ok: true, id });
  });

  it("names the problem", () => {
    expect(checkUserId("")).toEqual({ ok: false, reason: "empty" });
    expect(checkUserId("bitcoin1" + id.slice(8))).toEqual({ ok: false, reason: "prefix" });
    expect(checkUserId(id.slice(0, 63))).toEqual({ ok: false, reason: "length" });
    expect(checkUserId(id.slice(0, 20) + "b" + id.slice(21))).toEqual({ ok: false, reason: "characters" });
  });

  it("catches a single mistyped character through the checksum", () => {
    const pos = 30;
    const swapped = id[pos] === "q" ? "p" : "q";
    const typo = id.slice(0, pos) + swapped + id.slice(pos + 1);
    expect(checkUserId(typo)).toEqual({ ok: false, reason: "checksum" });
  });

  it("shortens like UserId::short", () => {
    expect(shortId(id)).toBe(`${id.slice(0, 10)}…${id.slice(-4)}`);
  });
});
