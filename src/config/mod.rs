//! Configuration: `config/default.yaml` (compiled in), then an optional file, then
//! environment variables `BTP_NIPS_NODE__SECTION__KEY`; a key no section knows is refused.
//! Every value is validated at startup; an error names the key and the rule it broke, and
//! every broken rule is reported at once ([`ConfigError::Many`]). A key that was replaced
//! is refused naming its replacement.
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
use serde_json::Value as Json;

use crate::discovery::announcement::{check_base_address, check_endpoint};
use check::{Key, Problems};
use serde::Deserialize;

pub use admin::AdminSettings;
pub use chain::{AutoOpenSettings, ChainSettings};
pub use database::DatabaseSettings;
pub use events::EventSettings;
pub use node::{NodeSettings, NODE_KEY_ENV};
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
    #[error("configuration key `{old}` is no longer read: use {new}")]
    Replaced {
        old: &'static str,
        new: &'static str,
    },
    #[error("{} configuration problems:{}", .0.len(), .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// The key an invalid value was found under (the first one's, of several).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Replaced { old, .. } => Some(old),
            ConfigError::Many(all) => all.first().and_then(ConfigError::key),
            ConfigError::Load(_) => None,
        }
    }

    /// Each problem on its own (one, or the parts of [`ConfigError::Many`]).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(all) => all.iter().collect(),
            one => vec![one],
        }
    }
}

/// Keys that were replaced, and what replaced them: one identity and one public endpoint
/// for every part of the node.
const REPLACED: [(&str, &str); 5] = [
    (
        "session.secret_key_hex",
        "node.key_file (or the environment variable BTP_NIPS_NODE_NSEC)",
    ),
    (
        "nostr.key_file",
        "node.key_file (or the environment variable BTP_NIPS_NODE_NSEC)",
    ),
    (
        "nostr.key_env",
        "node.key_file (or the environment variable BTP_NIPS_NODE_NSEC)",
    ),
    ("session.public_endpoint", "node.public_endpoint"),
    ("nostr.announce.endpoint", "node.public_endpoint"),
];

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
        })
    }
}

/// One key of the effective configuration, its value (secrets redacted) and its source.
#[derive(Debug, Clone)]
pub struct EffectiveValue {
    pub key: String,
    pub value: String,
    pub source: Source,
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

    /// As [`Settings::load`], without the value rules: what `config check` validates with
    /// everything else it checks (only unreadable, unknown or replaced keys fail here).
    pub fn load_unvalidated(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::deserialize(Self::sources(file, environment())?)
    }

    /// Every key of the configuration `load` reads, with its value (secrets redacted) and
    /// whether it came from the defaults, the file or the environment; sorted by key.
    pub fn effective(file: Option<&Path>) -> Result<Vec<EffectiveValue>, ConfigError> {
        let json = |builder: ConfigBuilder<DefaultState>| -> Result<Json, ConfigError> {
            builder
                .build()
                .and_then(|c| c.try_deserialize::<Json>())
                .map_err(|e| ConfigError::Load(e.to_string()))
        };
        let merged = flatten(&json(Self::sources(file, environment())?)?);
        let from_file = match file {
            Some(path) => flatten(&json(
                config::Config::builder().add_source(File::from(path)),
            )?),
            None => Default::default(),
        };
        let from_env = flatten(&json(config::Config::builder().add_source(environment()))?);
        Ok(merged
            .into_iter()
            .map(|(key, value)| {
                let source = if from_env.contains_key(&key) {
                    Source::Env
                } else if from_file.contains_key(&key) {
                    Source::File
                } else {
                    Source::Default
                };
                let value = redact(&key, value);
                EffectiveValue { key, value, source }
            })
            .collect())
    }

    /// Defaults overlaid with a YAML document (used by tests and tools).
    pub fn from_yaml_overrides(yaml: &str) -> Result<Settings, ConfigError> {
        Self::finish(defaults().add_source(File::from_str(yaml, FileFormat::Yaml)))
    }

    /// Defaults, then `file` if given, then `env` (the process environment, or in tests a
    /// map standing in for it).
    fn from_sources(file: Option<&Path>, env: Environment) -> Result<Settings, ConfigError> {
        Self::finish(Self::sources(file, env)?)
    }

    fn sources(
        file: Option<&Path>,
        env: Environment,
    ) -> Result<ConfigBuilder<DefaultState>, ConfigError> {
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
        Ok(builder.add_source(env))
    }

    fn finish(builder: ConfigBuilder<DefaultState>) -> Result<Settings, ConfigError> {
        let settings = Self::deserialize(builder)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads the sources into [`Settings`]; every replaced key found is refused at once,
    /// naming what replaced it.
    fn deserialize(builder: ConfigBuilder<DefaultState>) -> Result<Settings, ConfigError> {
        let load = |e: config::ConfigError| ConfigError::Load(e.to_string());
        let built = builder.build().map_err(load)?;
        let mut replaced = Problems::default();
        for (old, new) in REPLACED {
            if built.get::<config::Value>(old).is_ok() {
                replaced.add(Err(ConfigError::Replaced { old, new }));
            }
        }
        replaced.finish()?;
        built.try_deserialize().map_err(load)
    }

    /// Checks every section; every broken rule is reported, each with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        p.add(self.node.validate());
        p.add(self.database.validate());
        p.add(self.persistence.validate());
        p.add(self.btp_nips.peer_connections.validate());
        p.add(self.chain.validate());
        p.add(self.nostr.validate());
        // The operator's relay is a relay like the others: ws:// only where nostr allows it.
        p.add(self.events.validate(self.nostr.allow_ws_loopback));
        p.add(self.admin.validate());
        p.add(self.session.validate());
        p.add(self.validate_public_endpoint());
        p.finish()
    }

    /// `node.public_endpoint` is dialed by peers (ws:// only to loopback, as the sessions
    /// allow) and, with relays, announced (as nostr allows, with the settlement address).
    fn validate_public_endpoint(&self) -> Result<(), ConfigError> {
        let endpoint = self.node.public_endpoint.trim();
        if endpoint.is_empty() {
            return Ok(());
        }
        let mut p = Problems::default();
        let announced = !self.nostr.relays.is_empty();
        let allow_ws =
            self.session.allow_ws_loopback && (!announced || self.nostr.allow_ws_loopback);
        p.add(Key("node.public_endpoint").passes(check_endpoint(endpoint, allow_ws)));
        if announced {
            p.add(
                Key("nostr.announce.base_address")
                    .passes(check_base_address(&self.nostr.announce.base_address))
                    .map_err(|e| match e {
                        ConfigError::Invalid { key, rule } => ConfigError::Invalid {
                            key,
                            rule: format!("{rule} (it is announced with node.public_endpoint)"),
                        },
                        other => other,
                    }),
            );
        }
        p.finish()
    }
}

/// `{"a": {"b": 1}}` as `a.b → 1`; lists are one value.
fn flatten(json: &Json) -> std::collections::BTreeMap<String, Json> {
    fn walk(prefix: &str, json: &Json, out: &mut std::collections::BTreeMap<String, Json>) {
        match json {
            Json::Object(map) if !map.is_empty() || prefix.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = Default::default();
    walk("", json, &mut out);
    out
}

/// A value as printed: secrets (a `secret` or `password` field, a URL's user info)
/// replaced by `***`.
fn redact(key: &str, value: Json) -> String {
    fn scrub(json: Json) -> Json {
        match json {
            Json::Object(map) => Json::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let secret = is_secret(&k);
                        (k, if secret { Json::from("***") } else { scrub(v) })
                    })
                    .collect(),
            ),
            Json::Array(items) => Json::Array(items.into_iter().map(scrub).collect()),
            Json::String(text) => Json::String(redact_url(&text)),
            other => other,
        }
    }
    if is_secret(key.rsplit('.').next().unwrap_or(key)) {
        return "***".into();
    }
    match scrub(value) {
        Json::String(text) => text,
        other => other.to_string(),
    }
}

/// A field holding a secret itself (not a list of things that have one).
fn is_secret(name: &str) -> bool {
    name == "secret" || name.ends_with("_secret") || name.contains("password")
}

/// `scheme://user:pass@host` as `scheme://***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
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
