//! The unlocked node: store, keys, chat logic, presence and peers, and the API operations on
//! them. Everything here runs under the node's phase lock; nothing here awaits the network.

use super::json as api_json;
use super::peers::Peer;
use super::{ContactPatch, NodeOptions, SettingsPatch};
use crate::account::{self, OsRandom};
use crate::api::error::ApiError;
use dopus_core::chat::{Chat, ChatError, Outgoing};
use dopus_core::e2e::OlmMachine;
use dopus_core::identity::{Device, Identity};
use dopus_core::store::{
    AccountRecord, Change, Changes, Contact, ContactState, ConversationId, EnvelopeId, Message,
    MessageId, Outcome, SearchQuery, Seq, Store, StoreError,
};
#[allow(unused_imports)]
use dopus_proto::peer::{
    BulkContent, ChatContent, ContactContent, RtcContent, SessionContent, VerificationContent,
};
use dopus_proto::peer::{Content, Conversation};
use dopus_proto::signaling::Status;
use dopus_rtc::{Diagnostics, PeerHandle};
use dopus_store::SqliteStore;
use dopus_types::{Timestamp, UserId};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Settings the user can change (`/settings`), kept in the store's settings table.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The signaling server URL.
    pub server_url: Option<String>,
    /// STUN (and, later, TURN) URLs.
    pub ice_servers: Vec<String>,
    /// Send read receipts (opt-in).
    pub read_receipts: bool,
    /// UI theme.
    pub theme: String,
}

impl Settings {
    fn load(store: &dyn Store) -> Result<Settings, StoreError> {
        Ok(Settings {
            server_url: store.setting("server_url")?,
            ice_servers: store
                .setting("ice_servers")?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            read_receipts: store.setting("read_receipts")?.as_deref() == Some("true"),
            theme: store.setting("theme")?.unwrap_or_else(|| "dark".into()),
        })
    }

    fn changes(&self) -> Changes {
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
        ]
        .into_iter()
        .collect()
    }

    /// `Settings` as the API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "server_url": self.server_url,
            "ice_servers": self.ice_servers,
            "read_receipts": self.read_receipts,
            "theme": self.theme,
        })
    }
}

/// One `POST /conversations/{id}/messages` or `…/messages/batch`: messages to one peer, in
/// order, stored all or none.
#[derive(Debug, Clone)]
pub struct SendTexts {
    /// To whom.
    pub peer: UserId,
    /// What, and the message each answers.
    pub texts: Vec<(String, Option<uuid::Uuid>)>,
}

/// The unlocked state.
pub struct Ready {
    pub store: SqliteStore,
    pub account: AccountRecord,
    pub identity: std::sync::Arc<Identity>,
    pub olm: OlmMachine,
    pub chat: Chat,
    pub settings: Settings,
    pub my_status: Status,
    /// Contacts' presence as the server last told us.
    pub presence: HashMap<UserId, Status>,
    pub signaling: Option<super::net::Client>,
    pub signaling_state: &'static str,
    pub peers: HashMap<UserId, Peer>,
    /// Generation of the network task, so a restarted task's predecessor stops.
    pub net_generation: u64,
    /// When we last asked each peer to replace a broken session.
    pub last_reset: HashMap<UserId, Timestamp>,
    /// Envelopes from each peer that could not be decrypted, and when the first of them came;
    /// a reset is asked for only if they are still missing a little later (`recovery`).
    pub undecryptable: HashMap<UserId, (Timestamp, Vec<dopus_proto::peer::MessageId>)>,
    /// SAS verifications in progress or finished, one per contact.
    pub verifications: HashMap<UserId, dopus_core::verification::SasVerification>,
}

impl Ready {
    /// Builds the unlocked state from an opened store and its account.
    pub fn start(
        mut store: SqliteStore,
        account: AccountRecord,
        fresh: Option<(Identity, Device)>,
        options: &NodeOptions,
    ) -> anyhow::Result<Ready> {
        let key = account::core_pickle_key(&store);
        let (identity, device) = match fresh {
            Some(pair) => pair,
            None => (
                Identity::from_pickle(account.identity_pickle.as_str(), &key)?,
                Device::from_pickle(account.account_pickle.as_str(), &key)?,
            ),
        };
        let olm = OlmMachine::new(device, key, Box::new(OsRandom));
        let mut settings = Settings::load(&store)?;
        if let Some(server) = &options.server {
            settings.server_url = Some(server.clone());
        }
        if let Some(stun) = &options.stun
            && !settings.ice_servers.contains(stun)
        {
            settings.ice_servers.push(stun.clone());
        }
        if options.server.is_some() || options.stun.is_some() {
            store.apply(settings.changes())?;
        }
        let mut chat = Chat::new(account.user_id);
        chat.read_receipts = settings.read_receipts;
        Ok(Ready {
            store,
            account,
            identity: std::sync::Arc::new(identity),
            olm,
            chat,
            settings,
            my_status: Status::Online,
            presence: HashMap::new(),
            signaling: None,
            signaling_state: "disconnected",
            peers: HashMap::new(),
            net_generation: 0,
            last_reset: HashMap::new(),
            undecryptable: HashMap::new(),
            verifications: HashMap::new(),
        })
    }

    pub fn me(&self) -> UserId {
        self.account.user_id
    }

    /// The ICE servers to use: the configured ones, or else the signaling server's own STUN
    /// responder on the standard port, so a deployment needs no third-party STUN server.
    pub fn ice_servers(&self) -> Vec<String> {
        if !self.settings.ice_servers.is_empty() {
            return self.settings.ice_servers.clone();
        }
        self.settings
            .server_url
            .as_deref()
            .and_then(stun_from_server_url)
            .into_iter()
            .collect()
    }

    pub fn me_json(&self) -> Value {
        json!({
            "user_id": self.account.user_id.to_string(),
            "display_name": self.account.display_name,
            "device_id": self.account.device_id.to_string(),
            "device_keys": {
                "ed25519": self.account.device_keys.ed25519.to_base64(),
                "curve25519": self.account.device_keys.curve25519.to_base64(),
            },
            "fingerprint": account::fingerprint(self.account.user_id.key()),
            "status": self.my_status.as_str(),
        })
    }

    /// The users we list with the server for presence (accepted, not blocked).
    pub fn accepted_contacts(&self) -> Vec<UserId> {
        self.store
            .contacts()
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| c.state == ContactState::Accepted && !c.blocked)
                    .map(|c| c.user_id)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn contact_json(&self, c: &Contact) -> Result<Value, StoreError> {
        let mut v = api_json::contact(c);
        let conversation = ConversationId::Direct(c.user_id);
        let summary = self
            .store
            .conversations()?
            .into_iter()
            .find(|s| s.conversation.id == conversation);
        v["presence"] = json!(api_json::presence_str(
            self.presence.get(&c.user_id).copied()
        ));
        v["unread"] = json!(summary.as_ref().map_or(0, |s| s.unread));
        v["last_message"] = match summary.and_then(|s| s.last_message) {
            Some(m) => api_json::message(&self.store, &self.me(), &m)?,
            None => Value::Null,
        };
        v["connection"] = self.connection_json(&c.user_id, None);
        Ok(v)
    }

    pub fn contacts_json(&self) -> Result<Value, StoreError> {
        let mut contacts = self.store.contacts()?;
        contacts.sort_by_key(|c| (c.state != ContactState::Accepted, c.created_at));
        let list: Result<Vec<Value>, StoreError> =
            contacts.iter().map(|c| self.contact_json(c)).collect();
        Ok(Value::Array(list?))
    }

    fn contact_value(&self, user: &UserId) -> Result<Value, ApiError> {
        let c = self
            .store
            .contact(user)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no such contact"))?;
        self.contact_json(&c).map_err(ApiError::internal)
    }

    fn apply(&mut self, changes: Changes) -> Result<(), ApiError> {
        self.store.apply(changes).map_err(ApiError::internal)?;
        Ok(())
    }

    pub fn add_contact(&mut self, user: UserId, name: Option<String>) -> Result<Value, ApiError> {
        if user == self.me() {
            return Err(ApiError::bad_request("that is your own user ID"));
        }
        let now = account::now();
        let existing = self.store.contact(&user).map_err(ApiError::internal)?;
        let name = clean_name(name)?;
        let contact = Contact {
            user_id: user,
            display_name: name.or_else(|| existing.as_ref().and_then(|c| c.display_name.clone())),
            verified: existing.as_ref().is_some_and(|c| c.verified),
            blocked: existing.as_ref().is_some_and(|c| c.blocked),
            state: ContactState::Accepted,
            request_note: existing.as_ref().and_then(|c| c.request_note.clone()),
            created_at: existing.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        self.apply(Changes::from(Change::SaveContact(contact)))?;
        self.contact_value(&user)
    }

    pub fn contact_request(
        &mut self,
        user: UserId,
        name: Option<String>,
        note: Option<String>,
    ) -> Result<Value, ApiError> {
        if user == self.me() {
            return Err(ApiError::bad_request("that is your own user ID"));
        }
        let name = clean_name(name)?;
        let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if note
            .as_ref()
            .is_some_and(|n| n.len() > dopus_proto::peer::MAX_NOTE_BYTES)
        {
            return Err(ApiError::too_large("the note is too long"));
        }
        let now = account::now();
        let existing = self.store.contact(&user).map_err(ApiError::internal)?;
        let state = match existing.as_ref().map(|c| c.state) {
            Some(ContactState::Accepted) | Some(ContactState::IncomingRequest) => {
                ContactState::Accepted
            }
            _ => ContactState::OutgoingRequest,
        };
        let contact = Contact {
            user_id: user,
            display_name: name.or_else(|| existing.as_ref().and_then(|c| c.display_name.clone())),
            verified: existing.as_ref().is_some_and(|c| c.verified),
            blocked: false,
            state,
            request_note: None,
            created_at: existing.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        let mut changes = Changes::from(Change::SaveContact(contact));
        let out = Outgoing {
            peer: user,
            id: EnvelopeId(new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: if state == ContactState::Accepted {
                Content::Contact(ContactContent::ContactAccept {
                    name: Some(self.account.display_name.clone()),
                })
            } else {
                Content::Contact(ContactContent::ContactRequest {
                    name: Some(self.account.display_name.clone()),
                    note,
                })
            },
            reliable: true,
        };
        queue(&mut changes, &out, now);
        self.apply(changes)?;
        self.contact_value(&user)
    }

    pub fn contact_answer(&mut self, user: UserId, accept: bool) -> Result<Value, ApiError> {
        let now = account::now();
        let mut contact = self
            .store
            .contact(&user)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no request from this user"))?;
        if contact.state != ContactState::IncomingRequest
            && !(accept && contact.state == ContactState::Declined)
        {
            return Err(ApiError::conflict(
                "there is no pending request from this user",
            ));
        }
        contact.state = if accept {
            ContactState::Accepted
        } else {
            ContactState::Declined
        };
        contact.updated_at = now;
        let mut changes = Changes::from(Change::SaveContact(contact));
        let out = Outgoing {
            peer: user,
            id: EnvelopeId(new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: if accept {
                Content::Contact(ContactContent::ContactAccept {
                    name: Some(self.account.display_name.clone()),
                })
            } else {
                Content::Contact(ContactContent::ContactDecline)
            },
            reliable: true,
        };
        queue(&mut changes, &out, now);
        self.apply(changes)?;
        self.contact_value(&user)
    }

    pub fn patch_contact(&mut self, user: UserId, patch: ContactPatch) -> Result<Value, ApiError> {
        let mut contact = self
            .store
            .contact(&user)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no such contact"))?;
        if let Some(name) = patch.display_name {
            contact.display_name = clean_name(Some(name))?;
        }
        if let Some(v) = patch.verified {
            contact.verified = v;
        }
        if let Some(b) = patch.blocked {
            contact.blocked = b;
        }
        contact.updated_at = account::now();
        self.apply(Changes::from(Change::SaveContact(contact)))?;
        self.contact_value(&user)
    }

    pub fn safety(&self, user: UserId) -> Result<Value, ApiError> {
        let contact = self
            .store
            .contact(&user)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no such contact"))?;
        Ok(json!({
            "safety_number": dopus_core::verification::SafetyNumber::new(&self.me(), &user).groups().join(" "),
            "verified": contact.verified,
        }))
    }

    pub fn peer_handle(&self, user: &UserId) -> Option<PeerHandle> {
        self.peers.get(user).and_then(|p| p.handle.clone())
    }

    pub fn connection_json(&self, user: &UserId, diag: Option<&Diagnostics>) -> Value {
        let online = self
            .presence
            .get(user)
            .is_some_and(|s| s.as_seen_by_others() != Status::Offline);
        match self.peers.get(user) {
            Some(peer) => peer.to_json(diag, online, self.signaling.is_some()),
            None => json!({
                "mode": if self.signaling.is_some() { "mailbox" } else { "none" },
                "state": "new",
                "reason": if online { Value::Null } else { json!("the contact is offline: messages wait in the server's mailbox") },
            }),
        }
    }

    pub fn messages(
        &self,
        peer: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Value, ApiError> {
        let conversation = ConversationId::Direct(peer);
        let mut page = self
            .store
            .messages_before(&conversation, before.map(Seq), limit + 1)
            .map_err(ApiError::internal)?;
        let has_more = page.len() > limit;
        page.truncate(limit);
        page.reverse();
        let me = self.me();
        let list: Result<Vec<Value>, StoreError> = page
            .iter()
            .map(|m| api_json::message(&self.store, &me, m))
            .collect();
        Ok(json!({ "messages": list.map_err(ApiError::internal)?, "has_more": has_more }))
    }

    fn message_value(&self, id: &MessageId) -> Result<Value, ApiError> {
        let m = self
            .store
            .message(id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no such message"))?;
        api_json::message(&self.store, &self.me(), &m).map_err(ApiError::internal)
    }

    /// Message JSON for events after a change (None if it vanished).
    pub fn message_event_value(&self, id: &MessageId) -> Option<Value> {
        self.message_value(id).ok()
    }

    /// Sends text messages, all in one store transaction (group commit: `combine`). Each
    /// request is stored or refused as a whole, on its own (a savepoint each); if the commit
    /// fails, all fail. Answers in request order, each request's messages in order.
    pub fn send_texts(&mut self, requests: Vec<SendTexts>) -> Vec<Result<Vec<Value>, ApiError>> {
        let now = account::now();
        let count = requests.len();
        let Ready { store, chat, .. } = self;
        let sent = store.batch(|store| {
            requests
                .into_iter()
                .map(|q| {
                    let texts: Vec<_> = q
                        .texts
                        .into_iter()
                        .map(|(body, reply_to)| (new_id(now), body, reply_to.map(MessageId)))
                        .collect();
                    let (mut changes, outs) = chat
                        .send_texts(&*store, now, q.peer, texts)
                        .map_err(chat_error)?;
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
                        queue(&mut changes, out, now);
                    }
                    let applied = store.apply(changes).map_err(ApiError::internal)?;
                    // The answer is built from what was inserted: reading it back would cost
                    // a query per message under the node's lock.
                    Ok(new
                        .into_iter()
                        .enumerate()
                        .map(|(i, m)| match applied.outcomes.get(i) {
                            Some(Outcome::Inserted(seq)) => (m.id, Some(m.stored(*seq))),
                            _ => (m.id, None),
                        })
                        .collect::<Vec<_>>())
                })
                .collect::<Vec<Result<Vec<(MessageId, Option<Message>)>, ApiError>>>()
        });
        let me = self.me();
        match sent {
            Ok(groups) => groups
                .into_iter()
                .map(|group| {
                    group?
                        .into_iter()
                        .map(|(id, m)| match m {
                            Some(m) => Ok(api_json::message_with(&me, &m, &[])),
                            None => self.message_value(&id),
                        })
                        .collect()
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not store sent messages");
                (0..count).map(|_| Err(ApiError::internal(&e))).collect()
            }
        }
    }

    /// An operation on one of our messages (edit, delete, react): the chat logic's changes
    /// and the content for the peer, queued in the outbox in the same commit. Answers the
    /// message as it now is.
    fn change_message(
        &mut self,
        id: uuid::Uuid,
        op: impl FnOnce(
            &mut Chat,
            &SqliteStore,
            Timestamp,
            EnvelopeId,
            MessageId,
        ) -> Result<(Changes, Outgoing), ChatError>,
    ) -> Result<Value, ApiError> {
        let now = account::now();
        let (mut changes, out) = op(
            &mut self.chat,
            &self.store,
            now,
            EnvelopeId(new_id(now).0),
            MessageId(id),
        )
        .map_err(chat_error)?;
        queue(&mut changes, &out, now);
        self.apply(changes)?;
        self.message_value(&MessageId(id))
    }

    pub fn edit(&mut self, id: uuid::Uuid, body: String) -> Result<Value, ApiError> {
        self.change_message(id, |chat, store, now, envelope, target| {
            chat.edit(store, now, envelope, target, body)
        })
    }

    pub fn delete(&mut self, id: uuid::Uuid) -> Result<Value, ApiError> {
        self.change_message(id, |chat, store, now, envelope, target| {
            chat.delete(store, now, envelope, target)
        })
    }

    pub fn react(&mut self, id: uuid::Uuid, emoji: String, add: bool) -> Result<Value, ApiError> {
        self.change_message(id, |chat, store, now, envelope, target| {
            chat.react(store, now, envelope, target, emoji, add)
        })
    }

    pub fn typing(&mut self, peer: UserId, active: bool) -> Result<Vec<Outgoing>, ApiError> {
        let contact = self.store.contact(&peer).map_err(ApiError::internal)?;
        if !contact.is_some_and(|c| c.state == ContactState::Accepted && !c.blocked) {
            return Err(ApiError::not_allowed("not an accepted contact"));
        }
        let now = account::now();
        Ok(self
            .chat
            .typing(now, EnvelopeId(new_id(now).0), peer, active)
            .into_iter()
            .collect())
    }

    pub fn mark_read(
        &mut self,
        peer: UserId,
        up_to: uuid::Uuid,
    ) -> Result<Vec<Outgoing>, ApiError> {
        let now = account::now();
        let (changes, receipt) = self
            .chat
            .mark_read(
                &self.store,
                now,
                EnvelopeId(new_id(now).0),
                peer,
                MessageId(up_to),
            )
            .map_err(chat_error)?;
        self.apply(changes)?;
        Ok(receipt.into_iter().collect())
    }

    pub fn search(&self, q: &str, limit: usize) -> Result<Value, ApiError> {
        let hits = self
            .store
            .search(&SearchQuery {
                text: q.to_owned(),
                conversation: None,
                before: None,
                limit,
            })
            .map_err(ApiError::internal)?;
        let me = self.me();
        let results: Result<Vec<Value>, StoreError> = hits
            .iter()
            .map(|h| {
                Ok(json!({
                    "message": api_json::message(&self.store, &me, &h.message)?,
                    "snippet": h.snippet
                        .replace(
                            [dopus_core::store::SNIPPET_START, dopus_core::store::SNIPPET_END],
                            "",
                        ),
                    "highlighted": h.snippet,
                }))
            })
            .collect();
        Ok(json!({ "results": results.map_err(ApiError::internal)? }))
    }

    /// Returns the new settings and whether the server URL changed.
    pub fn put_settings(&mut self, patch: SettingsPatch) -> Result<(Value, bool), ApiError> {
        let mut s = self.settings.clone();
        let mut server_changed = false;
        if let Some(url) = patch.server_url {
            let url = url.trim().to_owned();
            if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(ApiError::bad_request(
                    "the server URL must start with ws:// or wss://",
                ));
            }
            let url = (!url.is_empty()).then_some(url);
            server_changed = url != s.server_url;
            s.server_url = url;
        }
        if let Some(ice) = patch.ice_servers {
            for url in &ice {
                dopus_rtc::IceServer::parse(url)
                    .map_err(|e| ApiError::bad_request(format!("ICE server {url:?}: {e}")))?;
            }
            s.ice_servers = ice;
        }
        if let Some(rr) = patch.read_receipts {
            s.read_receipts = rr;
        }
        if let Some(theme) = patch.theme {
            if theme != "dark" && theme != "light" {
                return Err(ApiError::bad_request("theme must be dark or light"));
            }
            s.theme = theme;
        }
        self.apply(s.changes())?;
        self.chat.read_receipts = s.read_receipts;
        self.settings = s;
        Ok((self.settings.to_json(), server_changed))
    }

    pub fn close_peers(&mut self) {
        for (_, peer) in self.peers.drain() {
            peer.close();
        }
    }
}

/// `stun:<host>:3478` for a `ws://host:port/…` or `wss://…` server URL.
fn stun_from_server_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        format!("[{}]", v6.split(']').next()?)
    } else {
        authority.split(':').next()?.to_owned()
    };
    (!host.is_empty()).then(|| format!("stun:{host}:3478"))
}

/// Queues a reliable content in the outbox, in the same batch as `changes`.
pub fn queue(changes: &mut Changes, out: &Outgoing, now: Timestamp) {
    let queued = super::deliver::Queued {
        conversation: out.conversation.clone(),
        sent_at: out.sent_at,
        content: out.content.clone(),
    };
    if let Ok(bytes) = serde_json::to_vec(&queued) {
        changes.push(Change::OutboxEnqueue(dopus_core::store::OutboxItem {
            id: out.id,
            bytes,
            created_at: now,
            recipients: vec![dopus_core::store::OutboxRecipient {
                user: out.peer,
                device: None,
            }],
            next_attempt_at: now,
        }));
    }
}

/// A fresh UUIDv7.
pub fn new_id(now: Timestamp) -> MessageId {
    MessageId(
        uuid::Builder::from_unix_timestamp_millis(now.as_millis(), &account::random_bytes::<10>())
            .into_uuid(),
    )
}

fn clean_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.len() > dopus_proto::peer::MAX_NAME_BYTES)
    {
        return Err(ApiError::too_large("the name is too long"));
    }
    Ok(name)
}

fn chat_error(e: ChatError) -> ApiError {
    match e {
        ChatError::NotAContact => ApiError::not_allowed("not an accepted contact"),
        ChatError::Blocked => ApiError::not_allowed("this contact is blocked"),
        ChatError::BadBody => ApiError::bad_request(e.to_string()),
        ChatError::BadEmoji => ApiError::bad_request(e.to_string()),
        ChatError::UnknownMessage => ApiError::not_found("no such message"),
        ChatError::NotYours => ApiError::not_allowed("only the sender can change a message"),
        ChatError::Deleted => ApiError::not_allowed("the message was deleted"),
        ChatError::Store(e) => ApiError::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::stun_from_server_url;

    #[test]
    fn stun_defaults_to_the_signaling_host() {
        assert_eq!(
            stun_from_server_url("wss://signal.example.org/ws").as_deref(),
            Some("stun:signal.example.org:3478")
        );
        assert_eq!(
            stun_from_server_url("ws://127.0.0.1:7400").as_deref(),
            Some("stun:127.0.0.1:3478")
        );
        assert_eq!(
            stun_from_server_url("ws://[::1]:7400/ws").as_deref(),
            Some("stun:[::1]:3478")
        );
        assert_eq!(stun_from_server_url("http://x"), None);
    }
}
