-- 011: history pages break `sent_at` ties by message id instead of by arrival (`seq`).
--
-- Arrival order differs between devices: a member who was offline gets the messages of a busy
-- millisecond from the mailbox, from gap backfill or in a history bundle, in another order than
-- a member who was online. The message id is the same on every device (the UUIDv7 its sender
-- chose), so `(sent_at, id)` puts every replica's history in one order, and a message that
-- arrives late still sorts where it was sent. A page cursor stays a message `seq`; the query
-- reads that message's `(sent_at, id)`, which never change, so inserting older messages never
-- moves a cursor (docs/storage.md, "History order"; docs/spaces.md, "Order").
DROP INDEX messages_by_conversation_time;
CREATE INDEX messages_by_conversation_time ON messages (conversation_id, sent_at, id);
