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

    /// Moves everything queued into `into` (which must be empty) by swapping the two queues, so
    /// neither side allocates per delivery: the connection task keeps one spare queue and the
    /// outbox gets it back with its capacity.
    pub(crate) fn take_into(&self, into: &mut VecDeque<Out>) {
        debug_assert!(into.is_empty());
        if let Ok(mut q) = self.queue.lock() {
            std::mem::swap(&mut *q, into);
        }
    }

    /// Takes everything queued.
    #[cfg(test)]
    pub(crate) fn take(&self) -> VecDeque<Out> {
        let mut out = VecDeque::new();
        self.take_into(&mut out);
        out
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

/// One registered connection: its device, its id and its queue.
type Registered = (DeviceId, u64, Arc<Outbox>);

/// The connections this process holds, by user, then device (a user has a handful of devices at
/// most, so a short list beats a second map; a lookup by `&DeviceId` needs no key built).
#[derive(Debug, Default)]
pub(crate) struct LocalConnections {
    map: Mutex<HashMap<UserKey, Vec<Registered>>>,
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
        let list = map.entry(user_key(user)).or_default();
        match list.iter_mut().find(|(d, _, _)| d == device) {
            Some(slot) => {
                let old = std::mem::replace(&mut slot.2, outbox);
                slot.1 = conn;
                Some(old)
            }
            None => {
                list.reserve_exact(1);
                list.push((device.clone(), conn, outbox));
                None
            }
        }
    }

    /// Removes a connection if it is still the registered one.
    pub(crate) fn remove(&self, user: &UserId, device: &DeviceId, conn: u64) {
        if let Ok(mut map) = self.map.lock() {
            let key = user_key(user);
            if let Some(list) = map.get_mut(&key) {
                list.retain(|(d, c, _)| !(d == device && *c == conn));
                if list.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }

    /// The outbox of a connection, when `conn` is still registered for the device.
    pub(crate) fn get(&self, user: &UserId, device: &DeviceId, conn: u64) -> Option<Arc<Outbox>> {
        let map = self.map.lock().ok()?;
        map.get(&user_key(user))?
            .iter()
            .find(|(d, c, _)| d == device && *c == conn)
            .map(|(_, _, o)| o.clone())
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

    #[test]
    fn connections_are_found_replaced_and_removed_by_device_and_id() {
        let user = UserId::from_key(
            dopus_types::Ed25519Key::from_bytes(&[
                0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
                0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
                0xf7, 0x07, 0x51, 0x1a,
            ])
            .unwrap(),
        );
        let (a, b) = (
            DeviceId::from_random([1; 16]),
            DeviceId::from_random([2; 16]),
        );
        let local = LocalConnections::default();
        assert!(
            local
                .insert(&user, &a, 1, Arc::new(Outbox::new(1)))
                .is_none()
        );
        assert!(
            local
                .insert(&user, &b, 2, Arc::new(Outbox::new(1)))
                .is_none()
        );
        assert!(local.get(&user, &a, 1).is_some());
        assert!(local.get(&user, &a, 2).is_none(), "another connection's id");
        assert!(
            local
                .insert(&user, &a, 3, Arc::new(Outbox::new(1)))
                .is_some()
        );
        assert!(local.get(&user, &a, 1).is_none(), "replaced");
        local.remove(&user, &a, 1);
        assert!(
            local.get(&user, &a, 3).is_some(),
            "an old id removes nothing"
        );
        local.remove(&user, &a, 3);
        local.remove(&user, &b, 2);
        assert!(local.get(&user, &a, 3).is_none() && local.get(&user, &b, 2).is_none());
        assert!(local.map.lock().unwrap().is_empty());
    }
}
