//! `session`: BTP sessions: the inbound endpoint, timeouts, authentication.

use std::time::Duration;

use serde::Deserialize;

use super::check::{Key, Problems};
use super::duration::{millis, seconds};
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Where the inbound endpoint listens, `host:port`; empty: no inbound endpoint.
    pub listen: String,
    /// The endpoint peers' tokens are bound to: `node.public_endpoint`, copied here by the
    /// node builder (never read from this section, so announced and accepted endpoints are
    /// one value); empty: the loopback forms of the bound address.
    #[serde(skip)]
    pub public_endpoint: String,
    /// Allow `ws://` (no TLS) to loopback hosts; every other endpoint must be `wss://`.
    pub allow_ws_loopback: bool,
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// A dialed peer must answer auth, and an inbound one send it, within this.
    #[serde(rename = "auth_timeout_ms", deserialize_with = "millis")]
    pub auth_timeout: Duration,
    /// Each BTP request waits this long for its answer (ilp-plugin-btp uses 35 s).
    #[serde(rename = "request_timeout_ms", deserialize_with = "millis")]
    pub request_timeout: Duration,
    /// WebSocket pings keep the socket warm; three intervals without a frame → dead.
    #[serde(rename = "ws_ping_interval_ms", deserialize_with = "millis")]
    pub ws_ping_interval: Duration,
    /// A Nostr auth token older than this is expired.
    #[serde(rename = "token_max_age_seconds", deserialize_with = "seconds")]
    pub token_max_age: Duration,
    /// How far a token's `created_at` may be ahead of our clock.
    #[serde(rename = "token_max_skew_seconds", deserialize_with = "seconds")]
    pub token_max_skew: Duration,
    /// What ILDCP tells neighbours about the bilateral asset.
    pub asset_code: String,
    pub asset_scale: u8,
    /// Plain ILP peers authenticated by a shared secret instead of a Nostr key.
    pub shared_secret_peers: Vec<SharedSecretPeer>,
    /// At most this many inbound sessions from pubkeys the node has no record of (not
    /// followed, never met); followed and known peers are not counted.
    pub max_unknown_inbound: usize,
    /// Packets waiting for the socket, per session; when full, the session's producers wait
    /// (and the peer's requests are no longer read) until the peer reads.
    pub max_queued_messages: usize,
    /// Requests of one peer served at once; more are refused with a BTP Error naming this.
    pub max_requests_in_flight: usize,
    /// A write that cannot go out for this long (the peer does not read) closes the session.
    #[serde(rename = "write_timeout_ms", deserialize_with = "millis")]
    pub write_timeout: Duration,
    /// Sockets connected but not yet authenticated, in total and from one IP address.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_ip: usize,
    /// A session of a peer the node does not follow that sends nothing for this long is
    /// closed (WebSocket pings do not count): strangers hold their slots only while active.
    #[serde(rename = "unknown_idle_timeout_ms", deserialize_with = "millis")]
    pub unknown_idle_timeout: Duration,
    /// Token ids the replay guard remembers at most; when full it forgets the oldest and
    /// refuses tokens as old as those.
    pub max_replay_entries: usize,
    /// Threads the sessions run on, inbound and outbound (0: one per core).
    pub io_threads: usize,
}

impl SessionSettings {
    /// The threads the sessions run on: `io_threads`, or one per core when 0.
    pub fn io_thread_count(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Upper bound of `session.token_max_age_seconds`: the replay guard remembers every token
/// this long, so a longer lifetime only makes it bigger.
pub const MAX_TOKEN_AGE_SECS: u64 = 3600;
/// Upper bound of `session.token_max_skew_seconds`.
pub const MAX_TOKEN_SKEW_SECS: u64 = 600;

/// One plain ILP peer: inbound it sends `username` and `secret`; outbound, when a peer's
/// endpoint is `endpoint`, we send them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSecretPeer {
    pub username: String,
    pub secret: String,
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl SessionSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        p.add(Key("session.listen").ensure(
            self.listen.is_empty() || self.listen.parse::<std::net::SocketAddr>().is_ok(),
            format!(
                "`{}` must be empty or an address such as 127.0.0.1:7700",
                self.listen
            ),
        ));
        p.add(Key("session.connect_timeout_ms").nonzero(self.connect_timeout));
        p.add(Key("session.auth_timeout_ms").nonzero(self.auth_timeout));
        p.add(Key("session.request_timeout_ms").nonzero(self.request_timeout));
        p.add(Key("session.ws_ping_interval_ms").nonzero(self.ws_ping_interval));
        p.add(Key("session.token_max_age_seconds").between(
            self.token_max_age.as_secs(),
            1,
            MAX_TOKEN_AGE_SECS,
        ));
        p.add(Key("session.token_max_skew_seconds").between(
            self.token_max_skew.as_secs(),
            0,
            MAX_TOKEN_SKEW_SECS,
        ));
        p.add(Key("session.max_queued_messages").between(self.max_queued_messages, 1, 65_536));
        p.add(Key("session.max_requests_in_flight").between(
            self.max_requests_in_flight,
            1,
            65_536,
        ));
        p.add(Key("session.write_timeout_ms").nonzero(self.write_timeout));
        p.add(Key("session.max_unauthenticated").nonzero(self.max_unauthenticated));
        p.add(Key("session.max_unauthenticated_per_ip").nonzero(self.max_unauthenticated_per_ip));
        p.add(Key("session.unknown_idle_timeout_ms").nonzero(self.unknown_idle_timeout));
        p.add(Key("session.max_replay_entries").between(self.max_replay_entries, 1024, 10_000_000));
        p.add(Key("session.io_threads").between(self.io_threads, 0, 64));
        p.add(
            Key("session.asset_code")
                .ensure(!self.asset_code.trim().is_empty(), "must not be empty"),
        );
        for peer in &self.shared_secret_peers {
            p.add(
                Key("session.shared_secret_peers.username").ensure(
                    !peer.username.is_empty()
                        && peer
                            .username
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_~-".contains(c)),
                    format!(
                    "`{}` must be letters, digits, _ ~ or - (it becomes an ILP address segment)",
                    peer.username
                ),
                ),
            );
            // A 64-hex username would read as a Nostr pubkey: refusals could then tell a
            // configured username from an unknown one.
            p.add(Key("session.shared_secret_peers.username").ensure(
                !(peer.username.len() == 64
                    && peer.username.chars().all(|c| c.is_ascii_hexdigit())),
                format!(
                    "`{}` must not be 64 hex digits (that is a Nostr pubkey)",
                    peer.username
                ),
            ));
            p.add(Key("session.shared_secret_peers.secret").ensure(
                peer.secret.len() >= 16,
                format!(
                    "the secret of `{}` must be at least 16 characters",
                    peer.username
                ),
            ));
        }
        p.finish()
    }
}
