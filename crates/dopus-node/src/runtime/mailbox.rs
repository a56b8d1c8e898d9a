//! The actor's mailbox: what the runtime's tasks and the API send the actor, and what the
//! actor sends a connection task. Every edge task knows only these types, never the actor
//! itself, so the runtime's modules form no cycle.

use super::NodeError;
use super::views::Live;
use dopus_core::machine::{CommandError, Delivery, Input, NodeMachine, Transmit};
use dopus_core::store::StoreError;
use dopus_rtc::Diagnostics;
use dopus_store::SqliteStore;
use dopus_types::{Timestamp, UserId};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// The actor's mailbox.
pub type ActorTx = mpsc::UnboundedSender<Msg>;

/// A command from an API handler: runs inside the batch's transaction and answers through the
/// [`Reply`] it returns, once the batch is committed (or failed).
pub type Job = Box<dyn FnOnce(&mut Cx<'_>) -> Reply + Send>;
/// A read from an API handler: runs after the batch's commit, outside any transaction.
pub type Query = Box<dyn FnOnce(&Vx<'_>) + Send>;
/// Answers a job: called with `true` if its batch was committed.
pub type Reply = Box<dyn FnOnce(bool) + Send>;

/// What the actor takes in.
pub enum Msg {
    /// An input for the machine.
    Input(Input),
    /// An input from the signaling client of one generation (dropped if that client was
    /// replaced meanwhile).
    ServerInput(u64, Input),
    /// A command.
    Job(Job),
    /// A read.
    Query(Query),
    /// A direct transmit whose channel could not take it: send the rest through the server.
    Reroute(Transmit),
    /// Fresh diagnostics of a contact's connection.
    Diagnostics(UserId, Diagnostics),
    /// The TURN relays (with this login's credentials) the signaling client of one generation
    /// was handed at login.
    Relays(u64, Vec<dopus_rtc::IceServer>),
    /// A call's media task asks for the handle of its peer's connection (none: the reply is
    /// dropped and the task asks again).
    PeerHandle(UserId, oneshot::Sender<dopus_rtc::PeerHandle>),
    /// The signaling client of one generation is down and retries in this many milliseconds
    /// (told to the UI as `retry_in_ms`; the machine does not need it).
    Retrying(u64, u64),
    /// Stop: close connections, say goodbye to the server, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// What a command sees: the machine and the store inside the batch's transaction.
pub struct Cx<'a> {
    /// The batch's time.
    pub now: Timestamp,
    /// The machine.
    pub machine: &'a mut NodeMachine,
    /// The store (inside the transaction).
    pub store: &'a mut SqliteStore,
    /// Live connection facts.
    pub live: &'a Live,
    /// The server URL changed: replace the signaling client after the commit.
    pub restart_signaling: bool,
    pub(super) failed: bool,
}

impl Cx<'_> {
    /// Turns a command's error into the node's, marking the batch failed if the store failed.
    pub fn command(&mut self, e: CommandError) -> NodeError {
        use dopus_core::chat::ChatError;
        use dopus_core::contacts::ContactError;
        match e {
            CommandError::Store(e) => self.store_failed(e),
            CommandError::Chat(c) => match c {
                ChatError::BadBody | ChatError::BadEmoji => NodeError::Invalid(c.to_string()),
                ChatError::UnknownMessage => NodeError::NotFound("message"),
                ChatError::Store(e) => self.store_failed(e),
                other => NodeError::NotAllowed(other.to_string()),
            },
            CommandError::Contact(c) => match c {
                ContactError::OwnUserId => NodeError::Invalid(c.to_string()),
                ContactError::Unknown => NodeError::NotFound("contact"),
                ContactError::NoPendingRequest => NodeError::Conflict(c.to_string()),
                ContactError::TooLong(_) => NodeError::TooLarge(c.to_string()),
                ContactError::Store(e) => self.store_failed(e),
            },
            CommandError::UnknownMessage => NodeError::NotFound("message"),
            CommandError::NotAContact => NodeError::NotAllowed(e.to_string()),
            CommandError::NoVerification => NodeError::NotFound("verification with this contact"),
            CommandError::Verification(m) => NodeError::Conflict(m),
            CommandError::BadSetting(m) => NodeError::Invalid(m.to_owned()),
            CommandError::UnknownTransfer => NodeError::NotFound("transfer"),
            CommandError::TransferEnded => NodeError::Conflict(e.to_string()),
            CommandError::UnknownSpace => NodeError::NotFound("space"),
            CommandError::UnknownChannel => NodeError::NotFound("channel"),
            CommandError::Space(m) => NodeError::NotAllowed(m),
            CommandError::UnknownCall => NodeError::NotFound("call"),
            CommandError::Call(m) | CommandError::Voice(m) => NodeError::Conflict(m),
        }
    }

    /// The store failed: the whole batch rolls back.
    pub fn store_failed(&mut self, e: StoreError) -> NodeError {
        self.failed = true;
        NodeError::Internal(Box::new(e))
    }
}

/// What a read sees.
pub struct Vx<'a> {
    /// The machine.
    pub machine: &'a NodeMachine,
    /// The store (committed state).
    pub store: &'a SqliteStore,
    /// Live connection facts.
    pub live: &'a Live,
    /// The connection tasks.
    pub conns: &'a BTreeMap<UserId, ConnEntry>,
}

/// What the actor can ask of a connection task.
pub enum ConnCmd {
    /// Send these envelopes over the channel.
    Send(Box<Transmit>),
    /// Apply the peer's answer to our offer.
    AcceptAnswer(String),
    /// Add a trickled remote candidate.
    AddCandidate(String),
    /// Read the diagnostics and report them.
    ReportDiagnostics,
    /// Read the diagnostics and answer them here.
    Diagnostics(oneshot::Sender<Diagnostics>),
    /// Add the audio m-line (a call): report the offer, or why not.
    AddAudio,
    /// Answer the peer's media offer: report the answer, or why not.
    AcceptMediaOffer(String),
    /// Apply the peer's answer to our media offer.
    AcceptMediaAnswer(String),
    /// Answer the peer's ICE restart offer: report the answer (a refusal is only logged).
    AcceptRestartOffer(String),
    /// Apply the peer's answer to our ICE restart offer.
    AcceptRestartAnswer(String),
    /// A clone of the connection's handle, for a call's media task (which attaches to it).
    Handle(oneshot::Sender<dopus_rtc::PeerHandle>),
    /// New STUN/TURN servers (a new login's relay credentials): the next allocation, after the
    /// old credentials expire or the allocation is lost, uses them.
    UpdateIceServers(Vec<dopus_rtc::IceServer>),
    /// Close the connection and end the task.
    Close,
}

/// The actor's handle on one connection task.
#[derive(Debug)]
pub struct ConnEntry {
    /// Which attempt.
    pub conn: String,
    /// The task's mailbox.
    pub tx: mpsc::UnboundedSender<ConnCmd>,
}

/// Tells the machine that none of a transmit's envelopes left (if it wants to know).
pub fn report_failed(tx: &ActorTx, t: &Transmit) {
    if t.report {
        let _ = tx.send(Msg::Input(Input::Transmitted {
            id: t.id,
            outcome: vec![Delivery::Failed; t.envelopes.len()],
        }));
    }
}
