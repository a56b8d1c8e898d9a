// Typing indicators: the sender throttles, the receiver expires stale entries.

/** A peer's typing state expires this long after its last refresh (docs/api.md). */
export const TYPING_EXPIRY_MS = 6000;
/** While typing, tell the node at most this often. */
export const TYPING_SEND_INTERVAL_MS = 3000;

export type TypingMap = Readonly<Record<string, number>>; // user id -> expires at (ms)

export function applyTyping(map: TypingMap, userId: string, active: boolean, now: number): TypingMap {
  if (active) return { ...map, [userId]: now + TYPING_EXPIRY_MS };
  if (!(userId in map)) return map;
  const next = { ...map };
  delete next[userId];
  return next;
}

/** Drops expired entries; returns the same object when nothing changed, so React can skip a render. */
export function expireTyping(map: TypingMap, now: number): TypingMap {
  let changed = false;
  const next: Record<string, number> = {};
  for (const [id, exp] of Object.entries(map)) {
    if (exp > now) next[id] = exp;
    else changed = true;
  }
  return changed ? next : map;
}

export function isTyping(map: TypingMap, userId: string, now: number): boolean {
  const exp = map[userId];
  return exp !== undefined && exp > now;
}

/** Decides when the composer should tell the node "typing"; one instance per open conversation. */
export class TypingThrottle {
  private lastSent = -Infinity;
  private active = false;

  /** Called on each keystroke that leaves text in the box; true when a `typing: true` should go out. */
  keystroke(now: number): boolean {
    if (!this.active || now - this.lastSent >= TYPING_SEND_INTERVAL_MS) {
      this.active = true;
      this.lastSent = now;
      return true;
    }
    return false;
  }

  /** Called on send, on clearing the box, or on leaving; true when a `typing: false` should go out. */
  stop(): boolean {
    const was = this.active;
    this.active = false;
    this.lastSent = -Infinity;
    return was;
  }
}

export function typingText(names: readonly string[]): string {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "Several people are typing…";
}
