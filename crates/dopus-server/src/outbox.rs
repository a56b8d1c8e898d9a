//! The queue between everything that wants to write to a connection and the connection's task.
//!
//! A plain `VecDeque` behind a short-lived lock plus a `Notify`: an idle connection costs no
//! allocation here (a tokio channel preallocates a block per connection), and pushes never wait,
//! so one slow reader can never stall the connection that relays to it.

use dopus_proto::signaling::ErrorCode;
use dopus_types::{DeviceId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Something for a connection task to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Write this text frame.
    Frame(axum::extract::ws::Utf8Bytes),
    /// Look in the mailbox again.
    Poke,
    /// Close the connection with this code.
    Close(ErrorCode),
}

/// A connection's inbound work queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Out>>,
    notify: Notify,
    cap: usize,
}

impl Outbox {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            cap,
        }
    }

    /// Queues `out`; frames are refused when `cap` items are waiting, control items never are.
    pub(crate) fn push(&self, out: Out) -> bool {
        {
            let Ok(mut q) = self.queue.lock() else {
                return false;
            };
            if matches!(out, Out::Frame(_)) && q.len() >= self.cap {
                return false;
            }
            q.push_back(out);
        }
        self.notify.notify_one();
        true
    }

    /// Takes everything queued.
    pub(crate) fn take(&self) -> VecDeque<Out> {
        match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => VecDeque::new(),
        }
    }

    /// Resolves when something was pushed since the last call.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// The user half of the key of the local connection table: the raw identity key, which is far
/// smaller than a parsed `UserId`.
pub(crate) type UserKey = [u8; 32];

pub(crate) fn user_key(user: &UserId) -> UserKey {
    user.key().to_bytes()
}

/// One registered connection: its id and its queue.
type Registered = (u64, Arc<Outbox>);

/// The connections this process holds.
#[derive(Debug, Default)]
pub(crate) struct LocalConnections {
    map: Mutex<HashMap<(UserKey, DeviceId), Registered>>,
}

impl LocalConnections {
    /// Registers a connection, returning the one it replaces.
    pub(crate) fn insert(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn: u64,
        outbox: Arc<Outbox>,
    ) -> Option<Arc<Outbox>> {
        let mut map = self.map.lock().ok()?;
        map.insert((user_key(user), device.clone()), (conn, outbox))
            .map(|(_, o)| o)
    }

    /// Removes a connection if it is still the registered one.
    pub(crate) fn remove(&self, user: &UserId, device: &DeviceId, conn: u64) {
        if let Ok(mut map) = self.map.lock() {
            let key = (user_key(user), device.clone());
            if map.get(&key).is_some_and(|(c, _)| *c == conn) {
                map.remove(&key);
            }
        }
    }

    /// The outbox of a connection, when `conn` is still registered for the device.
    pub(crate) fn get(&self, user: &UserId, device: &DeviceId, conn: u64) -> Option<Arc<Outbox>> {
        let map = self.map.lock().ok()?;
        map.get(&(user_key(user), device.clone()))
            .filter(|(c, _)| *c == conn)
            .map(|(_, o)| o.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_refused_at_capacity_but_control_items_are_not() {
        let o = Outbox::new(2);
        assert!(o.push(Out::Frame("a".into())));
        assert!(o.push(Out::Frame("b".into())));
        assert!(!o.push(Out::Frame("c".into())));
        assert!(o.push(Out::Poke));
        assert!(o.push(Out::Close(ErrorCode::ShuttingDown)));
        assert_eq!(o.take().len(), 4);
        assert!(o.push(Out::Frame("d".into())));
    }
}
