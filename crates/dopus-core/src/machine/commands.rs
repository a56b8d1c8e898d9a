//! What the user asks for: messages, contacts, presence, settings and verification, and the
//! read-only views the interface shows. Every command writes into the caller's transaction
//! and queues what must go out; nothing is sent before [`NodeMachine::prepare`] and the commit.

use super::{Event, MachineError, NodeMachine, Output, SignalingRequest};
use crate::chat::{ChatError, Outgoing};
use crate::contacts::{self, ContactError, ContactPatch};
use crate::store::{
    Change, Changes, Contact, ConversationId, EnvelopeId, Message, MessageId, Outcome, Store,
    StoreError,
};
use crate::verification::{SafetyNumber, SasParty, SasState, SasVerification};
use dopus_proto::peer::{CancelCode, Content, Conversation, VerificationContent, VerificationStep};
use dopus_proto::signaling::Status;
use dopus_types::{DeviceId, Timestamp, UserId};

/// Why a command was refused. `Store` is the machine's failure (the batch rolls back); every
/// other variant is the user's and leaves the batch as it was.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A chat action was refused.
    #[error(transparent)]
    Chat(ChatError),
    /// A contact action was refused.
    #[error(transparent)]
    Contact(ContactError),
    /// No such message.
    #[error("no such message")]
    UnknownMessage,
    /// Not an accepted contact.
    #[error("not an accepted contact")]
    NotAContact,
    /// No verification with this contact.
    #[error("no verification with this contact")]
    NoVerification,
    /// The verification cannot take this step now.
    #[error("{0}")]
    Verification(String),
    /// A setting has a value that is not allowed.
    #[error("{0}")]
    BadSetting(&'static str),
    /// No such space (we hold no log of it).
    #[error("no such space")]
    UnknownSpace,
    /// No such channel in any space we hold.
    #[error("no such channel")]
    UnknownChannel,
    /// A space action was refused (the rules, an invite, the channel); the text says why.
    #[error("{0}")]
    Space(String),
    /// No such transfer.
    #[error("no such transfer")]
    UnknownTransfer,
    /// The transfer has ended (done, failed or cancelled).
    #[error("the transfer has ended")]
    TransferEnded,
    /// No such call.
    #[error("no such call")]
    UnknownCall,
    /// A call action was refused (busy, wrong state); the text says why.
    #[error("{0}")]
    Call(String),
    /// A voice action was refused (not in a channel, full, in a call); the text says why.
    #[error("{0}")]
    Voice(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChatError> for CommandError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Store(e) => CommandError::Store(e),
            other => CommandError::Chat(other),
        }
    }
}

impl From<ContactError> for CommandError {
    fn from(e: ContactError) -> Self {
        match e {
            ContactError::Store(e) => CommandError::Store(e),
            other => CommandError::Contact(other),
        }
    }
}

impl From<MachineError> for CommandError {
    fn from(e: MachineError) -> Self {
        match e {
            MachineError::Store(e) => CommandError::Store(e),
        }
    }
}

/// Settings the user can change, kept in the store's settings table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The signaling server URL.
    pub server_url: Option<String>,
    /// STUN/TURN URLs.
    pub ice_servers: Vec<String>,
    /// Send read receipts (opt-in).
    pub read_receipts: bool,
    /// UI theme (`dark` or `light`).
    pub theme: String,
    /// Fetch a preview of the first link of each text we send (off by default).
    pub link_previews: bool,
    /// Privacy mode: connect to contacts through TURN relays only, so they never learn our IP
    /// address (off by default; `discordopus run --relay-only` forces it on for one run).
    pub relay_only: bool,
}

impl Settings {
    /// The settings in `store` (defaults where unset).
    pub fn load(store: &dyn Store) -> Result<Settings, StoreError> {
        Ok(Settings {
            server_url: store.setting("server_url")?,
            ice_servers: store
                .setting("ice_servers")?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            read_receipts: store.setting("read_receipts")?.as_deref() == Some("true"),
            theme: store.setting("theme")?.unwrap_or_else(|| "dark".into()),
            link_previews: store.setting("link_previews")?.as_deref() == Some("true"),
            relay_only: store.setting("relay_only")?.as_deref() == Some("true"),
        })
    }

    /// The changes that store these settings.
    pub fn changes(&self) -> Changes {
        let set = |k: &str, v: Option<String>| Change::SetSetting {
            key: k.into(),
            value: v,
        };
        [
            set("server_url", self.server_url.clone()),
            set(
                "ice_servers",
                Some(serde_json::to_string(&self.ice_servers).unwrap_or_else(|_| "[]".into())),
            ),
            set("read_receipts", Some(self.read_receipts.to_string())),
            set("theme", Some(self.theme.clone())),
            set("link_previews", Some(self.link_previews.to_string())),
            set("relay_only", Some(self.relay_only.to_string())),
        ]
        .into_iter()
        .collect()
    }
}

/// A partial settings update. ICE server URLs are checked by the runtime (it knows their
/// syntax); everything else here.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    /// The signaling server URL (empty: none).
    pub server_url: Option<String>,
    /// STUN/TURN URLs.
    pub ice_servers: Option<Vec<String>>,
    /// Send read receipts.
    pub read_receipts: Option<bool>,
    /// UI theme.
    pub theme: Option<String>,
    /// Fetch link previews for texts we send.
    pub link_previews: Option<bool>,
    /// Connect through relays only.
    pub relay_only: Option<bool>,
}

/// A profile change: absent fields stay as they are, empty strings clear.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    /// Our display name (never empty).
    pub display_name: Option<String>,
    /// A short status line.
    pub status_text: Option<String>,
    /// A small image as a `data:image/webp|png|jpeg;base64,…` URL.
    pub avatar: Option<String>,
}

/// A direct connection as the machine knows it (the runtime adds the live diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionView {
    /// The attempt, if there is one.
    pub conn: Option<String>,
    /// `new`, `connecting`, `connected` or `closed`.
    pub state: &'static str,
    /// `direct` (channel open), `relayed` (through the server, peer online), `mailbox` (peer
    /// away) or `none` (no server either).
    pub mode: &'static str,
    /// Why the last attempt ended, or why there is none.
    pub reason: Option<String>,
}

/// A verification as the interface shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationView {
    /// `none`, `waiting`, `compare`, `confirmed`, `verified` or `cancelled`.
    pub state: &'static str,
    /// The transaction.
    pub txn: Option<String>,
    /// The seven emoji (symbol, name) to compare.
    pub emoji: Option<Vec<(String, String)>>,
    /// The three decimals to compare.
    pub decimals: Option<[u16; 3]>,
    /// Why it was cancelled.
    pub cancel_code: Option<String>,
    /// Whether we cancelled it.
    pub cancelled_by_us: Option<bool>,
}

impl NodeMachine {
    // --- presence and settings ---

    /// Sets our presence status. Going invisible closes every direct connection: a contact
    /// must not be able to tell we are online.
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
        if status == Status::Invisible {
            self.close_links();
        }
        self.outputs
            .push_back(Output::Signaling(SignalingRequest::SetStatus(status)));
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Changes settings; answers the new settings and whether the server URL changed (the
    /// runtime then reconnects).
    pub fn put_settings(
        &mut self,
        store: &mut dyn Store,
        patch: SettingsPatch,
    ) -> Result<(Settings, bool), CommandError> {
        let mut s = self.settings.clone();
        let mut server_changed = false;
        if let Some(url) = patch.server_url {
            let url = url.trim().to_owned();
            if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(CommandError::BadSetting(
                    "the server URL must start with ws:// or wss://",
                ));
            }
            let url = (!url.is_empty()).then_some(url);
            server_changed = url != s.server_url;
            s.server_url = url;
        }
        if let Some(ice) = patch.ice_servers {
            s.ice_servers = ice;
        }
        if let Some(rr) = patch.read_receipts {
            s.read_receipts = rr;
        }
        if let Some(theme) = patch.theme {
            if theme != "dark" && theme != "light" {
                return Err(CommandError::BadSetting("theme must be dark or light"));
            }
            s.theme = theme;
        }
        if let Some(on) = patch.link_previews {
            s.link_previews = on;
        }
        // Turning relay-only on closes today's connections: they may be direct, and the next
        // ones are made relayed (the runtime reads the setting for every new connection).
        let close_direct = patch.relay_only == Some(true) && !s.relay_only;
        if let Some(on) = patch.relay_only {
            s.relay_only = on;
        }
        store.apply(s.changes())?;
        if close_direct {
            self.close_links();
        }
        self.chat.read_receipts = s.read_receipts;
        self.settings = s.clone();
        Ok((s, server_changed))
    }

    // --- contacts ---

    fn contact_step(
        &mut self,
        now: Timestamp,
        step: contacts::ContactStep,
        user: UserId,
        store: &mut dyn Store,
    ) -> Result<Option<Contact>, CommandError> {
        let was_accepted = contacts::is_accepted(store.contact(&user)?.as_ref());
        store.apply(step.changes)?;
        if let Some(out) = &step.out {
            self.queue_reliable(now, out, store)?;
        }
        if !was_accepted && contacts::is_accepted(step.contact.as_ref()) {
            self.send_profile_to(now, user, store)?;
        }
        self.contacts_dirty = true;
        self.emit(if step.contact.is_some() {
            Event::ContactChanged(user)
        } else {
            Event::ContactRemoved(user)
        });
        Ok(step.contact)
    }

    /// Sends our profile card to `peer` (a contact just accepted), if we made one.
    pub(super) fn send_profile_to(
        &mut self,
        now: Timestamp,
        peer: UserId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Some(card) = contacts::own_profile(&*store)? {
            let envelope = EnvelopeId(self.new_id(now).0);
            let out = contacts::profile_out(peer, envelope, now, &self.account.display_name, &card);
            self.queue_reliable(now, &out, store)?;
        }
        Ok(())
    }

    /// Changes our display name, status line or avatar (absent: unchanged; empty: cleared) and
    /// sends the new card to every accepted contact. Answers the card.
    pub fn set_profile(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        patch: ProfilePatch,
    ) -> Result<contacts::ProfileCard, CommandError> {
        let held = contacts::own_profile(&*store)?;
        let mut card = held.clone().unwrap_or(contacts::ProfileCard {
            status_text: None,
            avatar: None,
            updated_at: now,
        });
        if let Some(t) = patch.status_text {
            card.status_text = Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        }
        if let Some(a) = patch.avatar {
            card.avatar = Some(a).filter(|a| !a.is_empty());
        }
        // Strictly newer than the card contacts hold, so theirs is replaced.
        card.updated_at = held.map_or(now, |h| now.max(h.updated_at.plus_millis(1)));
        // The current record (its pickles may be newer than the machine's copy).
        let mut account = store.account()?.ok_or(StoreError::Invalid("no account"))?;
        if let Some(name) = patch.display_name {
            let name = name.trim();
            if name.is_empty() {
                return Err(CommandError::BadSetting(
                    "the display name must not be empty",
                ));
            }
            account.display_name = name.to_owned();
        }
        let wire = dopus_proto::peer::ContactContent::Profile {
            name: Some(account.display_name.clone()),
            status_text: card.status_text.clone(),
            avatar: card.avatar.clone(),
            updated_at: card.updated_at.as_millis(),
        };
        if let Err(e) = wire.validate() {
            return Err(CommandError::BadSetting(match e {
                dopus_proto::peer::PeerError::InvalidField { field: "avatar" } => {
                    "the avatar must be a base64 data URL of a WebP, PNG or JPEG image of at most 40,000 bytes"
                }
                dopus_proto::peer::PeerError::FieldTooLong { field: "name", .. } => {
                    "the display name is too long"
                }
                _ => "the status line is too long (at most 280 bytes)",
            }));
        }
        let mut changes = Changes::from(Change::SaveAccount(account.clone()));
        if let Some(change) = contacts::save_own_profile(&card) {
            changes.push(change);
        }
        store.apply(changes)?;
        self.account.display_name = account.display_name;
        self.space_profiles_soon();
        for peer in self.accepted_contacts(&*store)? {
            self.send_profile_to(now, peer, store)?;
        }
        Ok(card)
    }

    /// Adds an accepted contact directly.
    pub fn add_contact(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
        name: Option<String>,
    ) -> Result<Option<Contact>, CommandError> {
        let step = contacts::add(&*store, self.me, now, user, name)?;
        self.contact_step(now, step, user, store)
    }

    /// Asks `user` to become a contact.
    pub fn contact_request(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
        name: Option<String>,
        note: Option<String>,
    ) -> Result<Option<Contact>, CommandError> {
        let envelope = EnvelopeId(self.new_id(now).0);
        let my_name = self.account.display_name.clone();
        let step = contacts::request(&*store, self.me, &my_name, now, envelope, user, name, note)?;
        self.contact_step(now, step, user, store)
    }

    /// Accepts or declines `user`'s request.
    pub fn contact_answer(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
        accept: bool,
    ) -> Result<Option<Contact>, CommandError> {
        let envelope = EnvelopeId(self.new_id(now).0);
        let my_name = self.account.display_name.clone();
        let step = contacts::answer(&*store, &my_name, now, envelope, user, accept)?;
        self.contact_step(now, step, user, store)
    }

    /// Renames, (un)verifies or (un)blocks a contact. Blocking closes our connection with them.
    pub fn patch_contact(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
        patch: ContactPatch,
    ) -> Result<Option<Contact>, CommandError> {
        let blocking = patch.blocked == Some(true);
        let step = contacts::patch(&*store, now, user, patch)?;
        let contact = self.contact_step(now, step, user, store)?;
        if blocking && let Some(link) = self.links.remove(&user) {
            self.outputs
                .push_back(Output::Connection(super::ConnectionRequest::Close {
                    peer: user,
                    conn: Some(link.conn),
                }));
        }
        Ok(contact)
    }

    /// Removes a contact.
    pub fn remove_contact(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
    ) -> Result<(), CommandError> {
        let step = contacts::remove(&*store, user)?;
        self.contact_step(now, step, user, store)?;
        if let Some(link) = self.links.remove(&user) {
            self.outputs
                .push_back(Output::Connection(super::ConnectionRequest::Close {
                    peer: user,
                    conn: Some(link.conn),
                }));
        }
        Ok(())
    }

    // --- messages ---

    /// Sends text messages to `peer`, in order, stored all or none. Answers them as stored.
    pub fn send_texts(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        peer: UserId,
        texts: Vec<crate::chat::Draft>,
    ) -> Result<Vec<Message>, CommandError> {
        let texts: Vec<_> = texts
            .into_iter()
            .map(|draft| (self.new_id(now), draft))
            .collect();
        let (mut changes, outs) = self.chat.send_texts(&*store, now, peer, texts)?;
        // `changes` starts with one `InsertMessage` per message, in order.
        let new: Vec<_> = changes
            .iter()
            .take(outs.len())
            .filter_map(|c| match c {
                Change::InsertMessage(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        for out in &outs {
            let item = crate::outbox::item_for(out, now)
                .map_err(|_| StoreError::Invalid("outbox item"))?;
            changes.push(Change::OutboxEnqueue(item));
        }
        let applied = store.apply(changes)?;
        self.outbox_wake = true;
        self.stalled.remove(&peer);
        let mut sent = Vec::with_capacity(new.len());
        for (i, m) in new.into_iter().enumerate() {
            let stored = match applied.outcomes.get(i) {
                Some(Outcome::Inserted(seq)) => m.stored(*seq),
                // Already there (a retried request with the same id cannot happen: ids are
                // fresh), read back to be exact.
                _ => store.message(&m.id)?.ok_or(CommandError::UnknownMessage)?,
            };
            if self.detailed_events {
                self.emit(Event::MessageAdded(Box::new(stored.clone())));
            }
            sent.push(stored);
        }
        Ok(sent)
    }

    /// An operation on one of our messages (edit, delete, react): the chat logic's changes
    /// and the content for the peer, queued in the same transaction. Answers the message as it
    /// now is.
    fn change_message(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
        op: impl FnOnce(
            &mut crate::chat::Chat,
            &dyn Store,
            EnvelopeId,
        ) -> Result<(Changes, Outgoing), ChatError>,
    ) -> Result<Message, CommandError> {
        let envelope = EnvelopeId(self.new_id(now).0);
        let (changes, out) = op(&mut self.chat, &*store, envelope)?;
        store.apply(changes)?;
        self.queue_reliable(now, &out, store)?;
        if self.detailed_events {
            self.emit(Event::MessageUpdated(id));
        }
        store.message(&id)?.ok_or(CommandError::UnknownMessage)
    }

    /// Edits one of our messages.
    pub fn edit(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
        body: String,
    ) -> Result<Message, CommandError> {
        if let Some(m) = self.channel_message(store, &id)? {
            return self.change_channel_message(
                now,
                store,
                &m,
                super::space::ChannelChange::Edit(body),
            );
        }
        self.change_message(now, store, id, |chat, store, envelope| {
            chat.edit(store, now, envelope, id, body)
        })
    }

    /// Deletes one of our messages for everyone.
    pub fn delete(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
    ) -> Result<Message, CommandError> {
        if let Some(m) = self.channel_message(store, &id)? {
            return self.change_channel_message(
                now,
                store,
                &m,
                super::space::ChannelChange::Delete,
            );
        }
        self.change_message(now, store, id, |chat, store, envelope| {
            chat.delete(store, now, envelope, id)
        })
    }

    /// Adds or removes our reaction.
    pub fn react(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        id: MessageId,
        emoji: String,
        add: bool,
    ) -> Result<Message, CommandError> {
        if let Some(m) = self.channel_message(store, &id)? {
            return self.change_channel_message(
                now,
                store,
                &m,
                super::space::ChannelChange::React { emoji, add },
            );
        }
        self.change_message(now, store, id, |chat, store, envelope| {
            chat.react(store, now, envelope, id, emoji, add)
        })
    }

    /// The message, if it belongs to a space channel.
    fn channel_message(
        &self,
        store: &dyn Store,
        id: &MessageId,
    ) -> Result<Option<Message>, StoreError> {
        Ok(store
            .message(id)?
            .filter(|m| matches!(m.conversation, ConversationId::Channel(_))))
    }

    fn change_channel_message(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        m: &Message,
        change: super::space::ChannelChange,
    ) -> Result<Message, CommandError> {
        self.channel_change(now, store, m, change)?;
        store.message(&m.id)?.ok_or(CommandError::UnknownMessage)
    }

    /// We started or stopped typing to `peer` (throttled; ephemeral).
    pub fn typing(
        &mut self,
        now: Timestamp,
        store: &dyn Store,
        peer: UserId,
        active: bool,
    ) -> Result<(), CommandError> {
        if !contacts::is_accepted(store.contact(&peer)?.as_ref()) {
            return Err(CommandError::NotAContact);
        }
        let envelope = EnvelopeId(self.new_id(now).0);
        if let Some(out) = self.chat.typing(now, envelope, peer, active) {
            self.queue_ephemeral(now, out);
        }
        Ok(())
    }

    /// Marks the conversation with `peer` read up to `up_to` (and sends a read receipt if
    /// they are on).
    pub fn mark_read(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        peer: UserId,
        up_to: MessageId,
    ) -> Result<(), CommandError> {
        let envelope = EnvelopeId(self.new_id(now).0);
        let (changes, receipt) = self.chat.mark_read(&*store, now, envelope, peer, up_to)?;
        store.apply(changes)?;
        if let Some(out) = receipt {
            self.queue_ephemeral(now, out);
        }
        Ok(())
    }

    // --- views ---

    /// The safety number with `user` (a contact).
    pub fn safety_number(
        &self,
        store: &dyn Store,
        user: UserId,
    ) -> Result<(String, bool), CommandError> {
        let contact = store
            .contact(&user)?
            .ok_or(CommandError::Contact(ContactError::Unknown))?;
        Ok((
            SafetyNumber::new(&self.me, &user).groups().join(" "),
            contact.verified,
        ))
    }

    /// The direct connection with `user` as the machine knows it.
    pub fn connection(&self, user: &UserId) -> ConnectionView {
        let online = self
            .presence
            .get(user)
            .is_some_and(|s| s.as_seen_by_others() != Status::Offline);
        let server = self.signaling == super::SignalingState::Connected;
        let link = self.links.get(user);
        let open = link.is_some_and(super::links::Link::is_open);
        let mode = if open {
            "direct"
        } else if server && online {
            "relayed"
        } else if server {
            "mailbox"
        } else {
            "none"
        };
        match link {
            Some(l) => ConnectionView {
                conn: Some(l.conn.clone()),
                state: match l.state {
                    super::links::LinkState::Connecting => "connecting",
                    super::links::LinkState::Open => "connected",
                    super::links::LinkState::Closed => "closed",
                },
                mode,
                reason: l.last_error.clone(),
            },
            None => ConnectionView {
                conn: None,
                state: "new",
                mode,
                reason: (!online && self.status != Status::Invisible).then(|| {
                    "the contact is offline: messages wait in the server's mailbox".to_owned()
                }),
            },
        }
        .with_invisible(self.status == Status::Invisible)
    }

    // --- verification ---

    fn own_party(&self) -> SasParty {
        SasParty {
            user: self.me,
            device: self.account.device_id.clone(),
            keys: self.account.device_keys,
        }
    }

    /// The peer device we verify: the first device we hold a verified certificate for.
    fn peer_party(store: &dyn Store, user: &UserId) -> Result<Option<SasParty>, StoreError> {
        Ok(store
            .peer_devices(user)?
            .into_iter()
            .next()
            .map(|d| SasParty {
                user: *user,
                device: d.device_id,
                keys: d.keys,
            }))
    }

    /// The verification with `user` as the interface shows it.
    pub fn verification(&self, user: &UserId) -> VerificationView {
        if self.pending_verifications.contains(user) {
            return VerificationView {
                state: "waiting",
                txn: None,
                emoji: None,
                decimals: None,
                cancel_code: None,
                cancelled_by_us: None,
            };
        }
        let Some(v) = self.verifications.get(user) else {
            return VerificationView {
                state: "none",
                txn: None,
                emoji: None,
                decimals: None,
                cancel_code: None,
                cancelled_by_us: None,
            };
        };
        let (state, cancel) = match v.state() {
            SasState::WaitingForAccept | SasState::WaitingForKey => ("waiting", None),
            SasState::ShowingSas => ("compare", None),
            SasState::WaitingForMac => ("confirmed", None),
            SasState::Verified => ("verified", None),
            SasState::Cancelled { code, by_us } => ("cancelled", Some((code, by_us))),
        };
        VerificationView {
            state,
            txn: Some(v.txn().to_owned()),
            emoji: v.emoji().map(|e| {
                e.iter()
                    .map(|x| (x.symbol.to_owned(), x.name.to_owned()))
                    .collect()
            }),
            decimals: v.decimals().map(|(a, b, c)| [a, b, c]),
            cancel_code: cancel.map(|(c, _)| format!("{c:?}")),
            cancelled_by_us: cancel.map(|(_, b)| b),
        }
    }

    /// Starts a SAS verification with `user` (an accepted contact). If we do not know their
    /// device yet, its keys are fetched first and the verification starts when they arrive.
    pub fn start_verification(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
    ) -> Result<VerificationView, CommandError> {
        if !contacts::is_accepted(store.contact(&user)?.as_ref()) {
            return Err(CommandError::NotAContact);
        }
        if Self::peer_party(&*store, &user)?.is_none() {
            self.pending_verifications.insert(user);
            self.fetch_bundle(now, user, None);
            self.emit(Event::Verification(user));
            return Ok(self.verification(&user));
        }
        self.start_pending_verification(now, user, store)?;
        Ok(self.verification(&user))
    }

    /// Starts a verification now that the peer's device is known.
    pub(super) fn start_pending_verification(
        &mut self,
        now: Timestamp,
        user: UserId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(peer) = Self::peer_party(&*store, &user)? else {
            return Ok(());
        };
        let txn = self.new_token(16);
        match SasVerification::start(now, self.own_party(), peer, txn) {
            Ok((v, step)) => {
                self.verifications.insert(user, v);
                self.queue_verification_step(now, user, step);
            }
            Err(e) => tracing::warn!(error = %e, "could not start a verification"),
        }
        self.emit(Event::Verification(user));
        Ok(())
    }

    /// The emoji match: confirm.
    pub fn confirm_verification(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
        user: UserId,
    ) -> Result<VerificationView, CommandError> {
        let v = self
            .verifications
            .get_mut(&user)
            .ok_or(CommandError::NoVerification)?;
        let steps = v
            .confirm(now)
            .map_err(|e| CommandError::Verification(e.to_string()))?;
        for step in steps {
            self.queue_verification_step(now, user, step);
        }
        self.after_verification_step(now, user, store)?;
        Ok(self.verification(&user))
    }

    /// The emoji differ, or the user gave up.
    pub fn cancel_verification(
        &mut self,
        now: Timestamp,
        user: UserId,
    ) -> Result<VerificationView, CommandError> {
        self.pending_verifications.remove(&user);
        let v = self
            .verifications
            .get_mut(&user)
            .ok_or(CommandError::NoVerification)?;
        if let Some(step) = v.cancel(CancelCode::User) {
            self.queue_verification_step(now, user, step);
        }
        self.emit(Event::Verification(user));
        Ok(self.verification(&user))
    }

    /// A verification step from `user`.
    pub(super) fn on_verification_step(
        &mut self,
        now: Timestamp,
        user: UserId,
        _device: &DeviceId,
        content: VerificationContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let VerificationContent::Verification { step } = content;
        let steps = if let VerificationStep::Start { .. } = &step {
            let Some(peer) = Self::peer_party(&*store, &user)? else {
                return Ok(());
            };
            match SasVerification::accept(now, self.own_party(), peer, &step) {
                Ok((v, reply)) => {
                    self.verifications.insert(user, v);
                    vec![reply]
                }
                Err(e) => {
                    tracing::debug!(error = %e, "refused a verification start");
                    return Ok(());
                }
            }
        } else {
            let Some(v) = self.verifications.get_mut(&user) else {
                return Ok(());
            };
            match v.handle(now, &step) {
                Ok(steps) => steps,
                Err(e) => {
                    tracing::debug!(error = %e, "verification step refused");
                    return Ok(());
                }
            }
        };
        for step in steps {
            self.queue_verification_step(now, user, step);
        }
        self.after_verification_step(now, user, store)?;
        Ok(())
    }

    /// After a step: a verification that ends `Verified` marks the contact verified; the
    /// interface is told either way.
    fn after_verification_step(
        &mut self,
        now: Timestamp,
        user: UserId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if self
            .verifications
            .get(&user)
            .is_some_and(|v| v.verified().is_some())
            && let Some(mut c) = store.contact(&user)?
            && !c.verified
        {
            c.verified = true;
            c.updated_at = now;
            store.apply_one(Change::SaveContact(c))?;
            self.emit(Event::ContactChanged(user));
        }
        self.emit(Event::Verification(user));
        Ok(())
    }

    /// Queues a verification step for `user` (ephemeral).
    pub(super) fn queue_verification_step(
        &mut self,
        now: Timestamp,
        user: UserId,
        step: VerificationStep,
    ) {
        let out = Outgoing {
            peer: user,
            id: EnvelopeId(self.new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Verification(VerificationContent::Verification { step }),
            reliable: false,
        };
        self.queue_ephemeral(now, out);
    }

    /// The conversation a message belongs to, if it is ours to show.
    pub fn conversation_of(
        store: &dyn Store,
        id: &MessageId,
    ) -> Result<Option<ConversationId>, StoreError> {
        Ok(store.message(id)?.map(|m| m.conversation))
    }
}

impl ConnectionView {
    /// While we are invisible, say why there is no direct connection.
    fn with_invisible(mut self, invisible: bool) -> Self {
        if invisible && self.mode != "direct" {
            self.reason = Some(
                "you are invisible: messages go through the server so contacts cannot tell you are online"
                    .to_owned(),
            );
        }
        self
    }
}
