// What the UI remembers in this browser (localStorage), not on the node: the last open
// conversation, unsent drafts, muted conversations, do-not-disturb and sound, recent emoji.
// Everything is per identity (keys carry the user ID) and survives a reload. A browser that
// refuses storage simply forgets; nothing here throws.

/** The part of `Storage` the prefs need (so tests can pass a Map-backed one). */
export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export function browserStorage(): KeyValue | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}

/** An in-memory KeyValue (tests, or a browser without storage). */
export function memoryStorage(): KeyValue {
  const m = new Map<string, string>();
  return {
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

export interface NotifyPrefs {
  /** Browser notifications for messages while the tab is hidden (needs the browser's permission). */
  enabled: boolean;
  /** A short sound with each notification. */
  sound: boolean;
  /** Global do-not-disturb: no notification and no sound from anyone. */
  dnd: boolean;
}

export const DEFAULT_NOTIFY: NotifyPrefs = { enabled: true, sound: true, dnd: false };

/** Longest draft kept per conversation (the node's message limit is 16 KiB anyway). */
const MAX_DRAFT = 20_000;
const MAX_RECENT_EMOJI = 24;

export class Prefs {
  private readonly kv: KeyValue | null;
  private readonly prefix: string;

  constructor(kv: KeyValue | null, userId: string) {
    this.kv = kv;
    this.prefix = `dopus:${userId}:`;
  }

  private read<T>(key: string, fallback: T): T {
    try {
      const raw = this.kv?.getItem(this.prefix + key);
      return raw == null ? fallback : (JSON.parse(raw) as T);
    } catch {
      return fallback;
    }
  }

  private write(key: string, value: unknown): void {
    try {
      if (value === undefined || value === null) this.kv?.removeItem(this.prefix + key);
      else this.kv?.setItem(this.prefix + key, JSON.stringify(value));
    } catch {
      // Quota or privacy mode: forget quietly.
    }
  }

  lastOpen(): string | null {
    const v = this.read<unknown>("last-open", null);
    return typeof v === "string" ? v : null;
  }
  setLastOpen(conversation: string | null): void {
    this.write("last-open", conversation);
  }

  drafts(): Record<string, string> {
    const v = this.read<unknown>("drafts", {});
    if (!v || typeof v !== "object") return {};
    return Object.fromEntries(Object.entries(v).filter(([, t]) => typeof t === "string")) as Record<string, string>;
  }
  draft(conversation: string): string {
    return this.drafts()[conversation] ?? "";
  }
  setDraft(conversation: string, text: string): void {
    const all = this.drafts();
    if (text.trim()) all[conversation] = text.slice(0, MAX_DRAFT);
    else delete all[conversation];
    this.write("drafts", all);
  }

  muted(): Set<string> {
    const v = this.read<unknown>("muted", []);
    return new Set(Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
  }
  setMuted(conversation: string, muted: boolean): Set<string> {
    const all = this.muted();
    if (muted) all.add(conversation);
    else all.delete(conversation);
    this.write("muted", [...all]);
    return all;
  }

  notify(): NotifyPrefs {
    const v = this.read<Partial<NotifyPrefs>>("notify", {});
    return {
      enabled: typeof v.enabled === "boolean" ? v.enabled : DEFAULT_NOTIFY.enabled,
      sound: typeof v.sound === "boolean" ? v.sound : DEFAULT_NOTIFY.sound,
      dnd: typeof v.dnd === "boolean" ? v.dnd : DEFAULT_NOTIFY.dnd,
    };
  }
  setNotify(p: NotifyPrefs): void {
    this.write("notify", p);
  }

  recentEmoji(): string[] {
    const v = this.read<unknown>("recent-emoji", []);
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string").slice(0, MAX_RECENT_EMOJI) : [];
  }
  /** Moves `emoji` to the front of the recent list. */
  useEmoji(emoji: string): string[] {
    const list = [emoji, ...this.recentEmoji().filter((e) => e !== emoji)].slice(0, MAX_RECENT_EMOJI);
    this.write("recent-emoji", list);
    return list;
  }
}
