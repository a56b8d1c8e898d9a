-- 012: when each blob holder was first heard of (`file_have`, milliseconds since the epoch), so
-- rows are pruned by age (docs/files.md, "Many sources": a holder row is kept while a download
-- of its blob is unfinished, and never longer than the age bound). Rows from before this
-- migration count from now.
ALTER TABLE blob_holders ADD COLUMN added_at INTEGER NOT NULL DEFAULT 0;
UPDATE blob_holders SET added_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
CREATE INDEX blob_holders_by_age ON blob_holders (added_at);
