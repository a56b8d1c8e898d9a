//! The node runtime: `discordopus run`, `up` and `demo`.
//!
//! Task topology (one process):
//!
//! ```text
//!  HTTP/WS clients ──> axum (local API) ──── jobs, queries ───┐
//!  signaling client ──> forward task ──────── inputs ─────────┤
//!  connection tasks (str0m, one per peer) ─── inputs ─────────┼──> actor (own thread):
//!  maintenance tasks ──────────────────────── jobs ───────────┘      NodeMachine + SqliteStore
//!                                                                         │ after each commit
//!        transmits, requests, connection requests, events  <──────────────┘
//! ```
//!
//! One actor ([`actor`]) owns the sans-IO node machine (`dopus_core::machine`) and the store.
//! Everything else talks to it by message: API handlers send jobs (commands run inside the
//! batch's transaction and answered after its commit) and queries (reads after the commit);
//! the signaling client ([`signaling`]) and the connection tasks ([`connections`]) send
//! inputs. No module locks shared node state, and the modules do not call each other: they
//! only know the actor's mailbox.

mod actor;
mod browser_leg;
mod calls;
mod calls_api;
mod connections;
mod files;
pub(crate) mod files_api;
mod files_prepare;
mod mailbox;
mod maintenance;
mod signaling;
mod spaces;
pub mod views;
mod voice;
mod voice_api;

use crate::account;
use crate::api::dto;
pub use crate::api::error::NodeError;
use dopus_core::store::MessageId;
use dopus_proto::signaling::Status;
use dopus_store::SqliteStore;
use dopus_types::UserId;
use mailbox::{ActorTx, Cx, Msg, Vx};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, oneshot};

/// Options fixed at launch.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--server`, overriding (and saved into) the settings.
    pub server: Option<String>,
    /// An extra STUN server for this run (the demo's embedded one).
    pub stun: Option<String>,
    /// `--relay-only`: direct connections use TURN relays only, so contacts never learn our
    /// IP address (without a relay from the server, messages go through the server).
    pub relay_only: bool,
    /// `--link-preview-allow-private`: link previews may fetch from loopback and private
    /// addresses (tests only).
    pub link_preview_allow_private: bool,
}

/// A running node: the handle API handlers hold. Before unlock it has no actor; after, every
/// operation is a message to the actor.
pub struct Node {
    dir: PathBuf,
    options: NodeOptions,
    events: broadcast::Sender<Arc<str>>,
    actor: OnceLock<ActorTx>,
    /// Serialises `create_identity` and `unlock` (the only transitions).
    lifecycle: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

type NodeResult<T> = Result<T, NodeError>;

fn gone() -> NodeError {
    NodeError::Internal("the node's actor stopped".into())
}

impl Node {
    /// A node for `dir`, locked or without identity.
    pub fn new(dir: PathBuf, options: NodeOptions) -> Arc<Node> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Node {
            dir,
            options,
            events,
            actor: OnceLock::new(),
            lifecycle: tokio::sync::Mutex::new(()),
        })
    }

    /// The node's data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The event channel (the `/events` WebSocket subscribes to it): encoded `dto::Event`s.
    pub fn events(&self) -> &broadcast::Sender<Arc<str>> {
        &self.events
    }

    fn emit(&self, event: &dto::Event) {
        if let Ok(s) = serde_json::to_string(event) {
            let _ = self.events.send(Arc::from(s));
        }
    }

    fn actor(&self) -> NodeResult<&ActorTx> {
        self.actor.get().ok_or(NodeError::Locked)
    }

    /// Runs a command inside the actor's next batch; answers after its commit.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Cx<'_>) -> NodeResult<T> + Send + 'static,
    ) -> NodeResult<T> {
        let (tx, rx) = oneshot::channel();
        self.actor()?
            .send(Msg::Job(Box::new(move |cx| {
                let result = f(cx);
                Box::new(move |committed| {
                    let _ = tx.send(match (committed, result) {
                        (true, r) => r,
                        (false, Ok(_)) => Err(NodeError::Internal(
                            "the store could not save this; nothing was changed".into(),
                        )),
                        (false, Err(e)) => Err(e),
                    });
                })
            })))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Reads after the actor's next commit.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Vx<'_>) -> NodeResult<T> + Send + 'static,
    ) -> NodeResult<T> {
        let (tx, rx) = oneshot::channel();
        self.actor()?
            .send(Msg::Query(Box::new(move |vx| {
                let _ = tx.send(f(vx));
            })))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// `GET /status`.
    pub async fn status(&self) -> dto::Status {
        if self.actor.get().is_none() {
            return dto::Status::not_ready(if SqliteStore::exists(&self.dir) {
                dto::NodeState::Locked
            } else {
                dto::NodeState::NoIdentity
            });
        }
        self.read(|v| {
            Ok(dto::Status::ready(
                v.machine.account(),
                v.machine.settings().server_url.clone(),
                views::signaling_state(v.machine.signaling_state()),
            ))
        })
        .await
        .unwrap_or_else(|_| dto::Status::not_ready(dto::NodeState::Locked))
    }

    /// `POST /identity`.
    pub async fn create_identity(&self, name: String, pass: String) -> NodeResult<dto::Me> {
        let _guard = self.lifecycle.lock().await;
        if self.actor.get().is_some() || SqliteStore::exists(&self.dir) {
            return Err(NodeError::IdentityExists);
        }
        if pass.is_empty() {
            return Err(NodeError::Invalid(
                "the passphrase must not be empty".into(),
            ));
        }
        let dir = self.dir.clone();
        let (store, record, identity, device) =
            tokio::task::spawn_blocking(move || account::create(&dir, &name, &pass))
                .await
                .map_err(|e| NodeError::Internal(Box::new(e)))?
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
        self.start(store, record, Some((identity, device))).await
    }

    /// `POST /unlock`.
    pub async fn unlock(&self, pass: String) -> NodeResult<dto::Me> {
        let _guard = self.lifecycle.lock().await;
        if self.actor.get().is_some() {
            return Err(NodeError::AlreadyUnlocked);
        }
        if !SqliteStore::exists(&self.dir) {
            return Err(NodeError::NoIdentity);
        }
        let dir = self.dir.clone();
        let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, &pass))
            .await
            .map_err(|e| NodeError::Internal(Box::new(e)))?;
        let store = match opened {
            Ok(s) => s,
            Err(dopus_store::OpenError::WrongPassphrase) => return Err(NodeError::WrongPassphrase),
            Err(e) => return Err(NodeError::StoreUnavailable(e.to_string())),
        };
        let record = dopus_core::store::Store::account(&store)
            .map_err(|e| NodeError::Internal(Box::new(e)))?
            .ok_or_else(|| NodeError::StoreUnavailable("the store holds no account".into()))?;
        self.start(store, record, None).await
    }

    async fn start(
        &self,
        store: SqliteStore,
        record: dopus_core::store::AccountRecord,
        fresh: Option<(dopus_core::identity::Identity, dopus_core::identity::Device)>,
    ) -> NodeResult<dto::Me> {
        // One DTLS certificate for all our peer connections, made once, off the executor.
        let dtls = match tokio::task::spawn_blocking(dopus_rtc::DtlsIdentity::generate).await {
            Ok(Ok(id)) => Some(id),
            _ => {
                tracing::warn!(
                    "could not pre-generate a DTLS certificate; each connection will make its own"
                );
                None
            }
        };
        let tx = actor::spawn(
            store,
            record,
            fresh,
            self.options.clone(),
            self.events.clone(),
            dtls,
            self.dir.join("blobs"),
        )
        .map_err(|e| NodeError::Internal(e.into()))?;
        let _ = self.actor.set(tx);
        self.emit(&dto::Event::Status {
            state: dto::NodeState::Ready,
        });
        self.me().await
    }

    /// `GET /me`.
    pub async fn me(&self) -> NodeResult<dto::Me> {
        self.read(|v| views::me(v.store, v.machine).map_err(api_internal))
            .await
    }

    /// `PUT /me/profile`: our name, status line and avatar, sent to every accepted contact.
    pub async fn set_profile(
        &self,
        patch: dopus_core::machine::ProfilePatch,
    ) -> NodeResult<dto::Me> {
        self.write(move |cx| {
            cx.machine
                .set_profile(cx.now, cx.store, patch)
                .map_err(|e| cx.command(e))?;
            views::me(&*cx.store, cx.machine).map_err(|e| cx.store_failed(e))
        })
        .await
    }

    /// `PUT /me/status`.
    pub async fn set_status(&self, status: &str) -> NodeResult<dto::Me> {
        let status = match status {
            "online" => Status::Online,
            "away" => Status::Away,
            "busy" => Status::Busy,
            "invisible" => Status::Invisible,
            _ => {
                return Err(NodeError::Invalid(
                    "status must be online, away, busy or invisible".into(),
                ));
            }
        };
        self.write(move |cx| {
            cx.machine.set_status(status);
            views::me(&*cx.store, cx.machine).map_err(|e| cx.store_failed(e))
        })
        .await
    }

    /// `GET /contacts`.
    pub async fn contacts(&self) -> NodeResult<Vec<dto::Contact>> {
        self.read(|v| views::contacts(v.store, v.machine, v.live).map_err(api_to_node))
            .await
    }

    /// The contact as it is now, after a contact command.
    fn contact_after(cx: &mut Cx<'_>, user: &UserId) -> NodeResult<dto::Contact> {
        match dopus_core::store::Store::contact(&*cx.store, user) {
            Ok(Some(c)) => {
                views::contact(&*cx.store, cx.machine, cx.live, &c).map_err(|e| cx.store_failed(e))
            }
            Ok(None) => Err(NodeError::NotFound("contact")),
            Err(e) => Err(cx.store_failed(e)),
        }
    }

    /// `POST /contacts`.
    pub async fn add_contact(
        &self,
        user: UserId,
        name: Option<String>,
    ) -> NodeResult<dto::Contact> {
        self.write(move |cx| {
            cx.machine
                .add_contact(cx.now, cx.store, user, name)
                .map_err(|e| cx.command(e))?;
            Self::contact_after(cx, &user)
        })
        .await
    }

    /// `POST /contacts/{id}/request`.
    pub async fn contact_request(
        &self,
        user: UserId,
        name: Option<String>,
        note: Option<String>,
    ) -> NodeResult<dto::Contact> {
        self.write(move |cx| {
            cx.machine
                .contact_request(cx.now, cx.store, user, name, note)
                .map_err(|e| cx.command(e))?;
            Self::contact_after(cx, &user)
        })
        .await
    }

    /// `POST /contacts/{id}/accept|decline`.
    pub async fn contact_answer(&self, user: UserId, accept: bool) -> NodeResult<dto::Contact> {
        self.write(move |cx| {
            cx.machine
                .contact_answer(cx.now, cx.store, user, accept)
                .map_err(|e| cx.command(e))?;
            Self::contact_after(cx, &user)
        })
        .await
    }

    /// `PATCH /contacts/{id}`.
    pub async fn patch_contact(
        &self,
        user: UserId,
        patch: dopus_core::contacts::ContactPatch,
    ) -> NodeResult<dto::Contact> {
        self.write(move |cx| {
            cx.machine
                .patch_contact(cx.now, cx.store, user, patch)
                .map_err(|e| cx.command(e))?;
            Self::contact_after(cx, &user)
        })
        .await
    }

    /// `DELETE /contacts/{id}`.
    pub async fn remove_contact(&self, user: UserId) -> NodeResult<()> {
        self.write(move |cx| {
            cx.machine
                .remove_contact(cx.now, cx.store, user)
                .map_err(|e| cx.command(e))
        })
        .await
    }

    /// `GET /contacts/{id}/safety`.
    pub async fn safety(&self, user: UserId) -> NodeResult<dto::Safety> {
        self.read(move |v| {
            let contact = dopus_core::store::Store::contact(v.store, &user)
                .map_err(api_internal)?
                .ok_or(NodeError::NotFound("contact"))?;
            let number = dopus_core::verification::SafetyNumber::new(&v.machine.me(), &user);
            Ok(dto::Safety::new(&number, contact.verified))
        })
        .await
    }

    /// `GET /contacts/{id}/verification`.
    pub async fn verification(&self, user: UserId) -> NodeResult<dto::Verification> {
        self.read(move |v| Ok(views::verification(&v.machine.verification(&user))))
            .await
    }

    /// `POST /contacts/{id}/verification[/confirm|/cancel]`.
    pub async fn verification_action(
        &self,
        user: UserId,
        action: &str,
    ) -> NodeResult<dto::Verification> {
        let action = action.to_owned();
        self.write(move |cx| {
            let view = match action.as_str() {
                "start" => cx.machine.start_verification(cx.now, cx.store, user),
                "confirm" => cx.machine.confirm_verification(cx.now, cx.store, user),
                _ => cx.machine.cancel_verification(cx.now, user),
            }
            .map_err(|e| cx.command(e))?;
            Ok(views::verification(&view))
        })
        .await
    }

    /// `GET /contacts/{id}/connection`: the machine's view with fresh diagnostics.
    pub async fn connection(&self, user: UserId) -> NodeResult<dto::Connection> {
        let conn = self
            .read(move |v| Ok(v.conns.get(&user).map(|c| c.tx.clone())))
            .await?;
        if let Some(conn) = conn {
            // Fresh diagnostics from the connection task (or, if it takes longer than a moment,
            // the last ones the actor holds).
            let (tx, rx) = oneshot::channel();
            if conn.send(mailbox::ConnCmd::Diagnostics(tx)).is_ok()
                && let Ok(Ok(d)) = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await
            {
                let _ = self.actor()?.send(Msg::Diagnostics(user, d));
            }
        }
        self.read(move |v| Ok(views::connection(v.machine, v.live, &user)))
            .await
    }

    /// `GET /conversations/{id}/messages`.
    pub async fn messages(
        &self,
        peer: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> NodeResult<dto::MessagePage> {
        self.read(move |v| {
            views::messages(v.store, &v.machine.me(), peer, before, limit).map_err(api_to_node)
        })
        .await
    }

    /// `POST /conversations/{id}/messages`.
    pub async fn send_text(
        &self,
        peer: UserId,
        body: String,
        reply_to: Option<uuid::Uuid>,
        preview: Option<Box<dopus_proto::content::LinkPreview>>,
    ) -> NodeResult<dto::Message> {
        let draft = dopus_core::chat::Draft {
            body,
            reply_to: reply_to.map(MessageId),
            preview,
        };
        let mut sent = self.send_drafts(peer, vec![draft]).await?;
        sent.pop()
            .ok_or_else(|| NodeError::Internal("a send was answered without its message".into()))
    }

    /// `POST /conversations/{id}/messages/batch` (and, with one message, `send_text`): the
    /// messages in order, answered in order, stored all or none. They share one commit with
    /// everything else the actor took into the same batch.
    pub async fn send_texts(
        &self,
        peer: UserId,
        texts: Vec<(String, Option<uuid::Uuid>)>,
    ) -> NodeResult<Vec<dto::Message>> {
        let drafts = texts
            .into_iter()
            .map(|(body, reply)| dopus_core::chat::Draft {
                body,
                reply_to: reply.map(MessageId),
                preview: None,
            })
            .collect();
        self.send_drafts(peer, drafts).await
    }

    async fn send_drafts(
        &self,
        peer: UserId,
        texts: Vec<dopus_core::chat::Draft>,
    ) -> NodeResult<Vec<dto::Message>> {
        self.write(move |cx| {
            let me = cx.machine.me();
            let sent = cx
                .machine
                .send_texts(cx.now, cx.store, peer, texts)
                .map_err(|e| cx.command(e))?;
            Ok(sent
                .iter()
                .map(|m| dto::Message::from_record(m, &[], &me))
                .collect())
        })
        .await
    }

    /// `POST /conversations/{id}/typing`.
    pub async fn typing(&self, peer: UserId, active: bool) -> NodeResult<()> {
        self.write(move |cx| {
            cx.machine
                .typing(cx.now, &*cx.store, peer, active)
                .map_err(|e| cx.command(e))
        })
        .await
    }

    /// `POST /conversations/{id}/read`.
    pub async fn mark_read(&self, peer: UserId, up_to: uuid::Uuid) -> NodeResult<()> {
        self.write(move |cx| {
            cx.machine
                .mark_read(cx.now, cx.store, peer, MessageId(up_to))
                .map_err(|e| cx.command(e))
        })
        .await
    }

    /// The message as it is now, after a message command.
    fn message_after(cx: &mut Cx<'_>, m: &dopus_core::store::Message) -> NodeResult<dto::Message> {
        let me = cx.machine.me();
        views::message(&*cx.store, &me, m).map_err(|e| cx.store_failed(e))
    }

    /// `PUT /messages/{id}`.
    pub async fn edit(&self, id: uuid::Uuid, body: String) -> NodeResult<dto::Message> {
        self.write(move |cx| {
            let m = cx
                .machine
                .edit(cx.now, cx.store, MessageId(id), body)
                .map_err(|e| cx.command(e))?;
            Self::message_after(cx, &m)
        })
        .await
    }

    /// `DELETE /messages/{id}`.
    pub async fn delete(&self, id: uuid::Uuid) -> NodeResult<dto::Message> {
        self.write(move |cx| {
            let m = cx
                .machine
                .delete(cx.now, cx.store, MessageId(id))
                .map_err(|e| cx.command(e))?;
            Self::message_after(cx, &m)
        })
        .await
    }

    /// `POST|DELETE /messages/{id}/reactions`.
    pub async fn react(
        &self,
        id: uuid::Uuid,
        emoji: String,
        add: bool,
    ) -> NodeResult<dto::Message> {
        self.write(move |cx| {
            let m = cx
                .machine
                .react(cx.now, cx.store, MessageId(id), emoji, add)
                .map_err(|e| cx.command(e))?;
            Self::message_after(cx, &m)
        })
        .await
    }

    /// `GET /search`.
    pub async fn search(
        &self,
        q: String,
        limit: usize,
        before: Option<u64>,
    ) -> NodeResult<dto::SearchResults> {
        self.read(move |v| {
            views::search(v.store, &v.machine.me(), &q, limit, before).map_err(api_to_node)
        })
        .await
    }

    /// `GET /settings`.
    pub async fn settings(&self) -> NodeResult<dto::Settings> {
        let forced = self.options.relay_only;
        self.read(move |v| Ok(views::settings(v.machine, forced)))
            .await
    }

    /// A link preview for `body` when the user turned previews on and it has a link: fetched
    /// here, before the message is written, by a blocking task bounded by the fetcher's
    /// timeouts. Failure only means no preview (logged at debug, without the URL).
    pub async fn link_preview(&self, body: &str) -> Option<Box<dopus_proto::content::LinkPreview>> {
        // The link first: a text without one costs no round trip to the actor.
        let url = crate::preview::first_link(body)?;
        let on = self
            .read(|v| Ok(v.machine.settings().link_previews))
            .await
            .unwrap_or(false);
        if !on {
            return None;
        }
        let policy = crate::preview::Policy {
            allow_private: self.options.link_preview_allow_private,
        };
        match tokio::task::spawn_blocking(move || crate::preview::fetch(&url, policy)).await {
            Ok(Ok(p)) => Some(Box::new(p)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no link preview");
                None
            }
            Err(_) => None,
        }
    }

    /// `PUT /settings`.
    pub async fn put_settings(
        &self,
        patch: dopus_core::machine::SettingsPatch,
    ) -> NodeResult<dto::Settings> {
        if let Some(ice) = &patch.ice_servers {
            for url in ice {
                dopus_rtc::IceServer::parse(url)
                    .map_err(|e| NodeError::Invalid(format!("ICE server {url:?}: {e}")))?;
            }
        }
        let forced = self.options.relay_only;
        self.write(move |cx| {
            let (_, server_changed) = cx
                .machine
                .put_settings(cx.store, patch)
                .map_err(|e| cx.command(e))?;
            cx.restart_signaling |= server_changed;
            Ok(views::settings(cx.machine, forced))
        })
        .await
    }

    /// Closes connections and says goodbye to the server (explicit offline).
    pub async fn shutdown(&self) {
        if let Some(actor) = self.actor.get() {
            let (tx, rx) = oneshot::channel();
            if actor.send(Msg::Shutdown(tx)).is_ok() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
            }
        }
    }
}

fn api_internal(e: impl std::error::Error + Send + Sync + 'static) -> NodeError {
    NodeError::Internal(Box::new(e))
}

/// Views answer with `ApiError` for historical reasons; the only ones they make are
/// not-found and internal.
fn api_to_node(e: crate::api::error::ApiError) -> NodeError {
    if e.status == axum::http::StatusCode::NOT_FOUND {
        NodeError::NotFound("message")
    } else {
        NodeError::Internal(e.message.into())
    }
}
