//! Housekeeping of the unlocked store, off the message path:
//! - the full-text index follows the messages in small chunks (inserts do not index; a search
//!   indexes whatever is still pending itself, so this only keeps that remainder small), each
//!   chunk a job of its own for the actor, so messages are never held up for long;
//! - processed envelope ids older than any sender could still retry are dropped, and so are
//!   channel blob holders heard of more than 30 days ago;
//! - the store's write-ahead log is checkpointed every second on a connection of its own, from
//!   a blocking thread and outside the actor, so the checkpoint's copying and fsync never hold
//!   up a message (left to the writer, it came every few dozen messages and was most of the
//!   latency's 99th percentile: 8.1 ms against 4.9 ms without).

use super::mailbox::{ActorTx, Msg};
use crate::account;
use dopus_core::store::Store;
use dopus_store::SqliteStore;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the maintenance task runs.
const PERIOD: Duration = Duration::from_secs(5);
/// Messages indexed per job (about 25 µs each on a slow CPU: a few milliseconds).
const INDEX_CHUNK: usize = 250;
/// Most chunks per run, so a huge backlog is spread over several runs.
const INDEX_CHUNKS_PER_RUN: usize = 40;
/// Processed ids are kept this long: longer than the server's mailbox keeps an envelope (30 days
/// by default), so a retry of anything still deliverable is recognised.
const KEEP_PROCESSED_MS: u64 = 35 * 24 * 60 * 60 * 1000;
/// Processed ids are pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// How often the write-ahead log is checkpointed.
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(1);

/// Starts the maintenance tasks; they end when the actor does.
pub fn start(rt: &tokio::runtime::Handle, actor: ActorTx, store: &SqliteStore) {
    match store.checkpointer() {
        Ok(checkpointer) => {
            rt.spawn(checkpoints(checkpointer, actor.clone()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "no background checkpoints; the store checkpoints by itself");
        }
    }
    rt.spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(PERIOD).await;
            if actor.is_closed() {
                return;
            }
            for _ in 0..INDEX_CHUNKS_PER_RUN {
                match job(&actor, |store| store.index_pending(INDEX_CHUNK)).await {
                    Some(Ok(n)) if n >= INDEX_CHUNK => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "could not update the search index");
                        break;
                    }
                    _ => break,
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = account::now().minus_millis(KEEP_PROCESSED_MS);
                match job(&actor, move |store| store.prune_processed(before)).await {
                    Some(Ok(0)) | None => {}
                    Some(Ok(n)) => {
                        tracing::debug!(pruned = n, "dropped old processed envelope ids")
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "could not prune processed envelope ids");
                    }
                }
                // Channel blob holders heard of too long ago (docs/files.md, "Many sources").
                let before =
                    account::now().minus_millis(dopus_core::transfer::BLOB_HOLDER_MAX_AGE_MS);
                let pruned = job(&actor, move |store| {
                    store.apply_one(dopus_core::store::Change::PruneBlobHolders { before })
                })
                .await;
                if let Some(Err(e)) = pruned {
                    tracing::warn!(error = %e, "could not prune old blob holders");
                }
            }
        }
    });
}

/// Runs `f` on the store as a job of the actor; `None` if the actor is gone.
async fn job<T: Send + 'static>(
    actor: &ActorTx,
    f: impl FnOnce(&mut SqliteStore) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    actor
        .send(Msg::Job(Box::new(move |cx| {
            let out = f(cx.store);
            Box::new(move |_| {
                let _ = tx.send(out);
            })
        })))
        .ok()?;
    rx.await.ok()
}

async fn checkpoints(mut checkpointer: dopus_store::Checkpointer, actor: ActorTx) {
    loop {
        tokio::time::sleep(CHECKPOINT_PERIOD).await;
        if actor.is_closed() {
            return;
        }
        // The connection moves to the blocking thread and back.
        let done = tokio::task::spawn_blocking(move || {
            let result = checkpointer.checkpoint();
            (checkpointer, result)
        })
        .await;
        match done {
            Ok((c, result)) => {
                checkpointer = c;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "checkpoint failed; retrying later");
                }
            }
            Err(_) => return,
        }
    }
}
