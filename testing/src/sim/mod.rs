//! The deterministic simulated network (docs/simulation.md): N [`NodeMachine`]s, each on its
//! own [`MemoryStore`], a simulated signaling server and simulated direct links, all driven by
//! one seeded scheduler in virtual time.
//!
//! Every node is driven exactly as the runtime's actor drives it: a batch of inputs (network
//! events, connection events and the user's commands), [`NodeMachine::prepare`], the commit,
//! then every output. A crash drops whatever was not committed (the batch in progress, the
//! inputs waiting, the machine itself) and the node is rebuilt from its store, as the runtime
//! does at start.
//!
//! Determinism: one [`Rng`] stream decides everything; events are ordered by `(time, seq)`;
//! every map iterated is a `BTreeMap`. vodozemac draws its own key material from the thread
//! RNG, which cannot be seeded, so ciphertext and key bytes differ between runs: the trace hash
//! leaves them out, and the machine's decisions must not depend on them (same seed, same
//! trace hash is checked by the tests).

pub mod rng;
pub mod scenario;
mod server;
pub mod spaces;
pub mod voice;

use dopus_core::e2e::OlmMachine;
use dopus_core::identity::test_support::SeededRandom;
use dopus_core::identity::{Device, Identity, PickleKey};
use dopus_core::machine::{
    ConnectionEvent, ConnectionRequest, Delivery, Event, Inbound, Input, NodeMachine, Output,
    SignalingRequest, SignalingState, Transmit, Via,
};
use dopus_core::outbox::Route;
use dopus_core::store::{
    AccountRecord, Change, ContactState, ConversationId, DeliveryState, MemoryStore, MessageId,
    Pickle, Store,
};
use dopus_proto::peer::PeerAddress;
use dopus_types::{DeviceId, Timestamp, UserId};
pub use rng::Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

/// Virtual time starts here (ms since the epoch), so ids and clocks look real.
pub const T0: u64 = 1_700_000_000_000;
/// The marker every simulated text carries: the server must never see it.
pub const PLAINTEXT_MARKER: &str = "SIMTXT";

/// What the network does wrong, and how often (per mille per event).
#[derive(Debug, Clone)]
pub struct Faults {
    /// One-way latency of every hop, uniform in this range (ms).
    pub latency_ms: (u64, u64),
    /// A delivery that ignores its pipe's order (arrives up to 50 ms late, past later ones).
    pub reorder: u64,
    /// The server silently drops a relayed envelope.
    pub relay_drop: u64,
    /// The server flips one byte of a relayed ciphertext.
    pub tamper: u64,
    /// Direct connections can be made at all.
    pub direct: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: (5, 40),
            reorder: 0,
            relay_drop: 0,
            tamper: 0,
            direct: true,
        }
    }
}

/// Deliberately broken behaviour, to show the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSwitch {
    /// After every `n`th incoming text is committed, the receiver's store loses it (its row is
    /// turned into a tombstone behind the machine's back): an acknowledged message is lost.
    LoseEveryNthReceived(u64),
}

/// What a hostile server does to one relayed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Relay it as it is.
    Pass,
    /// Flip one byte of its ciphertext.
    Flip,
    /// Hand it back to its sender with the outer `to` rewritten to the sender.
    Reflect,
    /// Drop it (and say it was delivered).
    Drop,
}

/// What a tamper hook sees of one relayed envelope.
#[derive(Debug, Clone)]
pub struct TamperCtx {
    /// Virtual time (ms since [`T0`]).
    pub at_ms: u64,
    /// The sender's node index.
    pub from: usize,
    /// The recipient's node index.
    pub to: usize,
    /// The envelope id, if the payload parses as an envelope.
    pub id: Option<uuid::Uuid>,
    /// How many copies of this envelope id the server relayed before this one.
    pub copy: u32,
}

/// A test's hostile-server hook.
pub type TamperHook = Box<dyn FnMut(&TamperCtx) -> Tamper + Send>;

/// A user's action on one node. Targets (which message to edit, …) are chosen when it runs,
/// from the node's store, with the simulation's generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Send `count` texts to a peer (one batch).
    Send {
        /// The peer's node index.
        peer: usize,
        /// How many texts.
        count: usize,
    },
    /// Edit one of our messages to the peer.
    Edit {
        /// The peer's node index.
        peer: usize,
    },
    /// Delete one of our messages to the peer.
    Delete {
        /// The peer's node index.
        peer: usize,
    },
    /// Add or remove a reaction on a message of the conversation.
    React {
        /// The peer's node index.
        peer: usize,
    },
    /// Mark the conversation read.
    Read {
        /// The peer's node index.
        peer: usize,
    },
    /// Typing.
    Typing {
        /// The peer's node index.
        peer: usize,
    },
    /// Add the peer as an accepted contact directly.
    AddContact {
        /// The peer's node index.
        peer: usize,
    },
    /// Ask the peer to become a contact.
    Request {
        /// The peer's node index.
        peer: usize,
    },
    /// Accept the peer's request.
    Accept {
        /// The peer's node index.
        peer: usize,
    },
    /// Turn read receipts on or off.
    ReadReceipts(bool),
    /// Turn the relay-only setting on or off (on closes every direct connection).
    RelayOnly(bool),
    /// Set our presence status (invisible closes every direct connection).
    Status(dopus_proto::signaling::Status),
    /// Create the space (node 0).
    SpaceCreate,
    /// Invite a node to our space (it joins with the code a moment later); if we are not a
    /// member yet, try again later, at most `tries` more times.
    SpaceInvite {
        /// The joiner's node index.
        joiner: usize,
        /// Attempts left.
        tries: u32,
    },
    /// Join with an invite code.
    SpaceJoin {
        /// The code.
        code: String,
    },
    /// Send texts in `#general`.
    ChannelSend {
        /// How many.
        count: usize,
    },
    /// Kick a member (if we may).
    SpaceKick {
        /// The member's node index.
        peer: usize,
    },
    /// Give (or take) the moderator role (made on first use; it may kick).
    SpaceMod {
        /// The member's node index.
        peer: usize,
        /// Give or take.
        give: bool,
    },
    /// Rename the space or change `#general`'s topic.
    SpaceRename,
    /// Join the space's voice channel.
    VoiceJoin,
    /// Leave the voice channel.
    VoiceLeave,
}

/// How a crash hits a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Between two batches.
    Idle,
    /// In the next batch, before its commit: the batch is lost.
    BeforeCommit,
    /// In the next batch, after its commit, with only this many outputs performed.
    AfterCommit(usize),
}

/// Something the scenario makes happen at a time.
#[derive(Debug, Clone)]
pub enum Action {
    /// A user's command.
    Cmd(usize, Cmd),
    /// Crash a node; it comes back `down_ms` later.
    Crash {
        /// Which.
        node: usize,
        /// How.
        mode: CrashMode,
        /// For how long.
        down_ms: u64,
    },
    /// Keep a copy of a node's store (a backup to restore later).
    Backup(usize),
    /// Stop a node, put back one of its older backups (the oldest one if `oldest`, else a
    /// random one), start it `down_ms` later.
    Restore {
        /// Which.
        node: usize,
        /// Which backup.
        oldest: bool,
        /// For how long it is down.
        down_ms: u64,
    },
    /// Cut a node from the server for `ms`.
    CutServer {
        /// Which.
        node: usize,
        /// For how long.
        ms: u64,
    },
    /// Cut the direct path between two nodes for `ms`.
    CutDirect {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
        /// For how long.
        ms: u64,
    },
    /// A node loses every Olm session with a peer (between batches).
    LoseSessions {
        /// Which node.
        node: usize,
        /// With whom.
        peer: usize,
    },
    /// Hand the next envelope `from` sends to `to` (as seen by the server) back to `from`.
    ReflectNext {
        /// Whose envelope.
        from: usize,
        /// To whom it was going.
        to: usize,
    },
    /// End of the faulty phase: every node up, every cut healed, no more random faults.
    Heal,
}

/// Counters of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// Resets this node asked for (`SessionReset` events with `resent == 0`).
    pub resets_asked: u64,
    /// Resets peers asked of this node.
    pub resets_answered: u64,
    /// Batches run.
    pub batches: u64,
    /// Crashes (and restores).
    pub crashes: u64,
    /// When (virtual ms) each reset this node asked for started.
    pub reset_times: Vec<u64>,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per input, short-lived")]
enum Pending {
    Input(Input),
    Cmd(Cmd),
}

/// One simulated node: its store (always the committed state between batches), its machine
/// while it runs, and what its runtime would hold (connections, outstanding relay reports).
pub struct SimNode {
    /// A short name for reports.
    pub name: String,
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    key: [u8; 32],
    /// The committed store.
    pub store: MemoryStore,
    machine: Option<NodeMachine>,
    /// Running.
    pub up: bool,
    incarnation: u64,
    inbox: Vec<Pending>,
    wake_pending: bool,
    timer_gen: u64,
    timer_at: Option<u64>,
    sig_gen: u64,
    sig_up: bool,
    sig_cut: bool,
    restored: bool,
    status: dopus_proto::signaling::Status,
    crash_armed: Option<(CrashMode, u64)>,
    reports: BTreeMap<u64, Vec<Option<Delivery>>>,
    links: BTreeMap<UserId, String>,
    backups: Vec<MemoryStore>,
    shown: BTreeSet<MessageId>,
    received_texts: u64,
    /// Counters.
    pub stats: NodeStats,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("name", &self.name)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Up {
    Login(dopus_proto::signaling::Status),
    Relay {
        to: UserId,
        payload: Vec<u8>,
        store: bool,
        report: Option<(u64, usize)>,
    },
    Fetch(UserId),
    Publish(Box<dopus_proto::bundle::DeviceBundle>),
    Status(dopus_proto::signaling::Status),
    Sync(Vec<UserId>),
    Ack(Vec<u64>),
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "one per frame, short-lived")]
enum Down {
    Input(Input),
    Connected,
    Result {
        transmit: u64,
        index: usize,
        delivery: Delivery,
    },
}

#[derive(Debug)]
enum Ev {
    Wake(usize),
    Timer(usize, u64),
    Up {
        node: usize,
        generation: u64,
        frame: Up,
    },
    Down {
        node: usize,
        generation: u64,
        msg: Down,
    },
    Direct {
        to: usize,
        conn: String,
        inbound: Inbound,
    },
    Conn {
        node: usize,
        incarnation: u64,
        peer: UserId,
        conn: String,
        event: ConnectionEvent,
    },
    ConnOpen(String),
    ConnTimeout(String),
    ServerDrop {
        node: usize,
        generation: u64,
    },
    Reconnect(usize),
    Restart(usize),
    UncutServer(usize),
    UncutDirect(usize, usize),
    Act(Action),
    Check,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A max-heap: the earliest event is the greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
struct SimConn {
    offerer: usize,
    answerer: usize,
    answered: bool,
    open: bool,
    dead: bool,
    /// The sides that hold the negotiated audio m-line.
    audio: BTreeSet<usize>,
    /// The side whose offer adding audio is pending.
    audio_offer: Option<usize>,
}

/// What the oracle knows about one text message.
#[derive(Debug, Clone)]
struct SentText {
    from: usize,
    to: usize,
    /// The sender's creation order.
    index: u64,
    at: u64,
}

/// The simulated world.
pub struct Sim {
    /// The seed.
    pub seed: u64,
    /// Virtual time, ms since [`T0`].
    pub now: u64,
    rng: Rng,
    queue: BinaryHeap<Queued>,
    next_seq: u64,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    by_user: BTreeMap<UserId, usize>,
    server: server::Server,
    conns: BTreeMap<String, SimConn>,
    direct_cut: BTreeSet<(usize, usize)>,
    pipes: BTreeMap<(usize, usize, u8), u64>,
    /// Network faults in force.
    pub faults: Faults,
    /// Network faults before [`Action::Heal`].
    healed: bool,
    /// A deliberately broken behaviour.
    pub switch: Option<FaultSwitch>,
    tamper_hook: Option<TamperHook>,
    reflect_next: BTreeSet<(usize, usize)>,
    sent: BTreeMap<MessageId, SentText>,
    next_index: u64,
    acked: BTreeMap<MessageId, u64>,
    restores: Vec<(usize, u64)>,
    /// Invariant violations seen so far.
    pub failures: Vec<String>,
    trace: Sha256,
    /// Lines of trace kept for a failing seed's report (the last few hundred).
    pub tail: std::collections::VecDeque<String>,
    keep_tail: bool,
    /// How many trace lines are kept.
    pub tail_cap: usize,
    /// The run ended quiet (every outbox and mailbox empty) before its time limit.
    pub quiet_at: Option<u64>,
    /// Events handled.
    pub events: u64,
    actions_pending: u64,
    space: spaces::SpaceOracle,
    /// Each side learns that a connection opened after its own delay (up to the one-way
    /// latency), as two real nodes do, instead of both at once.
    pub open_skew: bool,
    /// Envelopes every node handed to the network (direct or through the server).
    pub envelopes_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Server links are "node → server" and "server → node" pipes.
const SERVER: usize = usize::MAX;

impl Sim {
    /// Whether `a` and `b` share an open connection that both of them use and whose audio
    /// m-line both hold (what a voice mesh or a call needs); the reason when not.
    pub fn audio_between(&self, a: usize, b: usize) -> Result<(), String> {
        let (ua, ub) = (self.nodes[a].user, self.nodes[b].user);
        let Some(conn) = self.nodes[a].links.get(&ub) else {
            return Err("no connection".into());
        };
        if self.nodes[b].links.get(&ua) != Some(conn) {
            return Err("the two sides use different connections".into());
        }
        let Some(c) = self.conns.get(conn) else {
            return Err("the connection is gone".into());
        };
        if !c.open || c.dead {
            return Err("the connection is not open".into());
        }
        if !(c.audio.contains(&a) && c.audio.contains(&b)) {
            return Err(format!(
                "audio is not negotiated (held by {:?}, offer pending from {:?})",
                c.audio, c.audio_offer
            ));
        }
        Ok(())
    }

    /// A world of `nodes` fresh accounts (not yet started).
    pub fn new(seed: u64, nodes: usize, faults: Faults) -> Self {
        let mut rng = Rng::new(seed);
        let mut sim = Sim {
            seed,
            now: 0,
            rng: rng.fork(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            nodes: Vec::new(),
            by_user: BTreeMap::new(),
            server: server::Server::default(),
            conns: BTreeMap::new(),
            open_skew: false,
            direct_cut: BTreeSet::new(),
            pipes: BTreeMap::new(),
            faults,
            healed: false,
            switch: None,
            tamper_hook: None,
            reflect_next: BTreeSet::new(),
            sent: BTreeMap::new(),
            next_index: 0,
            acked: BTreeMap::new(),
            restores: Vec::new(),
            failures: Vec::new(),
            trace: Sha256::new(),
            tail: std::collections::VecDeque::new(),
            keep_tail: true,
            tail_cap: 400,
            quiet_at: None,
            events: 0,
            actions_pending: 0,
            space: spaces::SpaceOracle::default(),
            envelopes_out: 0,
            bytes_out: 0,
        };
        for i in 0..nodes {
            let node = make_node(seed, i);
            sim.by_user.insert(node.user, i);
            sim.nodes.push(node);
        }
        sim
    }

    /// Sets a hostile-server hook (issue 21's tamperings).
    pub fn set_tamper_hook(&mut self, hook: TamperHook) {
        self.tamper_hook = Some(hook);
    }

    /// The user of node `i`.
    pub fn user(&self, i: usize) -> UserId {
        self.nodes[i].user
    }

    fn ts(&self) -> Timestamp {
        Timestamp(T0 + self.now)
    }

    /// Adds a line to the trace hash (and the kept tail).
    fn trace(&mut self, line: String) {
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        if self.keep_tail {
            if self.tail.len() >= self.tail_cap {
                self.tail.pop_front();
            }
            self.tail.push_back(format!("{:>9} {line}", self.now));
        }
    }

    /// The trace hash so far (hex).
    pub fn trace_hash(&self) -> String {
        let digest = self.trace.clone().finalize();
        digest.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn fail(&mut self, what: String) {
        self.trace(format!("FAIL {what}"));
        if self.failures.len() < 50 {
            self.failures.push(format!("t={}ms {what}", self.now));
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Queued { at, seq, ev });
    }

    /// Schedules an action at `at_ms` of virtual time.
    pub fn schedule(&mut self, at_ms: u64, action: Action) {
        self.actions_pending += 1;
        self.push(at_ms, Ev::Act(action));
    }

    /// When something sent now over `src → dst` arrives: FIFO per pipe, unless reordered.
    fn arrival(&mut self, src: usize, dst: usize, kind: u8) -> u64 {
        self.arrival_of(src, dst, kind, false)
    }

    /// Like [`Sim::arrival`]; an envelope (`may_reorder`) may also overtake or fall behind
    /// others when the reorder fault is on. Control frames on a connection keep their order
    /// (a WebSocket is ordered); envelopes reorder as they would across paths or across
    /// server processes.
    fn arrival_of(&mut self, src: usize, dst: usize, kind: u8, may_reorder: bool) -> u64 {
        let (lo, hi) = self.faults.latency_ms;
        let at = self.now + self.rng.range(lo, hi);
        if may_reorder && self.faults.reorder > 0 && self.rng.chance(self.faults.reorder) {
            return at + self.rng.range(1, 50);
        }
        let last = self.pipes.entry((src, dst, kind)).or_insert(0);
        let at = at.max(*last);
        *last = at;
        at
    }

    fn enqueue(&mut self, n: usize, p: Pending) {
        let node = &mut self.nodes[n];
        if !node.up {
            return;
        }
        node.inbox.push(p);
        if !node.wake_pending {
            node.wake_pending = true;
            let now = self.now;
            self.push(now, Ev::Wake(n));
        }
    }

    /// Starts every node and connects it to the server.
    pub fn start_all(&mut self) {
        for n in 0..self.nodes.len() {
            self.start(n);
        }
    }

    fn start(&mut self, n: usize) {
        let ts = self.ts();
        let node = &mut self.nodes[n];
        if node.up {
            return;
        }
        node.incarnation += 1;
        let inc = node.incarnation;
        let account = match node.store.account() {
            Ok(Some(a)) => a,
            other => {
                let name = node.name.clone();
                self.fail(format!(
                    "{name}: no account in the store at start: {other:?}"
                ));
                return;
            }
        };
        let rng_seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add((n as u64) << 32)
            .wrapping_add(inc);
        let olm = match OlmMachine::from_pickle(
            account.account_pickle.as_str(),
            PickleKey::from_bytes(node.key),
            Box::new(SeededRandom::new(rng_seed ^ 0x5555)),
        ) {
            Ok(o) => o,
            Err(e) => {
                let name = node.name.clone();
                self.fail(format!("{name}: the account pickle does not restore: {e}"));
                return;
            }
        };
        match NodeMachine::new(
            &node.store,
            account,
            olm,
            Box::new(SeededRandom::new(rng_seed)),
        ) {
            Ok(m) => node.machine = Some(m),
            Err(e) => {
                let name = node.name.clone();
                self.fail(format!("{name}: the machine does not start: {e}"));
                return;
            }
        }
        node.up = true;
        node.inbox.clear();
        node.wake_pending = false;
        node.links.clear();
        node.reports.clear();
        let _ = ts;
        let name = node.name.clone();
        self.trace(format!("start {name} inc={inc}"));
        // The user answers the requests still waiting (a crash may have come first).
        let waiting: Vec<usize> = self.nodes[n]
            .store
            .contacts()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.state == ContactState::IncomingRequest)
            .filter_map(|c| self.by_user.get(&c.user_id).copied())
            .collect();
        for p in waiting {
            let at = self.now + self.rng.range(200, 2_000);
            self.schedule(at, Action::Cmd(n, Cmd::Accept { peer: p }));
        }
        // After a restore, a request the copy shows as unanswered is asked again (the user
        // sees "request sent" for someone who is in fact a contact).
        if std::mem::take(&mut self.nodes[n].restored) {
            let asked: Vec<usize> = self.nodes[n]
                .store
                .contacts()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.state == ContactState::OutgoingRequest)
                .filter_map(|c| self.by_user.get(&c.user_id).copied())
                .collect();
            for p in asked {
                let at = self.now + self.rng.range(1_000, 5_000);
                self.schedule(at, Action::Cmd(n, Cmd::Request { peer: p }));
            }
        }
        // A first batch with no input: the machine publishes keys and so on once connected.
        self.push(self.now, Ev::Wake(n));
        self.nodes[n].wake_pending = true;
        self.connect(n);
    }

    fn connect(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.up || node.sig_cut {
            return;
        }
        node.sig_gen += 1;
        node.sig_up = false;
        let generation = node.sig_gen;
        // The client keeps the status for reconnects.
        let status = node.status;
        self.enqueue(
            n,
            Pending::Input(Input::Signaling(SignalingState::Connecting)),
        );
        let at = self.arrival(n, SERVER, 0);
        self.push(
            at,
            Ev::Up {
                node: n,
                generation,
                frame: Up::Login(status),
            },
        );
    }

    /// The node's side of its server connection went away.
    fn disconnect(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let old = node.sig_gen;
        node.sig_gen += 1;
        let was_up = node.sig_up;
        node.sig_up = false;
        let reports = std::mem::take(&mut node.reports);
        if node.up {
            for (id, outcome) in reports {
                let outcome = outcome
                    .into_iter()
                    .map(|d| d.unwrap_or(Delivery::Failed))
                    .collect();
                self.enqueue(n, Pending::Input(Input::Transmitted { id, outcome }));
            }
            self.enqueue(
                n,
                Pending::Input(Input::Signaling(SignalingState::Disconnected)),
            );
        }
        let _ = was_up;
        // The server notices some time later (a closed socket at once, a dead one at its ping
        // timeout).
        let at = self.now + self.rng.range(50, 8_000);
        self.push(
            at,
            Ev::ServerDrop {
                node: n,
                generation: old,
            },
        );
        if self.nodes[n].up && !self.nodes[n].sig_cut {
            let at = self.now + self.rng.range(300, 3_000);
            self.push(at, Ev::Reconnect(n));
        }
    }

    /// Crashes node `n` now: everything not committed is gone.
    fn crash(&mut self, n: usize, why: &str) {
        let node = &mut self.nodes[n];
        if !node.up {
            return;
        }
        node.up = false;
        node.machine = None;
        node.inbox.clear();
        node.wake_pending = false;
        node.crash_armed = None;
        node.timer_at = None;
        node.timer_gen += 1;
        node.stats.crashes += 1;
        node.links.clear();
        // A new machine starts online.
        node.status = dopus_proto::signaling::Status::Online;
        let name = node.name.clone();
        self.trace(format!("crash {name} {why}"));
        self.disconnect(n);
        // Its direct connections die; the far ends notice at their ICE timeout.
        let mine: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, c)| c.offerer == n || c.answerer == n)
            .map(|(id, _)| id.clone())
            .collect();
        for id in mine {
            if let Some(c) = self.conns.get_mut(&id) {
                c.dead = true;
            }
            let at = self.now + self.rng.range(2_000, 15_000);
            self.push(at, Ev::ConnTimeout(id));
        }
    }

    /// Runs until virtual time `until_ms` or until the queue is empty.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(top) = self.queue.peek() {
            if top.at > until_ms {
                break;
            }
            let Some(q) = self.queue.pop() else { break };
            self.now = q.at;
            self.events += 1;
            self.handle(q.ev);
        }
        self.now = self.now.max(until_ms);
    }

    /// Runs until every outbox and mailbox is empty (checked every second) or `limit_ms`.
    pub fn run_until_quiet(&mut self, limit_ms: u64) -> bool {
        self.push(self.now + 1_000, Ev::Check);
        while let Some(q) = self.queue.pop() {
            if q.at > limit_ms {
                break;
            }
            self.now = q.at;
            self.events += 1;
            if let Ev::Check = q.ev {
                if self.quiet() {
                    self.quiet_at = Some(self.now);
                    return true;
                }
                self.push(self.now + 1_000, Ev::Check);
                continue;
            }
            self.handle(q.ev);
        }
        false
    }

    /// Every scheduled action done, every node up and connected, every outbox and mailbox
    /// empty, no request unanswered.
    fn quiet(&self) -> bool {
        self.actions_pending == 0
            && self.nodes.iter().all(|n| {
                n.up && n.sig_up
                    && n.store.outbox_next_attempt_at().ok().flatten().is_none()
                    && n.inbox.is_empty()
            })
            && self.server.mailboxes_empty()
            && self.pending_contacts() == 0
    }

    fn pending_contacts(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| {
                n.store
                    .contacts()
                    .map(|cs| {
                        cs.iter()
                            .filter(|c| c.state != ContactState::Accepted)
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(n) => {
                self.nodes[n].wake_pending = false;
                self.run_batch(n);
            }
            Ev::Timer(n, generation) => {
                if self.nodes[n].up && self.nodes[n].timer_gen == generation {
                    self.nodes[n].timer_at = None;
                    self.run_batch(n);
                }
            }
            Ev::Up {
                node,
                generation,
                frame,
            } => self.server_frame(node, generation, frame),
            Ev::Down {
                node,
                generation,
                msg,
            } => {
                let nd = &mut self.nodes[node];
                if !nd.up || nd.sig_gen != generation {
                    return;
                }
                match msg {
                    Down::Connected => {
                        nd.sig_up = true;
                        self.enqueue(
                            node,
                            Pending::Input(Input::Signaling(SignalingState::Connected)),
                        );
                        self.enqueue(node, Pending::Input(Input::Authenticated));
                    }
                    Down::Input(i) => self.enqueue(node, Pending::Input(i)),
                    Down::Result {
                        transmit,
                        index,
                        delivery,
                    } => {
                        let done = match nd.reports.get_mut(&transmit) {
                            Some(r) => {
                                if let Some(slot) = r.get_mut(index) {
                                    *slot = Some(delivery);
                                }
                                r.iter().all(Option::is_some)
                            }
                            None => false,
                        };
                        if done && let Some(r) = nd.reports.remove(&transmit) {
                            let outcome = r.into_iter().flatten().collect();
                            self.enqueue(
                                node,
                                Pending::Input(Input::Transmitted {
                                    id: transmit,
                                    outcome,
                                }),
                            );
                        }
                    }
                }
            }
            Ev::Direct { to, conn, inbound } => {
                let ok = self.conns.get(&conn).is_some_and(|c| c.open && !c.dead);
                if ok {
                    self.enqueue(to, Pending::Input(Input::Envelopes(vec![inbound])));
                }
            }
            Ev::Conn {
                node,
                incarnation,
                peer,
                conn,
                event,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    if let ConnectionEvent::Closed { .. } = event
                        && self.nodes[node].links.get(&peer) == Some(&conn)
                    {
                        self.nodes[node].links.remove(&peer);
                    }
                    self.enqueue(
                        node,
                        Pending::Input(Input::Connection { peer, conn, event }),
                    );
                }
            }
            Ev::ConnOpen(id) => self.conn_open(id),
            Ev::ConnTimeout(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    for (me, other) in [(c.offerer, c.answerer), (c.answerer, c.offerer)] {
                        let peer = self.nodes[other].user;
                        if self.nodes[me].up {
                            let inc = self.nodes[me].incarnation;
                            self.push(
                                self.now,
                                Ev::Conn {
                                    node: me,
                                    incarnation: inc,
                                    peer,
                                    conn: id.clone(),
                                    event: ConnectionEvent::Closed {
                                        reason: Some("ICE timed out".into()),
                                    },
                                },
                            );
                        }
                    }
                }
            }
            Ev::ServerDrop { node, generation } => self.server_drop(node, generation),
            Ev::Reconnect(n) => {
                if self.nodes[n].up && !self.nodes[n].sig_up {
                    self.connect(n);
                }
            }
            Ev::Restart(n) => self.start(n),
            Ev::UncutServer(n) => {
                self.nodes[n].sig_cut = false;
                if self.nodes[n].up && !self.nodes[n].sig_up {
                    self.connect(n);
                }
            }
            Ev::UncutDirect(a, b) => {
                self.direct_cut.remove(&(a.min(b), a.max(b)));
            }
            Ev::Act(a) => {
                self.actions_pending -= 1;
                self.act(a);
            }
            Ev::Check => {}
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Cmd(n, cmd) => self.enqueue(n, Pending::Cmd(cmd)),
            Action::Crash {
                node,
                mode,
                down_ms,
            } => {
                if !self.nodes[node].up {
                    return;
                }
                if mode == CrashMode::Idle {
                    self.crash(node, "idle");
                    self.push(self.now + down_ms, Ev::Restart(node));
                } else {
                    self.nodes[node].crash_armed = Some((mode, down_ms));
                    // Make sure a batch comes.
                    self.push(self.now + 1, Ev::Wake(node));
                }
            }
            Action::Backup(n) => {
                if self.nodes[n].up {
                    let copy = self.nodes[n].store.clone();
                    self.nodes[n].backups.push(copy);
                    let name = self.nodes[n].name.clone();
                    self.trace(format!("backup {name}"));
                }
            }
            Action::Restore {
                node,
                oldest,
                down_ms,
            } => {
                if self.nodes[node].backups.is_empty() {
                    return;
                }
                self.crash(node, "restore");
                let k = if oldest {
                    0
                } else {
                    self.rng.below(self.nodes[node].backups.len() as u64) as usize
                };
                let store = self.nodes[node].backups[k].clone();
                let nd = &mut self.nodes[node];
                nd.store = store;
                // What it shows is what the old copy holds.
                nd.shown = nd
                    .store
                    .conversations()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|c| {
                        nd.store
                            .messages_before(&c.conversation.id, None, 100_000)
                            .unwrap_or_default()
                    })
                    .map(|m| m.id)
                    .collect();
                nd.restored = true;
                let name = nd.name.clone();
                self.restores.push((node, self.now));
                self.trace(format!("restore {name} backup={k}"));
                self.push(self.now + down_ms, Ev::Restart(node));
            }
            Action::CutServer { node, ms } => {
                if self.healed {
                    return;
                }
                self.nodes[node].sig_cut = true;
                let name = self.nodes[node].name.clone();
                self.trace(format!("cut-server {name} {ms}"));
                if self.nodes[node].sig_gen > 0 {
                    self.disconnect(node);
                }
                self.push(self.now + ms, Ev::UncutServer(node));
            }
            Action::CutDirect { a, b, ms } => {
                if self.healed {
                    return;
                }
                self.direct_cut.insert((a.min(b), a.max(b)));
                self.trace(format!("cut-direct {a} {b} {ms}"));
                // Connections between them die.
                let ids: Vec<String> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        (c.offerer == a && c.answerer == b) || (c.offerer == b && c.answerer == a)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.dead = true;
                    }
                    let at = self.now + self.rng.range(2_000, 15_000);
                    self.push(at, Ev::ConnTimeout(id));
                }
                self.push(self.now + ms, Ev::UncutDirect(a, b));
            }
            Action::LoseSessions { node, peer } => {
                let user = self.nodes[peer].user;
                let nd = &mut self.nodes[node];
                let sessions: Vec<String> = nd
                    .store
                    .peer_devices(&user)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|d| {
                        nd.store
                            .olm_sessions(&user, &d.device_id)
                            .unwrap_or_default()
                    })
                    .map(|s| s.session_id)
                    .collect();
                let changes = sessions
                    .into_iter()
                    .map(|session_id| Change::RemoveOlmSession { session_id })
                    .collect();
                if let Err(e) = nd.store.apply(changes) {
                    self.fail(format!("losing sessions: {e}"));
                }
                self.trace(format!("lose-sessions {node} {peer}"));
            }
            Action::ReflectNext { from, to } => {
                self.reflect_next.insert((from, to));
            }
            Action::Heal => {
                self.healed = true;
                self.faults.reorder = 0;
                self.faults.relay_drop = 0;
                self.faults.tamper = 0;
                self.direct_cut.clear();
                self.trace("heal".into());
                for n in 0..self.nodes.len() {
                    self.nodes[n].sig_cut = false;
                    if !self.nodes[n].up {
                        self.start(n);
                    } else if !self.nodes[n].sig_up {
                        self.connect(n);
                    }
                }
            }
        }
    }

    /// One batch on node `n`: inputs and commands, prepare, commit, outputs.
    fn run_batch(&mut self, n: usize) {
        if !self.nodes[n].up {
            return;
        }
        let now = self.ts();
        let inbox = std::mem::take(&mut self.nodes[n].inbox);
        let armed = self.nodes[n].crash_armed.take();
        let Some(mut machine) = self.nodes[n].machine.take() else {
            return;
        };
        self.nodes[n].stats.batches += 1;
        let snapshot = matches!(armed, Some((CrashMode::BeforeCommit, _)))
            .then(|| self.nodes[n].store.clone());
        let mut line = format!("batch {}", self.nodes[n].name);
        for p in &inbox {
            line.push(' ');
            line.push_str(&pending_name(p));
        }
        self.trace(line);
        let peers: Vec<UserId> = self.nodes.iter().map(|x| x.user).collect();
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        for p in inbox {
            let node = &mut self.nodes[n];
            match p {
                Pending::Input(i) => {
                    if let Err(e) = machine.handle(now, i, &mut node.store) {
                        errors.push(format!("handle: {e}"));
                    }
                }
                Pending::Cmd(cmd) => {
                    if let Err(e) = run_cmd(
                        &mut machine,
                        &mut node.store,
                        &mut self.rng,
                        now,
                        &peers,
                        cmd,
                        &mut notes,
                    ) {
                        errors.push(e);
                    }
                }
            }
        }
        if let Err(e) = machine.prepare(now, &mut self.nodes[n].store) {
            errors.push(format!("prepare: {e}"));
        }
        let name = self.nodes[n].name.clone();
        for e in errors {
            self.fail(format!("{name}: machine error: {e}"));
        }
        if snapshot.is_none() {
            for note in notes {
                self.space_note(n, note);
            }
        }
        let mut outputs = Vec::new();
        while let Some(o) = machine.poll_output() {
            outputs.push(o);
        }
        if let Some(store) = snapshot {
            // The commit never happened.
            self.nodes[n].store = store;
            drop(machine);
            let down = armed.map_or(1_000, |(_, d)| d);
            self.crash(n, "before-commit");
            self.push(self.now + down, Ev::Restart(n));
            return;
        }
        // Committed. A lossy-store fault strikes here, behind the machine's back.
        self.nodes[n].machine = Some(machine);
        let cut = match armed {
            Some((CrashMode::AfterCommit(k), d)) => Some((k.min(outputs.len()), d)),
            Some((CrashMode::Idle, d)) => Some((0, d)),
            _ => None,
        };
        let mut performed = 0;
        for o in outputs {
            if let Some((k, _)) = cut
                && performed >= k
            {
                // Not performed; events still tell the oracle what was committed.
                if let Output::Event(e) = o {
                    self.oracle_event(n, &e);
                }
                continue;
            }
            performed += 1;
            self.perform(n, o);
        }
        if let Some((_, down)) = cut {
            self.crash(n, "after-commit");
            self.push(self.now + down, Ev::Restart(n));
            return;
        }
        self.arm_timer(n);
    }

    fn arm_timer(&mut self, n: usize) {
        let Some(m) = &self.nodes[n].machine else {
            return;
        };
        let Some(t) = m.poll_timeout() else {
            return;
        };
        let at = t.0.saturating_sub(T0).max(self.now);
        // Progress at least one ms per timer, so a timeout due now cannot spin.
        let at = if at <= self.now { self.now + 1 } else { at };
        let node = &mut self.nodes[n];
        if node.timer_at.is_some_and(|old| old <= at) {
            return;
        }
        node.timer_gen += 1;
        node.timer_at = Some(at);
        let generation = node.timer_gen;
        self.push(at, Ev::Timer(n, generation));
    }

    fn perform(&mut self, n: usize, o: Output) {
        match o {
            Output::Transmit(t) => self.transmit(n, t),
            Output::Signaling(req) => self.signaling_request(n, req),
            Output::Connection(req) => self.connection_request(n, req),
            Output::Event(e) => self.oracle_event(n, &e),
            // The simulation sends no files.
            Output::Transfer(_) | Output::Call(_) | Output::Voice(_) => {}
        }
    }

    fn transmit(&mut self, n: usize, t: Transmit) {
        self.envelopes_out += t.envelopes.len() as u64;
        self.bytes_out += t
            .envelopes
            .iter()
            .map(|e| e.bytes.len() as u64)
            .sum::<u64>();
        let p = self.by_user.get(&t.peer).copied();
        let ids: Vec<String> = t
            .envelopes
            .iter()
            .map(|e| envelope_summary(&e.bytes))
            .collect();
        self.trace(format!(
            "transmit {} -> {:?} {:?} store={} report={} [{}]",
            self.nodes[n].name,
            p,
            t.route,
            t.store,
            t.report,
            ids.join(",")
        ));
        let Some(p) = p else {
            return;
        };
        if t.route == Route::Direct {
            let conn = self.nodes[n].links.get(&t.peer).cloned();
            let open = conn
                .as_ref()
                .and_then(|c| self.conns.get(c))
                .is_some_and(|c| c.open);
            if let (Some(conn), true) = (conn, open) {
                let alive = self.conns.get(&conn).is_some_and(|c| !c.dead)
                    && !self.direct_cut.contains(&(n.min(p), n.max(p)));
                if alive {
                    let from = self.nodes[n].user;
                    for e in &t.envelopes {
                        let at = self.arrival_of(n, p, 2, true);
                        self.push(
                            at,
                            Ev::Direct {
                                to: p,
                                conn: conn.clone(),
                                inbound: Inbound {
                                    bytes: e.bytes.clone(),
                                    via: Via::Direct { peer: from },
                                },
                            },
                        );
                    }
                }
                if t.report {
                    let outcome = vec![Delivery::Sent; t.envelopes.len()];
                    self.enqueue(n, Pending::Input(Input::Transmitted { id: t.id, outcome }));
                }
                return;
            }
            if !t.fallback {
                if t.report {
                    let outcome = vec![Delivery::Failed; t.envelopes.len()];
                    self.enqueue(n, Pending::Input(Input::Transmitted { id: t.id, outcome }));
                }
                return;
            }
        }
        // Through the server.
        if !self.nodes[n].sig_up {
            if t.report {
                let outcome = vec![Delivery::Failed; t.envelopes.len()];
                self.enqueue(n, Pending::Input(Input::Transmitted { id: t.id, outcome }));
            }
            return;
        }
        let generation = self.nodes[n].sig_gen;
        if t.report {
            self.nodes[n]
                .reports
                .insert(t.id, vec![None; t.envelopes.len()]);
        }
        for (i, e) in t.envelopes.into_iter().enumerate() {
            let at = self.arrival(n, SERVER, 0);
            self.push(
                at,
                Ev::Up {
                    node: n,
                    generation,
                    frame: Up::Relay {
                        to: t.peer,
                        payload: e.bytes,
                        store: t.store,
                        report: t.report.then_some((t.id, i)),
                    },
                },
            );
        }
    }

    fn signaling_request(&mut self, n: usize, req: SignalingRequest) {
        let (frame, name) = match req {
            SignalingRequest::FetchBundle { peer } => {
                let p = self.by_user.get(&peer).copied();
                (Up::Fetch(peer), format!("fetch {p:?}"))
            }
            SignalingRequest::PublishBundle { bundle } => {
                let k = bundle.one_time_keys.len();
                (Up::Publish(bundle), format!("publish otks={k}"))
            }
            SignalingRequest::SetStatus(s) => {
                self.nodes[n].status = s;
                (Up::Status(s), format!("status {s:?}"))
            }
            SignalingRequest::SyncContacts(c) => {
                let mut idx: Vec<usize> = c
                    .iter()
                    .filter_map(|u| self.by_user.get(u).copied())
                    .collect();
                idx.sort_unstable();
                (Up::Sync(c), format!("sync {idx:?}"))
            }
            SignalingRequest::AckMailbox(ids) => {
                let s = format!("ack {ids:?}");
                (Up::Ack(ids), s)
            }
        };
        let (up, generation) = (self.nodes[n].sig_up, self.nodes[n].sig_gen);
        self.trace(format!("{} {name} up={up}", self.nodes[n].name));
        if !up {
            return;
        }
        let at = self.arrival(n, SERVER, 0);
        self.push(
            at,
            Ev::Up {
                node: n,
                generation,
                frame,
            },
        );
    }

    fn conn_event(
        &mut self,
        node: usize,
        peer: UserId,
        conn: String,
        event: ConnectionEvent,
        delay: u64,
    ) {
        let inc = self.nodes[node].incarnation;
        self.push(
            self.now + delay,
            Ev::Conn {
                node,
                incarnation: inc,
                peer,
                conn,
                event,
            },
        );
    }

    fn connection_request(&mut self, n: usize, req: ConnectionRequest) {
        self.trace(format!(
            "{} conn {}",
            self.nodes[n].name,
            conn_req_name(&req)
        ));
        match req {
            ConnectionRequest::Offer { peer, conn } => {
                let Some(p) = self.by_user.get(&peer).copied() else {
                    return;
                };
                if !self.faults.direct
                    || self.direct_cut.contains(&(n.min(p), n.max(p)))
                    || !self.nodes[p].up
                {
                    let reason = Some("sim: no direct path".to_owned());
                    self.conn_event(n, peer, conn, ConnectionEvent::Closed { reason }, 20);
                    return;
                }
                self.conns.insert(
                    conn.clone(),
                    SimConn {
                        offerer: n,
                        answerer: p,
                        answered: false,
                        open: false,
                        dead: false,
                        audio: BTreeSet::new(),
                        audio_offer: None,
                    },
                );
                let sdp = format!("sim-offer {conn}");
                self.conn_event(n, peer, conn, ConnectionEvent::Offered { sdp }, 2);
            }
            ConnectionRequest::Answer { peer, conn, .. } => {
                let Some(p) = self.by_user.get(&peer).copied() else {
                    return;
                };
                match self.conns.get_mut(&conn) {
                    Some(c) if c.offerer == p && c.answerer == n && !c.dead => {
                        c.answered = true;
                        let sdp = format!("sim-answer {conn}");
                        self.conn_event(n, peer, conn, ConnectionEvent::Answered { sdp }, 2);
                    }
                    _ => {
                        let reason = Some("sim: no such offer".to_owned());
                        self.conn_event(n, peer, conn, ConnectionEvent::Closed { reason }, 5);
                    }
                }
            }
            ConnectionRequest::AcceptAnswer { peer, conn, .. } => match self.conns.get(&conn) {
                Some(c) if c.offerer == n && c.answered && !c.dead => {
                    let rtt = 2 * self
                        .rng
                        .range(self.faults.latency_ms.0, self.faults.latency_ms.1);
                    self.push(self.now + rtt + 5, Ev::ConnOpen(conn));
                }
                _ => {
                    let reason = Some("sim: the attempt is gone".to_owned());
                    self.conn_event(n, peer, conn, ConnectionEvent::Closed { reason }, 5);
                }
            },
            // Audio by renegotiation, as dopus-rtc's engine does it: one audio m-line per
            // connection, one offer of ours pending at a time, a peer's offer refused while
            // ours is pending.
            ConnectionRequest::AddAudio { peer, conn } => {
                let event = match self.conns.get_mut(&conn) {
                    Some(c) if c.open && !c.dead => {
                        if c.audio.contains(&n) {
                            Some(media_failed("audio is already negotiated"))
                        } else if c.audio_offer == Some(n) {
                            Some(media_failed("an offer of ours is pending"))
                        } else {
                            c.audio_offer = Some(n);
                            Some(ConnectionEvent::MediaOffered {
                                sdp: format!("sim-media {conn}"),
                            })
                        }
                    }
                    Some(_) => Some(media_failed("the connection is not open")),
                    None => None,
                };
                if let Some(e) = event {
                    self.conn_event(n, peer, conn, e, 2);
                }
            }
            ConnectionRequest::AcceptMediaOffer { peer, conn, .. } => {
                let event = match self.conns.get_mut(&conn) {
                    Some(c) if c.open && !c.dead => {
                        if c.audio_offer == Some(n) {
                            Some(media_failed("an offer of ours is pending"))
                        } else {
                            c.audio.insert(n);
                            Some(ConnectionEvent::MediaAnswered {
                                sdp: format!("sim-media-answer {conn}"),
                            })
                        }
                    }
                    Some(_) => Some(media_failed("the connection is not open")),
                    None => None,
                };
                if let Some(e) = event {
                    self.conn_event(n, peer, conn, e, 2);
                }
            }
            ConnectionRequest::AcceptMediaAnswer { peer, conn, .. } => {
                let event = match self.conns.get_mut(&conn) {
                    Some(c) if c.open && !c.dead && c.audio_offer == Some(n) => {
                        c.audio_offer = None;
                        c.audio.insert(n);
                        None
                    }
                    Some(_) => Some(media_failed("no offer of ours is pending")),
                    None => None,
                };
                if let Some(e) = event {
                    self.conn_event(n, peer, conn, e, 2);
                }
            }
            ConnectionRequest::AddCandidate { .. }
            | ConnectionRequest::AcceptRestartOffer { .. }
            | ConnectionRequest::AcceptRestartAnswer { .. } => {}
            ConnectionRequest::Close { peer, conn } => {
                let conn = conn.or_else(|| self.nodes[n].links.get(&peer).cloned());
                let Some(conn) = conn else { return };
                if self.nodes[n].links.get(&peer) == Some(&conn) {
                    self.nodes[n].links.remove(&peer);
                }
                if let Some(c) = self.conns.remove(&conn) {
                    let other = if c.offerer == n {
                        c.answerer
                    } else {
                        c.offerer
                    };
                    let me = self.nodes[n].user;
                    if self.nodes[other].up {
                        let d = self
                            .rng
                            .range(self.faults.latency_ms.0, self.faults.latency_ms.1);
                        let reason = Some("the peer closed the connection".to_owned());
                        self.conn_event(other, me, conn, ConnectionEvent::Closed { reason }, d);
                    }
                }
            }
        }
    }

    fn conn_open(&mut self, id: String) {
        let Some(c) = self.conns.get(&id) else { return };
        let (a, b) = (c.offerer, c.answerer);
        let ok = !c.dead
            && self.nodes[a].up
            && self.nodes[b].up
            && self.faults.direct
            && !self.direct_cut.contains(&(a.min(b), a.max(b)));
        if !ok {
            self.conns.remove(&id);
            for (me, other) in [(a, b), (b, a)] {
                let peer = self.nodes[other].user;
                if self.nodes[me].up {
                    let reason = Some("sim: ICE failed".to_owned());
                    self.conn_event(me, peer, id.clone(), ConnectionEvent::Closed { reason }, 0);
                }
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.open = true;
        }
        self.trace(format!("conn-open {a} {b}"));
        for (me, other) in [(a, b), (b, a)] {
            let peer = self.nodes[other].user;
            let skew = if self.open_skew {
                self.rng.range(0, self.faults.latency_ms.1)
            } else {
                0
            };
            self.nodes[me].links.insert(peer, id.clone());
            self.conn_event(me, peer, id.clone(), ConnectionEvent::Open, skew);
            self.conn_event(
                me,
                peer,
                id.clone(),
                ConnectionEvent::Hello { bulk: true },
                skew + 1,
            );
        }
    }

    /// What the oracle learns from a committed event.
    fn oracle_event(&mut self, n: usize, e: &Event) {
        match e {
            Event::MessageAdded(m) => {
                let me = self.nodes[n].user;
                if m.sender == me {
                    let ConversationId::Direct(peer) = m.conversation else {
                        return;
                    };
                    let Some(&to) = self.by_user.get(&peer) else {
                        return;
                    };
                    self.next_index += 1;
                    let index = self.next_index;
                    self.sent.insert(
                        m.id,
                        SentText {
                            from: n,
                            to,
                            index,
                            at: self.now,
                        },
                    );
                    self.trace(format!("sent {} {}", self.nodes[n].name, m.id));
                } else {
                    self.trace(format!("shown {} {}", self.nodes[n].name, m.id));
                    self.space_shown(m.id);
                    if !self.nodes[n].shown.insert(m.id) {
                        let name = self.nodes[n].name.clone();
                        self.fail(format!("{name} showed message {} twice", m.id));
                    }
                    if m.body.contains(PLAINTEXT_MARKER) {
                        self.nodes[n].received_texts += 1;
                        if let Some(FaultSwitch::LoseEveryNthReceived(k)) = self.switch
                            && self.nodes[n].received_texts.is_multiple_of(k.max(1))
                        {
                            // The broken store: a committed message is gone.
                            let _ = self.nodes[n].store.apply_one(Change::DeleteMessage(m.id));
                        }
                    }
                }
            }
            Event::MessageState { id, state, .. } => {
                if matches!(state, DeliveryState::Delivered | DeliveryState::Read) {
                    self.acked.entry(*id).or_insert(self.now);
                }
                self.trace(format!("state {} {id} {state:?}", self.nodes[n].name));
            }
            Event::SessionReset { user, resent } => {
                let p = self.by_user.get(user).copied();
                self.trace(format!(
                    "session-reset {} {p:?} {resent}",
                    self.nodes[n].name
                ));
                // `resent == 0` also when the peer asked and we had nothing to re-send: we
                // asked if our outbox holds the reset itself (queued in this very batch).
                let asked = *resent == 0
                    && self.nodes[n]
                        .store
                        .outbox_for_peer(user, 10_000)
                        .unwrap_or_default()
                        .iter()
                        .any(|e| {
                            dopus_core::outbox::Queued::decode(&e.bytes).is_some_and(|q| {
                                matches!(q.content, dopus_proto::peer::Content::Session(_))
                            })
                        });
                if asked {
                    self.nodes[n].stats.resets_asked += 1;
                    let now = self.now;
                    self.nodes[n].stats.reset_times.push(now);
                } else {
                    self.nodes[n].stats.resets_answered += 1;
                }
            }
            Event::ContactChanged(user) => {
                // The user accepts an incoming request a moment later.
                if let Ok(Some(c)) = self.nodes[n].store.contact(user)
                    && c.state == ContactState::IncomingRequest
                    && let Some(&p) = self.by_user.get(user)
                {
                    let at = self.now + self.rng.range(200, 2_000);
                    self.schedule(at, Action::Cmd(n, Cmd::Accept { peer: p }));
                }
            }
            Event::MessageUpdated(_)
            | Event::Typing { .. }
            | Event::ContactRemoved(_)
            | Event::Presence { .. }
            | Event::Signaling(_)
            | Event::Connection(_)
            | Event::Verification(_)
            | Event::SpaceChanged(_)
            | Event::ChannelWaiting(_)
            | Event::Transfer(_)
            | Event::Call(_)
            | Event::Voice(_) => {}
        }
    }

    /// Texts sent (committed) so far.
    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Counters of node `i`.
    pub fn stats(&self, i: usize) -> &NodeStats {
        &self.nodes[i].stats
    }

    /// Whether node `node` has a direct link (an open or opening connection) to node `peer`.
    pub fn has_link(&self, node: usize, peer: usize) -> bool {
        self.nodes[node].links.contains_key(&self.nodes[peer].user)
    }

    /// One-time keys of `owner` claimed by `claimer` (fallback-key claims apart).
    pub fn otk_claims(&self, claimer: usize, owner: usize) -> (u64, u64) {
        self.server.claims(claimer, owner)
    }

    /// Checks the end-of-run invariants (after [`Sim::run_until_quiet`]); returns every
    /// violation, including those seen during the run.
    pub fn check(&mut self) -> Vec<String> {
        if self.quiet_at.is_none() {
            let mut left = Vec::new();
            for n in &self.nodes {
                let outbox = n.store.outbox_next_attempt_at().ok().flatten();
                left.push(format!(
                    "{}: up={} sig={} outbox_next={:?}",
                    n.name,
                    n.up,
                    n.sig_up,
                    outbox.map(|t| t.0.saturating_sub(T0))
                ));
            }
            self.fail(format!(
                "not quiet by the end: {} (mailboxes empty: {}, pending contacts: {})",
                left.join("; "),
                self.server.mailboxes_empty(),
                self.pending_contacts()
            ));
        }
        let tainted_at = |restores: &[(usize, u64)], node: usize, at: u64| {
            restores.iter().any(|&(r, t)| r == node && t >= at)
        };
        let mut problems = Vec::new();
        // Every text reached its recipient exactly once, matching its sender's copy.
        for (id, s) in &self.sent {
            let to = &self.nodes[s.to];
            let from = &self.nodes[s.from];
            let lost_by_receiver = tainted_at(&self.restores, s.to, s.at);
            let lost_by_sender = tainted_at(&self.restores, s.from, s.at);
            let theirs = to.store.message(id).ok().flatten();
            let ours = from.store.message(id).ok().flatten();
            // A sender put back to a copy from before the message never had it: it is gone
            // unless it had already been delivered.
            let forgotten = lost_by_sender && ours.is_none();
            match (&theirs, lost_by_receiver || forgotten) {
                (None, false) => {
                    let acked = self.acked.contains_key(id);
                    problems.push(format!(
                        "{} never got {id} from {} (acknowledged: {acked})",
                        to.name, from.name
                    ));
                    continue;
                }
                (None, true) => continue,
                _ => {}
            }
            if !lost_by_receiver && !to.shown.contains(id) {
                problems.push(format!("{} stored {id} but never showed it", to.name));
            }
            if let (Some(t), Some(o)) = (&theirs, &ours)
                && !lost_by_receiver
                && !lost_by_sender
            {
                if t.deleted != o.deleted || t.body != o.body {
                    problems.push(format!(
                        "{id}: {} has deleted={} edited={:?}, {} has deleted={} edited={:?}{}",
                        from.name,
                        o.deleted,
                        o.edited_at.map(|x| x.0 - T0),
                        to.name,
                        t.deleted,
                        t.edited_at.map(|x| x.0 - T0),
                        if self.acked.contains_key(id) {
                            " (acknowledged: lost)"
                        } else {
                            ""
                        }
                    ));
                }
                let (rt, ro) = (to.store.reactions(id), from.store.reactions(id));
                if let (Ok(rt), Ok(ro)) = (rt, ro) {
                    let norm = |r: Vec<dopus_core::store::ReactionSummary>| {
                        let mut v: Vec<(String, Vec<UserId>)> = r
                            .into_iter()
                            .map(|x| {
                                let mut u = x.users;
                                u.sort();
                                (x.emoji, u)
                            })
                            .collect();
                        v.sort();
                        v
                    };
                    let (rt, ro) = (norm(rt), norm(ro));
                    if rt != ro {
                        let names = |v: &[(String, Vec<UserId>)]| {
                            v.iter()
                                .map(|(e, us)| {
                                    let who: Vec<String> = us
                                        .iter()
                                        .map(|u| {
                                            self.by_user.get(u).map_or("?".to_owned(), |&i| {
                                                self.nodes[i].name.clone()
                                            })
                                        })
                                        .collect();
                                    format!("{e}:{}", who.join("+"))
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        };
                        problems.push(format!(
                            "{id} (deleted: {}): reactions differ: {} has [{}], {} has [{}]",
                            o.deleted,
                            from.name,
                            names(&ro),
                            to.name,
                            names(&rt)
                        ));
                    }
                }
            }
        }
        // Nothing on a receiver that its sender did not send; each sender's texts in its order.
        for (r, node) in self.nodes.iter().enumerate() {
            for (s, sender) in self.nodes.iter().enumerate() {
                if r == s {
                    continue;
                }
                let conv = ConversationId::Direct(sender.user);
                let mut msgs = node
                    .store
                    .messages_before(&conv, None, 1_000_000)
                    .unwrap_or_default();
                msgs.reverse();
                let mut last = 0;
                for m in msgs.iter().filter(|m| m.sender == sender.user) {
                    match self.sent.get(&m.id) {
                        Some(st) if st.from == s && st.to == r => {
                            if st.index < last {
                                problems.push(format!(
                                    "{} shows {}'s {} out of its sender's order",
                                    node.name, sender.name, m.id
                                ));
                            }
                            last = last.max(st.index);
                        }
                        _ => problems.push(format!(
                            "{} holds {} as {}'s, which it never sent",
                            node.name, m.id, sender.name
                        )),
                    }
                }
            }
        }
        problems.extend(self.check_spaces());
        for p in problems {
            self.fail(p);
        }
        self.failures.clone()
    }
}

fn pending_name(p: &Pending) -> String {
    match p {
        // An invite code holds the space id, which hangs on unseeded device keys.
        Pending::Cmd(Cmd::SpaceJoin { .. }) => "cmd:SpaceJoin".into(),
        Pending::Cmd(c) => format!("cmd:{c:?}"),
        Pending::Input(i) => match i {
            Input::Envelopes(items) => {
                let ids: Vec<String> = items
                    .iter()
                    .map(|x| format!("{}:{}", x.via.name(), envelope_summary(&x.bytes)))
                    .collect();
                format!("env[{}]", ids.join(","))
            }
            Input::Signaling(s) => format!("sig:{}", s.as_str()),
            Input::Authenticated => "auth".into(),
            Input::AuthFailed { .. } => "auth-failed".into(),
            Input::Presence { status, .. } => format!("presence:{status:?}"),
            Input::ContactsSynced(v) => format!("synced:{}", v.len()),
            Input::OneTimeKeysLow { remaining } => format!("otk-low:{remaining}"),
            Input::Bundles { result, .. } => {
                format!("bundles:{}", result.as_ref().map_or(0, Vec::len))
            }
            Input::Published { result, .. } => format!("published:{:?}", result.as_ref().ok()),
            Input::Transmitted { id, outcome } => format!("transmitted:{id}:{outcome:?}"),
            Input::Connection { event, .. } => format!("conn:{}", conn_event_name(event)),
            Input::DownloadDone { .. } => "download-done".into(),
        },
    }
}

fn conn_event_name(e: &ConnectionEvent) -> &'static str {
    match e {
        ConnectionEvent::Offered { .. } => "offered",
        ConnectionEvent::Answered { .. } => "answered",
        ConnectionEvent::LocalCandidate { .. } => "candidate",
        ConnectionEvent::Progress => "progress",
        ConnectionEvent::Open => "open",
        ConnectionEvent::Hello { .. } => "hello",
        ConnectionEvent::Closed { .. } => "closed",
        ConnectionEvent::MediaOffered { .. } => "media_offered",
        ConnectionEvent::MediaAnswered { .. } => "media_answered",
        ConnectionEvent::MediaFailed { .. } => "media_failed",
        ConnectionEvent::RestartOffered { .. } => "restart_offered",
        ConnectionEvent::RestartAnswered { .. } => "restart_answered",
    }
}

fn media_failed(reason: &str) -> ConnectionEvent {
    ConnectionEvent::MediaFailed {
        reason: format!("sim: {reason}"),
    }
}

fn conn_req_name(r: &ConnectionRequest) -> &'static str {
    match r {
        ConnectionRequest::Offer { .. } => "offer",
        ConnectionRequest::Answer { .. } => "answer",
        ConnectionRequest::AcceptAnswer { .. } => "accept",
        ConnectionRequest::AddCandidate { .. } => "candidate",
        ConnectionRequest::Close { .. } => "close",
        ConnectionRequest::AddAudio { .. } => "add_audio",
        ConnectionRequest::AcceptMediaOffer { .. } => "media_offer",
        ConnectionRequest::AcceptMediaAnswer { .. } => "media_answer",
        ConnectionRequest::AcceptRestartOffer { .. } => "restart_offer",
        ConnectionRequest::AcceptRestartAnswer { .. } => "restart_answer",
    }
}

/// An envelope's id and Olm type, without its (random) ciphertext.
fn envelope_summary(bytes: &[u8]) -> String {
    match dopus_proto::peer::PeerEnvelope::from_json(bytes) {
        Ok(e) => format!("{}/{:?}", e.id.as_uuid(), e.olm_type),
        Err(_) => format!("malformed({})", bytes.len()),
    }
}

/// A fresh account for node `i` of the run `seed`.
fn make_node(seed: u64, i: usize) -> SimNode {
    let mut rng = SeededRandom::new(seed.wrapping_mul(31).wrapping_add(i as u64));
    let mut key = [0u8; 32];
    dopus_core::identity::pickle::SecureRandom::fill_bytes(&mut rng, &mut key);
    let identity = Identity::generate(&mut rng).unwrap_or_else(|_| unreachable_identity());
    let mut dev = [0u8; 16];
    dopus_core::identity::pickle::SecureRandom::fill_bytes(&mut rng, &mut dev);
    let device = Device::new(&identity, DeviceId::from_random(dev), Timestamp(T0));
    let pk = PickleKey::from_bytes(key);
    let name = ["alice", "bob", "carol", "dave", "erin", "frank"]
        .get(i)
        .map_or_else(|| format!("node{i}"), |s| (*s).to_owned());
    let certificate_json = device
        .certificate()
        .and_then(serde_json_cert)
        .unwrap_or_default();
    let record = AccountRecord {
        user_id: identity.user_id(),
        identity_pickle: Pickle::new(identity.pickle(&pk, &mut rng)),
        device_id: device.device_id().clone(),
        device_keys: device.keys(),
        account_pickle: Pickle::new(device.pickle(&pk, &mut rng)),
        certificate_json,
        display_name: name.clone(),
        created_at: Timestamp(T0),
    };
    let mut store = MemoryStore::new();
    let _ = store.apply_one(Change::SaveAccount(record));
    SimNode {
        name,
        user: identity.user_id(),
        device: device.device_id().clone(),
        key,
        store,
        machine: None,
        up: false,
        incarnation: 0,
        inbox: Vec::new(),
        wake_pending: false,
        timer_gen: 0,
        timer_at: None,
        sig_gen: 0,
        sig_up: false,
        sig_cut: false,
        restored: false,
        status: dopus_proto::signaling::Status::Online,
        crash_armed: None,
        reports: BTreeMap::new(),
        links: BTreeMap::new(),
        backups: Vec::new(),
        shown: BTreeSet::new(),
        received_texts: 0,
        stats: NodeStats::default(),
    }
}

fn serde_json_cert(c: &dopus_proto::bundle::DeviceCertificate) -> Option<String> {
    serde_json::to_string(c).ok()
}

#[allow(clippy::panic, reason = "a seeded generator always yields an identity")]
fn unreachable_identity() -> Identity {
    panic!("identity generation failed")
}

/// Runs one user command on a machine.
fn run_cmd(
    m: &mut NodeMachine,
    store: &mut MemoryStore,
    rng: &mut Rng,
    now: Timestamp,
    peers: &[UserId],
    cmd: Cmd,
    notes: &mut Vec<spaces::Note>,
) -> Result<(), String> {
    use dopus_core::machine::CommandError;
    let me = m.me();
    let ok_or_user = |r: Result<(), CommandError>| match r {
        Ok(())
        | Err(CommandError::Chat(_) | CommandError::Contact(_) | CommandError::NotAContact) => {
            Ok(())
        }
        Err(CommandError::UnknownMessage) => Ok(()),
        Err(e) => Err(format!("command: {e}")),
    };
    let own = |store: &MemoryStore, peer: UserId| -> Vec<dopus_core::store::Message> {
        store
            .messages_before(&ConversationId::Direct(peer), None, 50)
            .unwrap_or_default()
            .into_iter()
            .filter(|x| x.sender == me && !x.deleted)
            .collect()
    };
    match cmd {
        Cmd::Send { peer, count } => {
            let peer = peers[peer];
            let texts = (0..count)
                .map(|_| {
                    let word = rng.next_u64();
                    dopus_core::chat::Draft::new(format!("{PLAINTEXT_MARKER} {word:016x}"))
                })
                .collect();
            ok_or_user(m.send_texts(now, store, peer, texts).map(|_| ()))
        }
        Cmd::Edit { peer } => {
            let mine = own(store, peers[peer]);
            let Some(target) = rng.pick(&mine).map(|x| x.id) else {
                return Ok(());
            };
            let body = format!("{PLAINTEXT_MARKER} edit {:08x}", rng.next_u64() as u32);
            ok_or_user(m.edit(now, store, target, body).map(|_| ()))
        }
        Cmd::Delete { peer } => {
            let mine = own(store, peers[peer]);
            let Some(target) = rng.pick(&mine).map(|x| x.id) else {
                return Ok(());
            };
            ok_or_user(m.delete(now, store, target).map(|_| ()))
        }
        Cmd::React { peer } => {
            let all: Vec<_> = store
                .messages_before(&ConversationId::Direct(peers[peer]), None, 30)
                .unwrap_or_default()
                .into_iter()
                .filter(|x| !x.deleted)
                .collect();
            let Some(target) = rng.pick(&all).map(|x| x.id) else {
                return Ok(());
            };
            let emoji = ["👍", "🎉", "👀"][rng.below(3) as usize].to_owned();
            let add = rng.chance(700);
            ok_or_user(m.react(now, store, target, emoji, add).map(|_| ()))
        }
        Cmd::Read { peer } => {
            let peer = peers[peer];
            let newest = store
                .messages_before(&ConversationId::Direct(peer), None, 1)
                .unwrap_or_default();
            let Some(up_to) = newest.first().map(|x| x.id) else {
                return Ok(());
            };
            ok_or_user(m.mark_read(now, store, peer, up_to))
        }
        Cmd::Typing { peer } => {
            let active = rng.chance(700);
            ok_or_user(m.typing(now, store, peers[peer], active))
        }
        Cmd::AddContact { peer } => {
            ok_or_user(m.add_contact(now, store, peers[peer], None).map(|_| ()))
        }
        Cmd::Request { peer } => ok_or_user(
            m.contact_request(now, store, peers[peer], None, Some("hi".into()))
                .map(|_| ()),
        ),
        Cmd::Accept { peer } => {
            ok_or_user(m.contact_answer(now, store, peers[peer], true).map(|_| ()))
        }
        Cmd::Status(status) => {
            m.set_status(status);
            Ok(())
        }
        Cmd::SpaceCreate
        | Cmd::SpaceInvite { .. }
        | Cmd::SpaceJoin { .. }
        | Cmd::ChannelSend { .. }
        | Cmd::SpaceKick { .. }
        | Cmd::SpaceMod { .. }
        | Cmd::SpaceRename => spaces::run_cmd(m, store, rng, now, peers, cmd, notes),
        Cmd::VoiceJoin | Cmd::VoiceLeave => voice::run_cmd(m, store, now, cmd),
        Cmd::RelayOnly(on) => ok_or_user(
            m.put_settings(
                store,
                dopus_core::machine::SettingsPatch {
                    relay_only: Some(on),
                    ..Default::default()
                },
            )
            .map(|_| ()),
        ),
        Cmd::ReadReceipts(on) => ok_or_user(
            m.put_settings(
                store,
                dopus_core::machine::SettingsPatch {
                    read_receipts: Some(on),
                    ..Default::default()
                },
            )
            .map(|_| ()),
        ),
    }
}

/// An address for node tests.
pub fn address(node: &SimNode) -> PeerAddress {
    PeerAddress {
        user: node.user,
        device: node.device.clone(),
    }
}
