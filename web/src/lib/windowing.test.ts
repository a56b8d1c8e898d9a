import { describe, expect, it } from "vitest";
import { buildItems } from "./messages";
import { ALICE, msg } from "./testutil";
import { lastOnScreen } from "./unread";
import { buildRows, estimateRowSize, placedMessages, ROW_HEIGHTS, rowIndexById, START_KEY, stepMessage, withPinned, type Row } from "./windowing";

const DAY = 86_400_000;
const t0 = new Date(2026, 11, 6, 12).getTime();
const NOW = t0 + DAY;

// Two days: a, b (Alice, outgoing) yesterday; c, d today.
const history = [
  msg({ id: "a", seq: 1, sent_at: t0 }),
  msg({ id: "b", seq: 2, sent_at: t0 + 1000, outgoing: true, sender: ALICE }),
  msg({ id: "c", seq: 3, sent_at: t0 + DAY - 60_000 }),
  msg({ id: "d", seq: 4, sent_at: t0 + DAY - 30_000 }),
];
const items = buildItems(history, NOW);
const msgRow = (r: Row | undefined) => {
  if (r?.kind !== "message") throw new Error(`not a message row: ${JSON.stringify(r)}`);
  return r;
};

describe("rows of the virtualised list", () => {
  it("are one per message, day separators drawn inside the day's first message row", () => {
    const rows = buildRows(items, { start: false, dividerId: null, dividerLabel: "New messages" });
    expect(rows.map((r) => r.key)).toEqual(["a", "b", "c", "d"]);
    expect(rows.map((r) => (r.kind === "message" ? r.day : null))).toEqual(["Yesterday", null, "Today", null]);
    expect(rows.every((r) => r.kind === "message" && r.divider === null)).toBe(true);
  });

  it("start with the beginning card once the whole history is loaded", () => {
    const rows = buildRows(items, { start: true, dividerId: null, dividerLabel: "New messages" });
    expect(rows[0]).toEqual({ kind: "start", key: START_KEY });
    expect(rows).toHaveLength(5);
  });

  it("put the unread divider in the first unread message's row, which starts a group", () => {
    const rows = buildRows(items, { start: false, dividerId: "d", dividerLabel: "New messages (more above)" });
    const d = msgRow(rows[3]);
    expect(d.divider).toBe("New messages (more above)");
    // d continues c's group (same sender, 30 s apart) but shows its header under the divider.
    expect(msgRow(buildRows(items, { start: false, dividerId: null, dividerLabel: "" })[3]).first).toBe(false);
    expect(d.first).toBe(true);
  });

  it("keep a message's key across a prepend, so the virtualiser can hold the top row in place", () => {
    const before = buildRows(buildItems(history.slice(2), NOW), { start: false, dividerId: null, dividerLabel: "" });
    const after = buildRows(items, { start: false, dividerId: null, dividerLabel: "" });
    // The row that was on top ("c") is still there under its key; only its separator moved.
    expect(before[0]!.key).toBe("c");
    expect(rowIndexById(after).get("c")).toBe(2);
    // A same-day prepend takes the day separator off the old top row and gives it to the new one.
    const sameDay = [msg({ id: "z", seq: 0, sent_at: t0 + DAY - 90_000 }), ...history.slice(2)];
    const rows = buildRows(buildItems(sameDay, NOW), { start: false, dividerId: null, dividerLabel: "" });
    expect(rows.map((r) => (r.kind === "message" ? [r.key, r.day] : null))).toEqual([
      ["z", "Today"],
      ["c", null],
      ["d", null],
    ]);
  });

  it("index messages by id", () => {
    const rows = buildRows(items, { start: true, dividerId: null, dividerLabel: "" });
    const index = rowIndexById(rows);
    expect([...index.entries()]).toEqual([
      ["a", 1],
      ["b", 2],
      ["c", 3],
      ["d", 4],
    ]);
  });
});

describe("row size estimates", () => {
  const row = (over: Partial<Parameters<typeof msg>[0]>, extra: Partial<Extract<Row, { kind: "message" }>> = {}): Row => ({
    kind: "message",
    key: "x",
    message: msg({ id: "x", seq: 1, ...over }),
    first: false,
    day: null,
    divider: null,
    ...extra,
  });

  it("count lines, wrapped lines, headers, separators and attachments", () => {
    const h = ROW_HEIGHTS;
    expect(estimateRowSize(row({ body: "hi" }))).toBe(h.line);
    expect(estimateRowSize(row({ body: "one\ntwo\nthree" }))).toBe(3 * h.line);
    expect(estimateRowSize(row({ body: "x".repeat(h.charsPerLine * 2 + 1) }))).toBe(3 * h.line);
    expect(estimateRowSize(row({ body: "hi" }, { first: true, day: "Today", divider: "New messages" }))).toBe(
      h.line + h.head + h.day + h.divider,
    );
    expect(estimateRowSize(row({ body: "hi", reply_to: "y", reactions: [{ emoji: "👍", count: 1, mine: false, users: [] }] }))).toBe(
      h.line + h.quote + h.reactions,
    );
    expect(estimateRowSize(row({ body: null, deleted: true, reactions: [{ emoji: "👍", count: 1, mine: false, users: [] }] }))).toBe(h.line);
    expect(estimateRowSize({ kind: "start", key: START_KEY })).toBe(h.start);
  });

  it("stay bounded for a huge message", () => {
    expect(estimateRowSize(row({ body: "line\n".repeat(10_000) }))).toBe(60 * ROW_HEIGHTS.line);
  });
});

describe("pinned rows", () => {
  it("adds off-screen rows that must stay mounted, sorted and once", () => {
    expect(withPinned([10, 11, 12], [], 100)).toEqual([10, 11, 12]);
    expect(withPinned([10, 11, 12], [99, 3, undefined, null, 11, 99], 100)).toEqual([3, 10, 11, 12, 99]);
  });

  it("ignores indices outside the list", () => {
    expect(withPinned([0, 1], [-1, 2, 5], 2)).toEqual([0, 1]);
  });

  it("returns the range itself when nothing is added", () => {
    const range = [4, 5];
    expect(withPinned(range, [5, undefined], 10)).toBe(range);
  });
});

describe("what is on screen, from the virtualiser's offsets", () => {
  const rows = buildRows(items, { start: true, dividerId: "c", dividerLabel: "New messages" });
  // start 0–170, a 170–250, b 250–275, c 275–380 (day + divider + head + line), d 380–405
  const places = [
    { index: 0, start: 0, end: 170 },
    { index: 1, start: 170, end: 250 },
    { index: 2, start: 250, end: 275 },
    { index: 3, start: 275, end: 380 },
    { index: 4, start: 380, end: 405 },
  ];

  it("places messages only, their tops below the separators drawn above them", () => {
    const placed = placedMessages(rows, places);
    expect(placed.map((p) => p.id)).toEqual(["a", "b", "c", "d"]);
    expect(placed[0]).toEqual({ id: "a", top: 170 + ROW_HEIGHTS.day, bottom: 250 });
    expect(placed[2]).toEqual({ id: "c", top: 275 + ROW_HEIGHTS.day + ROW_HEIGHTS.divider, bottom: 380 });
    expect(placed[3]).toEqual({ id: "d", top: 380, bottom: 405 });
  });

  it("feeds lastOnScreen: a message counts once its bottom is in view", () => {
    const placed = placedMessages(rows, places);
    expect(lastOnScreen(placed, 0, 300)).toBe("b");
    expect(lastOnScreen(placed, 100, 390)).toBe("c");
    expect(lastOnScreen(placed, 200, 500)).toBe("d");
  });

  it("skips rows it does not know (a stale index after the list shrank)", () => {
    expect(placedMessages(rows, [{ index: 42, start: 0, end: 10 }])).toEqual([]);
  });
});

describe("keyboard navigation over rows", () => {
  const rows = buildRows(items, { start: true, dividerId: null, dividerLabel: "" });

  it("moves to the neighbouring message, skipping the start card", () => {
    expect(stepMessage(rows, 2, "ArrowUp")).toBe(1);
    expect(stepMessage(rows, 1, "ArrowUp")).toBeNull();
    expect(stepMessage(rows, 2, "ArrowDown")).toBe(3);
    expect(stepMessage(rows, 4, "ArrowDown")).toBeNull();
  });

  it("goes to the first and last message with Home and End", () => {
    expect(stepMessage(rows, 3, "Home")).toBe(1);
    expect(stepMessage(rows, 1, "End")).toBe(4);
    expect(stepMessage([{ kind: "start", key: START_KEY }], 0, "End")).toBeNull();
  });
});
