//! What the API shows, built from the store's records and the machine's live facts with the
//! typed shapes of `api::dto`. Pure reads: nothing here writes or sends.

use crate::api::dto;
use crate::api::error::ApiError;
use dopus_core::machine::{ConnectionView, NodeMachine, VerificationView};
use dopus_core::store::{
    Contact, ContactState, ConversationId, Message, MessageId, SearchQuery, Seq, Store, StoreError,
};
use dopus_rtc::Diagnostics;
use dopus_types::UserId;
use std::collections::BTreeMap;

/// Live facts about connections that only the runtime knows: the diagnostics last read from
/// each connection task.
#[derive(Debug, Default)]
pub struct Live {
    /// The latest diagnostics of each contact's connection.
    pub diagnostics: BTreeMap<UserId, Diagnostics>,
    /// A signaling server is configured.
    pub server: bool,
    /// The relays (with credentials) from the last login.
    pub relays: Vec<dopus_rtc::IceServer>,
    /// Every call's media session.
    pub calls: super::calls::CallsMedia,
    /// Our voice channel media.
    pub voice: super::voice::VoiceMedia,
}

/// A call as the API shows it, with its media and its connection.
pub fn call(
    machine: &NodeMachine,
    c: &dopus_core::machine::CallView,
    live: &Live,
    now: dopus_types::Timestamp,
) -> dto::Call {
    use dopus_core::machine::{CallEnd as E, CallState as S};
    let media = live.calls.status(&c.id).map(|m| {
        let rtc = m.rtc.clone().unwrap_or_default();
        let video = super::browser_leg::video_dto(&m, &rtc);
        dto::CallMedia {
            running: m.running,
            ready: m.ready,
            played: m.played,
            play_total: m.play_total,
            play_done: m.play_done,
            recorded: m.recorded,
            record_path: m.record_path,
            record_done: m.record_done,
            error: m.error,
            frames_sent: rtc.frames_sent,
            frames_received: rtc.frames_received,
            refused_in: rtc.refused_in,
            refused_out: rtc.refused_out,
            last_refusal: rtc.last_refusal,
            video,
            browser: m.browser.as_ref().map(super::browser_leg::leg_dto),
        }
    });
    dto::Call {
        id: c.id.to_string(),
        user_id: (&c.peer).into(),
        outgoing: c.outgoing,
        state: match c.state {
            S::Ringing => dto::CallState::Ringing,
            S::Active => dto::CallState::Active,
            S::Ended => dto::CallState::Ended,
        },
        created_at: c.created_at.into(),
        answered_at: c.answered_at.map(Into::into),
        ended_at: c.ended_at.map(Into::into),
        end: c.end.map(|e| match e {
            E::Completed => dto::CallEnd::Completed,
            E::Declined => dto::CallEnd::Declined,
            E::Busy => dto::CallEnd::Busy,
            E::Unsupported => dto::CallEnd::Unsupported,
            E::NoAnswer => dto::CallEnd::NoAnswer,
            E::Missed => dto::CallEnd::Missed,
            E::Cancelled => dto::CallEnd::Cancelled,
        }),
        ended_by_me: c.ended_by_me,
        duration_ms: c.duration_ms(now),
        refused: c.refused.clone(),
        connection: connection(machine, live, &c.peer),
        media,
    }
}

/// One message with its reactions.
pub fn message(store: &dyn Store, me: &UserId, m: &Message) -> Result<dto::Message, StoreError> {
    let reactions = store.reactions(&m.id)?;
    Ok(dto::Message::from_record(m, &reactions, me))
}

/// One message by id.
pub fn message_by_id(
    store: &dyn Store,
    me: &UserId,
    id: &MessageId,
) -> Result<dto::Message, ApiError> {
    let m = store
        .message(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    message(store, me, &m).map_err(ApiError::internal)
}

/// A page of a direct conversation, oldest first.
pub fn messages(
    store: &dyn Store,
    me: &UserId,
    peer: UserId,
    before: Option<u64>,
    limit: usize,
) -> Result<dto::MessagePage, ApiError> {
    conversation_messages(store, me, ConversationId::Direct(peer), before, limit)
}

/// A page of any conversation's history (a direct one, or a space channel), oldest first.
pub fn conversation_messages(
    store: &dyn Store,
    me: &UserId,
    conversation: ConversationId,
    before: Option<u64>,
    limit: usize,
) -> Result<dto::MessagePage, ApiError> {
    let mut page = store
        .messages_before(&conversation, before.map(Seq), limit + 1)
        .map_err(ApiError::internal)?;
    let has_more = page.len() > limit;
    page.truncate(limit);
    page.reverse();
    let messages = page
        .iter()
        .map(|m| message(store, me, m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(dto::MessagePage { messages, has_more })
}

/// Full-text search over every conversation, newest first: a page of `limit` hits older than
/// `before` (a `seq`), the cursor of the next page, and how many match in all.
pub fn search(
    store: &dyn Store,
    me: &UserId,
    q: &str,
    limit: usize,
    before: Option<u64>,
) -> Result<dto::SearchResults, ApiError> {
    search_within(store, me, q, None, limit, before)
}

/// [`search`] over `within` only, if set (a space's channels).
pub fn search_within(
    store: &dyn Store,
    me: &UserId,
    q: &str,
    within: Option<Vec<ConversationId>>,
    limit: usize,
    before: Option<u64>,
) -> Result<dto::SearchResults, ApiError> {
    let query = SearchQuery {
        text: q.to_owned(),
        conversation: None,
        within,
        before: before.map(Seq),
        limit: limit + 1,
    };
    let mut hits = store.search(&query).map_err(ApiError::internal)?;
    let more = hits.len() > limit;
    hits.truncate(limit);
    let next_before = more.then(|| hits.last().map(|h| h.message.seq.0)).flatten();
    let total = store.search_count(&query).map_err(ApiError::internal)?;
    let results = hits
        .iter()
        .map(|h| {
            let reactions = store.reactions(&h.message.id)?;
            Ok(dto::SearchResult::from_hit(h, &reactions, me))
        })
        .collect::<Result<Vec<_>, StoreError>>()
        .map_err(ApiError::internal)?;
    Ok(dto::SearchResults {
        results,
        total: Some(total),
        next_before,
    })
}

/// How we reach `user`: the machine's view and the connection's last diagnostics.
pub fn connection(machine: &NodeMachine, live: &Live, user: &UserId) -> dto::Connection {
    let view = machine.connection(user);
    connection_from(&view, live.diagnostics.get(user))
}

fn connection_from(view: &ConnectionView, diag: Option<&Diagnostics>) -> dto::Connection {
    use dto::{ConnectionMode as M, ConnectionState as S};
    let mode = match view.mode {
        "direct" => M::Direct,
        "relayed" => M::Relayed,
        "mailbox" => M::Mailbox,
        _ => M::None,
    };
    let state = match view.state {
        "connecting" => S::Connecting,
        "connected" => S::Connected,
        "closed" => S::Closed,
        "failed" => S::Failed,
        "disconnected" => S::Disconnected,
        _ => S::New,
    };
    // Diagnostics describe the connection that is (or was last) up; a closed attempt keeps
    // its counters but not a pair.
    let pair = diag
        .filter(|_| mode == M::Direct)
        .and_then(|d| d.selected_pair.as_ref());
    dto::Connection {
        mode,
        state,
        local_candidate: pair.map(|p| p.local.into()),
        remote_candidate: pair.map(|p| p.remote.into()),
        rtt_ms: diag
            .filter(|_| mode == M::Direct)
            .and_then(|d| d.rtt)
            .map(|r| r.as_secs_f64() * 1000.0),
        reason: view.reason.clone().or_else(|| {
            diag.and_then(|d| d.failure.as_ref())
                .map(ToString::to_string)
        }),
        traffic: diag.map(|d| dto::Traffic {
            messages_sent: d.messages_sent,
            messages_received: d.messages_received,
            bytes_sent: d.bytes_sent,
            bytes_received: d.bytes_received,
            send_waits: d.send_waits,
        }),
    }
}

/// One contact with its live facts.
pub fn contact(
    store: &dyn Store,
    machine: &NodeMachine,
    live: &Live,
    c: &Contact,
) -> Result<dto::Contact, StoreError> {
    let conversation = ConversationId::Direct(c.user_id);
    let summary = store
        .conversations()?
        .into_iter()
        .find(|s| s.conversation.id == conversation);
    let me = machine.me();
    let last_message = match summary.as_ref().and_then(|s| s.last_message.as_ref()) {
        Some(m) => Some(message(store, &me, m)?),
        None => None,
    };
    let mut contact = dto::Contact::from_record(
        c,
        dto::ContactLive {
            presence: dto::Presence::seen(Some(machine.presence(&c.user_id))),
            unread: summary.as_ref().map_or(0, |s| s.unread),
            last_message,
            connection: connection(machine, live, &c.user_id),
        },
    );
    contact.profile = dopus_core::contacts::profile_of(store, &c.user_id)?.map(profile);
    Ok(contact)
}

/// One contact by id.
pub fn contact_by_id(
    store: &dyn Store,
    machine: &NodeMachine,
    live: &Live,
    user: &UserId,
) -> Result<dto::Contact, ApiError> {
    let c = store
        .contact(user)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("no such contact"))?;
    contact(store, machine, live, &c).map_err(ApiError::internal)
}

/// Every contact: accepted ones first, then by age.
pub fn contacts(
    store: &dyn Store,
    machine: &NodeMachine,
    live: &Live,
) -> Result<Vec<dto::Contact>, ApiError> {
    let mut list = store.contacts().map_err(ApiError::internal)?;
    list.sort_by_key(|c| (c.state != ContactState::Accepted, c.created_at));
    // One conversation listing for all of them, not one per contact.
    let summaries = store.conversations().map_err(ApiError::internal)?;
    let me = machine.me();
    list.iter()
        .map(|c| {
            let conversation = ConversationId::Direct(c.user_id);
            let summary = summaries.iter().find(|s| s.conversation.id == conversation);
            let last_message = match summary.and_then(|s| s.last_message.as_ref()) {
                Some(m) => Some(message(store, &me, m)?),
                None => None,
            };
            let mut contact = dto::Contact::from_record(
                c,
                dto::ContactLive {
                    presence: dto::Presence::seen(Some(machine.presence(&c.user_id))),
                    unread: summary.map_or(0, |s| s.unread),
                    last_message,
                    connection: connection(machine, live, &c.user_id),
                },
            );
            contact.profile = dopus_core::contacts::profile_of(store, &c.user_id)?.map(profile);
            Ok(contact)
        })
        .collect::<Result<Vec<_>, StoreError>>()
        .map_err(ApiError::internal)
}

/// A verification as the API shows it.
pub fn verification(v: &VerificationView) -> dto::Verification {
    use dto::VerificationState as V;
    dto::Verification {
        state: match v.state {
            "waiting" => V::Waiting,
            "compare" => V::Compare,
            "confirmed" => V::Confirmed,
            "verified" => V::Verified,
            "cancelled" => V::Cancelled,
            _ => V::None,
        },
        txn: v.txn.clone(),
        emoji: v.emoji.as_ref().map(|e| {
            e.iter()
                .map(|(symbol, name)| dto::SasEmoji {
                    symbol: symbol.clone(),
                    name: name.clone(),
                })
                .collect()
        }),
        decimals: v.decimals.map(|d| d.to_vec()),
        cancel_code: v.cancel_code.clone(),
        cancelled_by_us: v.cancelled_by_us,
    }
}

/// The node's settings (`relay_only_forced`: this run has `--relay-only`).
pub fn settings(machine: &NodeMachine, relay_only_forced: bool) -> dto::Settings {
    let s = machine.settings();
    dto::Settings::new(
        s.server_url.clone(),
        s.ice_servers.clone(),
        s.read_receipts,
        &s.theme,
        s.link_previews,
        s.relay_only || relay_only_forced,
        relay_only_forced,
    )
}

/// A profile card as the API shows it.
pub fn profile(card: dopus_core::contacts::ProfileCard) -> dto::planned::ProfileCard {
    dto::planned::ProfileCard {
        status_text: card.status_text,
        avatar: card.avatar,
        updated_at: card.updated_at.into(),
    }
}

/// Who we are, with our profile card.
pub fn me(store: &dyn Store, machine: &NodeMachine) -> Result<dto::Me, StoreError> {
    let mut me = dto::Me::new(machine.account(), machine.status());
    me.profile = dopus_core::contacts::own_profile(store)?.map(profile);
    Ok(me)
}

/// The signaling state as the API names it.
pub fn signaling_state(s: dopus_core::machine::SignalingState) -> dto::SignalingState {
    use dopus_core::machine::SignalingState as S;
    match s {
        S::Disconnected => dto::SignalingState::Disconnected,
        S::Connecting => dto::SignalingState::Connecting,
        S::Authenticating => dto::SignalingState::Authenticating,
        S::Connected => dto::SignalingState::Connected,
    }
}

/// A space as the machine holds it (or our attempt to join it).
pub fn space(machine: &NodeMachine, store: &dyn Store, id: &dopus_types::SpaceId) -> dto::Space {
    let me = machine.me();
    let mut s = dto::Space::new(id, machine.space(id), machine.join_state(id), &me);
    if let Some(state) = machine.space(id) {
        for c in &mut s.channels {
            if let Ok(channel) = dopus_types::ChannelId::parse(&c.id)
                && c.kind == dto::SpaceChannelKind::Text
            {
                (c.unread, c.mentions) = channel_unread(store, state, &me, channel);
            }
        }
    }
    s
}

/// A channel's unread messages from others and how many of them mention us (both counted up
/// to [`MAX_UNREAD_COUNTED`], newest arrivals first).
fn channel_unread(
    store: &dyn Store,
    state: &dopus_core::space::SpaceState,
    me: &dopus_types::UserId,
    channel: dopus_types::ChannelId,
) -> (u32, u32) {
    let conversation = ConversationId::Channel(channel);
    let last_read = store
        .conversation(&conversation)
        .ok()
        .flatten()
        .and_then(|c| c.last_read);
    let page = store
        .messages_arrived_before(&conversation, None, MAX_UNREAD_COUNTED)
        .unwrap_or_default();
    let (mut unread, mut mentions) = (0, 0);
    for m in page {
        if last_read.is_some_and(|r| m.seq <= r) {
            break;
        }
        if m.sender == *me || m.deleted {
            continue;
        }
        unread += 1;
        if dopus_core::space::mentions::mentions_me(state, me, &m.sender, &m.body) {
            mentions += 1;
        }
    }
    (unread, mentions)
}

/// How many unread channel messages a space view counts at most.
const MAX_UNREAD_COUNTED: usize = 100;

/// Every space we hold or asked to join, by id.
pub fn spaces(machine: &NodeMachine, store: &dyn Store) -> Vec<dto::Space> {
    let mut ids: std::collections::BTreeSet<dopus_types::SpaceId> =
        machine.spaces().map(|(id, _)| *id).collect();
    ids.extend(machine.joins().map(|(id, _)| *id));
    ids.iter().map(|id| space(machine, store, id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::fixtures::{message_id, user};
    use dopus_core::store::{
        Change, ChannelId, DeliveryState, MemoryStore, MessageKind, NewMessage,
    };
    use dopus_types::Timestamp;

    fn channel_message(channel: ChannelId, n: u128, sent_at: u64) -> Change {
        Change::InsertMessage(NewMessage {
            id: message_id(n),
            conversation: ConversationId::Channel(channel),
            sender: user(2 + (n % 3) as u8),
            kind: MessageKind::Text,
            body: format!("m{n}"),
            reply_to: None,
            preview: None,
            sent_at: Timestamp::from_millis(sent_at),
            received_at: Timestamp::from_millis(10_000 + n as u64),
            delivery: DeliveryState::Delivered,
        })
    }

    /// `GET /channels/{id}/messages` pages (oldest first within a page, `before` = the first
    /// message's `seq`) in the senders' order, and a cursor the client holds stays valid when
    /// messages with older times arrive afterwards (a member catching up from the mailbox or a
    /// history bundle): each lands on its page, nothing is shown twice or skipped.
    #[test]
    fn channel_pages_follow_the_send_order_while_older_messages_arrive() {
        let me = user(1);
        let channel = ChannelId::from_bytes([7; 16]);
        let conv = ConversationId::Channel(channel);
        let mut store = MemoryStore::new();
        let bodies = |page: &dto::MessagePage| -> Vec<String> {
            page.messages
                .iter()
                .map(|m| m.body.clone().unwrap_or_default())
                .collect()
        };
        // Live: m10 at 100 .. m14 at 140.
        for n in 10..15u128 {
            store
                .apply_one(channel_message(channel, n, 100 + 10 * (n as u64 - 10)))
                .unwrap();
        }
        let newest = conversation_messages(&store, &me, conv, None, 2).unwrap();
        assert_eq!(bodies(&newest), ["m13", "m14"]);
        assert!(newest.has_more);
        let cursor = newest.messages[0].seq;
        // Backfill arrives: m1 (oldest), m2 between m11 and m12, m3 tied with m13 (smaller id,
        // so just before it, on the page the client already holds: it comes as an event).
        for (n, at) in [(1, 50), (2, 115), (3, 130)] {
            store.apply_one(channel_message(channel, n, at)).unwrap();
        }
        let mut older = Vec::new();
        let mut before = Some(cursor);
        for _ in 0..10 {
            let page = conversation_messages(&store, &me, conv, before, 2).unwrap();
            let mut b = bodies(&page);
            b.extend(older);
            older = b;
            before = page.messages.first().map(|m| m.seq);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(older, ["m1", "m10", "m11", "m2", "m12", "m3"]);
        let all = conversation_messages(&store, &me, conv, None, 100).unwrap();
        assert_eq!(
            bodies(&all),
            ["m1", "m10", "m11", "m2", "m12", "m3", "m13", "m14"]
        );
        assert!(!all.has_more);
    }

    #[test]
    fn a_connection_view_maps_to_the_api_shape() {
        let view = ConnectionView {
            conn: None,
            state: "new",
            mode: "mailbox",
            reason: Some("the contact is offline".into()),
        };
        let c = connection_from(&view, None);
        assert_eq!(c.mode, dto::ConnectionMode::Mailbox);
        assert_eq!(c.state, dto::ConnectionState::New);
        assert_eq!(c.reason.as_deref(), Some("the contact is offline"));
        assert!(c.traffic.is_none() && c.local_candidate.is_none());
    }
}
