//! Presence and delivery for a single server process: plain maps in memory.

use super::{BoxFut, Bus, BusMessage, Delivery, DeviceEntry, PresenceStore, StoreError};
use crate::outbox::{LocalConnections, Out, UserKey, user_key};
use dopus_proto::signaling::Status;
use dopus_types::{DeviceId, Timestamp, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct UserState {
    devices: Vec<(DeviceId, DeviceEntry)>,
    contacts: Option<HashSet<UserKey>>,
    contact_ids: Vec<UserId>,
    /// When the contact list may be forgotten once no device is connected.
    keep_until: Timestamp,
}

/// In-memory [`PresenceStore`].
#[derive(Debug, Default)]
pub struct MemoryPresence {
    users: Mutex<HashMap<UserKey, UserState>>,
}

impl MemoryPresence {
    fn lock(&self) -> Result<MutexGuard<'_, HashMap<UserKey, UserState>>, StoreError> {
        self.users.lock().map_err(|_| StoreError::Task)
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFut<'static, T> {
    Box::pin(std::future::ready(v))
}

impl PresenceStore for MemoryPresence {
    fn attach(
        &self,
        user: UserId,
        device: DeviceId,
        entry: DeviceEntry,
    ) -> BoxFut<'_, Result<Option<DeviceEntry>, StoreError>> {
        ready(self.lock().map(|mut users| {
            let state = users.entry(user_key(&user)).or_default();
            match state.devices.iter_mut().find(|(d, _)| *d == device) {
                Some((_, old)) => Some(std::mem::replace(old, entry)),
                None => {
                    // Most users have one device online: room for exactly one (a first `push`
                    // would make room for four).
                    state.devices.reserve_exact(1);
                    state.devices.push((device, entry));
                    None
                }
            }
        }))
    }

    fn set_status(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
        status: Status,
    ) -> BoxFut<'_, Result<bool, StoreError>> {
        ready(self.lock().map(|mut users| {
            let Some(state) = users.get_mut(&user_key(&user)) else {
                return false;
            };
            match state
                .devices
                .iter_mut()
                .find(|(d, e)| *d == device && e.conn == conn && e.node == node)
            {
                Some((_, e)) => {
                    e.status = status;
                    true
                }
                None => false,
            }
        }))
    }

    fn detach(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
    ) -> BoxFut<'_, Result<(bool, usize), StoreError>> {
        ready(self.lock().map(|mut users| {
            let key = user_key(&user);
            let Some(state) = users.get_mut(&key) else {
                return (false, 0);
            };
            let before = state.devices.len();
            state
                .devices
                .retain(|(d, e)| !(*d == device && e.conn == conn && e.node == node));
            let removed = state.devices.len() != before;
            let left = state.devices.len();
            if left == 0 && state.contacts.is_none() {
                users.remove(&key);
            }
            (removed, left)
        }))
    }

    fn devices(
        &self,
        user: UserId,
    ) -> BoxFut<'_, Result<Vec<(DeviceId, DeviceEntry)>, StoreError>> {
        ready(self.lock().map(|users| {
            users
                .get(&user_key(&user))
                .map(|s| s.devices.clone())
                .unwrap_or_default()
        }))
    }

    fn set_contacts(
        &self,
        user: UserId,
        contacts: Vec<UserId>,
        now: Timestamp,
        keep_ms: u64,
    ) -> BoxFut<'_, Result<Vec<UserId>, StoreError>> {
        ready(self.lock().map(|mut users| {
            let state = users.entry(user_key(&user)).or_default();
            state.contacts = Some(contacts.iter().map(user_key).collect());
            state.keep_until = now.plus_millis(keep_ms);
            std::mem::replace(&mut state.contact_ids, contacts)
        }))
    }

    fn contacts(&self, user: UserId) -> BoxFut<'_, Result<Vec<UserId>, StoreError>> {
        ready(self.lock().map(|users| {
            users
                .get(&user_key(&user))
                .map(|s| s.contact_ids.clone())
                .unwrap_or_default()
        }))
    }

    fn listed_by(
        &self,
        users_: Vec<UserId>,
        contact: UserId,
    ) -> BoxFut<'_, Result<Vec<bool>, StoreError>> {
        let c = user_key(&contact);
        ready(self.lock().map(|users| {
            users_
                .iter()
                .map(|u| {
                    users
                        .get(&user_key(u))
                        .and_then(|s| s.contacts.as_ref())
                        .is_some_and(|set| set.contains(&c))
                })
                .collect()
        }))
    }

    fn prune_contacts(&self, now: Timestamp) -> BoxFut<'_, Result<u64, StoreError>> {
        ready(self.lock().map(|mut users| {
            let before = users.len();
            users.retain(|_, s| !s.devices.is_empty() || s.keep_until > now);
            (before - users.len()) as u64
        }))
    }
}

/// A [`Bus`] that only knows this process's connections.
#[derive(Debug)]
pub struct LocalBus {
    pub(crate) local: Arc<LocalConnections>,
}

impl LocalBus {
    pub(crate) fn new(local: Arc<LocalConnections>) -> Self {
        Self { local }
    }
}

/// Hands a bus message to a local connection.
pub(crate) fn deliver_local(
    local: &LocalConnections,
    conn: u64,
    user: &UserId,
    device: &DeviceId,
    msg: BusMessage,
) -> Delivery {
    let Some(outbox) = local.get(user, device, conn) else {
        return Delivery::Gone;
    };
    let out = match msg {
        BusMessage::Frame(text) => Out::Frame(text),
        BusMessage::Poke => Out::Poke,
        BusMessage::Close(code) => Out::Close(code),
    };
    if outbox.push(out) {
        Delivery::Delivered
    } else {
        Delivery::Busy
    }
}

impl Bus for LocalBus {
    fn deliver(
        &self,
        entry: DeviceEntry,
        user: UserId,
        device: DeviceId,
        msg: BusMessage,
    ) -> BoxFut<'_, Result<Delivery, StoreError>> {
        ready(Ok(deliver_local(
            &self.local,
            entry.conn,
            &user,
            &device,
            msg,
        )))
    }
}
