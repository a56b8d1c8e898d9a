-- 002: full-text indexing leaves the write path, and history pages follow the senders' order.
--
-- 1. Deferred indexing. The after-insert trigger cost about 26 µs per 12-word message, more
--    than everything else in an insert together. New rows are now indexed later, in large
--    chunks (`Store::index_pending`, and by search itself before it queries, so results stay
--    exact). `fts_watermark.indexed_seq` is the highest `seq` in the index: every message with
--    `seq <= indexed_seq` is indexed with its current body, no message above it is. `seq` is
--    AUTOINCREMENT, so a new row always lands above the watermark.
--    Edits and deletes of indexed rows still update the index in the same transaction (the
--    canonical external-content 'delete' of the old body, then the new body); rows above the
--    watermark are left alone and indexed later with whatever body they have then.
--    Every row that exists now was indexed by the 001 insert trigger, so the watermark starts
--    at the highest `seq`.
CREATE TABLE fts_watermark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_seq INTEGER NOT NULL
);
INSERT INTO fts_watermark (id, indexed_seq) VALUES (1, (SELECT coalesce(max(seq), 0) FROM messages));

DROP TRIGGER messages_fts_after_insert;
DROP TRIGGER messages_fts_after_update;
DROP TRIGGER messages_fts_after_delete;

CREATE TRIGGER messages_fts_after_update AFTER UPDATE OF body ON messages
WHEN old.seq <= (SELECT indexed_seq FROM fts_watermark WHERE id = 1)
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.seq, new.body);
END;

CREATE TRIGGER messages_fts_after_delete AFTER DELETE ON messages
WHEN old.seq <= (SELECT indexed_seq FROM fts_watermark WHERE id = 1)
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
END;

-- 2. History pages are ordered by (sent_at, seq): the order the senders wrote in, with arrival
--    order breaking ties. A message re-sent after a crash may arrive after later ones; it still
--    shows where it was written. The (conversation_id, seq) index stays: the conversation list
--    (newest message by arrival) and unread counts (seq after last_read_seq) use it.
CREATE INDEX messages_by_conversation_time ON messages (conversation_id, sent_at, seq);
