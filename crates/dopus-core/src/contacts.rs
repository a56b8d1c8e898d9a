//! The contact state machine, both halves: what a user's action does to a contact record and
//! what goes to the other side, and what a request or answer from the other side does here.
//! Sans-IO: every call takes the store (read-only), `now` and fresh ids.
//!
//! Protocol flow (docs/peer-protocol.md, "Contacts"):
//! - `request` stores the contact as `outgoing_request` and queues a `contact_request` (end to
//!   end encrypted: the server only sees two keys exchange an envelope);
//! - the other side stores `incoming_request` (or `accepted` at once if it had asked too), and
//!   its user accepts (`contact_accept`) or declines (`contact_decline`);
//! - an accept moves `outgoing_request` to `accepted`; a decline to `declined`;
//! - only accepted, unblocked contacts exchange messages and see each other's presence; a
//!   blocked contact's requests and messages are dropped.

use crate::outgoing::{Outgoing, delivered_receipt};
use crate::store::{Change, Changes, Contact, ContactState, EnvelopeId, Store, StoreError};
use dopus_proto::peer::{
    self, ContactContent, Content, Conversation, MAX_NAME_BYTES, MAX_NOTE_BYTES,
};
use dopus_types::{Timestamp, UserId};

/// Why a contact action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// The user ID is our own.
    #[error("that is your own user ID")]
    OwnUserId,
    /// No contact record for this user.
    #[error("no such contact")]
    Unknown,
    /// There is no pending request to answer.
    #[error("there is no pending request from this user")]
    NoPendingRequest,
    /// A name or note is too long.
    #[error("the {0} is too long")]
    TooLong(&'static str),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A partial update of a contact by its user.
#[derive(Debug, Clone, Default)]
pub struct ContactPatch {
    /// New name (empty: none).
    pub display_name: Option<String>,
    /// Mark verified (after comparing the safety number) or not.
    pub verified: Option<bool>,
    /// Block or unblock.
    pub blocked: Option<bool>,
}

/// What a contact action produced.
#[derive(Debug, Default)]
pub struct ContactStep {
    /// Apply these.
    pub changes: Changes,
    /// Queue this reliable content, if any.
    pub out: Option<Outgoing>,
    /// The contact as it now is.
    pub contact: Option<Contact>,
}

/// Trims a name, refusing one longer than [`MAX_NAME_BYTES`]; empty means none.
pub fn clean_name(name: Option<String>) -> Result<Option<String>, ContactError> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return Err(ContactError::TooLong("name"));
    }
    Ok(name)
}

/// Whether `contact` may exchange messages with us.
pub fn is_accepted(contact: Option<&Contact>) -> bool {
    contact.is_some_and(|c| c.state == ContactState::Accepted && !c.blocked)
}

/// Adds `user` as an accepted contact directly (both sides did so out of band, as the demo and
/// tests do); keeps what we knew about them.
pub fn add(
    store: &dyn Store,
    me: UserId,
    now: Timestamp,
    user: UserId,
    name: Option<String>,
) -> Result<ContactStep, ContactError> {
    if user == me {
        return Err(ContactError::OwnUserId);
    }
    let existing = store.contact(&user)?;
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
    Ok(ContactStep {
        changes: Changes::from(Change::SaveContact(contact.clone())),
        out: None,
        contact: Some(contact),
    })
}

/// Asks `user` to become a contact (or accepts at once if they asked us first). `my_name` is the
/// name we suggest for ourselves; `envelope` a fresh id for the request.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of one request, each a plain value"
)]
pub fn request(
    store: &dyn Store,
    me: UserId,
    my_name: &str,
    now: Timestamp,
    envelope: EnvelopeId,
    user: UserId,
    name: Option<String>,
    note: Option<String>,
) -> Result<ContactStep, ContactError> {
    if user == me {
        return Err(ContactError::OwnUserId);
    }
    let name = clean_name(name)?;
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
        return Err(ContactError::TooLong("note"));
    }
    let existing = store.contact(&user)?;
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
    let content = if state == ContactState::Accepted {
        ContactContent::ContactAccept {
            name: Some(my_name.to_owned()),
        }
    } else {
        ContactContent::ContactRequest {
            name: Some(my_name.to_owned()),
            note,
        }
    };
    Ok(ContactStep {
        changes: Changes::from(Change::SaveContact(contact.clone())),
        out: Some(reliable(user, envelope, now, content)),
        contact: Some(contact),
    })
}

/// Accepts or declines a pending request from `user` (a declined request can still be
/// accepted later).
pub fn answer(
    store: &dyn Store,
    my_name: &str,
    now: Timestamp,
    envelope: EnvelopeId,
    user: UserId,
    accept: bool,
) -> Result<ContactStep, ContactError> {
    let mut contact = store.contact(&user)?.ok_or(ContactError::Unknown)?;
    if contact.state != ContactState::IncomingRequest
        && !(accept && contact.state == ContactState::Declined)
    {
        return Err(ContactError::NoPendingRequest);
    }
    contact.state = if accept {
        ContactState::Accepted
    } else {
        ContactState::Declined
    };
    contact.updated_at = now;
    let content = if accept {
        ContactContent::ContactAccept {
            name: Some(my_name.to_owned()),
        }
    } else {
        ContactContent::ContactDecline
    };
    Ok(ContactStep {
        changes: Changes::from(Change::SaveContact(contact.clone())),
        out: Some(reliable(user, envelope, now, content)),
        contact: Some(contact),
    })
}

/// Renames, (un)verifies or (un)blocks a contact.
pub fn patch(
    store: &dyn Store,
    now: Timestamp,
    user: UserId,
    patch: ContactPatch,
) -> Result<ContactStep, ContactError> {
    let mut contact = store.contact(&user)?.ok_or(ContactError::Unknown)?;
    if let Some(name) = patch.display_name {
        contact.display_name = clean_name(Some(name))?;
    }
    if let Some(v) = patch.verified {
        contact.verified = v;
    }
    if let Some(b) = patch.blocked {
        contact.blocked = b;
    }
    contact.updated_at = now;
    Ok(ContactStep {
        changes: Changes::from(Change::SaveContact(contact.clone())),
        out: None,
        contact: Some(contact),
    })
}

/// Removes a contact (their messages stay in the history; they are no longer a contact, so
/// nothing more is exchanged until one side asks again).
pub fn remove(store: &dyn Store, user: UserId) -> Result<ContactStep, ContactError> {
    store.contact(&user)?.ok_or(ContactError::Unknown)?;
    Ok(ContactStep {
        changes: Changes::from(Change::RemoveContact(user)),
        out: None,
        contact: None,
    })
}

/// What a contact content from `sender` did here.
#[derive(Debug, Default)]
pub struct ContactReceived {
    /// Apply these.
    pub changes: Changes,
    /// Whether the contact record changed (tell the UI, re-sync presence).
    pub changed: bool,
    /// The delivered receipt to send, if one is due.
    pub ack: Option<Outgoing>,
}

/// Takes in a contact request or answer from `sender` (decrypted, binding checked).
/// `ack_envelope` is a fresh id for the acknowledgement.
pub fn receive(
    store: &dyn Store,
    now: Timestamp,
    sender: UserId,
    message: peer::MessageId,
    content: &ContactContent,
    ack_envelope: EnvelopeId,
) -> Result<ContactReceived, StoreError> {
    let contact = store.contact(&sender)?;
    let mut r = ContactReceived::default();
    let ack = || Some(delivered_receipt(sender, ack_envelope, now, message));
    match content {
        ContactContent::ContactRequest { name, note } => {
            if contact.as_ref().is_some_and(|c| c.blocked) {
                return Ok(r);
            }
            let (state, display) = match &contact {
                // They asked too, or we already have them: both sides now agree.
                Some(c)
                    if matches!(
                        c.state,
                        ContactState::OutgoingRequest | ContactState::Accepted
                    ) =>
                {
                    (ContactState::Accepted, c.display_name.clone())
                }
                Some(c) => (ContactState::IncomingRequest, c.display_name.clone()),
                None => (ContactState::IncomingRequest, None),
            };
            r.changes.push(Change::SaveContact(Contact {
                user_id: sender,
                display_name: display.or_else(|| name.clone()),
                verified: contact.as_ref().is_some_and(|c| c.verified),
                blocked: false,
                state,
                request_note: note.clone(),
                created_at: contact.as_ref().map_or(now, |c| c.created_at),
                updated_at: now,
            }));
            r.changed = true;
            r.ack = ack();
        }
        ContactContent::ContactAccept { name } => {
            if let Some(c) = &contact
                && matches!(
                    c.state,
                    ContactState::OutgoingRequest | ContactState::Accepted
                )
                && !c.blocked
            {
                let mut c = c.clone();
                c.state = ContactState::Accepted;
                if c.display_name.is_none() {
                    c.display_name = name.clone();
                }
                c.updated_at = now;
                r.changes.push(Change::SaveContact(c));
                r.changed = true;
            }
            r.ack = ack();
        }
        ContactContent::Profile {
            name,
            status_text,
            avatar,
            updated_at,
        } => {
            // Only from an accepted contact we have not blocked; only a newer card replaces
            // the one we hold (copies may arrive late and out of order).
            if let Some(c) = &contact
                && c.state == ContactState::Accepted
                && !c.blocked
                && content.validate().is_ok()
            {
                let card = ProfileCard {
                    status_text: status_text.clone().filter(|t| !t.is_empty()),
                    avatar: avatar.clone().filter(|a| !a.is_empty()),
                    updated_at: Timestamp(*updated_at),
                };
                let newer = profile_of(store, &sender)?
                    .is_none_or(|held| held.updated_at < card.updated_at);
                if newer && let Some(change) = save_card(profile_key(&sender), &card) {
                    r.changes.push(change);
                    if c.display_name.is_none() && name.is_some() {
                        let mut c = c.clone();
                        c.display_name = name.clone();
                        c.updated_at = now;
                        r.changes.push(Change::SaveContact(c));
                    }
                    r.changed = true;
                }
            }
            r.ack = ack();
        }
        ContactContent::ContactDecline => {
            if let Some(c) = &contact
                && c.state == ContactState::OutgoingRequest
            {
                let mut c = c.clone();
                c.state = ContactState::Declined;
                c.updated_at = now;
                r.changes.push(Change::SaveContact(c));
                r.changed = true;
            }
            r.ack = ack();
        }
    }
    Ok(r)
}

/// Our answer again to a request from `sender`, who is already our accepted contact: a repeated
/// request (a new id) means they never learned our answer, for example because their store was
/// put back to a copy from before it came. `None` unless `before` (the contact as it was before
/// the request was taken in) is accepted and not blocked.
pub fn answer_again(
    before: Option<&Contact>,
    my_name: &str,
    now: Timestamp,
    envelope: EnvelopeId,
    sender: UserId,
    content: &ContactContent,
) -> Option<Outgoing> {
    let repeated = matches!(content, ContactContent::ContactRequest { .. })
        && before.is_some_and(|c| c.state == ContactState::Accepted && !c.blocked);
    repeated.then(|| {
        reliable(
            sender,
            envelope,
            now,
            ContactContent::ContactAccept {
                name: Some(my_name.to_owned()),
            },
        )
    })
}

fn reliable(peer: UserId, id: EnvelopeId, now: Timestamp, content: ContactContent) -> Outgoing {
    Outgoing {
        peer,
        id,
        conversation: Conversation::Direct,
        sent_at: now,
        content: Content::Contact(content),
        reliable: true,
    }
}

/// A profile card: ours (settings key [`OWN_PROFILE_KEY`]) or a contact's as they last sent it
/// (settings key `profile:<user id>`). The name is not here: ours is the account's display name,
/// and a contact's name is the contact record's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProfileCard {
    /// A short status line.
    pub status_text: Option<String>,
    /// A small image as a data URL.
    pub avatar: Option<String>,
    /// When its owner last changed it.
    pub updated_at: Timestamp,
}

/// The settings key of our own profile card.
pub const OWN_PROFILE_KEY: &str = "profile";

fn profile_key(user: &UserId) -> String {
    format!("profile:{user}")
}

fn read_card(store: &dyn Store, key: &str) -> Result<Option<ProfileCard>, StoreError> {
    // A card that no longer parses is treated as none (it is only ever written by this code).
    Ok(store
        .setting(key)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

/// Our own profile card, if we made one.
pub fn own_profile(store: &dyn Store) -> Result<Option<ProfileCard>, StoreError> {
    read_card(store, OWN_PROFILE_KEY)
}

/// The card `user` last sent us, if any.
pub fn profile_of(store: &dyn Store, user: &UserId) -> Result<Option<ProfileCard>, StoreError> {
    read_card(store, &profile_key(user))
}

/// The change that stores a card under `key`.
fn save_card(key: String, card: &ProfileCard) -> Option<Change> {
    serde_json::to_string(card)
        .ok()
        .map(|value| Change::SetSetting {
            key,
            value: Some(value),
        })
}

/// The change that stores our own card.
pub fn save_own_profile(card: &ProfileCard) -> Option<Change> {
    save_card(OWN_PROFILE_KEY.to_owned(), card)
}

/// Our card as the content that carries it to `peer` (reliable: it waits for them).
pub fn profile_out(
    peer: UserId,
    envelope: EnvelopeId,
    now: Timestamp,
    name: &str,
    card: &ProfileCard,
) -> Outgoing {
    reliable(
        peer,
        envelope,
        now,
        ContactContent::Profile {
            name: Some(name.to_owned()),
            status_text: card.status_text.clone(),
            avatar: card.avatar.clone(),
            updated_at: card.updated_at.as_millis(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, conformance::user};
    use uuid::Uuid;

    fn env(n: u128) -> EnvelopeId {
        EnvelopeId(Uuid::from_u128(n))
    }

    fn mid(n: u64) -> peer::MessageId {
        peer::MessageId::new_v7(Timestamp(n), [1; 10])
    }

    #[test]
    fn a_repeated_request_from_a_contact_is_answered_again() {
        let bob = user(2);
        let request = ContactContent::ContactRequest {
            name: None,
            note: None,
        };
        let mut c = Contact {
            user_id: bob,
            display_name: None,
            verified: false,
            blocked: false,
            state: ContactState::Accepted,
            request_note: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        let out = answer_again(Some(&c), "alice", Timestamp(2), env(9), bob, &request).unwrap();
        assert!(out.reliable);
        assert!(matches!(
            out.content,
            Content::Contact(ContactContent::ContactAccept { .. })
        ));
        // Not for a first request, a pending one, a blocked contact or an answer.
        assert!(answer_again(None, "alice", Timestamp(2), env(9), bob, &request).is_none());
        c.state = ContactState::OutgoingRequest;
        assert!(answer_again(Some(&c), "alice", Timestamp(2), env(9), bob, &request).is_none());
        c.state = ContactState::Accepted;
        c.blocked = true;
        assert!(answer_again(Some(&c), "alice", Timestamp(2), env(9), bob, &request).is_none());
        c.blocked = false;
        let accept = ContactContent::ContactAccept { name: None };
        assert!(answer_again(Some(&c), "alice", Timestamp(2), env(9), bob, &accept).is_none());
    }

    #[test]
    fn a_request_and_its_accept_make_both_sides_contacts() {
        let (alice, bob) = (user(1), user(2));
        let mut a = MemoryStore::new();
        let mut b = MemoryStore::new();
        let step = request(
            &a,
            alice,
            "Alice",
            Timestamp(1),
            env(1),
            bob,
            None,
            Some("hi".into()),
        )
        .unwrap();
        a.apply(step.changes).unwrap();
        let Some(Outgoing {
            content: Content::Contact(req),
            ..
        }) = step.out
        else {
            panic!("no request queued")
        };
        assert_eq!(
            a.contact(&bob).unwrap().unwrap().state,
            ContactState::OutgoingRequest
        );
        let got = receive(&b, Timestamp(2), alice, mid(1), &req, env(2)).unwrap();
        assert!(got.changed && got.ack.is_some());
        b.apply(got.changes).unwrap();
        let c = b.contact(&alice).unwrap().unwrap();
        assert_eq!(c.state, ContactState::IncomingRequest);
        assert_eq!(c.display_name.as_deref(), Some("Alice"));
        assert_eq!(c.request_note.as_deref(), Some("hi"));
        let step = answer(&b, "Bob", Timestamp(3), env(3), alice, true).unwrap();
        b.apply(step.changes).unwrap();
        let Some(Outgoing {
            content: Content::Contact(acc),
            ..
        }) = step.out
        else {
            panic!("no answer queued")
        };
        let got = receive(&a, Timestamp(4), bob, mid(2), &acc, env(4)).unwrap();
        a.apply(got.changes).unwrap();
        assert!(is_accepted(a.contact(&bob).unwrap().as_ref()));
        assert!(is_accepted(b.contact(&alice).unwrap().as_ref()));
        // Nothing to answer twice.
        assert!(matches!(
            answer(&b, "Bob", Timestamp(5), env(5), alice, true),
            Err(ContactError::NoPendingRequest)
        ));
    }

    #[test]
    fn crossing_requests_agree_and_blocked_senders_are_ignored() {
        let (alice, bob) = (user(1), user(2));
        let mut a = MemoryStore::new();
        let step = request(&a, alice, "A", Timestamp(1), env(1), bob, None, None).unwrap();
        a.apply(step.changes).unwrap();
        let req = ContactContent::ContactRequest {
            name: Some("B".into()),
            note: None,
        };
        let got = receive(&a, Timestamp(2), bob, mid(1), &req, env(2)).unwrap();
        a.apply(got.changes).unwrap();
        assert_eq!(
            a.contact(&bob).unwrap().unwrap().state,
            ContactState::Accepted
        );
        let step = patch(
            &a,
            Timestamp(3),
            bob,
            ContactPatch {
                blocked: Some(true),
                ..ContactPatch::default()
            },
        )
        .unwrap();
        a.apply(step.changes).unwrap();
        let got = receive(&a, Timestamp(4), bob, mid(2), &req, env(3)).unwrap();
        assert!(!got.changed && got.changes.is_empty() && got.ack.is_none());
        assert!(matches!(
            request(&a, alice, "A", Timestamp(5), env(4), alice, None, None),
            Err(ContactError::OwnUserId)
        ));
        assert!(matches!(
            clean_name(Some("x".repeat(MAX_NAME_BYTES + 1))),
            Err(ContactError::TooLong("name"))
        ));
    }
}
