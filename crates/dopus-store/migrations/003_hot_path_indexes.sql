-- 003: the outbox answers "what is due" from an index, and saving an Olm session touches no index.
--
-- 1. The pump asks, every round, which peers have due entries, when the next entry falls due,
--    and for a window of one peer's due entries. All three scanned every outbox row (blobs
--    included), so with thousands of entries queued (a burst, or a peer offline for long) each
--    round cost time in proportion to the whole outbox. With this index the first two are one
--    seek per peer (the earliest entry of each), the window one seek plus the window itself,
--    read in the order the entries fall due (queue order among equals). The queries name it
--    with INDEXED BY; a test reads their plans.
CREATE INDEX outbox_by_peer_due ON outbox (peer_user, next_attempt_at);

-- 2. A session is saved on every message sealed or opened, and the old indexes held
--    `last_used_at`, so every save moved an entry in both of them (more pages encrypted and
--    written per commit). A peer device has a handful of sessions at most: they are ordered by
--    last use after the lookup instead.
DROP INDEX olm_sessions_by_device;
CREATE INDEX olm_sessions_by_device ON olm_sessions (peer_user, peer_device);
DROP INDEX olm_sessions_by_curve25519;
CREATE INDEX olm_sessions_by_curve25519 ON olm_sessions (peer_curve25519);
