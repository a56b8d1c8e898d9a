import { useEffect, useState } from "react";
import { pageTitle } from "../lib/format";
import { bannerFor } from "../lib/state";
import { useStore } from "../state/store";
import { Conversation } from "./Conversation";
import { Details } from "./Details";
import { Home } from "./Home";
import { SearchPanel } from "./SearchPanel";
import { SettingsDialog } from "./SettingsDialog";
import { Sidebar } from "./Sidebar";

export type Panel = { kind: "details" } | { kind: "search"; query: string } | null;

export function Main() {
  const { state, dispatch } = useStore();
  const [settingsOpen, setSettingsOpen] = useState(false);
  const [panel, setPanel] = useState<Panel>(null);
  const [jumpTo, setJumpTo] = useState<string | null>(null);
  const banner = bannerFor(state.socket, state.signaling);
  const active = state.active ? state.contacts[state.active] : undefined;

  // Notices leave by themselves; errors stay a little longer so they can be read.
  useEffect(() => {
    const timers = state.notices.map((n) =>
      setTimeout(() => dispatch({ type: "dismiss", id: n.id }), n.tone === "error" ? 8000 : 5000),
    );
    return () => timers.forEach(clearTimeout);
  }, [state.notices, dispatch]);

  const unreadTotal = Object.values(state.contacts).reduce((n, c) => n + (c.state === "accepted" ? c.unread : 0), 0);
  useEffect(() => {
    document.title = pageTitle(unreadTotal);
  }, [unreadTotal]);

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

  return (
    <div className="app">
      <a className="skip-link" href="#composer">
        Skip to message box
      </a>
      {banner && (
        <div className={`banner banner-${banner.tone}`} role="status" aria-live="polite" data-testid="connection-banner">
          {banner.text}
        </div>
      )}
      <div className={`layout ${panel ? "with-panel" : ""}`}>
        <Sidebar onSettings={() => setSettingsOpen(true)} onSearch={() => setPanel({ kind: "search", query: "" })} />
        <main className="main" aria-label={active ? `Conversation with ${active.display_name}` : "Home"}>
          {active ? (
            <Conversation
              key={active.user_id}
              contact={active}
              panel={panel}
              setPanel={setPanel}
              jumpTo={jumpTo}
              onJumped={() => setJumpTo(null)}
            />
          ) : (
            <Home />
          )}
        </main>
        {panel?.kind === "details" && active && <Details contact={active} onClose={() => setPanel(null)} />}
        {panel?.kind === "search" && (
          <SearchPanel
            initial={panel.query}
            onClose={() => setPanel(null)}
            onPick={(id) => setJumpTo(id)}
          />
        )}
      </div>
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
