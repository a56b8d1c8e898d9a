//! Numbered schema migrations, embedded in the binary and applied at open.
//!
//! Policy: a migration is never edited once released; changes are new files
//! `migrations/NNN_name.sql`. All pending migrations run in ONE transaction together with the
//! `PRAGMA user_version` bump, so a crash or a failing statement leaves the database exactly at
//! its old version. A database whose `user_version` is above [`SCHEMA_VERSION`] was written by a
//! newer build and is refused rather than guessed at.

use crate::OpenError;
use rusqlite::Connection;

/// One migration: applying it moves the schema from `version - 1` to `version`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "deferred_fts_history_order",
        sql: include_str!("../migrations/002_deferred_fts_history_order.sql"),
    },
    Migration {
        version: 3,
        name: "hot_path_indexes",
        sql: include_str!("../migrations/003_hot_path_indexes.sql"),
    },
    Migration {
        version: 4,
        name: "spaces",
        sql: include_str!("../migrations/004_spaces.sql"),
    },
    Migration {
        version: 5,
        name: "transfers",
        sql: include_str!("../migrations/005_transfers.sql"),
    },
    Migration {
        version: 6,
        name: "outbox_audience",
        sql: include_str!("../migrations/006_outbox_audience.sql"),
    },
    Migration {
        version: 7,
        name: "link_previews",
        sql: include_str!("../migrations/007_link_previews.sql"),
    },
    Migration {
        version: 8,
        name: "megolm_waiting_state",
        sql: include_str!("../migrations/008_megolm_waiting_state.sql"),
    },
    Migration {
        version: 9,
        name: "channel_history",
        sql: include_str!("../migrations/009_channel_history.sql"),
    },
    Migration {
        version: 10,
        name: "blob_holders",
        sql: include_str!("../migrations/010_blob_holders.sql"),
    },
    Migration {
        version: 11,
        name: "history_order_by_id",
        sql: include_str!("../migrations/011_history_order_by_id.sql"),
    },
    Migration {
        version: 12,
        name: "blob_holder_age",
        sql: include_str!("../migrations/012_blob_holder_age.sql"),
    },
];

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to the newest version in `migrations`, in one transaction.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), OpenError> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let found = u32::try_from(found).map_err(|_| OpenError::BadSchemaVersion(found))?;
    if found > supported {
        return Err(OpenError::TooNew { found, supported });
    }
    if found == supported {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for m in migrations.iter().filter(|m| m.version > found) {
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying store migration"
        );
        tx.execute_batch(m.sql)
            .map_err(|source| OpenError::Migration {
                version: m.version,
                source,
            })?;
    }
    tx.pragma_update(None, "user_version", supported)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn migration_files_match_the_list() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:03}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, expected);
    }
}
