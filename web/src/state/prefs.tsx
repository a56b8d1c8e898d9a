// The browser-side preferences (lib/prefs.ts) as React state for the signed-in identity:
// muted conversations, notification switches, recent emoji, drafts and the last open conversation.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { browserStorage, Prefs, type NotifyPrefs } from "../lib/prefs";

interface PrefsValue {
  prefs: Prefs;
  muted: ReadonlySet<string>;
  setMuted(conversation: string, muted: boolean): void;
  notify: NotifyPrefs;
  setNotify(p: NotifyPrefs): void;
  recentEmoji: string[];
  /** Records an emoji as just used (picker, autocomplete, reaction). */
  usedEmoji(emoji: string): void;
}

const PrefsContext = createContext<PrefsValue | null>(null);

export function PrefsProvider({ userId, children }: { userId: string; children: ReactNode }) {
  const prefs = useMemo(() => new Prefs(browserStorage(), userId), [userId]);
  const [muted, setMutedState] = useState<ReadonlySet<string>>(() => prefs.muted());
  const [notify, setNotifyState] = useState<NotifyPrefs>(() => prefs.notify());
  const [recentEmoji, setRecent] = useState<string[]>(() => prefs.recentEmoji());

  const setMuted = useCallback((c: string, m: boolean) => setMutedState(new Set(prefs.setMuted(c, m))), [prefs]);
  const setNotify = useCallback(
    (p: NotifyPrefs) => {
      prefs.setNotify(p);
      setNotifyState(p);
    },
    [prefs],
  );
  const usedEmoji = useCallback((e: string) => setRecent(prefs.useEmoji(e)), [prefs]);

  const value = useMemo(
    () => ({ prefs, muted, setMuted, notify, setNotify, recentEmoji, usedEmoji }),
    [prefs, muted, setMuted, notify, setNotify, recentEmoji, usedEmoji],
  );
  return <PrefsContext.Provider value={value}>{children}</PrefsContext.Provider>;
}

export function usePrefs(): PrefsValue {
  const v = useContext(PrefsContext);
  if (!v) throw new Error("usePrefs outside PrefsProvider");
  return v;
}
