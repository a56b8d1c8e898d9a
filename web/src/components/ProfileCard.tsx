import { useEffect, useRef } from "react";
import { shortId } from "../lib/userId";
import { useStore } from "../state/store";
import { Avatar, presenceLabel } from "./Avatar";

/**
 * A small card about a person, opened by clicking their name or avatar: picture, name,
 * presence, status text (from the profile card they sent us, end to end encrypted) and
 * their ID, with shortcuts to message them or see their details. Escape closes it and focus
 * goes back to what opened it.
 */
export function ProfileCard({
  userId,
  anchor,
  onClose,
  onMessage,
  onDetails,
  onEditOwn,
}: {
  userId: string;
  anchor: HTMLElement;
  onClose(): void;
  onMessage(userId: string): void;
  onDetails(userId: string): void;
  onEditOwn(): void;
}) {
  const { state } = useStore();
  const ref = useRef<HTMLDivElement>(null);
  const me = state.me;
  const isMe = me?.user_id === userId;
  const contact = state.contacts[userId];
  const name = isMe ? me.display_name : (contact?.display_name ?? shortId(userId));
  const profile = isMe ? me.profile : contact?.profile;
  const presence = isMe ? me.status : (contact?.presence ?? "offline");

  useEffect(() => {
    ref.current?.focus();
    const onDown = (e: MouseEvent) => {
      if (ref.current && !ref.current.contains(e.target as Node)) onClose();
    };
    document.addEventListener("mousedown", onDown);
    return () => document.removeEventListener("mousedown", onDown);
  }, [onClose]);

  const close = () => {
    onClose();
    anchor.focus();
  };
  const rect = anchor.getBoundingClientRect();
  const top = Math.min(rect.bottom + 6, window.innerHeight - 260);
  const left = Math.max(8, Math.min(rect.left, window.innerWidth - 296));

  return (
    <div
      ref={ref}
      className="profile-card"
      role="dialog"
      aria-label={`Profile of ${name}`}
      tabIndex={-1}
      style={{ top, left }}
      data-testid="profile-card"
      onKeyDown={(e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          close();
        }
      }}
    >
      <div className="profile-banner" />
      <Avatar id={userId} name={name} presence={presence} size={72} image={profile?.avatar} />
      <h3 className="profile-name">{name}</h3>
      <p className="muted small">{presenceLabel(presence)}</p>
      {profile?.status_text && <p className="profile-status" data-testid="profile-status">{profile.status_text}</p>}
      <code className="user-id small">{shortId(userId)}</code>
      <div className="row">
        {isMe ? (
          <button className="primary" onClick={onEditOwn}>
            Edit profile
          </button>
        ) : (
          <>
            {contact?.state === "accepted" && (
              <button className="primary" onClick={() => onMessage(userId)}>
                Message
              </button>
            )}
            <button onClick={() => onDetails(userId)}>Details</button>
          </>
        )}
      </div>
    </div>
  );
}
