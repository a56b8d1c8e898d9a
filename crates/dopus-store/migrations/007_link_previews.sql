-- 007: a text message may carry a link preview its sender's node fetched (title, description,
-- a small image as a data URL), sent inside the encrypted message. Stored as the preview's JSON
-- (dopus_proto::content::LinkPreview); NULL for every message before this version and for
-- messages without one. Deleting a message clears it with the body.
ALTER TABLE messages ADD COLUMN preview TEXT;
