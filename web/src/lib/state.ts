// The UI's whole state and the pure reducer that applies REST answers and live events to it.
// Components dispatch; nothing here does I/O, so every transition is unit-tested.
import type {
  ApiEvent,
  Contact,
  DeliveryState,
  Me,
  Message,
  MessagePage,
  NodeState,
  Settings,
  SignalingState,
  Status,
  UserId,
  Verification,
} from "../api/types";
import { displayName } from "./format";
import { compareMessages, laterState, mergeMessage, mergeMessages } from "./messages";
import { normalizeContact, normalizeMessage } from "./normalize";
import { applyTyping, expireTyping, type TypingMap } from "./typing";

export type SocketState = "connecting" | "open" | "reconnecting";

export interface Conversation {
  messages: Message[];
  hasMore: boolean;
  loaded: boolean;
  loadingOlder: boolean;
}

export interface Notice {
  id: number;
  text: string;
  tone: "info" | "error";
}

export interface State {
  node: NodeState | "unknown" | "unauthorized";
  version: string;
  /** The display name /status reports, known before unlocking. */
  displayName: string;
  socket: SocketState;
  signaling: { state: SignalingState; url: string; retryInMs?: number };
  /**
   * Counts `signaling` events. A /status answer that was requested before the latest event is
   * older than it, so it must not overwrite the event's state (see the "status" action).
   */
  signalingEpoch: number;
  me: Me | null;
  contacts: Record<UserId, Contact>;
  conversations: Record<UserId, Conversation>;
  typing: TypingMap;
  active: UserId | null;
  /** Whether the reader can see the active conversation (tab visible and focused). */
  visible: boolean;
  /**
   * Whether the open conversation is scrolled to its newest message. Only then does a new
   * incoming message count as seen at once; otherwise it stays unread until it has been on
   * screen (the view reports that with a `seen` action).
   */
  atBottom: boolean;
  /** The latest emoji verification state per contact (from `verification` events). */
  verifications: Record<UserId, Verification>;
  settings: Settings | null;
  notices: Notice[];
  nextNoticeId: number;
}

export const initialState: State = {
  node: "unknown",
  version: "",
  displayName: "",
  socket: "connecting",
  signaling: { state: "connecting", url: "" },
  signalingEpoch: 0,
  me: null,
  contacts: {},
  conversations: {},
  typing: {},
  active: null,
  visible: true,
  atBottom: true,
  verifications: {},
  settings: null,
  notices: [],
  nextNoticeId: 1,
};

export type Action =
  | { type: "event"; event: ApiEvent; now: number }
  | { type: "socket"; state: SocketState }
  /** `epoch`: the signalingEpoch when the request was sent. */
  | { type: "status"; status: Status; epoch?: number }
  | { type: "unauthorized" }
  | { type: "me"; me: Me }
  | { type: "contacts"; contacts: Contact[] }
  | { type: "contact"; contact: Contact }
  | { type: "page"; userId: UserId; page: MessagePage; older: boolean }
  | { type: "loading_older"; userId: UserId; loading: boolean }
  | { type: "open"; userId: UserId | null }
  | { type: "visible"; visible: boolean }
  /** The view of `userId` has shown everything but the last `unread` incoming messages. */
  | { type: "seen"; userId: UserId; unread: number }
  | { type: "at_bottom"; atBottom: boolean }
  | { type: "remove_contact"; userId: UserId }
  | { type: "local_send"; message: Message }
  | { type: "sent"; localId: string; message: Message }
  | { type: "send_failed"; localId: string }
  | { type: "discard_local"; localId: string }
  | { type: "message"; message: Message }
  | { type: "settings"; settings: Settings }
  | { type: "tick"; now: number }
  | { type: "notice"; text: string; tone?: Notice["tone"] }
  | { type: "dismiss"; id: number };

/**
 * How many messages a conversation keeps loaded when it is opened, and (doubled) while it is in
 * the background. Older ones are dropped (`hasMore` turns true) and come back a page at a time
 * when the reader scrolls up, so a 10,000-message history costs what is on screen and near it,
 * not the whole history, in memory and at every render.
 */
export const KEEP_LOADED = 300;

/** The newest `keep` messages of a conversation; older ones are fetched again on demand. */
export function trimConversation(conv: Conversation, keep: number): Conversation {
  if (conv.messages.length <= keep) return conv;
  return { ...conv, messages: conv.messages.slice(conv.messages.length - keep), hasMore: true };
}

const emptyConversation: Conversation = { messages: [], hasMore: true, loaded: false, loadingOlder: false };

/** Where typing in a space channel is kept in `State.typing`. */
export function channelTypingKey(channel: string, userId: string): string {
  return `${channel}/${userId}`;
}

export function conversationOf(state: State, userId: UserId): Conversation {
  return state.conversations[userId] ?? emptyConversation;
}

/**
 * Merges a page into a conversation. An "older" page extends history upwards. A "latest" page (first
 * open or refresh after reconnect) is merged, unless it cannot touch what we hold (its oldest message
 * is newer than our newest and more exist before it): then there may be a gap, so the page replaces
 * the list and older history is fetched again on scroll.
 */
export function mergePage(conv: Conversation, page: MessagePage, older: boolean): Conversation {
  if (older) {
    return {
      ...conv,
      messages: mergeMessages(conv.messages, page.messages),
      hasMore: page.has_more,
      loaded: true,
      loadingOlder: false,
    };
  }
  const held = conv.messages.filter((m) => !isLocal(m));
  const newestHeld = held[held.length - 1];
  const oldestNew = page.messages[0];
  const gap = newestHeld === undefined || oldestNew === undefined || compareMessages(oldestNew, newestHeld) > 0;
  if (!conv.loaded || (page.has_more && gap)) {
    const locals = conv.messages.filter(isLocal);
    return {
      messages: mergeMessages(page.messages, locals),
      hasMore: page.has_more,
      loaded: true,
      loadingOlder: false,
    };
  }
  return { ...conv, messages: mergeMessages(conv.messages, page.messages), loaded: true };
}

/** Optimistic messages shown before the node answers carry a local id. */
export const LOCAL_PREFIX = "local-";
export function isLocal(m: Message): boolean {
  return m.id.startsWith(LOCAL_PREFIX);
}

function withConversation(state: State, userId: UserId, f: (c: Conversation) => Conversation): State {
  return { ...state, conversations: { ...state.conversations, [userId]: f(conversationOf(state, userId)) } };
}

/** Contacts without a name yet (a fresh request) are shown by their short ID everywhere. */
function named(c: Contact): Contact {
  const n = normalizeContact(c);
  return n.display_name.trim() ? n : { ...n, display_name: displayName(n) };
}

function upsertContact(state: State, incoming: Contact): State {
  const old = state.contacts[incoming.user_id];
  // Fields the event leaves out (live ones such as presence) keep what we knew.
  const defined = Object.fromEntries(Object.entries(incoming).filter(([, v]) => v !== undefined)) as Partial<Contact>;
  const contact = named({ ...old, ...defined } as Contact);
  // The node's contact record is authoritative, except that the reader is looking at the newest
  // messages of this conversation right now.
  const unread = lookingAtNewest(state, contact.user_id) ? 0 : contact.unread;
  return { ...state, contacts: { ...state.contacts, [contact.user_id]: { ...contact, unread } } };
}

/** Whether the reader sees the newest messages of this conversation at this moment. */
function lookingAtNewest(state: State, userId: UserId): boolean {
  return state.active === userId && state.visible && state.atBottom;
}

/** Applies one message (new or updated) to its conversation and its contact's preview and unread count. */
function applyMessage(state: State, raw: Message, isNew: boolean): State {
  const message = normalizeMessage(raw);
  const peer = message.conversation;
  const conv = conversationOf(state, peer);
  const already = conv.messages.some((m) => m.id === message.id);
  let next = withConversation(state, peer, (c) => {
    const merged = { ...c, messages: mergeMessages(c.messages, [message]) };
    // A conversation in the background keeps a bounded tail (see KEEP_LOADED).
    return state.active === peer ? merged : trimConversation(merged, 2 * KEEP_LOADED);
  });
  const contact = next.contacts[peer];
  if (contact) {
    const seen = lookingAtNewest(next, peer);
    const countIt = isNew && !already && !message.outgoing && !message.deleted && !seen;
    const last = contact.last_message;
    const newerPreview = !last || last.id === message.id || message.seq >= last.seq;
    const updated: Contact = {
      ...contact,
      unread: countIt ? contact.unread + 1 : contact.unread,
      last_message: newerPreview ? (last && last.id === message.id ? mergeMessage(last, message) : message) : last,
    };
    next = { ...next, contacts: { ...next.contacts, [peer]: updated } };
  }
  // A message from someone ends their typing indicator.
  if (isNew && !message.outgoing && message.sender in next.typing) {
    next = { ...next, typing: applyTyping(next.typing, message.sender, false, 0) };
  }
  return next;
}

/**
 * One of our messages moved forward in delivery. Only a message we hold changes (one we do not
 * hold comes with its state when its page is fetched), and its state never goes back.
 */
function applyMessageState(state: State, peer: UserId, id: string, delivery: DeliveryState): State {
  const conv = state.conversations[peer];
  const held = conv?.messages.find((m) => m.id === id);
  if (!conv || !held || laterState(held.state, delivery) === held.state) return state;
  const moved: Message = { ...held, state: laterState(held.state, delivery) };
  let next = withConversation(state, peer, (c) => ({
    ...c,
    messages: c.messages.map((m) => (m.id === id ? moved : m)),
  }));
  const contact = next.contacts[peer];
  if (contact?.last_message?.id === id) {
    next = { ...next, contacts: { ...next.contacts, [peer]: { ...contact, last_message: mergeMessage(contact.last_message, moved) } } };
  }
  return next;
}

function applyEvent(state: State, event: ApiEvent, now: number): State {
  switch (event.type) {
    case "status":
      return { ...state, node: event.state };
    case "signaling":
      return {
        ...state,
        signaling: { ...state.signaling, state: event.state, retryInMs: event.retry_in_ms },
        signalingEpoch: state.signalingEpoch + 1,
      };
    case "message":
      return applyMessage(state, event.message, true);
    case "message_updated":
      return applyMessage(state, event.message, false);
    case "message_state":
      return applyMessageState(state, event.conversation, event.id, event.state);
    case "typing": {
      // Typing in a space channel (`channel` set, docs/api.md) is kept apart from the direct
      // conversation with the same person, under "<channel>/<user>".
      const channel = (event as { channel?: unknown }).channel;
      const key = typeof channel === "string" && channel ? channelTypingKey(channel, event.user_id) : event.user_id;
      return { ...state, typing: applyTyping(state.typing, key, event.active, now) };
    }
    case "presence": {
      let next = state;
      if (state.me && event.user_id === state.me.user_id) next = { ...next, me: { ...state.me, status: event.presence } };
      const c = next.contacts[event.user_id];
      if (c) next = { ...next, contacts: { ...next.contacts, [c.user_id]: { ...c, presence: event.presence } } };
      return next;
    }
    case "contact":
      return upsertContact(state, event.contact);
    case "connection": {
      const c = state.contacts[event.user_id];
      if (!c) return state;
      return { ...state, contacts: { ...state.contacts, [c.user_id]: { ...c, connection: event.connection } } };
    }
    case "verification":
      return { ...state, verifications: { ...state.verifications, [event.user_id]: event.verification } };
    case "profile": {
      // A contact's new profile card (nodes before profiles never send one).
      const c = state.contacts[event.user_id];
      if (!c) return state;
      return { ...state, contacts: { ...state.contacts, [c.user_id]: { ...c, profile: event.profile } } };
    }
    case "contact_removed":
      return removeContact(state, event.user_id);
    case "session_reset": {
      const name = state.contacts[event.user_id]?.display_name ?? "a contact";
      const resent = event.resent > 0 ? ` ${event.resent} message${event.resent === 1 ? " was" : "s were"} sent again.` : "";
      return addNotice(state, `The secure session with ${name} was renewed.${resent}`, "info");
    }
    default:
      // Newer nodes may send event types this UI does not know (e.g. "lagged" before a disconnect).
      return state;
  }
}

function removeContact(state: State, userId: UserId): State {
  if (!(userId in state.contacts)) return state;
  const contacts = { ...state.contacts };
  delete contacts[userId];
  return { ...state, contacts, active: state.active === userId ? null : state.active };
}

function addNotice(state: State, text: string, tone: Notice["tone"]): State {
  const notice = { id: state.nextNoticeId, text, tone };
  // Keep only a few; old ones are dismissed automatically by the view as well.
  return { ...state, notices: [...state.notices.slice(-3), notice], nextNoticeId: state.nextNoticeId + 1 };
}

export function reducer(state: State, action: Action): State {
  switch (action.type) {
    case "event":
      return applyEvent(state, action.event, action.now);
    case "socket":
      return { ...state, socket: action.state };
    case "status":
      return {
        ...state,
        node: action.status.state,
        version: action.status.version,
        displayName: action.status.display_name ?? state.displayName,
        signaling:
          action.epoch !== undefined && action.epoch !== state.signalingEpoch
            ? { ...state.signaling, url: action.status.signaling?.url ?? state.signaling.url }
            : { state: action.status.signaling?.state ?? "disconnected", url: action.status.signaling?.url ?? "" },
      };
    case "unauthorized":
      return { ...state, node: "unauthorized" };
    case "me":
      return { ...state, me: action.me };
    case "contacts": {
      const contacts: Record<UserId, Contact> = {};
      for (const raw of action.contacts) {
        const c = named(raw);
        contacts[c.user_id] = lookingAtNewest(state, c.user_id) ? { ...c, unread: 0 } : c;
      }
      return { ...state, contacts };
    }
    case "contact":
      return upsertContact(state, action.contact);
    case "page":
      return withConversation(state, action.userId, (c) =>
        mergePage(c, { messages: (action.page.messages ?? []).map(normalizeMessage), has_more: !!action.page.has_more }, action.older),
      );
    case "loading_older":
      return withConversation(state, action.userId, (c) => ({ ...c, loadingOlder: action.loading }));
    case "open": {
      // Unread counts stay until the messages have been on screen (`seen`). A long history is
      // opened at its newest KEEP_LOADED messages.
      const next = { ...state, active: action.userId, atBottom: true };
      return action.userId && state.conversations[action.userId]
        ? withConversation(next, action.userId, (c) => trimConversation(c, KEEP_LOADED))
        : next;
    }
    case "visible":
      return { ...state, visible: action.visible };
    case "seen": {
      const c = state.contacts[action.userId];
      // Seeing can only lower the count (what the view counts below may include older, read ones).
      const unread = Math.max(0, Math.min(c?.unread ?? 0, action.unread));
      if (!c || c.unread === unread) return state;
      return { ...state, contacts: { ...state.contacts, [c.user_id]: { ...c, unread } } };
    }
    case "at_bottom":
      return state.atBottom === action.atBottom ? state : { ...state, atBottom: action.atBottom };
    case "remove_contact":
      return removeContact(state, action.userId);
    case "local_send":
      return withConversation(state, action.message.conversation, (c) => ({
        ...c,
        messages: [...c.messages, action.message],
      }));
    case "sent": {
      const peer = action.message.conversation;
      const without = withConversation(state, peer, (c) => ({
        ...c,
        messages: c.messages.filter((m) => m.id !== action.localId),
      }));
      return applyMessage(without, action.message, true);
    }
    case "send_failed": {
      const next: State = { ...state, conversations: { ...state.conversations } };
      for (const [peer, conv] of Object.entries(state.conversations)) {
        if (conv.messages.some((m) => m.id === action.localId)) {
          next.conversations[peer] = {
            ...conv,
            messages: conv.messages.map((m) => (m.id === action.localId ? { ...m, state: "failed" as const } : m)),
          };
        }
      }
      return next;
    }
    case "discard_local": {
      const next: State = { ...state, conversations: { ...state.conversations } };
      for (const [peer, conv] of Object.entries(state.conversations)) {
        if (conv.messages.some((m) => m.id === action.localId)) {
          next.conversations[peer] = { ...conv, messages: conv.messages.filter((m) => m.id !== action.localId) };
        }
      }
      return next;
    }
    case "message":
      return applyMessage(state, action.message, false);
    case "settings":
      return { ...state, settings: action.settings };
    case "tick": {
      const typing = expireTyping(state.typing, action.now);
      return typing === state.typing ? state : { ...state, typing };
    }
    case "notice":
      return addNotice(state, action.text, action.tone ?? "error");
    case "dismiss":
      return { ...state, notices: state.notices.filter((n) => n.id !== action.id) };
  }
}

/** Accepted contacts first (most recent conversation first, then by name); requests come separately. */
export function sortedContacts(contacts: Record<UserId, Contact>): {
  friends: Contact[];
  incoming: Contact[];
  outgoing: Contact[];
} {
  const all = Object.values(contacts);
  const byName = (a: Contact, b: Contact) => a.display_name.localeCompare(b.display_name) || a.user_id.localeCompare(b.user_id);
  const friends = all
    .filter((c) => c.state === "accepted")
    .sort((a, b) => (b.last_message?.sent_at ?? 0) - (a.last_message?.sent_at ?? 0) || byName(a, b));
  return {
    friends,
    incoming: all.filter((c) => c.state === "incoming_request").sort(byName),
    outgoing: all.filter((c) => c.state === "outgoing_request").sort(byName),
  };
}

export type Banner = { tone: "warn" | "error"; text: string } | null;

/** What the connection banner says, from the events socket's own state and the node's signaling state. */
export function bannerFor(socket: SocketState, signaling: State["signaling"]): Banner {
  if (socket === "connecting") return { tone: "warn", text: "Connecting to your node…" };
  if (socket === "reconnecting") return { tone: "error", text: "Lost contact with your node. Reconnecting…" };
  switch (signaling.state) {
    case "connected":
      return null;
    case "connecting":
    case "authenticating":
      return { tone: "warn", text: "Connecting to the signaling server…" };
    case "disconnected": {
      const secs = signaling.retryInMs !== undefined ? Math.max(1, Math.round(signaling.retryInMs / 1000)) : null;
      return {
        tone: "error",
        text: `Offline: the signaling server is unreachable${secs ? `; retrying in ${secs} s` : ""}. Messages wait in the outbox.`,
      };
    }
  }
}
