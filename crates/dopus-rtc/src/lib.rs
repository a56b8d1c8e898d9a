#![doc = include_str!("../README.md")]

mod browser;
mod cert;
mod config;
mod diagnostics;
mod engine;
mod error;
mod event;
mod gather;
mod interfaces;
mod media;
mod peer;
mod time;
mod turn;

#[cfg(feature = "fake-browser")]
pub use browser::FakeBrowser;
pub use browser::{
    BrowserLeg, BrowserLegHandle, CONNECT_TIMEOUT as BROWSER_CONNECT_TIMEOUT, LegEvent, LegStats,
    MAX_OFFER, OpenedLeg, loopback_only,
};
pub use cert::{CertError, DtlsIdentity};
pub use config::{
    BindPolicy, ConfigError, DEFAULT_BLOB_IN_FLIGHT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEND_BUFFER,
    IceServer, MAX_MESSAGE_SIZE_LIMIT, RtcConfig,
};
pub use diagnostics::{
    CandidateType, CloseReason, ConnectionState, Connectivity, Diagnostics, FailureReason,
    NatBehavior, PathKind, RelayInfo, SelectedPair,
};
pub use error::PeerError;
pub use media::{
    AudioSender, KEYFRAME_REQUEST_INTERVAL, MediaEvent, MediaFrame, MediaStats, VIDEO_RATE_MAX_BPS,
    VIDEO_RATE_MIN_BPS, VIDEO_RATE_START_BPS, VOICE_ACTIVITY_DBOV,
};
pub use peer::{PeerConnection, PeerEvent, PeerEvents, PeerHandle};
pub use turn::{RelayState, RelayTransport};
