-- 005: file transfers as they really are (docs/files.md). The placeholder table of the first
-- schema was never written by any release (nothing sent files yet), so it is replaced, not
-- migrated row by row.
--
-- A transfer carries the whole manifest (blob id, size, key, nonce, name, type, plaintext hash,
-- preview) as JSON: the store is encrypted at rest, and the manifest is read back whole. The
-- blob id has its own column because a provider looks transfers up by blob before serving.
-- `verified` is the resume point of a download: its verified chunk groups as canonical ranges,
-- 16 bytes each (start, end; big-endian u64), rewritten in batches (every 16 MiB or 2 s).
-- An outgoing transfer remembers its source file (path, size, modification time, inode) so
-- a provider can refuse to serve a file that changed after it was announced.
DROP INDEX transfers_by_conversation;
DROP TABLE transfers;

CREATE TABLE transfers (
    id                 BLOB    PRIMARY KEY,
    conversation_id    INTEGER NOT NULL REFERENCES conversations (id),
    message_id         BLOB,
    direction          TEXT    NOT NULL,
    blob               BLOB    NOT NULL,
    manifest           TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    reason             TEXT,
    verified           BLOB    NOT NULL,
    source_path        TEXT,
    source_size        INTEGER,
    source_modified_ns INTEGER,
    source_inode       BLOB,
    saved_path         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX transfers_by_conversation ON transfers (conversation_id, created_at);
CREATE INDEX transfers_by_blob ON transfers (blob);
CREATE INDEX transfers_unfinished ON transfers (created_at)
    WHERE state NOT IN ('done', 'failed', 'cancelled');
