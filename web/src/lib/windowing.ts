// The conversation's message list is virtualised (@tanstack/react-virtual): only the rows near
// the viewport are in the DOM, each absolutely placed at the offset the virtualiser computed
// from measured (or, until first shown, estimated) heights. What depends on positions works on
// rows and the virtualiser's offsets instead of DOM nodes; the pure parts are here, tested.
import type { Message } from "../api/types";
import type { ListItem } from "./messages";
import type { Placed } from "./unread";

/** One virtual row of a conversation's history. */
export type Row =
  /** The "beginning of your conversation" card, once the whole history is loaded. */
  | { kind: "start"; key: string }
  /**
   * A message (keyed by its id), with what is drawn above it: the day separator when it is the
   * day's first loaded message, and the "new messages" divider when it is the first unread one.
   * Separators live inside message rows so that every row but the start card is a message:
   * when older messages are prepended, the virtualiser keeps the row at the top of the view in
   * place by its key, and a day separator (whose key would move to the new top) cannot be it.
   */
  | { kind: "message"; key: string; message: Message; first: boolean; day: string | null; divider: string | null };

export const START_KEY = "conversation-start";

/**
 * Rows in display order: the start card (if the whole history is loaded), then one row per
 * message. The unread divider belongs to the row of the first unread message, so landing at
 * that row lands at the divider, and it starts a new sender group (its header shows).
 */
export function buildRows(
  items: readonly ListItem[],
  opts: { start: boolean; dividerId: string | null; dividerLabel: string },
): Row[] {
  const rows: Row[] = [];
  if (opts.start) rows.push({ kind: "start", key: START_KEY });
  let day: string | null = null;
  for (const item of items) {
    if (item.kind === "day") {
      day = item.label;
      continue;
    }
    const isDivider = opts.dividerId !== null && item.message.id === opts.dividerId;
    rows.push({
      kind: "message",
      key: item.key,
      message: item.message,
      first: item.first || isDivider,
      day,
      divider: isDivider ? opts.dividerLabel : null,
    });
    day = null;
  }
  return rows;
}

/** Message id → row index. */
export function rowIndexById(rows: readonly Row[]): Map<string, number> {
  const out = new Map<string, number>();
  rows.forEach((r, i) => {
    if (r.kind === "message") out.set(r.message.id, i);
  });
  return out;
}

/** Pixel heights the CSS gives (at 16 px root font); only used until a row is measured. */
export const ROW_HEIGHTS = {
  start: 170,
  day: 42,
  divider: 30,
  /** A continuation message with one line of text. */
  line: 25,
  /** The author line and the group's top margin of a first message. */
  head: 38,
  quote: 24,
  reactions: 32,
  preview: 100,
  /** Characters per wrapped line at a typical width. */
  charsPerLine: 90,
} as const;

/**
 * An estimate of a row's height before it is rendered. Close estimates keep the scrollbar
 * honest and the corrections small when rows are measured; they never decide what is shown.
 */
export function estimateRowSize(row: Row): number {
  const h = ROW_HEIGHTS;
  if (row.kind === "start") return h.start;
  const m = row.message;
  let lines = 1;
  if (!m.deleted && m.body) {
    lines = 0;
    for (const line of m.body.split("\n")) lines += Math.max(1, Math.ceil(line.length / h.charsPerLine));
    lines = Math.min(lines, 60);
  }
  let size = lines * h.line;
  if (row.first) size += h.head;
  if (row.day) size += h.day;
  if (row.divider) size += h.divider;
  if (m.reply_to) size += h.quote;
  if (m.reactions.length > 0 && !m.deleted) size += h.reactions;
  if (m.preview && !m.deleted) size += h.preview;
  return size;
}

/**
 * The rows to render: the virtualiser's window plus rows that must stay mounted although they
 * may be off screen (the focused message, so focus and keyboard navigation survive scrolling;
 * the message being edited, so its unsaved text survives; the newest message, the list's one
 * Tab stop). Sorted, without duplicates or indices out of range.
 */
export function withPinned(range: readonly number[], pinned: readonly (number | undefined | null)[], count: number): number[] {
  const extra = pinned.filter((i): i is number => typeof i === "number" && i >= 0 && i < count && !range.includes(i));
  if (extra.length === 0) return range as number[];
  return [...new Set([...range, ...extra])].sort((a, b) => a - b);
}

/** A rendered row's place, in the scroller's content coordinates (the virtualiser's items). */
export interface RowPlace {
  index: number;
  start: number;
  end: number;
}

/** The messages among rendered rows, with their places, in display order (for `lastOnScreen`). */
export function placedMessages(rows: readonly Row[], places: readonly RowPlace[]): Placed[] {
  const out: Placed[] = [];
  for (const p of places) {
    const r = rows[p.index];
    if (r?.kind !== "message") continue;
    // The separators drawn above a message are not part of it.
    const top = p.start + (r.day ? ROW_HEIGHTS.day : 0) + (r.divider ? ROW_HEIGHTS.divider : 0);
    out.push({ id: r.message.id, top: Math.min(top, p.end), bottom: p.end });
  }
  return out;
}

export type NavKey = "ArrowUp" | "ArrowDown" | "Home" | "End";

/**
 * Keyboard navigation between messages: the row index of the message the key moves to from row
 * `from`, skipping the start card; null at either end (ArrowUp at the top
 * then loads older messages).
 */
export function stepMessage(rows: readonly Row[], from: number, key: NavKey): number | null {
  const isMsg = (i: number) => rows[i]?.kind === "message";
  if (key === "Home" || key === "End") {
    const [start, step] = key === "Home" ? [0, 1] : [rows.length - 1, -1];
    for (let i = start; i >= 0 && i < rows.length; i += step) if (isMsg(i)) return i;
    return null;
  }
  const step = key === "ArrowUp" ? -1 : 1;
  for (let i = from + step; i >= 0 && i < rows.length; i += step) if (isMsg(i)) return i;
  return null;
}
