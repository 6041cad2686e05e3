-- Each peer's state changes, newest kept (the node trims each peer to its newest
-- `persistence.history_per_peer` rows as it writes): from (NULL for a peer new to the
-- node), to, the reason recorded with the change, and when (unix milliseconds).
-- The SQLite migration of the same name creates the same table.
CREATE TABLE peer_transitions (
    id           BIGSERIAL PRIMARY KEY,
    nostr_pubkey TEXT   NOT NULL,
    from_state   TEXT,
    to_state     TEXT   NOT NULL,
    reason       TEXT,
    at           BIGINT NOT NULL
);

CREATE INDEX peer_transitions_peer_idx ON peer_transitions (nostr_pubkey, id);
