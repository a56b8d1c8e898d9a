//! Voice channels in spaces: drop-in presence, who may be heard, and which peers the media
//! mesh connects to.
//!
//! Protocol flow (docs/media.md, "Voice channels"):
//! - joining sends a signed [`VoicePresence`] (`space_voice`, ephemeral: relayed live or sent
//!   on the direct connection, never kept in the mailbox, never stored) to every member who may
//!   view the channel; it is sent again every [`VOICE_REFRESH_MS`] and lapses after
//!   [`VOICE_TTL_MS`] without a refresh; leaving sends one with no channel;
//! - a member who sees someone join the channel it is in answers with its own presence at once,
//!   so the newcomer learns who is there without waiting for the next refresh;
//! - every node judges every presence against its own copy of the space: the sender must be a
//!   member with `connect` in that (live, voice) channel, or it is not admitted; one without
//!   `speak` is admitted but its audio is dropped by every receiver. The judgement is made again
//!   after every batch, so a kick, a ban or a permission change takes effect at once;
//! - while we are in a channel, the runtime keeps media with each admitted participant of that
//!   channel ([`VoiceRequest::Session`]), at most [`MAX_VOICE_PARTICIPANTS`] in all (the first
//!   ones by join time): the machine opens a direct connection to each (contacts or not) and
//!   the member with the smaller user ID adds the audio m-line, as the caller does in a 1:1
//!   call (`machine/call.rs`).
//!
//! The media never passes through the machine; a 1:1 call and a voice channel exclude each
//! other (a connection carries one audio m-line and one attached media task).

use super::{CommandError, Event, MachineError, NodeMachine, Output};
use crate::store::{Store, StoreError};
use dopus_proto::peer::RtcContent;
use dopus_proto::space::{
    ChannelKind, Permissions, SpaceContent, VOICE_PRESENCE_VERSION, VoicePresence,
};
use dopus_types::{ChannelId, DeviceId, Signature, SpaceId, Timestamp, UserId};
use std::collections::BTreeMap;

/// How often a participant sends its presence again.
pub const VOICE_REFRESH_MS: u64 = 15_000;
/// How long a presence lasts without a refresh (two refreshes may be lost).
pub const VOICE_TTL_MS: u64 = 40_000;
/// Most participants of one channel in the audio mesh (ourselves included).
pub const MAX_VOICE_PARTICIPANTS: usize = 8;
/// Most remote presences kept (all spaces); beyond it the oldest joins are forgotten.
const MAX_REMOTE: usize = 4096;
/// A WebRTC signal from a member of our voice space who is not in our mesh yet is held this
/// long, in case their presence is still on its way (see [`Voice::held`]).
pub const HELD_SIGNAL_MS: u64 = 10_000;
/// Most signals held per sender, and in all.
const HELD_PER_PEER: usize = 16;
const HELD_MAX: usize = 64;

/// One participant of a voice channel, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceParticipant {
    /// Who.
    pub user: UserId,
    /// From which device.
    pub device: DeviceId,
    /// Their microphone is muted.
    pub muted: bool,
    /// They hear nothing.
    pub deafened: bool,
    /// They may speak in the channel (without `speak`, their audio is dropped).
    pub may_speak: bool,
    /// When we saw them join.
    pub joined_at: Timestamp,
    /// When their presence lapses without a refresh (`None` for ourselves).
    pub expires_at: Option<Timestamp>,
    /// In our media mesh (false beyond [`MAX_VOICE_PARTICIPANTS`], and for ourselves).
    pub in_mesh: bool,
}

/// A voice channel and who is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceChannelView {
    /// The channel.
    pub channel: ChannelId,
    /// Its name.
    pub name: String,
    /// We may join it (`connect`).
    pub can_connect: bool,
    /// We may speak in it (`speak`).
    pub can_speak: bool,
    /// Who is in it, ourselves first, then by join time.
    pub participants: Vec<VoiceParticipant>,
}

/// Where we are in voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyVoice {
    /// The space.
    pub space: SpaceId,
    /// The channel.
    pub channel: ChannelId,
    /// Our microphone is muted.
    pub muted: bool,
    /// We hear nothing.
    pub deafened: bool,
    /// We may speak (`speak` in the channel).
    pub may_speak: bool,
    /// When we joined.
    pub joined_at: Timestamp,
}

/// A peer of our voice media mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoicePeer {
    /// Who.
    pub user: UserId,
    /// Play (record) what they send: they may speak and we are not deafened (a muted member's
    /// node sends nothing).
    pub hear: bool,
    /// We add the audio m-line to the connection (our user ID is the smaller one); the other
    /// side answers.
    pub offerer: bool,
}

/// What the runtime does for voice media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceRequest {
    /// We are in a channel: keep media with exactly these peers (start the ones missing, stop
    /// the others); send our audio to each unless `send` is false.
    Session {
        /// The space.
        space: SpaceId,
        /// The channel.
        channel: ChannelId,
        /// Send our source (we may speak and are not muted or deafened).
        send: bool,
        /// The mesh.
        peers: Vec<VoicePeer>,
    },
    /// We are in no channel: stop every voice media task.
    Stop,
}

#[derive(Debug, Clone)]
struct Remote {
    device: DeviceId,
    /// `None`: they left (kept until its expiry so a replayed join is refused).
    channel: Option<ChannelId>,
    seq: u64,
    sent_at: Timestamp,
    /// Their expiry, capped by our clock.
    expires: Timestamp,
    muted: bool,
    deafened: bool,
    joined_at: Timestamp,
}

#[derive(Debug, Clone)]
struct Mine {
    space: SpaceId,
    channel: ChannelId,
    muted: bool,
    deafened: bool,
    joined_at: Timestamp,
    next_refresh: Timestamp,
}

/// The machine's voice state: ours and every presence we hold. Nothing of it is stored.
#[derive(Debug, Default)]
pub(super) struct Voice {
    mine: Option<Mine>,
    /// The last sequence number we sent.
    seq: u64,
    remote: BTreeMap<(SpaceId, UserId), Remote>,
    /// The last media request handed out.
    sent: Option<VoiceRequest>,
    /// Why the last presence was refused (diagnostics).
    pub(super) last_refusal: Option<String>,
    /// WebRTC signals (offer, answer, candidates) from members of our voice space who are not
    /// in our mesh yet, oldest first, with when they arrived. A member's offer can overtake its
    /// presence (they travel separately); dropping it left both sides waiting for the other's
    /// connection until [`super::links::CONNECT_GRACE_MS`] ran out (the 1-in-5 failure of the
    /// three-node process test). They are replayed when the sender enters the mesh, and
    /// forgotten after [`HELD_SIGNAL_MS`] or when we leave.
    held: Vec<(UserId, Timestamp, RtcContent)>,
}

impl Voice {
    /// Whether `peer` is in our media mesh now.
    fn in_mesh(&self, peer: &UserId) -> bool {
        matches!(&self.sent, Some(VoiceRequest::Session { peers, .. })
            if peers.iter().any(|p| p.user == *peer))
    }
}

/// Why `user` may not be in `channel` now, if not.
fn not_admitted(
    state: &crate::space::SpaceState,
    user: &UserId,
    channel: &ChannelId,
) -> Option<&'static str> {
    let ch = match state.channel(channel) {
        Some(ch) if !state.is_channel_deleted(channel) => ch,
        _ => return Some("no such voice channel"),
    };
    if ch.kind != ChannelKind::Voice {
        return Some("not a voice channel");
    }
    if !state.is_member(user) {
        return Some("not a member of the space");
    }
    if !state
        .permissions(user, channel)
        .contains(Permissions::CONNECT)
    {
        return Some("no connect permission in the channel");
    }
    None
}

fn may_speak(state: &crate::space::SpaceState, user: &UserId, channel: &ChannelId) -> bool {
    state
        .permissions(user, channel)
        .contains(Permissions::SPEAK)
}

impl NodeMachine {
    /// Where we are in voice, if anywhere.
    pub fn my_voice(&self) -> Option<MyVoice> {
        let m = self.voice.mine.as_ref()?;
        let speak = self
            .space(&m.space)
            .is_some_and(|s| may_speak(s, &self.me, &m.channel));
        Some(MyVoice {
            space: m.space,
            channel: m.channel,
            muted: m.muted,
            deafened: m.deafened,
            may_speak: speak,
            joined_at: m.joined_at,
        })
    }

    /// The voice media mesh last handed to the runtime (`None`: never in voice).
    pub fn voice_mesh_view(&self) -> Option<VoiceRequest> {
        self.voice.sent.clone()
    }

    /// Why the last voice presence we received was refused, if one was.
    pub fn voice_refusal(&self) -> Option<&str> {
        self.voice.last_refusal.as_deref()
    }

    /// Every voice channel of `space` and who is in it (admitted presences only).
    pub fn voice_channels(&self, space: &SpaceId) -> Option<Vec<VoiceChannelView>> {
        let state = self.space(space)?;
        let mesh: Vec<UserId> = match &self.voice.sent {
            Some(VoiceRequest::Session {
                space: s, peers, ..
            }) if s == space => peers.iter().map(|p| p.user).collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for ch in state.channel_list() {
            if ch.kind != ChannelKind::Voice || state.is_channel_deleted(&ch.id) {
                continue;
            }
            let mine = self.permissions_in(state, &ch.id);
            let mut participants = Vec::new();
            if let Some(m) = &self.voice.mine
                && m.space == *space
                && m.channel == ch.id
            {
                participants.push(VoiceParticipant {
                    user: self.me,
                    device: self.olm.device().device_id().clone(),
                    muted: m.muted || m.deafened,
                    deafened: m.deafened,
                    may_speak: mine.contains(Permissions::SPEAK),
                    joined_at: m.joined_at,
                    expires_at: None,
                    in_mesh: false,
                });
            }
            let mut others: Vec<VoiceParticipant> = self
                .voice
                .remote
                .iter()
                .filter(|((s, _), _)| s == space)
                .filter(|(_, r)| r.channel == Some(ch.id))
                .map(|((_, user), r)| VoiceParticipant {
                    user: *user,
                    device: r.device.clone(),
                    muted: r.muted || r.deafened,
                    deafened: r.deafened,
                    may_speak: may_speak(state, user, &ch.id),
                    joined_at: r.joined_at,
                    expires_at: Some(r.expires),
                    in_mesh: mesh.contains(user),
                })
                .collect();
            others.sort_by_key(|p| (p.joined_at, p.user));
            participants.extend(others);
            out.push(VoiceChannelView {
                channel: ch.id,
                name: ch.name.get().clone(),
                can_connect: mine.contains(Permissions::CONNECT),
                can_speak: mine.contains(Permissions::SPEAK),
                participants,
            });
        }
        Some(out)
    }

    fn permissions_in(&self, state: &crate::space::SpaceState, channel: &ChannelId) -> Permissions {
        state.permissions(&self.me, channel)
    }

    /// Joins the voice channel `channel` of `space` (leaving the one we are in, if any).
    /// Refused without `connect`, while in a 1:1 call, or when the channel is full.
    pub fn voice_join(
        &mut self,
        now: Timestamp,
        space: SpaceId,
        channel: ChannelId,
    ) -> Result<MyVoice, CommandError> {
        let state = self.space(&space).ok_or(CommandError::UnknownSpace)?;
        match state.channel(&channel) {
            None => return Err(CommandError::UnknownChannel),
            Some(_) if state.is_channel_deleted(&channel) => {
                return Err(CommandError::UnknownChannel);
            }
            Some(c) if c.kind != ChannelKind::Voice => {
                return Err(CommandError::Voice("not a voice channel".into()));
            }
            Some(_) => {}
        }
        if let Some(why) = not_admitted(state, &self.me, &channel) {
            return Err(CommandError::Space(format!("cannot join: {why}")));
        }
        if let Some(c) = self.current_call() {
            return Err(CommandError::Voice(format!(
                "in a call ({}); hang up first",
                c.state.as_str()
            )));
        }
        if self
            .voice
            .mine
            .as_ref()
            .is_some_and(|m| m.space == space && m.channel == channel)
        {
            return self.my_voice().ok_or(CommandError::UnknownChannel);
        }
        let others = self
            .voice
            .remote
            .iter()
            .filter(|((s, _), r)| *s == space && r.channel == Some(channel))
            .count();
        if others + 1 > MAX_VOICE_PARTICIPANTS {
            return Err(CommandError::Voice(format!(
                "the channel is full ({MAX_VOICE_PARTICIPANTS} participants)"
            )));
        }
        if self.voice.mine.is_some() {
            self.voice_leave(now)?;
        }
        self.voice.mine = Some(Mine {
            space,
            channel,
            muted: false,
            deafened: false,
            joined_at: now,
            next_refresh: now,
        });
        self.emit(Event::Voice(space));
        // Sent (and the mesh set up) at the next prepare.
        self.my_voice().ok_or(CommandError::UnknownChannel)
    }

    /// Leaves the voice channel we are in.
    pub fn voice_leave(&mut self, now: Timestamp) -> Result<(), CommandError> {
        let Some(m) = self.voice.mine.take() else {
            return Err(CommandError::Voice("not in a voice channel".into()));
        };
        self.send_presence(now, &m, None, None);
        self.emit(Event::Voice(m.space));
        Ok(())
    }

    /// Sets our mute and deafen flags (deafened implies muted for others).
    pub fn voice_set(
        &mut self,
        now: Timestamp,
        muted: Option<bool>,
        deafened: Option<bool>,
    ) -> Result<MyVoice, CommandError> {
        let Some(m) = &mut self.voice.mine else {
            return Err(CommandError::Voice("not in a voice channel".into()));
        };
        if let Some(v) = muted {
            m.muted = v;
        }
        if let Some(v) = deafened {
            m.deafened = v;
        }
        // Tell the others at once.
        m.next_refresh = now;
        let space = m.space;
        self.emit(Event::Voice(space));
        self.my_voice().ok_or(CommandError::UnknownChannel)
    }

    /// Signs and sends our presence (`channel`: where we are; `None`: we left) to `to`, or to
    /// everyone who may view the channel.
    fn send_presence(
        &mut self,
        now: Timestamp,
        m: &Mine,
        channel: Option<ChannelId>,
        to: Option<UserId>,
    ) {
        let Some(state) = self.space(&m.space) else {
            return;
        };
        let recipients: Vec<UserId> = match to {
            Some(u) => vec![u],
            None => state
                .audience(&m.channel)
                .into_iter()
                .filter(|u| *u != self.me)
                .collect(),
        };
        self.voice.seq = (self.voice.seq + 1).max(now.as_millis());
        let mut presence = VoicePresence {
            v: VOICE_PRESENCE_VERSION,
            space: m.space,
            channel,
            user: self.me,
            device: self.olm.device().device_id().clone(),
            seq: self.voice.seq,
            sent_at: now,
            expires_at: now.plus_millis(VOICE_TTL_MS),
            muted: m.muted || m.deafened,
            deafened: m.deafened,
            signature: Signature::from_bytes([0; 64]),
        };
        presence.signature = self.olm.device().sign_bytes(&presence.signing_bytes());
        for user in recipients {
            self.send_space_ephemeral(
                now,
                user,
                SpaceContent::SpaceVoice {
                    presence: presence.clone(),
                },
            );
        }
    }

    fn refuse_voice(&mut self, why: String) {
        tracing::debug!(why = %why, "voice presence refused");
        self.voice.last_refusal = Some(why);
    }

    /// A voice presence that arrived over Olm from `sender`'s `device`.
    pub(super) fn take_voice(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        p: &VoicePresence,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        if p.v != VOICE_PRESENCE_VERSION {
            self.refuse_voice(format!("unsupported voice presence version {}", p.v));
            return Ok(());
        }
        if p.user != sender || p.device != *device {
            self.refuse_voice("a presence for another device than its sender".into());
            return Ok(());
        }
        let Some(cert) = self.device_certificate(store, &p.space, &sender, device)? else {
            self.refuse_voice("a presence from a device we hold no certificate of".into());
            return Ok(());
        };
        if cert
            .keys
            .ed25519
            .verify(&p.signing_bytes(), &p.signature)
            .is_err()
        {
            self.refuse_voice("a presence whose signature does not verify".into());
            return Ok(());
        }
        if p.expires_at <= now {
            return Ok(()); // lapsed on the way (or a replay)
        }
        let key = (p.space, sender);
        if let Some(prior) = self.voice.remote.get(&key) {
            let stale = if prior.device == p.device {
                p.seq <= prior.seq
            } else {
                p.sent_at < prior.sent_at
            };
            if stale {
                return Ok(());
            }
        }
        let Some(state) = self.space(&p.space) else {
            return Ok(());
        };
        if let Some(channel) = &p.channel
            && let Some(why) = not_admitted(state, &sender, channel)
        {
            let why = format!("{} not admitted to a voice channel: {why}", sender.short());
            if self.voice.remote.remove(&key).is_some() {
                self.emit(Event::Voice(p.space));
            }
            self.refuse_voice(why);
            return Ok(());
        }
        let prior = self.voice.remote.get(&key);
        let joined_at = match prior {
            Some(r) if r.channel == p.channel && r.channel.is_some() => r.joined_at,
            _ => now,
        };
        let newcomer = p.channel.is_some() && prior.is_none_or(|r| r.channel != p.channel);
        let expires = p.expires_at.min(now.plus_millis(VOICE_TTL_MS));
        self.voice.remote.insert(
            key,
            Remote {
                device: p.device.clone(),
                channel: p.channel,
                seq: p.seq,
                sent_at: p.sent_at,
                expires,
                muted: p.muted || p.deafened,
                deafened: p.deafened,
                joined_at,
            },
        );
        if self.voice.remote.len() > MAX_REMOTE
            && let Some(oldest) = self
                .voice
                .remote
                .iter()
                .min_by_key(|(_, r)| r.joined_at)
                .map(|(k, _)| *k)
        {
            self.voice.remote.remove(&oldest);
        }
        // Someone came into our channel: tell them at once that we are here.
        if newcomer
            && let Some(m) = self.voice.mine.clone()
            && m.space == p.space
            && Some(m.channel) == p.channel
        {
            self.send_presence(now, &m, Some(m.channel), Some(sender));
        }
        self.emit(Event::Voice(p.space));
        Ok(())
    }

    /// Expiries, refreshes, the judgement against the current space state, and the media mesh.
    /// A WebRTC signal from `sender`, who is neither a contact nor in our mesh: held if it is
    /// a member of the space we are in voice in (its presence may still be on its way),
    /// dropped otherwise. Returns whether it was held.
    pub(super) fn hold_voice_signal(
        &mut self,
        now: Timestamp,
        sender: UserId,
        rtc: &RtcContent,
    ) -> bool {
        let Some(m) = &self.voice.mine else {
            return false;
        };
        if sender == self.me || !self.space(&m.space).is_some_and(|s| s.is_member(&sender)) {
            return false;
        }
        let held = &mut self.voice.held;
        held.retain(|(_, at, _)| now.millis_since(*at) < HELD_SIGNAL_MS);
        if held.len() >= HELD_MAX
            || held.iter().filter(|(u, _, _)| *u == sender).count() >= HELD_PER_PEER
        {
            return false;
        }
        tracing::debug!(peer = %sender.short(), "voice: a signal from a member not in the mesh yet is held");
        held.push((sender, now, rtc.clone()));
        true
    }

    /// Replays the held signals of senders who are in the mesh now; forgets expired ones.
    fn replay_held_signals(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        if self.voice.held.is_empty() {
            return Ok(());
        }
        if self.voice.mine.is_none() {
            self.voice.held.clear();
            return Ok(());
        }
        let held = std::mem::take(&mut self.voice.held);
        for (sender, at, rtc) in held {
            if self.voice.in_mesh(&sender) {
                tracing::debug!(peer = %sender.short(), "voice: a held signal is replayed");
                self.on_signal(now, sender, rtc, store)?;
            } else if now.millis_since(at) < HELD_SIGNAL_MS {
                self.voice.held.push((sender, at, rtc));
            }
        }
        Ok(())
    }

    pub(super) fn voice_due(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        // Lapsed presences, and presences the space no longer admits.
        let mut changed: Vec<SpaceId> = Vec::new();
        let mut gone: Vec<((SpaceId, UserId), Option<String>)> = Vec::new();
        for (key, r) in &self.voice.remote {
            if r.expires <= now {
                gone.push((*key, None));
                continue;
            }
            if let Some(ch) = &r.channel {
                let why = match self.space(&key.0) {
                    None => Some("the space is gone"),
                    Some(state) => not_admitted(state, &key.1, ch),
                };
                if let Some(why) = why {
                    gone.push((
                        *key,
                        Some(format!("{} removed from voice: {why}", key.1.short())),
                    ));
                }
            }
        }
        for (key, why) in gone {
            if let Some(r) = self.voice.remote.remove(&key)
                && r.channel.is_some()
            {
                changed.push(key.0);
            }
            if let Some(why) = why {
                self.refuse_voice(why);
            }
        }
        // Ourselves: still allowed? Time to refresh?
        if let Some(m) = self.voice.mine.clone() {
            let why = match self.space(&m.space) {
                None => Some("the space is gone"),
                Some(state) => not_admitted(state, &self.me, &m.channel),
            };
            if let Some(why) = why {
                self.voice.mine = None;
                self.refuse_voice(format!("left voice: {why}"));
                self.send_presence(now, &m, None, None);
                changed.push(m.space);
            } else if now >= m.next_refresh {
                self.send_presence(now, &m, Some(m.channel), None);
                if let Some(mm) = &mut self.voice.mine {
                    mm.next_refresh = now.plus_millis(VOICE_REFRESH_MS);
                }
            }
        }
        let want = self.voice_mesh();
        if want.as_ref() != self.voice.sent.as_ref() {
            let req = want.clone().unwrap_or(VoiceRequest::Stop);
            // Nothing to stop if nothing ever ran.
            if want.is_some() || self.voice.sent.is_some() {
                self.outputs.push_back(Output::Voice(req));
            }
            if let Some(VoiceRequest::Session { space, .. }) = &want {
                changed.push(*space);
            }
            self.voice.sent = want;
        }
        // Before the connections below: a held offer from a new mesh peer is answered rather
        // than met with an offer of ours (which glare would make one side ignore).
        self.replay_held_signals(now, store)?;
        changed.sort();
        changed.dedup();
        for s in changed {
            self.emit(Event::Voice(s));
        }
        // Connections and the audio m-line for each peer of the mesh.
        // The smaller user id offers (again, when an offer is lost or fails).
        if let Some(VoiceRequest::Session { peers, .. }) = self.voice.sent.clone() {
            for p in peers {
                if self.me < p.user {
                    self.offer_audio(now, p.user);
                } else if !self.links.get(&p.user).is_some_and(|l| l.is_open()) {
                    self.maybe_connect(now, p.user);
                }
            }
        }
        Ok(())
    }

    /// The media mesh we want now: the admitted participants of our channel, first joined
    /// first, up to the limit.
    fn voice_mesh(&self) -> Option<VoiceRequest> {
        let m = self.voice.mine.as_ref()?;
        let state = self.space(&m.space)?;
        let me_speak = may_speak(state, &self.me, &m.channel);
        let mut others: Vec<(&UserId, &Remote)> = self
            .voice
            .remote
            .iter()
            .filter(|((s, _), _)| *s == m.space)
            .filter(|(_, r)| r.channel == Some(m.channel))
            .map(|((_, u), r)| (u, r))
            .collect();
        others.sort_by_key(|(u, r)| (r.joined_at, **u));
        let peers = others
            .into_iter()
            .take(MAX_VOICE_PARTICIPANTS - 1)
            .map(|(u, _)| VoicePeer {
                user: *u,
                hear: !m.deafened && may_speak(state, u, &m.channel),
                offerer: self.me < *u,
            })
            .collect();
        Some(VoiceRequest::Session {
            space: m.space,
            channel: m.channel,
            send: me_speak && !m.muted && !m.deafened,
            peers,
        })
    }

    /// When a presence lapses or ours is due again.
    pub(super) fn voice_poll_timeout(&self) -> Option<Timestamp> {
        let mine = self.voice.mine.as_ref().map(|m| m.next_refresh);
        let remote = self.voice.remote.values().map(|r| r.expires).min();
        let audio = match &self.voice.sent {
            Some(VoiceRequest::Session { peers, .. }) => peers
                .iter()
                .filter(|p| self.me < p.user)
                .filter_map(|p| self.audio_poll_timeout(&p.user))
                .min(),
            _ => None,
        };
        [mine, remote, audio].into_iter().flatten().min()
    }

    /// Whether `peer` is in our voice media mesh (direct connections and media offers from it
    /// are accepted even if it is not a contact).
    pub(super) fn voice_peer(&self, peer: &UserId) -> bool {
        self.voice.in_mesh(peer)
    }

    /// Whether we are in a voice channel (a 1:1 call is refused meanwhile).
    pub(super) fn in_voice(&self) -> bool {
        self.voice.mine.is_some()
    }
}

#[cfg(test)]
mod tests;
