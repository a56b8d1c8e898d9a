// Pure message-list logic: merging pages and events, delivery-state order, day separators, grouping.
import type { DeliveryState, Message } from "../api/types";

const STATE_RANK: Record<DeliveryState, number> = { pending: 0, sent: 1, delivered: 2, read: 3, failed: 1 };

/**
 * Events and REST answers can arrive out of order (a "delivered" update before the POST's "pending"
 * answer), so delivery state only moves forward; "failed" may replace "pending"/"sent" and a later
 * success replaces "failed" (a resend).
 */
export function laterState(a: DeliveryState, b: DeliveryState): DeliveryState {
  if (a === b) return a;
  if (b === "failed") return a === "pending" || a === "sent" ? "failed" : a;
  if (a === "failed") return b === "pending" ? a : b;
  return STATE_RANK[b] >= STATE_RANK[a] ? b : a;
}

/** Combines two copies of one message: the newer copy wins, except that delivery state never regresses. */
export function mergeMessage(old: Message, incoming: Message): Message {
  const merged = { ...incoming, state: laterState(old.state, incoming.state) };
  // A deletion is final even if a stale copy arrives afterwards.
  if (old.deleted && !incoming.deleted) return { ...merged, deleted: true, body: null };
  return merged;
}

/**
 * Display order: by `sent_at`, then by id, the node's history order. The node gives every
 * message a `sent_at` after everything already in the conversation, so each sender's messages
 * keep the order they were written even when a re-sent one arrives late, and ids (the same on
 * every device) break ties, so a message that arrives late (mailbox, backfill, a space's shared
 * history) sorts where it was sent (docs/peer-protocol.md, "Order"). Optimistic local copies
 * (`local-…`) sort after real ids of the same millisecond.
 */
export function compareMessages(a: Message, b: Message): number {
  return a.sent_at - b.sent_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Merges messages into a list in display order, deduplicated by id. */
export function mergeMessages(existing: readonly Message[], incoming: readonly Message[]): Message[] {
  if (incoming.length === 0) return existing as Message[];
  if (incoming.length === 1) {
    // The common live case, one new or changed message: no map, no sort. New messages go at
    // the end, and changed ones are recent, so both searches from the end stop early.
    const m = incoming[0]!;
    for (let i = existing.length - 1; i >= 0; i--) {
      if (existing[i]!.id === m.id) {
        const merged = mergeMessage(existing[i]!, m);
        if (merged.sent_at === existing[i]!.sent_at && merged.seq === existing[i]!.seq) {
          const out = existing.slice();
          out[i] = merged;
          return out;
        }
        return mergeMessages(existing.filter((x) => x.id !== m.id), [merged]);
      }
    }
    const last = existing[existing.length - 1];
    if (!last || compareMessages(last, m) <= 0) return [...existing, m];
  }
  const byId = new Map<string, Message>();
  for (const m of existing) byId.set(m.id, m);
  for (const m of incoming) {
    const old = byId.get(m.id);
    byId.set(m.id, old ? mergeMessage(old, m) : m);
  }
  return [...byId.values()].sort(compareMessages);
}

/** The key of a local calendar day, so separators follow the reader's time zone. */
export function dayKey(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function dayLabel(ts: number, now: number): string {
  const key = dayKey(ts);
  if (key === dayKey(now)) return "Today";
  if (key === dayKey(now - 86_400_000)) return "Yesterday";
  return new Date(ts).toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

/** How close two messages by one sender must be to share a header. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;

export type ListItem =
  | { kind: "day"; key: string; label: string }
  | { kind: "message"; key: string; message: Message; first: boolean };

/** Interleaves day separators and marks the first message of each sender run (which shows the header). */
export function buildItems(messages: readonly Message[], now: number): ListItem[] {
  const items: ListItem[] = [];
  let prev: Message | null = null;
  for (const m of messages) {
    const newDay = !prev || dayKey(prev.sent_at) !== dayKey(m.sent_at);
    if (newDay) items.push({ kind: "day", key: `day-${dayKey(m.sent_at)}`, label: dayLabel(m.sent_at, now) });
    const first =
      newDay ||
      !prev ||
      prev.sender !== m.sender ||
      m.reply_to !== null ||
      m.sent_at - prev.sent_at > GROUP_WINDOW_MS ||
      m.sent_at < prev.sent_at;
    items.push({ kind: "message", key: m.id, message: m, first });
    prev = m;
  }
  return items;
}

/** Counts incoming messages after the last one the reader has seen (by seq). */
export function countUnread(messages: readonly Message[], lastReadSeq: number): number {
  let n = 0;
  for (const m of messages) if (!m.outgoing && m.seq > lastReadSeq && !m.deleted) n++;
  return n;
}

/** The newest incoming message, the one a read receipt should name. */
export function lastIncoming(messages: readonly Message[]): Message | undefined {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (!m.outgoing) return m;
  }
  return undefined;
}

export function deliveryLabel(state: DeliveryState): string {
  switch (state) {
    case "pending":
      return "Sending";
    case "sent":
      return "Sent";
    case "delivered":
      return "Delivered";
    case "read":
      return "Read";
    case "failed":
      return "Failed to send";
  }
}
