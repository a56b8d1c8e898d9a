//! What goes into the machine and what comes out of it.

use crate::outbox::Route;
use crate::store::{ConversationId, DeliveryState, Message, MessageId};
use dopus_proto::bundle::{ClaimedBundle, DeviceBundle};
use dopus_proto::peer::PeerAddress;
use dopus_proto::signaling::Status;
use dopus_types::{DeviceId, UserId};

/// Where an inbound envelope came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The data channel of our direct connection with this user.
    Direct {
        /// Whom the connection is with (an envelope from anyone else is dropped).
        peer: UserId,
    },
    /// Relayed live by the signaling server, which says who sent it.
    Relay {
        /// The sender the server authenticated.
        from: PeerAddress,
    },
    /// Kept by the server's mailbox while we were away; acknowledged once it is durably
    /// handled.
    Mailbox {
        /// The sender the server authenticated.
        from: PeerAddress,
        /// The mailbox item to acknowledge after the commit.
        ack: u64,
    },
}

impl Via {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Via::Direct { .. } => "direct",
            Via::Relay { .. } => "relay",
            Via::Mailbox { .. } => "mailbox",
        }
    }
}

/// One envelope to take in.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The envelope as it arrived (JSON).
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub via: Via,
}

/// The signaling connection's state, as the client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalingState {
    /// Not connected (and reconnecting with backoff, if a server is configured).
    Disconnected,
    /// Opening the connection.
    Connecting,
    /// Proving our identity.
    Authenticating,
    /// Logged in.
    Connected,
}

impl SignalingState {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalingState::Disconnected => "disconnected",
            SignalingState::Connecting => "connecting",
            SignalingState::Authenticating => "authenticating",
            SignalingState::Connected => "connected",
        }
    }
}

/// Something that happened to a direct connection (reported by the runtime that owns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Our offer is ready (we asked with [`ConnectionRequest::Offer`]).
    Offered {
        /// The SDP offer.
        sdp: String,
    },
    /// Our answer is ready (we asked with [`ConnectionRequest::Answer`]).
    Answered {
        /// The SDP answer.
        sdp: String,
    },
    /// A local ICE candidate to trickle to the peer.
    LocalCandidate {
        /// The candidate line.
        candidate: String,
    },
    /// ICE/DTLS is connected but the channel is not open yet, or similar progress.
    Progress,
    /// The data channel opened.
    Open,
    /// The peer said hello on the channel; `bulk`: it also reads bulk payloads.
    Hello {
        /// It reads bulk payloads.
        bulk: bool,
    },
    /// Our renegotiation offer adding audio is ready ([`ConnectionRequest::AddAudio`]).
    MediaOffered {
        /// The SDP offer.
        sdp: String,
    },
    /// Our answer to the peer's media offer is ready.
    MediaAnswered {
        /// The SDP answer.
        sdp: String,
    },
    /// Adding media failed (the offer, the answer or applying it); the connection stays.
    MediaFailed {
        /// Why, safe to log.
        reason: String,
    },
    /// The connection lost its path and made an ICE restart offer for the peer (the side that
    /// made the first offer does; `dopus_rtc::PeerEvent::RestartOffer`).
    RestartOffered {
        /// The SDP offer.
        sdp: String,
    },
    /// Our answer to the peer's ICE restart offer is ready.
    RestartAnswered {
        /// The SDP answer.
        sdp: String,
    },
    /// The attempt or the connection ended.
    Closed {
        /// Why, for the connection panel (`None`: we closed it).
        reason: Option<String>,
    },
}

/// One sealed envelope for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The device it is for.
    pub device: DeviceId,
    /// The envelope (JSON).
    pub bytes: Vec<u8>,
}

/// Hand these envelopes to a transport, in order, after the commit. Every envelope for one peer
/// must leave in the order the machine emits them (Olm messages are sealed in order; the
/// receiver keeps only a few chains and skipped keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Names this hand-over in [`Input::Transmitted`].
    pub id: u64,
    /// The recipient.
    pub peer: UserId,
    /// Over the data channel or through the server.
    pub route: Route,
    /// Through the server: keep it in the peer's mailbox if the peer is away (reliable
    /// copies and delivered receipts); otherwise relay live or drop.
    pub store: bool,
    /// Over the data channel: if the channel fails, send these through the server instead
    /// (ephemeral contents, which are never retried).
    pub fallback: bool,
    /// The envelopes, in order.
    pub envelopes: Vec<Sealed>,
    /// Whether the machine wants to hear how it went ([`Input::Transmitted`]).
    pub report: bool,
}

/// What happened to one envelope of a [`Transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the channel, or relayed live by the server.
    Sent,
    /// The server keeps it in the peer's mailbox.
    Stored,
    /// It did not leave (no channel, no server, refused).
    Failed,
}

/// A request to the signaling server; answers come back as inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingRequest {
    /// Claim the key bundles of every device of `peer`; answer with [`Input::Bundles`].
    FetchBundle {
        /// Whose.
        peer: UserId,
    },
    /// Upload our keys; answer with [`Input::Published`].
    PublishBundle {
        /// The signed bundle (its private halves are already persisted).
        bundle: Box<DeviceBundle>,
    },
    /// Our presence status (the client keeps it for reconnects).
    SetStatus(Status),
    /// The users whose presence we follow (accepted, unblocked contacts; the client keeps the
    /// list for reconnects); answer with [`Input::ContactsSynced`].
    SyncContacts(Vec<UserId>),
    /// Acknowledge mailbox items that are now durably handled.
    AckMailbox(Vec<u64>),
}

/// A request about a direct connection; the runtime answers with [`Input::Connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionRequest {
    /// Start a connection to `peer` as the offerer, as attempt `conn`.
    Offer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
    },
    /// Answer the peer's offer for attempt `conn`.
    Answer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP offer.
        sdp: String,
    },
    /// Apply the peer's answer to our offer.
    AcceptAnswer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP answer.
        sdp: String,
    },
    /// Add a trickled remote candidate.
    AddCandidate {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The candidate line.
        candidate: String,
    },
    /// Add an Opus audio m-line to the open connection by renegotiation (for a call); answer
    /// with [`ConnectionEvent::MediaOffered`] or [`ConnectionEvent::MediaFailed`].
    AddAudio {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
    },
    /// Answer the peer's ICE restart offer on the open connection; answer with
    /// [`ConnectionEvent::RestartAnswered`] (a refused offer is only logged: the peer tries
    /// again, or the connection ends by its own timeout).
    AcceptRestartOffer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP offer.
        sdp: String,
    },
    /// Apply the peer's answer to our ICE restart offer.
    AcceptRestartAnswer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP answer.
        sdp: String,
    },
    /// Answer the peer's media offer on the open connection; answer with
    /// [`ConnectionEvent::MediaAnswered`] or [`ConnectionEvent::MediaFailed`].
    AcceptMediaOffer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP offer.
        sdp: String,
    },
    /// Apply the peer's answer to our media offer.
    AcceptMediaAnswer {
        /// With whom.
        peer: UserId,
        /// The attempt.
        conn: String,
        /// The peer's SDP answer.
        sdp: String,
    },
    /// Close the connection (the attempt, if `conn` is given; otherwise whatever is open).
    Close {
        /// With whom.
        peer: UserId,
        /// Which attempt.
        conn: Option<String>,
    },
}

/// Something the user interface should learn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was stored (ours or someone's), as it was inserted (no reactions yet).
    MessageAdded(Box<Message>),
    /// A message changed: edit, delete, reaction (read it back to show it).
    MessageUpdated(MessageId),
    /// One of our messages moved forward in delivery.
    MessageState {
        /// Which message.
        id: MessageId,
        /// Its conversation.
        conversation: ConversationId,
        /// Its state now.
        state: DeliveryState,
    },
    /// A contact typed or stopped, or a member in a channel.
    Typing {
        /// Who.
        user: UserId,
        /// Typing or not.
        active: bool,
        /// The channel, when in a space (`None`: the direct conversation with `user`).
        channel: Option<dopus_types::ChannelId>,
    },
    /// A contact's record changed (read it back to show it).
    ContactChanged(UserId),
    /// A contact was removed.
    ContactRemoved(UserId),
    /// A contact's presence as the server reports it (as seen by others: never `invisible`).
    Presence {
        /// Who.
        user: UserId,
        /// Their status.
        status: Status,
    },
    /// The signaling connection's state.
    Signaling(SignalingState),
    /// A direct connection's state changed.
    Connection(UserId),
    /// A verification with this contact changed.
    Verification(UserId),
    /// A space changed (its log, or our attempt to join it): read it back to show it.
    SpaceChanged(dopus_types::SpaceId),
    /// The messages of a channel waiting for their key changed: one arrived, was decrypted,
    /// or its wait moved on (withheld, given up). Read the channel's placeholders back.
    ChannelWaiting(dopus_types::ChannelId),
    /// A call was placed, picked up or ended, or its diagnostics changed (read it back).
    Call(dopus_types::CallId),
    /// Who is in the voice channels of a space changed, or our own voice state did (read it
    /// back).
    Voice(dopus_types::SpaceId),
    /// A file transfer was made or changed state (read it back to show it).
    Transfer(crate::store::TransferId),
    /// A broken session with this contact was replaced; `resent` envelopes go again.
    SessionReset {
        /// With whom.
        user: UserId,
        /// How many of our envelopes are re-sent (0 when we asked for the reset).
        resent: usize,
    },
}

/// An input to [`super::NodeMachine::handle`].
#[derive(Debug, Clone)]
pub enum Input {
    /// Envelopes that arrived together, in order.
    Envelopes(Vec<Inbound>),
    /// The signaling connection changed state.
    Signaling(SignalingState),
    /// We are logged in (after every reconnect).
    Authenticated,
    /// The server refused our login.
    AuthFailed {
        /// The server's error code (safe to log).
        code: String,
    },
    /// A contact's presence changed.
    Presence {
        /// Who.
        user: UserId,
        /// Their status as the server shows it.
        status: Status,
    },
    /// The answer to [`SignalingRequest::SyncContacts`]: everyone's presence now.
    ContactsSynced(Vec<(UserId, Status)>),
    /// The server holds few of our one-time keys.
    OneTimeKeysLow {
        /// How many it holds.
        remaining: u64,
    },
    /// The answer to [`SignalingRequest::FetchBundle`].
    Bundles {
        /// Whose.
        peer: UserId,
        /// Their devices' claimed bundles, or why none came (safe to log).
        result: Result<Vec<ClaimedBundle>, String>,
    },
    /// The answer to [`SignalingRequest::PublishBundle`].
    Published {
        /// What was published.
        bundle: Box<DeviceBundle>,
        /// How many one-time keys the server now holds, or why it failed.
        result: Result<u64, String>,
    },
    /// How a [`Transmit`] with `report` went: one entry per envelope, in order.
    Transmitted {
        /// Which hand-over.
        id: u64,
        /// Per envelope.
        outcome: Vec<Delivery>,
    },
    /// Something happened to a direct connection.
    Connection {
        /// With whom.
        peer: UserId,
        /// Which attempt.
        conn: String,
        /// What.
        event: ConnectionEvent,
    },
    /// The file task finished a download: every group verified, the plaintext hash checked,
    /// the state `done` written.
    DownloadDone {
        /// Which transfer.
        id: crate::store::TransferId,
    },
}

/// An output of the machine, to perform after the commit of the batch that made it.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send envelopes.
    Transmit(Transmit),
    /// Ask the signaling server something.
    Signaling(SignalingRequest),
    /// Do something to a direct connection.
    Connection(ConnectionRequest),
    /// Tell the user interface.
    Event(Event),
    /// Ask the file task something.
    Transfer(super::TransferRequest),
    /// Start or stop a call's media.
    Call(super::CallRequest),
    /// Set up or stop the voice channel media mesh.
    Voice(super::VoiceRequest),
}
