// Unread navigation, kept pure so every rule is unit-tested: where the "new messages" divider
// goes, which messages have been on screen (only those count as read), how many remain below,
// and when the "jump to present" bar shows. Written for any conversation (direct now, space
// channels later): it only looks at message lists and positions.
import type { Message } from "../api/types";

function counts(m: Message): boolean {
  return !m.outgoing && !m.deleted && !m.id.startsWith("local-");
}

/**
 * The first unread message, given how many unread messages the node reported when the
 * conversation was opened: the `unread`-th counting incoming message from the end. `missing`
 * when the loaded history does not reach back that far (load older pages, then ask again).
 */
export function firstUnread(messages: readonly Message[], unread: number): { id: string | null; missing: boolean } {
  if (unread <= 0) return { id: null, missing: false };
  let n = 0;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (counts(m) && ++n === unread) return { id: m.id, missing: false };
  }
  return { id: null, missing: true };
}

/** A message's vertical place in the scroller, in the scroller's content coordinates. */
export interface Placed {
  id: string;
  top: number;
  bottom: number;
}

/**
 * The newest message that has been fully on screen: the last one whose bottom is above the
 * viewport's bottom edge (and that is not entirely above the viewport's top, unless a later one
 * is visible). `placed` is in display order. Null when none is visible.
 */
export function lastOnScreen(placed: readonly Placed[], viewTop: number, viewBottom: number): string | null {
  let last: string | null = null;
  for (const p of placed) {
    if (p.top >= viewBottom) break;
    // A message taller than the view counts once its top is in view and it reaches the bottom.
    const fullyAbove = p.bottom <= viewBottom + 1;
    const tallAndShown = p.bottom - p.top > viewBottom - viewTop && p.top >= viewTop - 1;
    if (fullyAbove || tallAndShown) last = p.id;
  }
  return last;
}

/** How many counting (incoming) messages come after `seenId`; all of them if it is null. */
export function unreadAfter(messages: readonly Message[], seenId: string | null): number {
  let start = 0;
  if (seenId !== null) {
    const i = messages.findIndex((m) => m.id === seenId);
    start = i < 0 ? 0 : i + 1;
  }
  let n = 0;
  for (let i = start; i < messages.length; i++) if (counts(messages[i]!)) n++;
  return n;
}

/** The newest incoming message at or before `seenId`: what a read receipt may name. */
export function readUpTo(messages: readonly Message[], seenId: string | null): Message | null {
  if (seenId === null) return null;
  const i = messages.findIndex((m) => m.id === seenId);
  for (let j = i; j >= 0; j--) {
    const m = messages[j]!;
    if (!m.outgoing && !m.id.startsWith("local-")) return m;
  }
  return null;
}

/** Whether the reader is close enough to the newest message to be "at the present". */
export function atPresent(distanceFromBottom: number): boolean {
  return distanceFromBottom < 48;
}

/** The "jump to present" bar shows once the reader is more than one screen above the newest message. */
export function showJumpBar(distanceFromBottom: number, viewHeight: number): boolean {
  return distanceFromBottom > Math.max(200, viewHeight);
}

/** The total for the tab title and favicon: unread in accepted, unmuted conversations. */
export function totalUnread(
  contacts: Record<string, { state: string; unread: number; blocked: boolean }>,
  muted: ReadonlySet<string>,
): number {
  let n = 0;
  for (const [id, c] of Object.entries(contacts)) {
    if (c.state === "accepted" && !c.blocked && !muted.has(id)) n += c.unread;
  }
  return n;
}
