//! `discordopus demo`: everything on one machine, one command. An embedded signaling server
//! (with STUN) and two identities, alice and bob, who are already contacts, each with their own
//! node, data directory and local API. Prints both URLs and runs until Ctrl-C.

use super::serve;
use crate::account;
use crate::apifile::ApiFile;
use crate::cli::DemoArgs;
use crate::output::Output;
use crate::runtime::{Node, NodeOptions};
use anyhow::Context;
use dopus_core::store::{Change, Contact, ContactState, Store};
use dopus_types::UserId;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The passphrase of the demo identities (printed; this is a demo).
pub const DEMO_PASSPHRASE: &str = "demo";

fn ensure_identity(dir: &Path, name: &str) -> anyhow::Result<UserId> {
    if dopus_store::SqliteStore::exists(dir) {
        let (store, account) = account::open(dir, DEMO_PASSPHRASE)?;
        store.close()?;
        return Ok(account.user_id);
    }
    let (store, record, _, _) = account::create(dir, name, DEMO_PASSPHRASE)?;
    store.close()?;
    Ok(record.user_id)
}

fn befriend(dir: &Path, other: UserId, name: &str) -> anyhow::Result<()> {
    let (mut store, _) = account::open(dir, DEMO_PASSPHRASE)?;
    if store.contact(&other)?.is_none() {
        let now = account::now();
        store.apply_one(Change::SaveContact(Contact {
            user_id: other,
            display_name: Some(name.to_owned()),
            verified: false,
            blocked: false,
            state: ContactState::Accepted,
            request_note: None,
            created_at: now,
            updated_at: now,
        }))?;
    }
    store.close()?;
    Ok(())
}

/// Runs the demo.
pub fn run(out: Output, args: DemoArgs) -> anyhow::Result<()> {
    let (root, _temp) = match args.dir {
        Some(dir) => (dir, None),
        None => {
            let t = tempdir()?;
            (t.clone(), Some(t))
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let alice_dir = root.join("alice");
    let bob_dir = root.join("bob");
    let alice = ensure_identity(&alice_dir, "alice")?;
    let bob = ensure_identity(&bob_dir, "bob")?;
    befriend(&alice_dir, bob, "bob")?;
    befriend(&bob_dir, alice, "alice")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut config = dopus_server::Config::loopback(root.join("server"));
        config.stun_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = dopus_server::start(config)
            .await
            .context("starting the embedded signaling server")?;
        let url = server.ws_url();
        let stun = server.stun_addr.map(|a| format!("stun:{a}"));
        let mut files = Vec::new();
        let mut tasks = Vec::new();
        for dir in [&alice_dir, &bob_dir] {
            let node = Node::new(
                dir.clone(),
                NodeOptions {
                    server: Some(url.clone()),
                    stun: stun.clone(),
                    relay_only: false,
                    link_preview_allow_private: false,
                },
            );
            node.unlock(DEMO_PASSPHRASE.to_owned())
                .await
                .map_err(|e| anyhow::anyhow!("unlocking {}: {e}", dir.display()))?;
            let (tx, rx) = tokio::sync::oneshot::channel::<ApiFile>();
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            tasks.push(tokio::spawn(serve(node, addr, false, Some(tx))));
            files.push(rx.await.context("the local API did not start")?);
        }
        let urls: Vec<String> = files
            .iter()
            .map(|f| format!("{}/?token={}", f.url, f.token))
            .collect();
        out.print(
            &json!({
                "server": url,
                "data_dir": root.display().to_string(),
                "passphrase": DEMO_PASSPHRASE,
                "alice": { "user_id": alice.to_string(), "ui": urls[0], "data_dir": alice_dir.display().to_string() },
                "bob": { "user_id": bob.to_string(), "ui": urls[1], "data_dir": bob_dir.display().to_string() },
            }),
            |_| {
                format!(
                    "DiscordOpus demo: a signaling server and two people who are contacts.\n\n  \
                     alice: {}\n  bob:   {}\n\nOpen each link in its own browser window and say hello.\n\
                     Data lives in {} (passphrase \"{DEMO_PASSPHRASE}\"). Ctrl-C stops everything.",
                    urls[0],
                    urls[1],
                    root.display()
                )
            },
        );
        if !args.no_browser {
            for u in &urls {
                super::open_browser(u);
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let name: String = account::random_bytes::<6>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = std::env::temp_dir().join(format!("discordopus-demo-{name}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
