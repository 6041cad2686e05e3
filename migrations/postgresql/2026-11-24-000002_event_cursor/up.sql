-- Where the event flow from each peer stopped: the created_at (unix seconds) of the newest
-- event received from it, and the ids received at that second (JSON array of strings).
-- The next REQ asks `since` that second and the ids say which of its events are already here.
ALTER TABLE peer_connections ADD COLUMN last_event_at BIGINT;
ALTER TABLE peer_connections ADD COLUMN last_event_ids TEXT NOT NULL DEFAULT '[]';
