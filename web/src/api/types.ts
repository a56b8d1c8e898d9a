// The node's local API (docs/api.md, v1). These types mirror the contract; keep them in step with it.

export type UserId = string;
export type MessageId = string;
export type Timestamp = number;
export type Presence = "online" | "away" | "busy" | "invisible" | "offline";
export type DeliveryState = "pending" | "sent" | "delivered" | "read" | "failed";
export type NodeState = "no_identity" | "locked" | "ready";
export type SignalingState = "disconnected" | "connecting" | "authenticating" | "connected";
export type ContactState = "accepted" | "outgoing_request" | "incoming_request" | "declined";
export type CandidateType = "host" | "srflx" | "prflx" | "relay";

export interface Connection {
  mode: "direct" | "relayed" | "mailbox" | "none";
  state: "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed";
  // The node sends null for "not known" as well as leaving fields out.
  local_candidate?: CandidateType | null;
  remote_candidate?: CandidateType | null;
  rtt_ms?: number | null;
  reason?: string | null;
}

export interface Reaction {
  emoji: string;
  count: number;
  mine: boolean;
  users: UserId[];
}

export interface Message {
  id: MessageId;
  conversation: UserId;
  sender: UserId;
  outgoing: boolean;
  kind: "text";
  body: string | null;
  reply_to: MessageId | null;
  sent_at: Timestamp;
  received_at: Timestamp | null;
  edited_at: Timestamp | null;
  deleted: boolean;
  state: DeliveryState;
  reactions: Reaction[];
  seq: number;
}

export interface Contact {
  user_id: UserId;
  display_name: string;
  state: ContactState;
  verified: boolean;
  blocked: boolean;
  presence: Presence;
  unread: number;
  last_message?: Message;
  connection: Connection;
}

export interface Status {
  state: NodeState;
  user_id?: UserId;
  display_name?: string;
  device_id?: string;
  signaling: { url: string; state: SignalingState };
  version: string;
}

export interface Me {
  user_id: UserId;
  display_name: string;
  device_id: string;
  device_keys: { ed25519: string; curve25519: string };
  fingerprint: string;
  status: Presence;
}

export interface Settings {
  server_url: string;
  ice_servers: string[];
  read_receipts: boolean;
  theme: "dark" | "light";
}

export interface MessagePage {
  messages: Message[];
  has_more: boolean;
}

export interface SearchResult {
  message: Message;
  snippet: string;
  /** The snippet with matches wrapped in U+0002 … U+0003 (optional here: older nodes lack it). */
  highlighted?: string;
}

export interface Safety {
  safety_number: string;
  verified: boolean;
}

export type ApiEvent =
  | { type: "status"; state: NodeState }
  | { type: "signaling"; state: SignalingState; retry_in_ms?: number }
  | { type: "message"; message: Message }
  | { type: "message_updated"; message: Message }
  | { type: "message_state"; id: string; conversation: UserId; state: DeliveryState }
  | { type: "typing"; user_id: UserId; active: boolean }
  | { type: "presence"; user_id: UserId; presence: Presence }
  | { type: "contact"; contact: Contact }
  | { type: "connection"; user_id: UserId; connection: Connection }
  | { type: "session_reset"; user_id: UserId; resent: number }
  // Handled by the SAS panel's own polling and by refetch-on-reconnect; the reducer ignores them.
  | { type: "verification"; user_id: UserId; verification: unknown }
  | { type: "lagged"; missed: number };

export type ErrorCode =
  | "bad_request"
  | "invalid_user_id"
  | "unauthorized"
  | "wrong_passphrase"
  | "bad_host"
  | "not_found"
  | "conflict"
  | "locked"
  | "too_large"
  | "not_allowed"
  | "offline"
  | "store"
  | "internal";
