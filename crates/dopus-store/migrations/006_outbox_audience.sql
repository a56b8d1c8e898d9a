-- 006: an outbox item is said once and delivered to an audience.
--
-- Before, an outbox row was one envelope for one peer. A channel message of a space is one
-- ciphertext for many members, each of whom acknowledges it on their own, so an item (its id
-- and bytes) and its deliveries (one per recipient, each with its own retry schedule) are kept
-- apart. The delivery table keeps the name `outbox` and the index the pump's queries name
-- (`outbox_by_peer_due`, 003), so those stay one seek per peer.
ALTER TABLE outbox RENAME TO outbox_003;
DROP INDEX outbox_by_peer;
DROP INDEX outbox_by_peer_due;

CREATE TABLE outbox_items (
    id          INTEGER PRIMARY KEY,
    envelope_id BLOB    NOT NULL UNIQUE,
    bytes       BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- pos gives FIFO order per peer and is never reused.
CREATE TABLE outbox (
    pos             INTEGER PRIMARY KEY AUTOINCREMENT,
    item            INTEGER NOT NULL REFERENCES outbox_items (id),
    envelope_id     BLOB    NOT NULL,
    peer_user       BLOB    NOT NULL,
    peer_device     TEXT,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    UNIQUE (envelope_id, peer_user)
);
CREATE INDEX outbox_by_peer ON outbox (peer_user, pos);
CREATE INDEX outbox_by_peer_due ON outbox (peer_user, next_attempt_at);

INSERT INTO outbox_items (envelope_id, bytes, created_at)
    SELECT envelope_id, bytes, created_at FROM outbox_003 ORDER BY pos;
INSERT INTO outbox (pos, item, envelope_id, peer_user, peer_device, attempts, next_attempt_at)
    SELECT o.pos, i.id, o.envelope_id, o.peer_user, o.peer_device, o.attempts, o.next_attempt_at
    FROM outbox_003 o JOIN outbox_items i ON i.envelope_id = o.envelope_id ORDER BY o.pos;
DROP TABLE outbox_003;
