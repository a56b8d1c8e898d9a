// The store: one reducer (lib/state.ts) plus the few effects that feed it (REST, events socket,
// visibility, a clock tick for typing expiry). Components read state and call `actions`.
import { createContext, useContext, useEffect, useMemo, useReducer, useRef, type ReactNode } from "react";
import { api, ApiError, eventsUrl } from "../api/client";
import { EventSocket } from "../api/events";
import type { ApiEvent, Contact, ContactPatch, Message, Presence, ProfilePatch, Settings, UserId } from "../api/types";
import { conversationOf, initialState, LOCAL_PREFIX, reducer, type Action, type State } from "../lib/state";

export interface Actions {
  refresh(): Promise<void>;
  createIdentity(name: string, passphrase: string): Promise<void>;
  unlock(passphrase: string): Promise<void>;
  setStatus(p: Presence): Promise<void>;
  addContact(userId: UserId, name?: string): Promise<void>;
  accept(userId: UserId): Promise<void>;
  decline(userId: UserId): Promise<void>;
  open(userId: UserId | null): void;
  loadOlder(userId: UserId): Promise<void>;
  send(userId: UserId, body: string, replyTo: string | null): Promise<void>;
  /** Sends a failed optimistic message again (it is replaced by a fresh attempt). */
  retry(m: Message): Promise<void>;
  discard(localId: string): void;
  edit(id: string, body: string): Promise<void>;
  remove(id: string): Promise<void>;
  toggleReaction(m: Message, emoji: string): Promise<void>;
  typing(userId: UserId, active: boolean): void;
  /** Tells the node the reader has seen `upTo` (a read receipt goes out if enabled). */
  markRead(userId: UserId, upTo: Message): void;
  /** Rename, block or unblock, mark verified. */
  patchContact(userId: UserId, patch: ContactPatch): Promise<Contact | null>;
  /** Removes a contact (`DELETE /contacts/{id}`). */
  removeContact(userId: UserId): Promise<void>;
  /** Changes our own profile (`PUT /me/profile`). */
  saveProfile(patch: ProfilePatch): Promise<void>;
  saveSettings(s: Partial<Settings>): Promise<void>;
  setVerified(userId: UserId, verified: boolean): Promise<void>;
  notify(text: string, tone?: "info" | "error"): void;
}

interface Store {
  state: State;
  dispatch: (a: Action) => void;
  actions: Actions;
  /** Listens to every live event after the reducer applied it (notifications use it). */
  subscribe(listener: (e: ApiEvent) => void): () => void;
}

const StoreContext = createContext<Store | null>(null);

export function useStore(): Store {
  const s = useContext(StoreContext);
  if (!s) throw new Error("useStore outside StoreProvider");
  return s;
}

/** A readable sentence for any failure; the node's message is already safe to show. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === "network") return "Cannot reach your node. Is discordopus still running?";
    if (e.code === "offline") return "The signaling server is unreachable; try again when you are back online.";
    return e.message;
  }
  return "Something went wrong.";
}

export function applyTheme(theme: "dark" | "light"): void {
  document.documentElement.dataset.theme = theme;
  try {
    localStorage.setItem("dopus-theme", theme);
  } catch {
    // Storage may be disabled; the theme still applies for this page.
  }
}

export function StoreProvider({ children }: { children: ReactNode }) {
  const [state, dispatch] = useReducer(reducer, initialState);
  const ref = useRef(state);
  ref.current = state;
  const readSent = useRef<Record<UserId, number>>({});
  const listeners = useRef(new Set<(e: ApiEvent) => void>());
  const socketRef = useRef<EventSocket | null>(null);
  const localCounter = useRef(0);

  const actions = useMemo<Actions>(() => {
    const fail = (e: unknown) => {
      if (e instanceof ApiError && e.code === "unauthorized") dispatch({ type: "unauthorized" });
      else dispatch({ type: "notice", text: describeError(e) });
    };

    const loadLatest = async (userId: UserId) => {
      const page = await api.messages(userId);
      dispatch({ type: "page", userId, page, older: false });
    };

    const loadReady = async () => {
      const [me, contacts, settings] = await Promise.all([api.me(), api.contacts(), api.settings()]);
      dispatch({ type: "me", me });
      dispatch({ type: "contacts", contacts });
      dispatch({ type: "settings", settings });
      applyTheme(settings.theme);
      const active = ref.current.active;
      if (active) await loadLatest(active);
    };

    const a: Actions = {
      async refresh() {
        try {
          const epoch = ref.current.signalingEpoch;
          const status = await api.status();
          dispatch({ type: "status", status, epoch });
          if (status.state === "ready") {
            socketRef.current?.reconnectNow();
            await loadReady();
          }
        } catch (e) {
          fail(e);
        }
      },
      async createIdentity(name, passphrase) {
        const me = await api.createIdentity(name, passphrase);
        dispatch({ type: "me", me });
        await a.refresh();
      },
      async unlock(passphrase) {
        const me = await api.unlock(passphrase);
        dispatch({ type: "me", me });
        await a.refresh();
      },
      async setStatus(p) {
        try {
          dispatch({ type: "me", me: await api.setStatus(p) });
        } catch (e) {
          fail(e);
        }
      },
      async addContact(userId, name) {
        // Errors propagate: the add form shows them next to the field (e.g. invalid_user_id).
        // `/request` is what asks them (the CLI's `contacts request` uses it alone); a node that
        // wants the contact to exist locally first answers 404, so add it and ask again.
        try {
          dispatch({ type: "contact", contact: await api.requestContact(userId, name) });
        } catch (e) {
          if (!(e instanceof ApiError && e.code === "not_found")) throw e;
          dispatch({ type: "contact", contact: await api.addContact(userId, name) });
          dispatch({ type: "contact", contact: await api.requestContact(userId, name) });
        }
      },
      async accept(userId) {
        try {
          dispatch({ type: "contact", contact: await api.accept(userId) });
        } catch (e) {
          fail(e);
        }
      },
      async decline(userId) {
        try {
          dispatch({ type: "contact", contact: await api.decline(userId) });
        } catch (e) {
          fail(e);
        }
      },
      open(userId) {
        dispatch({ type: "open", userId });
        if (userId && !conversationOf(ref.current, userId).loaded) {
          loadLatest(userId).catch(fail);
        }
      },
      async loadOlder(userId) {
        const conv = conversationOf(ref.current, userId);
        if (conv.loadingOlder || !conv.hasMore) return;
        const oldest = conv.messages.find((m) => !m.id.startsWith(LOCAL_PREFIX));
        dispatch({ type: "loading_older", userId, loading: true });
        try {
          const page = await api.messages(userId, oldest?.seq);
          dispatch({ type: "page", userId, page, older: true });
        } catch (e) {
          dispatch({ type: "loading_older", userId, loading: false });
          fail(e);
        }
      },
      async send(userId, body, replyTo) {
        const me = ref.current.me;
        const localId = `${LOCAL_PREFIX}${Date.now()}-${localCounter.current++}`;
        const now = Date.now();
        dispatch({
          type: "local_send",
          message: {
            id: localId,
            conversation: userId,
            sender: me?.user_id ?? "",
            outgoing: true,
            kind: "text",
            body,
            reply_to: replyTo,
            sent_at: now,
            received_at: null,
            edited_at: null,
            deleted: false,
            state: "pending",
            reactions: [],
            seq: Number.MAX_SAFE_INTEGER,
          },
        });
        try {
          const message = await api.send(userId, body, replyTo);
          dispatch({ type: "sent", localId, message });
        } catch (e) {
          dispatch({ type: "send_failed", localId });
          fail(e);
        }
      },
      async retry(m) {
        dispatch({ type: "discard_local", localId: m.id });
        await a.send(m.conversation, m.body ?? "", m.reply_to);
      },
      discard(localId) {
        dispatch({ type: "discard_local", localId });
      },
      async edit(id, body) {
        try {
          dispatch({ type: "message", message: await api.edit(id, body) });
        } catch (e) {
          fail(e);
        }
      },
      async remove(id) {
        try {
          dispatch({ type: "message", message: await api.remove(id) });
        } catch (e) {
          fail(e);
        }
      },
      async toggleReaction(m, emoji) {
        const mine = m.reactions.some((r) => r.emoji === emoji && r.mine);
        try {
          const message = mine ? await api.unreact(m.id, emoji) : await api.react(m.id, emoji);
          dispatch({ type: "message", message });
        } catch (e) {
          fail(e);
        }
      },
      typing(userId, active) {
        // Best effort: a lost typing notice is harmless, and an error toast per keystroke is not.
        api.typing(userId, active).catch(() => undefined);
      },
      markRead(userId, upTo) {
        // Only forward: a receipt for an older message than one already sent says nothing new.
        const sent = readSent.current[userId];
        if (sent !== undefined && sent >= upTo.seq) return;
        readSent.current[userId] = upTo.seq;
        api.read(userId, upTo.id).catch(() => {
          if (readSent.current[userId] === upTo.seq) delete readSent.current[userId];
        });
      },
      async patchContact(userId, patch) {
        try {
          const contact = await api.patchContact(userId, patch);
          dispatch({ type: "contact", contact });
          return contact;
        } catch (e) {
          fail(e);
          return null;
        }
      },
      async removeContact(userId) {
        await api.removeContact(userId);
        dispatch({ type: "remove_contact", userId });
      },
      async saveProfile(patch) {
        dispatch({ type: "me", me: await api.putProfile(patch) });
      },
      async saveSettings(s) {
        const settings = await api.putSettings(s);
        dispatch({ type: "settings", settings });
        applyTheme(settings.theme);
      },
      async setVerified(userId, verified) {
        await a.patchContact(userId, { verified });
      },
      notify(text, tone = "error") {
        dispatch({ type: "notice", text, tone });
      },
    };
    return a;
  }, []);

  // The events socket lives as long as the page; each (re)open refetches state (no replay).
  useEffect(() => {
    const socket = new EventSocket(eventsUrl(window.location), {
      onEvent: (event) => {
        dispatch({ type: "event", event, now: Date.now() });
        for (const l of listeners.current) l(event);
        if (event.type === "status" && event.state === "ready") void actions.refresh();
      },
      onOpen: () => void actions.refresh(),
      onState: (s) => dispatch({ type: "socket", state: s }),
    });
    socketRef.current = socket;
    void actions.refresh();
    socket.start();
    return () => {
      socketRef.current = null;
      socket.stop();
    };
  }, [actions]);

  useEffect(() => {
    const update = () => dispatch({ type: "visible", visible: document.visibilityState === "visible" });
    document.addEventListener("visibilitychange", update);
    return () => document.removeEventListener("visibilitychange", update);
  }, []);

  // Typing indicators expire on the clock, not only on events.
  useEffect(() => {
    const id = setInterval(() => dispatch({ type: "tick", now: Date.now() }), 1000);
    return () => clearInterval(id);
  }, []);

  const subscribe = useMemo(
    () => (l: (e: ApiEvent) => void) => {
      listeners.current.add(l);
      return () => void listeners.current.delete(l);
    },
    [],
  );
  const store = useMemo(() => ({ state, dispatch, actions, subscribe }), [state, actions, subscribe]);
  return <StoreContext.Provider value={store}>{children}</StoreContext.Provider>;
}
