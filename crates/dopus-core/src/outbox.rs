//! Outbox policy: what a reliable content becomes on its way out, and when it is tried again.
//! Pure functions over store records; [`crate::machine`] calls them and does the sealing.
//!
//! Protocol flow (docs/peer-protocol.md, "Outbox"):
//! - every reliable content is queued as an [`OutboxItem`] for an audience (the devices of the
//!   users who should have it) in the same transaction as the user's action;
//! - each recipient's copy is due at once; the machine seals a *window* of due copies per peer
//!   ([`WINDOW`]), persists the advanced sessions and each copy's next attempt, and only then
//!   hands the envelopes to a transport;
//! - a first attempt goes over the open data channel when there is one, packed into *bulk
//!   payloads* when the peer reads them ([`plan_runs`]); a retry always goes through the server
//!   ([`choose_route`]), which relays it live or keeps it in the recipient's mailbox;
//! - retries back off exponentially ([`retry_delay`]); once the mailbox holds a copy, the next
//!   check is an hour away ([`MAILBOX_RECHECK_MS`]);
//! - a recipient's `delivered` receipt removes its copy ([`crate::store::Change::OutboxAck`]);
//!   receivers deduplicate by envelope id, so a copy sent twice is shown once;
//! - delivered receipts are held [`RECEIPT_DELAY_MS`] and merged per peer ([`coalesce_receipts`]).

use crate::chat::Outgoing;
use crate::store::{EnvelopeId, OutboxEntry, OutboxItem, OutboxRecipient};
#[cfg(test)]
use dopus_proto::peer::ReactionAction;
use dopus_proto::peer::{
    ChatContent, Content, Conversation, MAX_BULK_ITEMS, MAX_IDS_PER_MESSAGE, ReceiptKind,
};
use dopus_types::{DeviceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// Most copies sealed and sent for one peer per round.
pub const WINDOW: usize = 64;
/// First retry delay of an unacknowledged copy.
pub const RETRY_BASE_MS: u64 = 1_000;
/// Longest delay between retries.
pub const RETRY_MAX_MS: u64 = 60_000;
/// Once the server's mailbox holds a copy, check again this much later.
pub const MAILBOX_RECHECK_MS: u64 = 60 * 60 * 1000;
/// How long delivered receipts wait to be merged with those of the envelopes right behind.
/// While a peer sends a stream, each receipt would otherwise cover one small burst, and each
/// costs both sides a Double Ratchet step, an envelope and a commit; 10 ms later is still far
/// quicker than anyone can see a tick change, and the peer's first retry is a second away.
pub const RECEIPT_DELAY_MS: u64 = 10;
/// How long a peer that came back online has to drain its mailbox before everything it has not
/// acknowledged is sent again.
pub const RETURN_GRACE_MS: u64 = 3_000;
/// Most bytes of item JSON (an upper bound, see [`json_bound`]) in one bulk payload: far below
/// the payload limit and the data channel's message size, so a bulk envelope always fits.
pub const BULK_BYTES: usize = 48 * 1024;

/// What an outbox item holds until it is sealed (per device, at send time). Stored as JSON in
/// [`OutboxItem::bytes`]; the version lets a later format be told apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The conversation.
    pub conversation: Conversation,
    /// When the user acted.
    pub sent_at: Timestamp,
    /// What to say.
    pub content: Content,
}

impl Queued {
    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a stored item; `None` if it is not one this build can send (it is then dropped
    /// with a warning rather than retried forever).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The outbox item for a reliable content to one user (every device of theirs).
pub fn item_for(out: &Outgoing, now: Timestamp) -> Result<OutboxItem, serde_json::Error> {
    let bytes = Queued {
        conversation: out.conversation.clone(),
        sent_at: out.sent_at,
        content: out.content.clone(),
    }
    .encode()?;
    Ok(OutboxItem {
        id: out.id,
        bytes,
        created_at: now,
        recipients: vec![OutboxRecipient {
            user: out.peer,
            device: None,
        }],
        next_attempt_at: now,
    })
}

/// When to try a copy again after `attempts` failed attempts (exponential, capped).
pub fn retry_delay(attempts: u32) -> u64 {
    RETRY_BASE_MS
        .saturating_mul(1u64 << attempts.min(16))
        .min(RETRY_MAX_MS)
}

/// How a window travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Over the open data channel.
    Direct,
    /// Through the signaling server (relayed live, or kept in the mailbox when the peer is
    /// away).
    Server,
}

/// The route for a window: the data channel for first attempts when one is open, otherwise
/// the server. A retry goes through the server even when a channel looks open: the first copy
/// got no receipt, and a channel whose far end died (a peer killed and restarted) still accepts
/// sends until its ICE timeout; the server relays live or keeps it in the mailbox.
pub fn choose_route(direct_open: bool, server_up: bool, entries: &[OutboxEntry]) -> Option<Route> {
    let retry = entries.iter().any(|e| e.attempts > 0);
    match (direct_open, server_up) {
        (true, true) if retry => Some(Route::Server),
        (true, _) => Some(Route::Direct),
        (false, true) => Some(Route::Server),
        (false, false) => None,
    }
}

/// Whether a window may be packed into bulk payloads: first attempts only, over a channel whose
/// far end said it reads them.
pub fn may_bulk(route: Route, peer_reads_bulk: bool, entries: &[OutboxEntry]) -> bool {
    route == Route::Direct && peer_reads_bulk && entries.iter().all(|e| e.attempts == 0)
}

/// One envelope to seal for a device: the window entries it carries (one, or several for a
/// bulk payload), as indexes into the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// One entry sealed on its own.
    Single(usize),
    /// Several chat messages sealed as one bulk payload.
    Bulk(Vec<usize>),
}

impl Run {
    /// The window entries this envelope carries.
    pub fn carries(&self) -> Vec<usize> {
        match self {
            Run::Single(i) => vec![*i],
            Run::Bulk(v) => v.clone(),
        }
    }
}

/// Splits one device's share of a window (window indexes in outbox order, with their contents)
/// into envelopes: with `bulk`, runs of consecutive chat messages become bulk payloads of at
/// most [`MAX_BULK_ITEMS`] items and [`BULK_BYTES`]; everything else goes alone. A run of one is
/// sealed as itself.
pub fn plan_runs<'a>(
    share: impl IntoIterator<Item = (usize, &'a Content)>,
    bulk: bool,
) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let mut run_bytes = 0;
    let flush = |run: &mut Vec<usize>, runs: &mut Vec<Run>| match run.len() {
        0 => {}
        1 => runs.push(Run::Single(run[0])),
        _ => runs.push(Run::Bulk(std::mem::take(run))),
    };
    for (i, content) in share {
        if bulk && content.bulk_item_kind() {
            let size = json_bound(content);
            if run.len() == MAX_BULK_ITEMS || run_bytes + size > BULK_BYTES {
                flush(&mut run, &mut runs);
                run.clear();
                run_bytes = 0;
            }
            run.push(i);
            run_bytes += size;
        } else {
            flush(&mut run, &mut runs);
            run.clear();
            run_bytes = 0;
            runs.push(Run::Single(i));
        }
    }
    flush(&mut run, &mut runs);
    runs
}

/// An upper bound on the JSON size of a bulk item holding `content`.
pub fn json_bound(content: &Content) -> usize {
    let escaped = |s: &str| {
        s.bytes()
            .map(|b| {
                if b < 0x20 || b == b'"' || b == b'\\' {
                    6
                } else {
                    1
                }
            })
            .sum::<usize>()
    };
    // Ids, times, field names and punctuation.
    const FIXED: usize = 256;
    FIXED
        + match content {
            Content::Chat(ChatContent::Text { body, .. } | ChatContent::Edit { body, .. }) => {
                escaped(body)
            }
            Content::Chat(ChatContent::Reaction { emoji, .. }) => escaped(emoji),
            _ => 0,
        }
}

/// Whether a window entry is for `device` (an entry without a device is for every device).
pub fn entry_for_device(entry: &OutboxEntry, device: &DeviceId) -> bool {
    entry.peer_device.as_ref().is_none_or(|d| d == device)
}

/// How long an edit, delete or reaction waits before it looks again whether the message it is
/// about has been acknowledged ([`waits_for`]).
pub const HOLD_RECHECK_MS: u64 = 1_000;

/// The message an edit, delete or reaction is about, if it must wait for that message: a
/// change to a message the peer has not acknowledged yet (our own message, still `pending` or
/// `sent`) is held back until the message's `delivered` receipt. Copies travel by different
/// paths and retries (a first copy lost on a dead channel, its retry parked in the mailbox
/// behind a later edit), and a receiver that gets an edit or delete for a message it does not
/// hold yet can only acknowledge and drop it: the change would be lost for good.
pub fn waits_for(content: &Content) -> Option<dopus_proto::peer::MessageId> {
    match content {
        Content::Chat(
            ChatContent::Edit { target, .. }
            | ChatContent::Delete { target }
            | ChatContent::Reaction { target, .. },
        ) => Some(*target),
        _ => None,
    }
}

/// The reactions in a peer's queue (oldest first) that must wait for an earlier reaction of
/// ours on the same message with the same emoji: an add and a remove that overtake each
/// other on their way (a lost first copy, a retry through the mailbox) would leave the two
/// sides disagreeing, since a removed reaction leaves nothing behind to compare times with.
pub fn reactions_waiting<'a>(
    queue: impl IntoIterator<Item = (EnvelopeId, Option<&'a Content>)>,
) -> std::collections::BTreeSet<EnvelopeId> {
    let mut seen = std::collections::BTreeSet::new();
    let mut waiting = std::collections::BTreeSet::new();
    for (id, content) in queue {
        if let Some(Content::Chat(ChatContent::Reaction { target, emoji, .. })) = content
            && !seen.insert((*target, emoji.clone()))
        {
            waiting.insert(id);
        }
    }
    waiting
}

/// Whether a change to a message of ours in `state` must still wait ([`waits_for`]).
pub fn target_unacknowledged(state: crate::store::DeliveryState) -> bool {
    matches!(
        state,
        crate::store::DeliveryState::Pending | crate::store::DeliveryState::Sent
    )
}

/// Whether `out` is a delivered receipt (those are held and merged).
pub fn is_delivered_receipt(out: &Outgoing) -> bool {
    matches!(
        out.content,
        Content::Chat(ChatContent::Receipt {
            receipt: ReceiptKind::Delivered,
            ..
        })
    )
}

/// Merges the delivered receipts for each peer into as few as the id limit allows, keeping
/// everything else as it is and in order.
pub fn coalesce_receipts(outs: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut merged: Vec<Outgoing> = Vec::with_capacity(outs.len());
    for out in outs {
        if let Content::Chat(ChatContent::Receipt {
            receipt: ReceiptKind::Delivered,
            ids,
        }) = &out.content
            && let Some(into) = merged.iter_mut().rev().find_map(|m| match &mut m.content {
                Content::Chat(ChatContent::Receipt {
                    receipt: ReceiptKind::Delivered,
                    ids: into,
                }) if m.peer == out.peer && into.len() + ids.len() <= MAX_IDS_PER_MESSAGE => {
                    Some(into)
                }
                _ => None,
            })
        {
            into.extend(ids.iter().copied());
            continue;
        }
        merged.push(out);
    }
    merged
}

/// The entries to make due again soon after `peer` came back online (everything waiting
/// longer than `due`, for example copies parked in its mailbox): `(id, peer, attempts)`.
pub fn due_on_return(entries: &[OutboxEntry], due: Timestamp) -> Vec<(EnvelopeId, UserId, u32)> {
    entries
        .iter()
        .filter(|e| e.next_attempt_at > due)
        .map(|e| (e.id, e.peer_user, e.attempts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dopus_proto::peer::MessageId;

    fn text(body: &str) -> Content {
        Content::Chat(ChatContent::Text {
            preview: None,
            body: body.into(),
            reply_to: None,
        })
    }

    #[test]
    fn changes_wait_for_their_message() {
        let target = MessageId::new_v7(Timestamp(1), [1; 10]);
        let edit = Content::Chat(ChatContent::Edit {
            target,
            body: "b".into(),
        });
        let delete = Content::Chat(ChatContent::Delete { target });
        assert_eq!(waits_for(&edit), Some(target));
        assert_eq!(waits_for(&delete), Some(target));
        assert_eq!(waits_for(&text("a")), None);
        use crate::store::DeliveryState::*;
        assert!(target_unacknowledged(Pending) && target_unacknowledged(Sent));
        assert!(!target_unacknowledged(Delivered) && !target_unacknowledged(Read));
        // A message that failed for good does not hold its changes forever.
        assert!(!target_unacknowledged(Failed));
    }

    #[test]
    fn a_reaction_waits_for_the_one_before_it_on_the_same_emoji() {
        let target = MessageId::new_v7(Timestamp(1), [1; 10]);
        let other = MessageId::new_v7(Timestamp(2), [2; 10]);
        let react = |t, e: &str, add| {
            Content::Chat(ChatContent::Reaction {
                target: t,
                emoji: e.into(),
                action: if add {
                    ReactionAction::Add
                } else {
                    ReactionAction::Remove
                },
            })
        };
        let q = [
            react(target, "a", true),
            react(target, "b", true),
            react(other, "a", true),
            text("x"),
            react(target, "a", false),
        ];
        let ids: Vec<EnvelopeId> = (0..q.len())
            .map(|i| EnvelopeId(uuid::Uuid::from_u128(i as u128 + 1)))
            .collect();
        let waiting = reactions_waiting(ids.iter().copied().zip(q.iter().map(Some)));
        assert_eq!(waiting.into_iter().collect::<Vec<_>>(), vec![ids[4]]);
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        assert_eq!(retry_delay(0), 1_000);
        assert_eq!(retry_delay(1), 2_000);
        assert_eq!(retry_delay(5), 32_000);
        assert_eq!(retry_delay(6), RETRY_MAX_MS);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX_MS);
    }

    #[test]
    fn runs_pack_consecutive_chat_messages_only() {
        let typing = Content::Chat(ChatContent::Typing { active: true });
        let contents = [text("a"), text("b"), typing.clone(), text("c")];
        let share = contents.iter().enumerate();
        assert_eq!(
            plan_runs(share.clone(), true),
            vec![Run::Bulk(vec![0, 1]), Run::Single(2), Run::Single(3)]
        );
        assert_eq!(
            plan_runs(share, false),
            (0..4).map(Run::Single).collect::<Vec<_>>()
        );
        // A run stops at the item limit and at the byte budget.
        let many: Vec<Content> = (0..MAX_BULK_ITEMS + 3).map(|_| text("x")).collect();
        let runs = plan_runs(many.iter().enumerate(), true);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].carries().len(), MAX_BULK_ITEMS);
        let big: Vec<Content> = (0..4).map(|_| text(&"y".repeat(20_000))).collect();
        let runs = plan_runs(big.iter().enumerate(), true);
        assert_eq!(runs, vec![Run::Bulk(vec![0, 1]), Run::Bulk(vec![2, 3])]);
    }

    #[test]
    fn retries_go_through_the_server() {
        let entry = |attempts| OutboxEntry {
            id: EnvelopeId(uuid::Uuid::from_u128(1)),
            peer_user: crate::store::conformance::user(2),
            peer_device: None,
            bytes: vec![],
            created_at: Timestamp(0),
            attempts,
            next_attempt_at: Timestamp(0),
        };
        assert_eq!(choose_route(true, true, &[entry(0)]), Some(Route::Direct));
        assert_eq!(choose_route(true, true, &[entry(1)]), Some(Route::Server));
        assert_eq!(choose_route(true, false, &[entry(1)]), Some(Route::Direct));
        assert_eq!(choose_route(false, true, &[entry(0)]), Some(Route::Server));
        assert_eq!(choose_route(false, false, &[entry(0)]), None);
        assert!(may_bulk(Route::Direct, true, &[entry(0)]));
        assert!(!may_bulk(Route::Direct, true, &[entry(0), entry(1)]));
        assert!(!may_bulk(Route::Server, true, &[entry(0)]));
    }

    #[test]
    fn receipts_merge_per_peer_up_to_the_id_limit() {
        let (a, b) = (
            crate::store::conformance::user(2),
            crate::store::conformance::user(3),
        );
        let id = |n: u64| MessageId::new_v7(Timestamp(n), [n as u8; 10]);
        let receipt = |peer, ids: Vec<MessageId>| Outgoing {
            peer,
            id: EnvelopeId(uuid::Uuid::from_u128(u128::from(ids.len() as u64))),
            conversation: Conversation::Direct,
            sent_at: Timestamp(0),
            content: Content::Chat(ChatContent::Receipt {
                receipt: ReceiptKind::Delivered,
                ids,
            }),
            reliable: false,
        };
        let merged = coalesce_receipts(vec![
            receipt(a, vec![id(1)]),
            receipt(b, vec![id(2)]),
            receipt(a, vec![id(3)]),
        ]);
        assert_eq!(merged.len(), 2);
        let ids_of = |o: &Outgoing| match &o.content {
            Content::Chat(ChatContent::Receipt { ids, .. }) => ids.clone(),
            _ => vec![],
        };
        assert_eq!(ids_of(&merged[0]), vec![id(1), id(3)]);
        let full: Vec<MessageId> = (0..MAX_IDS_PER_MESSAGE as u64).map(id).collect();
        let merged = coalesce_receipts(vec![receipt(a, full), receipt(a, vec![id(9999)])]);
        assert_eq!(merged.len(), 2);
    }
}
