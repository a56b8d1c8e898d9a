-- 008: a channel message waiting for its Megolm key is shown in its channel as a placeholder
-- ("waiting for keys", then "withheld" with the owner's reason, or "gave_up"), and the node
-- resumes asking for its key after a restart. Both need the space and channel the outer
-- (Olm-encrypted) content named, which the Megolm ciphertext does not reveal before it is
-- decrypted. Rows kept before this version have NULL there: they wait without being asked for.
ALTER TABLE megolm_waiting ADD COLUMN space_id BLOB;
ALTER TABLE megolm_waiting ADD COLUMN channel_id BLOB;
ALTER TABLE megolm_waiting ADD COLUMN state TEXT NOT NULL DEFAULT 'waiting_for_keys';
ALTER TABLE megolm_waiting ADD COLUMN reason TEXT;
CREATE INDEX megolm_waiting_by_channel ON megolm_waiting (channel_id, received_at);
