//! 1:1 calls: ringing, accepting, declining, hanging up, busy, glare, the missed-call and
//! call-ended entries in the conversation, and when to add media to the direct connection.
//!
//! Protocol (docs/media.md, "Calls"):
//! - the caller sends `call_invite {call, v, audio}` (ephemeral, inside Olm); the callee rings
//!   for at most [`RING_TIMEOUT_MS`], the caller gives up after the same time (`call_hangup`);
//! - `call_accept`, `call_decline {reason}` (declined, busy, unsupported version) and
//!   `call_hangup` end the ringing; one call at a time: an invite during a call is answered
//!   `busy`;
//! - glare (both call each other at once): the call placed by the smaller user ID survives and
//!   the other side, who wanted the same call, takes it as accepted;
//! - once a call is active, the caller's node adds an Opus m-line to the direct connection by
//!   renegotiation (`rtc` `media_offer`/`media_answer`, through the server inside Olm like the
//!   first offer); media offers from a peer we are not in a call with are refused;
//! - each side writes its own entry in the conversation when the call ends (a system message:
//!   "Missed call", "Call ended · 1:05", …); calls themselves are not stored, a restart ends
//!   them.
//!
//! The media itself never passes through the machine: the runtime attaches a media task to the
//! connection when asked ([`CallRequest::Start`]) and detaches it at the end
//! ([`CallRequest::Stop`]).

use super::{CommandError, Event, MachineError, NodeMachine, Output};
use crate::chat::Outgoing;
use crate::store::{
    Change, Changes, ConversationId, DeliveryState, EnvelopeId, MessageKind, NewMessage, Outcome,
    Store, StoreError,
};
use dopus_proto::peer::{CALL_VERSION, CallContent, Content, Conversation, DeclineReason};
use dopus_types::{CallId, Timestamp, UserId};
use std::collections::VecDeque;

/// How long a call rings before the caller gives up (and the callee shows a missed call).
pub const RING_TIMEOUT_MS: u64 = 45_000;
/// Ended calls kept for the API.
const RECENT: usize = 16;

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Ringing (on their side if outgoing, on ours if incoming).
    Ringing,
    /// Both sides picked up.
    Active,
    /// Over.
    Ended,
}

impl CallState {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Active => "active",
            CallState::Ended => "ended",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// It was active; someone hung up.
    Completed,
    /// Declined (by them if outgoing, by us if incoming).
    Declined,
    /// They were in another call (outgoing), or we were (incoming).
    Busy,
    /// Their node does not speak our call protocol version.
    Unsupported,
    /// Nobody picked up in time (outgoing).
    NoAnswer,
    /// The caller stopped ringing, or nobody picked up in time (incoming).
    Missed,
    /// We stopped ringing before they picked up (outgoing).
    Cancelled,
}

impl CallEnd {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallEnd::Completed => "completed",
            CallEnd::Declined => "declined",
            CallEnd::Busy => "busy",
            CallEnd::Unsupported => "unsupported",
            CallEnd::NoAnswer => "no_answer",
            CallEnd::Missed => "missed",
            CallEnd::Cancelled => "cancelled",
        }
    }
}

/// A call as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// Which call.
    pub id: CallId,
    /// With whom.
    pub peer: UserId,
    /// We placed it.
    pub outgoing: bool,
    /// Where it stands.
    pub state: CallState,
    /// When it started ringing.
    pub created_at: Timestamp,
    /// When it was picked up.
    pub answered_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// How it ended.
    pub end: Option<CallEnd>,
    /// We hung up (or declined, or cancelled).
    pub ended_by_me: bool,
    /// Why the last media offer or media from the peer was refused, if one was.
    pub refused: Option<String>,
}

impl CallView {
    /// How long it was active (answered to ended, or to `now` while active).
    pub fn duration_ms(&self, now: Timestamp) -> Option<u64> {
        let from = self.answered_at?;
        Some(self.ended_at.unwrap_or(now).millis_since(from))
    }
}

/// What the runtime does for a call's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRequest {
    /// The call is active: attach its media task to the connection with `peer`.
    Start {
        /// Which call.
        call: CallId,
        /// With whom.
        peer: UserId,
    },
    /// The call ended: detach and stop its media task.
    Stop {
        /// Which call.
        call: CallId,
        /// With whom.
        peer: UserId,
    },
}

/// The machine's calls: the current one, and the last few that ended.
#[derive(Debug, Default)]
pub(super) struct Calls {
    current: Option<(CallView, Timestamp)>,
    recent: VecDeque<CallView>,
    /// Refusals with no call to show them on.
    pub(super) last_refusal: Option<String>,
}

impl NodeMachine {
    /// Every call the node knows: the current one first, then the recent ended ones.
    pub fn calls(&self) -> Vec<CallView> {
        self.calls
            .current
            .iter()
            .map(|(c, _)| c.clone())
            .chain(self.calls.recent.iter().cloned())
            .collect()
    }

    /// One call.
    pub fn call(&self, id: &CallId) -> Option<CallView> {
        self.calls().into_iter().find(|c| c.id == *id)
    }

    /// The call in progress (ringing or active), if any.
    pub fn current_call(&self) -> Option<&CallView> {
        self.calls.current.as_ref().map(|(c, _)| c)
    }

    /// Rings `peer`. Refused if we are already in a call (or ringing), or `peer` is not an
    /// accepted contact.
    pub fn start_call(
        &mut self,
        now: Timestamp,
        peer: UserId,
        store: &mut dyn Store,
    ) -> Result<CallView, CommandError> {
        if !crate::contacts::is_accepted(store.contact(&peer)?.as_ref()) {
            return Err(CommandError::NotAContact);
        }
        if self.in_voice() {
            return Err(CommandError::Call(
                "in a voice channel; leave it first".into(),
            ));
        }
        if let Some(c) = self.current_call() {
            return Err(CommandError::Call(format!(
                "already in a call ({}, {})",
                c.id,
                c.state.as_str()
            )));
        }
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        let view = CallView {
            id: CallId::from_bytes(bytes),
            peer,
            outgoing: true,
            state: CallState::Ringing,
            created_at: now,
            answered_at: None,
            ended_at: None,
            end: None,
            ended_by_me: false,
            refused: None,
        };
        self.calls.current = Some((view.clone(), now.plus_millis(RING_TIMEOUT_MS)));
        self.send_call(
            now,
            peer,
            CallContent::CallInvite {
                call: view.id,
                v: CALL_VERSION,
                audio: true,
            },
        );
        self.maybe_connect(now, peer);
        self.emit(Event::Call(view.id));
        Ok(view)
    }

    /// Picks up the incoming call `id`.
    pub fn accept_call(&mut self, now: Timestamp, id: &CallId) -> Result<CallView, CommandError> {
        let c = self.current_mut(id)?;
        if c.outgoing || c.state != CallState::Ringing {
            return Err(CommandError::Call(format!(
                "the call is {} and {}",
                if c.outgoing { "outgoing" } else { "incoming" },
                c.state.as_str()
            )));
        }
        let peer = c.peer;
        if self.in_voice() {
            return Err(CommandError::Call(
                "in a voice channel; leave it first".into(),
            ));
        }
        self.activate(now);
        self.send_call(now, peer, CallContent::CallAccept { call: *id });
        self.maybe_connect(now, peer);
        self.current_call()
            .cloned()
            .ok_or(CommandError::UnknownCall)
    }

    /// Declines the incoming call `id` (while it rings).
    pub fn decline_call(
        &mut self,
        now: Timestamp,
        id: &CallId,
        store: &mut dyn Store,
    ) -> Result<CallView, CommandError> {
        let c = self.current_mut(id)?;
        if c.outgoing || c.state != CallState::Ringing {
            return Err(CommandError::Call(
                "only an incoming call that rings can be declined".into(),
            ));
        }
        let peer = c.peer;
        self.send_call(
            now,
            peer,
            CallContent::CallDecline {
                call: *id,
                reason: DeclineReason::Declined,
            },
        );
        Ok(self.end_call(now, CallEnd::Declined, true, store)?)
    }

    /// Hangs up the call `id`: ends an active call, stops ringing an outgoing one, declines an
    /// incoming one.
    pub fn hang_up(
        &mut self,
        now: Timestamp,
        id: &CallId,
        store: &mut dyn Store,
    ) -> Result<CallView, CommandError> {
        let c = self.current_mut(id)?;
        let (peer, outgoing, state) = (c.peer, c.outgoing, c.state);
        if !outgoing && state == CallState::Ringing {
            return self.decline_call(now, id, store);
        }
        self.send_call(now, peer, CallContent::CallHangup { call: *id });
        let end = if state == CallState::Active {
            CallEnd::Completed
        } else {
            CallEnd::Cancelled
        };
        Ok(self.end_call(now, end, true, store)?)
    }

    fn current_mut(&mut self, id: &CallId) -> Result<&mut CallView, CommandError> {
        match &mut self.calls.current {
            Some((c, _)) if c.id == *id => Ok(c),
            _ if self.calls.recent.iter().any(|c| c.id == *id) => {
                Err(CommandError::Call("the call has ended".into()))
            }
            _ => Err(CommandError::UnknownCall),
        }
    }

    fn send_call(&mut self, now: Timestamp, peer: UserId, content: CallContent) {
        let out = Outgoing {
            peer,
            id: EnvelopeId(self.new_id(now).0),
            conversation: Conversation::Direct,
            sent_at: now,
            content: Content::Call(content),
            reliable: false,
        };
        self.queue_ephemeral(now, out);
    }

    /// The current call is picked up (by us or them): media can start.
    fn activate(&mut self, now: Timestamp) {
        let Some((c, _)) = &mut self.calls.current else {
            return;
        };
        c.state = CallState::Active;
        c.answered_at = Some(now);
        let (call, peer) = (c.id, c.peer);
        self.outputs
            .push_back(Output::Call(CallRequest::Start { call, peer }));
        self.emit(Event::Call(call));
    }

    /// Ends the current call: its entry in the conversation, the media stopped, the view kept.
    fn end_call(
        &mut self,
        now: Timestamp,
        end: CallEnd,
        by_me: bool,
        store: &mut dyn Store,
    ) -> Result<CallView, StoreError> {
        let Some((mut c, _)) = self.calls.current.take() else {
            return Err(StoreError::Invalid("no current call"));
        };
        let was_active = c.state == CallState::Active;
        c.state = CallState::Ended;
        c.ended_at = Some(now);
        c.end = Some(end);
        c.ended_by_me = by_me;
        if was_active {
            self.outputs.push_back(Output::Call(CallRequest::Stop {
                call: c.id,
                peer: c.peer,
            }));
        }
        self.call_entry(now, &c, store)?;
        self.calls.recent.push_front(c.clone());
        self.calls.recent.truncate(RECENT);
        self.emit(Event::Call(c.id));
        Ok(c)
    }

    /// The line the conversation shows for an ended call (a system message, ours only).
    fn call_entry(
        &mut self,
        now: Timestamp,
        c: &CallView,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let body = entry_text(c, now);
        let new = NewMessage {
            preview: None,
            id: self.new_id(now),
            conversation: ConversationId::Direct(c.peer),
            sender: if c.outgoing { self.me } else { c.peer },
            kind: MessageKind::System,
            body,
            reply_to: None,
            sent_at: c.created_at,
            received_at: now,
            delivery: DeliveryState::Delivered,
        };
        let applied = store.apply(Changes::from(Change::InsertMessage(new.clone())))?;
        if let Some(Outcome::Inserted(seq)) = applied.outcomes.first().copied()
            && self.detailed_events
        {
            self.emit(Event::MessageAdded(Box::new(new.stored(seq))));
        }
        Ok(())
    }

    /// A call content from `peer` (an accepted contact).
    pub(super) fn on_call(
        &mut self,
        now: Timestamp,
        peer: UserId,
        content: &CallContent,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let id = content.call();
        match content {
            CallContent::CallInvite { v, .. } => {
                if *v != CALL_VERSION {
                    self.send_call(
                        now,
                        peer,
                        CallContent::CallDecline {
                            call: id,
                            reason: DeclineReason::Unsupported,
                        },
                    );
                    return Ok(());
                }
                if let Some(c) = self.current_call().cloned() {
                    if c.id == id {
                        return Ok(()); // a copy (another device's session, a resend)
                    }
                    let glare = c.peer == peer && c.outgoing && c.state == CallState::Ringing;
                    if glare && self.me < peer {
                        // Ours survives; they take it as accepted when our invite arrives.
                        return Ok(());
                    }
                    if glare {
                        // Theirs survives: we wanted the same call, so we pick it up.
                        self.calls.current = None;
                        self.emit(Event::Call(c.id));
                        self.ring(now, peer, id);
                        self.activate(now);
                        self.send_call(now, peer, CallContent::CallAccept { call: id });
                        self.maybe_connect(now, peer);
                        return Ok(());
                    }
                    self.send_call(
                        now,
                        peer,
                        CallContent::CallDecline {
                            call: id,
                            reason: DeclineReason::Busy,
                        },
                    );
                    // A missed call, shown in their conversation.
                    let missed = CallView {
                        id,
                        peer,
                        outgoing: false,
                        state: CallState::Ended,
                        created_at: now,
                        answered_at: None,
                        ended_at: Some(now),
                        end: Some(CallEnd::Busy),
                        ended_by_me: false,
                        refused: None,
                    };
                    self.call_entry(now, &missed, store)?;
                    self.calls.recent.push_front(missed);
                    self.calls.recent.truncate(RECENT);
                    self.emit(Event::Call(id));
                    return Ok(());
                }
                self.ring(now, peer, id);
            }
            CallContent::CallAccept { .. } => {
                let ours = self.current_call().is_some_and(|c| {
                    c.id == id && c.peer == peer && c.outgoing && c.state == CallState::Ringing
                });
                if ours {
                    self.activate(now);
                    self.maybe_connect(now, peer);
                }
            }
            CallContent::CallDecline { reason, .. } => {
                let ours = self.current_call().is_some_and(|c| {
                    c.id == id && c.peer == peer && c.outgoing && c.state == CallState::Ringing
                });
                if ours {
                    let end = match reason {
                        DeclineReason::Declined => CallEnd::Declined,
                        DeclineReason::Busy => CallEnd::Busy,
                        DeclineReason::Unsupported => CallEnd::Unsupported,
                    };
                    self.end_call(now, end, false, store)?;
                }
            }
            CallContent::CallHangup { .. } => {
                let Some(c) = self.current_call().cloned() else {
                    return Ok(());
                };
                if c.id != id || c.peer != peer {
                    return Ok(());
                }
                let end = match (c.state, c.outgoing) {
                    (CallState::Active, _) => CallEnd::Completed,
                    (_, false) => CallEnd::Missed,
                    (_, true) => CallEnd::Declined,
                };
                self.end_call(now, end, false, store)?;
            }
        }
        Ok(())
    }

    fn ring(&mut self, now: Timestamp, peer: UserId, id: CallId) {
        let view = CallView {
            id,
            peer,
            outgoing: false,
            state: CallState::Ringing,
            created_at: now,
            answered_at: None,
            ended_at: None,
            end: None,
            ended_by_me: false,
            refused: None,
        };
        self.calls.current = Some((view, now.plus_millis(RING_TIMEOUT_MS)));
        self.emit(Event::Call(id));
    }

    /// Ringing that timed out, and media to add to the connection of an active call.
    pub(super) fn call_due(
        &mut self,
        now: Timestamp,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        let Some((c, until)) = self.calls.current.clone() else {
            return Ok(());
        };
        if c.state == CallState::Ringing && now >= until {
            if c.outgoing {
                self.send_call(now, c.peer, CallContent::CallHangup { call: c.id });
                self.end_call(now, CallEnd::NoAnswer, false, store)?;
            } else {
                self.end_call(now, CallEnd::Missed, false, store)?;
            }
            return Ok(());
        }
        // The caller's node adds the audio m-line once the call is active and the connection
        // open; the callee's answers it.
        if c.state == CallState::Active && c.outgoing {
            self.offer_audio(now, c.peer);
        }
        Ok(())
    }

    /// When ringing times out.
    pub(super) fn call_poll_timeout(&self) -> Option<Timestamp> {
        match &self.calls.current {
            Some((c, until)) if c.state == CallState::Ringing => Some(*until),
            Some((c, _)) if c.state == CallState::Active && c.outgoing => {
                self.audio_poll_timeout(&c.peer)
            }
            _ => None,
        }
    }

    /// Whether `peer` is in a call with us that may carry media (ringing or active).
    pub(super) fn in_call_with(&self, peer: &UserId) -> bool {
        self.current_call().is_some_and(|c| c.peer == *peer)
    }

    /// Notes why media from or for `peer` was refused, on the call if there is one.
    pub(super) fn call_refused(&mut self, peer: &UserId, why: String) {
        tracing::info!(peer = %peer.short(), why = %why, "call media refused");
        match &mut self.calls.current {
            Some((c, _)) if c.peer == *peer => {
                c.refused = Some(why);
                let id = c.id;
                self.emit(Event::Call(id));
            }
            _ => self.calls.last_refusal = Some(why),
        }
    }
}

/// "Missed call", "Call ended · 1:05", …
fn entry_text(c: &CallView, now: Timestamp) -> String {
    match c.end {
        Some(CallEnd::Completed) => {
            let secs = c.duration_ms(now).unwrap_or(0) / 1000;
            format!("Call ended · {}:{:02}", secs / 60, secs % 60)
        }
        Some(CallEnd::Declined) if c.outgoing => "Call declined".into(),
        Some(CallEnd::Declined) => "Declined call".into(),
        Some(CallEnd::Busy) if c.outgoing => "Busy: they were in another call".into(),
        Some(CallEnd::Busy) => "Missed call (you were in another call)".into(),
        Some(CallEnd::Unsupported) => "Call failed: their app does not support calls".into(),
        Some(CallEnd::NoAnswer) => "No answer".into(),
        Some(CallEnd::Missed) => "Missed call".into(),
        Some(CallEnd::Cancelled) => "Cancelled call".into(),
        None => "Call".into(),
    }
}

#[cfg(test)]
mod tests;
