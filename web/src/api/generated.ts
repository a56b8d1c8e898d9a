// GENERATED from the Rust DTOs in crates/dopus-node/src/api/dto/ by ts-rs. Do not edit.
// Change the Rust structs, then run ./scripts/gen-api-types.sh; a test fails while this file
// and the structs differ (docs/api.md, "Types").
/* eslint-disable */

/**
 * A user ID as the API writes it: `dopus1…` (bech32m of the identity key, lowercase; accepted
 * in any case).
 */
export type UserId = string;

/**
 * A message id: the UUIDv7 its sender chose, the same on every device.
 */
export type MessageId = string;

/**
 * Which conversation: the peer's user ID for a direct conversation, the channel's id for a
 * space channel (`dchan1…`).
 */
export type ConversationId = string;

/**
 * Milliseconds since the Unix epoch.
 */
export type Timestamp = number;

/**
 * Where the node stands.
 */
export type NodeState = "no_identity" | "locked" | "ready";

/**
 * The signaling client's state.
 */
export type SignalingState = "disconnected" | "connecting" | "authenticating" | "connected";

/**
 * The signaling part of [`Status`].
 */
export type StatusSignaling = { 
/**
 * The configured server; `null` when none is (or before unlocking).
 */
url: string | null, 
/**
 * The client's state.
 */
state: SignalingState, };

/**
 * `GET /status`: works before unlocking, so a UI can offer "create" or "unlock".
 */
export type Status = { 
/**
 * The node's phase.
 */
state: NodeState, 
/**
 * The node's version.
 */
version: string, 
/**
 * Our user ID (only once ready).
 */
user_id?: UserId, 
/**
 * Our display name (only once ready).
 */
display_name?: string, 
/**
 * This device's id (only once ready).
 */
device_id?: string, 
/**
 * The signaling connection.
 */
signaling: StatusSignaling, };

/**
 * A device's public keys, base64.
 */
export type DeviceKeys = { 
/**
 * Signs the device's one-time keys.
 */
ed25519: string, 
/**
 * The device's Olm identity key.
 */
curve25519: string, };

/**
 * `GET /me` (and the answer of `/identity`, `/unlock`, `PUT /me/status`).
 */
export type Me = { 
/**
 * Our user ID.
 */
user_id: UserId, 
/**
 * The name we show to others.
 */
display_name: string, 
/**
 * This device's id.
 */
device_id: string, 
/**
 * This device's public keys.
 */
device_keys: DeviceKeys, 
/**
 * A short hash of our identity key, in groups of five hex digits.
 */
fingerprint: string, 
/**
 * Our own status as we set it (`invisible` included).
 */
status: Presence, 
/**
 * Our profile as contacts see it; left out until we set one.
 */
profile?: ProfileCard, };

/**
 * The UI's theme.
 */
export type Theme = "dark" | "light";

/**
 * `GET|PUT /settings`.
 */
export type Settings = { 
/**
 * The signaling server; `null` when none is configured.
 */
server_url: string | null, 
/**
 * STUN/TURN URLs.
 */
ice_servers: Array<string>, 
/**
 * Send read receipts (off by default).
 */
read_receipts: boolean, 
/**
 * The UI's theme.
 */
theme: Theme, 
/**
 * Fetch link previews for links we send (off by default; a receiver never fetches).
 */
link_previews?: boolean, 
/**
 * Privacy mode: connect to contacts through the server's TURN relays only, so they never
 * learn this machine's IP address (off by default). Turning it on closes today's direct
 * connections; without a relay, messages go through the server.
 */
relay_only: boolean, 
/**
 * This run was started with `--relay-only`: relay-only is on whatever the setting says.
 */
relay_only_forced: boolean, };

/**
 * The stable machine-readable error codes (docs/api.md, "Errors").
 */
export type ErrorCode = "bad_request" | "invalid_user_id" | "unauthorized" | "wrong_passphrase" | "bad_host" | "not_found" | "conflict" | "locked" | "store" | "too_large" | "not_allowed" | "offline" | "internal";

/**
 * The inside of [`ErrorBody`].
 */
export type ErrorDetail = { 
/**
 * Stable code.
 */
code: ErrorCode, 
/**
 * A safe, human-readable sentence (no secrets, no addresses).
 */
message: string, };

/**
 * Every error answer: `{ "error": { "code", "message" } }`.
 */
export type ErrorBody = { 
/**
 * What went wrong.
 */
error: ErrorDetail, };

/**
 * A presence as the API names it. Others never see `invisible`: it reads as `offline`.
 */
export type Presence = "online" | "away" | "busy" | "invisible" | "offline";

/**
 * Where a contact relationship stands.
 */
export type ContactState = "accepted" | "outgoing_request" | "incoming_request" | "declined";

/**
 * How the next message to a contact would travel.
 */
export type ConnectionMode = "direct" | "relayed" | "mailbox" | "none";

/**
 * The WebRTC connection's state.
 */
export type ConnectionState = "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed";

/**
 * An ICE candidate type (RFC 8445).
 */
export type CandidateType = "host" | "srflx" | "prflx" | "relay";

/**
 * Counters of the current (or last) connection, as last read.
 */
export type Traffic = { 
/**
 * Data channel messages (envelopes) sent.
 */
messages_sent: number, 
/**
 * Data channel messages received.
 */
messages_received: number, 
/**
 * UDP payload bytes sent, all protocols.
 */
bytes_sent: number, 
/**
 * UDP payload bytes received.
 */
bytes_received: number, 
/**
 * How often a send found the send buffer full.
 */
send_waits: number, };

/**
 * How we reach a contact.
 *
 * Unified: today the node leaves `local_candidate`, `remote_candidate`, `rtt_ms` and `traffic`
 * out when it never tried a connection and writes `null` otherwise; this shape always writes
 * them (`null` when unknown).
 */
export type Connection = { 
/**
 * How the next message would travel.
 */
mode: ConnectionMode, 
/**
 * The WebRTC connection's state.
 */
state: ConnectionState, 
/**
 * Our side of the selected candidate pair.
 */
local_candidate: CandidateType | null, 
/**
 * Their side of the selected candidate pair.
 */
remote_candidate: CandidateType | null, 
/**
 * Round trip of the latest consent check, in milliseconds.
 */
rtt_ms: number | null, 
/**
 * Why there is no direct path, in words (safe to show: no addresses).
 */
reason: string | null, 
/**
 * Counters, once a connection was made.
 */
traffic: Traffic | null, };

/**
 * A contact, or someone who asked to be one (`GET /contacts`, the `contact` event, and the
 * answer of every contact operation).
 *
 * Unified: the runtime builds the record part in `json::contact` and adds the live fields in
 * `Ready::contact_json`, and the CLI's offline `contacts add`/`contacts list` wrote a smaller
 * shape (`display_name` null when unknown, no `note`, no live fields); the CLI now writes this
 * one too (presence `offline` and no connection, since no node runs). `display_name` is `""`
 * when unknown.
 */
export type Contact = { 
/**
 * Their user ID.
 */
user_id: UserId, 
/**
 * The name we show for them (ours, or the one they sent); `""` when unknown.
 */
display_name: string, 
/**
 * Where the relationship stands.
 */
state: ContactState, 
/**
 * We compared safety numbers or emoji with them.
 */
verified: boolean, 
/**
 * We refuse everything from them.
 */
blocked: boolean, 
/**
 * The note that came with their contact request.
 */
note: string | null, 
/**
 * Their presence (`offline` unless mutual contacts and online).
 */
presence: Presence, 
/**
 * Incoming messages after the last one we read.
 */
unread: number, 
/**
 * The newest message of the conversation.
 */
last_message: Message | null, 
/**
 * How the next message would travel.
 */
connection: Connection, 
/**
 * The newest profile card they sent us (avatar, status text); left out if none came.
 */
profile?: ProfileCard, };

/**
 * `GET /contacts/{id}/safety`.
 */
export type Safety = { 
/**
 * 12 groups of 5 digits, separated by spaces.
 */
safety_number: string, 
/**
 * Whether the contact is marked verified.
 */
verified: boolean, };

/**
 * Where an emoji verification stands.
 */
export type VerificationState = "none" | "waiting" | "compare" | "confirmed" | "verified" | "cancelled";

/**
 * One emoji of the short authentication string.
 */
export type SasEmoji = { 
/**
 * The emoji.
 */
symbol: string, 
/**
 * Its English name.
 */
name: string, };

/**
 * `GET|POST /contacts/{id}/verification…` and the `verification` event.
 *
 * Unified: with no verification the node writes only `{"state": "none"}` today; this shape
 * always writes every field (`null` when not known).
 */
export type Verification = { 
/**
 * Where it stands.
 */
state: VerificationState, 
/**
 * The transaction id.
 */
txn: string | null, 
/**
 * Seven emoji, identical on both sides unless someone is in the middle.
 */
emoji: Array<SasEmoji> | null, 
/**
 * The same check as three 4-digit numbers.
 */
decimals: Array<number> | null, 
/**
 * Why it was cancelled.
 */
cancel_code: string | null, 
/**
 * Whether we cancelled it.
 */
cancelled_by_us: boolean | null, };

/**
 * How far one of our messages has got. Moves forward only (`pending` → `sent` → `delivered` →
 * `read`); `failed` may replace `pending`.
 */
export type DeliveryState = "pending" | "sent" | "delivered" | "read" | "failed";

/**
 * What a message is.
 */
export type MessageKind = "text" | "file" | "system";

/**
 * The reactions with one emoji on one message.
 */
export type Reaction = { 
/**
 * The emoji (any Unicode emoji sequence).
 */
emoji: string, 
/**
 * How many users reacted with it.
 */
count: number, 
/**
 * Whether we are one of them.
 */
mine: boolean, 
/**
 * Who, in the order they reacted.
 */
users: Array<UserId>, };

/**
 * One message, with edits, deletion and reactions applied.
 */
export type Message = { 
/**
 * The sender's id for it.
 */
id: MessageId, 
/**
 * Where it lives (1:1: the peer's user ID).
 */
conversation: ConversationId, 
/**
 * Who wrote it.
 */
sender: UserId, 
/**
 * Whether we wrote it.
 */
outgoing: boolean, 
/**
 * What it is.
 */
kind: MessageKind, 
/**
 * Its text; `null` once deleted. Plain text in Discord's markdown flavour: never HTML.
 */
body: string | null, 
/**
 * The message it answers.
 */
reply_to: MessageId | null, 
/**
 * The sender's clock when sent.
 */
sent_at: Timestamp, 
/**
 * Our clock when it arrived; `null` for our own.
 */
received_at: Timestamp | null, 
/**
 * When the newest applied edit was made.
 */
edited_at: Timestamp | null, 
/**
 * Deleted by its sender (the row stays as a tombstone).
 */
deleted: boolean, 
/**
 * How far delivery has got (meaningful for outgoing messages).
 */
state: DeliveryState, 
/**
 * Local arrival number: the history cursor. The display order is `(sent_at, id)` (the
 * message id, the same on every device, breaks ties).
 */
seq: number, 
/**
 * Reactions, one line per emoji.
 */
reactions: Array<Reaction>, 
/**
 * The link preview the sender's node fetched and sent inside the encrypted message (only
 * when the sender turned previews on; a receiving node never fetches). Left out when none.
 */
preview?: LinkPreview, };

/**
 * `GET /conversations/{id}/messages`: a page of history, oldest first.
 */
export type MessagePage = { 
/**
 * The messages, oldest first.
 */
messages: Array<Message>, 
/**
 * Whether older messages exist before the first one.
 */
has_more: boolean, };

/**
 * `POST /conversations/{id}/messages/batch`: the stored messages, in request order.
 */
export type SentMessages = { 
/**
 * One per request item.
 */
messages: Array<Message>, };

/**
 * One search hit.
 */
export type SearchResult = { 
/**
 * The matching message.
 */
message: Message, 
/**
 * An excerpt of the body around the matches, plain text.
 */
snippet: string, 
/**
 * The same excerpt with every match between U+0002 and U+0003 (control characters, never
 * markup, so a UI highlights without parsing message text as HTML).
 */
highlighted: string, };

/**
 * `GET /search`: hits, newest first.
 */
export type SearchResults = { 
/**
 * The hits, newest first, at most `limit`.
 */
results: Array<SearchResult>, 
/**
 * How many messages match in all.
 */
total?: number, 
/**
 * The cursor for the next page (`?before=`); left out on the last page.
 */
next_before?: number, };

/**
 * Where we stand in a space.
 */
export type SpaceMembership = "member" | "joining" | "accepted" | "refused" | "former";

/**
 * A member of a space.
 */
export type SpaceMember = { 
/**
 * Who.
 */
user_id: UserId, 
/**
 * The owner.
 */
owner: boolean, 
/**
 * The roles they hold (not `@everyone`), role ids.
 */
roles: Array<string>, 
/**
 * The name they gave themselves in this space (their `profile` op), if any. Chosen by
 * them, not checked: show it with their user id's fingerprint, never alone. Left out
 * when they have none.
 */
display_name?: string, };

/**
 * Someone who was a member of a space and is not now.
 */
export type SpaceFormerMember = { 
/**
 * Who.
 */
user_id: UserId, 
/**
 * The name they had chosen in this space when they went, if any (a claim: show it with
 * the fingerprint, like a member's). Left out when they had none.
 */
display_name?: string, };

/**
 * A role of a space.
 */
export type SpaceRole = { 
/**
 * Its id (32 hex digits; all zeros is `@everyone`).
 */
id: string, 
/**
 * Its name.
 */
name: string, 
/**
 * Its colour (`0xRRGGBB`).
 */
color: number, 
/**
 * Its rank (0 for `@everyone`; higher is more powerful).
 */
position: number, 
/**
 * What it grants.
 */
permissions: Array<string>, };

/**
 * A channel kind.
 */
export type SpaceChannelKind = "text" | "voice" | "category";

/**
 * A channel of a space.
 */
export type SpaceChannel = { 
/**
 * Its id (`dchan1…`): also the conversation id of its messages.
 */
id: string, 
/**
 * Text, voice or category.
 */
kind: SpaceChannelKind, 
/**
 * Its name.
 */
name: string, 
/**
 * Its topic (empty: none).
 */
topic: string, 
/**
 * Its category, if any.
 */
parent: string | null, 
/**
 * Its position among its siblings.
 */
position: number, 
/**
 * Whether we may read it.
 */
can_view: boolean, 
/**
 * Whether we may send in it (text channels).
 */
can_send: boolean, 
/**
 * Its permission overwrites (a category's apply to its channels first).
 */
overwrites: Array<ChannelOverwrite>, 
/**
 * Messages from others since we last read the channel (counted up to 100).
 */
unread: number, 
/**
 * Of those, the ones that mention us (by name, a role we hold, or `@everyone`).
 */
mentions: number, };

/**
 * A space as this node resolved it.
 */
export type Space = { 
/**
 * Its id (`dspace1…`).
 */
id: string, 
/**
 * Where we stand.
 */
membership: SpaceMembership, 
/**
 * Why our join was refused (a sentence), when `membership` is `refused`.
 */
refusal: string | null, 
/**
 * Its name (empty until the log arrives).
 */
name: string, 
/**
 * Its description.
 */
description: string, 
/**
 * Whether new members get the history sent before they joined.
 */
share_history: boolean, 
/**
 * The owner (`null` until the log arrives).
 */
owner: UserId | null, 
/**
 * Our permissions across the space.
 */
permissions: Array<string>, 
/**
 * Members, by user id.
 */
members: Array<SpaceMember>, 
/**
 * Who was a member and is not now (left, kicked or banned), by user id: their earlier
 * messages stay in the channels' history, shown under the name they had chosen and marked
 * as having left.
 */
former_members: Array<SpaceFormerMember>, 
/**
 * Roles, `@everyone` first, then by position.
 */
roles: Array<SpaceRole>, 
/**
 * Channels in display order (categories before their channels).
 */
channels: Array<SpaceChannel>, 
/**
 * Invites made in the space, by id (their codes are shown only to whoever made
 * them, when they made them).
 */
invites: Array<SpaceInviteInfo>, };

/**
 * `POST /spaces/{id}/invites`: the code to hand out.
 */
export type SpaceInvite = { 
/**
 * The space.
 */
space_id: string, 
/**
 * The invite code (`dinvite1…`); whoever holds it may join until it expires, is used up
 * or revoked.
 */
code: string, 
/**
 * The invite's id (64 hex digits), to revoke it.
 */
invite_id: string, };

/**
 * An invite of a space, as the log holds it.
 */
export type SpaceInviteInfo = { 
/**
 * Its id (64 hex digits): `DELETE /spaces/{id}/invites/{invite_id}` revokes it.
 */
id: string, 
/**
 * Who made it.
 */
creator: UserId, 
/**
 * Most joins it admits (`null`: unlimited).
 */
max_uses: number | null, 
/**
 * Joins it admitted so far.
 */
uses: number, 
/**
 * When it expires (`null`: never).
 */
expires_at: Timestamp | null, 
/**
 * Whether it was revoked.
 */
revoked: boolean, };

/**
 * A channel's permission overwrite for a role (`role`) or a member (`user_id`): exactly one
 * of them.
 */
export type ChannelOverwrite = { 
/**
 * The role (32 hex digits; all zeros is `@everyone`).
 */
role?: string | null, 
/**
 * The member.
 */
user_id?: string | null, 
/**
 * Permissions granted in the channel.
 */
allow: Array<string>, 
/**
 * Permissions taken away in the channel.
 */
deny: Array<string>, };

/**
 * `PATCH /spaces/{id}`: the space's settings (only the fields present change).
 */
export type SpacePatch = { 
/**
 * New name.
 */
name?: string | null, 
/**
 * New description (empty clears it).
 */
description?: string | null, 
/**
 * Whether new members get the history sent before they joined.
 */
share_history?: boolean | null, };

/**
 * `POST /spaces/{id}/transfer`: hands the space to another member.
 */
export type TransferSpace = { 
/**
 * The new owner.
 */
user_id: string, };

/**
 * Where a placeholder's wait for its key stands.
 */
export type WaitingState = "waiting_for_keys" | "withheld" | "gave_up";

/**
 * Why a key was withheld.
 */
export type WithheldReason = "unauthorized" | "unavailable" | "history_not_shared";

/**
 * A channel message that has not been decrypted yet: its key has not reached us.
 */
export type WaitingMessage = { 
/**
 * `<session_id>:<index>`, stable until the message is decrypted.
 */
id: string, 
/**
 * The session's owner, as the message claims (checked when it is decrypted).
 */
sender: UserId, 
/**
 * When it arrived.
 */
received_at: Timestamp, 
/**
 * Where the wait stands.
 */
state: WaitingState, 
/**
 * Why the key was withheld (`withheld` only).
 */
reason: WithheldReason | null, 
/**
 * A sentence for the UI (`withheld` and `gave_up`).
 */
reason_text: string | null, };

/**
 * `GET /channels/{id}/messages`: a page of a channel's messages and, on the newest page, the
 * messages still waiting for their key.
 */
export type ChannelPage = { 
/**
 * The messages, oldest first.
 */
messages: Array<Message>, 
/**
 * Whether older messages exist before the first one.
 */
has_more: boolean, 
/**
 * Placeholders for messages waiting for their key, oldest first (the newest page only).
 */
waiting: Array<WaitingMessage>, };

/**
 * Which way a file goes.
 */
export type TransferDirection = "incoming" | "outgoing";

/**
 * Where a transfer stands.
 */
export type TransferState = "preparing" | "queued" | "connecting" | "transferring" | "paused" | "verifying" | "done" | "failed" | "cancelled";

/**
 * Why a transfer is paused, waiting or ended.
 */
export type TransferReason = "user" | "disk_full" | "no_space" | "source_changed" | "hash_mismatch" | "no_sources" | "revoked" | "io" | "source_missing" | "unreadable" | "not_sent";

/**
 * Width and height in pixels.
 */
export type FileDimensions = { 
/**
 * Width.
 */
width: number, 
/**
 * Height.
 */
height: number, };

/**
 * One transfer (`GET /transfers`, `GET /transfers/{id}`, and the answer of sends and
 * actions).
 */
export type Transfer = { 
/**
 * Its id (the announcing message's id).
 */
id: string, 
/**
 * Its conversation.
 */
conversation: ConversationId, 
/**
 * The message that announced it.
 */
message: MessageId | null, 
/**
 * Which way.
 */
direction: TransferDirection, 
/**
 * The file name as the sender gave it (shown; made safe before it touches a disk).
 */
name: string, 
/**
 * The MIME type the sender gave.
 */
mime: string, 
/**
 * Size in bytes.
 */
size: number, 
/**
 * The content id (`dblob1…`).
 */
blob: string, 
/**
 * Where it stands.
 */
state: TransferState, 
/**
 * Why it is paused, waiting or ended.
 */
reason: TransferReason | null, 
/**
 * Incoming: bytes verified and durable (the resume point; live progress comes as
 * `transfer_progress` events). Outgoing: 0 until done, then the size.
 */
bytes: number, 
/**
 * Incoming: where the user saved it, once saved.
 */
saved_path: string | null, 
/**
 * When it was made.
 */
created_at: Timestamp, 
/**
 * When it last changed.
 */
updated_at: Timestamp, 
/**
 * The latest live progress (rate, ETA, sources) since the node started, if any moved.
 */
progress: TransferProgress | null, 
/**
 * An image's size as the sender announced it (to reserve its room before it arrives).
 */
dimensions: FileDimensions | null, 
/**
 * The sender's thumbnail as a `data:` URL (JPEG, PNG or WebP, at most 16 KiB), shown
 * before the file arrives.
 */
thumbnail: string | null, };

/**
 * `GET /transfers`: every transfer, newest first.
 */
export type Transfers = { 
/**
 * The transfers.
 */
transfers: Array<Transfer>, };

/**
 * Live progress of one transfer (the `transfer_progress` event): at most 4 a second per
 * transfer, and at once on a state change.
 */
export type TransferProgress = { 
/**
 * Which transfer.
 */
id: string, 
/**
 * Where it stands.
 */
state: TransferState, 
/**
 * Why it is paused, waiting or ended.
 */
reason: TransferReason | null, 
/**
 * Bytes done (verified, for a download).
 */
bytes: number, 
/**
 * Bytes in all.
 */
total: number, 
/**
 * Smoothed bytes per second (0 until measured).
 */
rate: number, 
/**
 * Seconds left at the current rate; `null` while unknown.
 */
eta_secs: number | null, 
/**
 * Peers being asked (download) or served (upload).
 */
sources: number, 
/**
 * Holders this download stopped asking, and why (a holder whose chunk group did not
 * verify is dropped at that group).
 */
dropped: Array<DroppedSource>, 
/**
 * Download: answer bytes received over the wire since the node started (data and
 * proofs); after a restart, only what the resumed download fetched.
 */
wire_bytes: number, };

/**
 * A holder a download dropped.
 */
export type DroppedSource = { 
/**
 * Who.
 */
user_id: string, 
/**
 * Why: `bad_data` (a chunk group that did not verify), `malformed`, `refused`,
 * `stalled`.
 */
reason: string, 
/**
 * For `bad_data`: the first bad chunk group (16 KiB each).
 */
group: number | null, };

/**
 * `POST /conversations/{id}/files`: a file on the node's own machine to send.
 */
export type SendFile = { 
/**
 * An absolute path on the node's machine (the node reads it; the UI never uploads
 * bytes).
 */
path: string, 
/**
 * The MIME type; guessed from the name when left out.
 */
mime?: string, };

/**
 * `POST /transfers/{id}/save`: decrypt a received file into a directory.
 */
export type SaveFile = { 
/**
 * A directory on the node's machine; the file keeps its (made safe) name, numbered if
 * taken.
 */
dir: string, };

/**
 * `POST /transfers/{id}/{action}`.
 */
export type TransferAction = "pause" | "resume" | "cancel";

/**
 * Where a call stands.
 */
export type CallState = "ringing" | "active" | "ended";

/**
 * How a call ended.
 */
export type CallEnd = "completed" | "declined" | "busy" | "unsupported" | "no_answer" | "missed" | "cancelled";

/**
 * The browser leg's counters (docs/media.md, "The browser leg").
 */
export type BrowserLegStats = { 
/**
 * DTLS is up with the browser.
 */
connected: boolean, 
/**
 * The leg ended.
 */
closed: boolean, 
/**
 * Frames received from the browser.
 */
frames_up: number, 
/**
 * Frames sent to the browser.
 */
frames_down: number, 
/**
 * Frames from the browser the node had no room for.
 */
dropped_up: number, 
/**
 * Frames from the browser dropped because it sent far more than its cap.
 */
throttled_up: number, 
/**
 * Frames for the browser dropped (queue full, not negotiated yet).
 */
dropped_down: number, 
/**
 * Candidates in the offer that were not loopback, ignored.
 */
refused_candidates: number, 
/**
 * Datagrams from outside this machine, refused.
 */
refused_sources: number, 
/**
 * The cap the browser's encoder is told (REMB), bits per second.
 */
cap_bps: number, 
/**
 * REMB messages sent.
 */
remb_sent: number, 
/**
 * Why the last thing was refused or dropped.
 */
last_refusal: string | null, };

/**
 * A call's media on this node.
 */
export type CallMedia = { 
/**
 * The media task runs (the call is active).
 */
running: boolean, 
/**
 * The audio m-line is negotiated with the peer.
 */
ready: boolean, 
/**
 * Frames played into the call.
 */
played: number, 
/**
 * Frames the played file holds.
 */
play_total: number | null, 
/**
 * The played file has played out.
 */
play_done: boolean, 
/**
 * Frames received and recorded.
 */
recorded: number, 
/**
 * Where the recording goes (a path on the node's machine).
 */
record_path: string | null, 
/**
 * The recording is closed.
 */
record_done: boolean, 
/**
 * The last media error.
 */
error: string | null, 
/**
 * Frames handed to the connection.
 */
frames_sent: number, 
/**
 * Frames received on the call's m-line.
 */
frames_received: number, 
/**
 * Received media refused (an m-line the call did not negotiate, no call attached).
 */
refused_in: number, 
/**
 * Writes refused (not negotiated yet, a stale call).
 */
refused_out: number, 
/**
 * Why the last media was refused.
 */
last_refusal: string | null, 
/**
 * The UI's loopback leg, once it opened one.
 */
browser: BrowserLegStats | null, 
/**
 * Video (camera or screen) on this call.
 */
video: CallVideo, };

/**
 * A call's video counters (docs/media.md, "Video in calls").
 */
export type CallVideo = { 
/**
 * The connection with the peer negotiated its video m-line.
 */
negotiated: boolean, 
/**
 * The UI's leg offered a video m-line.
 */
browser_video: boolean, 
/**
 * Frames sent to the peer (from the browser's camera or screen).
 */
sent: number, 
/**
 * Frames received from the peer.
 */
received: number, 
/**
 * Frames received from the browser / sent down to it.
 */
browser_up: number, 
/**
 * Frames sent down to the browser.
 */
browser_down: number, 
/**
 * Keyframe requests: from our browser passed to the peer.
 */
keyframe_requests_to_peer: number, 
/**
 * From the peer passed to our browser's encoder.
 */
keyframe_requests_from_peer: number, 
/**
 * Dropped for coming within 500 ms of the previous one (either way, on the connection
 * and on the leg).
 */
keyframe_requests_throttled: number, 
/**
 * The video rate the path to the peer allows, from the peer's loss reports (the page's
 * cap is this and the audio's 64 kbit/s); null before the first report.
 */
path_rate_bps: number | null, 
/**
 * The video rate sent to the peer over the last report interval.
 */
send_bps: number, 
/**
 * The loss the peer last reported on our video, per mille.
 */
loss_permille: number | null, };

/**
 * A call.
 */
export type Call = { 
/**
 * `dcall1…`.
 */
id: string, 
/**
 * With whom.
 */
user_id: UserId, 
/**
 * We placed it.
 */
outgoing: boolean, 
/**
 * Where it stands.
 */
state: CallState, 
/**
 * When it started ringing.
 */
created_at: Timestamp, 
/**
 * When it was picked up.
 */
answered_at: Timestamp | null, 
/**
 * When it ended.
 */
ended_at: Timestamp | null, 
/**
 * How it ended.
 */
end: CallEnd | null, 
/**
 * We hung up, declined or cancelled.
 */
ended_by_me: boolean, 
/**
 * How long it has been (or was) active, in milliseconds.
 */
duration_ms: number | null, 
/**
 * Why a media offer or media from the peer was refused, if one was.
 */
refused: string | null, 
/**
 * The connection with the peer: path (direct or relayed, candidate types), RTT.
 */
connection: Connection, 
/**
 * The call's media on this node, once it had any.
 */
media: CallMedia | null, };

/**
 * `GET /calls`: the current call first, then the recent ended ones.
 */
export type Calls = { 
/**
 * Newest first.
 */
calls: Array<Call>, };

/**
 * `POST /calls`: ring a contact. `play` and `record` are absolute paths on the node's machine
 * (the headless source and sink: an Ogg Opus file played into the call, the received Opus
 * packets recorded into an Ogg Opus file).
 */
export type StartCall = { 
/**
 * Whom to call.
 */
user_id: UserId, 
/**
 * An Ogg Opus file to play into the call once it is active.
 */
play?: string, 
/**
 * Where to record what the peer sends.
 */
record?: string, };

/**
 * `POST /calls/{id}/accept`: pick up, with the same optional media as [`StartCall`].
 */
export type AcceptCall = { 
/**
 * An Ogg Opus file to play into the call.
 */
play?: string, 
/**
 * Where to record what the peer sends.
 */
record?: string, };

/**
 * `POST /calls/{id}/{decline|hangup}`.
 */
export type CallAction = "decline" | "hangup";

/**
 * `POST /calls/{id}/browser`: the UI's SDP offer for its loopback leg of the call (one
 * send-and-receive audio m-line; candidates other than loopback are ignored).
 */
export type BrowserOffer = { 
/**
 * The offer, as `RTCPeerConnection.createOffer` made it.
 */
sdp: string, };

/**
 * The node's answer for the browser leg.
 */
export type BrowserAnswer = { 
/**
 * The answer, for `setRemoteDescription`.
 */
sdp: string, };

/**
 * One participant of a voice channel.
 */
export type VoiceParticipant = { 
/**
 * Who.
 */
user_id: UserId, 
/**
 * From which device.
 */
device_id: string, 
/**
 * This is us.
 */
me: boolean, 
/**
 * Their microphone is muted (or they are deafened).
 */
muted: boolean, 
/**
 * They hear nothing.
 */
deafened: boolean, 
/**
 * They have `speak` in the channel (without it every member's node drops their audio).
 */
may_speak: boolean, 
/**
 * Audio from them arrived in the last 300 ms (for ourselves: we sent audio in the last
 * 300 ms). Headless nodes judge by packets, not levels; see docs/media.md.
 */
speaking: boolean, 
/**
 * When we saw them join.
 */
joined_at: Timestamp, 
/**
 * When their presence lapses unless refreshed (`null` for ourselves).
 */
expires_at: Timestamp | null, 
/**
 * In our media mesh (only while we are in the same channel; at most 8 participants).
 */
in_mesh: boolean, };

/**
 * A voice channel and who is in it.
 */
export type VoiceChannel = { 
/**
 * The channel.
 */
channel_id: string, 
/**
 * Its name.
 */
name: string, 
/**
 * We may join it.
 */
can_connect: boolean, 
/**
 * We may speak in it.
 */
can_speak: boolean, 
/**
 * Who is in it, ourselves first, then by join time.
 */
participants: Array<VoiceParticipant>, };

/**
 * One remote participant's media on this node.
 */
export type VoicePeerMedia = { 
/**
 * Who.
 */
user_id: UserId, 
/**
 * Attached to the connection with them.
 */
attached: boolean, 
/**
 * The audio m-line is negotiated with them.
 */
ready: boolean, 
/**
 * Frames sent to them.
 */
sent: number, 
/**
 * Frames received from them and kept.
 */
received: number, 
/**
 * Frames received from them and dropped (no `speak`, or we are deafened).
 */
dropped: number, 
/**
 * Where their audio is recorded (a path on the node's machine).
 */
record_path: string | null, 
/**
 * The RFC 6464 level of their last frame in dBov (−127 silent to 0 loudest), when their
 * frames carry one (a browser; a headless source's do not).
 */
level_dbov: number | null, };

/**
 * One down slot of the browser leg: a receive m-line of the page and who it carries.
 */
export type VoiceSlot = { 
/**
 * The m-line's media id (`RTCRtpTransceiver.mid` in the page).
 */
mid: string, 
/**
 * Who it carries now (`null`: nobody).
 */
user_id: UserId | null, };

/**
 * The page's browser leg in a voice channel.
 */
export type VoiceBrowser = { 
/**
 * Its down slots, in the page's m-line order.
 */
slots: Array<VoiceSlot>, 
/**
 * Its counters.
 */
leg: BrowserLegStats, };

/**
 * `POST /voice/browser`: the node's answer to the page's offer, and its down slots.
 */
export type VoiceBrowserAnswer = { 
/**
 * The SDP answer.
 */
sdp: string, 
/**
 * The media ids of the down slots, in order (who each carries is in `GET /voice`).
 */
slots: Array<string>, };

/**
 * Our voice media.
 */
export type VoiceMedia = { 
/**
 * The media task runs.
 */
running: boolean, 
/**
 * Frames our source played (sent to every ready peer unless muted).
 */
played: number, 
/**
 * Frames the played file holds.
 */
play_total: number, 
/**
 * The played file has played out.
 */
play_done: boolean, 
/**
 * The recordings are closed.
 */
record_done: boolean, 
/**
 * The last media error.
 */
error: string | null, 
/**
 * Per remote participant, by user ID.
 */
peers: Array<VoicePeerMedia>, 
/**
 * The page's browser leg, while it has one.
 */
browser: VoiceBrowser | null, };

/**
 * Where we are in voice.
 */
export type MyVoice = { 
/**
 * The space.
 */
space_id: string, 
/**
 * The channel.
 */
channel_id: string, 
/**
 * Our microphone is muted.
 */
muted: boolean, 
/**
 * We hear nothing.
 */
deafened: boolean, 
/**
 * We have `speak` in the channel.
 */
may_speak: boolean, 
/**
 * When we joined.
 */
joined_at: Timestamp, };

/**
 * `GET /voice`: where we are and our media; `POST /voice/*` answer it too.
 */
export type VoiceState = { 
/**
 * Where we are (`null`: in no voice channel).
 */
current: MyVoice | null, 
/**
 * Our media (`null` until we first join).
 */
media: VoiceMedia | null, 
/**
 * Why the last voice presence this node received was refused, if one was.
 */
last_refusal: string | null, };

/**
 * `GET /spaces/{id}/voice`: every voice channel of the space and who is in it.
 */
export type SpaceVoice = { 
/**
 * The space.
 */
space_id: string, 
/**
 * Its voice channels in display order.
 */
channels: Array<VoiceChannel>, };

/**
 * `POST /voice/join`: join a voice channel (leaving the current one). `play` and `record` are
 * absolute paths on the node's machine: an Ogg Opus file played into the channel, and the
 * path from which per-participant recordings are named (`out.opus` records
 * `out-<user id>.opus` beside it).
 */
export type JoinVoice = { 
/**
 * The voice channel.
 */
channel_id: string, 
/**
 * An Ogg Opus file to play.
 */
play?: string, 
/**
 * Where to record the other participants.
 */
record?: string, 
/**
 * Start playing once this many participants are connected (default 1).
 */
wait_for?: number, };

/**
 * `POST /voice/state`: mute or deafen (fields left out stay as they are).
 */
export type VoicePatch = { 
/**
 * Mute our microphone.
 */
muted?: boolean, 
/**
 * Hear nothing (and send nothing).
 */
deafened?: boolean, };

/**
 * A live event. Events are not replayed: a client fetches state with the REST calls on every
 * (re)connect, then applies events. A client ignores types it does not know.
 */
export type Event = { "type": "status", 
/**
 * The new phase.
 */
state: NodeState, } | { "type": "signaling", 
/**
 * The new state.
 */
state: SignalingState, 
/**
 * With `disconnected`: the next reconnect starts in this many ms (the client's
 * backoff). A second `disconnected` event carries it right after the first (which has
 * none); left out for every other state and after a replacement (no retry follows).
 */
retry_in_ms?: number, } | { "type": "message", 
/**
 * The message.
 */
message: Message, } | { "type": "message_updated", 
/**
 * The message as it is now.
 */
message: Message, } | { "type": "message_state", 
/**
 * Which message.
 */
id: MessageId, 
/**
 * Its conversation.
 */
conversation: ConversationId, 
/**
 * The new state.
 */
state: DeliveryState, } | { "type": "typing", 
/**
 * Who.
 */
user_id: UserId, 
/**
 * Started or stopped.
 */
active: boolean, 
/**
 * The channel (`dchan1…`) when they type in a space; left out in a direct chat.
 */
channel?: string, } | { "type": "presence", 
/**
 * Whose.
 */
user_id: UserId, 
/**
 * As we may see it.
 */
presence: Presence, } | { "type": "contact", 
/**
 * The contact as it is now (boxed: it is the largest event).
 */
contact: Contact, } | { "type": "connection", 
/**
 * Which contact.
 */
user_id: UserId, 
/**
 * The connection as it is now.
 */
connection: Connection, } | { "type": "session_reset", 
/**
 * Which contact.
 */
user_id: UserId, 
/**
 * How many messages were sent again.
 */
resent: number, } | { "type": "verification", 
/**
 * With whom.
 */
user_id: UserId, 
/**
 * Where it stands.
 */
verification: Verification, } | { "type": "space", 
/**
 * The space as it is now (boxed: it can be large).
 */
space: Space, } | { "type": "channel_waiting", 
/**
 * The channel (`dchan1…`).
 */
channel: string, 
/**
 * Its placeholders now, oldest first.
 */
waiting: Array<WaitingMessage>, } | { "type": "call", 
/**
 * The call as it is now.
 */
call: Call, } | { "type": "voice", 
/**
 * The space's voice channels as they are now.
 */
voice: SpaceVoice, } | { "type": "transfer", 
/**
 * The transfer as it is now.
 */
transfer: Transfer, } | { "type": "transfer_progress", 
/**
 * Bytes, rate, ETA.
 */
progress: TransferProgress, } | { "type": "lagged", 
/**
 * How many events were dropped.
 */
missed: number, } | { "type": "profile", 
/**
 * Whose.
 */
user_id: UserId, 
/**
 * The profile as it is now.
 */
profile: ProfileCard, } | { "type": "contact_removed", 
/**
 * Who.
 */
user_id: UserId, };

/**
 * `POST /identity`.
 */
export type CreateIdentity = { 
/**
 * The name we show to others.
 */
display_name: string, 
/**
 * Encrypts the store; cannot be recovered.
 */
passphrase: string, };

/**
 * `POST /unlock`.
 */
export type Unlock = { 
/**
 * The store's passphrase.
 */
passphrase: string, };

/**
 * `PUT /me/status`. Checked by the node (`online`, `away`, `busy` or `invisible`) so the error
 * says which values are allowed.
 */
export type SetStatus = { 
/**
 * The new status.
 */
status: Exclude<Presence, "offline">, };

/**
 * `POST /contacts`.
 */
export type AddContact = { 
/**
 * Their user ID (checked, with a checksum error for typos).
 */
user_id: UserId, 
/**
 * The name to show for them.
 */
display_name?: string | null, };

/**
 * `POST /contacts/{id}/request` (the body may be left out).
 */
export type ContactRequest = { 
/**
 * The name to show for them.
 */
display_name?: string | null, 
/**
 * A short note sent with the request.
 */
note?: string | null, };

/**
 * `PATCH /contacts/{id}`: absent fields stay as they are.
 */
export type ContactPatch = { 
/**
 * New name.
 */
display_name?: string | null, 
/**
 * Mark verified (after comparing the safety number) or not.
 */
verified?: boolean | null, 
/**
 * Block (their messages and presence stop) or unblock.
 */
blocked?: boolean | null, };

/**
 * `GET /conversations/{id}/messages?before=&limit=`.
 */
export type PageQuery = { 
/**
 * Only messages before the one with this `seq`.
 */
before?: number | null, 
/**
 * 1 to 200 (default 50).
 */
limit?: number | null, };

/**
 * `POST /conversations/{id}/messages`, and one item of a batch.
 */
export type SendMessage = { 
/**
 * The text (1 byte to 16 KiB of UTF-8, not blank).
 */
body: string, 
/**
 * The message it answers.
 */
reply_to?: MessageId | null, };

/**
 * `POST /conversations/{id}/messages/batch`.
 */
export type SendMessages = { 
/**
 * 1 to 256 messages, stored all or none, sent in order.
 */
messages: Array<SendMessage>, };

/**
 * `POST /conversations/{id}/typing`.
 */
export type Typing = { 
/**
 * Started (refresh every 3 s) or stopped.
 */
active: boolean, };

/**
 * `POST /conversations/{id}/read`.
 */
export type MarkRead = { 
/**
 * The newest message read.
 */
up_to: MessageId, };

/**
 * `PUT /messages/{id}`.
 */
export type Edit = { 
/**
 * The new text.
 */
body: string, };

/**
 * `POST /messages/{id}/reactions`.
 */
export type React = { 
/**
 * Any emoji.
 */
emoji: string, };

/**
 * `GET /search?q=&limit=`.
 */
export type SearchQuery = { 
/**
 * What to look for (every word must match).
 */
q: string, 
/**
 * 1 to 100 (default 20).
 */
limit?: number | null, 
/**
 * Only hits older than this `seq` (the previous answer's `next_before`).
 */
before?: number | null, };

/**
 * `PUT /settings`: absent fields stay as they are.
 */
export type SettingsPatch = { 
/**
 * The signaling server URL (`ws://` or `wss://`; `""` removes it).
 */
server_url?: string | null, 
/**
 * STUN/TURN URLs.
 */
ice_servers?: Array<string> | null, 
/**
 * Send read receipts.
 */
read_receipts?: boolean | null, 
/**
 * The UI's theme (checked by the node: `dark` or `light`).
 */
theme?: Theme | null, 
/**
 * Fetch link previews for links we send (off by default).
 */
link_previews?: boolean | null, 
/**
 * Connect to contacts through relays only (off by default).
 */
relay_only?: boolean | null, };

/**
 * `POST /spaces`.
 */
export type CreateSpace = { 
/**
 * Its name (1 to 100 bytes).
 */
name: string, };

/**
 * `POST /spaces/{id}/invites` (the body may be left out).
 */
export type CreateInvite = { 
/**
 * How many joins it allows (unlimited if left out).
 */
max_uses?: number | null, 
/**
 * How long it stays valid, in milliseconds from now (forever if left out).
 */
expires_in_ms: number | null, };

/**
 * `POST /spaces/join`.
 */
export type JoinSpace = { 
/**
 * The invite code.
 */
invite: string, };

/**
 * `POST /spaces/{id}/channels`.
 */
export type CreateChannel = { 
/**
 * Its name.
 */
name: string, 
/**
 * Text (the default), voice or category.
 */
kind?: SpaceChannelKind | null, 
/**
 * Its topic.
 */
topic?: string | null, 
/**
 * Its category's id.
 */
parent?: string | null, 
/**
 * Its position among its siblings (0 if left out).
 */
position?: number | null, };

/**
 * `PATCH /spaces/{id}/channels/{channel_id}`: only the fields present change.
 */
export type ChannelPatch = { 
/**
 * New name.
 */
name?: string | null, 
/**
 * New topic.
 */
topic?: string | null, 
/**
 * The channel's whole list of overwrites (replaces the old one).
 */
overwrites?: Array<ChannelOverwrite> | null, };

/**
 * `PUT /spaces/{id}/channels`: moves channels (the ↑/↓ of the channel list); channels left out
 * keep their place.
 */
export type ChannelOrder = { 
/**
 * Where each named channel goes.
 */
positions: Array<ChannelPlace>, };

/**
 * Where one channel goes in a [`ChannelOrder`].
 */
export type ChannelPlace = { 
/**
 * The channel (`dchan1…`).
 */
channel: string, 
/**
 * The category it moves into (left out: the top level).
 */
parent?: string | null, 
/**
 * Its position among its siblings (ties sort by channel id).
 */
position: number, };

/**
 * `POST /spaces/{id}/roles`.
 */
export type CreateRole = { 
/**
 * Its name.
 */
name: string, 
/**
 * Its colour (`0xRRGGBB`, 0 if left out).
 */
color?: number | null, 
/**
 * Its rank (must be below our own top role).
 */
position: number, 
/**
 * What it grants (permission names).
 */
permissions: Array<string>, };

/**
 * `PATCH /spaces/{id}/roles/{role_id}`: only the fields present change.
 */
export type RolePatch = { 
/**
 * New name.
 */
name?: string | null, 
/**
 * New colour.
 */
color?: number | null, 
/**
 * New rank.
 */
position?: number | null, 
/**
 * New permissions (names).
 */
permissions?: Array<string> | null, };

/**
 * `POST /channels/{id}/messages`.
 */
export type SendChannelMessage = { 
/**
 * The text (1 to 16 KiB).
 */
body: string, 
/**
 * The message it answers.
 */
reply_to?: MessageId | null, };

/**
 * A user's profile as their contacts see it, sent end-to-end encrypted to each contact when it
 * changes (never through the server in the clear).
 */
export type ProfileCard = { 
/**
 * A short status line ("on holiday until Monday"), at most 128 characters.
 */
status_text: string | null, 
/**
 * The avatar as a `data:image/webp;base64,…` (or png/jpeg) URL, at most 128×128 pixels and
 * 48 KiB: the sender's UI resizes it, the node refuses larger ones, and a receiving UI
 * shows it only as an `<img src>` of that data URL (never fetches anything).
 */
avatar: string | null, 
/**
 * When the sender changed it (their clock).
 */
updated_at: Timestamp, };

/**
 * `PUT /me/profile`: changes our own profile; absent fields stay as they are, `null`
 * clears. Answers `Me` with `profile` filled, and the node sends the new card to every accepted
 * contact in the background.
 */
export type ProfilePatch = { 
/**
 * New display name (1–64 characters).
 */
display_name?: string | null, 
/**
 * New status text; `""` clears it.
 */
status_text?: string | null, 
/**
 * New avatar as a data URL (see [`ProfileCard::avatar`]); `""` removes it.
 */
avatar?: string | null, };

/**
 * A link preview, fetched by the *sender's* node when link previews are on (off by default)
 * and sent inside the encrypted message. A receiving node never fetches anything for it.
 */
export type LinkPreview = { 
/**
 * The URL the preview describes (one of the message's links).
 */
url: string, 
/**
 * The page's title (`og:title` or `<title>`), at most 200 characters.
 */
title: string | null, 
/**
 * The page's description, at most 400 characters.
 */
description: string | null, 
/**
 * A small image (`og:image`, resized by the sender's node) as a data URL, at most 32 KiB.
 */
image: string | null, };

/**
 * `PUT /settings` additions of the UI issue (the node's `Settings` and `SettingsPatch` carry
 * the same field).
 */
export type PlannedSettings = { 
/**
 * Fetch link previews for links we send (off by default).
 */
link_previews?: boolean | null, };
