#![doc = include_str!("../README.md")]

mod apply;
#[cfg(test)]
mod batch_tests;
mod codec;
mod fts;
mod keyfile;
mod keyring;
mod migrations;
mod queries;
#[cfg(test)]
mod tests;

pub use keyfile::{KEY_FILE_VERSION, KeyFileError};
pub use keyring::{KdfParams, KeyringError, PickleKey};
pub use migrations::SCHEMA_VERSION;

/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads key file text as unlocking does; when it parses, whether writing it back gives
    /// text that parses to the same file.
    pub fn key_file(text: &str) -> Option<bool> {
        let file = crate::keyfile::KeyFile::from_json(text).ok()?;
        Some(crate::keyfile::KeyFile::from_json(&file.to_json()).ok() == Some(file))
    }
}

use codec::DbResult;
use dopus_core::store::{
    AccountRecord, Applied, Changes, ChannelCiphertextRecord, ChannelId, Contact, Conversation,
    ConversationId, ConversationSummary, EnvelopeId, FileTransfer, MegolmInboundRecord,
    MegolmOutboundRecord, MegolmWaitingRecord, Message, MessageId, OlmSessionRecord, OutboxEntry,
    PeerDevice, ReactionSummary, SearchHit, SearchQuery, Seq, SpaceOpRecord, Store, StoreError,
    TransferId,
};
use dopus_types::BlobHash;
use dopus_types::{Curve25519Key, DeviceId, SpaceId, Timestamp, UserId};
use keyfile::KeyFile;
use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::path::{Path, PathBuf};

/// File name of the key file inside the store directory.
pub const KEY_FILE_NAME: &str = "store.key";
/// File name of the SQLCipher database inside the store directory (with `-wal` and `-shm`
/// beside it while open).
pub const DB_FILE_NAME: &str = "store.db";
/// The write-ahead log is checkpointed by the writing connection itself only past this many
/// pages (40 MiB); normally a [`Checkpointer`] does it sooner, off the message path.
pub const AUTO_CHECKPOINT_PAGES: i64 = 10_000;

/// Why a store could not be created, opened or re-keyed. Messages are safe to show: they never
/// contain the passphrase, keys or stored data.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The passphrase does not unwrap the master key. Nothing on disk was touched.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// An empty passphrase was given to create or change; it would protect nothing.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    /// There is no store (no key file) in the directory.
    #[error("no store in this directory")]
    NotFound,
    /// `create` found a key file or database already there and refused to overwrite it.
    #[error("a store already exists in this directory")]
    AlreadyExists,
    /// The key file is unreadable, corrupt or from a newer version.
    #[error(transparent)]
    KeyFile(KeyFileError),
    /// The database was written by a newer DiscordOpus; opening it could lose data.
    #[error(
        "the database was written by a newer version of DiscordOpus (schema {found}, this build supports up to {supported}); update DiscordOpus to open it"
    )]
    TooNew {
        /// Schema version in the database.
        found: u32,
        /// Newest schema version this build knows.
        supported: u32,
    },
    /// The database header holds an impossible schema version.
    #[error("the database schema version {0} is invalid")]
    BadSchemaVersion(i64),
    /// The key from the key file does not decrypt the database: the database belongs to
    /// another store or is damaged.
    #[error("the database does not match the key file (it belongs to another store or is damaged)")]
    KeyMismatch,
    /// A migration failed; the database was left at its previous version.
    #[error("migrating the database to schema {version} failed")]
    Migration {
        /// The migration that failed.
        version: u32,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite failed.
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// The file system failed.
    #[error("file system error")]
    Io(#[from] std::io::Error),
}

impl From<KeyFileError> for OpenError {
    fn from(e: KeyFileError) -> Self {
        match e {
            KeyFileError::Keyring(KeyringError::WrongPassphrase) => OpenError::WrongPassphrase,
            KeyFileError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                OpenError::NotFound
            }
            other => OpenError::KeyFile(other),
        }
    }
}

/// The store on SQLCipher: one directory with `store.key` and `store.db`.
///
/// Open it once per process and keep it; every method is synchronous, so call it from a
/// blocking context (for example `tokio::task::spawn_blocking` or a dedicated thread).
pub struct SqliteStore {
    conn: Connection,
    pickle_key: PickleKey,
    dir: PathBuf,
    /// A [`SqliteStore::batch`] is open: `apply` uses savepoints inside its transaction.
    in_batch: bool,
    /// The `PRAGMA key` statement, for a [`Checkpointer`]'s own connection.
    key_statement: zeroize::Zeroizing<String>,
}

/// A second connection to an open store that only moves the write-ahead log into the database
/// file (a WAL checkpoint, with its fsync), so that work happens off the thread that writes
/// messages. Made by [`SqliteStore::checkpointer`]; `Send`, meant for a blocking thread.
pub struct Checkpointer {
    conn: Connection,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Frames in the write-ahead log.
    pub wal_frames: u64,
    /// Frames now copied into the database file.
    pub checkpointed: u64,
}

impl Checkpointer {
    /// Copies what it can of the write-ahead log into the database file without waiting for
    /// (or blocking) the writer: a `PASSIVE` checkpoint.
    pub fn checkpoint(&self) -> Result<CheckpointStats, StoreError> {
        let (log, done): (i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| StoreError::from(codec::DbError::from(e)))?;
        Ok(CheckpointStats {
            wal_frames: u64::try_from(log).unwrap_or(0),
            checkpointed: u64::try_from(done).unwrap_or(0),
        })
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Whether `dir` holds a store (its key file exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEY_FILE_NAME).exists()
    }

    /// Creates a new store in `dir` (created if missing, mode 0700 on Unix) with a fresh random
    /// master key wrapped under `passphrase`. Refuses to touch an existing store.
    pub fn create(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self, OpenError> {
        if passphrase.is_empty() {
            return Err(OpenError::EmptyPassphrase);
        }
        let key_path = dir.join(KEY_FILE_NAME);
        let db_path = dir.join(DB_FILE_NAME);
        if key_path.exists() || db_path.exists() {
            return Err(OpenError::AlreadyExists);
        }
        create_private_dir(dir)?;
        let master = keyring::random_secret()
            .map_err(|_| OpenError::KeyFile(KeyFileError::Keyring(KeyringError::Random)))?;
        let file = KeyFile::seal(&master, passphrase.as_bytes(), params)?;
        // The key file goes first: a crash before the database exists leaves a store that
        // opens (empty), never a database that no key file can open.
        file.write_atomic(&key_path)?;
        Self::open_db(dir, &master)
    }

    /// Opens the store in `dir`. Runs the one Argon2id derivation, then hands SQLCipher its
    /// raw key and applies pending migrations. A wrong passphrase fails before any file is
    /// opened for writing.
    pub fn open(dir: &Path, passphrase: &str) -> Result<Self, OpenError> {
        let file = KeyFile::read(&dir.join(KEY_FILE_NAME))?;
        let master = file.open(passphrase.as_bytes())?;
        Self::open_db(dir, &master)
    }

    /// Re-wraps the master key under `new` (with fresh salt and nonce and the given cost).
    /// The database is not touched, so this is instant apart from the two KDF runs, and works
    /// whether or not the store is open. The key file is replaced atomically.
    pub fn change_passphrase(
        dir: &Path,
        old: &str,
        new: &str,
        params: KdfParams,
    ) -> Result<(), OpenError> {
        if new.is_empty() {
            return Err(OpenError::EmptyPassphrase);
        }
        let path = dir.join(KEY_FILE_NAME);
        let master = KeyFile::read(&path)?.open(old.as_bytes())?;
        KeyFile::seal(&master, new.as_bytes(), params)?.write_atomic(&path)?;
        Ok(())
    }

    /// The key for vodozemac's encrypted pickles.
    pub fn pickle_key(&self) -> &PickleKey {
        &self.pickle_key
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A second connection that checkpoints the write-ahead log (see [`Checkpointer`]). The
    /// store's own connection still checkpoints by itself once the log passes
    /// [`AUTO_CHECKPOINT_PAGES`], a safety net for when nobody calls this.
    pub fn checkpointer(&self) -> Result<Checkpointer, OpenError> {
        let conn = Connection::open_with_flags(
            self.dir.join(DB_FILE_NAME),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&self.key_statement)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(Checkpointer { conn })
    }

    /// Like [`SqliteStore::batch`], but all or nothing: if `f` answers `Err`, everything it
    /// applied is rolled back (nothing of the batch becomes durable) and the error is handed
    /// back. Inside another batch it joins that one, whose caller decides.
    pub fn try_batch<T, E>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        if self.in_batch {
            return Ok(f(self));
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| StoreError::from(codec::DbError::from(e)))?;
        self.in_batch = true;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *self)));
        self.in_batch = false;
        match result {
            Ok(Ok(r)) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(Ok(r)),
                Err(e) => {
                    // SQLite may have rolled back already; make sure no transaction is left.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(StoreError::from(codec::DbError::from(e)))
                }
            },
            Ok(Err(e)) => {
                self.conn
                    .execute_batch("ROLLBACK")
                    .map_err(|e| StoreError::from(codec::DbError::from(e)))?;
                Ok(Err(e))
            }
            Err(panic) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Runs `f` with every [`Store::apply`] inside one transaction (group commit): each `apply`
    /// is still all-or-nothing (a savepoint), reads inside `f` see the earlier applies, and
    /// everything becomes durable at once when `f` returns. Nothing applied inside `f` is
    /// durable before this returns `Ok`, so send nothing that depends on it from inside `f`.
    ///
    /// If the final commit fails, every apply of the batch is rolled back and the error is
    /// returned. If `f` panics, the batch is rolled back and the panic resumed. A nested call
    /// joins the outer batch.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> Result<R, StoreError> {
        self.try_batch(|s| Ok::<R, std::convert::Infallible>(f(s)))
            .map(|r| r.unwrap_or_else(|never| match never {}))
    }

    /// Closes the database, checkpointing the WAL into the main file. Dropping the store does
    /// the same but cannot report an error.
    pub fn close(self) -> Result<(), OpenError> {
        self.conn.close().map_err(|(_, e)| OpenError::Database(e))
    }

    fn open_db(dir: &Path, master: &keyring::Secret) -> Result<Self, OpenError> {
        let db_path = dir.join(DB_FILE_NAME);
        if !db_path.exists() {
            tracing::warn!("store database missing; creating an empty one");
        }
        let mut conn = Connection::open_with_flags(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let literal = keyring::sqlcipher_key_literal(master);
        let statement = zeroize::Zeroizing::new(format!("PRAGMA key = \"{}\";", *literal));
        conn.execute_batch(&statement)?;
        // The first read decrypts page 1: this is where a wrong key shows.
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => OpenError::KeyMismatch,
                _ => OpenError::Database(e),
            });
        }
        configure(&conn)?;
        migrations::migrate(&mut conn, migrations::MIGRATIONS)?;
        Ok(Self {
            conn,
            pickle_key: PickleKey::derive(master),
            dir: dir.to_owned(),
            in_batch: false,
            key_statement: statement,
        })
    }
}

/// Connection settings; see docs/storage.md for why each is set.
fn configure(conn: &Connection) -> Result<(), OpenError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "store database is not in WAL mode");
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA secure_delete = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -32768;",
    )?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn out<T>(r: DbResult<T>) -> Result<T, StoreError> {
    r.map_err(StoreError::from)
}

impl Store for SqliteStore {
    fn apply(&mut self, changes: Changes) -> Result<Applied, StoreError> {
        if self.in_batch {
            out(apply::apply_in_batch(&mut self.conn, changes))
        } else {
            out(apply::apply(&mut self.conn, changes))
        }
    }

    fn account(&self) -> Result<Option<AccountRecord>, StoreError> {
        out(queries::account(&self.conn))
    }

    fn peer_device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<PeerDevice>, StoreError> {
        out(queries::peer_device(&self.conn, user, device))
    }

    fn peer_devices(&self, user: &UserId) -> Result<Vec<PeerDevice>, StoreError> {
        out(queries::peer_devices(&self.conn, user))
    }

    fn peer_device_by_curve25519(
        &self,
        key: &Curve25519Key,
    ) -> Result<Option<PeerDevice>, StoreError> {
        out(queries::peer_device_by_curve25519(&self.conn, key))
    }

    fn contact(&self, user: &UserId) -> Result<Option<Contact>, StoreError> {
        out(queries::contact(&self.conn, user))
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        out(queries::contacts(&self.conn))
    }

    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        out(queries::conversation(&self.conn, id))
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        out(queries::conversations(&self.conn))
    }

    fn message(&self, id: &MessageId) -> Result<Option<Message>, StoreError> {
        out(queries::message(&self.conn, id))
    }

    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        out(queries::messages_before(
            &self.conn,
            conversation,
            before,
            limit,
        ))
    }

    fn newest_sent_at(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Timestamp>, StoreError> {
        out(queries::newest_sent_at(&self.conn, conversation))
    }

    fn messages_arrived_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        out(queries::messages_arrived_before(
            &self.conn,
            conversation,
            before,
            limit,
        ))
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        out(queries::search(&self.conn, query))
    }

    fn search_count(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        out(queries::search_count(&self.conn, query))
    }

    fn index_pending(&mut self, max_rows: usize) -> Result<usize, StoreError> {
        out(fts::index_pending(&self.conn, max_rows))
    }

    fn reactions(&self, message: &MessageId) -> Result<Vec<ReactionSummary>, StoreError> {
        out(queries::reactions(&self.conn, message))
    }

    fn olm_sessions(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OlmSessionRecord>, StoreError> {
        out(queries::olm_sessions(&self.conn, user, device))
    }

    fn olm_sessions_for_key(
        &self,
        key: &Curve25519Key,
    ) -> Result<Vec<OlmSessionRecord>, StoreError> {
        out(queries::olm_sessions_for_key(&self.conn, key))
    }

    fn megolm_inbound(&self, session_id: &str) -> Result<Option<MegolmInboundRecord>, StoreError> {
        out(queries::megolm_inbound(&self.conn, session_id))
    }

    fn megolm_outbound(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<MegolmOutboundRecord>, StoreError> {
        out(queries::megolm_outbound(&self.conn, channel))
    }

    fn outbox_for_peer(&self, peer: &UserId, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        out(queries::outbox_for_peer(&self.conn, peer, limit))
    }

    fn outbox_due_for_peer(
        &self,
        peer: &UserId,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        out(queries::outbox_due_for_peer(&self.conn, peer, now, limit))
    }

    fn outbox_due_peers(&self, now: Timestamp) -> Result<Vec<UserId>, StoreError> {
        out(queries::outbox_due_peers(&self.conn, now))
    }

    fn outbox_next_attempt_at(&self) -> Result<Option<Timestamp>, StoreError> {
        out(queries::outbox_next_attempt_at(&self.conn))
    }

    fn is_processed(&self, id: &EnvelopeId) -> Result<bool, StoreError> {
        out(queries::is_processed(&self.conn, id))
    }

    fn prune_processed(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        out(queries::prune_processed(&self.conn, before))
    }

    fn transfer(&self, id: &TransferId) -> Result<Option<FileTransfer>, StoreError> {
        out(queries::transfer(&self.conn, id))
    }

    fn transfers(&self, conversation: &ConversationId) -> Result<Vec<FileTransfer>, StoreError> {
        out(queries::transfers(&self.conn, conversation))
    }

    fn transfers_of_blob(&self, blob: &BlobHash) -> Result<Vec<FileTransfer>, StoreError> {
        out(queries::transfers_of_blob(&self.conn, blob))
    }

    fn unfinished_transfers(&self) -> Result<Vec<FileTransfer>, StoreError> {
        out(queries::unfinished_transfers(&self.conn))
    }

    fn blob_holders(&self, blob: &BlobHash) -> Result<Vec<UserId>, StoreError> {
        out(queries::blob_holders(&self.conn, blob))
    }

    fn spaces(&self) -> Result<Vec<SpaceId>, StoreError> {
        out(queries::spaces(&self.conn))
    }

    fn space_ops(&self, space: &SpaceId) -> Result<Vec<SpaceOpRecord>, StoreError> {
        out(queries::space_ops(&self.conn, space))
    }

    fn megolm_inbound_for_channel(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<MegolmInboundRecord>, StoreError> {
        out(queries::megolm_inbound_for_channel(&self.conn, channel))
    }

    fn megolm_seen(&self, session_id: &str, index: u32) -> Result<bool, StoreError> {
        out(queries::megolm_seen(&self.conn, session_id, index))
    }

    fn megolm_waiting(&self, session_id: &str) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        out(queries::megolm_waiting(&self.conn, session_id))
    }

    fn channel_ciphertexts(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<ChannelCiphertextRecord>, StoreError> {
        out(queries::channel_ciphertexts(&self.conn, channel, limit))
    }

    fn megolm_waiting_sessions(
        &self,
        limit: usize,
    ) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        out(queries::megolm_waiting_sessions(&self.conn, limit))
    }

    fn megolm_waiting_in_channel(
        &self,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<MegolmWaitingRecord>, StoreError> {
        out(queries::megolm_waiting_in_channel(
            &self.conn, channel, limit,
        ))
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        out(queries::setting(&self.conn, key))
    }
}
