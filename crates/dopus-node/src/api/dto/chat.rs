//! Messages: one message, a history page, a batch answer, search results.

use super::planned::LinkPreview;
use super::{ConversationId, DeliveryState, MessageId, Timestamp, UserId};
use dopus_core::store::{self, ReactionSummary, SNIPPET_END, SNIPPET_START, SearchHit};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Text typed by a person (the only kind the API creates today).
    Text,
    /// A file offer; the body is the file name.
    File,
    /// A line written by the app itself.
    System,
}

impl From<store::MessageKind> for MessageKind {
    fn from(k: store::MessageKind) -> Self {
        match k {
            store::MessageKind::Text => Self::Text,
            store::MessageKind::File => Self::File,
            store::MessageKind::System => Self::System,
        }
    }
}

/// The reactions with one emoji on one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Reaction {
    /// The emoji (any Unicode emoji sequence).
    pub emoji: String,
    /// How many users reacted with it.
    #[ts(type = "number")]
    pub count: u64,
    /// Whether we are one of them.
    pub mine: bool,
    /// Who, in the order they reacted.
    pub users: Vec<UserId>,
}

impl Reaction {
    /// One reaction line as seen by `me`.
    pub fn from_summary(r: &ReactionSummary, me: &dopus_types::UserId) -> Self {
        Self {
            emoji: r.emoji.clone(),
            count: r.count,
            mine: r.users.contains(me),
            users: r.users.iter().map(UserId::from).collect(),
        }
    }
}

/// One message, with edits, deletion and reactions applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Message {
    /// The sender's id for it.
    pub id: MessageId,
    /// Where it lives (1:1: the peer's user ID).
    pub conversation: ConversationId,
    /// Who wrote it.
    pub sender: UserId,
    /// Whether we wrote it.
    pub outgoing: bool,
    /// What it is.
    pub kind: MessageKind,
    /// Its text; `null` once deleted. Plain text in Discord's markdown flavour: never HTML.
    pub body: Option<String>,
    /// The message it answers.
    pub reply_to: Option<MessageId>,
    /// The sender's clock when sent.
    pub sent_at: Timestamp,
    /// Our clock when it arrived; `null` for our own.
    pub received_at: Option<Timestamp>,
    /// When the newest applied edit was made.
    pub edited_at: Option<Timestamp>,
    /// Deleted by its sender (the row stays as a tombstone).
    pub deleted: bool,
    /// How far delivery has got (meaningful for outgoing messages).
    pub state: DeliveryState,
    /// Local arrival number: the history cursor. The display order is `(sent_at, id)` (the
    /// message id, the same on every device, breaks ties).
    #[ts(type = "number")]
    pub seq: u64,
    /// Reactions, one line per emoji.
    pub reactions: Vec<Reaction>,
    /// The link preview the sender's node fetched and sent inside the encrypted message (only
    /// when the sender turned previews on; a receiving node never fetches). Left out when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub preview: Option<LinkPreview>,
}

impl Message {
    /// A stored message with its reactions, as seen by `me`.
    pub fn from_record(
        m: &store::Message,
        reactions: &[ReactionSummary],
        me: &dopus_types::UserId,
    ) -> Self {
        let outgoing = m.sender == *me;
        Self {
            id: MessageId::from(&m.id),
            conversation: ConversationId::from(&m.conversation),
            sender: UserId::from(&m.sender),
            outgoing,
            kind: m.kind.into(),
            body: (!m.deleted).then(|| m.body.clone()),
            reply_to: m.reply_to.as_ref().map(MessageId::from),
            sent_at: m.sent_at.into(),
            received_at: (!outgoing).then(|| m.received_at.into()),
            edited_at: m.edited_at.map(Timestamp::from),
            deleted: m.deleted,
            state: m.delivery.into(),
            seq: m.seq.0,
            reactions: reactions
                .iter()
                .map(|r| Reaction::from_summary(r, me))
                .collect(),
            preview: m.preview.as_deref().map(|p| LinkPreview {
                url: p.url.clone(),
                title: p.title.clone(),
                description: p.description.clone(),
                image: p.image.clone(),
            }),
        }
    }
}

/// `GET /conversations/{id}/messages`: a page of history, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct MessagePage {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// Whether older messages exist before the first one.
    pub has_more: bool,
}

/// `POST /conversations/{id}/messages/batch`: the stored messages, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SentMessages {
    /// One per request item.
    pub messages: Vec<Message>,
}

/// One search hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SearchResult {
    /// The matching message.
    pub message: Message,
    /// An excerpt of the body around the matches, plain text.
    pub snippet: String,
    /// The same excerpt with every match between U+0002 and U+0003 (control characters, never
    /// markup, so a UI highlights without parsing message text as HTML).
    pub highlighted: String,
}

impl SearchResult {
    /// A hit from the store's full-text index, with the message's reactions.
    pub fn from_hit(
        hit: &SearchHit,
        reactions: &[ReactionSummary],
        me: &dopus_types::UserId,
    ) -> Self {
        Self {
            message: Message::from_record(&hit.message, reactions, me),
            snippet: hit.snippet.replace([SNIPPET_START, SNIPPET_END], ""),
            highlighted: hit.snippet.clone(),
        }
    }
}

/// `GET /search`: hits, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SearchResults {
    /// The hits, newest first, at most `limit`.
    pub results: Vec<SearchResult>,
    /// How many messages match in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub total: Option<u64>,
    /// The cursor for the next page (`?before=`); left out on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub next_before: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::fixtures::{incoming, outgoing, user};

    fn reactions() -> Vec<ReactionSummary> {
        vec![
            ReactionSummary {
                emoji: "👍".into(),
                count: 2,
                users: vec![user(2), user(1)],
            },
            ReactionSummary {
                emoji: "🎉".into(),
                count: 1,
                users: vec![user(2)],
            },
        ]
    }

    #[test]
    fn incoming_message() {
        insta::assert_json_snapshot!(Message::from_record(&incoming(), &reactions(), &user(1)));
    }

    #[test]
    fn outgoing_edited_reply() {
        insta::assert_json_snapshot!(Message::from_record(&outgoing(), &[], &user(1)));
    }

    #[test]
    fn deleted_message_has_no_body() {
        let mut m = incoming();
        m.deleted = true;
        m.body = String::new();
        let dto = Message::from_record(&m, &[], &user(1));
        assert_eq!(dto.body, None);
        insta::assert_json_snapshot!(dto);
    }

    #[test]
    fn page_and_batch() {
        let me = user(1);
        insta::assert_json_snapshot!(MessagePage {
            messages: vec![Message::from_record(&incoming(), &[], &me)],
            has_more: true,
        });
        insta::assert_json_snapshot!(SentMessages {
            messages: vec![Message::from_record(&outgoing(), &[], &me)],
        });
    }

    #[test]
    fn search_hit_strips_markers_from_the_snippet() {
        let hit = SearchHit {
            message: incoming(),
            snippet: "hello \u{2}there\u{3}".into(),
        };
        let r = SearchResult::from_hit(&hit, &[], &user(1));
        assert_eq!(r.snippet, "hello there");
        insta::assert_json_snapshot!(SearchResults {
            results: vec![r],
            total: None,
            next_before: None,
        });
    }
}
