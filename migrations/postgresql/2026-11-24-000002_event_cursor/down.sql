ALTER TABLE peer_connections DROP COLUMN last_event_ids;
ALTER TABLE peer_connections DROP COLUMN last_event_at;
