// Spaces (Discord's servers): a rail of spaces, the selected space's channels, and the selected
// text channel's messages with the shared composer. Live updates come from the events socket
// (`space` events, and `message` / `message_updated` events whose conversation is a channel id,
// which the store keeps like any conversation).
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { spacesApi } from "../api/spaces";
import type { Message, Space } from "../api/types";
import { describeError, useStore } from "../state/store";
import { mentionsMe, showMentions } from "../lib/mentions";
import { Composer } from "./Composer";
import { RichText } from "./RichText";
import "./spaces.css";

function fullTime(ts: number): string {
  return new Date(ts).toLocaleString();
}

function shortUser(id: string): string {
  return id.length > 14 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
}

function colorText(c: number): string | undefined {
  return c ? `#${c.toString(16).padStart(6, "0")}` : undefined;
}

/** A count as a badge shows it. */
function badge(n: number): string {
  return n > 99 ? "99+" : String(n);
}

export function Spaces({ onClose }: { onClose(): void }) {
  const { state, dispatch, subscribe, actions } = useStore();
  const [spaces, setSpaces] = useState<Space[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [channel, setChannel] = useState<string | null>(null);
  const [invite, setInvite] = useState<string | null>(null);
  const [newName, setNewName] = useState("");
  const [code, setCode] = useState("");
  const me = state.me?.user_id ?? "";
  const channelRef = useRef<string | null>(null);
  channelRef.current = channel;

  const upsert = useCallback((s: Space) => {
    setSpaces((list) => {
      const i = list.findIndex((x) => x.id === s.id);
      if (i < 0) return [...list, s];
      const next = list.slice();
      next[i] = s;
      return next;
    });
  }, []);

  useEffect(() => {
    spacesApi.list().then(setSpaces, (e) => actions.notify(describeError(e), "error"));
  }, [actions]);

  // Which space each channel belongs to (for live unread counts).
  const spaceOfChannel = useMemo(() => {
    const m = new Map<string, string>();
    for (const s of spaces) for (const c of s.channels) m.set(c.id, s.id);
    return m;
  }, [spaces]);
  const spaceOfChannelRef = useRef(spaceOfChannel);
  spaceOfChannelRef.current = spaceOfChannel;

  const markRead = useCallback(
    (channelId: string, upTo: string) => {
      spacesApi.read(channelId, upTo).then(upsert, () => {});
    },
    [upsert],
  );

  useEffect(
    () =>
      subscribe((e) => {
        if (e.type === "space") {
          upsert(e.space);
          if (e.space.membership === "refused" && e.space.refusal) actions.notify(e.space.refusal, "error");
        } else if (e.type === "message") {
          const conv = e.message.conversation;
          const sid = spaceOfChannelRef.current.get(conv);
          if (!sid) return;
          if (conv === channelRef.current && !document.hidden) markRead(conv, e.message.id);
          else spacesApi.get(sid).then(upsert, () => {});
        }
      }),
    [subscribe, upsert, actions, markRead],
  );

  const space = spaces.find((s) => s.id === selected) ?? null;
  // Text channels first, then voice (categories are not shown as entries yet).
  const textChannels = useMemo(
    () =>
      space
        ? space.channels
            .filter((c) => c.kind !== "category")
            .sort((a, b) => Number(a.kind !== "text") - Number(b.kind !== "text"))
        : [],
    [space],
  );
  const current = textChannels.find((c) => c.id === channel) ?? null;

  // Opening a space opens its first text channel we may read.
  useEffect(() => {
    if (!space) return;
    if (!current) setChannel(space.channels.find((c) => c.kind === "text" && c.can_view)?.id ?? null);
  }, [space, current]);

  // A channel's history goes into the store like any conversation's.
  useEffect(() => {
    if (!channel) return;
    spacesApi.messages(channel).then(
      (page) => {
        page.messages.forEach((message) => dispatch({ type: "message", message }));
        const newest = page.messages[page.messages.length - 1];
        if (newest) markRead(channel, newest.id);
      },
      (e) => actions.notify(describeError(e), "error"),
    );
  }, [channel, dispatch, actions, markRead]);

  // Names and colours for the member list and mentions.
  const nameOf = useCallback(
    (id: string) =>
      id === me ? (state.me?.display_name ?? "You") : state.contacts[id]?.display_name || shortUser(id),
    [me, state.me, state.contacts],
  );
  const roleOf = useCallback((id: string) => space?.roles.find((r) => r.id === id), [space]);
  const topRole = useCallback(
    (roles: string[]) =>
      roles
        .map((r) => roleOf(r))
        .filter((r) => r !== undefined)
        .sort((a, b) => b.position - a.position)[0],
    [roleOf],
  );
  const myRoles = useMemo(() => space?.members.find((m) => m.user_id === me)?.roles ?? [], [space, me]);
  const mayMentionEveryone = useCallback(
    (sender: string) => {
      if (!space) return false;
      if (space.owner === sender) return true;
      const member = space.members.find((m) => m.user_id === sender);
      const perms = new Set(space.roles.find((r) => r.id === "0".repeat(32))?.permissions ?? []);
      for (const r of member?.roles ?? []) for (const p of roleOf(r)?.permissions ?? []) perms.add(p);
      return perms.has("mention_everyone") || perms.has("administrator");
    },
    [space, roleOf],
  );

  const revoke = async (inviteId: string) => {
    if (!space) return;
    try {
      upsert(await spacesApi.revokeInvite(space.id, inviteId));
      actions.notify("Invite revoked.", "info");
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  const messages: Message[] = channel ? (state.conversations[channel]?.messages ?? []) : [];

  const create = async () => {
    const name = newName.trim();
    if (!name) return;
    try {
      const s = await spacesApi.create(name);
      upsert(s);
      setSelected(s.id);
      setNewName("");
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  const join = async () => {
    const c = code.trim();
    if (!c) return;
    try {
      const s = await spacesApi.join(c);
      upsert(s);
      setSelected(s.id);
      setCode("");
      actions.notify("Asked to join; waiting for the inviter's answer.");
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  const makeInvite = async () => {
    if (!space) return;
    try {
      setInvite((await spacesApi.invite(space.id)).code);
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  const send = (body: string, replyTo: string | null) => {
    if (!channel) return;
    spacesApi.send(channel, body, replyTo).then(
      (message) => dispatch({ type: "message", message }),
      (e) => actions.notify(describeError(e), "error"),
    );
  };

  return (
    <div className="spaces" data-testid="spaces">
      <nav className="spaces-rail" aria-label="Spaces">
        <button className="space-pill" onClick={onClose} aria-label="Direct messages" title="Direct messages">
          DM
        </button>
        {spaces.map((s) => {
          const unread = s.channels.reduce((n, c) => n + c.unread, 0);
          const mentions = s.channels.reduce((n, c) => n + c.mentions, 0);
          return (
            <button
              key={s.id}
              className={`space-pill ${s.id === selected ? "active" : ""} ${unread > 0 ? "unread" : ""}`}
              aria-current={s.id === selected ? "page" : undefined}
              title={s.name || s.membership}
              aria-label={`${s.name || s.membership}${mentions ? `, ${mentions} mentions` : unread ? ", unread messages" : ""}`}
              onClick={() => {
                setSelected(s.id);
                setInvite(null);
              }}
            >
              {(s.name || "?").slice(0, 2)}
              {mentions > 0 && (
                <span className="mention-badge" data-testid="space-mentions">
                  {badge(mentions)}
                </span>
              )}
            </button>
          );
        })}
      </nav>
      <aside className="spaces-channels" aria-label="Channels">
        {space ? (
          <>
            <h2 className="spaces-title">{space.name || "Joining…"}</h2>
            {space.membership !== "member" && (
              <p className="muted" role="status">
                {space.membership === "refused" ? space.refusal : space.membership === "former" ? "You are no longer a member." : "Waiting for the inviter…"}
              </p>
            )}
            <ul className="channel-list">
              {textChannels.map((c) => (
                <li key={c.id}>
                  <button
                    className={`channel-item ${c.id === channel ? "active" : ""} ${c.unread > 0 && c.id !== channel ? "unread" : ""}`}
                    disabled={c.kind !== "text" || !c.can_view}
                    onClick={() => setChannel(c.id)}
                    data-unread={c.id === channel ? 0 : c.unread}
                  >
                    {c.kind === "text" ? "#" : "🔊"} {c.name}
                    {c.id !== channel && c.mentions > 0 && (
                      <span className="mention-badge" data-testid="channel-mentions" aria-label={`${c.mentions} mentions`}>
                        @{badge(c.mentions)}
                      </span>
                    )}
                    {c.id !== channel && c.mentions === 0 && c.unread > 0 && (
                      <span className="unread-badge" data-testid="channel-unread" aria-label={`${c.unread} unread`}>
                        {badge(c.unread)}
                      </span>
                    )}
                  </button>
                </li>
              ))}
            </ul>
            {space.membership === "member" && (
              <div className="spaces-invite">
                <button onClick={makeInvite}>Invite people</button>
                {invite && (
                  <input readOnly value={invite} aria-label="Invite code" onFocus={(e) => e.currentTarget.select()} />
                )}
              </div>
            )}
            {space.invites.length > 0 && space.membership === "member" && (
              <details className="spaces-invites">
                <summary>
                  Invites (
                  {
                    space.invites.filter(
                      (i) =>
                        !i.revoked &&
                        (i.expires_at === null || i.expires_at >= Date.now()) &&
                        (i.max_uses === null || i.uses < i.max_uses),
                    ).length
                  }{" "}
                  active)
                </summary>
                <ul>
                  {space.invites.map((i) => {
                    const expired = i.expires_at !== null && i.expires_at < Date.now();
                    const usedUp = i.max_uses !== null && i.uses >= i.max_uses;
                    const mine = i.creator === me || space.owner === me || space.permissions.includes("manage_space");
                    return (
                      <li key={i.id} className="small">
                        <span title={i.id}>{i.id.slice(0, 8)}</span> by {nameOf(i.creator)} · {i.uses}
                        {i.max_uses !== null ? `/${i.max_uses}` : ""} uses
                        {i.revoked ? " · revoked" : expired ? " · expired" : usedUp ? " · used up" : ""}
                        {!i.revoked && mine && (
                          <button className="link" onClick={() => void revoke(i.id)} aria-label={`Revoke invite ${i.id.slice(0, 8)}`}>
                            Revoke
                          </button>
                        )}
                      </li>
                    );
                  })}
                </ul>
              </details>
            )}
            <p className="muted small">{space.members.length} members</p>
          </>
        ) : (
          <p className="muted">Pick a space, or make one.</p>
        )}
        <form
          className="spaces-form"
          onSubmit={(e) => {
            e.preventDefault();
            void create();
          }}
        >
          <input value={newName} onChange={(e) => setNewName(e.target.value)} placeholder="New space name" aria-label="New space name" />
          <button type="submit">Create</button>
        </form>
        <form
          className="spaces-form"
          onSubmit={(e) => {
            e.preventDefault();
            void join();
          }}
        >
          <input value={code} onChange={(e) => setCode(e.target.value)} placeholder="dinvite1…" aria-label="Invite code to join" />
          <button type="submit">Join</button>
        </form>
      </aside>
      <section className="spaces-channel" aria-label={current ? `Channel ${current.name}` : "No channel"}>
        {current ? (
          <>
            <header className="spaces-channel-header">
              <h2># {current.name}</h2>
              {current.topic && <span className="muted">{current.topic}</span>}
            </header>
            <ol className="spaces-messages" data-testid="channel-messages">
              {messages.map((m) => {
                const mention = mentionsMe(m.body, m.sender, {
                  me,
                  myRoles,
                  senderMayMentionEveryone: mayMentionEveryone(m.sender),
                });
                const author = space?.members.find((x) => x.user_id === m.sender);
                const color = colorText(topRole(author?.roles ?? [])?.color ?? 0);
                return (
                  <li
                    key={m.id}
                    className={`spaces-message ${m.outgoing ? "outgoing" : ""} ${mention ? "mentions-me" : ""}`}
                    data-mention={mention ? "true" : undefined}
                  >
                    <span className="spaces-author" style={color ? { color } : undefined}>
                      {m.sender === me ? "You" : nameOf(m.sender)}
                    </span>{" "}
                    <time className="muted small" dateTime={new Date(m.sent_at).toISOString()}>
                      {fullTime(m.sent_at)}
                    </time>
                    <div>
                      {m.deleted ? (
                        <em className="muted">Message deleted</em>
                      ) : (
                        <RichText text={showMentions(m.body ?? "", nameOf, (id) => roleOf(id)?.name)} />
                      )}
                    </div>
                  </li>
                );
              })}
            </ol>
            {current.can_send ? (
              <Composer
                conversationId={current.id}
                label={`Message #${current.name}`}
                replyTo={null}
                replyAuthor=""
                onCancelReply={() => {}}
                onSent={() => {}}
                onEditLast={() => {}}
                send={send}
                typing={() => {}}
              />
            ) : (
              <p className="muted">You cannot send messages here.</p>
            )}
          </>
        ) : (
          <p className="muted spaces-empty">No channel open.</p>
        )}
      </section>
      {space && space.membership === "member" && (
        <aside className="spaces-members" aria-label="Members" data-testid="space-members">
          <h3 className="small muted">Members — {space.members.length}</h3>
          <ul>
            {space.members.map((m) => {
              const role = topRole(m.roles);
              const presence = m.user_id === me ? (state.me?.status ?? "online") : (state.contacts[m.user_id]?.presence ?? "offline");
              return (
                <li key={m.user_id} className="space-member" title={m.user_id}>
                  <span className={`member-presence ${presence}`} aria-label={presence} />
                  <span style={{ color: colorText(role?.color ?? 0) }}>{nameOf(m.user_id)}</span>
                  {m.owner && <span className="muted small"> owner</span>}
                  {role && <span className="muted small"> {role.name}</span>}
                </li>
              );
            })}
          </ul>
        </aside>
      )}
    </div>
  );
}
