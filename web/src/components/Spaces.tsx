// Spaces (Discord's servers): a rail of spaces, the selected space's channels, and the selected
// text channel's messages with the shared composer. Live updates come from the events socket
// (`space` events, and `message` / `message_updated` events whose conversation is a channel id,
// which the store keeps like any conversation).
import { useCallback, useEffect, useMemo, useState } from "react";
import { spacesApi } from "../api/spaces";
import type { Message, Space } from "../api/types";
import { describeError, useStore } from "../state/store";
import { Composer } from "./Composer";
import { RichText } from "./RichText";
import "./spaces.css";

function fullTime(ts: number): string {
  return new Date(ts).toLocaleString();
}

function shortUser(id: string): string {
  return id.length > 14 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
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

  useEffect(
    () =>
      subscribe((e) => {
        if (e.type === "space") {
          upsert(e.space);
          if (e.space.membership === "refused" && e.space.refusal) actions.notify(e.space.refusal, "error");
        }
      }),
    [subscribe, upsert, actions],
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
      (page) => page.messages.forEach((message) => dispatch({ type: "message", message })),
      (e) => actions.notify(describeError(e), "error"),
    );
  }, [channel, dispatch, actions]);

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
        {spaces.map((s) => (
          <button
            key={s.id}
            className={`space-pill ${s.id === selected ? "active" : ""}`}
            aria-current={s.id === selected ? "page" : undefined}
            title={s.name || s.membership}
            onClick={() => {
              setSelected(s.id);
              setInvite(null);
            }}
          >
            {(s.name || "?").slice(0, 2)}
          </button>
        ))}
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
                    className={`channel-item ${c.id === channel ? "active" : ""}`}
                    disabled={c.kind !== "text" || !c.can_view}
                    onClick={() => setChannel(c.id)}
                  >
                    {c.kind === "text" ? "#" : "🔊"} {c.name}
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
              {messages.map((m) => (
                <li key={m.id} className={`spaces-message ${m.outgoing ? "outgoing" : ""}`}>
                  <span className="spaces-author">{m.sender === me ? "You" : shortUser(m.sender)}</span>{" "}
                  <time className="muted small" dateTime={new Date(m.sent_at).toISOString()}>
                    {fullTime(m.sent_at)}
                  </time>
                  <div>{m.deleted ? <em className="muted">Message deleted</em> : <RichText text={m.body ?? ""} />}</div>
                </li>
              ))}
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
    </div>
  );
}
