-- One row per peer: the durable form of `PeerRecord`, upserted whole by `nostr_pubkey`.
-- Timestamps are unix milliseconds in BIGINT, so the same column means the same thing on
-- PostgreSQL and SQLite (no TIMESTAMPTZ / TEXT date split between the backends).
-- The SQLite migration of the same name creates the same table.
CREATE TABLE peer_connections (
    id                    SERIAL PRIMARY KEY,
    nostr_pubkey          TEXT    NOT NULL UNIQUE,
    ilp_address           TEXT,
    endpoint              TEXT,
    base_address          TEXT,
    state                 TEXT    NOT NULL,
    desired               TEXT    NOT NULL DEFAULT 'connect',
    followed              BOOLEAN NOT NULL DEFAULT FALSE,
    subscribers           BIGINT,
    priority              INTEGER NOT NULL,
    channel_id            TEXT,
    channel_tx_hash       TEXT,
    channel_opening_since BIGINT,
    last_heartbeat        BIGINT,
    rtt_ms                BIGINT,
    reconnect_attempts    BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at       BIGINT,
    failure_reason        TEXT,
    -- JSON array of strings.
    subscription_ids      TEXT    NOT NULL DEFAULT '[]',
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL
);

CREATE INDEX peer_connections_state_idx ON peer_connections (state);
CREATE INDEX peer_connections_priority_idx ON peer_connections (priority);
