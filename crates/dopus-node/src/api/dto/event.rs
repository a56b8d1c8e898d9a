//! `GET /api/v1/events`: one JSON text frame per event, tagged by `type`.

use super::planned::ProfileCard;
use super::{
    Connection, Contact, ConversationId, DeliveryState, Message, MessageId, NodeState, Presence,
    SignalingState, Transfer, TransferProgress, UserId, Verification,
};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A live event. Events are not replayed: a client fetches state with the REST calls on every
/// (re)connect, then applies events. A client ignores types it does not know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The node's phase changed (sent when it becomes ready).
    Status {
        /// The new phase.
        state: NodeState,
    },
    /// The signaling client's state changed.
    Signaling {
        /// The new state.
        state: SignalingState,
        /// With `disconnected`: the next reconnect starts in this many ms (the client's
        /// backoff). A second `disconnected` event carries it right after the first (which has
        /// none); left out for every other state and after a replacement (no retry follows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional, type = "number")]
        retry_in_ms: Option<u64>,
    },
    /// A new message, incoming or outgoing.
    Message {
        /// The message.
        message: Message,
    },
    /// An edit, a delete or a reaction changed a message.
    MessageUpdated {
        /// The message as it is now.
        message: Message,
    },
    /// One of our messages moved on in delivery (the most frequent event, so it carries only
    /// the new state; a client ignores an id it does not hold).
    MessageState {
        /// Which message.
        id: MessageId,
        /// Its conversation.
        conversation: ConversationId,
        /// The new state.
        state: DeliveryState,
    },
    /// A contact is typing, or a member in a channel (expires 6 s after the last refresh;
    /// their next message ends it).
    Typing {
        /// Who.
        user_id: UserId,
        /// Started or stopped.
        active: bool,
        /// The channel (`dchan1…`) when they type in a space; left out in a direct chat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        channel: Option<String>,
    },
    /// A contact's presence changed (or ours, set from another client).
    Presence {
        /// Whose.
        user_id: UserId,
        /// As we may see it.
        presence: Presence,
    },
    /// A contact was added, asked, accepted or changed.
    Contact {
        /// The contact as it is now (boxed: it is the largest event).
        contact: Box<Contact>,
    },
    /// How we reach a contact changed.
    Connection {
        /// Which contact.
        user_id: UserId,
        /// The connection as it is now.
        connection: Connection,
    },
    /// A broken Olm session with a contact was replaced.
    SessionReset {
        /// Which contact.
        user_id: UserId,
        /// How many messages were sent again.
        #[ts(type = "number")]
        resent: u64,
    },
    /// An emoji verification moved on. The side that did not start it receives this too as soon
    /// as the start arrives (state `waiting`), so its UI can say that it started.
    Verification {
        /// With whom.
        user_id: UserId,
        /// Where it stands.
        verification: Verification,
    },
    /// A space changed (its members, roles, channels or settings), or our attempt to join
    /// it moved on.
    Space {
        /// The space as it is now (boxed: it can be large).
        space: Box<super::Space>,
    },
    /// A channel's messages waiting for their key changed (one started waiting, was
    /// decrypted, or its wait was withheld or given up): its whole list of placeholders.
    ChannelWaiting {
        /// The channel (`dchan1…`).
        channel: String,
        /// Its placeholders now, oldest first.
        waiting: Vec<super::WaitingMessage>,
    },
    /// A call was placed, picked up or ended, or its diagnostics changed.
    Call {
        /// The call as it is now.
        call: Box<super::Call>,
    },
    /// Who is in a space's voice channels changed (a join, leave, expiry, mute, a permission
    /// change), or our own voice state did.
    Voice {
        /// The space's voice channels as they are now.
        voice: Box<super::SpaceVoice>,
    },
    /// A file transfer was made or changed state (read back from the store).
    Transfer {
        /// The transfer as it is now.
        transfer: Box<Transfer>,
    },
    /// A transfer's live progress: at most 4 a second per transfer, at once on a state change.
    TransferProgress {
        /// Bytes, rate, ETA.
        progress: TransferProgress,
    },
    /// This client fell behind; the socket closes next. Reconnect and refetch.
    Lagged {
        /// How many events were dropped.
        #[ts(type = "number")]
        missed: u64,
    },
    /// A contact sent a new profile (name, avatar, status text). Not sent by today's node: a
    /// new card comes as a `contact` event whose `profile` is the new one; the UI reads both.
    Profile {
        /// Whose.
        user_id: UserId,
        /// The profile as it is now.
        profile: ProfileCard,
    },
    /// A contact was removed (`DELETE /contacts/{id}`, from this client or another).
    ContactRemoved {
        /// Who.
        user_id: UserId,
    },
}

impl Event {
    /// `message_state`, built from what the node already holds (no store read).
    pub fn message_state(
        id: &dopus_core::store::MessageId,
        conversation: &dopus_core::store::ConversationId,
        state: dopus_core::store::DeliveryState,
    ) -> Self {
        Self::MessageState {
            id: id.into(),
            conversation: conversation.into(),
            state: state.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::fixtures::{contact, incoming, message_id, user};
    use crate::api::dto::{ContactLive, SignalingState};
    use dopus_core::store;

    #[test]
    fn every_event() {
        let me = user(1);
        let bob = UserId::from(&user(2));
        let message = Message::from_record(&incoming(), &[], &me);
        let contact = crate::api::dto::Contact::from_record(
            &contact(store::ContactState::Accepted),
            ContactLive {
                presence: Presence::Online,
                unread: 0,
                last_message: None,
                connection: Connection::without_peer(true, true),
            },
        );
        let events = vec![
            Event::Status {
                state: NodeState::Ready,
            },
            Event::Signaling {
                state: SignalingState::Connected,
                retry_in_ms: None,
            },
            Event::Message {
                message: message.clone(),
            },
            Event::MessageUpdated { message },
            Event::message_state(
                &message_id(2),
                &store::ConversationId::Direct(user(2)),
                store::DeliveryState::Delivered,
            ),
            Event::Typing {
                user_id: bob.clone(),
                active: true,
                channel: None,
            },
            Event::Presence {
                user_id: bob.clone(),
                presence: Presence::Away,
            },
            Event::Contact {
                contact: Box::new(contact),
            },
            Event::Connection {
                user_id: bob.clone(),
                connection: Connection::without_peer(false, true),
            },
            Event::SessionReset {
                user_id: bob.clone(),
                resent: 2,
            },
            Event::Verification {
                user_id: bob,
                verification: Verification::from_sas(None),
            },
            Event::Lagged { missed: 17 },
        ];
        insta::assert_json_snapshot!(events);
    }

    #[test]
    fn events_read_back() {
        let text = r#"{"type":"typing","user_id":"x","active":false}"#;
        let e: Event = serde_json::from_str(text).expect("parses");
        assert_eq!(
            e,
            Event::Typing {
                user_id: UserId("x".into()),
                active: false,
                channel: None,
            }
        );
    }
}
