//! The JSON shapes of the local API (docs/api.md, "Types").

use dopus_core::store::{
    Contact, ConversationId, DeliveryState, Message, MessageId, ReactionSummary, Store, StoreError,
};
use dopus_types::UserId;
use serde_json::{Value, json};

/// A presence as the API names it.
pub fn presence_str(status: Option<dopus_proto::signaling::Status>) -> &'static str {
    status.map_or("offline", |s| s.as_seen_by_others().as_str())
}

/// `Message`.
pub fn message(store: &dyn Store, me: &UserId, m: &Message) -> Result<Value, StoreError> {
    let reactions = store.reactions(&m.id)?;
    Ok(message_with(me, m, &reactions))
}

/// A conversation as the API names it: the peer's user ID, or the channel's id.
fn conversation_name(c: &ConversationId) -> String {
    match c {
        ConversationId::Direct(peer) => peer.to_string(),
        ConversationId::Channel(c) => c.to_string(),
    }
}

/// The `message_state` event: one of our messages moved forward in delivery.
pub fn message_state(id: &MessageId, conversation: &ConversationId, state: DeliveryState) -> Value {
    json!({
        "type": "message_state",
        "id": id.to_string(),
        "conversation": conversation_name(conversation),
        "state": state.as_str(),
    })
}

/// `Message` with its reactions already loaded.
pub fn message_with(me: &UserId, m: &Message, reactions: &[ReactionSummary]) -> Value {
    let conversation = conversation_name(&m.conversation);
    let outgoing = m.sender == *me;
    json!({
        "id": m.id.to_string(),
        "conversation": conversation,
        "sender": m.sender.to_string(),
        "outgoing": outgoing,
        "kind": m.kind.as_str(),
        "body": if m.deleted { Value::Null } else { Value::String(m.body.clone()) },
        "reply_to": m.reply_to.map(|r| r.to_string()),
        "sent_at": m.sent_at.as_millis(),
        "received_at": if outgoing { Value::Null } else { json!(m.received_at.as_millis()) },
        "edited_at": m.edited_at.map(|t| t.as_millis()),
        "deleted": m.deleted,
        "state": m.delivery.as_str(),
        "seq": m.seq.0,
        "reactions": reactions.iter().map(|r| json!({
            "emoji": r.emoji,
            "count": r.count,
            "mine": r.users.contains(me),
            "users": r.users.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `Contact` (without the live fields, which the caller adds).
pub fn contact(c: &Contact) -> Value {
    json!({
        "user_id": c.user_id.to_string(),
        "display_name": c.display_name.clone().unwrap_or_default(),
        "state": c.state.as_str(),
        "verified": c.verified,
        "blocked": c.blocked,
        "note": c.request_note,
    })
}
