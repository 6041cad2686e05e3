//! Configuration: `config/default.yaml` (compiled in), then an optional file, then
//! environment variables `BTP_NIPS_NODE__SECTION__KEY`; a key no section knows is refused.
//! Every value is validated at startup; an error names the key and the rule it broke.
//!
//! [`Settings`] is the root; each section lives in its own module with its own
//! `validate`, and all of them report through one checker ([`check`]). Durations are
//! [`std::time::Duration`] fields read from the operators' keys, which keep their unit in
//! their name (`heartbeat_interval_seconds`, `flush_interval_ms`; see [`duration`]).

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
