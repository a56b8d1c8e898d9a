//! The actor: one task owns the node machine and the store.
//!
//! Everything that happens to the node arrives here as a [`Msg`] on one channel: inputs from
//! the signaling client and the connection tasks, jobs from API handlers (commands that write,
//! queries that read). The actor drains what is waiting into one batch, runs it inside one
//! store transaction (group commit comes from the draining), lets the machine prepare what is
//! due, commits, and only then answers the jobs and performs the machine's outputs: transmits
//! to the connection tasks and the signaling client, requests to the server, connection
//! requests, events to the UI. Persist-before-send follows from that order.
//!
//! The actor runs on a thread of its own (SQLite is synchronous), so its store work never
//! holds up the tasks that do I/O on the node's async runtime; it reaches them only by message.

use super::NodeOptions;
use super::connections;
use super::files::{self as file_task, FilesMsg, FilesTx};
use super::mailbox::{ActorTx, ConnCmd, ConnEntry, Cx, Msg, Reply, Vx, report_failed};
use super::signaling::Server;
use super::views::{self, Live};
use crate::account::{self, OsRandom};
use crate::api::dto;
use dopus_core::e2e::OlmMachine;
use dopus_core::identity::{Device, Identity};
use dopus_core::machine::{
    ConnectionRequest, Event, Input, NodeMachine, Output, SignalingRequest, Transmit,
};
use dopus_core::outbox::Route;
use dopus_core::store::{AccountRecord, Store, StoreError};
use dopus_rtc::DtlsIdentity;
use dopus_store::SqliteStore;
use dopus_types::{Timestamp, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Most messages taken into one batch.
const MAX_BATCH: usize = 1024;

/// Everything the actor owns.
pub struct Actor {
    machine: NodeMachine,
    store: SqliteStore,
    identity: Arc<Identity>,
    live: Live,
    events: broadcast::Sender<Arc<str>>,
    tx: ActorTx,
    rt: tokio::runtime::Handle,
    conns: BTreeMap<UserId, ConnEntry>,
    server: Option<Server>,
    generation: u64,
    dtls: Option<DtlsIdentity>,
    files: FilesTx,
    /// Signal only relayed candidates (`--relay-only`): contacts never learn our address.
    relay_only: bool,
}

/// Builds the machine of the account in `store`.
fn build_machine(
    store: &SqliteStore,
    account: AccountRecord,
    device: Option<Device>,
) -> anyhow::Result<NodeMachine> {
    let key = account::core_pickle_key(store);
    let device = match device {
        Some(d) => d,
        None => Device::from_pickle(account.account_pickle.as_str(), &key)?,
    };
    let olm = OlmMachine::new(device, key, Box::new(OsRandom));
    Ok(NodeMachine::new(store, account, olm, Box::new(OsRandom))?)
}

/// Starts the actor on a thread of its own; answers its mailbox.
pub fn spawn(
    mut store: SqliteStore,
    account: AccountRecord,
    fresh: Option<(Identity, Device)>,
    options: NodeOptions,
    events: broadcast::Sender<Arc<str>>,
    dtls: Option<DtlsIdentity>,
    blobs: std::path::PathBuf,
) -> anyhow::Result<ActorTx> {
    let key = account::core_pickle_key(&store);
    let (identity, device) = match fresh {
        Some((i, d)) => (i, Some(d)),
        None => (
            Identity::from_pickle(account.identity_pickle.as_str(), &key)?,
            None,
        ),
    };
    // Launch options are saved into the settings.
    let mut settings = dopus_core::machine::Settings::load(&store)?;
    if let Some(server) = &options.server {
        settings.server_url = Some(server.clone());
    }
    if let Some(stun) = &options.stun
        && !settings.ice_servers.contains(stun)
    {
        settings.ice_servers.push(stun.clone());
    }
    if options.server.is_some() || options.stun.is_some() {
        store.apply(settings.changes())?;
    }
    let machine = build_machine(&store, account, device)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Handle::current();
    let files = file_task::start(
        blobs,
        tx.clone(),
        events.clone(),
        file_task::startup_transfers(&store)?,
        machine.me(),
    )?;
    let actor = Actor {
        machine,
        store,
        identity: Arc::new(identity),
        live: Live::default(),
        events,
        tx: tx.clone(),
        rt,
        conns: BTreeMap::new(),
        server: None,
        generation: 0,
        dtls,
        files,
        relay_only: options.relay_only,
    };
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("dopus-actor".into())
        .spawn(move || local.block_on(actor.run(rx)))?;
    Ok(tx)
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        super::maintenance::start(&self.rt, self.tx.clone(), &self.store);
        self.restart_signaling().await;
        let mut idle_deadline: Option<Timestamp> = None;
        self.batch(Vec::new()).await;
        loop {
            let now = account::now();
            let wait = self.machine.poll_timeout().map(|t| {
                // A deadline that a batch without input did not move is not retried at once:
                // the machine waits for something else (it must not spin).
                let floor = if idle_deadline == Some(t) { 250 } else { 0 };
                Duration::from_millis(t.as_millis().saturating_sub(now.as_millis()).max(floor))
            });
            let first = match wait {
                Some(d) => tokio::select! {
                    m = rx.recv() => m.map(Some),
                    () = tokio::time::sleep(d) => Some(None),
                },
                None => rx.recv().await.map(Some),
            };
            let Some(first) = first else { break };
            let mut msgs: Vec<Msg> = first.into_iter().collect();
            idle_deadline = if msgs.is_empty() {
                self.machine.poll_timeout()
            } else {
                None
            };
            while msgs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            if !self.batch(msgs).await {
                break;
            }
        }
        tracing::debug!("node actor stopped");
    }

    /// Runs one batch; `false` when the actor must stop.
    async fn batch(&mut self, msgs: Vec<Msg>) -> bool {
        let now = account::now();
        let mut inside = Vec::with_capacity(msgs.len());
        let mut queries = Vec::new();
        let mut reroutes = Vec::new();
        let mut shutdown = None;
        let mut connection_events = Vec::new();
        for m in msgs {
            match m {
                Msg::Input(input) => {
                    self.note_input(&input);
                    inside.push(Ok(input));
                }
                Msg::ServerInput(generation, input) => {
                    if generation == self.generation {
                        inside.push(Ok(input));
                    }
                }
                Msg::Job(job) => inside.push(Err(job)),
                Msg::Query(q) => queries.push(q),
                Msg::Reroute(t) => reroutes.push(t),
                Msg::Relays(generation, relays) => {
                    if generation == self.generation {
                        self.live.relays = relays;
                        // Open connections get this login's credentials too: their allocation
                        // outlives the credentials it was made with (the REST name expires),
                        // and the allocation after that needs valid ones.
                        let servers = self.rtc_config().ice_servers;
                        for c in self.conns.values() {
                            let _ = c.tx.send(ConnCmd::UpdateIceServers(servers.clone()));
                        }
                    }
                }
                Msg::Retrying(generation, ms) => {
                    if generation == self.generation {
                        self.broadcast(&dto::Event::Signaling {
                            state: dto::SignalingState::Disconnected,
                            retry_in_ms: Some(ms),
                        });
                    }
                }
                Msg::Diagnostics(user, d) => {
                    self.live.diagnostics.insert(user, d);
                    connection_events.push(user);
                }
                Msg::Shutdown(done) => shutdown = Some(done),
                Msg::PeerHandle(peer, reply) => {
                    if let Some(c) = self.conns.get(&peer) {
                        let _ = c.tx.send(ConnCmd::Handle(reply));
                    }
                }
            }
        }
        let listening = self.events.receiver_count() > 0;
        self.machine.set_detailed_events(listening);
        let mut replies: Vec<Reply> = Vec::new();
        let mut restart = false;
        let Actor {
            machine,
            store,
            live,
            ..
        } = self;
        let result = store.try_batch(|store| {
            for item in inside {
                match item {
                    Ok(input) => machine.handle(now, input, store)?,
                    Err(job) => {
                        let mut cx = Cx {
                            now,
                            machine,
                            store,
                            live,
                            restart_signaling: false,
                            failed: false,
                        };
                        replies.push(job(&mut cx));
                        restart |= cx.restart_signaling;
                        if cx.failed {
                            return Err(dopus_core::machine::MachineError::Store(
                                StoreError::Invalid("a command's store write failed"),
                            ));
                        }
                    }
                }
            }
            machine.prepare(now, store)
        });
        let committed = matches!(result, Ok(Ok(())));
        for reply in replies {
            reply(committed);
        }
        if committed {
            while let Some(output) = self.machine.poll_output() {
                self.perform(output);
            }
        } else {
            match &result {
                Ok(Err(e)) => tracing::warn!(error = %e, "a batch failed; rolled back"),
                Err(e) => tracing::warn!(error = %e, "a batch could not commit; rolled back"),
                Ok(Ok(())) => {}
            }
            self.rebuild();
            // The new machine knows nothing of the server's state: log in again.
            restart = true;
        }
        for t in reroutes {
            self.via_server(t);
        }
        for user in connection_events {
            self.emit_connection(user);
        }
        let vx = Vx {
            machine: &self.machine,
            store: &self.store,
            live: &self.live,
            conns: &self.conns,
        };
        for q in queries {
            q(&vx);
        }
        if restart {
            self.restart_signaling().await;
        }
        if let Some(done) = shutdown {
            self.shutdown().await;
            let _ = done.send(());
            return false;
        }
        true
    }

    /// After a failed batch: what the machine held only in memory may be ahead of the store;
    /// a new machine is built from the store (retries recover what was lost), and none of the
    /// old one's outputs are performed.
    fn rebuild(&mut self) {
        while self.machine.poll_output().is_some() {}
        let account = match self.store.account() {
            Ok(Some(a)) => a,
            other => {
                tracing::error!(?other, "cannot reload the account after a failed batch");
                return;
            }
        };
        match build_machine(&self.store, account, None) {
            Ok(mut m) => {
                m.set_detailed_events(self.events.receiver_count() > 0);
                self.machine = m;
                // The new machine knows no connections and no server state: start over.
                for (_, c) in std::mem::take(&mut self.conns) {
                    let _ = c.tx.send(ConnCmd::Close);
                }
                self.live.diagnostics.clear();
            }
            Err(e) => tracing::error!(error = %e, "cannot rebuild the node machine"),
        }
    }

    /// Bookkeeping of connection tasks that ended.
    fn note_input(&mut self, input: &Input) {
        if let Input::Connection {
            peer,
            conn,
            event: dopus_core::machine::ConnectionEvent::Closed { .. },
        } = input
            && self.conns.get(peer).is_some_and(|c| &c.conn == conn)
        {
            self.conns.remove(peer);
        }
    }

    fn perform(&mut self, output: Output) {
        match output {
            Output::Transmit(t) => self.transmit(t),
            Output::Signaling(req) => self.signaling_request(req),
            Output::Connection(req) => self.connection_request(req),
            Output::Event(e) => self.emit(e),
            Output::Transfer(req) => self.files.send(FilesMsg::Request(req)),
            Output::Call(req) => self.call_request(req),
            Output::Voice(req) => {
                let tx = self.tx.clone();
                let ask: super::calls::AskHandle =
                    Arc::new(move |peer, reply| tx.send(Msg::PeerHandle(peer, reply)).is_ok());
                self.live.voice.request(&self.rt, &ask, req);
            }
        }
    }

    fn transmit(&mut self, t: Transmit) {
        match t.route {
            Route::Direct => match self.conns.get(&t.peer) {
                Some(c) => {
                    if let Err(mpsc::error::SendError(ConnCmd::Send(t))) =
                        c.tx.send(ConnCmd::Send(Box::new(t)))
                    {
                        self.direct_failed(*t);
                    }
                }
                None => self.direct_failed(t),
            },
            Route::Server => self.via_server(t),
        }
    }

    fn direct_failed(&mut self, t: Transmit) {
        if t.fallback {
            self.via_server(Transmit {
                route: Route::Server,
                ..t
            });
        } else {
            report_failed(&self.tx, &t);
        }
    }

    fn via_server(&mut self, t: Transmit) {
        match &mut self.server {
            Some(server) => server.transmit(t, &self.rt, &self.tx),
            None => report_failed(&self.tx, &t),
        }
    }

    fn signaling_request(&mut self, req: SignalingRequest) {
        match &self.server {
            Some(server) => server.request(req, &self.rt, &self.tx),
            None => {
                // No server: answer what waits for an answer, so nothing waits forever.
                let input = match req {
                    SignalingRequest::FetchBundle { peer } => Some(Input::Bundles {
                        peer,
                        result: Err("no signaling server is configured".into()),
                    }),
                    SignalingRequest::PublishBundle { bundle } => Some(Input::Published {
                        bundle,
                        result: Err("no signaling server is configured".into()),
                    }),
                    _ => None,
                };
                if let Some(input) = input {
                    let _ = self.tx.send(Msg::Input(input));
                }
            }
        }
    }

    fn connection_request(&mut self, req: ConnectionRequest) {
        match req {
            ConnectionRequest::Offer { peer, conn } => {
                self.replace_conn(peer);
                let entry = connections::offer(
                    &self.rt,
                    self.tx.clone(),
                    self.files.clone(),
                    self.rtc_config(),
                    peer,
                    conn,
                );
                self.conns.insert(peer, entry);
            }
            ConnectionRequest::Answer { peer, conn, sdp } => {
                self.replace_conn(peer);
                let entry = connections::answer(
                    &self.rt,
                    self.tx.clone(),
                    self.files.clone(),
                    self.rtc_config(),
                    peer,
                    conn,
                    sdp,
                );
                self.conns.insert(peer, entry);
            }
            ConnectionRequest::AcceptAnswer { peer, conn, sdp } => {
                self.to_conn(&peer, &conn, ConnCmd::AcceptAnswer(sdp));
            }
            ConnectionRequest::AddAudio { peer, conn } => {
                self.to_conn(&peer, &conn, ConnCmd::AddAudio);
            }
            ConnectionRequest::AcceptMediaOffer { peer, conn, sdp } => {
                self.to_conn(&peer, &conn, ConnCmd::AcceptMediaOffer(sdp));
            }
            ConnectionRequest::AcceptMediaAnswer { peer, conn, sdp } => {
                self.to_conn(&peer, &conn, ConnCmd::AcceptMediaAnswer(sdp));
            }
            ConnectionRequest::AcceptRestartOffer { peer, conn, sdp } => {
                self.to_conn(&peer, &conn, ConnCmd::AcceptRestartOffer(sdp));
            }
            ConnectionRequest::AcceptRestartAnswer { peer, conn, sdp } => {
                self.to_conn(&peer, &conn, ConnCmd::AcceptRestartAnswer(sdp));
            }
            ConnectionRequest::AddCandidate {
                peer,
                conn,
                candidate,
            } => self.to_conn(&peer, &conn, ConnCmd::AddCandidate(candidate)),
            ConnectionRequest::Close { peer, conn } => {
                if self
                    .conns
                    .get(&peer)
                    .is_some_and(|c| conn.as_ref().is_none_or(|x| *x == c.conn))
                    && let Some(c) = self.conns.remove(&peer)
                {
                    let _ = c.tx.send(ConnCmd::Close);
                }
            }
        }
    }

    /// Starts or stops a call's media task.
    fn call_request(&mut self, req: dopus_core::machine::CallRequest) {
        let outgoing = match &req {
            dopus_core::machine::CallRequest::Start { call, .. }
            | dopus_core::machine::CallRequest::Stop { call, .. } => {
                self.machine.call(call).is_some_and(|c| c.outgoing)
            }
        };
        let tx = self.tx.clone();
        let ask: super::calls::AskHandle =
            Arc::new(move |peer, reply| tx.send(Msg::PeerHandle(peer, reply)).is_ok());
        self.live.calls.request(&self.rt, &ask, req, outgoing);
    }

    fn replace_conn(&mut self, peer: UserId) {
        if let Some(old) = self.conns.remove(&peer) {
            let _ = old.tx.send(ConnCmd::Close);
        }
        self.live.diagnostics.remove(&peer);
    }

    fn to_conn(&self, peer: &UserId, conn: &str, cmd: ConnCmd) {
        if let Some(c) = self.conns.get(peer)
            && c.conn == conn
        {
            let _ = c.tx.send(cmd);
        }
    }

    /// The connection configuration from the settings.
    fn rtc_config(&self) -> dopus_rtc::RtcConfig {
        let mut cfg = dopus_rtc::RtcConfig {
            include_loopback: true,
            ..dopus_rtc::RtcConfig::default()
        };
        cfg.ice_servers = ice_servers(self.machine.settings())
            .iter()
            .filter_map(|u| dopus_rtc::IceServer::parse(u).ok())
            .collect();
        // The signaling server's relays, with this login's credentials.
        cfg.ice_servers.extend(self.live.relays.iter().cloned());
        // Relay-only signals relayed candidates only; with no relay known yet the connection
        // fails at once (messages go through the server) rather than reveal our addresses.
        cfg.relay_only = self.relay_only || self.machine.settings().relay_only;
        cfg.dtls_identity = self.dtls.clone();
        cfg.blob_in_flight = super::files::blob_in_flight();
        cfg
    }

    /// Starts (or replaces) the signaling client for the configured server.
    async fn restart_signaling(&mut self) {
        self.generation += 1;
        if let Some(old) = self.server.take() {
            old.shutdown().await;
        }
        let _ = self.tx.send(Msg::Input(Input::Signaling(
            dopus_core::machine::SignalingState::Disconnected,
        )));
        self.live.server = self.machine.settings().server_url.is_some();
        let Some(url) = self.machine.settings().server_url.clone() else {
            return;
        };
        let _guard = self.rt.enter();
        self.server = Some(Server::start(
            &url,
            self.machine.account().device_id.clone(),
            self.identity.clone(),
            self.machine.status(),
            self.generation,
            &self.rt,
            self.tx.clone(),
        ));
    }

    async fn shutdown(&mut self) {
        self.files.send(FilesMsg::Shutdown);
        for (_, c) in std::mem::take(&mut self.conns) {
            let _ = c.tx.send(ConnCmd::Close);
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    fn broadcast(&self, event: &dto::Event) {
        match serde_json::to_string(event) {
            Ok(s) => {
                let _ = self.events.send(Arc::from(s));
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an event"),
        }
    }

    fn emit_connection(&self, user: UserId) {
        if self.events.receiver_count() == 0 {
            return;
        }
        self.broadcast(&dto::Event::Connection {
            user_id: (&user).into(),
            connection: views::connection(&self.machine, &self.live, &user),
        });
    }

    /// Shows a machine event to whoever follows the events.
    fn emit(&self, event: Event) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let me = self.machine.me();
        let e = match event {
            Event::MessageAdded(m) => dto::Event::Message {
                message: dto::Message::from_record(&m, &[], &me),
            },
            Event::MessageUpdated(id) => match views::message_by_id(&self.store, &me, &id) {
                Ok(message) => dto::Event::MessageUpdated { message },
                Err(_) => return,
            },
            Event::MessageState {
                id,
                conversation,
                state,
            } => dto::Event::message_state(&id, &conversation, state),
            Event::Typing {
                user,
                active,
                channel,
            } => dto::Event::Typing {
                user_id: (&user).into(),
                active,
                channel: channel.map(|c| c.to_string()),
            },
            Event::ContactChanged(user) => {
                match views::contact_by_id(&self.store, &self.machine, &self.live, &user) {
                    Ok(c) => dto::Event::Contact {
                        contact: Box::new(c),
                    },
                    Err(_) => return,
                }
            }
            Event::ContactRemoved(user) => dto::Event::ContactRemoved {
                user_id: (&user).into(),
            },
            Event::Presence { user, status } => dto::Event::Presence {
                user_id: (&user).into(),
                presence: dto::Presence::own(status),
            },
            Event::Signaling(state) => dto::Event::Signaling {
                state: views::signaling_state(state),
                retry_in_ms: None,
            },
            Event::Connection(user) => {
                // The pair and RTT are known once the channel is open: fetch them.
                if let Some(c) = self.conns.get(&user) {
                    let _ = c.tx.send(ConnCmd::ReportDiagnostics);
                }
                dto::Event::Connection {
                    user_id: (&user).into(),
                    connection: views::connection(&self.machine, &self.live, &user),
                }
            }
            Event::Verification(user) => dto::Event::Verification {
                user_id: (&user).into(),
                verification: views::verification(&self.machine.verification(&user)),
            },
            Event::SessionReset { user, resent } => dto::Event::SessionReset {
                user_id: (&user).into(),
                resent: resent as u64,
            },
            Event::SpaceChanged(space) => dto::Event::Space {
                space: Box::new(views::space(&self.machine, &self.store, &space)),
            },
            Event::ChannelWaiting(channel) => {
                match super::spaces::channel_waiting(&self.store, &channel) {
                    Ok(waiting) => dto::Event::ChannelWaiting {
                        channel: channel.to_string(),
                        waiting,
                    },
                    Err(_) => return,
                }
            }
            Event::Call(id) => match self.machine.call(&id) {
                Some(c) => dto::Event::Call {
                    call: Box::new(views::call(&self.machine, &c, &self.live, account::now())),
                },
                None => return,
            },
            Event::Voice(space) => {
                match super::voice_api::space_voice(&self.machine, &self.live, &space) {
                    Some(voice) => dto::Event::Voice {
                        voice: Box::new(voice),
                    },
                    None => return,
                }
            }
            Event::Transfer(id) => match self.store.transfer(&id) {
                Ok(Some(t)) => dto::Event::Transfer {
                    transfer: Box::new(dto::Transfer::from_record(&t)),
                },
                _ => return,
            },
        };
        self.broadcast(&e);
    }
}

/// The ICE servers to use: the configured ones, or else the signaling server's own STUN
/// responder on the standard port, so a deployment needs no third-party STUN server.
pub fn ice_servers(settings: &dopus_core::machine::Settings) -> Vec<String> {
    if !settings.ice_servers.is_empty() {
        return settings.ice_servers.clone();
    }
    settings
        .server_url
        .as_deref()
        .and_then(stun_from_server_url)
        .into_iter()
        .collect()
}

/// `stun:<host>:3478` for a `ws://host:port/…` or `wss://…` server URL.
fn stun_from_server_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        format!("[{}]", v6.split(']').next()?)
    } else {
        authority.split(':').next()?.to_owned()
    };
    (!host.is_empty()).then(|| format!("stun:{host}:3478"))
}

#[cfg(test)]
mod tests {
    use super::stun_from_server_url;

    #[test]
    fn stun_defaults_to_the_signaling_host() {
        assert_eq!(
            stun_from_server_url("wss://signal.example.org/ws").as_deref(),
            Some("stun:signal.example.org:3478")
        );
        assert_eq!(
            stun_from_server_url("ws://127.0.0.1:7400").as_deref(),
            Some("stun:127.0.0.1:3478")
        );
        assert_eq!(
            stun_from_server_url("ws://[::1]:7400/ws").as_deref(),
            Some("stun:[::1]:3478")
        );
        assert_eq!(stun_from_server_url("http://x"), None);
    }
}
