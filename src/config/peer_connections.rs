//! `btp_nips.peer_connections`: heartbeat, reconnection, channel opening, restarts and the
//! connection limit of the peers; the lifecycle's [`LifecycleConfig`] is made from it.

use std::time::Duration;

use serde::Deserialize;

use super::check::{Key, Problems};
use super::duration::{millis, seconds};
use super::{ConfigError, Settings};
use crate::lifecycle::LifecycleConfig;

/// `btp_nips`: holds only `peer_connections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtpNipsSettings {
    pub peer_connections: PeerConnectionSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConnectionSettings {
    #[serde(rename = "heartbeat_interval_seconds", deserialize_with = "seconds")]
    pub heartbeat_interval: Duration,
    /// A heartbeat not answered within this fails the session; shorter than the interval.
    #[serde(rename = "heartbeat_timeout_seconds", deserialize_with = "seconds")]
    pub heartbeat_timeout: Duration,
    /// A PONG that changes nothing but the heartbeat time and the smoothed RTT is written
    /// to the database at most this often per peer (0: every PONG). Those two fields are
    /// soft state: a crash loses at most this much of them, and nothing else.
    #[serde(
        rename = "heartbeat_write_interval_seconds",
        deserialize_with = "seconds"
    )]
    pub heartbeat_write_interval: Duration,
    pub max_reconnect_attempts: u32,
    #[serde(rename = "reconnect_initial_delay_ms", deserialize_with = "millis")]
    pub reconnect_initial_delay: Duration,
    #[serde(rename = "reconnect_max_delay_ms", deserialize_with = "millis")]
    pub reconnect_max_delay: Duration,
    #[serde(
        rename = "channel_opening_timeout_seconds",
        deserialize_with = "seconds"
    )]
    pub channel_opening_timeout: Duration,
    pub auto_reconnect_on_startup: bool,
    pub max_active_connections: usize,
    /// Each backoff delay is shortened by a random fraction up to this.
    pub reconnect_jitter: f64,
    /// A connection up this long resets the attempt counter.
    #[serde(rename = "stable_connection_seconds", deserialize_with = "seconds")]
    pub stable_connection: Duration,
    pub max_discovery_attempts: u32,
    #[serde(rename = "discovery_retry_seconds", deserialize_with = "seconds")]
    pub discovery_retry: Duration,
    /// How often a pending channel-open transaction is checked.
    #[serde(rename = "channel_poll_interval_seconds", deserialize_with = "seconds")]
    pub channel_poll_interval: Duration,
    /// More restarts than this within `restart_window` fail the peer.
    pub max_restarts: u32,
    #[serde(rename = "restart_window_seconds", deserialize_with = "seconds")]
    pub restart_window: Duration,
    /// After a restart, peers are redialled `startup_dial_batch` at a time, one batch
    /// every `startup_dial_interval`. New follows and the redial after an outage share
    /// this budget, and at most `startup_dial_batch` session opens are in progress at once.
    pub startup_dial_batch: usize,
    #[serde(rename = "startup_dial_interval_ms", deserialize_with = "millis")]
    pub startup_dial_interval: Duration,
    /// While a peer waits for the operator to open a channel, the chain is re-checked this
    /// often.
    #[serde(rename = "channel_recheck_seconds", deserialize_with = "seconds")]
    pub channel_recheck_interval: Duration,
    /// The node's own network outage: more than `outage_loss_fraction` of the connected
    /// peers, and at least `outage_min_lost_peers`, lost within `outage_window`; or dials
    /// to `outage_dial_failures` distinct peers in a row failing unreachable.
    #[serde(rename = "outage_window_seconds", deserialize_with = "seconds")]
    pub outage_window: Duration,
    pub outage_loss_fraction: f64,
    pub outage_min_lost_peers: usize,
    pub outage_dial_failures: usize,
}

impl PeerConnectionSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        p.add(
            Key("btp_nips.peer_connections.heartbeat_interval_seconds")
                .nonzero(self.heartbeat_interval),
        );
        p.add(
            Key("btp_nips.peer_connections.heartbeat_timeout_seconds").ensure(
                !self.heartbeat_timeout.is_zero()
                    && self.heartbeat_timeout < self.heartbeat_interval,
                format!(
                    "must be at least 1 and shorter than heartbeat_interval_seconds ({})",
                    self.heartbeat_interval.as_secs()
                ),
            ),
        );
        p.add(
            Key("btp_nips.peer_connections.max_reconnect_attempts").between(
                self.max_reconnect_attempts,
                1,
                64,
            ),
        );
        p.add(
            Key("btp_nips.peer_connections.reconnect_initial_delay_ms")
                .nonzero(self.reconnect_initial_delay),
        );
        p.add(
            Key("btp_nips.peer_connections.reconnect_max_delay_ms").ensure(
                self.reconnect_max_delay >= self.reconnect_initial_delay,
                format!(
                    "must not be less than reconnect_initial_delay_ms ({})",
                    self.reconnect_initial_delay.as_millis()
                ),
            ),
        );
        p.add(Key("btp_nips.peer_connections.reconnect_jitter").ensure(
            (0.0..1.0).contains(&self.reconnect_jitter),
            "must be at least 0 and less than 1",
        ));
        p.add(
            Key("btp_nips.peer_connections.channel_opening_timeout_seconds")
                .nonzero(self.channel_opening_timeout),
        );
        p.add(
            Key("btp_nips.peer_connections.channel_poll_interval_seconds").ensure(
                !self.channel_poll_interval.is_zero()
                    && self.channel_poll_interval <= self.channel_opening_timeout,
                "must be at least 1 and not longer than channel_opening_timeout_seconds",
            ),
        );
        p.add(
            Key("btp_nips.peer_connections.max_active_connections")
                .nonzero(self.max_active_connections),
        );
        p.add(
            Key("btp_nips.peer_connections.max_discovery_attempts")
                .nonzero(self.max_discovery_attempts),
        );
        p.add(
            Key("btp_nips.peer_connections.discovery_retry_seconds").nonzero(self.discovery_retry),
        );
        p.add(Key("btp_nips.peer_connections.restart_window_seconds").nonzero(self.restart_window));
        p.add(Key("btp_nips.peer_connections.startup_dial_batch").nonzero(self.startup_dial_batch));
        p.add(
            Key("btp_nips.peer_connections.channel_recheck_seconds")
                .nonzero(self.channel_recheck_interval),
        );
        p.add(
            Key("btp_nips.peer_connections.startup_dial_interval_ms")
                .nonzero(self.startup_dial_interval),
        );
        p.add(Key("btp_nips.peer_connections.outage_window_seconds").nonzero(self.outage_window));
        p.add(
            Key("btp_nips.peer_connections.outage_loss_fraction").ensure(
                self.outage_loss_fraction > 0.0 && self.outage_loss_fraction < 1.0,
                "must be more than 0 and less than 1",
            ),
        );
        p.add(
            Key("btp_nips.peer_connections.outage_min_lost_peers").between(
                self.outage_min_lost_peers,
                2,
                1_000_000,
            ),
        );
        p.add(
            Key("btp_nips.peer_connections.outage_dial_failures").between(
                self.outage_dial_failures,
                2,
                1_000_000,
            ),
        );
        p.finish()
    }
}

/// The lifecycle rules of the shipped `config/default.yaml`, so a lifecycle can be built
/// (in tests, in tools) without loading any configuration.
impl Default for LifecycleConfig {
    fn default() -> Self {
        let settings = Settings::defaults().expect("the compiled-in defaults are valid");
        LifecycleConfig::from(&settings.btp_nips.peer_connections)
    }
}
