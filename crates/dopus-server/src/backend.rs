//! The storage and cluster seams: everything that must be shared when several server processes
//! serve one deployment sits behind these traits.
//!
//! - [`KeyDirectory`]: published bundles and the atomic one-time-key claim.
//! - [`Mailbox`]: the device registry and durable per-device queues.
//! - [`PresenceStore`]: which device is connected where, with which status, and contact lists.
//! - [`Bus`]: hands a frame to the server process holding a device's connection.
//!
//! The embedded deployment uses [`sqlite::SqliteStore`] (key directory, mailbox) with
//! [`memory::MemoryPresence`] and [`memory::LocalBus`]; `--redis` swaps all four for
//! [`redis::RedisBackend`].

pub mod memory;
pub mod redis;
pub mod sqlite;

use dopus_proto::bundle::{ClaimedBundle, DeviceBundle};
use dopus_proto::signaling::{DeliveryKind, ErrorCode, Sender, Status};
use dopus_types::{DeviceId, Timestamp, UserId};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so the traits stay object-safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage or cluster failure. Its text never contains payloads, keys or addresses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis refused an operation or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A stored record no longer parses (written by an incompatible version, or damaged).
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed")]
    Task,
}

/// Why a mailbox refused an item.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The device's mailbox is at its item or byte quota.
    #[error("mailbox full")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One device's bundle as claimed for one requester.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// What the requester gets.
    pub bundle: ClaimedBundle,
    /// One-time keys left for that device after this claim.
    pub remaining: u64,
}

/// Stores signed bundles; claims are atomic so each one-time key is handed out once.
pub trait KeyDirectory: Send + Sync {
    /// Stores a verified bundle: certificate and fallback key replace the old ones, one-time
    /// keys are appended (ids already stored are ignored). A changed certificate drops the old
    /// one-time keys, since they were signed by the old device key. Returns the one-time keys
    /// now stored for that device.
    fn publish(&self, bundle: DeviceBundle, now: Timestamp) -> BoxFut<'_, Result<u64, StoreError>>;

    /// One claimed bundle per device of `user`, each with at most one one-time key removed from
    /// the store in the same atomic step.
    fn claim(&self, user: UserId) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>>;

    /// One-time keys stored for a device, `None` when it never published.
    fn one_time_key_count(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> BoxFut<'_, Result<Option<u64>, StoreError>>;
}

/// An item to queue.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// What kind of frame.
    pub kind: DeliveryKind,
    /// The authenticated sender.
    pub from: Sender,
    /// The opaque payload.
    pub payload: String,
    /// When the server accepted it.
    pub sent_at: Timestamp,
    /// When it is deleted if still not acknowledged.
    pub expires_at: Timestamp,
}

/// A queued item.
#[derive(Debug, Clone)]
pub struct StoredItem {
    /// Per-deployment increasing id; order of delivery.
    pub id: u64,
    /// The item.
    pub item: NewItem,
}

/// Per-device quota, and the share of it the item's sender may fill.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Most items.
    pub max_items: u64,
    /// Most payload bytes.
    pub max_bytes: u64,
    /// Most items from the item's sender (its user, any of its devices).
    pub sender_max_items: u64,
    /// Most payload bytes from the item's sender.
    pub sender_max_bytes: u64,
}

/// The device registry and the durable per-device queues.
pub trait Mailbox: Send + Sync {
    /// Records that a device logged in (so frames can be queued for it while it is away).
    fn register_device(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<(), StoreError>>;

    /// Every device of `user` that ever logged in and was not pruned.
    fn known_devices(&self, user: UserId) -> BoxFut<'_, Result<Vec<DeviceId>, StoreError>>;

    /// Queues an item, committed durably before this returns; refused when the device's
    /// mailbox, or the share of it that the item's sender (`item.from.user`) may fill, is full.
    fn push(
        &self,
        user: UserId,
        device: DeviceId,
        item: NewItem,
        quota: Quota,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, PushError>>;

    /// Unexpired items with an id above `after`, oldest first.
    fn fetch(
        &self,
        user: UserId,
        device: DeviceId,
        after: u64,
        limit: usize,
        now: Timestamp,
    ) -> BoxFut<'_, Result<Vec<StoredItem>, StoreError>>;

    /// Unexpired items waiting for a device.
    fn count(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Deletes acknowledged items of this device; ids of other devices are ignored.
    fn ack(
        &self,
        user: UserId,
        device: DeviceId,
        ids: Vec<u64>,
    ) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Deletes expired items and devices unseen for longer than `device_ttl_ms`.
    fn purge(&self, now: Timestamp, device_ttl_ms: u64) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Items waiting in all mailboxes (for metrics).
    fn depth(&self) -> BoxFut<'_, Result<u64, StoreError>>;
}

/// Where one device is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The device's own status.
    pub status: Status,
    /// The server process holding the connection.
    pub node: Arc<str>,
    /// The connection, unique within that process.
    pub conn: u64,
}

/// Who is connected where, their statuses, and contact lists (not durable: presence is session
/// state; a contact list is kept for `keep_ms` after its last sync, also while its user is
/// away, because mailbox shares depend on it).
pub trait PresenceStore: Send + Sync {
    /// Records a connected device, returning the entry it replaced (another connection of the
    /// same device).
    fn attach(
        &self,
        user: UserId,
        device: DeviceId,
        entry: DeviceEntry,
    ) -> BoxFut<'_, Result<Option<DeviceEntry>, StoreError>>;

    /// Changes a device's status if `conn` is still its connection.
    fn set_status(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
        status: Status,
    ) -> BoxFut<'_, Result<bool, StoreError>>;

    /// Removes a device if `conn` is still its connection; returns whether it did and how many
    /// devices of the user remain.
    fn detach(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
    ) -> BoxFut<'_, Result<(bool, usize), StoreError>>;

    /// The connected devices of `user`.
    fn devices(&self, user: UserId)
    -> BoxFut<'_, Result<Vec<(DeviceId, DeviceEntry)>, StoreError>>;

    /// Replaces `user`'s contact list, returning the previous one; the list is kept until
    /// `keep_ms` after `now`, also after the user's last device left.
    fn set_contacts(
        &self,
        user: UserId,
        contacts: Vec<UserId>,
        now: Timestamp,
        keep_ms: u64,
    ) -> BoxFut<'_, Result<Vec<UserId>, StoreError>>;

    /// `user`'s contact list.
    fn contacts(&self, user: UserId) -> BoxFut<'_, Result<Vec<UserId>, StoreError>>;

    /// Which of `users` list `contact` in their own contact lists.
    fn listed_by(
        &self,
        users: Vec<UserId>,
        contact: UserId,
    ) -> BoxFut<'_, Result<Vec<bool>, StoreError>>;

    /// Forgets the contact lists kept past their time for users with no connected device;
    /// returns how many.
    fn prune_contacts(&self, now: Timestamp) -> BoxFut<'_, Result<u64, StoreError>>;
}

/// What the bus carries to a connection.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A serialized server frame to write as is (shared, never copied per recipient).
    Frame(axum::extract::ws::Utf8Bytes),
    /// New mailbox items were stored for this device: fetch them.
    Poke,
    /// The device logged in elsewhere: close with this code.
    Close(ErrorCode),
}

/// Whether the bus handed a message over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// In the connection's queue.
    Delivered,
    /// The connection's queue is full.
    Busy,
    /// No such connection any more.
    Gone,
}

/// Hands messages to the server process that holds a device's connection.
pub trait Bus: Send + Sync {
    /// Delivers `msg` to `device` of `user` on the connection named by `entry`.
    fn deliver(
        &self,
        entry: DeviceEntry,
        user: UserId,
        device: DeviceId,
        msg: BusMessage,
    ) -> BoxFut<'_, Result<Delivery, StoreError>>;
}

/// The four seams, as one deployment uses them.
#[derive(Clone)]
pub struct Backends {
    /// Key directory.
    pub directory: Arc<dyn KeyDirectory>,
    /// Mailbox and device registry.
    pub mailbox: Arc<dyn Mailbox>,
    /// Presence and contacts.
    pub presence: Arc<dyn PresenceStore>,
    /// Cross-process delivery.
    pub bus: Arc<dyn Bus>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends")
    }
}
