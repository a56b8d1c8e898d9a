//! Spaces in the node machine: commands (create, invite, join, ops, channel messages), the
//! `space_*` contents that arrive over Olm, and anti-entropy of the control logs.
//!
//! Protocol flow (docs/spaces.md, "In the node"):
//! - every op we author is persisted and queued in the outbox for every member (before and
//!   after the op: a kicked member learns of its kick), as `space_ops`, sealed per device over
//!   Olm (direct connection, live relay or mailbox, retried until acknowledged);
//! - a joiner sends `space_join_request` to the inviter; the inviter authors the `join` op,
//!   answers `space_join_answer` and sends the whole log to the joiner;
//! - on login, every member sends `space_heads` to every other member of each space; a member
//!   who sees unknown heads asks `space_ops_request` and gets `space_ops` back;
//! - a channel message is encrypted once with the sender device's Megolm session of that
//!   channel ([`ChannelCrypto`]); its key goes first, over Olm, to the devices of the channel's
//!   audience that lack it; the message then goes as `space_message` to every reader, stored
//!   under [`ConversationId::Channel`].

use super::{CommandError, Event, MachineError, NodeMachine};
use crate::chat::{Outgoing, check_body, clamp_sent_at, next_sent_at, store_id, wire_id};
use crate::outbox::Queued;
use crate::space::key_requests::{KeyRequestOut, KeyRequests, MAX_WAITING, WaitState};
use crate::space::megolm::{ChannelCrypto, DecryptError, DeviceAddr};
use crate::space::ratelimit::{RateClass, RateLimiter, RateLimits};
use crate::space::{ControlLog, DeviceSigner, SpaceState, invite};
use crate::store::{
    Change, Changes, ChannelCiphertextRecord, ConversationId, DeliveryState, EnvelopeId,
    MAX_KEPT_CIPHERTEXTS, MegolmWaitState, MegolmWaitingRecord, Message, MessageId, MessageKind,
    NewMessage, OutboxItem, OutboxRecipient, Outcome, SpaceOpRecord, Store, StoreError,
};
use dopus_proto::bundle::DeviceCertificate;
use dopus_proto::peer::{
    ChatContent, Content, Conversation, PeerAddress, PeerPayload, ReactionAction,
};
use dopus_proto::space::{
    CHANNEL_PAYLOAD_VERSION, ChannelKind, ChannelMessage, ChannelPayload, InviteCode, JoinRefusal,
    JoinResult, MAX_HEADS, MAX_HISTORY_MESSAGES, MAX_MEMBER_NAME_BYTES, MAX_OPS_PER_MESSAGE,
    MAX_WANT, Mentions, OpBody, OpId, Permissions, SpaceContent, SpaceOp,
};
use dopus_types::{ChannelId, DeviceId, SpaceId, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet};

/// Most bytes of op JSON in one `space_ops` message (the payload limit is 128 KiB).
const OPS_CHUNK_BYTES: usize = 64 * 1024;
/// Most ops sent in answer to one request or join (the rest follow the next sync).
const MAX_OPS_ANSWER: usize = 10_000;
/// Most room keys kept in memory while waiting for the ops that make their sender a reader.
const MAX_HELD_KEYS: usize = 256;
/// How many members besides the admitter a newcomer asks for history.
const MORE_HISTORY_FROM: usize = 2;
/// Most history requests answered per run of the node (each answered once).
const MAX_HISTORY_ANSWERED: usize = 4_096;
/// The setting that lists the spaces we asked to join and do not hold yet (JSON array).
const JOINING_SETTING: &str = "space_joining";

/// Where our own attempt to join a space stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinState {
    /// Asked; no answer yet (or admitted and the log is on its way).
    Pending,
    /// Admitted by the member we asked; the log is on its way.
    Accepted,
    /// Refused, with the reason.
    Refused(JoinRefusal),
}

/// The spaces part of the machine.
pub(super) struct Spaces {
    logs: BTreeMap<SpaceId, ControlLog>,
    /// Each log's state, resolved after every change (views read it without `&mut`).
    states: BTreeMap<SpaceId, SpaceState>,
    joins: BTreeMap<SpaceId, JoinState>,
    crypto: ChannelCrypto,
    limiter: RateLimiter,
    /// Room keys whose sender we do not know as a reader yet (its join may still be on its
    /// way): tried again when ops arrive.
    held_keys: Vec<(UserId, DeviceId, SpaceContent)>,
    /// Sessions with channel messages waiting (for the key, or for ops the message cites).
    waiting_sessions: BTreeSet<String>,
    /// Keys we asked for (messages waiting for them).
    key_requests: KeyRequests,
    /// Waits kept in the store before a restart, resumed at the first login.
    resume: Vec<MegolmWaitingRecord>,
    /// Send our heads to every member at the next prepare.
    sync_due: bool,
    /// Who types in which channel, and our own throttle (machine/space/typing.rs).
    typing: typing::ChannelTyping,
    /// Check at the next prepare that our name in each space follows the account's.
    profile_due: bool,
    /// The newcomers we answered a history request for (once each, since the last restart).
    history_answered: BTreeSet<(SpaceId, UserId)>,
}

impl std::fmt::Debug for Spaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spaces")
            .field("spaces", &self.logs.len())
            .finish_non_exhaustive()
    }
}

impl Spaces {
    /// Loads every space's log from the store.
    pub(super) fn load(
        store: &dyn Store,
        pickle_key: &crate::identity::pickle::PickleKey,
    ) -> Result<Self, StoreError> {
        let mut logs = BTreeMap::new();
        let mut states = BTreeMap::new();
        for space in store.spaces()? {
            let ops: Vec<SpaceOp> = store
                .space_ops(&space)?
                .iter()
                .filter_map(|r| SpaceOp::from_json(&r.json).ok())
                .collect();
            match ControlLog::from_stored(space, ops) {
                Ok(mut log) => {
                    states.insert(space, log.state().clone());
                    logs.insert(space, log);
                }
                Err(e) => tracing::warn!(error = %e, "a stored space log does not load"),
            }
        }
        // Joins we asked for before a restart: their answer and log may still come.
        let joins = store
            .setting(JOINING_SETTING)?
            .and_then(|v| serde_json::from_str::<Vec<SpaceId>>(&v).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !logs.contains_key(s))
            .map(|s| (s, JoinState::Pending))
            .collect();
        Ok(Self {
            logs,
            states,
            joins,
            crypto: ChannelCrypto::new(pickle_key),
            limiter: RateLimiter::new(RateLimits::default()),
            held_keys: Vec::new(),
            waiting_sessions: BTreeSet::new(),
            key_requests: KeyRequests::new(),
            resume: store.megolm_waiting_sessions(MAX_WAITING)?,
            sync_due: true,
            typing: typing::ChannelTyping::default(),
            profile_due: true,
            history_answered: BTreeSet::new(),
        })
    }

    /// The change that records which joins are still waiting for their log (so a restart
    /// does not drop the log when it comes).
    fn joining_change(&self) -> Change {
        let pending: Vec<SpaceId> = self
            .joins
            .iter()
            .filter(|(_, j)| !matches!(j, JoinState::Refused(_)))
            .map(|(s, _)| *s)
            .collect();
        Change::SetSetting {
            key: JOINING_SETTING.into(),
            value: (!pending.is_empty())
                .then(|| serde_json::to_string(&pending).unwrap_or_else(|_| "[]".into())),
        }
    }

    fn refresh(&mut self, space: &SpaceId) {
        if let Some(log) = self.logs.get_mut(space) {
            self.states.insert(*space, log.state().clone());
        }
        // A join, a rejoin or a name written elsewhere: look again.
        self.profile_due = true;
    }

    fn space_of(&self, channel: &ChannelId) -> Option<SpaceId> {
        self.states
            .iter()
            .find(|(_, s)| s.channel(channel).is_some() || s.is_channel_deleted(channel))
            .map(|(id, _)| *id)
    }

    /// Whether `me` may post in `channel` now (what `channel_post` checks first).
    pub(super) fn check_post(&self, me: &UserId, channel: &ChannelId) -> Result<(), CommandError> {
        let space = self.space_of(channel).ok_or(CommandError::UnknownChannel)?;
        let state = self.states.get(&space).ok_or(CommandError::UnknownSpace)?;
        state.accepts_message(me, channel).map_err(refused)
    }
}

/// The account's display name as a `profile` op carries it: trimmed, control characters
/// dropped, cut to [`MAX_MEMBER_NAME_BYTES`] on a character boundary.
fn member_name(account_name: &str) -> String {
    let mut out = String::new();
    for c in account_name.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MEMBER_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

fn refused(e: impl std::fmt::Display) -> CommandError {
    CommandError::Space(e.to_string())
}

/// Who else an invite of ours names as admitters: up to three members who may create
/// invites, highest ranked first (the owner, then administrators and moderators, who are the
/// likeliest to be online), then by user id.
fn admitters(state: &SpaceState, me: &UserId) -> Vec<UserId> {
    let mut them: Vec<(std::cmp::Reverse<crate::space::Rank>, UserId)> = state
        .members()
        .map(|(u, _)| *u)
        .filter(|u| {
            u != me
                && state
                    .base_permissions(u)
                    .contains(Permissions::CREATE_INVITE)
        })
        .map(|u| (std::cmp::Reverse(state.rank(&u)), u))
        .collect();
    them.sort();
    them.into_iter()
        .map(|(_, u)| u)
        .take(dopus_proto::space::MAX_ADMITTERS)
        .collect()
}

fn members_of(state: &SpaceState) -> BTreeSet<UserId> {
    state.members().map(|(u, _)| *u).collect()
}

fn heads_of(log: &ControlLog) -> Vec<OpId> {
    let mut heads = log.heads();
    heads.truncate(MAX_HEADS);
    heads
}

/// Splits ops into `space_ops` contents within the count and byte limits.
fn chunk_ops(space: SpaceId, ops: Vec<SpaceOp>) -> Vec<SpaceContent> {
    let mut out = Vec::new();
    let mut chunk: Vec<SpaceOp> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = op.to_json().map_or(OPS_CHUNK_BYTES, |j| j.len());
        if !chunk.is_empty()
            && (chunk.len() == MAX_OPS_PER_MESSAGE || bytes + size > OPS_CHUNK_BYTES)
        {
            out.push(SpaceContent::SpaceOps {
                space,
                ops: std::mem::take(&mut chunk),
            });
            bytes = 0;
        }
        bytes += size;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        out.push(SpaceContent::SpaceOps { space, ops: chunk });
    }
    out
}

/// The change that keeps a channel message's ciphertext for later members.
fn kept_ciphertext(
    space: SpaceId,
    channel: ChannelId,
    message: &ChannelMessage,
    now: Timestamp,
) -> Option<Change> {
    Some(Change::KeepChannelCiphertext(ChannelCiphertextRecord {
        space,
        channel,
        session_id: message.session_id.clone(),
        index: ChannelCrypto::message_index(message).ok()?,
        message: message.to_json().ok()?,
        received_at: now,
    }))
}

/// How a channel message reached us: sent to us (live, from the mailbox, or retried after its
/// key came), or relayed by a member as earlier history for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    Live,
    History,
}

/// Splits kept channel messages into `space_history_messages` contents within the count and
/// byte limits.
fn chunk_history(
    space: SpaceId,
    channel: ChannelId,
    messages: Vec<(usize, ChannelMessage)>,
) -> Vec<SpaceContent> {
    let mut out = Vec::new();
    let mut chunk: Vec<ChannelMessage> = Vec::new();
    let mut bytes = 0;
    for (size, m) in messages {
        if !chunk.is_empty()
            && (chunk.len() == MAX_HISTORY_MESSAGES || bytes + size > OPS_CHUNK_BYTES)
        {
            out.push(SpaceContent::SpaceHistoryMessages {
                space,
                channel,
                messages: std::mem::take(&mut chunk),
            });
            bytes = 0;
        }
        bytes += size;
        chunk.push(m);
    }
    if !chunk.is_empty() {
        out.push(SpaceContent::SpaceHistoryMessages {
            space,
            channel,
            messages: chunk,
        });
    }
    out
}

fn op_record(space: SpaceId, op: &SpaceOp, now: Timestamp) -> Result<Change, StoreError> {
    Ok(Change::SaveSpaceOp(SpaceOpRecord {
        space,
        id: op.id(),
        depth: op.depth,
        json: op.to_json().map_err(|_| StoreError::Invalid("space op"))?,
        received_at: now,
    }))
}

impl NodeMachine {
    // --- views ---

    /// Every space we hold a log of, with its resolved state.
    pub fn spaces(&self) -> impl Iterator<Item = (&SpaceId, &SpaceState)> {
        self.spaces.states.iter()
    }

    /// One space's resolved state.
    pub fn space(&self, space: &SpaceId) -> Option<&SpaceState> {
        self.spaces.states.get(space)
    }

    /// Where our attempt to join a space stands (`None`: we did not ask, or it finished).
    pub fn join_state(&self, space: &SpaceId) -> Option<JoinState> {
        self.spaces.joins.get(space).copied()
    }

    /// The spaces we asked to join and do not hold yet, or that refused us.
    pub fn joins(&self) -> impl Iterator<Item = (&SpaceId, &JoinState)> {
        self.spaces.joins.iter()
    }

    /// The space a channel belongs to.
    pub fn channel_space(&self, channel: &ChannelId) -> Option<SpaceId> {
        self.spaces.space_of(channel)
    }

    // --- commands ---

    /// Creates a space named `name` with a text channel `general` and a voice channel
    /// `General`.
    pub fn create_space(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        name: &str,
    ) -> Result<SpaceId, CommandError> {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let signer = DeviceSigner::new(self.olm.device()).map_err(refused)?;
        let genesis = ControlLog::genesis_op(
            &signer,
            name,
            nonce,
            Permissions::DEFAULT_EVERYONE,
            false,
            now,
        );
        genesis.validate().map_err(refused)?;
        let mut log = ControlLog::create(genesis.clone()).map_err(refused)?;
        let space = *log.space();
        let mut changes = Changes::from(op_record(space, &genesis, now)?);
        for (kind, channel) in [
            (ChannelKind::Text, "general"),
            (ChannelKind::Voice, "General"),
        ] {
            let op = log
                .author(
                    &signer,
                    OpBody::ChannelCreate {
                        kind,
                        name: channel.into(),
                        topic: None,
                        parent: None,
                        position: 0,
                        overwrites: Vec::new(),
                    },
                    now,
                )
                .map_err(refused)?;
            changes.push(op_record(space, &op, now)?);
        }
        store.apply(changes)?;
        self.spaces.logs.insert(space, log);
        self.spaces.refresh(&space);
        self.emit(Event::SpaceChanged(space));
        Ok(space)
    }

    /// Authors an op in `space` (leave, kick, ban, roles, channels, settings) and sends it to
    /// every member. Returns its id.
    pub fn space_op(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        space: SpaceId,
        body: OpBody,
    ) -> Result<OpId, CommandError> {
        body.validate().map_err(refused)?;
        let op = self.author_op(now, store, space, body, None)?;
        Ok(op.id())
    }

    /// Makes an invite to `space` and returns its code (text form).
    pub fn space_invite(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        space: SpaceId,
        max_uses: Option<u32>,
        expires_at: Option<Timestamp>,
    ) -> Result<String, CommandError> {
        if !self.spaces.logs.contains_key(&space) {
            return Err(CommandError::UnknownSpace);
        }
        let relay = self
            .settings
            .server_url
            .clone()
            .filter(|u| u.len() <= dopus_proto::space::MAX_RELAY_BYTES);
        let mut made = invite::new_invite(
            space,
            self.me,
            &mut *self.rng,
            max_uses,
            expires_at,
            None,
            relay,
        );
        made.code.admitters = self
            .spaces
            .states
            .get(&space)
            .map(|s| admitters(s, &self.me))
            .unwrap_or_default();
        self.author_op(now, store, space, made.body, None)?;
        made.code.to_text().map_err(refused)
    }

    /// Asks the inviter named in `code`, and the other admitters it names, to let us in (the
    /// first of them online writes the join). The answer arrives later: watch
    /// [`NodeMachine::join_state`] and [`Event::SpaceChanged`].
    pub fn join_space(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        code: &str,
    ) -> Result<SpaceId, CommandError> {
        let code = InviteCode::parse(code.trim())
            .map_err(|e| CommandError::Space(format!("not a valid invite code: {e}")))?;
        if invite::code_expired(&code, now) {
            return Err(refused(JoinRefusal::Expired.message()));
        }
        if self
            .spaces
            .states
            .get(&code.space)
            .is_some_and(|s| s.is_member(&self.me))
        {
            return Err(refused(JoinRefusal::AlreadyMember.message()));
        }
        if code.inviter == self.me {
            return Err(refused("this invite is our own"));
        }
        let cert = self
            .olm
            .device()
            .certificate()
            .cloned()
            .ok_or_else(|| refused("this device has no certificate"))?;
        let request = invite::join_request(&code, &cert, now);
        let recipients = std::iter::once(code.inviter)
            .chain(code.admitters.iter().copied())
            .filter(|u| *u != self.me)
            .map(|user| OutboxRecipient { user, device: None })
            .collect();
        self.queue_space(now, store, recipients, Conversation::Direct, request)?;
        self.spaces.joins.insert(code.space, JoinState::Pending);
        store.apply_one(self.spaces.joining_change())?;
        self.emit(Event::SpaceChanged(code.space));
        Ok(code.space)
    }

    /// Sends a text message in a channel; returns it as stored.
    pub fn channel_send(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        channel: ChannelId,
        body: String,
        reply_to: Option<MessageId>,
    ) -> Result<Message, CommandError> {
        check_body(&body)?;
        let id = self.new_id(now);
        let content = ChatContent::Text {
            preview: None,
            body: body.clone(),
            reply_to: reply_to.map(wire_id).transpose()?,
        };
        let sent_at = self.channel_post(now, store, channel, id, content)?;
        self.typing_sent_message(&channel);
        let new = NewMessage {
            preview: None,
            id,
            conversation: ConversationId::Channel(channel),
            sender: self.me,
            kind: MessageKind::Text,
            body,
            reply_to,
            sent_at,
            received_at: now,
            delivery: DeliveryState::Sent,
        };
        let applied = store.apply(Changes::from(Change::InsertMessage(new.clone())))?;
        let Some(Outcome::Inserted(seq)) = applied.outcomes.first().copied() else {
            return Err(CommandError::Store(StoreError::Invalid(
                "channel message id",
            )));
        };
        let message = new.stored(seq);
        if self.detailed_events {
            self.emit(Event::MessageAdded(Box::new(message.clone())));
        }
        Ok(message)
    }

    /// Marks a channel read up to `up_to` (local only: channels send no read receipts).
    pub fn channel_mark_read(
        &mut self,
        store: &mut dyn Store,
        channel: ChannelId,
        up_to: MessageId,
    ) -> Result<(), CommandError> {
        let msg = store.message(&up_to)?.ok_or(CommandError::UnknownMessage)?;
        let conversation = ConversationId::Channel(channel);
        if msg.conversation != conversation {
            return Err(CommandError::UnknownMessage);
        }
        store.apply_one(Change::MarkRead {
            conversation,
            up_to: msg.seq,
        })?;
        Ok(())
    }

    /// Edits, deletes or reacts to a message of a channel (called by `edit`, `delete` and
    /// `react` when the message is in a channel).
    pub(super) fn channel_change(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        message: &Message,
        change: ChannelChange,
    ) -> Result<(), CommandError> {
        let ConversationId::Channel(channel) = message.conversation else {
            return Err(CommandError::UnknownMessage);
        };
        if message.deleted {
            return Err(CommandError::Chat(crate::chat::ChatError::Deleted));
        }
        let target = wire_id(message.id)?;
        let (content, local) = match change {
            ChannelChange::Edit(body) => {
                check_body(&body)?;
                if message.sender != self.me {
                    return Err(CommandError::Chat(crate::chat::ChatError::NotYours));
                }
                (
                    ChatContent::Edit {
                        target,
                        body: body.clone(),
                    },
                    Change::EditMessage {
                        id: message.id,
                        body,
                        edited_at: now,
                    },
                )
            }
            ChannelChange::Delete => {
                if message.sender != self.me {
                    let space = self
                        .spaces
                        .space_of(&channel)
                        .ok_or(CommandError::UnknownChannel)?;
                    let may = self.spaces.states.get(&space).is_some_and(|s| {
                        s.permissions(&self.me, &channel)
                            .contains(Permissions::MANAGE_MESSAGES)
                    });
                    if !may {
                        return Err(CommandError::Chat(crate::chat::ChatError::NotYours));
                    }
                }
                (
                    ChatContent::Delete { target },
                    Change::DeleteMessage(message.id),
                )
            }
            ChannelChange::React { emoji, add } => {
                if emoji.trim().is_empty() || emoji.len() > dopus_proto::peer::MAX_EMOJI_BYTES {
                    return Err(CommandError::Chat(crate::chat::ChatError::BadEmoji));
                }
                (
                    ChatContent::Reaction {
                        target,
                        emoji: emoji.clone(),
                        action: if add {
                            ReactionAction::Add
                        } else {
                            ReactionAction::Remove
                        },
                    },
                    Change::React {
                        message: message.id,
                        user: self.me,
                        emoji,
                        add,
                        at: now,
                    },
                )
            }
        };
        let id = self.new_id(now);
        self.channel_post(now, store, channel, id, content)?;
        store.apply_one(local)?;
        if self.detailed_events {
            self.emit(Event::MessageUpdated(message.id));
        }
        Ok(())
    }

    /// Encrypts `content` for `channel` (sharing the session key first with readers that lack
    /// it) and queues it for every reader. Returns the `sent_at` it carries: `now`, or just
    /// after the newest message in the channel if that is later ([`next_sent_at`], the hybrid
    /// logical clock of direct chats), so our messages keep the order we wrote them in and a
    /// reply sorts after what it answers even when clocks disagree; the message we store must
    /// carry the same time.
    pub(super) fn channel_post(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        channel: ChannelId,
        id: MessageId,
        content: ChatContent,
    ) -> Result<Timestamp, CommandError> {
        let space = self
            .spaces
            .space_of(&channel)
            .ok_or(CommandError::UnknownChannel)?;
        let sent_at = next_sent_at(&*store, &ConversationId::Channel(channel), now)?;
        let log = self
            .spaces
            .logs
            .get_mut(&space)
            .ok_or(CommandError::UnknownSpace)?;
        let state = log.state();
        state.accepts_message(&self.me, &channel).map_err(refused)?;
        let readers = state.audience(&channel);
        let share_history = state.share_history();
        let mut devices: BTreeSet<DeviceAddr> = BTreeSet::new();
        for user in &readers {
            for cert in state.known_devices(user) {
                devices.insert((cert.user_id, cert.device_id.clone()));
            }
        }
        let heads = heads_of(log);
        for user in &readers {
            if *user == self.me {
                continue;
            }
            for d in store.peer_devices(user)? {
                devices.insert((d.user_id, d.device_id));
            }
        }
        let devices: Vec<DeviceAddr> = devices.into_iter().collect();
        let current = store.megolm_outbound(&channel)?;
        let signer = DeviceSigner::new(self.olm.device()).map_err(refused)?;
        let prepared = self
            .spaces
            .crypto
            .prepare(
                &signer,
                space,
                channel,
                current.as_ref(),
                &devices,
                share_history,
                now,
            )
            .map_err(refused)?;
        if let Some(reason) = prepared.rotated {
            tracing::debug!(?reason, "new Megolm session for a channel");
        }
        let payload = ChannelPayload {
            version: CHANNEL_PAYLOAD_VERSION,
            id: wire_id(id)?,
            space,
            channel,
            sender: self.olm.address(),
            sent_at,
            heads,
            mentions: match &content {
                ChatContent::Text { body, .. } | ChatContent::Edit { body, .. } => {
                    crate::space::mentions::parse(body)
                }
                _ => Mentions::default(),
            },
            content,
        };
        let (message, outbound) = self
            .spaces
            .crypto
            .encrypt(&prepared.outbound, &payload)
            .map_err(refused)?;
        // Persist before send: the advanced session goes into this batch's transaction.
        let mut changes = Changes::new();
        if outbound.shared_history
            && let Some(kept) = kept_ciphertext(space, channel, &message, now)
        {
            changes.push(kept);
        }
        if let Some(own) = prepared.own_inbound {
            changes.push(Change::SaveMegolmInbound(own));
        }
        changes.push(Change::SaveMegolmOutbound(outbound));
        store.apply(changes)?;
        if let Some(first) = prepared.shares.first() {
            let recipients = prepared
                .shares
                .iter()
                .map(|s| OutboxRecipient {
                    user: s.to.0,
                    device: Some(s.to.1.clone()),
                })
                .collect();
            self.queue_space(
                now,
                store,
                recipients,
                Conversation::Direct,
                first.content.clone(),
            )?;
        }
        let recipients = readers
            .iter()
            .filter(|u| **u != self.me)
            .map(|u| OutboxRecipient {
                user: *u,
                device: None,
            })
            .collect();
        self.queue_space_as(
            now,
            store,
            EnvelopeId(id.0),
            recipients,
            Conversation::Channel { space, channel },
            SpaceContent::SpaceMessage {
                space,
                channel,
                message,
            },
        )?;
        Ok(sent_at)
    }

    // --- sending ---

    /// Signs `body` into `space`'s log, persists it and sends it to every member before and
    /// after it (but `skip`).
    fn author_op(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        space: SpaceId,
        body: OpBody,
        skip: Option<UserId>,
    ) -> Result<SpaceOp, CommandError> {
        let signer = DeviceSigner::new(self.olm.device()).map_err(refused)?;
        let log = self
            .spaces
            .logs
            .get_mut(&space)
            .ok_or(CommandError::UnknownSpace)?;
        let mut to = members_of(log.state());
        let op = log.author(&signer, body, now).map_err(refused)?;
        to.extend(members_of(log.state()));
        store.apply_one(op_record(space, &op, now)?)?;
        self.spaces.refresh(&space);
        let recipients = to
            .into_iter()
            .filter(|u| *u != self.me && Some(*u) != skip)
            .map(|user| OutboxRecipient { user, device: None })
            .collect();
        self.queue_space(
            now,
            store,
            recipients,
            Conversation::Direct,
            SpaceContent::SpaceOps {
                space,
                ops: vec![op.clone()],
            },
        )?;
        self.emit(Event::SpaceChanged(space));
        Ok(op)
    }

    /// Queues a reliable space content for these recipients (in the outbox, sealed per device
    /// at prepare).
    fn queue_space(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        recipients: Vec<OutboxRecipient>,
        conversation: Conversation,
        content: SpaceContent,
    ) -> Result<(), StoreError> {
        let id = EnvelopeId(self.new_id(now).0);
        self.queue_space_as(now, store, id, recipients, conversation, content)
    }

    fn queue_space_as(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: EnvelopeId,
        recipients: Vec<OutboxRecipient>,
        conversation: Conversation,
        content: SpaceContent,
    ) -> Result<(), StoreError> {
        if recipients.is_empty() {
            return Ok(());
        }
        for r in &recipients {
            self.stalled.remove(&r.user);
        }
        let bytes = Queued {
            conversation,
            sent_at: now,
            content: Content::Space(Box::new(content)),
        }
        .encode()
        .map_err(|_| StoreError::Invalid("outbox item"))?;
        store.apply_one(Change::OutboxEnqueue(OutboxItem {
            id,
            bytes,
            created_at: now,
            recipients,
            next_attempt_at: now,
        }))?;
        self.outbox_wake = true;
        Ok(())
    }

    /// Sends a space content once, live (relayed or direct, never kept in the mailbox).
    pub(super) fn send_space_ephemeral(
        &mut self,
        now: Timestamp,
        peer: UserId,
        content: SpaceContent,
    ) {
        let id = EnvelopeId(self.new_id(now).0);
        self.queue_ephemeral(
            now,
            Outgoing {
                peer,
                id,
                conversation: Conversation::Direct,
                sent_at: now,
                content: Content::Space(Box::new(content)),
                reliable: false,
            },
        );
    }

    /// After login: tell every member of every space we are in our heads (anti-entropy).
    pub(super) fn space_sync(&mut self, now: Timestamp) {
        if !self.spaces.sync_due || self.signaling != super::SignalingState::Connected {
            return;
        }
        self.spaces.sync_due = false;
        let mut sends = Vec::new();
        for (space, log) in &self.spaces.logs {
            let Some(state) = self.spaces.states.get(space) else {
                continue;
            };
            if !state.is_member(&self.me) {
                continue;
            }
            let heads = heads_of(log);
            for user in members_of(state) {
                if user != self.me {
                    sends.push((
                        user,
                        SpaceContent::SpaceHeads {
                            space: *space,
                            heads: heads.clone(),
                        },
                    ));
                }
            }
        }
        for (user, content) in sends {
            self.send_space_ephemeral(now, user, content);
        }
    }

    /// Login happened: sync at the next prepare.
    pub(super) fn space_sync_soon(&mut self) {
        self.spaces.sync_due = true;
    }

    /// Our display name changed: the spaces follow at the next prepare.
    pub(super) fn space_profiles_soon(&mut self) {
        self.spaces.profile_due = true;
    }

    /// Our name as each space we are in shows it follows the account's display name: where it
    /// differs (after a join, a rejoin, a rename), a `profile` op (docs/spaces.md, "Member
    /// names"). Called at prepare; refused ops are logged and not retried until something
    /// changes.
    pub(super) fn space_profiles(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if !self.spaces.profile_due {
            return Ok(());
        }
        self.spaces.profile_due = false;
        let name = member_name(&self.account.display_name);
        let due: Vec<SpaceId> = self
            .spaces
            .states
            .iter()
            .filter(|(_, s)| {
                s.member(&self.me)
                    .is_some_and(|m| m.display_name().unwrap_or_default() != name)
            })
            .map(|(id, _)| *id)
            .collect();
        for space in due {
            let body = OpBody::Profile {
                display_name: name.clone(),
            };
            match self.author_op(now, store, space, body, None) {
                Ok(_) => {}
                Err(CommandError::Store(e)) => return Err(e),
                Err(e) => tracing::debug!(error = %e, "could not publish our name in a space"),
            }
        }
        Ok(())
    }

    // --- receiving ---

    /// Takes in a space content that arrived over Olm from `sender`'s `device`.
    pub(super) fn take_space(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        payload: &PeerPayload,
        content: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let ephemeral = matches!(
            content,
            SpaceContent::SpaceHeads { .. }
                | SpaceContent::SpaceOpsRequest { .. }
                | SpaceContent::SpaceVoice { .. }
                | SpaceContent::SpaceHistoryRequest { .. }
        );
        if !ephemeral {
            store.apply_one(Change::MarkProcessed {
                id: EnvelopeId(*payload.id.as_uuid()),
                received_at: now,
            })?;
            let ack = EnvelopeId(self.new_id(now).0);
            self.hold_receipt(
                now,
                crate::chat::delivered_receipt(sender, ack, now, payload.id),
            );
        }
        let space = *content.space();
        tracing::debug!(kind = content.kind_name(), space = %space.short(), "took in a space content");
        match content {
            SpaceContent::SpaceOps { ops, .. } => self.take_ops(now, sender, space, ops, store)?,
            SpaceContent::SpaceHeads { heads, .. } => self.take_heads(now, sender, space, heads),
            SpaceContent::SpaceOpsRequest { have, want, .. } => {
                self.answer_ops(now, sender, space, have, want);
            }
            SpaceContent::SpaceJoinRequest { .. } => {
                self.take_join_request(now, sender, device, content, store)?;
            }
            SpaceContent::SpaceJoinAnswer { result, .. } => {
                if let Some(j) = self.spaces.joins.get_mut(&space) {
                    // Several members may be asked: an acceptance stands over any refusal, and
                    // "already a member" means another one admitted us.
                    *j = match (*j, result) {
                        (JoinState::Accepted, JoinResult::Refused { .. })
                        | (
                            _,
                            JoinResult::Accepted { .. }
                            | JoinResult::Refused {
                                reason: JoinRefusal::AlreadyMember,
                            },
                        ) => JoinState::Accepted,
                        (_, JoinResult::Refused { reason }) => JoinState::Refused(*reason),
                    };
                    store.apply_one(self.spaces.joining_change())?;
                    self.emit(Event::SpaceChanged(space));
                }
            }
            SpaceContent::SpaceRoomKey { .. } => {
                if !self.take_room_key(now, sender, device, content, store)? {
                    if self.spaces.held_keys.len() < MAX_HELD_KEYS {
                        self.spaces
                            .held_keys
                            .push((sender, device.clone(), content.clone()));
                    }
                    self.ask_ops(now, sender, space, Vec::new());
                }
            }
            SpaceContent::SpaceMessage {
                channel, message, ..
            } => {
                self.take_channel_message(
                    now,
                    sender,
                    Some((space, *channel)),
                    message,
                    Arrival::Live,
                    store,
                )?;
            }
            SpaceContent::SpaceKeyRequest { .. } => {
                self.answer_key_request(now, sender, device, content, store)?;
            }
            SpaceContent::SpaceForwardedKey { .. } => {
                self.take_forwarded_key(now, sender, device, content, store)?;
            }
            SpaceContent::SpaceKeyWithheld {
                session_id, code, ..
            } => {
                let from = PeerAddress {
                    user: sender,
                    device: device.clone(),
                };
                if self.spaces.key_requests.withheld(session_id, &from, *code) {
                    self.set_wait_state(store, session_id, MegolmWaitState::Withheld(*code))?;
                }
            }
            SpaceContent::SpaceVoice { presence } => {
                self.take_voice(now, sender, device, presence, store)?;
            }
            SpaceContent::SpaceHistoryBundle { .. } => {
                self.take_history_bundle(now, sender, device, content, store)?;
            }
            SpaceContent::SpaceHistoryMessages { .. } => {
                self.take_history_messages(now, sender, content, store)?;
            }
            SpaceContent::SpaceHistoryRequest { .. } => {
                self.answer_history_request(now, sender, device, space, store)?;
            }
        }
        Ok(())
    }

    fn take_ops(
        &mut self,
        now: Timestamp,
        sender: UserId,
        space: SpaceId,
        ops: &[SpaceOp],
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        if !self.spaces.logs.contains_key(&space) {
            // A log we do not hold is taken only while we are joining it, from its genesis.
            if !self.spaces.joins.contains_key(&space) {
                return Ok(());
            }
            let Some(genesis) = ops.iter().find(|o| o.is_genesis()) else {
                return Ok(());
            };
            let log = match ControlLog::create(genesis.clone()) {
                Ok(l) if *l.space() == space => l,
                _ => return Ok(()),
            };
            store.apply_one(op_record(space, genesis, now)?)?;
            self.spaces.logs.insert(space, log);
        } else {
            let member = self
                .spaces
                .states
                .get(&space)
                .is_some_and(|s| s.is_member(&sender));
            if !member && !self.spaces.limiter.allow(now, &sender, RateClass::Ops) {
                return Ok(());
            }
        }
        let Some(log) = self.spaces.logs.get_mut(&space) else {
            return Ok(());
        };
        let mut changes = Changes::new();
        let mut missing = BTreeSet::new();
        for op in ops {
            if op.is_genesis() {
                continue;
            }
            match log.insert(op.clone()) {
                Ok(ins) => {
                    for id in &ins.added {
                        if let Some(op) = log.get(id) {
                            changes.push(op_record(space, op, now)?);
                        }
                    }
                    missing.extend(ins.missing);
                }
                Err(e) => tracing::debug!(error = %e, "refused a space op"),
            }
        }
        let added = !changes.is_empty();
        if added {
            store.apply(changes)?;
        }
        if !missing.is_empty() {
            let want: Vec<OpId> = missing.into_iter().take(MAX_WANT).collect();
            self.ask_ops(now, sender, space, want);
        }
        if added {
            let before = self.spaces.states.get(&space).map(members_of);
            self.spaces.refresh(&space);
            if let (Some(before), Some(after)) =
                (before, self.spaces.states.get(&space).map(members_of))
            {
                self.tell_removed(now, store, space, before.difference(&after))?;
                // A member we just learned of may lack ops written before we knew of it (their
                // authors did not send them to it): our heads tell it what to ask for.
                let joined: Vec<UserId> = after
                    .difference(&before)
                    .filter(|u| **u != self.me)
                    .copied()
                    .collect();
                if after.contains(&self.me)
                    && let Some(log) = self.spaces.logs.get(&space)
                {
                    let heads = heads_of(log);
                    for user in joined {
                        self.send_space_ephemeral(
                            now,
                            user,
                            SpaceContent::SpaceHeads {
                                space,
                                heads: heads.clone(),
                            },
                        );
                    }
                }
            }
            if self
                .spaces
                .states
                .get(&space)
                .is_some_and(|s| s.is_member(&self.me))
                && self.spaces.joins.remove(&space).is_some()
            {
                store.apply_one(self.spaces.joining_change())?;
                self.ask_more_history(now, space);
            }
            self.emit(Event::SpaceChanged(space));
            self.retry_held(now, store)?;
        }
        Ok(())
    }

    /// Asks `peer` for the ops we lack in `space` (and these by id).
    fn ask_ops(&mut self, now: Timestamp, peer: UserId, space: SpaceId, want: Vec<OpId>) {
        let have = self
            .spaces
            .logs
            .get(&space)
            .map(heads_of)
            .unwrap_or_default();
        self.send_space_ephemeral(
            now,
            peer,
            SpaceContent::SpaceOpsRequest { space, have, want },
        );
    }

    fn take_heads(&mut self, now: Timestamp, sender: UserId, space: SpaceId, heads: &[OpId]) {
        if !self
            .spaces
            .states
            .get(&space)
            .is_some_and(|s| s.is_member(&sender))
        {
            // A removed member who does not know it yet gets what leads to its removal.
            self.answer_removed(now, sender, space, heads, &[]);
            return;
        }
        let Some(log) = self.spaces.logs.get(&space) else {
            return;
        };
        let unknown: Vec<OpId> = heads
            .iter()
            .filter(|h| !log.contains(h))
            .copied()
            .take(MAX_WANT)
            .collect();
        let ours = heads_of(log);
        // They may lack some of ours: send what is not below their heads.
        let ops: Vec<SpaceOp> = if unknown.is_empty() && ours != heads {
            log.ops_for(heads, &[], MAX_OPS_ANSWER)
                .into_iter()
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if !unknown.is_empty() {
            self.ask_ops(now, sender, space, unknown);
        }
        for chunk in chunk_ops(space, ops) {
            self.send_space_ephemeral(now, sender, chunk);
        }
    }

    fn answer_ops(
        &mut self,
        now: Timestamp,
        sender: UserId,
        space: SpaceId,
        have: &[OpId],
        want: &[OpId],
    ) {
        // Only members may sync: a removed member gets only the ops that lead to its removal
        // (it may have missed some of them), and learns nothing of the space after it.
        if !self
            .spaces
            .states
            .get(&space)
            .is_some_and(|s| s.is_member(&sender))
        {
            self.answer_removed(now, sender, space, have, want);
            return;
        }
        let Some(log) = self.spaces.logs.get(&space) else {
            return;
        };
        let ops: Vec<SpaceOp> = log
            .ops_for(have, want, MAX_OPS_ANSWER)
            .into_iter()
            .cloned()
            .collect();
        for chunk in chunk_ops(space, ops) {
            self.send_space_ephemeral(now, sender, chunk);
        }
    }

    /// Users we saw stop being members (kicked, banned, or their join filtered by a
    /// concurrent removal) may not know it: each gets the ops that removed it, over the
    /// outbox; missing parents it asks for get [`Self::answer_removed`].
    fn tell_removed<'a>(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        space: SpaceId,
        removed: impl Iterator<Item = &'a UserId>,
    ) -> Result<(), MachineError> {
        let removed: Vec<UserId> = removed.filter(|u| **u != self.me).copied().collect();
        for user in removed {
            let Some(log) = self.spaces.logs.get_mut(&space) else {
                return Ok(());
            };
            let ops: Vec<SpaceOp> = log
                .removal_anchors(&user)
                .iter()
                .filter_map(|id| log.get(id).cloned())
                .collect();
            for chunk in chunk_ops(space, ops) {
                self.queue_space(
                    now,
                    store,
                    vec![OutboxRecipient { user, device: None }],
                    Conversation::Direct,
                    chunk,
                )?;
            }
        }
        Ok(())
    }

    /// Sends a removed member the ops up to its removal that it lacks (rate limited: it is
    /// not a member any more).
    fn answer_removed(
        &mut self,
        now: Timestamp,
        sender: UserId,
        space: SpaceId,
        have: &[OpId],
        want: &[OpId],
    ) {
        let Some(log) = self.spaces.logs.get_mut(&space) else {
            return;
        };
        let ops: Vec<SpaceOp> = log
            .ops_for_removed(&sender, have, want, MAX_OPS_ANSWER)
            .into_iter()
            .cloned()
            .collect();
        if ops.is_empty() || !self.spaces.limiter.allow(now, &sender, RateClass::Ops) {
            return;
        }
        for chunk in chunk_ops(space, ops) {
            self.send_space_ephemeral(now, sender, chunk);
        }
    }

    fn take_join_request(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        request: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let space = *request.space();
        let answer = |reason| SpaceContent::SpaceJoinAnswer {
            space,
            result: JoinResult::Refused { reason },
        };
        let to = vec![OutboxRecipient {
            user: sender,
            device: Some(device.clone()),
        }];
        if !self
            .spaces
            .limiter
            .allow(now, &sender, RateClass::JoinRequests)
        {
            self.queue_space(
                now,
                store,
                to,
                Conversation::Direct,
                answer(JoinRefusal::RateLimited),
            )?;
            return Ok(());
        }
        let Some(log) = self.spaces.logs.get_mut(&space) else {
            self.queue_space(
                now,
                store,
                to,
                Conversation::Direct,
                answer(JoinRefusal::UnknownInvite),
            )?;
            return Ok(());
        };
        let from = PeerAddress {
            user: sender,
            device: device.clone(),
        };
        let body = match invite::admit(log.state(), &self.me, &from, request, now) {
            Ok(body) => body,
            Err(reason) => {
                tracing::debug!(?reason, "refused a join request");
                self.queue_space(now, store, to, Conversation::Direct, answer(reason))?;
                return Ok(());
            }
        };
        let op = match self.author_op(now, store, space, body, Some(sender)) {
            Ok(op) => op,
            Err(CommandError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "could not write a join");
                self.queue_space(
                    now,
                    store,
                    to,
                    Conversation::Direct,
                    answer(JoinRefusal::NotAllowed),
                )?;
                return Ok(());
            }
        };
        self.queue_space(
            now,
            store,
            to.clone(),
            Conversation::Direct,
            SpaceContent::SpaceJoinAnswer {
                space,
                result: JoinResult::Accepted { join: op.id() },
            },
        )?;
        let ops: Vec<SpaceOp> = self
            .spaces
            .logs
            .get(&space)
            .map(|l| l.ops().take(MAX_OPS_ANSWER).cloned().collect())
            .unwrap_or_default();
        for chunk in chunk_ops(space, ops) {
            self.queue_space(now, store, to.clone(), Conversation::Direct, chunk)?;
        }
        self.send_history(now, store, space, sender, to)?;
        Ok(())
    }

    /// A member we admitted to a space that shares history gets the keys of every shareable
    /// session of the channels it may read (`space_history_bundle`), then the ciphertexts we
    /// kept of those sessions (`space_history_messages`), after the log (the outbox keeps the
    /// order per device).
    fn send_history(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        space: SpaceId,
        member: UserId,
        to: Vec<OutboxRecipient>,
    ) -> Result<(), MachineError> {
        let Some(state) = self.spaces.states.get(&space) else {
            return Ok(());
        };
        if !state.share_history() || !state.is_member(&member) {
            return Ok(());
        }
        let channels: Vec<ChannelId> = state
            .channel_list()
            .into_iter()
            .filter(|c| c.kind == ChannelKind::Text)
            .map(|c| c.id)
            .filter(|c| {
                state
                    .permissions(&member, c)
                    .contains(Permissions::VIEW_CHANNEL)
            })
            .collect();
        // Sessions of members who have left (or were removed) are handed on too: what they
        // said while they were members stays in the history (each message is judged by the
        // newcomer at the heads it cites). We only hold ciphertexts we accepted while their
        // sender could post, so nothing they wrote afterwards is among them.
        let mut sessions = Vec::new();
        for c in &channels {
            sessions.extend(
                store
                    .megolm_inbound_for_channel(c)?
                    .into_iter()
                    .filter(|s| {
                        state.is_member(&s.sender_user) || state.is_former_member(&s.sender_user)
                    }),
            );
        }
        let bundles = self
            .spaces
            .crypto
            .history_bundles(state, &member, &sessions);
        let shared: BTreeSet<String> = bundles
            .iter()
            .flat_map(|b| match b {
                SpaceContent::SpaceHistoryBundle { sessions, .. } => {
                    sessions.iter().map(|s| s.session_id.clone()).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let mut parts = bundles;
        for c in channels {
            let kept: Vec<(usize, ChannelMessage)> = store
                .channel_ciphertexts(&c, MAX_KEPT_CIPHERTEXTS)?
                .into_iter()
                .filter(|k| shared.contains(&k.session_id))
                .filter_map(|k| {
                    Some((k.message.len(), ChannelMessage::from_json(&k.message).ok()?))
                })
                .collect();
            parts.extend(chunk_history(space, c, kept));
        }
        for part in parts {
            self.queue_space(now, store, to.clone(), Conversation::Direct, part)?;
        }
        Ok(())
    }

    /// We just joined a space that shares history: besides the member who admitted us (who
    /// sends what it holds with the log), ask up to [`MORE_HISTORY_FROM`] other members, the
    /// highest ranked first (likeliest online, likeliest to have been there longest). Those
    /// online answer like an admitter; duplicates are dropped on arrival (sessions by id and
    /// index, messages by id and Megolm index).
    fn ask_more_history(&mut self, now: Timestamp, space: SpaceId) {
        let Some(state) = self.spaces.states.get(&space) else {
            return;
        };
        if !state.share_history() {
            return;
        }
        let admitter = state.member(&self.me).map(|m| m.admitted_by);
        let mut others: Vec<(std::cmp::Reverse<crate::space::Rank>, UserId)> = state
            .members()
            .map(|(u, _)| *u)
            .filter(|u| *u != self.me && Some(*u) != admitter)
            .map(|u| (std::cmp::Reverse(state.rank(&u)), u))
            .collect();
        others.sort();
        for (_, user) in others.into_iter().take(MORE_HISTORY_FROM) {
            self.send_space_ephemeral(now, user, SpaceContent::SpaceHistoryRequest { space });
        }
    }

    /// A member who joined asks for the history we hold: answered once per member (since our
    /// last restart), only for a member of a space that shares history, rate-limited like
    /// join requests, to the asking device.
    fn answer_history_request(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        space: SpaceId,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let may =
            self.spaces.states.get(&space).is_some_and(|s| {
                s.share_history() && s.is_member(&sender) && s.is_member(&self.me)
            });
        if !may
            || sender == self.me
            || self.spaces.history_answered.contains(&(space, sender))
            || self.spaces.history_answered.len() >= MAX_HISTORY_ANSWERED
            || !self
                .spaces
                .limiter
                .allow(now, &sender, RateClass::JoinRequests)
        {
            return Ok(());
        }
        self.spaces.history_answered.insert((space, sender));
        let to = vec![OutboxRecipient {
            user: sender,
            device: Some(device.clone()),
        }];
        self.send_history(now, store, space, sender, to)
    }

    /// A history bundle part: each session is checked on its own (the owner's certificate
    /// and announcement, marked shareable, from a member who may read its channel) and kept
    /// only for channels we may read; messages waiting for these sessions are decrypted.
    fn take_history_bundle(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        content: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let space = *content.space();
        let Some(state) = self.spaces.states.get(&space) else {
            return Ok(());
        };
        if !state.is_member(&self.me) || !state.is_member(&sender) {
            return Ok(());
        }
        let from = PeerAddress {
            user: sender,
            device: device.clone(),
        };
        let results = {
            let existing = |sid: &str| store.megolm_inbound(sid).ok().flatten();
            self.spaces
                .crypto
                .accept_history_bundle(state, &from, content, &existing, now)
        };
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "refused a history bundle");
                return Ok(());
            }
        };
        let mut taken = Vec::new();
        for r in results {
            match r {
                Ok(Some(record))
                    if record.shared_history
                        && state
                            .permissions(&self.me, &record.channel)
                            .contains(Permissions::VIEW_CHANNEL) =>
                {
                    taken.push(record);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "refused a session of a history bundle"),
            }
        }
        let sessions: Vec<String> = taken.iter().map(|r| r.session_id.clone()).collect();
        if !taken.is_empty() {
            store.apply(taken.into_iter().map(Change::SaveMegolmInbound).collect())?;
        }
        for session in sessions {
            self.spaces.key_requests.received(&session);
            self.retry_waiting(now, &session, store)?;
        }
        Ok(())
    }

    /// Earlier messages relayed by a member who may read the channel: each must decrypt with
    /// a shareable session we hold (from a history bundle), and passes the same checks as a
    /// live message (sender binding, replays, the sender's right to post). Messages of other
    /// sessions are dropped, not kept waiting: nobody would answer for them.
    fn take_history_messages(
        &mut self,
        now: Timestamp,
        sender: UserId,
        content: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let SpaceContent::SpaceHistoryMessages {
            space,
            channel,
            messages,
        } = content
        else {
            return Ok(());
        };
        let may = self.spaces.states.get(space).is_some_and(|s| {
            s.is_member(&self.me)
                && s.permissions(&sender, channel)
                    .contains(Permissions::VIEW_CHANNEL)
        });
        if !may {
            return Ok(());
        }
        for m in messages {
            let shareable = store
                .megolm_inbound(&m.session_id)?
                .is_some_and(|i| i.shared_history && i.space == *space && i.channel == *channel);
            if shareable {
                self.take_channel_message(
                    now,
                    m.sender.user,
                    Some((*space, *channel)),
                    m,
                    Arrival::History,
                    store,
                )?;
            }
        }
        Ok(())
    }

    /// The certificate of a device we hold (its envelopes were verified against it).
    pub(super) fn device_certificate(
        &self,
        store: &dyn Store,
        space: &SpaceId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceCertificate>, StoreError> {
        if let Some(state) = self.spaces.states.get(space)
            && let Some(c) = state
                .known_devices(user)
                .into_iter()
                .find(|c| c.device_id == *device)
        {
            return Ok(Some(c.clone()));
        }
        Ok(store
            .peer_device(user, device)?
            .and_then(|d| serde_json::from_str(&d.certificate_json).ok()))
    }

    /// A room key from `sender`'s `device`. `false` if its sender is not (yet) known as a
    /// reader of the channel: the caller keeps it for when more ops arrive.
    fn take_room_key(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        content: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<bool, MachineError> {
        let SpaceContent::SpaceRoomKey {
            space, session_id, ..
        } = content
        else {
            return Ok(true);
        };
        let Some(cert) = self.device_certificate(&*store, space, &sender, device)? else {
            return Ok(false);
        };
        let Some(state) = self.spaces.states.get(space) else {
            return Ok(false);
        };
        let existing = store.megolm_inbound(session_id)?;
        match self
            .spaces
            .crypto
            .accept_room_key(state, &cert, content, existing.as_ref(), now)
        {
            Ok(Some(record)) => {
                store.apply_one(Change::SaveMegolmInbound(record))?;
                self.spaces.key_requests.received(session_id);
                self.retry_waiting(now, session_id, store)?;
                Ok(true)
            }
            Ok(None) => Ok(true),
            Err(crate::space::megolm::KeyError::NotAReader) => Ok(false),
            Err(e) => {
                tracing::debug!(error = %e, "refused a room key");
                Ok(true)
            }
        }
    }

    /// Tries the held room keys and the waiting messages again (ops arrived).
    fn retry_held(&mut self, now: Timestamp, store: &mut dyn Store) -> Result<(), MachineError> {
        let held = std::mem::take(&mut self.spaces.held_keys);
        for (sender, device, content) in held {
            if !self.take_room_key(now, sender, &device, &content, store)? {
                self.spaces.held_keys.push((sender, device, content));
            }
        }
        let sessions: Vec<String> = self.spaces.waiting_sessions.iter().cloned().collect();
        for s in sessions {
            self.retry_waiting(now, &s, store)?;
        }
        Ok(())
    }

    fn retry_waiting(
        &mut self,
        now: Timestamp,
        session_id: &str,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        self.spaces.waiting_sessions.remove(session_id);
        let waiting = store.megolm_waiting(session_id)?;
        if waiting.is_empty() {
            return Ok(());
        }
        store.apply_one(Change::RemoveMegolmWaiting {
            session_id: session_id.to_owned(),
        })?;
        let channels: BTreeSet<ChannelId> = waiting.iter().filter_map(|w| w.channel).collect();
        for w in waiting {
            if let Ok(message) = ChannelMessage::from_json(&w.message) {
                let hint = w.space.zip(w.channel);
                self.take_channel_message(
                    now,
                    w.sender_user,
                    hint,
                    &message,
                    Arrival::Live,
                    store,
                )?;
            }
        }
        for channel in channels {
            self.emit(Event::ChannelWaiting(channel));
        }
        Ok(())
    }

    /// Records where the wait for a session's key stands, for its placeholders.
    fn set_wait_state(
        &mut self,
        store: &mut dyn Store,
        session_id: &str,
        state: MegolmWaitState,
    ) -> Result<(), StoreError> {
        let applied = store.apply_one(Change::SetMegolmWaitState {
            session_id: session_id.to_owned(),
            state,
        })?;
        if applied == Outcome::Applied
            && let Some(w) = self.spaces.key_requests.status(session_id)
        {
            self.emit(Event::ChannelWaiting(w.channel));
        }
        Ok(())
    }

    /// Decrypts and applies a channel message, or keeps it waiting for its key (or for the ops
    /// it cites). `space` is the one the outer content named (`None`: retried from the waiting
    /// list, where the payload's own space is checked against the session).
    fn take_channel_message(
        &mut self,
        now: Timestamp,
        sender: UserId,
        hint: Option<(SpaceId, ChannelId)>,
        message: &ChannelMessage,
        arrival: Arrival,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let space = hint.map(|(s, _)| s);
        if message.sender.user != sender {
            tracing::debug!("dropped a channel message relayed by someone else");
            return Ok(());
        }
        let inbound = store.megolm_inbound(&message.session_id)?;
        let decrypted = {
            let seen = |s: &str, i: u32| store.megolm_seen(s, i).unwrap_or(false);
            self.spaces
                .crypto
                .decrypt::<ChatContent>(inbound.as_ref(), message, &seen, now)
        };
        let keep_waiting = |this: &mut Self, store: &mut dyn Store| -> Result<(), StoreError> {
            let Ok(index) = ChannelCrypto::message_index(message) else {
                return Ok(());
            };
            let bytes = message
                .to_json()
                .map_err(|_| StoreError::Invalid("channel message"))?;
            let state = match this
                .spaces
                .key_requests
                .status(&message.session_id)
                .map(|w| w.state)
            {
                Some(WaitState::Withheld(code)) => MegolmWaitState::Withheld(code),
                Some(WaitState::GaveUp) => MegolmWaitState::GaveUp,
                Some(WaitState::Asking) | None => MegolmWaitState::Waiting,
            };
            let applied = store.apply_one(Change::SaveMegolmWaiting(MegolmWaitingRecord {
                session_id: message.session_id.clone(),
                index,
                sender_user: message.sender.user,
                sender_device: message.sender.device.clone(),
                message: bytes,
                received_at: now,
                space: hint.map(|(s, _)| s),
                channel: hint.map(|(_, c)| c),
                state,
            }))?;
            this.spaces
                .waiting_sessions
                .insert(message.session_id.clone());
            if applied == Outcome::Applied
                && let Some((_, channel)) = hint
            {
                this.emit(Event::ChannelWaiting(channel));
            }
            Ok(())
        };
        let d = match decrypted {
            Ok(d) => d,
            Err(DecryptError::UnknownSession | DecryptError::UnknownIndex { .. }) => {
                keep_waiting(self, store)?;
                // Ask the owner for the key ("waiting for keys"), then the channel's readers.
                if let (Some((space, channel)), Ok(index)) =
                    (hint, ChannelCrypto::message_index(message))
                    && let Some(out) = self.spaces.key_requests.need(
                        now,
                        space,
                        channel,
                        &message.session_id,
                        message.sender.clone(),
                        index,
                    )
                {
                    self.send_key_request(now, out);
                }
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropped a channel message");
                return Ok(());
            }
        };
        let payload = d.payload;
        if space.is_some_and(|s| s != payload.space) {
            return Ok(());
        }
        let space = payload.space;
        let channel = payload.channel;
        let Some(log) = self.spaces.logs.get(&space) else {
            return Ok(());
        };
        let unknown: Vec<OpId> = payload
            .heads
            .iter()
            .filter(|h| !log.contains(h))
            .copied()
            .collect();
        // A member who has left since (or was removed) still shows in shared history: a message
        // relayed as history, from a former member, is judged against the state at the heads it
        // cites (it was sent then), provided we know them all and may read the channel now.
        // Live messages are always judged now, so nothing sent after a removal gets through
        // that way (docs/spaces.md, "History from members who left").
        let departed = arrival == Arrival::History
            && self
                .spaces
                .states
                .get(&space)
                .is_some_and(|s| !s.is_member(&sender) && s.is_former_member(&sender));
        let accepted = self.spaces.states.get(&space).map(|s| {
            let current = s.accepts_message(&sender, &channel);
            if !departed
                || !unknown.is_empty()
                || !s
                    .permissions(&self.me, &channel)
                    .contains(Permissions::VIEW_CHANNEL)
            {
                return current;
            }
            log.state_at(&payload.heads)
                .map_or(current, |then| then.accepts_message(&sender, &channel))
        });
        match accepted {
            Some(Ok(())) => {}
            Some(Err(_)) if !unknown.is_empty() && !departed => {
                // It cites ops we lack (the sender's join, a channel): fetch them first.
                keep_waiting(self, store)?;
                self.ask_ops(
                    now,
                    sender,
                    space,
                    unknown.into_iter().take(MAX_WANT).collect(),
                );
                return Ok(());
            }
            _ => {
                tracing::debug!("dropped a channel message its sender may not send");
                store.apply(d.changes.into_iter().collect::<Changes>())?;
                return Ok(());
            }
        }
        if !unknown.is_empty() {
            self.ask_ops(
                now,
                sender,
                space,
                unknown.into_iter().take(MAX_WANT).collect(),
            );
        }
        let mut changes: Changes = d.changes.into_iter().collect();
        // Kept for members who join later, if its session is shareable (not typing).
        if inbound.as_ref().is_some_and(|i| i.shared_history)
            && !matches!(
                payload.content,
                ChatContent::Typing { .. } | ChatContent::Receipt { .. }
            )
            && let Some(kept) = kept_ciphertext(space, channel, message, now)
        {
            changes.push(kept);
        }
        let conversation = ConversationId::Channel(channel);
        let mut inserted = None;
        let mut updated = None;
        let mut file = None;
        match &payload.content {
            ChatContent::Text {
                body,
                reply_to,
                preview,
            } => {
                let new = NewMessage {
                    preview: preview.clone(),
                    id: store_id(&payload.id),
                    conversation,
                    sender,
                    kind: MessageKind::Text,
                    body: body.clone(),
                    reply_to: reply_to.as_ref().map(store_id),
                    sent_at: clamp_sent_at(payload.sent_at, now),
                    received_at: now,
                    delivery: DeliveryState::Delivered,
                };
                inserted = Some((changes.len(), new.clone()));
                changes.push(Change::InsertMessage(new));
            }
            ChatContent::Edit { target, body } => {
                let id = store_id(target);
                if let Some(m) = store.message(&id)?
                    && m.sender == sender
                    && m.conversation == conversation
                {
                    changes.push(Change::EditMessage {
                        id,
                        body: body.clone(),
                        edited_at: clamp_sent_at(payload.sent_at, now),
                    });
                    updated = Some(id);
                }
            }
            ChatContent::Delete { target } => {
                let id = store_id(target);
                let manages = self.spaces.states.get(&space).is_some_and(|s| {
                    s.permissions(&sender, &channel)
                        .contains(Permissions::MANAGE_MESSAGES)
                });
                if let Some(m) = store.message(&id)?
                    && m.conversation == conversation
                    && (m.sender == sender || manages)
                {
                    changes.push(Change::DeleteMessage(id));
                    updated = Some(id);
                }
            }
            ChatContent::Reaction {
                target,
                emoji,
                action,
            } => {
                let id = store_id(target);
                if let Some(m) = store.message(&id)?
                    && m.conversation == conversation
                    && !m.deleted
                {
                    changes.push(Change::React {
                        message: id,
                        user: sender,
                        emoji: emoji.clone(),
                        add: *action == ReactionAction::Add,
                        at: now,
                    });
                    updated = Some(id);
                }
            }
            // A file: the message and its incoming transfer (machine/transfers.rs).
            ChatContent::File { file: f, reply_to } => {
                if let Some((new, t)) = super::transfers::channel_file_in(
                    now,
                    channel,
                    sender,
                    &payload.id,
                    payload.sent_at,
                    f,
                    reply_to.as_ref(),
                ) {
                    inserted = Some((changes.len(), new.clone()));
                    changes.push(Change::InsertMessage(new));
                    changes.push(Change::SaveTransfer(t.clone()));
                    file = Some(t);
                }
            }
            ChatContent::Typing { .. } | ChatContent::Receipt { .. } => {}
        }
        let applied = store.apply(changes)?;
        if let Some(t) = file
            && let Some((i, _)) = &inserted
            && let Some(Outcome::Inserted(_)) = applied.outcomes.get(*i)
        {
            self.channel_file_received(sender, t);
        }
        if let Some((i, _)) = &inserted
            && let Some(Outcome::Inserted(_)) = applied.outcomes.get(*i)
        {
            self.typing_ended_by_message(channel, sender);
        }
        if self.detailed_events {
            if let Some((i, new)) = inserted
                && let Some(Outcome::Inserted(seq)) = applied.outcomes.get(i)
            {
                self.emit(Event::MessageAdded(Box::new(new.stored(*seq))));
            }
            if let Some(id) = updated {
                self.emit(Event::MessageUpdated(id));
            }
        }
        Ok(())
    }
}

impl NodeMachine {
    fn send_key_request(&mut self, now: Timestamp, out: KeyRequestOut) {
        let users: BTreeSet<UserId> = out.to.iter().map(|a| a.user).collect();
        for user in users {
            if user != self.me {
                self.send_space_ephemeral(now, user, out.content.clone());
            }
        }
    }

    /// Asks again for keys still missing, with backoff, from the owner and the channel's other
    /// readers (called at prepare).
    pub(super) fn space_key_timeouts(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.typing_timeouts(now);
        self.space_profiles(now, store)?;
        // Waits kept across a restart start over once we can reach anyone (a restart is a
        // reason to try again: a reader who was offline may be back). Withheld stays withheld.
        if self.signaling == super::SignalingState::Connected && !self.spaces.resume.is_empty() {
            for w in std::mem::take(&mut self.spaces.resume) {
                let (Some(space), Some(channel)) = (w.space, w.channel) else {
                    continue;
                };
                let state = match w.state {
                    MegolmWaitState::Withheld(code) => WaitState::Withheld(code),
                    MegolmWaitState::Waiting | MegolmWaitState::GaveUp => WaitState::Asking,
                };
                let owner = PeerAddress {
                    user: w.sender_user,
                    device: w.sender_device.clone(),
                };
                self.spaces.waiting_sessions.insert(w.session_id.clone());
                if self.spaces.key_requests.resume(
                    now,
                    space,
                    channel,
                    &w.session_id,
                    owner,
                    w.index,
                    state,
                ) && w.state == MegolmWaitState::GaveUp
                {
                    self.set_wait_state(store, &w.session_id, MegolmWaitState::Waiting)?;
                }
            }
        }
        if self
            .spaces
            .key_requests
            .poll_timeout()
            .is_none_or(|t| t > now)
        {
            return Ok(());
        }
        let me = self.me;
        let Spaces {
            key_requests,
            states,
            ..
        } = &mut self.spaces;
        let readers = |channel: &ChannelId| -> Vec<PeerAddress> {
            states
                .values()
                .find(|s| s.channel(channel).is_some())
                .map(|s| {
                    s.audience(channel)
                        .iter()
                        .filter(|u| **u != me)
                        .flat_map(|u| s.known_devices(u))
                        .map(|c| PeerAddress {
                            user: c.user_id,
                            device: c.device_id.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let outs = key_requests.handle_timeout(now, &readers);
        for out in outs {
            self.send_key_request(now, out);
        }
        for session in self.spaces.key_requests.take_given_up() {
            self.set_wait_state(store, &session, MegolmWaitState::GaveUp)?;
        }
        Ok(())
    }

    /// When the key requests want to run next.
    pub(super) fn space_poll_timeout(&self) -> Option<Timestamp> {
        [
            self.spaces.key_requests.poll_timeout(),
            self.spaces.typing.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn answer_key_request(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        request: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let SpaceContent::SpaceKeyRequest {
            space,
            channel,
            session_id,
            ..
        } = request
        else {
            return Ok(());
        };
        if !self
            .spaces
            .limiter
            .allow(now, &sender, RateClass::KeyRequests)
        {
            return Ok(());
        }
        let Some(state) = self.spaces.states.get(space) else {
            return Ok(());
        };
        let inbound = store.megolm_inbound(session_id)?;
        let outbound = store.megolm_outbound(channel)?;
        let requester = PeerAddress {
            user: sender,
            device: device.clone(),
        };
        match self.spaces.crypto.answer_key_request(
            state,
            &self.me,
            &requester,
            request,
            inbound.as_ref(),
            outbound.as_ref(),
        ) {
            Ok(answer) => self.send_space_ephemeral(now, sender, answer),
            Err(e) => tracing::debug!(error = %e, "could not answer a key request"),
        }
        Ok(())
    }

    fn take_forwarded_key(
        &mut self,
        now: Timestamp,
        sender: UserId,
        device: &DeviceId,
        content: &SpaceContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let SpaceContent::SpaceForwardedKey {
            space, session_id, ..
        } = content
        else {
            return Ok(());
        };
        let Some(state) = self.spaces.states.get(space) else {
            return Ok(());
        };
        let requested = self.spaces.key_requests.is_requested(session_id);
        let existing = store.megolm_inbound(session_id)?;
        let from = PeerAddress {
            user: sender,
            device: device.clone(),
        };
        match self.spaces.crypto.accept_forwarded_key(
            state,
            &self.me,
            &from,
            content,
            requested,
            existing.as_ref(),
            now,
        ) {
            Ok(Some(record)) => {
                store.apply_one(Change::SaveMegolmInbound(record))?;
                self.spaces.key_requests.received(session_id);
                self.retry_waiting(now, session_id, store)?;
            }
            Ok(None) => {
                self.spaces.key_requests.received(session_id);
            }
            Err(e) => tracing::debug!(error = %e, "refused a forwarded key"),
        }
        Ok(())
    }
}

/// A change to a channel message.
#[derive(Debug, Clone)]
pub(super) enum ChannelChange {
    /// New text.
    Edit(String),
    /// Deleted for everyone.
    Delete,
    /// A reaction added or removed.
    React {
        /// The emoji.
        emoji: String,
        /// Added or removed.
        add: bool,
    },
}

#[cfg(test)]
pub(super) mod tests;
mod typing;
