//! Key re-requests: the bookkeeping behind "waiting for keys".
//!
//! When a channel message names a session we lack (or know only from a later index), the node
//! keeps the message (`MegolmWaitingRecord`) and calls [`KeyRequests::need`]: the first request
//! goes to the session's owner. If no key arrives, [`KeyRequests::handle_timeout`] asks again
//! with backoff, widening to other devices that may read the channel, and gives up after
//! [`MAX_ATTEMPTS`]. A withheld answer from the owner ends the wait with its reason, so the UI
//! can say why instead of showing a silent gap. Everything is driven by the time passed in.

use dopus_proto::peer::PeerAddress;
use dopus_proto::space::{SpaceContent, WithheldCode};
use dopus_types::{ChannelId, SpaceId, Timestamp};
use std::collections::BTreeMap;

/// Attempts before giving up (the first included).
pub const MAX_ATTEMPTS: u32 = 6;
/// Wait before the first retry; each retry waits three times longer.
pub const FIRST_RETRY_MS: u64 = 10_000;
/// Most sessions waited for at once (older waits are dropped first).
pub const MAX_WAITING: usize = 10_000;

/// Where a wait stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitState {
    /// Requests are out.
    Asking,
    /// The owner refused, with this reason.
    Withheld(WithheldCode),
    /// Nobody answered in [`MAX_ATTEMPTS`] tries.
    GaveUp,
}

/// One session we wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The space.
    pub space: SpaceId,
    /// The channel the message was for.
    pub channel: ChannelId,
    /// The session.
    pub session_id: String,
    /// Its owner.
    pub owner: PeerAddress,
    /// The first index we need.
    pub from_index: u32,
    /// When we first needed it.
    pub since: Timestamp,
    /// Requests sent so far.
    pub attempts: u32,
    /// When to ask again.
    pub next_at: Timestamp,
    /// The request id (answers echo it).
    pub request: String,
    /// Where it stands.
    pub state: WaitState,
}

/// Requests to send: `content` over Olm to each device in `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRequestOut {
    /// The devices to ask.
    pub to: Vec<PeerAddress>,
    /// A [`SpaceContent::SpaceKeyRequest`].
    pub content: SpaceContent,
}

/// Outstanding key requests.
#[derive(Clone, Debug, Default)]
pub struct KeyRequests {
    waiting: BTreeMap<String, Waiting>,
    next_id: u64,
    /// Sessions given up on since [`KeyRequests::take_given_up`] was last called.
    given_up: Vec<String>,
}

impl KeyRequests {
    /// No outstanding requests.
    pub fn new() -> Self {
        Self::default()
    }

    fn content(w: &Waiting) -> SpaceContent {
        SpaceContent::SpaceKeyRequest {
            space: w.space,
            channel: w.channel,
            session_id: w.session_id.clone(),
            owner: w.owner.clone(),
            from_index: w.from_index,
            request: w.request.clone(),
        }
    }

    /// A message needs `session_id` from `index`. Returns the first request (to the owner), or
    /// `None` if we already wait for it (a lower index widens the wait and asks again).
    #[allow(clippy::too_many_arguments, reason = "the facts a key request carries")]
    pub fn need(
        &mut self,
        now: Timestamp,
        space: SpaceId,
        channel: ChannelId,
        session_id: &str,
        owner: PeerAddress,
        index: u32,
    ) -> Option<KeyRequestOut> {
        if let Some(w) = self.waiting.get_mut(session_id) {
            if index >= w.from_index || w.state != WaitState::Asking {
                return None;
            }
            w.from_index = index;
            w.attempts += 1;
            w.next_at = now.plus_millis(FIRST_RETRY_MS);
            return Some(KeyRequestOut {
                to: vec![w.owner.clone()],
                content: Self::content(w),
            });
        }
        if self.waiting.len() >= MAX_WAITING
            && let Some(oldest) = self
                .waiting
                .values()
                .min_by_key(|w| (w.since, w.session_id.clone()))
                .map(|w| w.session_id.clone())
        {
            self.waiting.remove(&oldest);
        }
        self.next_id += 1;
        let w = Waiting {
            space,
            channel,
            session_id: session_id.to_owned(),
            owner: owner.clone(),
            from_index: index,
            since: now,
            attempts: 1,
            next_at: now.plus_millis(FIRST_RETRY_MS),
            request: format!("kr{}", self.next_id),
            state: WaitState::Asking,
        };
        let out = KeyRequestOut {
            to: vec![owner],
            content: Self::content(&w),
        };
        self.waiting.insert(session_id.to_owned(), w);
        Some(out)
    }

    /// When [`KeyRequests::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.waiting
            .values()
            .filter(|w| w.state == WaitState::Asking)
            .map(|w| w.next_at)
            .min()
    }

    /// Asks again for every wait that is due: the owner and the channel's other readers
    /// (`readers`, for example the devices of the channel's audience), with backoff; gives up
    /// after [`MAX_ATTEMPTS`].
    pub fn handle_timeout(
        &mut self,
        now: Timestamp,
        readers: &dyn Fn(&ChannelId) -> Vec<PeerAddress>,
    ) -> Vec<KeyRequestOut> {
        let mut out = Vec::new();
        for w in self.waiting.values_mut() {
            if w.state != WaitState::Asking || w.next_at > now {
                continue;
            }
            if w.attempts >= MAX_ATTEMPTS {
                w.state = WaitState::GaveUp;
                self.given_up.push(w.session_id.clone());
                continue;
            }
            let backoff = FIRST_RETRY_MS.saturating_mul(3u64.saturating_pow(w.attempts));
            w.attempts += 1;
            w.next_at = now.plus_millis(backoff);
            let mut to = vec![w.owner.clone()];
            for r in readers(&w.channel) {
                if !to.contains(&r) {
                    to.push(r);
                }
            }
            out.push(KeyRequestOut {
                to,
                content: Self::content(w),
            });
        }
        out
    }

    /// Resumes a wait kept across a restart (the waiting messages are in the store, the
    /// requests were in memory). `Asking` asks the owner and the channel's readers at the next
    /// [`KeyRequests::handle_timeout`] (due at `now`), with the backoff from the start;
    /// `Withheld` stays withheld (a key that still comes is taken). `None` if we already wait.
    #[allow(clippy::too_many_arguments, reason = "the facts a key request carries")]
    pub fn resume(
        &mut self,
        now: Timestamp,
        space: SpaceId,
        channel: ChannelId,
        session_id: &str,
        owner: PeerAddress,
        index: u32,
        state: WaitState,
    ) -> bool {
        if self.waiting.contains_key(session_id) || self.waiting.len() >= MAX_WAITING {
            return false;
        }
        self.next_id += 1;
        self.waiting.insert(
            session_id.to_owned(),
            Waiting {
                space,
                channel,
                session_id: session_id.to_owned(),
                owner,
                from_index: index,
                since: now,
                attempts: 0,
                next_at: now,
                request: format!("kr{}", self.next_id),
                state,
            },
        );
        true
    }

    /// The sessions given up on (no answer in [`MAX_ATTEMPTS`]) since the last call.
    pub fn take_given_up(&mut self) -> Vec<String> {
        std::mem::take(&mut self.given_up)
    }

    /// The key arrived: stop waiting. Returns whether we were waiting (then decrypt the
    /// messages kept for it).
    pub fn received(&mut self, session_id: &str) -> bool {
        self.waiting.remove(session_id).is_some()
    }

    /// Whether a forwarded key for this session answers one of our requests.
    pub fn is_requested(&self, session_id: &str) -> bool {
        self.waiting.contains_key(session_id)
    }

    /// A device refused. Only the owner's refusal ends the wait (another holder may not have
    /// the key while someone else does).
    /// Returns whether the wait ended with it.
    pub fn withheld(&mut self, session_id: &str, from: &PeerAddress, code: WithheldCode) -> bool {
        if let Some(w) = self.waiting.get_mut(session_id)
            && w.owner == *from
            && w.state != WaitState::Withheld(code)
        {
            w.state = WaitState::Withheld(code);
            return true;
        }
        false
    }

    /// Where the wait for a session stands.
    pub fn status(&self, session_id: &str) -> Option<&Waiting> {
        self.waiting.get(session_id)
    }

    /// Every wait, by session id.
    pub fn waiting(&self) -> impl Iterator<Item = &Waiting> {
        self.waiting.values()
    }
}
