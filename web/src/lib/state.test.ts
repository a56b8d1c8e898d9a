import { describe, expect, it } from "vitest";
import type { ApiEvent, Contact, Message } from "../api/types";
import { bannerFor, channelTypingKey, initialState, KEEP_LOADED, mergePage, reducer, sortedContacts, type Action, type State } from "./state";
import { ALICE, BOB, contact, msg, userId } from "./testutil";

function run(state: State, ...actions: Action[]): State {
  return actions.reduce(reducer, state);
}
const ev = (event: ApiEvent, now = 0): Action => ({ type: "event", event, now });

const withBob = run(initialState, { type: "contacts", contacts: [contact({ user_id: BOB })] });

describe("message events", () => {
  it("counts unread for a conversation that is not open, once per message", () => {
    const m = msg({ id: "m1", seq: 1 });
    const s = run(withBob, ev({ type: "message", message: m }), ev({ type: "message", message: m }));
    expect(s.contacts[BOB]!.unread).toBe(1);
    expect(s.contacts[BOB]!.last_message?.id).toBe("m1");
    expect(s.conversations[BOB]!.messages).toHaveLength(1);
  });

  it("does not count messages the reader sees arrive; counts them while hidden or scrolled up", () => {
    const open = run(withBob, { type: "open", userId: BOB });
    const s = run(open, ev({ type: "message", message: msg({ id: "m1", seq: 1 }) }));
    expect(s.contacts[BOB]!.unread).toBe(0);
    const hidden = run(s, { type: "visible", visible: false }, ev({ type: "message", message: msg({ id: "m2", seq: 2 }) }));
    expect(hidden.contacts[BOB]!.unread).toBe(1);
    // Coming back does not mark anything read: only having been on screen does.
    const back = run(hidden, { type: "visible", visible: true });
    expect(back.contacts[BOB]!.unread).toBe(1);
    expect(run(back, { type: "seen", userId: BOB, unread: 0 }).contacts[BOB]!.unread).toBe(0);
    const scrolledUp = run(back, { type: "at_bottom", atBottom: false }, ev({ type: "message", message: msg({ id: "m3", seq: 3 }) }));
    expect(scrolledUp.contacts[BOB]!.unread).toBe(2);
  });

  it("opening a conversation keeps its unread count until seen", () => {
    const s = run(initialState, { type: "contacts", contacts: [contact({ user_id: BOB, unread: 4 })] }, { type: "open", userId: BOB });
    expect(s.contacts[BOB]!.unread).toBe(4);
    expect(run(s, { type: "seen", userId: BOB, unread: 1 }).contacts[BOB]!.unread).toBe(1);
  });

  it("bounds what a long conversation keeps loaded", () => {
    let s = withBob;
    for (let i = 1; i <= 700; i++) s = run(s, ev({ type: "message", message: msg({ id: `b${i}`, seq: i }) }));
    // In the background: a bounded tail, the rest is fetched again on demand.
    expect(s.conversations[BOB]!.messages.length).toBeLessThanOrEqual(2 * KEEP_LOADED);
    expect(s.conversations[BOB]!.messages.at(-1)?.id).toBe("b700");
    const opened = run(s, { type: "open", userId: BOB });
    expect(opened.conversations[BOB]!.messages).toHaveLength(KEEP_LOADED);
    expect(opened.conversations[BOB]!.hasMore).toBe(true);
    expect(opened.contacts[BOB]!.unread).toBe(700);
  });

  it("keeps the latest verification per contact and removes contacts", () => {
    const v = { state: "compare" as const, txn: "t", emoji: null, decimals: null, cancel_code: null, cancelled_by_us: null };
    const s = run(withBob, ev({ type: "verification", user_id: BOB, verification: v }));
    expect(s.verifications[BOB]?.state).toBe("compare");
    const opened = run(s, { type: "open", userId: BOB }, ev({ type: "contact_removed", user_id: BOB }));
    expect(opened.contacts[BOB]).toBeUndefined();
    expect(opened.active).toBeNull();
  });

  it("does not count own or updated messages", () => {
    const s = run(
      withBob,
      ev({ type: "message", message: msg({ id: "o", seq: 1, outgoing: true, sender: ALICE }) }),
      ev({ type: "message_updated", message: msg({ id: "u", seq: 2 }) }),
    );
    expect(s.contacts[BOB]!.unread).toBe(0);
  });

  it("applies edits, deletions and reactions in place", () => {
    const m = msg({ id: "m1", seq: 1 });
    const s = run(
      withBob,
      ev({ type: "message", message: m }),
      ev({ type: "message_updated", message: { ...m, body: "edited", edited_at: 9 } }),
      ev({ type: "message_updated", message: { ...m, reactions: [{ emoji: "👍", count: 1, mine: true, users: [ALICE] }] } }),
    );
    const got = s.conversations[BOB]!.messages[0]!;
    expect(got.reactions[0]!.emoji).toBe("👍");
    const del = run(s, ev({ type: "message_updated", message: { ...m, deleted: true, body: null } }));
    expect(del.conversations[BOB]!.messages[0]!.deleted).toBe(true);
  });

  it("replaces an optimistic message with the node's answer, event first or answer first", () => {
    const local = msg({ id: "local-1", seq: Number.MAX_SAFE_INTEGER, outgoing: true, sender: ALICE, state: "pending" });
    const real = msg({ id: "r1", seq: 7, outgoing: true, sender: ALICE, state: "pending" });
    const delivered = { ...real, state: "delivered" as const };
    const a = run(withBob, { type: "local_send", message: local }, ev({ type: "message_updated", message: delivered }), {
      type: "sent",
      localId: "local-1",
      message: real,
    });
    expect(a.conversations[BOB]!.messages.map((m) => [m.id, m.state])).toEqual([["r1", "delivered"]]);
    const b = run(withBob, { type: "local_send", message: local }, { type: "send_failed", localId: "local-1" });
    expect(b.conversations[BOB]!.messages[0]!.state).toBe("failed");
  });

  it("moves a held message forward on message_state, never back, and ignores unknown ones", () => {
    const real = msg({ id: "r1", seq: 7, outgoing: true, sender: ALICE, state: "pending" });
    const state = (id: string, s: "sent" | "delivered" | "read") =>
      ev({ type: "message_state", id, conversation: BOB, state: s });
    const s = run(withBob, ev({ type: "message", message: real }), state("r1", "sent"), state("r1", "delivered"));
    expect(s.conversations[BOB]!.messages[0]!.state).toBe("delivered");
    expect(s.contacts[BOB]!.last_message?.state).toBe("delivered");
    // A late "sent" does not undo "delivered"; an id we do not hold changes nothing.
    const late = run(s, state("r1", "sent"));
    expect(late.conversations[BOB]!.messages[0]!.state).toBe("delivered");
    expect(run(s, state("nope", "read"))).toBe(s);
    // The POST's answer arriving after the events keeps the later state.
    const answered = run(s, { type: "sent", localId: "x", message: real });
    expect(answered.conversations[BOB]!.messages.find((m) => m.id === "r1")!.state).toBe("delivered");
  });
});

describe("other events", () => {
  it("keeps typing in a space channel apart from the direct conversation", () => {
    const s = run(withBob, ev({ type: "typing", user_id: BOB, active: true, channel: "dchan1x" } as never, 1000));
    expect(BOB in s.typing).toBe(false);
    expect(channelTypingKey("dchan1x", BOB) in s.typing).toBe(true);
    expect(run(s, ev({ type: "typing", user_id: BOB, active: false, channel: "dchan1x" } as never, 1500)).typing).toEqual({});
  });
  it("expires typing on tick and ends it when the peer's message arrives", () => {
    const s = run(withBob, ev({ type: "typing", user_id: BOB, active: true }, 1000));
    expect(BOB in s.typing).toBe(true);
    expect(run(s, { type: "tick", now: 6999 }).typing).toBe(s.typing);
    expect(run(s, { type: "tick", now: 7000 }).typing).toEqual({});
    expect(run(s, ev({ type: "message", message: msg({ id: "m", seq: 1 }) })).typing).toEqual({});
  });

  it("updates presence of contacts and of me, connection, and contact requests", () => {
    const me = { user_id: ALICE, display_name: "Alice", device_id: "d", device_keys: { ed25519: "", curve25519: "" }, fingerprint: "", status: "online" as const };
    const carol = userId(3);
    const s = run(
      withBob,
      { type: "me", me },
      ev({ type: "presence", user_id: BOB, presence: "away" }),
      ev({ type: "presence", user_id: ALICE, presence: "busy" }),
      ev({ type: "connection", user_id: BOB, connection: { mode: "direct", state: "connected", rtt_ms: 3, local_candidate: "host", remote_candidate: "host", reason: null, traffic: null } }),
      ev({ type: "contact", contact: contact({ user_id: carol, display_name: "Carol", state: "incoming_request" }) }),
    );
    expect(s.contacts[BOB]!.presence).toBe("away");
    expect(s.me!.status).toBe("busy");
    expect(s.contacts[BOB]!.connection.rtt_ms).toBe(3);
    expect(sortedContacts(s.contacts).incoming.map((c) => c.display_name)).toEqual(["Carol"]);
    expect(sortedContacts(s.contacts).friends.map((c) => c.display_name)).toEqual(["Bob"]);
  });

  it("tracks signaling state and posts a notice on session reset", () => {
    const s = run(withBob, ev({ type: "signaling", state: "disconnected", retry_in_ms: 4000 }), ev({ type: "session_reset", user_id: BOB, resent: 2 }));
    expect(s.signaling).toMatchObject({ state: "disconnected", retryInMs: 4000 });
    expect(s.notices[0]!.text).toContain("Bob");
    expect(s.notices[0]!.text).toContain("2 messages");
  });
});

describe("mergePage", () => {
  const empty = { messages: [], hasMore: true, loaded: false, loadingOlder: false };
  it("extends history with older pages and records has_more", () => {
    const first = mergePage(empty, { messages: [msg({ id: "c", seq: 3 })], has_more: true }, false);
    const second = mergePage(first, { messages: [msg({ id: "a", seq: 1 }), msg({ id: "b", seq: 2 })], has_more: false }, true);
    expect(second.messages.map((m) => m.id)).toEqual(["a", "b", "c"]);
    expect(second.hasMore).toBe(false);
  });
  it("replaces the list when a refreshed latest page leaves a gap", () => {
    const held = mergePage(empty, { messages: [msg({ id: "a", seq: 1 })], has_more: false }, false);
    const gap = mergePage(held, { messages: [msg({ id: "x", seq: 100 })], has_more: true }, false);
    expect(gap.messages.map((m) => m.id)).toEqual(["x"]);
    expect(gap.hasMore).toBe(true);
    const touching = mergePage(held, { messages: [msg({ id: "a", seq: 1 }), msg({ id: "b", seq: 2 })], has_more: false }, false);
    expect(touching.messages.map((m) => m.id)).toEqual(["a", "b"]);
  });
});

describe("bannerFor", () => {
  it("prefers the socket state, then signaling", () => {
    expect(bannerFor("connecting", { state: "connected", url: "" })?.text).toMatch(/node/);
    expect(bannerFor("reconnecting", { state: "connected", url: "" })?.tone).toBe("error");
    expect(bannerFor("open", { state: "connected", url: "" })).toBeNull();
    expect(bannerFor("open", { state: "authenticating", url: "" })?.text).toMatch(/signaling/);
    expect(bannerFor("open", { state: "disconnected", url: "", retryInMs: 2500 })?.text).toMatch(/retrying in 3 s/);
  });
});

describe("contact names", () => {
  it("names a contact without a display name by its short ID", () => {
    const carol = userId(9);
    const s = run(initialState, ev({ type: "contact", contact: contact({ user_id: carol, display_name: "", state: "incoming_request" }) }));
    expect(s.contacts[carol]!.display_name).toBe(`${carol.slice(0, 10)}…${carol.slice(-4)}`);
  });
});

describe("robustness", () => {
  it("ignores event types it does not know", () => {
    const unknown = { type: "lagged", missed: 3 } as unknown as ApiEvent;
    expect(run(withBob, ev(unknown))).toBe(withBob);
  });
});

describe("normalisation", () => {
  it("survives a node that omits empty fields", () => {
    const bare = { id: "m1", conversation: BOB, sender: BOB, kind: "text", body: "hi", sent_at: 1, seq: 1 } as unknown as Message;
    const s = run(withBob, ev({ type: "message", message: bare }));
    const m = s.conversations[BOB]!.messages[0]!;
    expect(m.reactions).toEqual([]);
    expect(m.reply_to).toBeNull();
    expect(m.deleted).toBe(false);
    const c = run(initialState, { type: "contacts", contacts: [{ user_id: BOB, display_name: "Bob", state: "accepted" } as unknown as Contact] });
    expect(c.contacts[BOB]!.connection).toMatchObject({ mode: "none", state: "new", rtt_ms: null });
    expect(c.contacts[BOB]!.unread).toBe(0);
  });
});

describe("contact events", () => {
  it("keep live fields the event leaves out", () => {
    const s0 = run(initialState, { type: "contacts", contacts: [contact({ user_id: BOB, presence: "away", unread: 2 })] });
    const partial = { user_id: BOB, display_name: "Bobby", state: "accepted", verified: true, blocked: false } as unknown as Contact;
    const s = run(s0, ev({ type: "contact", contact: partial }));
    expect(s.contacts[BOB]).toMatchObject({ display_name: "Bobby", verified: true, presence: "away", unread: 2 });
  });
});

describe("status vs signaling events", () => {
  const status = (state: "connecting" | "connected") => ({
    state: "ready" as const,
    signaling: { url: "ws://x", state },
    version: "1",
  });
  it("a /status answer older than a signaling event does not overwrite it", () => {
    const asked = initialState.signalingEpoch;
    const s = run(initialState, ev({ type: "signaling", state: "connected" }), { type: "status", status: status("connecting"), epoch: asked });
    expect(s.signaling.state).toBe("connected");
  });
  it("a /status answer asked after the last event applies", () => {
    const s1 = run(initialState, ev({ type: "signaling", state: "connecting" }));
    const s = run(s1, { type: "status", status: status("connected"), epoch: s1.signalingEpoch });
    expect(s.signaling.state).toBe("connected");
  });
});

describe("failed sends", () => {
  it("can be discarded", () => {
    const local = msg({ id: "local-9", seq: Number.MAX_SAFE_INTEGER, outgoing: true, sender: ALICE, state: "pending" });
    const failed = run(withBob, { type: "local_send", message: local }, { type: "send_failed", localId: "local-9" });
    expect(failed.conversations[BOB]!.messages).toHaveLength(1);
    expect(run(failed, { type: "discard_local", localId: "local-9" }).conversations[BOB]!.messages).toHaveLength(0);
  });
});
