import { useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import type { Contact, Message } from "../api/types";
import { connectionSummary } from "../lib/format";
import { buildItems } from "../lib/messages";
import { conversationOf } from "../lib/state";
import { isTyping, typingText } from "../lib/typing";
import { useStore } from "../state/store";
import { Avatar, presenceLabel } from "./Avatar";
import { Composer } from "./Composer";
import { Icon } from "./Icon";
import type { Panel } from "./Main";
import { MessageItem } from "./MessageItem";

/** How many older pages a search jump may load before giving up (each is up to 50 messages). */
const MAX_JUMP_PAGES = 20;

export function Conversation({
  contact,
  panel,
  setPanel,
  jumpTo,
  onJumped,
}: {
  contact: Contact;
  panel: Panel;
  setPanel(p: Panel): void;
  jumpTo: string | null;
  onJumped(): void;
}) {
  const { state, actions } = useStore();
  const conv = conversationOf(state, contact.user_id);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [highlight, setHighlight] = useState<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const anchor = useRef<{ fromBottom: number } | null>(null);
  const stick = useRef(true);
  const jumpPages = useRef(0);
  const items = useMemo(() => buildItems(conv.messages, Date.now()), [conv.messages]);
  const byId = useMemo(() => new Map(conv.messages.map((m) => [m.id, m])), [conv.messages]);
  const meId = state.me?.user_id ?? "";
  const typingNames = isTyping(state.typing, contact.user_id, Date.now()) ? [contact.display_name] : [];

  // Leaving a conversation drops its transient UI state.
  useEffect(() => {
    setReplyTo(null);
    setEditing(null);
    stick.current = true;
    jumpPages.current = 0;
  }, [contact.user_id]);

  // Read receipts: whenever new incoming messages are on screen and the tab is visible.
  useEffect(() => {
    if (state.visible && conv.loaded) actions.markRead(contact.user_id);
  }, [conv.messages, conv.loaded, state.visible, contact.user_id, actions]);

  const loadOlder = () => {
    const el = scroller.current;
    if (!el || conv.loadingOlder || !conv.hasMore || !conv.loaded) return;
    anchor.current = { fromBottom: el.scrollHeight - el.scrollTop };
    void actions.loadOlder(contact.user_id);
  };

  // Keep the reader's place: after an older page is prepended, restore the distance from the bottom;
  // otherwise follow new messages only if the reader was already at the bottom.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (anchor.current && !conv.loadingOlder) {
      el.scrollTop = el.scrollHeight - anchor.current.fromBottom;
      anchor.current = null;
    } else if (stick.current && !jumpTo) {
      el.scrollTop = el.scrollHeight;
    }
    // A first page shorter than the viewport cannot be scrolled, so fetch more right away.
    if (conv.loaded && conv.hasMore && !conv.loadingOlder && el.scrollHeight <= el.clientHeight) loadOlder();
  }, [items, conv.loadingOlder, conv.loaded]);

  // Search jump: page back until the message is loaded, then bring it into view.
  useEffect(() => {
    if (!jumpTo || !conv.loaded) return;
    if (byId.has(jumpTo)) {
      const el = document.getElementById(`msg-${jumpTo}`);
      el?.scrollIntoView({ block: "center" });
      (el as HTMLElement | null)?.focus({ preventScroll: true });
      stick.current = false;
      setHighlight(jumpTo);
      onJumped();
      const t = setTimeout(() => setHighlight(null), 2500);
      return () => clearTimeout(t);
    }
    if (conv.hasMore && !conv.loadingOlder && jumpPages.current < MAX_JUMP_PAGES) {
      jumpPages.current++;
      void actions.loadOlder(contact.user_id);
    } else if (!conv.hasMore || jumpPages.current >= MAX_JUMP_PAGES) {
      actions.notify("That message is no longer in this conversation.", "info");
      onJumped();
    }
    return undefined;
  }, [jumpTo, byId, conv.loaded, conv.hasMore, conv.loadingOlder, contact.user_id, actions, onJumped]);

  const lastId = conv.messages.length ? conv.messages[conv.messages.length - 1]!.id : null;

  // Arrow keys move between messages (the list is one Tab stop); Home/End jump to the ends.
  const onListKey = (e: KeyboardEvent<HTMLOListElement>) => {
    const target = e.target as HTMLElement;
    if (!target.matches('[data-testid="message"]')) return;
    const all = [...e.currentTarget.querySelectorAll<HTMLElement>('[data-testid="message"]')];
    const i = all.indexOf(target);
    let next: HTMLElement | undefined;
    if (e.key === "ArrowUp") next = all[i - 1];
    else if (e.key === "ArrowDown") next = all[i + 1];
    else if (e.key === "Home") next = all[0];
    else if (e.key === "End") next = all[all.length - 1];
    else return;
    e.preventDefault();
    if (next) {
      next.focus();
      next.scrollIntoView({ block: "nearest" });
    } else if (e.key === "ArrowUp") {
      loadOlder();
    }
  };

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 120) loadOlder();
  };

  const editLast = () => {
    for (let i = conv.messages.length - 1; i >= 0; i--) {
      const m = conv.messages[i]!;
      if (m.outgoing && !m.deleted && !m.id.startsWith("local-")) {
        setEditing(m.id);
        return;
      }
    }
  };

  const canMessage = contact.state === "accepted" && !contact.blocked;

  return (
    <div className="conversation">
      <header className="main-header">
        <Avatar id={contact.user_id} name={contact.display_name} presence={contact.presence} size={28} />
        <h1 className="conv-title">{contact.display_name}</h1>
        <span className="muted presence-text" data-testid="peer-presence">
          {presenceLabel(contact.presence)}
        </span>
        <span className={`conn-chip conn-${contact.connection.mode}`} title={connectionSummary(contact.connection)}>
          <span className="sr-only">Connection: </span>
          {contact.connection.mode === "none" ? "not connected" : contact.connection.mode}
        </span>
        <span className="spacer" />
        <button
          className="icon"
          aria-label="Search messages"
          title="Search (Ctrl K)"
          aria-pressed={panel?.kind === "search"}
          onClick={() => setPanel(panel?.kind === "search" ? null : { kind: "search", query: "" })}
        >
          <Icon name="search" />
        </button>
        <button
          className="icon"
          aria-label="Contact details"
          title="Contact details"
          aria-pressed={panel?.kind === "details"}
          aria-expanded={panel?.kind === "details"}
          onClick={() => setPanel(panel?.kind === "details" ? null : { kind: "details" })}
        >
          <Icon name="info" />
        </button>
      </header>
      <div className="messages" ref={scroller} onScroll={onScroll} data-testid="messages">
        <div role="log" aria-live="polite" aria-relevant="additions" aria-label={`Messages with ${contact.display_name}`}>
          {conv.loaded && !conv.hasMore && (
            <div className="conv-start">
              <Avatar id={contact.user_id} name={contact.display_name} size={64} />
              <h2>{contact.display_name}</h2>
              <p className="muted">This is the beginning of your end-to-end encrypted conversation.</p>
            </div>
          )}
          {conv.loadingOlder && (
            <p className="muted loading" role="status">
              Loading older messages…
            </p>
          )}
          <ol className="message-list" onKeyDown={onListKey}>
            {items.map((item) =>
              item.kind === "day" ? (
                <li key={item.key} className="day-separator" role="separator" aria-label={item.label}>
                  <span>{item.label}</span>
                </li>
              ) : (
                <MessageItem
                  key={item.key}
                  message={item.message}
                  first={item.first}
                  author={item.message.outgoing ? (state.me?.display_name ?? "You") : contact.display_name}
                  meId={meId}
                  replied={item.message.reply_to ? byId.get(item.message.reply_to) : undefined}
                  repliedAuthor={(m) => (m.outgoing ? (state.me?.display_name ?? "You") : contact.display_name)}
                  editing={editing === item.message.id}
                  tabStop={item.message.id === lastId}
                  highlighted={highlight === item.message.id}
                  onReply={() => {
                    setReplyTo(item.message);
                    document.getElementById("composer")?.focus();
                  }}
                  onEdit={() => setEditing(item.message.id)}
                  onEditDone={() => {
                    setEditing(null);
                    document.getElementById("composer")?.focus();
                  }}
                />
              ),
            )}
          </ol>
        </div>
      </div>
      <div className="typing" aria-live="polite" data-testid="typing">
        {typingNames.length > 0 && (
          <>
            <span className="typing-dots" aria-hidden="true">
              <i />
              <i />
              <i />
            </span>
            {typingText(typingNames)}
          </>
        )}
      </div>
      {canMessage ? (
        <Composer
          peer={contact}
          replyTo={replyTo}
          replyAuthor={replyTo ? (replyTo.outgoing ? "yourself" : contact.display_name) : ""}
          onCancelReply={() => setReplyTo(null)}
          onSent={() => {
            setReplyTo(null);
            stick.current = true;
          }}
          onEditLast={editLast}
        />
      ) : (
        <p className="composer-disabled muted">
          {contact.blocked ? "You blocked this contact." : "You can write once they accept your request."}
        </p>
      )}
    </div>
  );
}
