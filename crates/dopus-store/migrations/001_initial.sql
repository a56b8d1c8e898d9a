-- 001: the first schema. Identifiers that are public keys or UUIDs are stored as BLOBs (32 and
-- 16 bytes), timestamps as INTEGER milliseconds since the Unix epoch, enums as their stable
-- lowercase text (see dopus_core::store records' `as_str`).

-- Our own identity and Olm account; at most one row.
CREATE TABLE account (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    user_id           BLOB    NOT NULL,
    identity_pickle   TEXT    NOT NULL,
    device_id         TEXT    NOT NULL,
    device_ed25519    BLOB    NOT NULL,
    device_curve25519 BLOB    NOT NULL,
    account_pickle    TEXT    NOT NULL,
    certificate_json  TEXT    NOT NULL,
    display_name      TEXT    NOT NULL,
    created_at        INTEGER NOT NULL
);

-- Devices of other users whose certificates we verified.
CREATE TABLE peer_devices (
    user_id          BLOB    NOT NULL,
    device_id        TEXT    NOT NULL,
    ed25519          BLOB    NOT NULL,
    curve25519       BLOB    NOT NULL,
    certificate_json TEXT    NOT NULL,
    first_seen       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE INDEX peer_devices_by_curve25519 ON peer_devices (curve25519);

CREATE TABLE contacts (
    user_id      BLOB    PRIMARY KEY,
    display_name TEXT,
    verified     INTEGER NOT NULL,
    blocked      INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    request_note TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- kind 'direct': ref is the peer's identity key; kind 'channel': ref is the channel UUID.
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    ref           BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_read_seq INTEGER,
    UNIQUE (kind, ref)
);

-- seq is the local display order and pagination cursor; AUTOINCREMENT so it is never reused.
CREATE TABLE messages (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB    NOT NULL UNIQUE,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    sender          BLOB    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    reply_to        BLOB,
    edited_at       INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    sent_at         INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    delivery        TEXT    NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);

-- Full-text index over message bodies (external content: the text is stored once, in
-- messages). The triggers are the canonical external-content ones, so the index always mirrors
-- the table exactly; a deleted message has an empty body and so no words in the index.
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    body,
    content = 'messages',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Deleted index entries are overwritten, not just marked, so deleted words leave the file.
INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);

CREATE TRIGGER messages_fts_after_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.seq, new.body);
END;

CREATE TRIGGER messages_fts_after_update AFTER UPDATE OF body ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.seq, new.body);
END;

CREATE TRIGGER messages_fts_after_delete AFTER DELETE ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
END;

-- One row per (message, user, emoji); the message may not have arrived yet.
CREATE TABLE reactions (
    message_id BLOB    NOT NULL,
    user_id    BLOB    NOT NULL,
    emoji      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (message_id, user_id, emoji)
);
CREATE INDEX reactions_by_message ON reactions (message_id, created_at);

CREATE TABLE olm_sessions (
    session_id      TEXT    PRIMARY KEY,
    peer_user       BLOB    NOT NULL,
    peer_device     TEXT    NOT NULL,
    peer_curve25519 BLOB    NOT NULL,
    pickle          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL
);
CREATE INDEX olm_sessions_by_device ON olm_sessions (peer_user, peer_device, last_used_at);
CREATE INDEX olm_sessions_by_curve25519 ON olm_sessions (peer_curve25519, last_used_at);

CREATE TABLE megolm_inbound (
    session_id    TEXT    PRIMARY KEY,
    channel_id    BLOB    NOT NULL,
    sender_user   BLOB    NOT NULL,
    sender_device TEXT    NOT NULL,
    pickle        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE megolm_outbound (
    channel_id    BLOB    PRIMARY KEY,
    session_id    TEXT    NOT NULL,
    pickle        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL
);

-- pos gives FIFO order per peer and is never reused.
CREATE TABLE outbox (
    pos             INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id     BLOB    NOT NULL UNIQUE,
    peer_user       BLOB    NOT NULL,
    peer_device     TEXT,
    bytes           BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX outbox_by_peer ON outbox (peer_user, pos);

CREATE TABLE processed_envelopes (
    envelope_id BLOB    PRIMARY KEY,
    received_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX processed_envelopes_by_time ON processed_envelopes (received_at);

CREATE TABLE transfers (
    id              BLOB    PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    direction       TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    sha256          BLOB    NOT NULL,
    mime            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    bytes_done      INTEGER NOT NULL,
    local_path      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX transfers_by_conversation ON transfers (conversation_id, created_at);

CREATE TABLE chat_groups (
    id         BLOB    PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id  BLOB    NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    user_id   BLOB    NOT NULL,
    role      TEXT    NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

CREATE TABLE channels (
    id         BLOB    PRIMARY KEY,
    group_id   BLOB    NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX channels_by_group ON channels (group_id, position);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
