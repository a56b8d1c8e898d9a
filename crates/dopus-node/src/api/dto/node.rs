//! The node itself: its phase, our identity, settings, and the error body.

use super::{Presence, UserId};
use dopus_core::store::AccountRecord;
use dopus_proto::signaling::Status as OwnStatus;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Where the node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// No store yet: create an identity.
    NoIdentity,
    /// A store exists and waits for its passphrase.
    Locked,
    /// Unlocked and running.
    Ready,
}

/// The signaling client's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum SignalingState {
    /// Not connected (and retrying, if a server is configured).
    Disconnected,
    /// Opening the WebSocket.
    Connecting,
    /// Proving our identity key.
    Authenticating,
    /// Connected and authenticated.
    Connected,
}

impl From<dopus_signaling::ConnectionState> for SignalingState {
    fn from(s: dopus_signaling::ConnectionState) -> Self {
        use dopus_signaling::ConnectionState as C;
        match s {
            C::Disconnected => Self::Disconnected,
            C::Connecting => Self::Connecting,
            C::Authenticating => Self::Authenticating,
            C::Connected => Self::Connected,
        }
    }
}

/// The signaling part of [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct StatusSignaling {
    /// The configured server; `null` when none is (or before unlocking).
    pub url: Option<String>,
    /// The client's state.
    pub state: SignalingState,
}

/// `GET /status`: works before unlocking, so a UI can offer "create" or "unlock".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Status {
    /// The node's phase.
    pub state: NodeState,
    /// The node's version.
    pub version: String,
    /// Our user ID (only once ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub user_id: Option<UserId>,
    /// Our display name (only once ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub display_name: Option<String>,
    /// This device's id (only once ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub device_id: Option<String>,
    /// The signaling connection.
    pub signaling: StatusSignaling,
}

impl Status {
    /// Before unlocking (no identity, or locked): nothing but the phase is told.
    pub fn not_ready(state: NodeState) -> Self {
        Self {
            state,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            user_id: None,
            display_name: None,
            device_id: None,
            signaling: StatusSignaling {
                url: None,
                state: SignalingState::Disconnected,
            },
        }
    }

    /// Unlocked.
    pub fn ready(
        account: &AccountRecord,
        server_url: Option<String>,
        signaling: SignalingState,
    ) -> Self {
        Self {
            state: NodeState::Ready,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            user_id: Some(UserId::from(&account.user_id)),
            display_name: Some(account.display_name.clone()),
            device_id: Some(account.device_id.to_string()),
            signaling: StatusSignaling {
                url: server_url,
                state: signaling,
            },
        }
    }
}

/// A device's public keys, base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct DeviceKeys {
    /// Signs the device's one-time keys.
    pub ed25519: String,
    /// The device's Olm identity key.
    pub curve25519: String,
}

/// `GET /me` (and the answer of `/identity`, `/unlock`, `PUT /me/status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Me {
    /// Our user ID.
    pub user_id: UserId,
    /// The name we show to others.
    pub display_name: String,
    /// This device's id.
    pub device_id: String,
    /// This device's public keys.
    pub device_keys: DeviceKeys,
    /// A short hash of our identity key, in groups of five hex digits.
    pub fingerprint: String,
    /// Our own status as we set it (`invisible` included).
    pub status: Presence,
    /// Our profile as contacts see it; left out until we set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub profile: Option<super::planned::ProfileCard>,
}

impl Me {
    /// Our account and our chosen status.
    pub fn new(account: &AccountRecord, status: OwnStatus) -> Self {
        Self {
            user_id: UserId::from(&account.user_id),
            display_name: account.display_name.clone(),
            device_id: account.device_id.to_string(),
            device_keys: DeviceKeys {
                ed25519: account.device_keys.ed25519.to_base64(),
                curve25519: account.device_keys.curve25519.to_base64(),
            },
            fingerprint: crate::account::fingerprint(account.user_id.key()),
            status: Presence::own(status),
            profile: None,
        }
    }
}

/// The UI's theme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Dark (the default).
    Dark,
    /// Light.
    Light,
}

/// `GET|PUT /settings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Settings {
    /// The signaling server; `null` when none is configured.
    pub server_url: Option<String>,
    /// STUN/TURN URLs.
    pub ice_servers: Vec<String>,
    /// Send read receipts (off by default).
    pub read_receipts: bool,
    /// The UI's theme.
    pub theme: Theme,
    /// Fetch link previews for links we send (off by default; a receiver never fetches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub link_previews: Option<bool>,
    /// Privacy mode: connect to contacts through the server's TURN relays only, so they never
    /// learn this machine's IP address (off by default). Turning it on closes today's direct
    /// connections; without a relay, messages go through the server.
    pub relay_only: bool,
    /// This run was started with `--relay-only`: relay-only is on whatever the setting says.
    pub relay_only_forced: bool,
}

impl Settings {
    /// The runtime's settings. An unknown stored theme reads as dark, as the UI shows it.
    pub fn new(
        server_url: Option<String>,
        ice_servers: Vec<String>,
        read_receipts: bool,
        theme: &str,
        link_previews: bool,
        relay_only: bool,
        relay_only_forced: bool,
    ) -> Self {
        Self {
            server_url,
            ice_servers,
            read_receipts,
            theme: if theme == "light" {
                Theme::Light
            } else {
                Theme::Dark
            },
            link_previews: Some(link_previews),
            relay_only,
            relay_only_forced,
        }
    }
}

/// The stable machine-readable error codes (docs/api.md, "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing or invalid field.
    BadRequest,
    /// A user ID failed to parse.
    InvalidUserId,
    /// Missing or wrong API token.
    Unauthorized,
    /// Unlock with a wrong passphrase.
    WrongPassphrase,
    /// Host or Origin not local.
    BadHost,
    /// No such contact, message or conversation.
    NotFound,
    /// Already exists, already pending, already unlocked.
    Conflict,
    /// Locked, or no identity yet.
    Locked,
    /// The store cannot be opened.
    Store,
    /// Body or text over its limit.
    TooLarge,
    /// Not permitted (someone else's message, a non-contact).
    NotAllowed,
    /// Needs the signaling server, which is unreachable.
    Offline,
    /// Anything else (see the node log).
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 13] = [
        Self::BadRequest,
        Self::InvalidUserId,
        Self::Unauthorized,
        Self::WrongPassphrase,
        Self::BadHost,
        Self::NotFound,
        Self::Conflict,
        Self::Locked,
        Self::Store,
        Self::TooLarge,
        Self::NotAllowed,
        Self::Offline,
        Self::Internal,
    ];

    /// The code written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The code as written in the body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidUserId => "invalid_user_id",
            Self::Unauthorized => "unauthorized",
            Self::WrongPassphrase => "wrong_passphrase",
            Self::BadHost => "bad_host",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Locked => "locked",
            Self::Store => "store",
            Self::TooLarge => "too_large",
            Self::NotAllowed => "not_allowed",
            Self::Offline => "offline",
            Self::Internal => "internal",
        }
    }
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// A safe, human-readable sentence (no secrets, no addresses).
    pub message: String,
}

/// Every error answer: `{ "error": { "code", "message" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_before_and_after_unlock() {
        let mut locked =
            serde_json::to_value(Status::not_ready(NodeState::Locked)).expect("serializes");
        locked["version"] = "<version>".into();
        insta::assert_json_snapshot!("status_locked", locked);
        let mut no_id =
            serde_json::to_value(Status::not_ready(NodeState::NoIdentity)).expect("serializes");
        no_id["version"] = "<version>".into();
        insta::assert_json_snapshot!("status_no_identity", no_id);
    }

    fn account() -> AccountRecord {
        let user = crate::api::dto::fixtures::user(1);
        AccountRecord {
            user_id: user,
            identity_pickle: dopus_core::store::Pickle::new("<encrypted>"),
            device_id: "DEVICE1".parse().expect("a valid device id"),
            device_keys: dopus_types::DeviceKeys {
                ed25519: *user.key(),
                curve25519: dopus_types::Curve25519Key::from_bytes([7; 32]),
            },
            account_pickle: dopus_core::store::Pickle::new("<encrypted>"),
            certificate_json: "{}".into(),
            display_name: "Alice".into(),
            created_at: dopus_types::Timestamp(1_699_000_000_000),
        }
    }

    #[test]
    fn me() {
        insta::assert_json_snapshot!(Me::new(&account(), OwnStatus::Invisible));
    }

    #[test]
    fn status_ready() {
        let mut v = serde_json::to_value(Status::ready(
            &account(),
            Some("ws://127.0.0.1:7400".into()),
            dopus_signaling::ConnectionState::Authenticating.into(),
        ))
        .expect("serializes");
        v["version"] = "<version>".into();
        insta::assert_json_snapshot!(v);
    }

    #[test]
    fn settings() {
        let s = Settings::new(
            Some("wss://signal.example.org".into()),
            vec!["stun:stun.example.org:3478".into()],
            false,
            "light",
            true,
            false,
            false,
        );
        insta::assert_json_snapshot!(s);
        assert_eq!(
            Settings::new(None, vec![], true, "weird", false, false, false).theme,
            Theme::Dark
        );
    }

    #[test]
    fn error_codes_match_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                code.as_str()
            );
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        insta::assert_json_snapshot!(ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::NotFound,
                message: "no such message".into(),
            },
        });
    }
}
