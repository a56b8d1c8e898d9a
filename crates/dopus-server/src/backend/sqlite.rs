//! The embedded store: key directory, device registry and mailbox in one SQLite file.
//!
//! One connection behind a mutex, used from tokio's blocking pool. Every write is one
//! transaction committed with `synchronous=FULL` before the caller answers anyone, so a kill -9
//! (or a power cut) after an answer loses nothing. The one-time-key claim is a single
//! `DELETE … RETURNING` under that mutex: no two fetches can get the same key.

use super::{
    BoxFut, Claimed, KeyDirectory, Mailbox, NewItem, PushError, Quota, StoreError, StoredItem,
};
use dopus_proto::bundle::{
    BUNDLE_VERSION, ClaimedBundle, DeviceBundle, DeviceCertificate, SignedKey,
};
use dopus_proto::signaling::{DeliveryKind, Sender};
use dopus_types::{DeviceId, Timestamp, UserId};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// 1: first schema. 2: mailbox items of the retired contact kinds are deleted (only `relay`
/// items exist from then on).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (user, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_user TEXT NOT NULL,
    from_device TEXT NOT NULL,
    payload TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_by_device ON mailbox (user, device, id);
CREATE INDEX IF NOT EXISTS mailbox_by_expiry ON mailbox (expires_at);
CREATE TABLE IF NOT EXISTS bundles (
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    certificate TEXT NOT NULL,
    fallback_key TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signed_key TEXT NOT NULL,
    UNIQUE (user, device, key_id)
);
";

/// The SQLite-backed [`KeyDirectory`] and [`Mailbox`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) `server.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_file(&dir.join("server.db"))
    }

    /// Opens (creating if needed) the database file at `path`.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "database schema {version} is newer than this server ({SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        migrate(&conn, version)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn run<T, F>(&self, f: F) -> BoxFut<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().map_err(|_| StoreError::Task)?;
                f(&mut guard)
            })
            .await
            .map_err(|_| StoreError::Task)?
        })
    }
}

/// Brings a database written by an older server up to [`SCHEMA_VERSION`] (the tables already
/// exist: [`SCHEMA`] creates what is missing).
fn migrate(conn: &Connection, from: i64) -> Result<(), StoreError> {
    if from < 2 {
        conn.execute("DELETE FROM mailbox WHERE kind <> 'relay'", [])?;
    }
    Ok(())
}

fn otk_count(conn: &Connection, user: &str, device: &str) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM one_time_keys WHERE user = ?1 AND device = ?2",
        params![user, device],
        |r| r.get(0),
    )?;
    Ok(as_u64(n))
}

impl KeyDirectory for SqliteStore {
    fn publish(&self, bundle: DeviceBundle, now: Timestamp) -> BoxFut<'_, Result<u64, StoreError>> {
        self.run(move |conn| {
            let user = bundle.certificate.user_id.to_string();
            let device = bundle.certificate.device_id.to_string();
            let cert = serde_json::to_string(&bundle.certificate).map_err(corrupt)?;
            let fallback = serde_json::to_string(&bundle.fallback_key).map_err(corrupt)?;
            let tx = conn.transaction()?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT certificate FROM bundles WHERE user = ?1 AND device = ?2",
                    params![user, device],
                    |r| r.get(0),
                )
                .optional()?;
            if old.as_deref().is_some_and(|o| o != cert) {
                tx.execute(
                    "DELETE FROM one_time_keys WHERE user = ?1 AND device = ?2",
                    params![user, device],
                )?;
            }
            tx.execute(
                "INSERT INTO bundles (user, device, certificate, fallback_key, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user, device) DO UPDATE SET certificate = ?3, fallback_key = ?4, updated_at = ?5",
                params![user, device, cert, fallback, as_i64(now.as_millis())],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT OR IGNORE INTO one_time_keys (user, device, key_id, signed_key) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for key in &bundle.one_time_keys {
                    let json = serde_json::to_string(key).map_err(corrupt)?;
                    insert.execute(params![user, device, key.key_id, json])?;
                }
            }
            let count = otk_count(&tx, &user, &device)?;
            tx.commit()?;
            Ok(count)
        })
    }

    fn claim(&self, user: UserId) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>> {
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction()?;
            let rows: Vec<(String, String, String)> = {
                let mut stmt = tx.prepare(
                    "SELECT device, certificate, fallback_key FROM bundles WHERE user = ?1 ORDER BY device",
                )?;
                let rows = stmt.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(rows.len());
            for (device, cert, fallback) in rows {
                let certificate: DeviceCertificate = serde_json::from_str(&cert).map_err(corrupt)?;
                let fallback_key: SignedKey = serde_json::from_str(&fallback).map_err(corrupt)?;
                let otk: Option<String> = tx
                    .query_row(
                        "DELETE FROM one_time_keys WHERE seq = (
                             SELECT seq FROM one_time_keys WHERE user = ?1 AND device = ?2 ORDER BY seq LIMIT 1
                         ) RETURNING signed_key",
                        params![user, device],
                        |r| r.get(0),
                    )
                    .optional()?;
                let one_time_key = match otk {
                    Some(json) => Some(serde_json::from_str::<SignedKey>(&json).map_err(corrupt)?),
                    None => None,
                };
                let remaining = otk_count(&tx, &user, &device)?;
                out.push(Claimed {
                    bundle: ClaimedBundle {
                        version: BUNDLE_VERSION,
                        certificate,
                        fallback_key,
                        one_time_key,
                    },
                    remaining,
                });
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn one_time_key_count(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> BoxFut<'_, Result<Option<u64>, StoreError>> {
        self.run(move |conn| {
            let user = user.to_string();
            let device = device.to_string();
            let has: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM bundles WHERE user = ?1 AND device = ?2",
                    params![user, device],
                    |r| r.get(0),
                )
                .optional()?;
            match has {
                Some(_) => Ok(Some(otk_count(conn, &user, &device)?)),
                None => Ok(None),
            }
        })
    }
}

fn row_to_item(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, String, String, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

impl Mailbox for SqliteStore {
    fn register_device(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<(), StoreError>> {
        self.run(move |conn| {
            // The registry only needs to survive a process crash, not a power cut (a device
            // re-registers at its next login), so this write skips the fsync that mailbox and
            // key-directory writes pay: logins are not throttled by the disk.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let result = conn.execute(
                "INSERT INTO devices (user, device, last_seen) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, device) DO UPDATE SET last_seen = ?3
                 WHERE last_seen < ?3 - 3600000",
                params![
                    user.to_string(),
                    device.to_string(),
                    as_i64(now.as_millis())
                ],
            );
            conn.pragma_update(None, "synchronous", "FULL")?;
            result?;
            Ok(())
        })
    }

    fn known_devices(&self, user: UserId) -> BoxFut<'_, Result<Vec<DeviceId>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT device FROM devices WHERE user = ?1
                 UNION SELECT device FROM bundles WHERE user = ?1 ORDER BY device",
            )?;
            let rows = stmt.query_map(params![user.to_string()], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.parse::<DeviceId>().map_err(corrupt)?);
            }
            Ok(out)
        })
    }

    fn push(
        &self,
        user: UserId,
        device: DeviceId,
        item: NewItem,
        quota: Quota,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, PushError>> {
        let fut = self.run(move |conn| {
            let user = user.to_string();
            let device = device.to_string();
            let tx = conn.transaction()?;
            let from_user = item.from.user.to_string();
            // One pass over the device's items gives both the device's and the sender's use.
            let (count, bytes, mine, mine_bytes): (i64, i64, i64, i64) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(payload AS BLOB))), 0),
                        COALESCE(SUM(from_user = ?4), 0),
                        COALESCE(SUM(CASE WHEN from_user = ?4 THEN LENGTH(CAST(payload AS BLOB)) ELSE 0 END), 0)
                 FROM mailbox WHERE user = ?1 AND device = ?2 AND expires_at > ?3",
                params![user, device, as_i64(now.as_millis()), from_user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let len = item.payload.len() as u64;
            if as_u64(count) + 1 > quota.max_items
                || as_u64(bytes) + len > quota.max_bytes
                || as_u64(mine) + 1 > quota.sender_max_items
                || as_u64(mine_bytes) + len > quota.sender_max_bytes
            {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO mailbox (user, device, kind, from_user, from_device, payload, sent_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    user,
                    device,
                    item.kind.as_str(),
                    from_user,
                    item.from.device.to_string(),
                    item.payload,
                    as_i64(item.sent_at.as_millis()),
                    as_i64(item.expires_at.as_millis()),
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(as_u64(id)))
        });
        Box::pin(async move {
            match fut.await? {
                Some(id) => Ok(id),
                None => Err(PushError::Full),
            }
        })
    }

    fn fetch(
        &self,
        user: UserId,
        device: DeviceId,
        after: u64,
        limit: usize,
        now: Timestamp,
    ) -> BoxFut<'_, Result<Vec<StoredItem>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, kind, from_user, from_device, payload, sent_at, expires_at FROM mailbox
                 WHERE user = ?1 AND device = ?2 AND id > ?3 AND expires_at > ?4
                 ORDER BY id LIMIT +?5",
            )?;
            let rows = stmt.query_map(
                params![
                    user.to_string(),
                    device.to_string(),
                    as_i64(after),
                    as_i64(now.as_millis()),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                row_to_item,
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, from_user, from_device, payload, sent_at, expires_at) = row?;
                out.push(StoredItem {
                    id: as_u64(id),
                    item: NewItem {
                        kind: DeliveryKind::from_name(&kind)
                            .ok_or_else(|| corrupt("unknown delivery kind"))?,
                        from: Sender {
                            user: from_user.parse().map_err(corrupt)?,
                            device: from_device.parse().map_err(corrupt)?,
                        },
                        payload,
                        sent_at: Timestamp(as_u64(sent_at)),
                        expires_at: Timestamp(as_u64(expires_at)),
                    },
                });
            }
            Ok(out)
        })
    }

    fn count(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, StoreError>> {
        self.run(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM mailbox WHERE user = ?1 AND device = ?2 AND expires_at > ?3",
                params![
                    user.to_string(),
                    device.to_string(),
                    as_i64(now.as_millis())
                ],
                |r| r.get(0),
            )?;
            Ok(as_u64(n))
        })
    }

    fn ack(
        &self,
        user: UserId,
        device: DeviceId,
        ids: Vec<u64>,
    ) -> BoxFut<'_, Result<u64, StoreError>> {
        self.run(move |conn| {
            let user = user.to_string();
            let device = device.to_string();
            let tx = conn.transaction()?;
            let mut removed = 0;
            {
                let mut del = tx.prepare_cached(
                    "DELETE FROM mailbox WHERE id = ?1 AND user = ?2 AND device = ?3",
                )?;
                for id in ids {
                    removed += del.execute(params![as_i64(id), user, device])? as u64;
                }
            }
            tx.commit()?;
            Ok(removed)
        })
    }

    fn purge(&self, now: Timestamp, device_ttl_ms: u64) -> BoxFut<'_, Result<u64, StoreError>> {
        self.run(move |conn| {
            let now_ms = as_i64(now.as_millis());
            let cutoff = as_i64(now.as_millis().saturating_sub(device_ttl_ms));
            let tx = conn.transaction()?;
            let n = tx.execute(
                "DELETE FROM mailbox WHERE expires_at <= ?1",
                params![now_ms],
            )?;
            tx.execute("DELETE FROM devices WHERE last_seen < ?1", params![cutoff])?;
            tx.commit()?;
            Ok(n as u64)
        })
    }

    fn depth(&self) -> BoxFut<'_, Result<u64, StoreError>> {
        self.run(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM mailbox", [], |r| r.get(0))?;
            Ok(as_u64(n))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn version_1_databases_lose_their_retired_contact_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for kind in ["relay", "contact_request", "contact_accept"] {
                conn.execute(
                    "INSERT INTO mailbox (user, device, kind, from_user, from_device, payload, sent_at, expires_at)
                     VALUES ('u', 'd', ?1, 'f', 'fd', 'p', 1, 2)",
                    params![kind],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open_file(&path).unwrap();
        let conn = store.conn.lock().unwrap();
        let kinds: Vec<String> = conn
            .prepare("SELECT kind FROM mailbox")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, ["relay"]);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}
