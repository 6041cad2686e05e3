//! Configuration: `config/default.yaml` (compiled in), then an optional file, then
//! environment variables `BTP_NIPS_NODE__SECTION__KEY`; a key no section knows is refused.
//! Every value is validated at startup; an error names the key and the rule it broke.
//!
//! [`Settings`] is the root; each section lives in its own module with its own
//! `validate`, and all of them report through one checker ([`check`]). Durations are
//! [`std::time::Duration`] fields read from the operators' keys, which keep their unit in
//! their name (`heartbeat_interval_seconds`, `flush_interval_ms`; see [`duration`]).

mod admin;
mod chain;
mod check;
mod database;
mod duration;
mod events;
mod node;
mod nostr;
mod peer_connections;
mod persistence;
mod session;

use std::path::Path;

use config::builder::DefaultState;
use config::{ConfigBuilder, Environment, File, FileFormat};
use serde::Deserialize;

pub use admin::AdminSettings;
pub use chain::{AutoOpenSettings, ChainSettings};
pub use database::DatabaseSettings;
pub use events::EventSettings;
pub use node::NodeSettings;
pub use nostr::{AnnounceSettings, NostrSettings};
pub use peer_connections::{BtpNipsSettings, PeerConnectionSettings};
pub use persistence::PersistenceSettings;
pub use session::{SessionSettings, SharedSecretPeer};

/// The defaults shipped in the repository, compiled into the binary so it runs anywhere.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default.yaml");

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BTP_NIPS_NODE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(String),
    #[error("configuration key `{key}` is invalid: {rule}")]
    Invalid { key: &'static str, rule: String },
}

impl ConfigError {
    /// The key an invalid value was found under.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Load(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub node: NodeSettings,
    pub database: DatabaseSettings,
    pub persistence: PersistenceSettings,
    pub btp_nips: BtpNipsSettings,
    pub chain: ChainSettings,
    pub session: SessionSettings,
    pub nostr: NostrSettings,
    pub events: EventSettings,
    pub admin: AdminSettings,
}

impl Settings {
    /// The compiled-in defaults, with no file and no environment.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::finish(defaults())
    }

    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::from_sources(file, environment())
    }

    /// Defaults overlaid with a YAML document (used by tests and tools).
    pub fn from_yaml_overrides(yaml: &str) -> Result<Settings, ConfigError> {
        Self::finish(defaults().add_source(File::from_str(yaml, FileFormat::Yaml)))
    }

    /// Defaults, then `file` if given, then `env` (the process environment, or in tests a
    /// map standing in for it).
    fn from_sources(file: Option<&Path>, env: Environment) -> Result<Settings, ConfigError> {
        let mut builder = defaults();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path));
        }
        Self::finish(builder.add_source(env))
    }

    fn finish(builder: ConfigBuilder<DefaultState>) -> Result<Settings, ConfigError> {
        let settings: Settings = builder
            .build()
            .and_then(|built| built.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every section; the first broken rule is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        self.database.validate()?;
        self.persistence.validate()?;
        self.btp_nips.peer_connections.validate()?;
        self.chain.validate()?;
        self.nostr.validate()?;
        // The operator's relay is a relay like the others: ws:// only where nostr allows it.
        self.events.validate(self.nostr.allow_ws_loopback)?;
        self.admin.validate()?;
        self.session.validate()
    }
}

/// A builder holding the compiled-in defaults.
fn defaults() -> ConfigBuilder<DefaultState> {
    config::Config::builder().add_source(File::from_str(DEFAULT_CONFIG_YAML, FileFormat::Yaml))
}

/// `BTP_NIPS_NODE__SECTION__KEY=value`, a number or boolean where the text is one.
fn environment() -> Environment {
    Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::lifecycle::LifecycleConfig;

    /// The loader with `vars` as the whole environment.
    fn load_with_env(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_sources(file, environment().source(Some(map)))
    }

    fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn the_defaults_are_valid_and_read_durations_in_their_keys_units() {
        let s = Settings::defaults().unwrap();
        let c = &s.btp_nips.peer_connections;
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(c.reconnect_initial_delay, Duration::from_millis(1000));
        assert_eq!(s.persistence.flush_interval, Duration::from_millis(5));
        assert_eq!(s.session.token_max_age, Duration::from_secs(60));
        assert_eq!(s.chain.min_time_left, Duration::from_secs(86_400));
        assert_eq!(s.nostr.batch_window, Duration::from_millis(20));
    }

    #[test]
    fn a_file_then_the_environment_override_the_defaults() {
        let file = yaml_file(
            "node:\n  id: \"fromfile\"\nbtp_nips:\n  peer_connections:\n    heartbeat_interval_seconds: 45\n    max_active_connections: 7\n",
        );
        let s = load_with_env(
            Some(file.path()),
            &[
                ("BTP_NIPS_NODE__NODE__ID", "fromenv"),
                ("BTP_NIPS_NODE__PERSISTENCE__FLUSH_INTERVAL_MS", "250"),
                (
                    "BTP_NIPS_NODE__BTP_NIPS__PEER_CONNECTIONS__AUTO_RECONNECT_ON_STARTUP",
                    "false",
                ),
                ("OTHER_PROGRAM__NODE__ID", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(s.node.id, "fromenv", "the environment wins over the file");
        let c = &s.btp_nips.peer_connections;
        assert_eq!(c.heartbeat_interval, Duration::from_secs(45));
        assert_eq!(c.max_active_connections, 7);
        assert!(!c.auto_reconnect_on_startup);
        assert_eq!(s.persistence.flush_interval, Duration::from_millis(250));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(10), "default kept");
    }

    #[test]
    fn a_duration_from_the_environment_is_still_validated() {
        let err =
            load_with_env(None, &[("BTP_NIPS_NODE__SESSION__AUTH_TIMEOUT_MS", "0")]).unwrap_err();
        assert_eq!(err.key(), Some("session.auth_timeout_ms"));
        let err =
            load_with_env(None, &[("BTP_NIPS_NODE__NOSTR__QUERY_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(matches!(err, ConfigError::Load(_)));
        assert!(err.to_string().contains("query_timeout_ms"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_from_a_file_and_from_the_environment() {
        let file = yaml_file("persistence:\n  flush_interval: 5\n");
        let err = load_with_env(Some(file.path()), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Load(_)));
        assert!(err.to_string().contains("flush_interval"), "{err}");
        let err = load_with_env(None, &[("BTP_NIPS_NODE__SESSION__LISTEN_ON", "x")]).unwrap_err();
        assert!(err.to_string().contains("listen_on"), "{err}");
    }

    #[test]
    fn a_negative_duration_is_refused_naming_its_key() {
        let err = Settings::from_yaml_overrides("chain: {rpc_timeout_seconds: -1}").unwrap_err();
        assert!(err.to_string().contains("rpc_timeout_seconds"), "{err}");
    }

    #[test]
    fn messages_quote_durations_in_their_keys_units() {
        let err = Settings::from_yaml_overrides(
            "btp_nips: {peer_connections: {reconnect_initial_delay_ms: 1500, reconnect_max_delay_ms: 10}}",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration key `btp_nips.peer_connections.reconnect_max_delay_ms` is invalid: \
             must not be less than reconnect_initial_delay_ms (1500)"
        );
    }

    #[test]
    fn the_default_lifecycle_config_is_the_shipped_one() {
        let c = LifecycleConfig::default();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(c.backoff.initial, Duration::from_secs(1));
        assert_eq!(c.backoff.max, Duration::from_secs(300));
        assert_eq!(c.backoff.max_attempts, 10);
        assert_eq!(c.stable_connection, Duration::from_secs(600));
        assert_eq!(c.max_discovery_attempts, 3);
        assert_eq!(c.discovery_retry, Duration::from_secs(30));
        assert_eq!(c.channel_opening_timeout, Duration::from_secs(600));
        assert_eq!(c.channel_poll_interval, Duration::from_secs(2));
        assert_eq!(c.channel_recheck_interval, Duration::from_secs(30));
    }
}
