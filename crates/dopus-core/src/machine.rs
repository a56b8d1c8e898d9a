//! The node machine: everything a node decides, as one sans-IO state machine.
//!
//! [`NodeMachine`] owns the logic of a node: the outbox (windows, bulk runs, retries, route
//! choice, receipt merging), both halves of the contact state machine, Olm session
//! establishment and recovery, direct-connection policy, verification and the chat logic. It
//! touches no clock, socket or file: time comes in as `now`, randomness from the generator it
//! was given, and the store it reads and writes is passed to every call (a transaction, in the
//! runtime).
//!
//! Driving it (the runtime's actor and the simulated network do exactly this):
//!
//! 1. begin a store transaction;
//! 2. feed what arrived: [`NodeMachine::handle`] for events from the network and the
//!    connections, the command methods (`send_texts`, `contact_request`, …) for the user;
//! 3. [`NodeMachine::prepare`]: seal what is due (outbox windows, receipts, signals), writing
//!    the advanced sessions and retry times into the same transaction;
//! 4. commit; if the commit fails, drop the machine and build a new one from the store (what
//!    it held only in memory is recovered by retries), and perform none of its outputs;
//! 5. perform every [`NodeMachine::poll_output`]: transmit, ask the server, drive connections,
//!    show events;
//! 6. wait for the next input or [`NodeMachine::poll_timeout`], whichever comes first.
//!
//! Persist-before-send follows from the order: nothing leaves the machine before the commit
//! of the batch that made it. Batching follows from step 2: everything that arrived while the
//! last batch ran is handled under one commit.

mod call;
mod commands;
mod io;
mod links;
mod receive;
mod recovery;
mod send;
mod space;
#[cfg(test)]
mod test_net;
mod transfers;
mod voice;

pub use call::{CallEnd, CallRequest, CallState, CallView, RING_TIMEOUT_MS};
pub use commands::{
    CommandError, ConnectionView, ProfilePatch, Settings, SettingsPatch, VerificationView,
};
pub use io::{
    ConnectionEvent, ConnectionRequest, Delivery, Event, Inbound, Input, Output, Sealed,
    SignalingRequest, SignalingState, Transmit, Via,
};
pub use space::JoinState;
pub use transfers::{FileTarget, TransferAction, TransferRequest};
pub use voice::{
    MAX_VOICE_PARTICIPANTS, MyVoice, VOICE_REFRESH_MS, VOICE_TTL_MS, VoiceChannelView,
    VoiceParticipant, VoicePeer, VoiceRequest,
};

use crate::chat::{Chat, Outgoing};
use crate::e2e::{Burst, OlmMachine};
use crate::identity::pickle::SecureRandom;
use crate::store::{AccountRecord, Change, MessageId, OlmSessionRecord, Store, StoreError};
use crate::verification::SasVerification;
use dopus_proto::signaling::Status;
use dopus_types::{DeviceId, DeviceKeys, Timestamp, UserId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Why the machine could not take an input in. Every variant means the batch must be rolled
/// back and the machine rebuilt from the store.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A sending device as the store held it when a burst of envelopes began, read once per
/// burst: when we first saw it and its keys (`None`: not stored yet) and its stored sessions.
type KnownDevices =
    BTreeMap<(UserId, DeviceId), (Option<(Timestamp, DeviceKeys)>, Vec<OlmSessionRecord>)>;

/// The node machine. See the module documentation for how to drive it.
pub struct NodeMachine {
    me: UserId,
    account: AccountRecord,
    olm: OlmMachine,
    chat: Chat,
    settings: Settings,
    rng: Box<dyn SecureRandom + Send>,
    /// Our presence status.
    status: Status,
    signaling: SignalingState,
    /// Contacts' presence as the server last told us.
    presence: BTreeMap<UserId, Status>,
    /// Direct connections, one per contact.
    links: BTreeMap<UserId, links::Link>,
    /// Key bundle fetches in flight, and what they are for.
    fetches: BTreeMap<UserId, send::Fetch>,
    recovery: recovery::Recovery,
    verifications: BTreeMap<UserId, SasVerification>,
    /// Verifications the user started before we knew the contact's device: started when its
    /// keys arrive.
    pending_verifications: BTreeSet<UserId>,
    /// Ephemeral contents to seal at the next [`NodeMachine::prepare`], with the time after which
    /// one that still has no session is dropped.
    ephemeral: Vec<(Outgoing, Timestamp)>,
    /// WebRTC signals to seal at the next prepare: through the server only, never stored.
    signals: Vec<(Outgoing, Timestamp)>,
    /// Delivered receipts held for merging, and when they go.
    held_receipts: Vec<Outgoing>,
    receipts_due: Option<Timestamp>,
    /// The receive burst of the current batch (sessions kept live until prepare).
    burst: Option<Burst>,
    known: KnownDevices,
    /// Reported transmits: what each envelope carried.
    inflight: BTreeMap<u64, send::InFlight>,
    next_transmit: u64,
    /// When the earliest outbox copy falls due (as of the last prepare).
    outbox_next: Option<Timestamp>,
    /// Something that may let the outbox move happened since the last prepare.
    outbox_wake: bool,
    /// Peers that could not be served, and until when they are left alone.
    stalled: BTreeMap<UserId, Timestamp>,
    /// Mailbox items to acknowledge after the commit.
    acks: Vec<u64>,
    /// The accepted contacts changed: tell the server whose presence we follow.
    contacts_dirty: bool,
    /// A key upload is in flight.
    publishing: bool,
    /// Whether anyone shows message events (the runtime says so): message events cost a
    /// store read and are not built for nobody.
    detailed_events: bool,
    /// Spaces: control logs, joins, channel encryption.
    spaces: space::Spaces,
    outputs: VecDeque<Output>,
    /// Peers with unfinished transfers (kept connected while online), and whether to read
    /// them again from the store.
    transfer_peers: BTreeSet<UserId>,
    transfer_peers_dirty: bool,
    /// Files in space channels: holders and audiences.
    channel_files: transfers::ChannelFiles,
    /// Calls: the current one and the last few that ended.
    calls: call::Calls,
    /// Voice channels: where we are and the presences we hold (never stored).
    voice: voice::Voice,
}

impl std::fmt::Debug for NodeMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMachine")
            .field("me", &self.me)
            .field("signaling", &self.signaling)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl NodeMachine {
    /// The machine of the account in `store`, with its Olm machine (restored from the account's
    /// pickle by the caller, who holds the pickle key) and a generator for ids.
    pub fn new(
        store: &dyn Store,
        account: AccountRecord,
        olm: OlmMachine,
        rng: Box<dyn SecureRandom + Send>,
    ) -> Result<Self, StoreError> {
        let settings = Settings::load(store)?;
        let mut chat = Chat::new(account.user_id);
        chat.read_receipts = settings.read_receipts;
        let spaces = space::Spaces::load(store, olm.pickle_key())?;
        Ok(Self {
            me: account.user_id,
            account,
            olm,
            chat,
            settings,
            rng,
            status: Status::Online,
            signaling: SignalingState::Disconnected,
            presence: BTreeMap::new(),
            links: BTreeMap::new(),
            fetches: BTreeMap::new(),
            recovery: recovery::Recovery::default(),
            verifications: BTreeMap::new(),
            pending_verifications: BTreeSet::new(),
            ephemeral: Vec::new(),
            signals: Vec::new(),
            held_receipts: Vec::new(),
            receipts_due: None,
            burst: None,
            known: KnownDevices::new(),
            inflight: BTreeMap::new(),
            next_transmit: 1,
            outbox_next: None,
            outbox_wake: true,
            stalled: BTreeMap::new(),
            acks: Vec::new(),
            contacts_dirty: true,
            publishing: false,
            detailed_events: true,
            spaces,
            outputs: VecDeque::new(),
            transfer_peers: BTreeSet::new(),
            transfer_peers_dirty: true,
            channel_files: transfers::ChannelFiles::default(),
            calls: call::Calls::default(),
            voice: voice::Voice::default(),
        })
    }

    /// Who we are.
    pub fn me(&self) -> UserId {
        self.me
    }

    /// Our account record.
    pub fn account(&self) -> &AccountRecord {
        &self.account
    }

    /// Our device's keys.
    pub fn device_keys(&self) -> DeviceKeys {
        self.olm.device().keys()
    }

    /// Our presence status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The signaling connection's state.
    pub fn signaling_state(&self) -> SignalingState {
        self.signaling
    }

    /// A contact's presence as the server last told us (`offline` if unknown).
    pub fn presence(&self, user: &UserId) -> Status {
        self.presence.get(user).copied().unwrap_or(Status::Offline)
    }

    /// Whether anyone shows message events; without, message events are not made.
    pub fn set_detailed_events(&mut self, on: bool) {
        self.detailed_events = on;
    }

    /// A fresh UUIDv7 for `now` from the machine's generator.
    fn new_id(&mut self, now: Timestamp) -> MessageId {
        let mut random = [0u8; 10];
        self.rng.fill_bytes(&mut random);
        MessageId(uuid::Builder::from_unix_timestamp_millis(now.as_millis(), &random).into_uuid())
    }

    /// A fresh token of `n` random bytes in hex (connection attempts, verification
    /// transactions).
    fn new_token(&mut self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Takes an input in. Store writes go into the caller's transaction; outputs wait for
    /// [`NodeMachine::poll_output`].
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        store: &mut dyn Store,
    ) -> Result<(), MachineError> {
        match input {
            Input::Envelopes(items) => self.receive(now, items, store)?,
            Input::Signaling(state) => self.on_signaling(now, state),
            Input::Authenticated => {
                self.contacts_dirty = true;
                self.outbox_wake = true;
                self.stalled.clear();
                self.space_sync_soon();
            }
            Input::AuthFailed { code } => {
                tracing::warn!(code = %code, "the signaling server refused our login");
            }
            Input::Presence { user, status } => self.set_presence(now, user, status, store)?,
            Input::ContactsSynced(entries) => {
                for (user, status) in entries {
                    self.set_presence(now, user, status, store)?;
                }
            }
            Input::OneTimeKeysLow { remaining } => self.top_up_keys(remaining, store)?,
            Input::Bundles { peer, result } => self.on_bundles(now, peer, result, store)?,
            Input::Published { bundle, result } => self.on_published(now, bundle, result, store)?,
            Input::Transmitted { id, outcome } => self.on_transmitted(now, id, &outcome, store)?,
            Input::Connection { peer, conn, event } => {
                self.on_connection(now, peer, conn, event, store)?;
            }
            Input::DownloadDone { id } => {
                self.transfer_peers_dirty = true;
                self.on_download_done(now, id, store)?;
            }
        }
        Ok(())
    }

    /// Seals and schedules what is due at `now`, writing into the caller's transaction. Call it
    /// once per batch, after the inputs and before the commit.
    pub fn prepare(&mut self, now: Timestamp, store: &mut dyn Store) -> Result<(), MachineError> {
        self.finish_burst(store)?;
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            self.outputs
                .push_back(Output::Signaling(SignalingRequest::AckMailbox(acks)));
        }
        if self.contacts_dirty && self.signaling == SignalingState::Connected {
            self.contacts_dirty = false;
            let contacts = self.accepted_contacts(store)?;
            self.outputs
                .push_back(Output::Signaling(SignalingRequest::SyncContacts(contacts)));
        }
        self.maintain_keys(now, store)?;
        self.verification_timeouts(now);
        self.recovery_due(now, store)?;
        self.space_sync(now);
        self.space_key_timeouts(now, store)?;
        self.call_due(now, store)?;
        self.voice_due(now, store)?;
        self.seal_ephemeral(now, store)?;
        self.pump(now, store)?;
        self.transfer_links(now, &*store)?;
        Ok(())
    }

    /// The next output to perform, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the machine wants to run (a batch with no input) next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let outbox = self.outbox_next.map(|t| {
            // A peer that could not be served does not make the machine spin: it is tried
            // again when its stall ends (or when something wakes the outbox).
            self.stalled
                .values()
                .copied()
                .min()
                .map_or(t, |stall| if t < stall { t.max(stall) } else { t })
        });
        let waiting = self
            .ephemeral
            .iter()
            .chain(&self.signals)
            .map(|(_, until)| *until)
            .min();
        [
            outbox,
            self.receipts_due,
            // A reset needs the server (a fresh bundle); without it, recovery waits for the
            // connection (which runs a batch) instead of waking the machine for nothing.
            (self.signaling == SignalingState::Connected)
                .then(|| self.recovery.next_check())
                .flatten(),
            self.olm.poll_timeout(),
            self.verifications
                .values()
                .filter_map(SasVerification::poll_timeout)
                .min(),
            waiting,
            self.fetches.values().map(|f| f.expires).min(),
            self.space_poll_timeout(),
            self.call_poll_timeout(),
            self.voice_poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The accepted, unblocked contacts (whose presence we follow).
    fn accepted_contacts(&self, store: &dyn Store) -> Result<Vec<UserId>, StoreError> {
        Ok(store
            .contacts()?
            .into_iter()
            .filter(|c| crate::contacts::is_accepted(Some(c)))
            .map(|c| c.user_id)
            .collect())
    }

    fn on_signaling(&mut self, _now: Timestamp, state: SignalingState) {
        self.signaling = state;
        if state != SignalingState::Connected {
            // Presence is only known while connected; it comes again with the next sync.
            self.presence.clear();
            self.publishing = false;
        } else {
            self.outbox_wake = true;
            self.stalled.clear();
        }
        self.emit(Event::Signaling(state));
    }

    /// Timed key maintenance (rotating out an old fallback key), then an upload if the device
    /// has unpublished keys and the server is there to take them.
    fn maintain_keys(&mut self, now: Timestamp, store: &mut dyn Store) -> Result<(), StoreError> {
        if self.olm.poll_timeout().is_some_and(|t| t <= now)
            && let Some(pickle) = self.olm.handle_timeout(now)
        {
            store.apply_one(Change::SetAccountPickle(crate::store::Pickle::new(pickle)))?;
        }
        if self.olm.device().needs_upload() {
            self.publish(crate::identity::ONE_TIME_KEY_TARGET, store)?;
        }
        Ok(())
    }

    fn top_up_keys(&mut self, remaining: u64, store: &mut dyn Store) -> Result<(), StoreError> {
        self.publish(usize::try_from(remaining).unwrap_or(0), store)
    }

    /// Prepares an upload (its private halves persisted in this batch) and asks the server to
    /// publish it.
    fn publish(&mut self, held: usize, store: &mut dyn Store) -> Result<(), StoreError> {
        if self.publishing || self.signaling != SignalingState::Connected {
            return Ok(());
        }
        match self.olm.prepare_upload(held) {
            Ok(Some(upload)) => {
                // The new keys' private halves are durable before their public halves leave:
                // the upload goes out only after this batch commits.
                store.apply_one(Change::SetAccountPickle(crate::store::Pickle::new(
                    upload.account_pickle,
                )))?;
                self.publishing = true;
                self.outputs
                    .push_back(Output::Signaling(SignalingRequest::PublishBundle {
                        bundle: Box::new(upload.bundle),
                    }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not prepare a key upload"),
        }
        Ok(())
    }

    fn on_published(
        &mut self,
        now: Timestamp,
        bundle: Box<dopus_proto::bundle::DeviceBundle>,
        result: Result<u64, String>,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.publishing = false;
        match result {
            Ok(count) => {
                match self.olm.mark_published(now, &bundle) {
                    Ok(pickle) => {
                        store.apply_one(Change::SetAccountPickle(crate::store::Pickle::new(
                            pickle,
                        )))?;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not mark keys published"),
                }
                tracing::debug!(one_time_keys = count, "published keys");
            }
            Err(e) => {
                tracing::info!(error = %e, "publishing keys failed; will retry on next login")
            }
        }
        Ok(())
    }

    fn verification_timeouts(&mut self, now: Timestamp) {
        let mut cancelled = Vec::new();
        for (peer, v) in &mut self.verifications {
            if v.poll_timeout().is_some_and(|t| t <= now)
                && let Some(step) = v.handle_timeout(now)
            {
                cancelled.push((*peer, step));
            }
        }
        for (peer, step) in cancelled {
            self.queue_verification_step(now, peer, step);
            self.emit(Event::Verification(peer));
        }
    }
}
