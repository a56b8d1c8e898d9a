import { useEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { GROUPS, loadEmoji, searchEmoji, type EmojiEntry } from "../lib/emoji";
import { usePrefs } from "../state/prefs";

/** The quick reactions shown first when reacting (one click, as in Discord's hover bar). */
export const EMOJIS = ["👍", "❤️", "😂", "😮", "😢", "🎉", "🙏", "👀", "🔥", "✅"];

/**
 * An emoji picker: quick reactions (when reacting), recent emoji, search by name, shortcode or
 * tag, and every emoji by category. Arrow keys move through the grid, Enter picks, Escape
 * closes (the caller puts focus back where it was).
 */
export function EmojiPicker({
  onPick,
  onClose,
  mode = "reaction",
}: {
  onPick(emoji: string): void;
  onClose(): void;
  mode?: "reaction" | "insert";
}) {
  const { recentEmoji, usedEmoji } = usePrefs();
  const ref = useRef<HTMLDivElement>(null);
  const search = useRef<HTMLInputElement>(null);
  const [all, setAll] = useState<EmojiEntry[] | null>(null);
  const [query, setQuery] = useState("");

  useEffect(() => {
    let live = true;
    loadEmoji().then(
      (e) => live && setAll(e),
      () => live && setAll([]),
    );
    return () => {
      live = false;
    };
  }, []);

  useEffect(() => {
    if (mode === "reaction") ref.current?.querySelector<HTMLButtonElement>("button.emoji-btn")?.focus();
    else search.current?.focus();
    const onDown = (e: MouseEvent) => {
      if (ref.current && !ref.current.contains(e.target as Node)) onClose();
    };
    document.addEventListener("mousedown", onDown);
    return () => document.removeEventListener("mousedown", onDown);
  }, [onClose, mode]);

  const pick = (emoji: string) => {
    usedEmoji(emoji);
    onPick(emoji);
  };

  const labelOf = useMemo(() => new Map((all ?? []).map((e) => [e.emoji, e.label])), [all]);
  // In the reaction picker the quick row already holds the usual ones.
  const recent = recentEmoji.filter((e) => mode !== "reaction" || !EMOJIS.includes(e));
  const results = useMemo(() => (all && query.trim() ? searchEmoji(all, query, 120) : null), [all, query]);
  const byGroup = useMemo(() => {
    const m = new Map<number, EmojiEntry[]>();
    for (const e of all ?? []) {
      const list = m.get(e.group) ?? [];
      list.push(e);
      m.set(e.group, list);
    }
    return m;
  }, [all]);

  const onKey = (e: KeyboardEvent<HTMLDivElement>) => {
    if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      onClose();
      return;
    }
    const target = e.target as HTMLElement;
    if (!target.classList.contains("emoji-btn")) {
      if (e.key === "ArrowDown" && target === search.current) {
        e.preventDefault();
        ref.current?.querySelector<HTMLButtonElement>("button.emoji-btn")?.focus();
      }
      return;
    }
    const buttons = [...(ref.current?.querySelectorAll<HTMLButtonElement>("button.emoji-btn") ?? [])];
    const i = buttons.indexOf(target as HTMLButtonElement);
    const perRow = 8;
    let next = i;
    if (e.key === "ArrowRight") next = i + 1;
    else if (e.key === "ArrowLeft") next = i - 1;
    else if (e.key === "ArrowDown") next = i + perRow;
    else if (e.key === "ArrowUp") next = i - perRow;
    else return;
    e.preventDefault();
    if (next < 0 && e.key === "ArrowUp") {
      search.current?.focus();
      return;
    }
    buttons[Math.max(0, Math.min(buttons.length - 1, next))]?.focus();
  };

  // Quick reactions are named by their glyph ("React with 👍"), the rest by their name, so no
  // two buttons share a name.
  const cell = (emoji: string, label: string, quick = false) => (
    <button
      key={emoji}
      type="button"
      className="icon emoji-btn"
      aria-label={mode === "reaction" ? `React with ${quick ? emoji : label}` : label}
      title={label}
      onClick={() => pick(emoji)}
    >
      {emoji}
    </button>
  );

  return (
    <div
      className={`emoji-picker emoji-picker-${mode}`}
      role="dialog"
      aria-label={mode === "reaction" ? "Pick a reaction" : "Pick an emoji"}
      ref={ref}
      onKeyDown={onKey}
      data-testid="emoji-picker"
    >
      <input
        ref={search}
        type="search"
        className="emoji-search"
        placeholder="Search emoji"
        aria-label="Search emoji"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && results?.[0]) {
            e.preventDefault();
            pick(results[0].emoji);
          }
        }}
      />
      <div className="emoji-scroll">
        {results ? (
          <section aria-label="Search results">
            {results.length === 0 ? <p className="muted small">No emoji match.</p> : <div className="emoji-grid">{results.map((e) => cell(e.emoji, e.label))}</div>}
          </section>
        ) : (
          <>
            {mode === "reaction" && (
              <section aria-label="Quick reactions">
                <div className="emoji-grid">{EMOJIS.map((e) => cell(e, e, true))}</div>
              </section>
            )}
            {recent.length > 0 && (
              <section aria-labelledby="emoji-recent">
                <h4 id="emoji-recent" className="emoji-heading">
                  Recent
                </h4>
                <div className="emoji-grid">{recent.map((e) => cell(e, `recent ${labelOf.get(e) ?? e}`))}</div>
              </section>
            )}
            {all === null && <p className="muted small">Loading emoji…</p>}
            {GROUPS.map((g) => {
              const list = byGroup.get(g.id);
              if (!list?.length) return null;
              return (
                <section key={g.id} aria-labelledby={`emoji-group-${g.id}`} className="emoji-group">
                  <h4 id={`emoji-group-${g.id}`} className="emoji-heading">
                    {g.name}
                  </h4>
                  <div className="emoji-grid">{list.map((e) => cell(e.emoji, e.label))}</div>
                </section>
              );
            })}
          </>
        )}
      </div>
    </div>
  );
}
