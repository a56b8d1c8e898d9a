-- Spaces (issue 15). The group tables of 001 were placeholders nothing ever wrote; spaces keep
-- their state as a signed control log instead (the resolved state is recomputed from it).
DROP TABLE channels;
DROP TABLE group_members;
DROP TABLE chat_groups;

-- The Megolm tables of 001 were never written either; spaces need more columns (space, the
-- owner's certificate and announcement, history sharing, first index; the devices an outbound
-- session was shared with).
DROP TABLE megolm_inbound;
DROP TABLE megolm_outbound;

-- One row per op of a space's control log: the op's JSON, verified when first inserted.
CREATE TABLE space_ops (
    space_id    BLOB    NOT NULL,
    op_id       BLOB    NOT NULL,
    depth       INTEGER NOT NULL,
    op_json     BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (space_id, op_id)
) WITHOUT ROWID;
CREATE INDEX space_ops_by_depth ON space_ops (space_id, depth, op_id);

CREATE TABLE megolm_inbound (
    session_id      TEXT    PRIMARY KEY,
    space_id        BLOB    NOT NULL,
    channel_id      BLOB    NOT NULL,
    sender_user     BLOB    NOT NULL,
    sender_device   TEXT    NOT NULL,
    sender_cert     TEXT    NOT NULL,
    announcement    BLOB    NOT NULL,
    shared_history  INTEGER NOT NULL,
    forwarded       INTEGER NOT NULL,
    first_index     INTEGER NOT NULL,
    pickle          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX megolm_inbound_by_channel ON megolm_inbound (channel_id, created_at, session_id);
CREATE INDEX megolm_inbound_by_space ON megolm_inbound (space_id);

-- shared_with: JSON array of [user id, device id] pairs, ascending.
CREATE TABLE megolm_outbound (
    channel_id     BLOB    PRIMARY KEY,
    space_id       BLOB    NOT NULL,
    session_id     TEXT    NOT NULL,
    pickle         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    message_count  INTEGER NOT NULL,
    shared_history INTEGER NOT NULL,
    shared_with    TEXT    NOT NULL
);
CREATE INDEX megolm_outbound_by_space ON megolm_outbound (space_id);

-- Replay protection: every (session, message index) decrypted once.
CREATE TABLE megolm_seen (
    session_id TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;

-- Channel messages waiting for their session's key.
CREATE TABLE megolm_waiting (
    session_id    TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    sender_user   BLOB    NOT NULL,
    sender_device TEXT    NOT NULL,
    message       BLOB    NOT NULL,
    received_at   INTEGER NOT NULL,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
