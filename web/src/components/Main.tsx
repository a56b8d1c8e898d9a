import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { layoutFor, visiblePanes, type Panel, type PhonePane } from "../lib/layout";
import { bannerFor } from "../lib/state";
import { totalUnread } from "../lib/unread";
import { useMessageNotifications, useUnreadBadge } from "../state/notifications";
import { PrefsProvider, usePrefs } from "../state/prefs";
import { useStore } from "../state/store";
import { CallPanel } from "./CallPanel";
import { VoicePanel } from "./VoicePanel";
import { Conversation } from "./Conversation";
import { Details } from "./Details";
import { Home } from "./Home";
import { ProfileCard } from "./ProfileCard";
import { SearchPanel } from "./SearchPanel";
import { SettingsDialog } from "./SettingsDialog";
import { Sidebar } from "./Sidebar";
import { Spaces } from "./Spaces";

function subscribeWidth(f: () => void) {
  window.addEventListener("resize", f);
  return () => window.removeEventListener("resize", f);
}
/** The window's width, re-rendering on resize (layout breakpoints live in lib/layout.ts). */
function useWidth(): number {
  return useSyncExternalStore(subscribeWidth, () => window.innerWidth, () => 1280);
}

/** The signed-in app; waits for our identity so the per-identity preferences can load. */
export function Main() {
  const { state } = useStore();
  if (!state.me) {
    return (
      <div className="splash" role="status">
        <p>Loading…</p>
      </div>
    );
  }
  return (
    <PrefsProvider userId={state.me.user_id}>
      <Shell />
    </PrefsProvider>
  );
}

function Shell() {
  const { state, dispatch, actions, subscribe } = useStore();
  const { prefs, muted, notify } = usePrefs();
  const [settingsOpen, setSettingsOpen] = useState(false);
  const [panel, setPanel] = useState<Panel>(null);
  const [jumpTo, setJumpTo] = useState<string | null>(null);
  const [pane, setPane] = useState<PhonePane>("list");
  const [card, setCard] = useState<{ userId: string; anchor: HTMLElement } | null>(null);
  const [spacesOpen, setSpacesOpen] = useState(false);
  const banner = bannerFor(state.socket, state.signaling);
  const active = state.active ? state.contacts[state.active] : undefined;
  const mode = layoutFor(useWidth());
  const panes = visiblePanes(mode, pane);

  // Notices leave by themselves; errors stay a little longer so they can be read.
  useEffect(() => {
    const timers = state.notices.map((n) =>
      setTimeout(() => dispatch({ type: "dismiss", id: n.id }), n.tone === "error" ? 8000 : 5000),
    );
    return () => timers.forEach(clearTimeout);
  }, [state.notices, dispatch]);

  const open = useCallback(
    (userId: string | null) => {
      actions.open(userId);
      setPane("main");
    },
    [actions],
  );

  // The last open conversation comes back after a reload, once the contact list is in.
  const restored = useRef(false);
  const haveContacts = Object.keys(state.contacts).length > 0;
  useEffect(() => {
    if (restored.current || !haveContacts) return;
    restored.current = true;
    const last = prefs.lastOpen();
    if (last && state.contacts[last]?.state === "accepted" && state.active === null) open(last);
  }, [haveContacts, prefs, state.contacts, state.active, open]);
  useEffect(() => {
    if (restored.current) prefs.setLastOpen(state.active);
  }, [state.active, prefs]);

  useUnreadBadge(totalUnread(state.contacts, muted));

  const stateRef = useRef(state);
  stateRef.current = state;
  useMessageNotifications(
    subscribe,
    () => {
      const s = stateRef.current;
      return {
        me: s.me?.user_id ?? "",
        hidden: document.visibilityState === "hidden",
        prefs: notify,
        muted,
        myStatus: s.me?.status ?? "online",
        nameOf: (id) => s.contacts[id]?.display_name ?? "New message",
        blocked: (id) => !!s.contacts[id]?.blocked,
      };
    },
    open,
  );

  // Ctrl/Cmd+K opens search from anywhere, as in most chat apps.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
        e.preventDefault();
        setPanel((p) => (p?.kind === "search" ? p : { kind: "search", query: "" }));
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  const onProfile = useCallback((userId: string, anchor: HTMLElement) => setCard({ userId, anchor }), []);

  return (
    <div className={`app layout-${mode}`} data-layout={mode}>
      <a className="skip-link" href="#composer">
        Skip to message box
      </a>
      {banner && (
        <div className={`banner banner-${banner.tone}`} role="status" aria-live="polite" data-testid="connection-banner">
          {banner.text}
        </div>
      )}
      <CallPanel />
      <VoicePanel />
      {!spacesOpen && (
        <button className="spaces-toggle" onClick={() => setSpacesOpen(true)} aria-label="Spaces" title="Spaces">
          Spaces
        </button>
      )}
      {spacesOpen && <Spaces onClose={() => setSpacesOpen(false)} />}
      <div className={`layout ${panel ? "with-panel" : ""} pane-${pane}`} hidden={spacesOpen}>
        {panes.sidebar && (
          <Sidebar
            onSettings={() => setSettingsOpen(true)}
            onSearch={() => setPanel({ kind: "search", query: "" })}
            onOpen={open}
            onProfile={onProfile}
          />
        )}
        {panes.main && (
          <main className="main" aria-label={active ? `Conversation with ${active.display_name}` : "Home"}>
            {active ? (
              <Conversation
                key={active.user_id}
                contact={active}
                panel={panel}
                setPanel={setPanel}
                jumpTo={jumpTo}
                onJumped={() => setJumpTo(null)}
                onBack={() => {
                  actions.open(null);
                  setPane("list");
                }}
                onProfile={onProfile}
              />
            ) : (
              <Home onBack={() => setPane("list")} />
            )}
          </main>
        )}
        {panel?.kind === "details" && active && <Details contact={active} onClose={() => setPanel(null)} />}
        {panel?.kind === "search" && (
          <SearchPanel
            initial={panel.query}
            onClose={() => setPanel(null)}
            onPick={(conversation, id) => {
              open(conversation);
              setJumpTo(id);
              if (mode === "phone") setPanel(null);
            }}
          />
        )}
      </div>
      {card && (
        <ProfileCard
          userId={card.userId}
          anchor={card.anchor}
          onClose={() => setCard(null)}
          onMessage={(id) => {
            setCard(null);
            open(id);
          }}
          onDetails={(id) => {
            setCard(null);
            open(id);
            setPanel({ kind: "details" });
          }}
          onEditOwn={() => {
            setCard(null);
            setSettingsOpen(true);
          }}
        />
      )}
      <div className="toasts" aria-live="assertive">
        {state.notices.map((n) => (
          <div key={n.id} className={`toast toast-${n.tone}`} role={n.tone === "error" ? "alert" : "status"}>
            <span>{n.text}</span>
            <button className="icon" aria-label="Dismiss" onClick={() => dispatch({ type: "dismiss", id: n.id })}>
              ×
            </button>
          </div>
        ))}
      </div>
      {settingsOpen && <SettingsDialog onClose={() => setSettingsOpen(false)} />}
    </div>
  );
}
