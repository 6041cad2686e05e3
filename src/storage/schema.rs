//! The one schema both backends share. Written by hand to use only SQL types that PostgreSQL
//! and SQLite map the same way: `Integer`, `BigInt`, `Text`, `Bool`. Timestamps are unix
//! milliseconds in `BigInt` (see `lifecycle::time::Timestamp`).

diesel::table! {
    /// One row per peer; see `lifecycle::record::PeerRecord` for what each column means.
    peer_connections (id) {
        id -> Integer,
        nostr_pubkey -> Text,
        ilp_address -> Nullable<Text>,
        endpoint -> Nullable<Text>,
        base_address -> Nullable<Text>,
        state -> Text,
        desired -> Text,
        followed -> Bool,
        subscribers -> Nullable<BigInt>,
        priority -> Integer,
        channel_id -> Nullable<Text>,
        channel_tx_hash -> Nullable<Text>,
        channel_opening_since -> Nullable<BigInt>,
        last_heartbeat -> Nullable<BigInt>,
        rtt_us -> Nullable<BigInt>,
        reconnect_attempts -> BigInt,
        next_attempt_at -> Nullable<BigInt>,
        failure_reason -> Nullable<Text>,
        /// JSON array of strings.
        subscription_ids -> Text,
        /// Unix seconds of the newest event received from the peer.
        last_event_at -> Nullable<BigInt>,
        /// JSON array of the event ids received at `last_event_at`.
        last_event_ids -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Each peer's state changes, trimmed to the newest few per peer.
    peer_transitions (id) {
        id -> BigInt,
        nostr_pubkey -> Text,
        /// NULL for a peer new to the node.
        from_state -> Nullable<Text>,
        to_state -> Text,
        reason -> Nullable<Text>,
        /// Unix milliseconds.
        at -> BigInt,
    }
}
