//! Contacts and what the node knows about them: presence, the connection, the safety number and
//! emoji verification.

use super::planned::ProfileCard;
use super::{Message, UserId};
use dopus_core::store;
use dopus_core::verification::{SafetyNumber, SasState, SasVerification};
use dopus_proto::signaling::Status;
use dopus_rtc::Diagnostics;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A presence as the API names it. Others never see `invisible`: it reads as `offline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected and available.
    Online,
    /// Connected but idle.
    Away,
    /// Connected, do not disturb.
    Busy,
    /// Connected but shown as offline to everyone (only ever our own status).
    Invisible,
    /// Not connected, or not a mutual contact.
    Offline,
}

impl Presence {
    /// A status exactly as it is (our own).
    pub fn own(s: Status) -> Self {
        match s {
            Status::Online => Self::Online,
            Status::Away => Self::Away,
            Status::Busy => Self::Busy,
            Status::Invisible => Self::Invisible,
            Status::Offline => Self::Offline,
        }
    }

    /// A contact's presence as others may see it: unknown and invisible read as `offline`.
    pub fn seen(s: Option<Status>) -> Self {
        s.map_or(Self::Offline, |s| Self::own(s.as_seen_by_others()))
    }
}

/// Where a contact relationship stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Both sides agreed; messages flow.
    Accepted,
    /// We asked; they have not answered.
    OutgoingRequest,
    /// They asked; we have not answered.
    IncomingRequest,
    /// We declined their request.
    Declined,
}

impl From<store::ContactState> for ContactState {
    fn from(s: store::ContactState) -> Self {
        match s {
            store::ContactState::Accepted => Self::Accepted,
            store::ContactState::OutgoingRequest => Self::OutgoingRequest,
            store::ContactState::IncomingRequest => Self::IncomingRequest,
            store::ContactState::Declined => Self::Declined,
        }
    }
}

/// How the next message to a contact would travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionMode {
    /// Over our own WebRTC data channel.
    Direct,
    /// Through the signaling server to their online node.
    Relayed,
    /// Into the server's mailbox until they come online.
    Mailbox,
    /// Nowhere yet (no server configured).
    None,
}

/// The WebRTC connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Created, or no connection attempted.
    New,
    /// Connectivity checks running.
    Connecting,
    /// ICE and DTLS up.
    Connected,
    /// Consent lost; may recover.
    Disconnected,
    /// Gave up.
    Failed,
    /// Closed.
    Closed,
}

impl From<&dopus_rtc::ConnectionState> for ConnectionState {
    fn from(s: &dopus_rtc::ConnectionState) -> Self {
        use dopus_rtc::ConnectionState as C;
        match s {
            C::New => Self::New,
            C::Checking => Self::Connecting,
            C::Connected => Self::Connected,
            C::Disconnected => Self::Disconnected,
            C::Failed(_) => Self::Failed,
            C::Closed => Self::Closed,
        }
    }
}

/// An ICE candidate type (RFC 8445).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CandidateType {
    /// A local interface's address.
    Host,
    /// Our address as a STUN server saw it.
    Srflx,
    /// Learned from a connectivity check.
    Prflx,
    /// A TURN relay.
    Relay,
}

impl From<dopus_rtc::CandidateType> for CandidateType {
    fn from(c: dopus_rtc::CandidateType) -> Self {
        use dopus_rtc::CandidateType as C;
        match c {
            C::Host => Self::Host,
            C::Srflx => Self::Srflx,
            C::Prflx => Self::Prflx,
            C::Relay => Self::Relay,
        }
    }
}

/// Counters of the current (or last) connection, as last read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Traffic {
    /// Data channel messages (envelopes) sent.
    #[ts(type = "number")]
    pub messages_sent: u64,
    /// Data channel messages received.
    #[ts(type = "number")]
    pub messages_received: u64,
    /// UDP payload bytes sent, all protocols.
    #[ts(type = "number")]
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    #[ts(type = "number")]
    pub bytes_received: u64,
    /// How often a send found the send buffer full.
    #[ts(type = "number")]
    pub send_waits: u64,
}

/// How we reach a contact.
///
/// Unified: today the node leaves `local_candidate`, `remote_candidate`, `rtt_ms` and `traffic`
/// out when it never tried a connection and writes `null` otherwise; this shape always writes
/// them (`null` when unknown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Connection {
    /// How the next message would travel.
    pub mode: ConnectionMode,
    /// The WebRTC connection's state.
    pub state: ConnectionState,
    /// Our side of the selected candidate pair.
    pub local_candidate: Option<CandidateType>,
    /// Their side of the selected candidate pair.
    pub remote_candidate: Option<CandidateType>,
    /// Round trip of the latest consent check, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Why there is no direct path, in words (safe to show: no addresses).
    pub reason: Option<String>,
    /// Counters, once a connection was made.
    pub traffic: Option<Traffic>,
}

/// What the runtime knows about one peer connection, for [`Connection::from_peer`].
#[derive(Debug, Clone, Copy)]
pub struct PeerFacts<'a> {
    /// The connection's state.
    pub state: &'a dopus_rtc::ConnectionState,
    /// Whether its data channel is open.
    pub open: bool,
    /// Fresh diagnostics, or the last ones read.
    pub diagnostics: Option<&'a Diagnostics>,
    /// The last connection error, in words.
    pub last_error: Option<&'a str>,
}

impl Connection {
    /// No connection to this contact: messages go to the mailbox if a server is configured.
    pub fn without_peer(contact_online: bool, server: bool) -> Self {
        Self {
            mode: if server {
                ConnectionMode::Mailbox
            } else {
                ConnectionMode::None
            },
            state: ConnectionState::New,
            local_candidate: None,
            remote_candidate: None,
            rtt_ms: None,
            reason: (!contact_online)
                .then(|| "the contact is offline: messages wait in the server's mailbox".into()),
            traffic: None,
        }
    }

    /// A connection the runtime holds. `contact_online`: the contact is present (so the server
    /// relays to their node); `server`: a signaling server is configured.
    pub fn from_peer(p: PeerFacts<'_>, contact_online: bool, server: bool) -> Self {
        let mode = if p.open {
            ConnectionMode::Direct
        } else if server && contact_online {
            ConnectionMode::Relayed
        } else if server {
            ConnectionMode::Mailbox
        } else {
            ConnectionMode::None
        };
        let pair = p.diagnostics.and_then(|d| d.selected_pair.as_ref());
        let reason = match p.state {
            dopus_rtc::ConnectionState::Failed(r) => Some(r.to_string()),
            _ => p
                .diagnostics
                .and_then(|d| d.failure.as_ref())
                .map(ToString::to_string)
                .or_else(|| p.last_error.map(str::to_owned)),
        };
        Self {
            mode,
            state: p.state.into(),
            local_candidate: pair.map(|p| p.local.into()),
            remote_candidate: pair.map(|p| p.remote.into()),
            rtt_ms: p
                .diagnostics
                .and_then(|d| d.rtt)
                .map(|r| r.as_secs_f64() * 1000.0),
            reason,
            traffic: p.diagnostics.map(|d| Traffic {
                messages_sent: d.messages_sent,
                messages_received: d.messages_received,
                bytes_sent: d.bytes_sent,
                bytes_received: d.bytes_received,
                send_waits: d.send_waits,
            }),
        }
    }
}

/// The live facts about a contact that are not in its stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactLive {
    /// Their presence as we may see it.
    pub presence: Presence,
    /// Incoming messages after the last one we read.
    pub unread: u64,
    /// The newest message of the conversation.
    pub last_message: Option<Message>,
    /// How we reach them.
    pub connection: Connection,
}

/// A contact, or someone who asked to be one (`GET /contacts`, the `contact` event, and the
/// answer of every contact operation).
///
/// Unified: the runtime builds the record part in `json::contact` and adds the live fields in
/// `Ready::contact_json`, and the CLI's offline `contacts add`/`contacts list` wrote a smaller
/// shape (`display_name` null when unknown, no `note`, no live fields); the CLI now writes this
/// one too (presence `offline` and no connection, since no node runs). `display_name` is `""`
/// when unknown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Contact {
    /// Their user ID.
    pub user_id: UserId,
    /// The name we show for them (ours, or the one they sent); `""` when unknown.
    pub display_name: String,
    /// Where the relationship stands.
    pub state: ContactState,
    /// We compared safety numbers or emoji with them.
    pub verified: bool,
    /// We refuse everything from them.
    pub blocked: bool,
    /// The note that came with their contact request.
    pub note: Option<String>,
    /// Their presence (`offline` unless mutual contacts and online).
    pub presence: Presence,
    /// Incoming messages after the last one we read.
    #[ts(type = "number")]
    pub unread: u64,
    /// The newest message of the conversation.
    pub last_message: Option<Message>,
    /// How the next message would travel.
    pub connection: Connection,
    /// The newest profile card they sent us (avatar, status text); left out if none came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub profile: Option<ProfileCard>,
}

impl Contact {
    /// A stored contact with its live facts.
    pub fn from_record(c: &store::Contact, live: ContactLive) -> Self {
        Self {
            user_id: UserId::from(&c.user_id),
            display_name: c.display_name.clone().unwrap_or_default(),
            state: c.state.into(),
            verified: c.verified,
            blocked: c.blocked,
            note: c.request_note.clone(),
            presence: live.presence,
            unread: live.unread,
            last_message: live.last_message,
            connection: live.connection,
            profile: None,
        }
    }
}

/// `GET /contacts/{id}/safety`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Safety {
    /// 12 groups of 5 digits, separated by spaces.
    pub safety_number: String,
    /// Whether the contact is marked verified.
    pub verified: bool,
}

impl Safety {
    /// The safety number of us and them.
    pub fn new(n: &SafetyNumber, verified: bool) -> Self {
        Self {
            safety_number: n.groups().join(" "),
            verified,
        }
    }
}

/// Where an emoji verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum VerificationState {
    /// None running.
    None,
    /// Started; waiting for the other side's keys.
    Waiting,
    /// Keys exchanged: compare the emoji.
    Compare,
    /// We confirmed; waiting for them.
    Confirmed,
    /// Both confirmed and the MACs checked out.
    Verified,
    /// Cancelled by either side (or timed out).
    Cancelled,
}

/// One emoji of the short authentication string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SasEmoji {
    /// The emoji.
    pub symbol: String,
    /// Its English name.
    pub name: String,
}

/// `GET|POST /contacts/{id}/verification…` and the `verification` event.
///
/// Unified: with no verification the node writes only `{"state": "none"}` today; this shape
/// always writes every field (`null` when not known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Verification {
    /// Where it stands.
    pub state: VerificationState,
    /// The transaction id.
    pub txn: Option<String>,
    /// Seven emoji, identical on both sides unless someone is in the middle.
    pub emoji: Option<Vec<SasEmoji>>,
    /// The same check as three 4-digit numbers.
    pub decimals: Option<Vec<u16>>,
    /// Why it was cancelled.
    pub cancel_code: Option<String>,
    /// Whether we cancelled it.
    pub cancelled_by_us: Option<bool>,
}

impl Verification {
    /// The verification with a contact, if one exists.
    pub fn from_sas(v: Option<&SasVerification>) -> Self {
        let Some(v) = v else {
            return Self {
                state: VerificationState::None,
                txn: None,
                emoji: None,
                decimals: None,
                cancel_code: None,
                cancelled_by_us: None,
            };
        };
        let (state, cancel) = match v.state() {
            SasState::WaitingForAccept | SasState::WaitingForKey => {
                (VerificationState::Waiting, None)
            }
            SasState::ShowingSas => (VerificationState::Compare, None),
            SasState::WaitingForMac => (VerificationState::Confirmed, None),
            SasState::Verified => (VerificationState::Verified, None),
            SasState::Cancelled { code, by_us } => {
                (VerificationState::Cancelled, Some((code, by_us)))
            }
        };
        Self {
            state,
            txn: Some(v.txn().to_owned()),
            emoji: v.emoji().map(|e| {
                e.iter()
                    .map(|x| SasEmoji {
                        symbol: x.symbol.to_owned(),
                        name: x.name.to_owned(),
                    })
                    .collect()
            }),
            decimals: v.decimals().map(|(a, b, c)| vec![a, b, c]),
            cancel_code: cancel.map(|(c, _)| format!("{c:?}")),
            cancelled_by_us: cancel.map(|(_, b)| b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::fixtures::{contact, incoming, user};
    use dopus_rtc::{FailureReason, NatBehavior, SelectedPair};
    use dopus_types::Redacted;
    use std::time::Duration;

    fn diagnostics() -> Diagnostics {
        Diagnostics {
            state: dopus_rtc::ConnectionState::Connected,
            selected_pair: Some(SelectedPair {
                local: dopus_rtc::CandidateType::Host,
                remote: dopus_rtc::CandidateType::Srflx,
                local_addr: Redacted::new("127.0.0.1:1000".parse().expect("addr")),
                remote_addr: Redacted::new("127.0.0.1:2000".parse().expect("addr")),
            }),
            rtt: Some(Duration::from_micros(1500)),
            bytes_sent: 1000,
            bytes_received: 2000,
            messages_sent: 3,
            messages_received: 4,
            send_waits: 0,
            local_candidates: vec![],
            remote_candidates: vec![],
            nat: NatBehavior::Unknown,
            turn_unused: false,
            setup_time: None,
            failure: None,
        }
    }

    #[test]
    fn presence_hides_invisible() {
        assert_eq!(Presence::seen(Some(Status::Invisible)), Presence::Offline);
        assert_eq!(Presence::seen(None), Presence::Offline);
        assert_eq!(Presence::own(Status::Invisible), Presence::Invisible);
        insta::assert_json_snapshot!([
            Presence::Online,
            Presence::Away,
            Presence::Busy,
            Presence::Invisible,
            Presence::Offline
        ]);
    }

    #[test]
    fn connections() {
        let d = diagnostics();
        let direct = Connection::from_peer(
            PeerFacts {
                state: &dopus_rtc::ConnectionState::Connected,
                open: true,
                diagnostics: Some(&d),
                last_error: None,
            },
            true,
            true,
        );
        let failed = Connection::from_peer(
            PeerFacts {
                state: &dopus_rtc::ConnectionState::Failed(FailureReason::NoAnswer),
                open: false,
                diagnostics: None,
                last_error: None,
            },
            true,
            true,
        );
        insta::assert_json_snapshot!("connection_direct", direct);
        insta::assert_json_snapshot!("connection_relayed_failed", failed);
        insta::assert_json_snapshot!("connection_mailbox", Connection::without_peer(false, true));
        insta::assert_json_snapshot!("connection_none", Connection::without_peer(true, false));
    }

    #[test]
    fn contact_with_live_facts() {
        let me = user(1);
        let live = ContactLive {
            presence: Presence::Busy,
            unread: 3,
            last_message: Some(Message::from_record(&incoming(), &[], &me)),
            connection: Connection::without_peer(true, true),
        };
        insta::assert_json_snapshot!(Contact::from_record(
            &contact(store::ContactState::Accepted),
            live
        ));
    }

    #[test]
    fn contact_request_without_a_name() {
        let mut c = contact(store::ContactState::IncomingRequest);
        c.display_name = None;
        c.verified = false;
        c.request_note = Some("hi, it's Bob from the meetup".into());
        let live = ContactLive {
            presence: Presence::Offline,
            unread: 0,
            last_message: None,
            connection: Connection::without_peer(false, true),
        };
        let dto = Contact::from_record(&c, live);
        assert_eq!(dto.display_name, "");
        insta::assert_json_snapshot!(dto);
    }

    #[test]
    fn safety_number() {
        let n = SafetyNumber::new(&user(1), &user(2));
        let s = Safety::new(&n, false);
        assert_eq!(s.safety_number.split(' ').count(), 12);
        insta::assert_json_snapshot!(s);
    }

    #[test]
    fn no_verification() {
        insta::assert_json_snapshot!(Verification::from_sas(None));
    }
}
