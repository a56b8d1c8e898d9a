-- 010: the members known to hold a channel's blob whole (their `file_have`, docs/files.md,
-- "Many sources"), so a download restarted later still spreads its ranges across every holder
-- rather than only the member who announced the file. A row is added on `file_have` and removed
-- on `file_revoke`; `user_id` is the holder's Ed25519 key (32 bytes), as everywhere.
CREATE TABLE blob_holders (
    blob    BLOB NOT NULL,
    user_id BLOB NOT NULL,
    PRIMARY KEY (blob, user_id)
) WITHOUT ROWID;
