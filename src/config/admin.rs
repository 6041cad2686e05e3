//! `admin`: the operator's control plane (an HTTP API on its own listener).

use serde::Deserialize;

use super::check::Key;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `IP:port` of the admin API; empty: no admin API.
    pub listen: String,
    /// The token that may do everything (created, mode 0600, on first run if absent).
    pub token_file: String,
    /// The token that may only read: GETs and `/metrics` (created like `token_file`).
    pub read_token_file: String,
    /// Peer state changes kept for event-stream clients resuming with `Last-Event-ID`.
    pub event_buffer: usize,
    /// Event-stream (`/v1/events`) clients served at once; one more is refused (503).
    pub max_event_clients: usize,
    /// A NIP-98 authorization event may be this many seconds older (or newer) than the
    /// node's clock.
    pub nip98_max_age_seconds: u64,
    /// Ids of used NIP-98 events remembered to refuse a replay (the oldest forgotten first).
    pub nip98_remembered_events: usize,
    /// The event stream shows at most one `heartbeat` per peer this often (every PONG
    /// still counts in the metrics); 0: every PONG.
    pub heartbeat_event_interval_seconds: u64,
    /// Per-peer series in `/metrics` (a `peer` label); off by default: one series per peer
    /// is unbounded cardinality for a scraper.
    pub metrics_per_peer: bool,
}

impl AdminSettings {
    /// Whether the admin API is on.
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }

    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen.trim();
        if !listen.is_empty() {
            Key("admin.listen").ensure(
                listen.parse::<std::net::SocketAddr>().is_ok(),
                format!(
                    "`{listen}` must be empty (no admin API) or IP:port, such as 127.0.0.1:7701"
                ),
            )?;
            Key("admin.token_file").ensure(
                !self.token_file.trim().is_empty(),
                "must name a file while admin.listen is set",
            )?;
            Key("admin.read_token_file").ensure(
                !self.read_token_file.trim().is_empty(),
                "must name a file while admin.listen is set",
            )?;
            Key("admin.read_token_file").ensure(
                self.read_token_file.trim() != self.token_file.trim(),
                "must differ from admin.token_file (the read-only token is a second token)",
            )?;
        }
        Key("admin.event_buffer").between(self.event_buffer, 1, 1_000_000)?;
        Key("admin.max_event_clients").between(self.max_event_clients, 1, 10_000)?;
        Key("admin.nip98_max_age_seconds").between(self.nip98_max_age_seconds, 1, 3600)?;
        Key("admin.nip98_remembered_events").between(self.nip98_remembered_events, 1, 1_000_000)?;
        Key("admin.heartbeat_event_interval_seconds").between(
            self.heartbeat_event_interval_seconds,
            0,
            86_400,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn with(yaml: &str) -> Result<Settings, crate::config::ConfigError> {
        Settings::from_yaml_overrides(yaml)
    }

    #[test]
    fn the_defaults_listen_on_loopback_with_token_files() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.admin.listen, "127.0.0.1:7701");
        assert!(s.admin.enabled());
        assert_eq!(s.admin.token_file, "btp-nips-node.admin-token");
        assert_eq!(s.admin.event_buffer, 1024);
        assert_eq!(s.admin.max_event_clients, 16);
        assert_eq!(s.admin.nip98_max_age_seconds, 60);
        assert_eq!(s.admin.nip98_remembered_events, 10_000);
        assert_eq!(s.admin.heartbeat_event_interval_seconds, 30);
        assert!(!s.admin.metrics_per_peer);
        assert!(!with("admin:\n  listen: \"\"\n").unwrap().admin.enabled());
    }

    #[test]
    fn each_broken_rule_names_its_key() {
        let cases = [
            ("admin:\n  listen: \"localhost\"\n", "admin.listen"),
            ("admin:\n  token_file: \"\"\n", "admin.token_file"),
            (
                "admin:\n  read_token_file: \" \"\n",
                "admin.read_token_file",
            ),
            (
                "admin:\n  token_file: \"t\"\n  read_token_file: \"t\"\n",
                "admin.read_token_file",
            ),
            ("admin:\n  event_buffer: 0\n", "admin.event_buffer"),
            (
                "admin:\n  max_event_clients: 0\n",
                "admin.max_event_clients",
            ),
            (
                "admin:\n  nip98_max_age_seconds: 0\n",
                "admin.nip98_max_age_seconds",
            ),
            (
                "admin:\n  nip98_remembered_events: 0\n",
                "admin.nip98_remembered_events",
            ),
            (
                "admin:\n  heartbeat_event_interval_seconds: 86401\n",
                "admin.heartbeat_event_interval_seconds",
            ),
        ];
        for (yaml, key) in cases {
            let err = with(yaml).unwrap_err();
            assert_eq!(err.key(), Some(key), "{yaml}: {err}");
        }
        // No admin API: its token files are not needed.
        assert!(with("admin:\n  listen: \"\"\n  token_file: \"\"\n").is_ok());
    }
}
