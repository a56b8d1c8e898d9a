//! Housekeeping of the unlocked store, off the message path:
//! - the full-text index follows the messages in small chunks (inserts do not index; a search
//!   indexes whatever is still pending itself, so this only keeps that remainder small);
//! - processed envelope ids older than any sender could still retry are dropped;
//! - the store's write-ahead log is checkpointed every second on a connection of its own, from
//!   a blocking thread and without the node's lock, so the checkpoint's copying and fsync never
//!   hold up a message (left to the writer, it came every few dozen messages and was most of
//!   the latency's 99th percentile: 8.1 ms against 4.9 ms without).
//!
//! Each step takes the node's lock only briefly, so it never holds up messages for long.

use super::Node;
use crate::account;
use dopus_core::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often the maintenance task runs.
const PERIOD: Duration = Duration::from_secs(5);
/// Messages indexed per lock hold (about 25 µs each on a slow CPU: a few milliseconds).
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

/// Starts the maintenance tasks for the current unlocked session; they end when the node locks.
pub fn start(node: Arc<Node>) {
    start_checkpoints(node.clone());
    tokio::spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(PERIOD).await;
            if node.ready().await.is_err() {
                return;
            }
            index_some(&node).await;
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                prune(&node).await;
            }
        }
    });
}

async fn index_some(node: &Node) {
    for _ in 0..INDEX_CHUNKS_PER_RUN {
        let indexed = {
            let Ok(mut r) = node.ready().await else {
                return;
            };
            match r.get_mut().store.index_pending(INDEX_CHUNK) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not update the search index");
                    return;
                }
            }
        };
        if indexed < INDEX_CHUNK {
            return;
        }
        // Let waiting work (messages, API calls) take the lock between chunks.
        tokio::task::yield_now().await;
    }
}

async fn prune(node: &Node) {
    let Ok(mut r) = node.ready().await else {
        return;
    };
    let before = account::now().minus_millis(KEEP_PROCESSED_MS);
    match r.get_mut().store.prune_processed(before) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "dropped old processed envelope ids"),
        Err(e) => tracing::warn!(error = %e, "could not prune processed envelope ids"),
    }
}

fn start_checkpoints(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut checkpointer = {
            let Ok(r) = node.ready().await else {
                return;
            };
            match r.get().store.checkpointer() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "no background checkpoints; the store checkpoints by itself");
                    return;
                }
            }
        };
        loop {
            tokio::time::sleep(CHECKPOINT_PERIOD).await;
            if node.ready().await.is_err() {
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
    });
}
