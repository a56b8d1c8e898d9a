//! Typing in channels (docs/spaces.md, "Typing"): ephemeral notices sent over Olm to the
//! channel's readers, live only (relayed or direct, never kept in a mailbox nor in history).
//!
//! - the sender throttles: one `active` notice per channel every [`TYPING_INTERVAL_MS`] at
//!   most, and a stop only after a start (as in direct chats);
//! - the content is a chat `typing` under `Conversation::Channel`: a node that predates it
//!   drops it unread (its chat layer ignores channel conversations);
//! - it goes to the readers we can reach now (a session with them, and not known offline), so
//!   a notice never starts a key fetch or waits for a session;
//! - the receiver judges it against the space as it resolves it: the sender must be a member
//!   who may view the channel and send in it, and so must we be a reader; a member's notices
//!   are rate-limited; an `active` one expires after [`TYPING_EXPIRY_MS`] without a refresh,
//!   and the sender's next message ends it.

use super::super::{CommandError, Event, NodeMachine};
use super::refused;
use crate::chat::{Outgoing, TYPING_EXPIRY_MS, TYPING_INTERVAL_MS};
use crate::space::ratelimit::RateClass;
use crate::store::{EnvelopeId, Store};
use dopus_proto::peer::{ChatContent, Content, Conversation};
use dopus_proto::signaling::Status;
use dopus_proto::space::Permissions;
use dopus_types::{ChannelId, SpaceId, Timestamp, UserId};
use std::collections::BTreeMap;

/// Most (channel, member) typing indicators held at once (older ones are dropped first).
const MAX_SEEN: usize = 4_096;

/// Typing state of the spaces part of the machine (never stored).
#[derive(Debug, Default)]
pub(in crate::machine) struct ChannelTyping {
    /// When we last sent `active` in each channel (cleared by a stop or a message).
    sent: BTreeMap<ChannelId, Timestamp>,
    /// Members typing in a channel, and when their indicator expires.
    seen: BTreeMap<(ChannelId, UserId), Timestamp>,
}

impl ChannelTyping {
    /// Whether a notice should go out now (throttling `active`, dropping a stop that follows no
    /// start).
    fn should_send(&mut self, now: Timestamp, channel: ChannelId, active: bool) -> bool {
        if active {
            if self
                .sent
                .get(&channel)
                .is_some_and(|last| now.millis_since(*last) < TYPING_INTERVAL_MS)
            {
                return false;
            }
            self.sent.insert(channel, now);
            true
        } else {
            self.sent.remove(&channel).is_some()
        }
    }

    /// Takes a member's notice in; `true` when the indicator changed (an event is due).
    fn take(&mut self, now: Timestamp, channel: ChannelId, user: UserId, active: bool) -> bool {
        if active {
            if self.seen.len() >= MAX_SEEN && !self.seen.contains_key(&(channel, user)) {
                // The one that expires first goes.
                if let Some(first) = self.seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    self.seen.remove(&first);
                }
            }
            self.seen
                .insert((channel, user), now.plus_millis(TYPING_EXPIRY_MS))
                .is_none()
        } else {
            self.seen.remove(&(channel, user)).is_some()
        }
    }

    /// The earliest expiry of a held indicator.
    pub(in crate::machine) fn poll_timeout(&self) -> Option<Timestamp> {
        self.seen.values().min().copied()
    }
}

impl NodeMachine {
    /// We started or stopped typing in `channel` (docs/api.md, `POST /channels/{id}/typing`).
    /// Refused unless we may send there; throttled; sent live to the readers we can reach.
    pub fn channel_typing(
        &mut self,
        now: Timestamp,
        store: &dyn Store,
        channel: ChannelId,
        active: bool,
    ) -> Result<(), CommandError> {
        let space = self
            .spaces
            .space_of(&channel)
            .ok_or(CommandError::UnknownChannel)?;
        let state = self
            .spaces
            .states
            .get(&space)
            .ok_or(CommandError::UnknownSpace)?;
        state.accepts_message(&self.me, &channel).map_err(refused)?;
        let readers = state.audience(&channel);
        if !self.spaces.typing.should_send(now, channel, active) {
            return Ok(());
        }
        for user in readers {
            if user == self.me || !self.typing_reachable(store, &user)? {
                continue;
            }
            let id = EnvelopeId(self.new_id(now).0);
            self.queue_ephemeral(
                now,
                Outgoing {
                    peer: user,
                    id,
                    conversation: Conversation::Channel { space, channel },
                    sent_at: now,
                    content: Content::Chat(ChatContent::Typing { active }),
                    reliable: false,
                },
            );
        }
        Ok(())
    }

    /// Whether a typing notice to `user` is worth sending: not known offline, and a session
    /// to seal it with already held (a notice never fetches keys).
    fn typing_reachable(&self, store: &dyn Store, user: &UserId) -> Result<bool, CommandError> {
        if self
            .presence
            .get(user)
            .is_some_and(|s| s.as_seen_by_others() == Status::Offline)
        {
            return Ok(false);
        }
        for d in store.peer_devices(user)? {
            if !store.olm_sessions(user, &d.device_id)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A channel message of ours went out: our typing there is over (the readers end it on
    /// the message).
    pub(super) fn typing_sent_message(&mut self, channel: &ChannelId) {
        self.spaces.typing.sent.remove(channel);
    }

    /// A member's message arrived in `channel`: it ends their typing indicator.
    pub(super) fn typing_ended_by_message(&mut self, channel: ChannelId, user: UserId) {
        if self.spaces.typing.take(Timestamp(0), channel, user, false) {
            self.emit_channel_typing(channel, user, false);
        }
    }

    /// A typing notice from `sender` under a channel conversation (receive.rs).
    pub(in crate::machine) fn take_channel_typing(
        &mut self,
        now: Timestamp,
        sender: UserId,
        space: SpaceId,
        channel: ChannelId,
        active: bool,
    ) {
        if self.spaces.space_of(&channel) != Some(space) {
            return;
        }
        let Some(state) = self.spaces.states.get(&space) else {
            return;
        };
        // The sender must be allowed to post there, and we to read it.
        if state.accepts_message(&sender, &channel).is_err()
            || !state
                .permissions(&self.me, &channel)
                .contains(Permissions::VIEW_CHANNEL)
        {
            tracing::debug!("dropped a typing notice its sender may not send");
            return;
        }
        if !self.spaces.limiter.allow(now, &sender, RateClass::Typing) {
            return;
        }
        let refresh = active && self.spaces.typing.seen.contains_key(&(channel, sender));
        if self.spaces.typing.take(now, channel, sender, active) || refresh {
            self.emit_channel_typing(channel, sender, active);
        }
    }

    /// Indicators that were not refreshed in time end (called at prepare).
    pub(super) fn typing_timeouts(&mut self, now: Timestamp) {
        let expired: Vec<(ChannelId, UserId)> = self
            .spaces
            .typing
            .seen
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for (channel, user) in expired {
            self.spaces.typing.seen.remove(&(channel, user));
            self.emit_channel_typing(channel, user, false);
        }
    }

    fn emit_channel_typing(&mut self, channel: ChannelId, user: UserId, active: bool) {
        if self.detailed_events {
            self.emit(Event::Typing {
                user,
                active,
                channel: Some(channel),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(i: u8) -> ChannelId {
        ChannelId::from_bytes([i; 16])
    }

    #[test]
    fn the_sender_throttles_and_stops_only_after_a_start() {
        let mut t = ChannelTyping::default();
        assert!(!t.should_send(Timestamp(0), ch(1), false), "no start yet");
        assert!(t.should_send(Timestamp(0), ch(1), true));
        assert!(!t.should_send(Timestamp(2_999), ch(1), true), "throttled");
        assert!(t.should_send(Timestamp(100), ch(2), true), "per channel");
        assert!(t.should_send(Timestamp(3_000), ch(1), true), "refresh due");
        assert!(t.should_send(Timestamp(3_100), ch(1), false));
        assert!(
            !t.should_send(Timestamp(3_200), ch(1), false),
            "stopped once"
        );
    }
}
