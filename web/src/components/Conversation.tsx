import { defaultRangeExtractor, useVirtualizer, type Range } from "@tanstack/react-virtual";
import {
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
  type DragEvent,
  type FocusEvent,
  type KeyboardEvent,
  type ReactNode,
} from "react";
import type { Contact, Message } from "../api/types";
import { connectionSummary } from "../lib/format";
import { buildItems } from "../lib/messages";
import { plainText } from "../lib/markdown";
import { conversationOf } from "../lib/state";
import { isTyping, typingText } from "../lib/typing";
import type { Panel } from "../lib/layout";
import { atPresent, firstUnread, lastOnScreen, readUpTo, showJumpBar, unreadAfter } from "../lib/unread";
import { buildRows, estimateRowSize, placedMessages, ROW_HEIGHTS, rowIndexById, stepMessage, withPinned } from "../lib/windowing";
import { usePrefs } from "../state/prefs";
import { useStore } from "../state/store";
import { useCalls } from "../state/calls";
import { useTransfers } from "../state/transfers";
import { Avatar, presenceLabel } from "./Avatar";
import { Composer } from "./Composer";
import { UploadTray } from "./FileCard";
import { Icon } from "./Icon";
import { MessageItem } from "./MessageItem";
import type { Mentionable } from "../lib/spaces";

/** How many older pages a jump (search hit, reply quote) may load before giving up. */
const MAX_JUMP_PAGES = 20;
/**
 * How many older pages opening a conversation loads to find its first unread message. Past
 * that the divider goes above the oldest loaded unread one ("more above"): the API pages only
 * backwards from the newest, so reaching a first unread 10,000 messages back would mean loading
 * all of them (a planned `around=` query fixes that, docs/api.md "Planned").
 */
const MAX_DIVIDER_PAGES = 4;

/** What the connection chip says when hovered: "relayed" needs explaining. */
function chipTitle(c: Contact): string {
  const base = connectionSummary(c.connection);
  if (c.connection.mode === "relayed") {
    return `${base}. Relayed: no direct peer-to-peer path right now, so messages travel through the signaling server, still end-to-end encrypted (it sees only ciphertext).`;
  }
  if (c.connection.mode === "mailbox") return `${base}. They are offline; the server keeps the encrypted messages until they connect.`;
  return base;
}

/** What a conversation view needs from the kind of conversation it shows. */
export interface ConversationViewProps {
  /** The conversation's id: the peer's user ID for a direct conversation, a channel's id later. */
  id: string;
  /** Who or what it is, for labels ("Messages with Bob", "Message Bob"). */
  title: string;
  /** Unread messages as the node counts them (the contact's or the channel's record). */
  unread: number;
  /** The header row (title, presence, buttons). */
  header: ReactNode;
  /** A bar under the header, if any (the verification prompt). */
  banner?: ReactNode;
  /** Shown above the first message once the whole history is loaded. */
  start: ReactNode;
  /** Who is typing right now. */
  typingNames: string[];
  /** Whether we may write here; if not, `readOnly` says why. */
  canWrite: boolean;
  readOnly: string;
  authorOf(m: Message): string;
  avatarOf(m: Message): string | null;
  jumpTo: string | null;
  onJumped(): void;
  onProfile(userId: string, anchor: HTMLElement): void;
  /** Sends files here (attach button, drag and drop, pasted images); none without it. */
  onFiles?(files: { file: Blob; name: string }[]): void;
  /** A space channel's own routes and rules; a direct conversation uses the store's actions. */
  channel?: ChannelHooks;
}

/** What a space channel changes in the view (docs/ui.md, "Spaces view"). */
export interface ChannelHooks {
  send(body: string, replyTo: string | null): void;
  loadOlder(): void;
  markRead(upTo: Message): void;
  /** Tells the channel's online readers we are typing (best effort). */
  typing(active: boolean): void;
  /** Whether we may delete others' messages here (manage messages). */
  canModerate: boolean;
  /** The text as shown: mention tokens as `@name`. */
  display(body: string): string;
  /** Whether a message mentions us (highlighted). */
  mentionsMe(m: Message): boolean;
  /** The @mention picker's candidates for a query. */
  mentionables(query: string): Mentionable[];
}

/**
 * A conversation's history and message box, for any kind of conversation: the message list
 * with the unread divider, "jump to present", read-once-seen tracking, jumps to a message,
 * keyboard navigation, the typing line and the composer. The kind-specific parts (header,
 * banner, names, whether one may write) come in as props: a direct conversation is
 * `Conversation` below; a space channel supplies its own.
 */
export function ConversationView({
  id: peer,
  title,
  unread,
  header,
  banner,
  start,
  typingNames,
  canWrite,
  readOnly,
  authorOf,
  avatarOf,
  jumpTo,
  onJumped,
  onProfile,
  onFiles,
  channel,
}: ConversationViewProps) {
  const { state, actions, dispatch } = useStore();
  const conv = conversationOf(state, peer);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [highlight, setHighlight] = useState<string | null>(null);
  const [localJump, setLocalJump] = useState<string | null>(null);
  const [jumpBar, setJumpBar] = useState(false);
  /** The message that has keyboard focus: kept rendered while it is off screen. */
  const [focused, setFocused] = useState<string | null>(null);
  /** A message to focus as soon as it is rendered (keyboard navigation, jumps). */
  const pendingFocus = useRef<string | null>(null);
  const [announce, setAnnounce] = useState("");
  const [dropping, setDropping] = useState(false);
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const jumpPages = useRef(0);
  /** The unread count when this conversation was opened: where the divider goes. */
  const openedUnread = useRef(unread);
  const [divider, setDivider] = useState<{ id: string | null; settled: boolean; partial: boolean }>({
    id: null,
    settled: unread === 0,
    partial: false,
  });
  const landed = useRef(false);
  const seenSeq = useRef(-1);
  const items = useMemo(() => buildItems(conv.messages, Date.now()), [conv.messages]);
  const byId = useMemo(() => new Map(conv.messages.map((m) => [m.id, m])), [conv.messages]);
  const messagesRef = useRef(conv.messages);
  messagesRef.current = conv.messages;
  const meId = state.me?.user_id ?? "";
  const channelRef = useRef(channel);
  channelRef.current = channel;
  /** The next older page: the store's for a direct conversation, the channel's own otherwise. */
  const fetchOlder = useCallback(() => {
    if (channelRef.current) channelRef.current.loadOlder();
    else void actions.loadOlder(peer);
  }, [actions, peer]);
  const target = jumpTo ?? localJump;
  const lastId = conv.messages.length ? conv.messages[conv.messages.length - 1]!.id : null;

  const rows = useMemo(
    () =>
      buildRows(items, {
        start: conv.loaded && !conv.hasMore,
        dividerId: divider.id,
        dividerLabel: divider.partial ? "New messages (more above)" : "New messages",
      }),
    [items, conv.loaded, conv.hasMore, divider.id, divider.partial],
  );
  const rowIndex = useMemo(() => rowIndexById(rows), [rows]);
  const rowsRef = useRef(rows);
  rowsRef.current = rows;
  const rowIndexRef = useRef(rowIndex);
  rowIndexRef.current = rowIndex;

  // Rows kept mounted off screen (see withPinned); the extractor changes only when they do.
  const pinned = [lastId, focused, editing].map((id) => (id ? rowIndex.get(id) : undefined));
  const pinnedRef = useRef(pinned);
  pinnedRef.current = pinned;
  const pinKey = pinned.join(",");
  const rangeExtractor = useCallback(
    (range: Range) => withPinned(defaultRangeExtractor(range), pinnedRef.current, range.count),
    // pinKey stands for what pinnedRef holds: a new extractor makes the virtualiser recompute.
    [pinKey],
  );
  const getItemKey = useCallback((i: number) => rows[i]?.key ?? i, [rows]);
  const estimateSize = useCallback((i: number) => (rows[i] ? estimateRowSize(rows[i]) : ROW_HEIGHTS.line), [rows]);
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize,
    getItemKey,
    rangeExtractor,
    overscan: 6,
    // Chat mode: a prepend keeps the row at the top of the view where it was; a message
    // appended while the reader is at the newest one is followed; growth at the end stays pinned.
    anchorTo: "end",
    followOnAppend: true,
    scrollEndThreshold: 48,
    scrollPaddingStart: 24,
  });

  // The first unread message: page back until it is loaded, then freeze it for this visit.
  useEffect(() => {
    if (divider.settled || !conv.loaded) return;
    const found = firstUnread(conv.messages, openedUnread.current);
    if (found.id || !found.missing || !conv.hasMore) {
      setDivider({ id: found.id, settled: true, partial: false });
    } else if (jumpPages.current >= MAX_DIVIDER_PAGES) {
      const oldest = conv.messages.find((m) => !m.outgoing && !m.deleted);
      setDivider({ id: oldest?.id ?? null, settled: true, partial: true });
    } else if (!conv.loadingOlder) {
      jumpPages.current++;
      fetchOlder();
    }
  }, [divider.settled, conv.loaded, conv.messages, conv.hasMore, conv.loadingOlder, fetchOlder]);

  /** Which messages have been on screen: only those count as read. */
  const updateSeen = useCallback(() => {
    const el = scroller.current;
    // Nothing counts as seen before the view has landed where the reader starts (the divider).
    if (!el || !state.visible || !landed.current) return;
    const viewTop = el.scrollTop;
    const placed = placedMessages(rowsRef.current, virtualizer.getVirtualItems());
    const seenId = lastOnScreen(placed, viewTop, viewTop + el.clientHeight);
    if (!seenId) return;
    const msgs = messagesRef.current;
    // Our own optimistic messages (local ids, no seq yet) do not move the read position.
    let at = msgs.findIndex((m) => m.id === seenId);
    while (at >= 0 && msgs[at]!.id.startsWith("local-")) at--;
    const seen = at >= 0 ? msgs[at] : undefined;
    if (!seen || seen.seq <= seenSeq.current) return;
    seenSeq.current = seen.seq;
    dispatch({ type: "seen", userId: peer, unread: unreadAfter(msgs, seen.id) });
    const upTo = readUpTo(msgs, seen.id);
    if (upTo) {
      if (channelRef.current) channelRef.current.markRead(upTo);
      else actions.markRead(peer, upTo);
    }
  }, [state.visible, dispatch, peer, actions, virtualizer]);

  // After a render the virtualiser may still move the view (a scroll it was asked for, a
  // correction after measuring): check what is on screen once it has.
  const seenFrame = useRef(0);
  const updateSeenSoon = useCallback(() => {
    if (seenFrame.current) return;
    seenFrame.current = requestAnimationFrame(() => {
      seenFrame.current = 0;
      updateSeen();
    });
  }, [updateSeen]);
  useEffect(() => () => cancelAnimationFrame(seenFrame.current), []);

  const loadOlder = useCallback(() => {
    if (conv.loadingOlder || !conv.hasMore || !conv.loaded) return;
    // No scroll bookkeeping: the virtualiser keeps the top row in place when the page lands.
    fetchOlder();
  }, [conv.loadingOlder, conv.hasMore, conv.loaded, fetchOlder]);

  // On the first landing go to the unread divider (or the newest message). Keeping the place
  // on prepends and following new messages at the bottom are the virtualiser's (anchorTo, followOnAppend).
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (!landed.current && conv.loaded && divider.settled && !target && rows.length > 0) {
      landed.current = true;
      const at = divider.id ? rowIndex.get(divider.id) : undefined;
      if (at !== undefined) {
        stick.current = false;
        virtualizer.scrollToIndex(at, { align: "start" });
      } else {
        stick.current = true;
        virtualizer.scrollToEnd();
      }
    }
    // A first page shorter than the viewport cannot be scrolled, so fetch more right away.
    if (conv.loaded && conv.hasMore && !conv.loadingOlder && virtualizer.getTotalSize() <= el.clientHeight) loadOlder();
    updateSeenSoon();
  }, [rows, rowIndex, conv.loadingOlder, conv.loaded, conv.hasMore, divider, target, loadOlder, updateSeenSoon, virtualizer]);

  // Focus a message once it is rendered (it is pinned, so the next render has it).
  useLayoutEffect(() => {
    const id = pendingFocus.current;
    if (!id) return;
    const el = document.getElementById(`msg-${id}`);
    if (el) {
      pendingFocus.current = null;
      el.focus({ preventScroll: true });
    }
  });

  // The view got shorter (a bar appeared, the window shrank, the keyboard opened): a reader
  // at the newest message stays there.
  useEffect(() => {
    const el = scroller.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => {
      if (stick.current && landed.current) virtualizer.scrollToEnd();
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, [virtualizer]);

  // Back in the tab: what is on screen now counts as seen.
  useEffect(() => {
    if (state.visible) updateSeen();
  }, [state.visible, updateSeen]);

  // Leaving: the rest of the app counts new messages for this conversation again.
  useEffect(() => () => dispatch({ type: "at_bottom", atBottom: true }), [dispatch]);

  // Screen readers hear new incoming messages from here: the list itself is not a live region,
  // as rows come and go while scrolling.
  const announced = useRef<string | null>(lastId);
  useEffect(() => {
    const last = conv.messages[conv.messages.length - 1];
    const prev = announced.current;
    announced.current = last?.id ?? null;
    if (!last || prev === null || last.id === prev || last.outgoing || last.deleted) return;
    setAnnounce(`${authorOf(last)}: ${plainText(last.body ?? "")}`);
    // Only a new newest message is news (not a prepend, not a name change).
  }, [lastId]);

  /** Brings a message into view and gives it focus (it is pinned until rendered). */
  const focusMessage = useCallback(
    (id: string, align: "auto" | "center") => {
      const at = rowIndexRef.current.get(id);
      if (at === undefined) return;
      const el = document.getElementById(`msg-${id}`);
      if (el) el.focus({ preventScroll: true });
      else pendingFocus.current = id;
      setFocused(id);
      virtualizer.scrollToIndex(at, { align });
    },
    [virtualizer],
  );

  // A jump (search hit, reply quote): page back until the message is loaded, then bring it into view.
  useEffect(() => {
    if (!target || !conv.loaded) return;
    const done = () => {
      if (jumpTo) onJumped();
      setLocalJump(null);
    };
    if (byId.has(target)) {
      stick.current = false;
      landed.current = true;
      focusMessage(target, "center");
      setHighlight(target);
      done();
      const t = setTimeout(() => setHighlight(null), 2500);
      return () => clearTimeout(t);
    }
    if (conv.hasMore && !conv.loadingOlder && jumpPages.current < MAX_JUMP_PAGES) {
      jumpPages.current++;
      fetchOlder();
    } else if (!conv.hasMore || jumpPages.current >= MAX_JUMP_PAGES) {
      actions.notify("That message is no longer in this conversation.", "info");
      done();
    }
    return undefined;
  }, [target, jumpTo, byId, conv.loaded, conv.hasMore, conv.loadingOlder, fetchOlder, actions, onJumped, focusMessage]);

  // The ↑ editor: bring the edited message into view (it stays rendered while edited).
  useEffect(() => {
    const at = editing ? rowIndexRef.current.get(editing) : undefined;
    if (at !== undefined) virtualizer.scrollToIndex(at, { align: "auto" });
  }, [editing, virtualizer]);

  // Arrow keys move between messages (the list is one Tab stop); Home/End jump to the ends.
  const onListKey = (e: KeyboardEvent<HTMLOListElement>) => {
    const t = e.target as HTMLElement;
    if (!t.matches('[data-testid="message"]')) return;
    if (e.key !== "ArrowUp" && e.key !== "ArrowDown" && e.key !== "Home" && e.key !== "End") return;
    e.preventDefault();
    const from = rowIndex.get(t.dataset.messageId ?? "");
    if (from === undefined) return;
    const to = stepMessage(rows, from, e.key);
    const row = to === null ? undefined : rows[to];
    if (row?.kind === "message") focusMessage(row.message.id, "auto");
    else if (e.key === "ArrowUp") loadOlder();
  };
  const onListFocus = (e: FocusEvent<HTMLOListElement>) => {
    const id = (e.target as HTMLElement).closest<HTMLElement>("[data-message-id]")?.dataset.messageId;
    if (id) setFocused(id);
  };
  const onListBlur = (e: FocusEvent<HTMLOListElement>) => {
    if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setFocused(null);
  };

  const frame = useRef(0);
  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    const distance = el.scrollHeight - el.scrollTop - el.clientHeight;
    stick.current = atPresent(distance);
    if (landed.current) dispatch({ type: "at_bottom", atBottom: stick.current });
    setJumpBar(showJumpBar(distance, el.clientHeight));
    if (el.scrollTop < 120) loadOlder();
    if (!frame.current) {
      frame.current = requestAnimationFrame(() => {
        frame.current = 0;
        updateSeen();
      });
    }
  };

  const jumpToPresent = () => {
    const el = scroller.current;
    if (!el) return;
    stick.current = true;
    // Smooth over a few screens; further than that, at once (nothing in between is worth rendering).
    const far = el.scrollHeight - el.scrollTop - el.clientHeight > 3 * el.clientHeight;
    virtualizer.scrollToEnd({ behavior: far ? "auto" : "smooth" });
    document.getElementById("composer")?.focus({ preventScroll: true });
  };

  const editLast = useCallback(() => {
    const msgs = messagesRef.current;
    for (let i = msgs.length - 1; i >= 0; i--) {
      const m = msgs[i]!;
      if (m.outgoing && !m.deleted && !m.id.startsWith("local-")) {
        setEditing(m.id);
        return;
      }
    }
  }, []);

  // Stable callbacks, so the memoised items do not all re-render when one thing changes.
  const onReply = useCallback((m: Message) => {
    setReplyTo(m);
    document.getElementById("composer")?.focus();
  }, []);
  const onEdit = useCallback((m: Message) => setEditing(m.id), []);
  const onEditDone = useCallback((m: Message, cancelled: boolean) => {
    setEditing(null);
    // Escape puts focus back on the message that was being edited; saving goes to the box.
    requestAnimationFrame(() => {
      if (cancelled) document.getElementById(`msg-${m.id}`)?.focus();
      else document.getElementById("composer")?.focus();
    });
  }, []);
  const onJump = useCallback((id: string) => {
    jumpPages.current = 0;
    setLocalJump(id);
  }, []);

  const unreadBelow = unread > 0 && !stick.current;

  const dropFiles = (e: DragEvent<HTMLDivElement>) => {
    if (!onFiles || !canWrite || !e.dataTransfer.types.includes("Files")) return;
    e.preventDefault();
    setDropping(false);
    const files = Array.from(e.dataTransfer.files);
    if (files.length) onFiles(files.map((f) => ({ file: f, name: f.name })));
  };

  return (
    <div
      className={`conversation ${dropping ? "dropping" : ""}`}
      data-testid="conversation"
      onDragOver={(e) => {
        if (!onFiles || !canWrite || !e.dataTransfer.types.includes("Files")) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        if (!dropping) setDropping(true);
      }}
      onDragLeave={(e) => {
        if (e.currentTarget === e.target) setDropping(false);
      }}
      onDrop={dropFiles}
    >
      {dropping && (
        <div className="drop-hint" aria-hidden="true">
          Drop files to send them to {title}
        </div>
      )}
      {header}
      {banner}
      <div className="messages-wrap">
        <div
          className="messages"
          ref={scroller}
          onScroll={onScroll}
          data-testid="messages"
          data-loaded={conv.messages.length}
          data-first-loaded={conv.messages[0]?.id ?? ""}
        >
          <div role="log" aria-live="off" aria-label={`Messages with ${title}`}>
            <ol
              className="message-list"
              onKeyDown={onListKey}
              onFocus={onListFocus}
              onBlur={onListBlur}
              style={{ height: virtualizer.getTotalSize() }}
            >
              {virtualizer.getVirtualItems().map((v) => {
                const row = rows[v.index];
                if (!row) return null;
                return (
                  <li
                    key={v.key}
                    data-index={v.index}
                    ref={virtualizer.measureElement}
                    className="msg-row"
                    style={{ transform: `translateY(${v.start}px)` }}
                  >
                    {row.kind === "start" ? (
                      start
                    ) : (
                      <>
                        {row.day && (
                          <div className="day-separator" role="separator" aria-label={row.day}>
                            <span>{row.day}</span>
                          </div>
                        )}
                        {row.divider && (
                          <div id="unread-divider" className="unread-divider" role="separator" aria-label={row.divider} data-testid="unread-divider">
                            <span>{row.divider}</span>
                          </div>
                        )}
                        <MessageItem
                          message={row.message}
                          first={row.first}
                          author={authorOf(row.message)}
                          avatar={avatarOf(row.message)}
                          meId={meId}
                          replied={row.message.reply_to ? byId.get(row.message.reply_to) : undefined}
                          repliedAuthor={authorOf}
                          editing={editing === row.message.id}
                          tabStop={row.message.id === lastId}
                          highlighted={highlight === row.message.id}
                          onReply={onReply}
                          onEdit={onEdit}
                          onEditDone={onEditDone}
                          onJump={onJump}
                          onProfile={onProfile}
                          canModerate={channel?.canModerate}
                          display={channel?.display}
                          mentionsMe={channel ? channel.mentionsMe(row.message) : undefined}
                        />
                      </>
                    )}
                  </li>
                );
              })}
            </ol>
          </div>
        </div>
        {conv.loadingOlder && (
          <p className="muted loading" role="status">
            Loading older messages…
          </p>
        )}
        <div className="sr-only" aria-live="polite" data-testid="announce">
          {announce}
        </div>
        {(jumpBar || unreadBelow) && (
          <button className="jump-bar" onClick={jumpToPresent} data-testid="jump-to-present">
            {unread > 0 ? `${unread} new message${unread === 1 ? "" : "s"} · ` : "You're viewing older messages · "}
            <strong>Jump to present</strong>
          </button>
        )}
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
      {onFiles && <UploadTray conversation={peer} />}
      {canWrite ? (
        <Composer
          onFiles={onFiles}
          conversationId={peer}
          label={`Message ${title}`}
          replyTo={replyTo}
          replyAuthor={replyTo ? (replyTo.outgoing ? "yourself" : authorOf(replyTo)) : ""}
          onCancelReply={() => setReplyTo(null)}
          onSent={() => {
            setReplyTo(null);
            stick.current = true;
            virtualizer.scrollToEnd();
          }}
          onEditLast={editLast}
          send={(body, reply) => (channel ? channel.send(body, reply) : void actions.send(peer, body, reply))}
          typing={(active) => (channel ? channel.typing(active) : actions.typing(peer, active))}
          mentionables={channel?.mentionables}
        />
      ) : (
        <p className="composer-disabled muted">{readOnly}</p>
      )}
    </div>
  );
}

/** A direct conversation: the contact's header, the verification prompt, and the shared view. */
export function Conversation({
  contact,
  panel,
  setPanel,
  jumpTo,
  onJumped,
  onBack,
  onProfile,
}: {
  contact: Contact;
  panel: Panel;
  setPanel(p: Panel): void;
  jumpTo: string | null;
  onJumped(): void;
  /** Phone layout: back to the conversation list. */
  onBack(): void;
  onProfile(userId: string, anchor: HTMLElement): void;
}) {
  const { state } = useStore();
  const { muted, setMuted } = usePrefs();
  const { sendFiles } = useTransfers();
  const calls = useCalls();
  const peer = contact.user_id;
  const myName = state.me?.display_name ?? "You";
  const myAvatar = state.me?.profile?.avatar ?? null;
  const theirAvatar = contact.profile?.avatar ?? null;
  const isMuted = muted.has(peer);
  const verification = state.verifications[peer];
  const verifying = verification && (verification.state === "waiting" || verification.state === "compare");
  const authorOf = useCallback((m: Message) => (m.outgoing ? myName : contact.display_name), [myName, contact.display_name]);
  const avatarOf = useCallback((m: Message) => (m.outgoing ? myAvatar : theirAvatar), [myAvatar, theirAvatar]);
  const typingNames = useMemo(
    () => (isTyping(state.typing, peer, Date.now()) ? [contact.display_name] : []),
    [state.typing, peer, contact.display_name],
  );

  return (
    <ConversationView
      id={peer}
      title={contact.display_name}
      unread={contact.unread}
      header={
        <header className="main-header">
          <button className="icon back-button" aria-label="Back to conversations" onClick={onBack}>
            <Icon name="back" />
          </button>
          <button className="header-who" onClick={(e) => onProfile(peer, e.currentTarget)} aria-label={`Profile of ${contact.display_name}`}>
            <Avatar id={peer} name={contact.display_name} presence={contact.presence} size={28} image={theirAvatar} />
            <h1 className="conv-title">{contact.display_name}</h1>
          </button>
          <span className="muted presence-text" data-testid="peer-presence">
            {presenceLabel(contact.presence)}
          </span>
          <span className={`conn-chip conn-${contact.connection.mode}`} title={chipTitle(contact)} data-testid="conn-chip">
            <span className="sr-only">Connection: </span>
            {contact.connection.mode === "none" ? "not connected" : contact.connection.mode}
          </span>
          {state.me?.status === "invisible" && (
            <span className="pill" title="Contacts see you as offline. Your node still receives messages." data-testid="invisible-pill">
              Invisible
            </span>
          )}
          <span className="spacer" />
          {contact.state === "accepted" && !contact.blocked && (
            <button
              className="icon"
              aria-label={`Call ${contact.display_name}`}
              title={calls.call ? "You are already in a call" : "Start a voice call"}
              disabled={!!calls.call}
              onClick={() => void calls.start(peer)}
              data-testid="call-start"
            >
              <Icon name="phone" />
            </button>
          )}
          <button
            className="icon"
            aria-label={isMuted ? `Unmute ${contact.display_name}` : `Mute ${contact.display_name}`}
            title={isMuted ? "Unmute notifications" : "Mute notifications"}
            aria-pressed={isMuted}
            onClick={() => setMuted(peer, !isMuted)}
            data-testid="mute-toggle"
          >
            <Icon name={isMuted ? "bell-off" : "bell"} />
          </button>
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
      }
      banner={
        verifying && panel?.kind !== "details" ? (
          <div className="verify-bar" role="status" data-testid="verify-prompt">
            <span>{contact.display_name} is verifying your safety with emoji.</span>
            <button className="primary" onClick={() => setPanel({ kind: "details" })}>
              Compare emoji
            </button>
          </div>
        ) : null
      }
      start={
        <div className="conv-start">
          <Avatar id={peer} name={contact.display_name} size={64} image={theirAvatar} />
          <h2>{contact.display_name}</h2>
          <p className="muted">This is the beginning of your end-to-end encrypted conversation.</p>
        </div>
      }
      typingNames={typingNames}
      canWrite={contact.state === "accepted" && !contact.blocked}
      readOnly={
        contact.blocked ? "You blocked this contact. Unblock them in their details to write again." : "You can write once they accept your request."
      }
      authorOf={authorOf}
      avatarOf={avatarOf}
      jumpTo={jumpTo}
      onJumped={onJumped}
      onProfile={onProfile}
      onFiles={contact.state === "accepted" ? (files) => sendFiles(peer, files) : undefined}
    />
  );
}
