import { useState } from "react";
import type { Presence } from "../api/types";
import { plainText } from "../lib/markdown";
import { sortedContacts } from "../lib/state";
import { usePrefs } from "../state/prefs";
import { useStore } from "../state/store";
import { Avatar, PresenceDot, presenceLabel } from "./Avatar";
import { Icon } from "./Icon";

const STATUSES: Presence[] = ["online", "away", "busy", "invisible"];

export function Sidebar({
  onSettings,
  onSearch,
  onOpen,
  onProfile,
}: {
  onSettings(): void;
  onSearch(): void;
  onOpen(userId: string | null): void;
  onProfile(userId: string, anchor: HTMLElement): void;
}) {
  const { state, actions } = useStore();
  const { muted } = usePrefs();
  const { friends, incoming } = sortedContacts(state.contacts);
  const me = state.me;
  // The selector shows the choice at once; the node's answer then settles it.
  const [pendingStatus, setPendingStatus] = useState<Presence | null>(null);
  const shownStatus = pendingStatus ?? me?.status ?? "online";

  return (
    <nav className="sidebar" aria-label="Conversations">
      <div className="sidebar-top">
        <button className="search-trigger" onClick={onSearch} aria-keyshortcuts="Control+K">
          <Icon name="search" size={16} /> Search messages
          <kbd aria-hidden="true">Ctrl K</kbd>
        </button>
      </div>
      <button
        className={`nav-item ${state.active === null ? "active" : ""}`}
        aria-current={state.active === null ? "page" : undefined}
        onClick={() => onOpen(null)}
      >
        <span className="nav-icon"><Icon name="friends" size={22} /></span>
        <span className="nav-label">Friends</span>
        {incoming.length > 0 && (
          <span className="badge" aria-label={`${incoming.length} contact request${incoming.length === 1 ? "" : "s"}`}>
            {incoming.length}
          </span>
        )}
      </button>
      <h2 className="sidebar-heading" id="dm-heading">
        Direct messages
      </h2>
      <ul className="contact-list" aria-labelledby="dm-heading">
        {friends.length === 0 && <li className="muted empty">No contacts yet. Add one from Friends.</li>}
        {friends.map((c) => {
          const preview = c.last_message
            ? c.last_message.deleted
              ? "Message deleted"
              : `${c.last_message.outgoing ? "You: " : ""}${plainText(c.last_message.body ?? "")}`
            : "";
          const isMuted = muted.has(c.user_id);
          const label = `${c.display_name}, ${presenceLabel(c.presence)}${c.unread ? `, ${c.unread} unread` : ""}${isMuted ? ", muted" : ""}`;
          return (
            <li key={c.user_id}>
              <button
                className={`contact ${state.active === c.user_id ? "active" : ""} ${c.unread && !isMuted ? "has-unread" : ""} ${isMuted ? "muted-conv" : ""}`}
                aria-current={state.active === c.user_id ? "page" : undefined}
                aria-label={label}
                data-user-id={c.user_id}
                onClick={() => onOpen(c.user_id)}
              >
                <Avatar id={c.user_id} name={c.display_name} presence={c.presence} image={c.profile?.avatar} />
                <span className="contact-text">
                  <span className="contact-name">
                    {c.display_name}
                    {c.verified && (
                      <span className="verified" title="Verified" aria-hidden="true">
                        ✔
                      </span>
                    )}
                  </span>
                  <span className="contact-preview">{preview}</span>
                </span>
                {c.unread > 0 && (
                  <span className={`badge unread ${isMuted ? "badge-muted" : ""}`} aria-hidden="true" data-testid="unread">
                    {c.unread > 99 ? "99+" : c.unread}
                  </span>
                )}
              </button>
            </li>
          );
        })}
      </ul>
      {me && (
        <div className="user-panel">
          <button className="avatar-button" aria-label="Your profile" onClick={(e) => onProfile(me.user_id, e.currentTarget)}>
            <Avatar id={me.user_id} name={me.display_name} presence={shownStatus} image={me.profile?.avatar} />
          </button>
          <div className="user-panel-text">
            <span className="contact-name">{me.display_name}</span>
            <label className="status-select">
              <PresenceDot presence={shownStatus} />
              <select
                aria-label="Your status"
                value={shownStatus === "offline" ? "invisible" : shownStatus}
                onChange={(e) => {
                  const p = e.target.value as Presence;
                  setPendingStatus(p);
                  void actions.setStatus(p).finally(() => setPendingStatus(null));
                }}
              >
                {STATUSES.map((s) => (
                  <option key={s} value={s}>
                    {presenceLabel(s)}
                  </option>
                ))}
              </select>
            </label>
          </div>
          <button className="icon" aria-label="Settings" title="Settings" onClick={onSettings}>
            <Icon name="settings" />
          </button>
        </div>
      )}
    </nav>
  );
}
