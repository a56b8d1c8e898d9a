// Fills in fields a node may leave out (empty lists, nulls), so one omission in a JSON answer
// cannot crash a view. The contract (docs/api.md) stays the reference for what should be sent.
import type { Connection, Contact, Message } from "../api/types";

const NO_CONNECTION: Connection = {
  mode: "none",
  state: "new",
  local_candidate: null,
  remote_candidate: null,
  rtt_ms: null,
  reason: null,
  traffic: null,
};

export function normalizeMessage(m: Message): Message {
  return {
    ...m,
    body: m.body ?? null,
    reply_to: m.reply_to ?? null,
    received_at: m.received_at ?? null,
    edited_at: m.edited_at ?? null,
    deleted: m.deleted ?? false,
    outgoing: m.outgoing ?? false,
    state: m.state ?? "sent",
    reactions: Array.isArray(m.reactions) ? m.reactions : [],
  };
}

export function normalizeContact(c: Contact): Contact {
  return {
    ...c,
    display_name: c.display_name ?? "",
    verified: c.verified ?? false,
    blocked: c.blocked ?? false,
    presence: c.presence ?? "offline",
    unread: typeof c.unread === "number" ? c.unread : 0,
    note: c.note ?? null,
    connection: c.connection ? { ...NO_CONNECTION, ...c.connection } : NO_CONNECTION,
    last_message: c.last_message ? normalizeMessage(c.last_message) : null,
  };
}
