// Spaces (Discord's servers): a rail of spaces, the selected space's channels (with creation,
// editing and reordering for members who manage channels), the selected text channel in the
// shared conversation view (replies, edits, deletes, reactions, mentions), the member list, and
// the space settings page. Live updates come from the events socket (`space` events, and
// `message` / `message_updated` events whose conversation is a channel id, which the store keeps
// like any conversation).
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import { spacesApi } from "../api/spaces";
import type { Message, Space, SpaceChannel } from "../api/types";
import { mentionsMe, showMentions } from "../lib/mentions";
import {
  can,
  channelTree,
  colorText,
  inviteCodeFrom,
  keyWaits,
  keyWaitText,
  dropChannel,
  mentionCandidates,
  moveChannel,
  nextPosition,
  spaceUserName,
  topRole,
  type KeyWait,
} from "../lib/spaces";
import { channelTypingKey, conversationOf, LOCAL_PREFIX } from "../lib/state";
import { isTyping } from "../lib/typing";
import { describeError, useStore } from "../state/store";
import { useTransfers } from "../state/transfers";
import { ConversationView, type ChannelHooks } from "./Conversation";
import { SpaceSearch } from "./SpaceSearch";
import { SpaceSettings } from "./SpaceSettings";
import { VoiceChannelMembers } from "./VoicePanel";
import { useVoice } from "../state/voice";
import "./spaces.css";

function shortUser(id: string): string {
  return id.length > 14 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
}

/** What a dragged channel carries (only this list accepts it). */
const DRAG_TYPE = "application/x-dopus-channel";

/** A count as a badge shows it. */
function badge(n: number): string {
  return n > 99 ? "99+" : String(n);
}

/** What the channel pane says when we are not (or no longer) a member. */
function membershipNote(space: Space): string | null {
  switch (space.membership) {
    case "member":
      return null;
    case "refused":
      return space.refusal ?? "Your join was refused.";
    case "former":
      return "You are no longer a member of this space: you left, or were removed. Nothing sent here from now on reaches you.";
    default:
      return "Waiting for a member to admit you…";
  }
}

export function Spaces({ onClose }: { onClose(): void }) {
  const { state, dispatch, subscribe, actions } = useStore();
  const { sendFiles } = useTransfers();
  const voice = useVoice();
  const [spaces, setSpaces] = useState<Space[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [channel, setChannel] = useState<string | null>(null);
  const [settings, setSettings] = useState<null | "overview" | "invites" | "members" | "roles" | "channels">(null);
  const [editing, setEditing] = useState<string | "new" | null>(null);
  const [searching, setSearching] = useState(false);
  /** A message to bring into view in the open channel (a search hit). */
  const [jumpTo, setJumpTo] = useState<string | null>(null);
  const [newName, setNewName] = useState("");
  const [code, setCode] = useState("");
  /** Messages the node holds per channel but cannot read yet (docs/api.md, "Waiting for keys"). */
  const [waiting, setWaiting] = useState<Record<string, KeyWait[]>>({});
  const me = state.me?.user_id ?? "";
  const channelRef = useRef<string | null>(null);
  channelRef.current = channel;
  const spacesRef = useRef(spaces);
  spacesRef.current = spaces;
  const stateRef = useRef(state);
  stateRef.current = state;

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

  useEffect(
    () =>
      subscribe((e) => {
        if (e.type === "space") {
          // Said once, when the join turns refused (later events repeat the state).
          const before = spacesRef.current.find((x) => x.id === e.space.id);
          if (e.space.membership === "refused" && e.space.refusal && before?.membership !== "refused") actions.notify(e.space.refusal, "error");
          upsert(e.space);
        } else if ((e as { type: string }).type === "channel_waiting") {
          const w = e as unknown as { channel?: unknown; waiting?: unknown };
          if (typeof w.channel === "string") setWaiting((all) => ({ ...all, [w.channel as string]: keyWaits(w.waiting) }));
        } else if (e.type === "message") {
          const conv = e.message.conversation;
          const sid = spaceOfChannelRef.current.get(conv);
          // The open channel's view marks what is seen; elsewhere the counts move.
          if (sid && conv !== channelRef.current) spacesApi.get(sid).then(upsert, () => {});
        }
      }),
    [subscribe, upsert, actions],
  );

  const space = spaces.find((s) => s.id === selected) ?? null;
  // Who is in the space's voice channels (kept current by `voice` events).
  const voiceWatch = voice.watch;
  useEffect(() => {
    if (space?.id && space.membership === "member") voiceWatch(space.id);
  }, [space?.id, space?.membership, voiceWatch]);
  const tree = useMemo(() => (space ? channelTree(space.channels) : []), [space]);
  const current = space?.channels.find((c) => c.id === channel && c.kind === "text" && c.can_view) ?? null;
  const member = space?.membership === "member";
  const manageChannels = !!space && member && can(space, me, "manage_channels");

  // Opening a space opens its first text channel we may read.
  useEffect(() => {
    if (!space) return;
    if (!current) setChannel(tree.flatMap((g) => g.channels).find((c) => c.kind === "text" && c.can_view)?.id ?? null);
  }, [space, current, tree]);

  // A channel's newest page goes into the store like any conversation's.
  useEffect(() => {
    if (!channel) return;
    spacesApi.messages(channel).then(
      (page) => {
        dispatch({ type: "page", userId: channel, page, older: false });
        setWaiting((all) => ({ ...all, [channel]: keyWaits((page as { waiting?: unknown }).waiting) }));
      },
      (e) => actions.notify(describeError(e), "error"),
    );
  }, [channel, dispatch, actions]);

  // Names and colours for the member list and mentions. A member who is not a contact shows
  // the name it chose in this space with its fingerprint (a chosen name can be anyone's).
  const nameOf = useCallback(
    (id: string) => {
      if (id === me) return state.me?.display_name ?? "You";
      return spaceUserName(space, id, state.contacts[id]?.display_name, shortUser);
    },
    [me, state.me, state.contacts, space],
  );
  const roleName = useCallback((id: string) => space?.roles.find((r) => r.id === id)?.name, [space]);
  const myRoles = useMemo(() => space?.members.find((m) => m.user_id === me)?.roles ?? [], [space, me]);
  const mayMentionEveryone = useCallback(
    (sender: string) => {
      if (!space) return false;
      if (space.owner === sender) return true;
      const m = space.members.find((x) => x.user_id === sender);
      const perms = new Set(space.roles.find((r) => r.id === "0".repeat(32))?.permissions ?? []);
      for (const r of m?.roles ?? []) for (const p of space.roles.find((x) => x.id === r)?.permissions ?? []) perms.add(p);
      return perms.has("mention_everyone") || perms.has("administrator");
    },
    [space],
  );

  const fail = useCallback((e: unknown) => actions.notify(describeError(e), "error"), [actions]);

  const hooks: ChannelHooks | undefined = useMemo(() => {
    if (!current || !space) return undefined;
    const id = current.id;
    return {
      send: (body, replyTo) => {
        spacesApi.send(id, body, replyTo).then((message) => dispatch({ type: "message", message }), fail);
      },
      loadOlder: () => {
        const conv = conversationOf(stateRef.current, id);
        if (conv.loadingOlder || !conv.hasMore) return;
        const oldest = conv.messages.find((m) => !m.id.startsWith(LOCAL_PREFIX));
        dispatch({ type: "loading_older", userId: id, loading: true });
        spacesApi.messages(id, oldest?.seq).then(
          (page) => dispatch({ type: "page", userId: id, page, older: true }),
          (e) => {
            dispatch({ type: "loading_older", userId: id, loading: false });
            fail(e);
          },
        );
      },
      markRead: (upTo: Message) => {
        spacesApi.read(id, upTo.id).then(upsert, () => {});
      },
      // Best effort, like direct typing: a lost notice is harmless (and a node without the
      // route answers 404, which is ignored).
      typing: (active) => {
        spacesApi.typing(id, active).catch(() => undefined);
      },
      canModerate: can(space, me, "manage_messages"),
      display: (body) => showMentions(body, nameOf, roleName),
      mentionsMe: (m) => mentionsMe(m.body, m.sender, { me, myRoles, senderMayMentionEveryone: mayMentionEveryone(m.sender) }),
      mentionables: (q) => mentionCandidates(space, me, nameOf, q),
    };
  }, [current, space, me, myRoles, nameOf, roleName, mayMentionEveryone, dispatch, upsert, fail]);

  const create = async () => {
    const name = newName.trim();
    if (!name) return;
    try {
      const s = await spacesApi.create(name);
      upsert(s);
      setSelected(s.id);
      setNewName("");
    } catch (e) {
      fail(e);
    }
  };

  const join = async () => {
    const c = inviteCodeFrom(code);
    if (!c) return;
    const before = new Map(spacesRef.current.map((x) => [x.id, x]));
    try {
      const s = await spacesApi.join(c);
      // The answer ("joining") can arrive after the event that admitted or refused us: an
      // event that moved the space on meanwhile (a new object in the list) wins.
      setSpaces((list) => {
        const i = list.findIndex((x) => x.id === s.id);
        if (i < 0) return [...list, s];
        if (list[i] !== before.get(s.id)) return list;
        const next = list.slice();
        next[i] = s;
        return next;
      });
      setSelected(s.id);
      setCode("");
      actions.notify("Asked to join; waiting for a member to admit you.", "info");
    } catch (e) {
      fail(e);
    }
  };

  const move = async (c: SpaceChannel, step: -1 | 1) => {
    if (!space) return;
    const positions = moveChannel(space.channels, c.id, step);
    if (!positions) return;
    try {
      upsert(await spacesApi.reorderChannels(space.id, positions));
    } catch (e) {
      fail(e);
    }
  };

  const drop = async (dragged: string, target: string) => {
    if (!space) return;
    const positions = dropChannel(space.channels, dragged, target);
    if (!positions) return;
    try {
      upsert(await spacesApi.reorderChannels(space.id, positions));
    } catch (e) {
      fail(e);
    }
  };
  /** Drag and drop in the channel list (members who manage channels; ↑/↓ do the same by keyboard). */
  const dragProps = (id: string) =>
    manageChannels
      ? {
          draggable: true,
          onDragStart: (e: DragEvent) => {
            e.dataTransfer.setData(DRAG_TYPE, id);
            e.dataTransfer.effectAllowed = "move";
          },
          onDragOver: (e: DragEvent) => {
            if (e.dataTransfer.types.includes(DRAG_TYPE)) e.preventDefault();
          },
          onDrop: (e: DragEvent) => {
            const dragged = e.dataTransfer.getData(DRAG_TYPE);
            if (!dragged) return;
            e.preventDefault();
            void drop(dragged, id);
          },
        }
      : {};

  const channelButton = (c: SpaceChannel) => {
    const unreadHere = c.id === channel ? 0 : c.unread;
    return (
      <li key={c.id} className="channel-row" data-channel={c.id} {...dragProps(c.id)}>
        <button
          className={`channel-item ${c.id === channel ? "active" : ""} ${unreadHere > 0 ? "unread" : ""}`}
          disabled={c.kind === "category" || !c.can_view}
          title={c.kind === "voice" ? `Join voice channel ${c.name}` : !c.can_view ? "You may not view this channel" : c.topic || undefined}
          onClick={() => (c.kind === "voice" && space ? void voice.join(space.id, c.id) : setChannel(c.id))}
          data-testid={c.kind === "voice" ? "voice-join" : undefined}
          data-unread={unreadHere}
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
        {c.kind === "voice" && space && <VoiceChannelMembers spaceId={space.id} channelId={c.id} />}
        {manageChannels && (
          <span className="channel-tools">
            <button className="icon small" aria-label={`Move ${c.name} up`} title="Move up" onClick={() => void move(c, -1)}>
              ↑
            </button>
            <button className="icon small" aria-label={`Move ${c.name} down`} title="Move down" onClick={() => void move(c, 1)}>
              ↓
            </button>
            <button className="icon small" aria-label={`Edit channel ${c.name}`} title="Edit channel" onClick={() => setEditing(c.id)}>
              ⚙
            </button>
          </span>
        )}
      </li>
    );
  };

  const note = space ? membershipNote(space) : null;

  return (
    <div className={`spaces ${space && member ? "with-members" : ""}`} data-testid="spaces">
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
                setSettings(null);
                setEditing(null);
                setSearching(false);
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
            <div className="spaces-title-row">
              <h2 className="spaces-title">{space.name || "Joining…"}</h2>
              {member && (
                <button className="icon" aria-label="Space settings" title="Space settings" onClick={() => setSettings("overview")}>
                  ⚙
                </button>
              )}
            </div>
            {note && (
              <p className="muted" role="status" data-testid="space-status">
                {note}
              </p>
            )}
            {tree.map((g) => (
              <section key={g.category?.id ?? "top"} className="channel-group" aria-label={g.category ? `Category ${g.category.name}` : "Channels"}>
                {g.category && (
                  <div className="channel-category" data-channel={g.category.id} {...dragProps(g.category.id)}>
                    <span>{g.category.name.toUpperCase()}</span>
                    {manageChannels && g.category && (
                      <span className="channel-tools">
                        <button className="icon small" aria-label={`Move ${g.category.name} up`} onClick={() => void move(g.category!, -1)}>
                          ↑
                        </button>
                        <button className="icon small" aria-label={`Move ${g.category.name} down`} onClick={() => void move(g.category!, 1)}>
                          ↓
                        </button>
                        <button className="icon small" aria-label={`Edit channel ${g.category.name}`} onClick={() => setEditing(g.category!.id)}>
                          ⚙
                        </button>
                      </span>
                    )}
                  </div>
                )}
                <ul className="channel-list">{g.channels.map(channelButton)}</ul>
              </section>
            ))}
            {member &&
              (manageChannels ? (
                <button onClick={() => setEditing("new")}>Create channel</button>
              ) : (
                <p className="muted small" data-testid="no-manage-channels">
                  Only members with “Manage channels” can create or change channels.
                </p>
              ))}
            {member && (
              <button onClick={() => setSettings("invites")} disabled={!can(space, me, "create_invite")} title={can(space, me, "create_invite") ? undefined : "You need the “Create invites” permission."}>
                Invite people
              </button>
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
          <input value={code} onChange={(e) => setCode(e.target.value)} placeholder="dinvite1… or link" aria-label="Invite code to join" />
          <button type="submit">Join</button>
        </form>
      </aside>
      <section className="spaces-channel" aria-label={current ? `Channel ${current.name}` : "No channel"}>
        {space && settings ? (
          <SpaceSettings space={space} me={me} nameOf={nameOf} tab={settings} setTab={setSettings} onChange={upsert} onClose={() => setSettings(null)} />
        ) : space && editing ? (
          <ChannelEditor
            space={space}
            channel={editing === "new" ? null : (space.channels.find((c) => c.id === editing) ?? null)}
            onChange={upsert}
            onDone={(id) => {
              setEditing(null);
              if (id) setChannel(id);
            }}
          />
        ) : current && hooks && member ? (
          <ConversationView
            key={current.id}
            id={current.id}
            title={`#${current.name}`}
            unread={current.unread}
            header={
              <header className="main-header spaces-channel-header">
                <h1 className="conv-title"># {current.name}</h1>
                {current.topic && (
                  <span className="muted channel-topic" data-testid="channel-topic">
                    {current.topic}
                  </span>
                )}
                <span className="spacer" />
                <button className="icon" aria-label="Search this space" aria-pressed={searching} title="Search this space" onClick={() => setSearching((v) => !v)}>
                  🔍
                </button>
              </header>
            }
            start={
              <div className="conv-start">
                <h2>Welcome to #{current.name}</h2>
                <p className="muted">This is the start of the channel. Messages here are end-to-end encrypted for the members who may read it.</p>
              </div>
            }
            banner={<WaitingForKeys waits={waiting[current.id] ?? []} nameOf={nameOf} />}
            typingNames={space.members
              .filter((m) => m.user_id !== me && isTyping(state.typing, channelTypingKey(current.id, m.user_id), Date.now()))
              .map((m) => nameOf(m.user_id))}
            canWrite={current.can_send}
            readOnly="You cannot send messages in this channel."
            authorOf={(m) => (m.sender === me ? nameOf(me) : nameOf(m.sender))}
            avatarOf={(m) => (m.sender === me ? (state.me?.profile?.avatar ?? null) : (state.contacts[m.sender]?.profile?.avatar ?? null))}
            jumpTo={jumpTo}
            onJumped={() => setJumpTo(null)}
            onProfile={() => {}}
            onFiles={current.can_send ? (files) => sendFiles(current.id, files) : undefined}
            channel={hooks}
          />
        ) : (
          <p className="muted spaces-empty">{note ?? "No channel open."}</p>
        )}
      </section>
      {space && member && searching && (
        <aside className="spaces-members spaces-search-aside">
          <SpaceSearch
            space={space}
            nameOf={nameOf}
            onClose={() => setSearching(false)}
            onPick={(ch, id) => {
              setSettings(null);
              setEditing(null);
              setChannel(ch);
              setJumpTo(id);
            }}
          />
        </aside>
      )}
      {space && member && !searching && (
        <aside className="spaces-members" aria-label="Members" data-testid="space-members">
          <h3 className="small muted">Members — {space.members.length}</h3>
          {(can(space, me, "kick") || can(space, me, "ban") || can(space, me, "manage_roles")) && (
            <button className="link small" onClick={() => setSettings("members")}>
              Manage members
            </button>
          )}
          <ul>
            {space.members.map((m) => {
              const role = topRole(space, m.roles);
              const presence = m.user_id === me ? (state.me?.status ?? "online") : (state.contacts[m.user_id]?.presence ?? "offline");
              return (
                <li key={m.user_id} className="space-member" title={m.user_id}>
                  <span className={`member-presence ${presence}`} aria-label={presence} />
                  <span style={{ color: colorText(role?.color ?? 0) }}>{nameOf(m.user_id)}</span>
                  {m.owner && <span className="muted small"> owner</span>}
                  {role && <span className="muted small"> {role.name}</span>}
                  {m.user_id !== me && !state.contacts[m.user_id] && (
                    <button
                      className="icon small member-add"
                      aria-label={`Add ${nameOf(m.user_id)} as a contact`}
                      title="Send a contact request (their name shows once they accept)"
                      onClick={() =>
                        actions.addContact(m.user_id).then(
                          () => actions.notify("Contact request sent.", "info"),
                          (e: unknown) => fail(e),
                        )
                      }
                    >
                      +
                    </button>
                  )}
                </li>
              );
            })}
          </ul>
        </aside>
      )}
    </div>
  );
}

/**
 * The channel's messages that are held but not readable yet: a visible state instead of a silent
 * gap. Each goes away when its key arrives (its message then appears in the list) or says why
 * the key will not come.
 */
export function WaitingForKeys({ waits, nameOf }: { waits: KeyWait[]; nameOf(id: string): string }) {
  if (!waits.length) return null;
  const pending = waits.filter((w) => w.state === "waiting_for_keys").length;
  return (
    <details className="waiting-keys" data-testid="waiting-for-keys" open={waits.length <= 3}>
      <summary role="status">
        {pending > 0
          ? `${pending} message${pending === 1 ? "" : "s"} waiting for keys`
          : `${waits.length} message${waits.length === 1 ? "" : "s"} that cannot be read`}
      </summary>
      <ul>
        {waits.map((w) => (
          <li key={w.id} className={`waiting-key ${w.state}`} data-state={w.state}>
            <span className="waiting-icon" aria-hidden="true">
              {w.state === "waiting_for_keys" ? "⏳" : "🔒"}
            </span>{" "}
            <strong>{nameOf(w.sender)}</strong>{" "}
            <time className="muted small" dateTime={new Date(w.received_at).toISOString()}>
              {new Date(w.received_at).toLocaleTimeString()}
            </time>{" "}
            <span className="muted">{keyWaitText(w)}</span>
          </li>
        ))}
      </ul>
    </details>
  );
}

/** Creates a channel, or renames, re-topics or deletes one (members with manage channels). */
function ChannelEditor({
  space,
  channel,
  onChange,
  onDone,
}: {
  space: Space;
  channel: SpaceChannel | null;
  onChange(s: Space): void;
  onDone(openChannel: string | null): void;
}) {
  const { actions } = useStore();
  const [name, setName] = useState(channel?.name ?? "");
  const [topic, setTopic] = useState(channel?.topic ?? "");
  const [kind, setKind] = useState<SpaceChannel["kind"]>(channel?.kind ?? "text");
  const [parent, setParent] = useState<string>(channel?.parent ?? "");
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const categories = space.channels.filter((c) => c.kind === "category");

  const save = async () => {
    const n = name.trim();
    if (!n) return;
    setBusy(true);
    try {
      if (channel) {
        const s = await spacesApi.updateChannel(space.id, channel.id, { name: n, topic });
        let next = s;
        if ((channel.parent ?? "") !== parent && channel.kind !== "category") {
          next = await spacesApi.reorderChannels(space.id, [
            { channel: channel.id, ...(parent ? { parent } : {}), position: nextPosition(s.channels, parent || null, channel.kind) },
          ]);
        }
        onChange(next);
        onDone(null);
      } else {
        const before = new Set(space.channels.map((c) => c.id));
        const s = await spacesApi.createChannel(space.id, {
          name: n,
          kind,
          ...(topic.trim() ? { topic: topic.trim() } : {}),
          ...(parent && kind !== "category" ? { parent } : {}),
          position: nextPosition(space.channels, kind === "category" ? null : parent || null, kind),
        });
        onChange(s);
        const made = s.channels.find((c) => !before.has(c.id) && c.kind === "text");
        onDone(made?.id ?? null);
      }
    } catch (e) {
      actions.notify(describeError(e), "error");
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    if (!channel) return;
    try {
      onChange(await spacesApi.deleteChannel(space.id, channel.id));
      onDone(null);
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  return (
    <form
      className="channel-editor"
      aria-label={channel ? `Edit channel ${channel.name}` : "Create channel"}
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <h2>{channel ? `Edit ${channel.kind === "category" ? "category" : "channel"} ${channel.name}` : "Create channel"}</h2>
      {!channel && (
        <fieldset>
          <legend>Kind</legend>
          {(["text", "voice", "category"] as const).map((k) => (
            <label key={k}>
              <input type="radio" name="kind" value={k} checked={kind === k} onChange={() => setKind(k)} />{" "}
              {k === "text" ? "Text: messages, files, reactions" : k === "voice" ? "Voice: talk together" : "Category: groups channels"}
            </label>
          ))}
        </fieldset>
      )}
      <label>
        Name
        <input value={name} onChange={(e) => setName(e.target.value)} aria-label="Channel name" maxLength={100} required autoFocus />
      </label>
      {kind !== "category" && (
        <label>
          Topic
          <input value={topic} onChange={(e) => setTopic(e.target.value)} aria-label="Channel topic" maxLength={1024} />
        </label>
      )}
      {kind !== "category" && categories.length > 0 && (
        <label>
          Category
          <select value={parent} onChange={(e) => setParent(e.target.value)} aria-label="Category">
            <option value="">None</option>
            {categories.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name}
              </option>
            ))}
          </select>
        </label>
      )}
      <div className="row">
        <button type="submit" className="primary" disabled={busy || !name.trim()}>
          {channel ? "Save" : "Create"}
        </button>
        <button type="button" onClick={() => onDone(null)}>
          Cancel
        </button>
        {channel &&
          (confirm ? (
            <span role="alertdialog" aria-label="Delete channel">
              Delete {channel.name} and its history for everyone?{" "}
              <button type="button" className="danger" onClick={() => void remove()}>
                Delete
              </button>
              <button type="button" onClick={() => setConfirm(false)}>
                Keep
              </button>
            </span>
          ) : (
            <button type="button" className="danger" onClick={() => setConfirm(true)}>
              Delete channel
            </button>
          ))}
      </div>
      {channel && channel.kind !== "category" && <p className="muted small">Who may view or post here: Space settings → Channels.</p>}
    </form>
  );
}
