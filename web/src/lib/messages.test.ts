import { describe, expect, it } from "vitest";
import { buildItems, countUnread, laterState, lastIncoming, mergeMessages, GROUP_WINDOW_MS } from "./messages";
import { ALICE, BOB, msg } from "./testutil";

describe("mergeMessages", () => {
  it("orders by seq and dedupes by id, newer copy winning", () => {
    const a = [msg({ id: "a", seq: 1 }), msg({ id: "c", seq: 3 })];
    const b = [msg({ id: "b", seq: 2 }), msg({ id: "c", seq: 3, body: "edited", edited_at: 5 })];
    const out = mergeMessages(a, b);
    expect(out.map((m) => m.id)).toEqual(["a", "b", "c"]);
    expect(out[2]!.body).toBe("edited");
  });

  it("prepends an older page without duplicating the overlap", () => {
    const held = [3, 4, 5].map((s) => msg({ id: `m${s}`, seq: s }));
    const older = [1, 2, 3].map((s) => msg({ id: `m${s}`, seq: s }));
    expect(mergeMessages(held, older).map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("puts a late, re-sent message in its sender's order, not at the end", () => {
    const held = [msg({ id: "a", seq: 1, sent_at: 10 }), msg({ id: "c", seq: 2, sent_at: 30 })];
    const late = msg({ id: "b", seq: 3, sent_at: 20 });
    expect(mergeMessages(held, [late]).map((m) => m.id)).toEqual(["a", "b", "c"]);
    const tie = msg({ id: "d", seq: 4, sent_at: 30 });
    expect(mergeMessages(held, [tie]).map((m) => m.id)).toEqual(["a", "c", "d"]);
  });

  it("breaks sent_at ties by id, like the node, whatever the arrival order", () => {
    const live = [msg({ id: "a", seq: 1, sent_at: 10 }), msg({ id: "c", seq: 2, sent_at: 30 })];
    // Arrived later (a history bundle) with the same sent_at as "c" and a smaller id.
    const backfilled = msg({ id: "b", seq: 9, sent_at: 30 });
    expect(mergeMessages(live, [backfilled]).map((m) => m.id)).toEqual(["a", "b", "c"]);
    const held = [msg({ id: "c", seq: 1, sent_at: 30 })];
    const page = [msg({ id: "a", seq: 3, sent_at: 10 }), msg({ id: "b", seq: 2, sent_at: 30 })];
    expect(mergeMessages(held, page).map((m) => m.id)).toEqual(["a", "b", "c"]);
  });

  it("never moves delivery state backwards", () => {
    const read = msg({ id: "x", seq: 1, outgoing: true, sender: ALICE, state: "read" });
    const stale = { ...read, state: "sent" as const };
    expect(mergeMessages([read], [stale])[0]!.state).toBe("read");
    expect(mergeMessages([stale], [read])[0]!.state).toBe("read");
  });

  it("keeps a deletion even if a stale copy arrives", () => {
    const deleted = msg({ id: "x", seq: 1, deleted: true, body: null });
    const stale = msg({ id: "x", seq: 1 });
    const out = mergeMessages([deleted], [stale])[0]!;
    expect(out.deleted).toBe(true);
    expect(out.body).toBeNull();
  });
});

describe("laterState", () => {
  it("follows pending < sent < delivered < read", () => {
    expect(laterState("pending", "sent")).toBe("sent");
    expect(laterState("delivered", "sent")).toBe("delivered");
    expect(laterState("sent", "read")).toBe("read");
  });
  it("lets failure replace pending but not delivered, and a resend clear failure", () => {
    expect(laterState("pending", "failed")).toBe("failed");
    expect(laterState("delivered", "failed")).toBe("delivered");
    expect(laterState("failed", "sent")).toBe("sent");
    expect(laterState("failed", "pending")).toBe("failed");
  });
});

describe("buildItems", () => {
  const day1 = new Date(2026, 0, 10, 12, 0).getTime();
  const day2 = new Date(2026, 0, 11, 9, 0).getTime();

  it("inserts one separator per local day", () => {
    const ms = [
      msg({ id: "a", seq: 1, sent_at: day1 }),
      msg({ id: "b", seq: 2, sent_at: day1 + 1000 }),
      msg({ id: "c", seq: 3, sent_at: day2 }),
    ];
    const items = buildItems(ms, day2 + 1000);
    expect(items.map((i) => i.kind)).toEqual(["day", "message", "message", "day", "message"]);
    expect(items[3]).toMatchObject({ kind: "day", label: "Today" });
    expect(items[0]).toMatchObject({ kind: "day", label: "Yesterday" });
  });

  it("groups runs by sender within the window and breaks on sender change, gap or reply", () => {
    const ms = [
      msg({ id: "a", seq: 1, sent_at: day1 }),
      msg({ id: "b", seq: 2, sent_at: day1 + 60_000 }),
      msg({ id: "c", seq: 3, sent_at: day1 + 120_000, sender: ALICE, outgoing: true }),
      msg({ id: "d", seq: 4, sent_at: day1 + 120_000 + GROUP_WINDOW_MS + 1, sender: ALICE, outgoing: true }),
      msg({ id: "e", seq: 5, sent_at: day1 + 120_000 + GROUP_WINDOW_MS + 2, sender: ALICE, outgoing: true, reply_to: "a" }),
    ];
    const firsts = buildItems(ms, day1)
      .filter((i) => i.kind === "message")
      .map((i) => (i.kind === "message" ? i.first : null));
    expect(firsts).toEqual([true, false, true, true, true]);
  });
});

describe("unread", () => {
  it("counts incoming, undeleted messages after the last read seq", () => {
    const ms = [
      msg({ id: "a", seq: 1 }),
      msg({ id: "b", seq: 2, outgoing: true, sender: ALICE }),
      msg({ id: "c", seq: 3 }),
      msg({ id: "d", seq: 4, deleted: true, body: null }),
      msg({ id: "e", seq: 5 }),
    ];
    expect(countUnread(ms, 0)).toBe(3);
    expect(countUnread(ms, 3)).toBe(1);
    expect(countUnread(ms, 5)).toBe(0);
    expect(lastIncoming(ms)?.id).toBe("e");
    expect(lastIncoming([msg({ id: "z", seq: 1, sender: ALICE, outgoing: true })])).toBeUndefined();
    expect(BOB).not.toBe(ALICE);
  });
});
