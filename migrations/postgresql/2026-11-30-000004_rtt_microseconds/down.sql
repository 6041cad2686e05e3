UPDATE peer_connections SET rtt_us = rtt_us / 1000 WHERE rtt_us IS NOT NULL;
ALTER TABLE peer_connections RENAME COLUMN rtt_us TO rtt_ms;
