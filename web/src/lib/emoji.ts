// Emoji data for the picker and `:shortcode:` autocomplete, from emojibase (Unicode's CLDR
// names and GitHub/Slack-style shortcodes). The data is a lazy chunk: it loads the first time a
// picker opens or a `:` is typed.
import type { CompactEmoji } from "emojibase";

export interface EmojiEntry {
  emoji: string;
  label: string;
  shortcodes: string[];
  tags: string[];
  group: number;
}

/** Emojibase's groups, in picker order (group 2, skin-tone components, is left out). */
export const GROUPS: { id: number; name: string }[] = [
  { id: 0, name: "Smileys & emotion" },
  { id: 1, name: "People & body" },
  { id: 3, name: "Animals & nature" },
  { id: 4, name: "Food & drink" },
  { id: 5, name: "Travel & places" },
  { id: 6, name: "Activities" },
  { id: 7, name: "Objects" },
  { id: 8, name: "Symbols" },
  { id: 9, name: "Flags" },
];

/** Builds the entries from emojibase's compact data and a shortcode table (hexcode → codes). */
export function buildEntries(data: readonly CompactEmoji[], shortcodes: Record<string, string | string[]>): EmojiEntry[] {
  const out: EmojiEntry[] = [];
  for (const e of data) {
    if (e.group === undefined || e.group === 2) continue;
    const sc = shortcodes[e.hexcode];
    out.push({
      // Emojibase writes the fully qualified form (with U+FE0F); keep it, it renders in colour.
      emoji: e.unicode,
      label: e.label,
      shortcodes: sc === undefined ? [] : Array.isArray(sc) ? sc : [sc],
      tags: e.tags ?? [],
      group: e.group,
    });
  }
  out.sort((a, b) => a.group - b.group);
  return out;
}

let loading: Promise<EmojiEntry[]> | null = null;

/** The emoji list, loaded once. */
export function loadEmoji(): Promise<EmojiEntry[]> {
  loading ??= Promise.all([import("emojibase-data/en/compact.json"), import("emojibase-data/en/shortcodes/github.json")]).then(
    ([data, codes]) => buildEntries(data.default as CompactEmoji[], codes.default as Record<string, string | string[]>),
  );
  return loading;
}

/**
 * Emoji matching a query, best first: an exact shortcode, then shortcode prefixes, then words of
 * the name, then tags. Case-insensitive; a leading ':' is ignored.
 */
export function searchEmoji(all: readonly EmojiEntry[], query: string, limit = 64): EmojiEntry[] {
  const q = query.trim().toLowerCase().replace(/^:/, "").replace(/:$/, "");
  if (!q) return all.slice(0, limit);
  const scored: { e: EmojiEntry; s: number }[] = [];
  for (const e of all) {
    let s = 0;
    if (e.shortcodes.some((c) => c === q)) s = 100;
    else if (e.shortcodes.some((c) => c.startsWith(q))) s = 80;
    else if (e.label.toLowerCase().split(/[\s:,-]+/).some((w) => w.startsWith(q))) s = 60;
    else if (e.shortcodes.some((c) => c.includes(q))) s = 40;
    else if (e.tags.some((t) => t.startsWith(q))) s = 30;
    else if (e.label.toLowerCase().includes(q)) s = 20;
    if (s > 0) scored.push({ e, s });
  }
  scored.sort((a, b) => b.s - a.s);
  return scored.slice(0, limit).map((x) => x.e);
}

/**
 * The `:query` being typed just before the caret, if any: a colon at a word start followed by
 * at least two shortcode characters and no closing colon. Returns where it starts.
 */
export function shortcodeAt(text: string, caret: number): { start: number; query: string } | null {
  const before = text.slice(0, caret);
  const m = /(^|[\s(])(:([a-z0-9_+-]{2,32}))$/i.exec(before);
  if (!m) return null;
  return { start: caret - m[2]!.length, query: m[3]!.toLowerCase() };
}

/** Replaces the `:query` at `start..caret` with the emoji (and a space); returns text and new caret. */
export function insertAt(text: string, start: number, caret: number, emoji: string): { text: string; caret: number } {
  const insert = `${emoji} `;
  return { text: text.slice(0, start) + insert + text.slice(caret), caret: start + insert.length };
}
