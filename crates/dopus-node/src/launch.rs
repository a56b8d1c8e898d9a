//! Starting a node: `discordopus run` and `up` (the local API served until Ctrl-C), and
//! `demo` (an embedded signaling server and two nodes). The layer above the runtime and the
//! API: it binds the API, writes `api.json`, and stops the node cleanly.

#[cfg(feature = "embedded-server")]
mod demo;

use crate::api;
use crate::apifile::{API_FILE_VERSION, ApiFile};
use crate::cli::{DemoArgs, RunArgs};
use crate::output::Output;
use crate::runtime::{Node, NodeOptions};
use crate::{account, passphrase, paths};
use anyhow::Context;
use base64::Engine as _;
use dopus_store::SqliteStore;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    paths::ensure_private_dir(node.dir())?;
    file.write(node.dir())
        .with_context(|| format!("writing {}", node.dir().join(paths::API_FILE).display()))?;
    if let Some(tx) = ready_tx {
        let _ = tx.send(file.clone());
    }
    let app = api::router(node.clone(), auth);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    node.shutdown().await;
    ApiFile::remove_if_ours(node.dir(), &token);
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
                relay_only: args.relay_only,
                link_preview_allow_private: args.link_preview_allow_private,
            },
        );
        // Headless use: unlock with the passphrase from the environment.
        if let Some(pass) = passphrase::from_env()
            && SqliteStore::exists(node.dir())
        {
            node.unlock(pass)
                .await
                .map_err(|e| anyhow::anyhow!("unlocking the store: {e}"))?;
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
    let status = serde_json::to_value(node.status().await).unwrap_or_default();
    out.print(
        &json!({ "api": file.url, "ui": ui, "state": status["state"], "user_id": status["user_id"] }),
        |_| match launch {
            Launch::Headless => format!(
                "node running ({}); local API on {} (token in {})",
                status["state"].as_str().unwrap_or("?"),
                file.url,
                node.dir().join(paths::API_FILE).display()
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
#[cfg(feature = "embedded-server")]
pub fn demo(out: Output, args: DemoArgs) -> anyhow::Result<()> {
    demo::run(out, args)
}

/// `discordopus demo` in a build without the embedded server.
#[cfg(not(feature = "embedded-server"))]
pub fn demo(_out: Output, _args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "this discordopus was built without the embedded signaling server (cargo feature \
         `embedded-server`); run discordopus-server and `discordopus run --server ws://…` instead"
    )
}
