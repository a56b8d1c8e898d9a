-- 009: members of a space that shares history keep the Megolm ciphertexts of channel messages
-- sent in sessions announced as shareable, so that a member who admits a newcomer can hand
-- them over with the keys (docs/spaces.md, "History for new members"). Only ciphertexts, as
-- their senders sent them (inside SQLCipher like everything else); at most
-- MAX_KEPT_CIPHERTEXTS per channel, the oldest dropped first.
CREATE TABLE channel_history (
    session_id  TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    space_id    BLOB    NOT NULL,
    channel_id  BLOB    NOT NULL,
    message     BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
CREATE INDEX channel_history_by_channel ON channel_history (channel_id, received_at);
