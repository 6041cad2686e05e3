-- The smoothed heartbeat round trip in microseconds (was whole milliseconds): the
-- operator sees sub-millisecond latency on a LAN.
ALTER TABLE peer_connections RENAME COLUMN rtt_ms TO rtt_us;
UPDATE peer_connections SET rtt_us = rtt_us * 1000 WHERE rtt_us IS NOT NULL;
