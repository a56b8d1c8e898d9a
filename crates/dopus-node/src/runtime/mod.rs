//! The node runtime: `discordopus run`, `up` and `demo`.
//!
//! Task topology (one process):
//!
//! ```text
//!  HTTP/WS clients ──> axum (local API) ──┐
//!  signaling client events ──> net task ──┼──> Node { Mutex<Phase> } ──> store (SQLCipher)
//!  peer connections (str0m) ──> peer tasks┘        │
//!  outbox timer ──> pump task ─────────────────────┘──> broadcast<events> ──> UI / `events`
//! ```
//!
//! Every task works on the unlocked state through one `tokio::sync::Mutex`, holding it only for
//! in-memory work and short synchronous store transactions, never across network awaits. The
//! core (chat logic, Olm) is sans-IO and runs under that lock; sending happens after the lock is
//! released, and only after the state it depends on has been committed (persist-before-send).

mod combine;
mod deliver;
mod demo;
pub mod json;
mod maintenance;
mod net;
mod peers;
mod ready;
mod recovery;
mod verify;

use crate::api;
use crate::api::error::ApiError;
use crate::apifile::{API_FILE_VERSION, ApiFile};
use crate::cli::{DemoArgs, RunArgs};
use crate::output::Output;
use crate::{account, passphrase, paths};
use anyhow::Context;
use base64::Engine as _;
use dopus_proto::signaling::Status;
use dopus_store::SqliteStore;
use dopus_types::UserId;
use ready::Ready;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard, Notify, broadcast};

pub use ready::Settings;

/// How `run` presents itself.
#[derive(Debug, Clone, Copy)]
pub enum Launch {
    /// `discordopus run`: headless, print the API address.
    Headless,
    /// `discordopus up`: print the UI URL and try to open a browser.
    Ui {
        /// Try to open a browser.
        open_browser: bool,
    },
}

/// Where the node stands.
enum Phase {
    /// No store yet: the UI offers to create an identity.
    NoIdentity,
    /// A store exists and waits for its passphrase.
    Locked,
    /// Unlocked and running.
    Ready(Box<Ready>),
}

/// Options fixed at launch.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--server`, overriding (and saved into) the settings.
    pub server: Option<String>,
    /// An extra STUN server for this run (the demo's embedded one).
    pub stun: Option<String>,
}

/// A running node: its phase behind one lock, its event channel and its wake-ups.
pub struct Node {
    dir: PathBuf,
    options: NodeOptions,
    events: broadcast::Sender<Value>,
    phase: Mutex<Phase>,
    /// Wakes the outbox pump (new entry, channel opened, presence changed).
    pump: Notify,
    /// One lock per peer, held from sealing envelopes for that peer until they are handed to a
    /// transport, so envelopes leave in the order their Olm messages were made (see
    /// `deliver::send_lock`).
    send_locks: std::sync::Mutex<std::collections::HashMap<UserId, Arc<Mutex<()>>>>,
    /// `POST /conversations/{id}/messages` (and `…/batch`) calls waiting for the lock, done together
    /// (`combine`).
    sends: combine::Combiner<ready::SendTexts, Result<Vec<Value>, ApiError>>,
    /// Delivered receipts waiting to be merged and sent (`deliver::RECEIPT_DELAY`).
    held_receipts: std::sync::Mutex<Vec<dopus_core::chat::Outgoing>>,
    /// Handle to ourselves for spawning tasks from `&self` methods.
    me: std::sync::Weak<Node>,
    /// The DTLS certificate all our peer connections share (made once at unlock).
    dtls: std::sync::OnceLock<dopus_rtc::DtlsIdentity>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A partial contact update (`PATCH /contacts/{id}`).
#[derive(Debug, Deserialize)]
pub struct ContactPatch {
    /// New name.
    pub display_name: Option<String>,
    /// Mark verified (after comparing the safety number) or not.
    pub verified: Option<bool>,
    /// Block or unblock.
    pub blocked: Option<bool>,
}

/// A partial settings update (`PUT /settings`).
#[derive(Debug, Deserialize)]
pub struct SettingsPatch {
    /// The signaling server URL.
    pub server_url: Option<String>,
    /// STUN/TURN URLs.
    pub ice_servers: Option<Vec<String>>,
    /// Send read receipts.
    pub read_receipts: Option<bool>,
    /// UI theme.
    pub theme: Option<String>,
}

impl Node {
    /// Serializes sending to `peer`: hold the guard from sealing until every envelope sealed
    /// under it is handed to a transport. Olm messages must reach the peer roughly in the order
    /// they were made: the receiver keeps only 5 receiving chains and 40 skipped keys per chain,
    /// so an envelope sealed early but sent after many newer ones (receipts answered while a
    /// window was still being relayed) could no longer be decrypted there.
    pub(crate) async fn send_lock(&self, peer: UserId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .send_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(peer).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// A node for `dir`, locked or without identity.
    pub fn new(dir: PathBuf, options: NodeOptions) -> Arc<Node> {
        let phase = if SqliteStore::exists(&dir) {
            Phase::Locked
        } else {
            Phase::NoIdentity
        };
        let (events, _) = broadcast::channel(1024);
        Arc::new_cyclic(|me| Node {
            dir,
            options,
            events,
            phase: Mutex::new(phase),
            pump: Notify::new(),
            send_locks: std::sync::Mutex::new(std::collections::HashMap::new()),
            sends: combine::Combiner::default(),
            held_receipts: std::sync::Mutex::new(Vec::new()),
            me: me.clone(),
            dtls: std::sync::OnceLock::new(),
        })
    }

    /// The event channel (the `/events` WebSocket subscribes to it).
    pub fn events(&self) -> &broadcast::Sender<Value> {
        &self.events
    }

    pub(crate) fn emit(&self, event: Value) {
        let _ = self.events.send(event);
    }

    /// Whether anyone follows the events (a `/events` WebSocket is open). Events that cost a
    /// store read to build (messages, delivery states) are not built for nobody: a node with no
    /// UI attached does none of that work. One that subscribes later loads the current state
    /// over REST first, as the UI does on every (re)connect.
    pub(crate) fn listening(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub(crate) fn arc(&self) -> Option<Arc<Node>> {
        self.me.upgrade()
    }

    /// Locks the phase and gives the unlocked state, or `locked`.
    async fn ready(&self) -> Result<ReadyGuard<'_>, ApiError> {
        let guard = self.phase.lock().await;
        if matches!(*guard, Phase::Ready(_)) {
            Ok(ReadyGuard(guard))
        } else {
            Err(ApiError::locked())
        }
    }

    /// `GET /status`.
    pub async fn status(&self) -> Value {
        let phase = self.phase.lock().await;
        match &*phase {
            Phase::NoIdentity => {
                json!({ "state": "no_identity", "version": env!("CARGO_PKG_VERSION"), "signaling": { "url": Value::Null, "state": "disconnected" } })
            }
            Phase::Locked => {
                json!({ "state": "locked", "version": env!("CARGO_PKG_VERSION"), "signaling": { "url": Value::Null, "state": "disconnected" } })
            }
            Phase::Ready(r) => json!({
                "state": "ready",
                "version": env!("CARGO_PKG_VERSION"),
                "user_id": r.account.user_id.to_string(),
                "display_name": r.account.display_name,
                "device_id": r.account.device_id.to_string(),
                "signaling": { "url": r.settings.server_url, "state": r.signaling_state },
            }),
        }
    }

    /// `POST /identity`.
    pub async fn create_identity(&self, name: String, pass: String) -> Result<Value, ApiError> {
        let mut phase = self.phase.lock().await;
        if !matches!(*phase, Phase::NoIdentity) {
            return Err(ApiError::conflict("an identity already exists"));
        }
        if pass.is_empty() {
            return Err(ApiError::bad_request("the passphrase must not be empty"));
        }
        let dir = self.dir.clone();
        let (store, record, identity, device) =
            tokio::task::spawn_blocking(move || account::create(&dir, &name, &pass))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let ready = Ready::start(store, record, Some((identity, device)), &self.options)
            .map_err(ApiError::internal)?;
        *phase = Phase::Ready(Box::new(ready));
        drop(phase);
        self.after_unlock().await
    }

    /// `POST /unlock`.
    pub async fn unlock(&self, pass: String) -> Result<Value, ApiError> {
        let mut phase = self.phase.lock().await;
        match *phase {
            Phase::Ready(_) => return Err(ApiError::conflict("already unlocked")),
            Phase::NoIdentity => return Err(ApiError::conflict("there is no identity yet")),
            Phase::Locked => {}
        }
        let dir = self.dir.clone();
        let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, &pass))
            .await
            .map_err(ApiError::internal)?;
        let store = match opened {
            Ok(s) => s,
            Err(dopus_store::OpenError::WrongPassphrase) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "wrong_passphrase",
                    "wrong passphrase",
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "store",
                    e.to_string(),
                ));
            }
        };
        let record = dopus_core::store::Store::account(&store)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::conflict("the store holds no account"))?;
        let ready = Ready::start(store, record, None, &self.options).map_err(ApiError::internal)?;
        *phase = Phase::Ready(Box::new(ready));
        drop(phase);
        self.after_unlock().await
    }

    async fn after_unlock(&self) -> Result<Value, ApiError> {
        if self.dtls.get().is_none() {
            match tokio::task::spawn_blocking(dopus_rtc::DtlsIdentity::generate).await {
                Ok(Ok(id)) => {
                    let _ = self.dtls.set(id);
                }
                _ => tracing::warn!(
                    "could not pre-generate a DTLS certificate; each connection will make its own"
                ),
            }
        }
        self.emit(json!({ "type": "status", "state": "ready" }));
        if let Some(node) = self.arc() {
            net::start(node.clone());
            maintenance::start(node.clone());
            deliver::start_pump(node);
        }
        self.me().await
    }

    /// `GET /me`.
    pub async fn me(&self) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        Ok(r.get().me_json())
    }

    /// `PUT /me/status`.
    pub async fn set_status(&self, status: &str) -> Result<Value, ApiError> {
        let status = match status {
            "online" => Status::Online,
            "away" => Status::Away,
            "busy" => Status::Busy,
            "invisible" => Status::Invisible,
            _ => {
                return Err(ApiError::bad_request(
                    "status must be online, away, busy or invisible",
                ));
            }
        };
        let client = {
            let mut r = self.ready().await?;
            let r = r.get_mut();
            r.my_status = status;
            r.signaling.clone()
        };
        if let Some(client) = client {
            net::push_status(&client, status).await;
        }
        self.me().await
    }

    /// `GET /contacts`.
    pub async fn contacts(&self) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        r.get().contacts_json().map_err(ApiError::internal)
    }

    /// `POST /contacts`.
    pub async fn add_contact(&self, user: UserId, name: Option<String>) -> Result<Value, ApiError> {
        let (value, client, contacts) = {
            let mut r = self.ready().await?;
            let r = r.get_mut();
            let v = r.add_contact(user, name)?;
            (v, r.signaling.clone(), r.accepted_contacts())
        };
        self.emit(json!({ "type": "contact", "contact": value }));
        if let Some(client) = client {
            net::push_contacts(self, &client, contacts).await;
        }
        Ok(value)
    }

    /// `POST /contacts/{id}/request`.
    pub async fn contact_request(
        &self,
        user: UserId,
        name: Option<String>,
        note: Option<String>,
    ) -> Result<Value, ApiError> {
        let value = {
            let mut r = self.ready().await?;
            r.get_mut().contact_request(user, name, note)?
        };
        self.emit(json!({ "type": "contact", "contact": value }));
        self.pump.notify_one();
        Ok(value)
    }

    /// `POST /contacts/{id}/accept|decline`.
    pub async fn contact_answer(&self, user: UserId, accept: bool) -> Result<Value, ApiError> {
        let (value, client, contacts) = {
            let mut r = self.ready().await?;
            let r = r.get_mut();
            let v = r.contact_answer(user, accept)?;
            (v, r.signaling.clone(), r.accepted_contacts())
        };
        self.emit(json!({ "type": "contact", "contact": value }));
        self.pump.notify_one();
        if let Some(client) = client {
            net::push_contacts(self, &client, contacts).await;
        }
        Ok(value)
    }

    /// `PATCH /contacts/{id}`.
    pub async fn patch_contact(
        &self,
        user: UserId,
        patch: ContactPatch,
    ) -> Result<Value, ApiError> {
        let (value, client, contacts) = {
            let mut r = self.ready().await?;
            let r = r.get_mut();
            let v = r.patch_contact(user, patch)?;
            (v, r.signaling.clone(), r.accepted_contacts())
        };
        self.emit(json!({ "type": "contact", "contact": value }));
        if let Some(client) = client {
            net::push_contacts(self, &client, contacts).await;
        }
        Ok(value)
    }

    /// `GET /contacts/{id}/safety`.
    pub async fn safety(&self, user: UserId) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        r.get().safety(user)
    }

    /// `GET /contacts/{id}/verification`.
    pub async fn verification(&self, user: UserId) -> Result<Value, ApiError> {
        verify::get(self, user).await
    }

    /// `POST /contacts/{id}/verification[/confirm|/cancel]`.
    pub async fn verification_action(&self, user: UserId, action: &str) -> Result<Value, ApiError> {
        match action {
            "start" => verify::start(self, user).await,
            "confirm" => verify::confirm(self, user).await,
            _ => verify::cancel(self, user).await,
        }
    }

    /// `GET /contacts/{id}/connection`.
    pub async fn connection(&self, user: UserId) -> Result<Value, ApiError> {
        let handle = {
            let r = self.ready().await?;
            r.get().peer_handle(&user)
        };
        let diagnostics = match &handle {
            Some(h) => h.diagnostics().await.ok(),
            None => None,
        };
        let mut r = self.ready().await?;
        let r = r.get_mut();
        if let (Some(d), Some(p)) = (&diagnostics, r.peers.get_mut(&user)) {
            p.last_diag = Some(d.clone());
        }
        Ok(r.connection_json(&user, diagnostics.as_ref()))
    }

    /// `GET /conversations/{id}/messages`.
    pub async fn messages(
        &self,
        peer: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        r.get().messages(peer, before, limit)
    }

    /// `POST /conversations/{id}/messages`.
    pub async fn send_text(
        &self,
        peer: UserId,
        body: String,
        reply_to: Option<uuid::Uuid>,
    ) -> Result<Value, ApiError> {
        let mut sent = self.send_texts(peer, vec![(body, reply_to)]).await?;
        sent.pop()
            .ok_or_else(|| ApiError::internal("a send was answered without its message"))
    }

    /// `POST /conversations/{id}/messages/batch` (and, with one message, `send_text`): the
    /// messages in order, answered in order, stored all or none. They share one commit with
    /// every send that queued up meanwhile (`combine`); each request is stored or refused on
    /// its own.
    pub async fn send_texts(
        &self,
        peer: UserId,
        texts: Vec<(String, Option<uuid::Uuid>)>,
    ) -> Result<Vec<Value>, ApiError> {
        let ticket = self.sends.push(ready::SendTexts { peer, texts });
        match self.ready().await {
            Ok(mut r) => {
                // Ours and every send that queued up while the lock was taken, in one commit;
                // empty when another caller's batch already took ours.
                let mut batch = self.sends.take_all();
                if !batch.is_empty() {
                    let requests = batch
                        .iter_mut()
                        .map(|t| ready::SendTexts {
                            peer: t.request.peer,
                            texts: std::mem::take(&mut t.request.texts),
                        })
                        .collect();
                    let results = r.get_mut().send_texts(requests);
                    drop(r);
                    let mut stored = 0;
                    let listening = self.listening();
                    for (taken, answer) in batch.into_iter().zip(results) {
                        for value in answer.iter().flatten() {
                            if listening {
                                self.emit(json!({ "type": "message", "message": value }));
                            }
                            stored += 1;
                        }
                        taken.answer(answer);
                    }
                    self.pump.notify_one();
                    tracing::trace!(messages = stored, "messages queued");
                }
            }
            Err(e) if ticket.withdraw() => return Err(e),
            // A batch took ours before the node was locked: its answer is on the way.
            Err(_) => {}
        }
        ticket
            .answer()
            .await
            .unwrap_or_else(|| Err(ApiError::internal("the send was dropped")))
    }

    /// `POST /conversations/{id}/typing`.
    pub async fn typing(&self, peer: UserId, active: bool) -> Result<(), ApiError> {
        let sends = {
            let mut r = self.ready().await?;
            r.get_mut().typing(peer, active)?
        };
        deliver::send_ephemeral(self, sends).await;
        Ok(())
    }

    /// `POST /conversations/{id}/read`.
    pub async fn mark_read(&self, peer: UserId, up_to: uuid::Uuid) -> Result<(), ApiError> {
        let sends = {
            let mut r = self.ready().await?;
            r.get_mut().mark_read(peer, up_to)?
        };
        deliver::send_ephemeral(self, sends).await;
        Ok(())
    }

    /// `PUT /messages/{id}`.
    pub async fn edit(&self, id: uuid::Uuid, body: String) -> Result<Value, ApiError> {
        let value = {
            let mut r = self.ready().await?;
            r.get_mut().edit(id, body)?
        };
        self.emit(json!({ "type": "message_updated", "message": value }));
        self.pump.notify_one();
        Ok(value)
    }

    /// `DELETE /messages/{id}`.
    pub async fn delete(&self, id: uuid::Uuid) -> Result<Value, ApiError> {
        let value = {
            let mut r = self.ready().await?;
            r.get_mut().delete(id)?
        };
        self.emit(json!({ "type": "message_updated", "message": value }));
        self.pump.notify_one();
        Ok(value)
    }

    /// `POST|DELETE /messages/{id}/reactions`.
    pub async fn react(&self, id: uuid::Uuid, emoji: String, add: bool) -> Result<Value, ApiError> {
        let value = {
            let mut r = self.ready().await?;
            r.get_mut().react(id, emoji, add)?
        };
        self.emit(json!({ "type": "message_updated", "message": value }));
        self.pump.notify_one();
        Ok(value)
    }

    /// `GET /search`.
    pub async fn search(&self, q: &str, limit: usize) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        r.get().search(q, limit)
    }

    /// `GET /settings`.
    pub async fn settings(&self) -> Result<Value, ApiError> {
        let r = self.ready().await?;
        Ok(r.get().settings.to_json())
    }

    /// `PUT /settings`.
    pub async fn put_settings(&self, patch: SettingsPatch) -> Result<Value, ApiError> {
        let (value, server_changed) = {
            let mut r = self.ready().await?;
            r.get_mut().put_settings(patch)?
        };
        if server_changed && let Some(node) = self.arc() {
            net::restart(node).await;
        }
        Ok(value)
    }

    /// Stops network tasks and says goodbye to the server (explicit offline).
    pub async fn shutdown(&self) {
        let client = {
            let mut phase = self.phase.lock().await;
            match &mut *phase {
                Phase::Ready(r) => {
                    r.close_peers();
                    r.signaling.take()
                }
                _ => None,
            }
        };
        if let Some(client) = client {
            net::goodbye(client).await;
        }
    }
}

/// The phase lock, known to hold [`Phase::Ready`].
struct ReadyGuard<'a>(MutexGuard<'a, Phase>);

impl ReadyGuard<'_> {
    fn get(&self) -> &Ready {
        match &*self.0 {
            Phase::Ready(r) => r,
            // `Node::ready` only builds a guard for the Ready phase, and nothing leaves Ready
            // while the guard holds the lock.
            _ => unreachable_ready(),
        }
    }
    fn get_mut(&mut self) -> &mut Ready {
        match &mut *self.0 {
            Phase::Ready(r) => r,
            _ => unreachable_ready(),
        }
    }
}

#[allow(
    clippy::panic,
    reason = "ReadyGuard is only constructed for the Ready phase"
)]
fn unreachable_ready() -> ! {
    panic!("ReadyGuard without a Ready phase")
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(account::random_bytes::<32>())
}

/// Binds the API, writes `api.json`, serves until Ctrl-C/SIGTERM, and cleans up.
pub async fn serve(
    node: Arc<Node>,
    addr: SocketAddr,
    allow_remote: bool,
    ready_tx: Option<tokio::sync::oneshot::Sender<ApiFile>>,
) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        anyhow::bail!(
            "--api must be a loopback address (127.0.0.1 or ::1) unless --allow-remote-api is given"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the local API on {addr}"))?;
    let local = listener.local_addr()?;
    let token = random_token();
    let auth = api::auth::AuthConfig {
        token: Arc::from(token.as_str()),
        port: local.port(),
        any_host: !local.ip().is_loopback(),
    };
    let file = ApiFile {
        version: API_FILE_VERSION,
        url: format!("http://{local}"),
        token: token.clone(),
        pid: std::process::id(),
    };
    paths::ensure_private_dir(&node.dir)?;
    file.write(&node.dir)
        .with_context(|| format!("writing {}", node.dir.join(paths::API_FILE).display()))?;
    if let Some(tx) = ready_tx {
        let _ = tx.send(file.clone());
    }
    let app = api::router(node.clone(), auth);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    node.shutdown().await;
    ApiFile::remove_if_ours(&node.dir, &token);
    result.context("serving the local API")
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `discordopus run` / `up`.
pub fn run(dir: PathBuf, out: Output, args: RunArgs, launch: Launch) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node = Node::new(
            dir,
            NodeOptions {
                server: args.server.clone(),
                stun: None,
            },
        );
        // Headless use: unlock with the passphrase from the environment.
        if let Some(pass) = passphrase::from_env()
            && SqliteStore::exists(&node.dir)
        {
            node.unlock(pass)
                .await
                .map_err(|e| anyhow::anyhow!("unlocking the store: {}", e.message))?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(
            node.clone(),
            args.api,
            args.allow_remote_api,
            Some(tx),
        ));
        if let Ok(file) = rx.await {
            announce(&node, out, &file, launch).await;
        }
        server.await.context("the API task failed")?
    })
}

async fn announce(node: &Node, out: Output, file: &ApiFile, launch: Launch) {
    let ui = format!("{}/?token={}", file.url, file.token);
    let status = node.status().await;
    out.print(
        &json!({ "api": file.url, "ui": ui, "state": status["state"], "user_id": status["user_id"] }),
        |_| match launch {
            Launch::Headless => format!(
                "node running ({}); local API on {} (token in {})",
                status["state"].as_str().unwrap_or("?"),
                file.url,
                node.dir.join(paths::API_FILE).display()
            ),
            Launch::Ui { .. } => format!("DiscordOpus is running. Open:\n  {ui}"),
        },
    );
    if let Launch::Ui { open_browser: true } = launch {
        open_browser(&ui);
    }
}

fn open_browser(url: &str) {
    for opener in ["xdg-open", "open"] {
        if std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
}

/// `discordopus demo`.
pub fn demo(out: Output, args: DemoArgs) -> anyhow::Result<()> {
    demo::run(out, args)
}
