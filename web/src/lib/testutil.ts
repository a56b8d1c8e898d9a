// Builders for unit tests: realistic IDs and messages without a node.
import type { Contact, Message } from "../api/types";
import { encodeUserId } from "./userId";

export function userId(seed: number): string {
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = (seed * 31 + i * 7) & 0xff;
  return encodeUserId(bytes);
}

export const ALICE = userId(1);
export const BOB = userId(2);

export function msg(over: Partial<Message> & { id: string; seq: number }): Message {
  return {
    conversation: BOB,
    sender: BOB,
    outgoing: false,
    kind: "text",
    body: `message ${over.id}`,
    reply_to: null,
    sent_at: 1_700_000_000_000 + over.seq * 1000,
    received_at: null,
    edited_at: null,
    deleted: false,
    state: "delivered",
    reactions: [],
    ...over,
  };
}

export function contact(over: Partial<Contact> & { user_id: string }): Contact {
  return {
    display_name: "Bob",
    state: "accepted",
    verified: false,
    blocked: false,
    presence: "online",
    unread: 0,
    note: null,
    last_message: null,
    connection: { mode: "none", state: "new", local_candidate: null, remote_candidate: null, rtt_ms: null, reason: null, traffic: null },
    ...over,
  };
}
