//! Configuration: `config/default.yaml` (compiled in), then an optional file, then
//! environment variables `BTP_NIPS_NODE__SECTION__KEY`. Every value is validated at
//! startup; an error names the key and the rule it broke.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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

/// `events`: the event flow between the operator's relay and the connected peers (issue #6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// The operator's own relay (ws:// or wss://); empty: no events move.
    pub operator_relay: String,
    /// Open subscriptions one peer may hold on this node; a REQ beyond them gets a NOTICE.
    pub max_subscriptions_per_peer: usize,
    /// Events asked of the operator's relay per page of stored events.
    pub stored_page_size: usize,
    /// At most this many stored events are served per REQ (the newest; a NOTICE says so).
    pub max_stored_events: usize,
}

impl EventSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self, allow_ws_loopback: bool) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, rule: String| Err(ConfigError::Invalid { key, rule });
        let url = self.operator_relay.trim();
        if !url.is_empty() {
            if let Err(rule) =
                crate::discovery::announcement::check_endpoint(url, allow_ws_loopback)
            {
                return invalid("events.operator_relay", rule);
            }
        }
        for (key, value) in [
            (
                "events.max_subscriptions_per_peer",
                self.max_subscriptions_per_peer,
            ),
            ("events.stored_page_size", self.stored_page_size),
            ("events.max_stored_events", self.max_stored_events),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The `<nodeId>` of this node's ILP address.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH`, a bare path, or `postgres://…`.
    pub url: String,
    pub pool_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceSettings {
    pub flush_interval_ms: u64,
    pub max_batch: usize,
    pub retry_initial_delay_ms: u64,
    pub retry_max_delay_ms: u64,
}

impl PersistenceSettings {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
    pub fn retry_initial_delay(&self) -> Duration {
        Duration::from_millis(self.retry_initial_delay_ms)
    }
    pub fn retry_max_delay(&self) -> Duration {
        Duration::from_millis(self.retry_max_delay_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtpNipsSettings {
    pub peer_connections: PeerConnectionSettings,
}

/// The seed's `btp_nips.peer_connections` block plus what the lifecycle needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConnectionSettings {
    pub heartbeat_interval_seconds: u64,
    pub heartbeat_timeout_seconds: u64,
    pub max_reconnect_attempts: u32,
    pub reconnect_initial_delay_ms: u64,
    pub reconnect_max_delay_ms: u64,
    pub channel_opening_timeout_seconds: u64,
    pub auto_reconnect_on_startup: bool,
    pub max_active_connections: usize,
    pub reconnect_jitter: f64,
    pub stable_connection_seconds: u64,
    pub max_discovery_attempts: u32,
    pub discovery_retry_seconds: u64,
    pub channel_poll_interval_seconds: u64,
    pub max_restarts: u32,
    pub restart_window_seconds: u64,
    pub startup_dial_batch: usize,
    pub startup_dial_interval_ms: u64,
    pub channel_recheck_seconds: u64,
}

/// `session`: BTP sessions (issue #3): the inbound endpoint, timeouts, authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Where the inbound endpoint listens, `host:port`; empty: no inbound endpoint.
    pub listen: String,
    /// The endpoint peers dial (as announced), to which their tokens are bound; empty:
    /// the loopback forms of the bound address.
    pub public_endpoint: String,
    /// Allow `ws://` (no TLS) to loopback hosts; every other endpoint must be `wss://`.
    pub allow_ws_loopback: bool,
    /// The node's Nostr secret key (hex or nsec); empty: an ephemeral key per run.
    pub secret_key_hex: String,
    pub connect_timeout_ms: u64,
    /// A dialed peer must answer auth, and an inbound one send it, within this.
    pub auth_timeout_ms: u64,
    /// Each BTP request waits this long for its answer (ilp-plugin-btp uses 35 s).
    pub request_timeout_ms: u64,
    /// WebSocket pings keep the socket warm; three intervals without a frame → dead.
    pub ws_ping_interval_ms: u64,
    /// A Nostr auth token older than this is expired.
    pub token_max_age_seconds: u64,
    /// How far a token's `created_at` may be ahead of our clock.
    pub token_max_skew_seconds: u64,
    /// What ILDCP tells neighbours about the bilateral asset.
    pub asset_code: String,
    pub asset_scale: u8,
    /// Plain ILP peers authenticated by a shared secret instead of a Nostr key.
    pub shared_secret_peers: Vec<SharedSecretPeer>,
    /// At most this many inbound sessions from pubkeys the node has no record of (not
    /// followed, never met); followed and known peers are not counted.
    pub max_unknown_inbound: usize,
}

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

/// `nostr`: relays, the node's key, the operator, caches and the announcement (issue #4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NostrSettings {
    pub relays: Vec<String>,
    pub key_env: String,
    pub key_file: String,
    pub operator_pubkey: String,
    pub allow_ws_loopback: bool,
    pub query_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub retry_interval_ms: u64,
    pub found_cache_seconds: u64,
    pub not_found_cache_seconds: u64,
    pub batch_window_ms: u64,
    pub max_authors_per_req: usize,
    pub parallel_reqs: usize,
    pub announce: AnnounceSettings,
}

/// `nostr.announce`: the fields of this node's kind 32001 announcement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceSettings {
    pub endpoint: String,
    pub base_address: String,
    pub supported_tokens: Vec<String>,
    pub features: Vec<String>,
    pub operator_name: String,
    pub description: String,
}

impl NostrSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::discovery::announcement::{check_base_address, check_endpoint};
        fn invalid(key: &'static str, rule: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                rule: rule.into(),
            })
        }
        for url in &self.relays {
            if let Err(rule) = check_endpoint(url, self.allow_ws_loopback) {
                return invalid("nostr.relays", rule);
            }
        }
        if self.key_env.trim().is_empty() && self.key_file.trim().is_empty() {
            return invalid(
                "nostr.key_file",
                "key_file and key_env must not both be empty",
            );
        }
        let op = self.operator_pubkey.trim();
        if !op.is_empty() && nostr_sdk::prelude::PublicKey::parse(op).is_err() {
            return invalid(
                "nostr.operator_pubkey",
                format!("`{op}` is not a public key (npub1… or 64 hex characters)"),
            );
        }
        for (key, value) in [
            ("nostr.query_timeout_ms", self.query_timeout_ms),
            ("nostr.connect_timeout_ms", self.connect_timeout_ms),
            ("nostr.retry_interval_ms", self.retry_interval_ms),
            ("nostr.found_cache_seconds", self.found_cache_seconds),
            (
                "nostr.not_found_cache_seconds",
                self.not_found_cache_seconds,
            ),
            ("nostr.batch_window_ms", self.batch_window_ms),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.max_authors_per_req == 0 || self.max_authors_per_req > 5000 {
            return invalid("nostr.max_authors_per_req", "must be between 1 and 5000");
        }
        if self.parallel_reqs == 0 || self.parallel_reqs > 64 {
            return invalid("nostr.parallel_reqs", "must be between 1 and 64");
        }
        let a = &self.announce;
        if !a.endpoint.is_empty() {
            if let Err(rule) = check_endpoint(&a.endpoint, self.allow_ws_loopback) {
                return invalid("nostr.announce.endpoint", rule);
            }
            if let Err(rule) = check_base_address(&a.base_address) {
                return invalid("nostr.announce.base_address", rule);
            }
        }
        for (key, list) in [
            ("nostr.announce.supported_tokens", &a.supported_tokens),
            ("nostr.announce.features", &a.features),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|t| t.is_empty() || t.contains(',') || t.contains(char::is_whitespace))
            {
                return invalid(
                    key,
                    format!("`{bad}` must be a non-empty word without commas"),
                );
            }
        }
        Ok(())
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.retry_interval_ms)
    }
    pub fn found_cache(&self) -> Duration {
        Duration::from_secs(self.found_cache_seconds)
    }
    pub fn not_found_cache(&self) -> Duration {
        Duration::from_secs(self.not_found_cache_seconds)
    }
    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }
}

impl Settings {
    /// The compiled-in defaults, with no file and no environment.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::from_sources(None, false)
    }

    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::from_sources(file, true)
    }

    /// Defaults overlaid with a YAML document (used by tests and tools).
    pub fn from_yaml_overrides(yaml: &str) -> Result<Settings, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_CONFIG_YAML,
                config::FileFormat::Yaml,
            ))
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::finish(built)
    }

    fn from_sources(file: Option<&Path>, env: bool) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_CONFIG_YAML,
            config::FileFormat::Yaml,
        ));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path));
        }
        if env {
            builder = builder.add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let built = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::finish(built)
    }

    fn finish(built: config::Config) -> Result<Settings, ConfigError> {
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every rule; the first broken one is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, rule: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                rule: rule.into(),
            })
        }
        let id = &self.node.id;
        if id.is_empty()
            || id.len() > 32
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            || id.starts_with(|c: char| c.is_ascii_digit())
        {
            return invalid(
                "node.id",
                format!(
                    "`{id}` must be 1-32 lowercase letters or digits, not starting with a digit"
                ),
            );
        }
        let url = &self.database.url;
        if url.trim().is_empty() {
            return invalid("database.url", "must not be empty");
        }
        if url.contains("://")
            && !(url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                format!("`{url}` must start with sqlite://, postgres:// or postgresql://, or be a file path"),
            );
        }
        if self.database.pool_size == 0 || self.database.pool_size > 64 {
            return invalid("database.pool_size", "must be between 1 and 64");
        }
        let p = &self.persistence;
        if p.flush_interval_ms == 0 || p.flush_interval_ms > 60_000 {
            return invalid(
                "persistence.flush_interval_ms",
                "must be between 1 and 60000",
            );
        }
        if p.max_batch == 0 {
            return invalid("persistence.max_batch", "must be at least 1");
        }
        if p.retry_initial_delay_ms == 0 {
            return invalid("persistence.retry_initial_delay_ms", "must be at least 1");
        }
        if p.retry_max_delay_ms < p.retry_initial_delay_ms {
            return invalid(
                "persistence.retry_max_delay_ms",
                "must not be less than persistence.retry_initial_delay_ms",
            );
        }
        let c = &self.btp_nips.peer_connections;
        if c.heartbeat_interval_seconds == 0 {
            return invalid(
                "btp_nips.peer_connections.heartbeat_interval_seconds",
                "must be at least 1",
            );
        }
        if c.heartbeat_timeout_seconds == 0
            || c.heartbeat_timeout_seconds >= c.heartbeat_interval_seconds
        {
            return invalid(
                "btp_nips.peer_connections.heartbeat_timeout_seconds",
                format!(
                    "must be at least 1 and shorter than heartbeat_interval_seconds ({})",
                    c.heartbeat_interval_seconds
                ),
            );
        }
        if c.max_reconnect_attempts == 0 || c.max_reconnect_attempts > 64 {
            return invalid(
                "btp_nips.peer_connections.max_reconnect_attempts",
                "must be between 1 and 64",
            );
        }
        if c.reconnect_initial_delay_ms == 0 {
            return invalid(
                "btp_nips.peer_connections.reconnect_initial_delay_ms",
                "must be at least 1",
            );
        }
        if c.reconnect_max_delay_ms < c.reconnect_initial_delay_ms {
            return invalid(
                "btp_nips.peer_connections.reconnect_max_delay_ms",
                format!(
                    "must not be less than reconnect_initial_delay_ms ({})",
                    c.reconnect_initial_delay_ms
                ),
            );
        }
        if !(0.0..1.0).contains(&c.reconnect_jitter) {
            return invalid(
                "btp_nips.peer_connections.reconnect_jitter",
                "must be at least 0 and less than 1",
            );
        }
        if c.channel_opening_timeout_seconds == 0 {
            return invalid(
                "btp_nips.peer_connections.channel_opening_timeout_seconds",
                "must be at least 1",
            );
        }
        if c.channel_poll_interval_seconds == 0
            || c.channel_poll_interval_seconds > c.channel_opening_timeout_seconds
        {
            return invalid(
                "btp_nips.peer_connections.channel_poll_interval_seconds",
                "must be at least 1 and not longer than channel_opening_timeout_seconds",
            );
        }
        if c.max_active_connections == 0 {
            return invalid(
                "btp_nips.peer_connections.max_active_connections",
                "must be at least 1",
            );
        }
        if c.max_discovery_attempts == 0 {
            return invalid(
                "btp_nips.peer_connections.max_discovery_attempts",
                "must be at least 1",
            );
        }
        if c.discovery_retry_seconds == 0 {
            return invalid(
                "btp_nips.peer_connections.discovery_retry_seconds",
                "must be at least 1",
            );
        }
        if c.restart_window_seconds == 0 {
            return invalid(
                "btp_nips.peer_connections.restart_window_seconds",
                "must be at least 1",
            );
        }
        if c.startup_dial_batch == 0 {
            return invalid(
                "btp_nips.peer_connections.startup_dial_batch",
                "must be at least 1",
            );
        }
        if c.channel_recheck_seconds == 0 {
            return invalid(
                "btp_nips.peer_connections.channel_recheck_seconds",
                "must be at least 1",
            );
        }
        self.chain.validate()?;
        if c.startup_dial_interval_ms == 0 {
            return invalid(
                "btp_nips.peer_connections.startup_dial_interval_ms",
                "must be at least 1",
            );
        }
        self.nostr.validate()?;
        self.events.validate(self.nostr.allow_ws_loopback)?;
        self.session.validate()
    }
}

impl SessionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, rule: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                rule: rule.into(),
            })
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "session.listen",
                format!(
                    "`{}` must be empty or an address such as 127.0.0.1:7700",
                    self.listen
                ),
            );
        }
        let endpoint = &self.public_endpoint;
        if !endpoint.is_empty() && !endpoint.starts_with("wss://") && !endpoint.starts_with("ws://")
        {
            return invalid(
                "session.public_endpoint",
                format!("`{endpoint}` must start with ws:// or wss://"),
            );
        }
        let key = self.secret_key_hex.trim();
        if !key.is_empty() && nostr::Keys::parse(key).is_err() {
            return invalid(
                "session.secret_key_hex",
                "must be empty, 64 hex digits or an nsec secret key",
            );
        }
        for (key, value) in [
            ("session.connect_timeout_ms", self.connect_timeout_ms),
            ("session.auth_timeout_ms", self.auth_timeout_ms),
            ("session.request_timeout_ms", self.request_timeout_ms),
            ("session.ws_ping_interval_ms", self.ws_ping_interval_ms),
            ("session.token_max_age_seconds", self.token_max_age_seconds),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.asset_code.trim().is_empty() {
            return invalid("session.asset_code", "must not be empty");
        }
        for peer in &self.shared_secret_peers {
            if peer.username.is_empty()
                || !peer
                    .username
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_~-".contains(c))
            {
                return invalid(
                    "session.shared_secret_peers.username",
                    format!(
                        "`{}` must be letters, digits, _ ~ or - (it becomes an ILP address segment)",
                        peer.username
                    ),
                );
            }
            if peer.secret.len() < 16 {
                return invalid(
                    "session.shared_secret_peers.secret",
                    format!(
                        "the secret of `{}` must be at least 16 characters",
                        peer.username
                    ),
                );
            }
        }
        Ok(())
    }
}

impl PeerConnectionSettings {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_seconds)
    }
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_seconds)
    }
    pub fn reconnect_initial_delay(&self) -> Duration {
        Duration::from_millis(self.reconnect_initial_delay_ms)
    }
    pub fn reconnect_max_delay(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_delay_ms)
    }
    pub fn channel_opening_timeout(&self) -> Duration {
        Duration::from_secs(self.channel_opening_timeout_seconds)
    }
    pub fn channel_poll_interval(&self) -> Duration {
        Duration::from_secs(self.channel_poll_interval_seconds)
    }
    pub fn stable_connection(&self) -> Duration {
        Duration::from_secs(self.stable_connection_seconds)
    }
    pub fn discovery_retry(&self) -> Duration {
        Duration::from_secs(self.discovery_retry_seconds)
    }
    pub fn restart_window(&self) -> Duration {
        Duration::from_secs(self.restart_window_seconds)
    }
    pub fn startup_dial_interval(&self) -> Duration {
        Duration::from_millis(self.startup_dial_interval_ms)
    }
    pub fn channel_recheck_interval(&self) -> Duration {
        Duration::from_secs(self.channel_recheck_seconds)
    }
}

/// `chain`: the EVM chain that holds the payment channels (see `crate::chain`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// Off: the node runs without a chain adapter (channel checks report a transient fault).
    pub enabled: bool,
    /// JSON-RPC endpoint, `http://` or `https://`.
    pub rpc_url: String,
    /// The chain the node signs for (Base 8453, Base Sepolia 84532, anvil 31337); checked
    /// against the endpoint at startup.
    pub chain_id: u64,
    /// The deployed `PaymentChannels` contract, `0x` + 40 hex digits.
    pub contract_address: String,
    /// Blocks on top of (and including) the open transaction's before it counts.
    pub confirmations: u64,
    /// Each RPC call gives up after this long (a transient fault).
    pub rpc_timeout_seconds: u64,
    /// A file holding the node's EVM private key (hex); or empty, and `key_env` names it.
    pub key_file: String,
    /// An environment variable holding the node's EVM private key (hex).
    pub key_env: String,
    /// What a new channel deposits, in wei (decimal string; `open-channel --deposit` overrides).
    pub deposit_wei: String,
    /// How long a new channel runs before the payer may reclaim it.
    pub channel_duration_seconds: u64,
    /// A channel is usable only with at least this much unclaimed deposit (wei) ...
    pub min_balance_wei: String,
    /// ... and at least this much time before its expiry.
    pub min_time_left_seconds: u64,
    pub auto_open: AutoOpenSettings,
}

/// `chain.auto_open`: open channels to followed peers without asking the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoOpenSettings {
    pub enabled: bool,
    /// No automatic channel deposits more than this (wei).
    pub per_channel_cap_wei: String,
    /// Automatic opens stop once the node's funds locked in open channels would exceed this.
    pub total_cap_wei: String,
}

fn parse_wei(key: &'static str, value: &str) -> Result<u128, ConfigError> {
    value
        .trim()
        .parse::<u128>()
        .map_err(|_| ConfigError::Invalid {
            key,
            rule: format!("`{value}` must be a whole number of wei (decimal digits)"),
        })
}

impl ChainSettings {
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_secs(self.rpc_timeout_seconds)
    }
    pub fn deposit(&self) -> u128 {
        parse_wei("chain.deposit_wei", &self.deposit_wei).unwrap_or_default()
    }
    pub fn min_balance(&self) -> u128 {
        parse_wei("chain.min_balance_wei", &self.min_balance_wei).unwrap_or_default()
    }
    pub fn per_channel_cap(&self) -> u128 {
        parse_wei(
            "chain.auto_open.per_channel_cap_wei",
            &self.auto_open.per_channel_cap_wei,
        )
        .unwrap_or_default()
    }
    pub fn total_cap(&self) -> u128 {
        parse_wei(
            "chain.auto_open.total_cap_wei",
            &self.auto_open.total_cap_wei,
        )
        .unwrap_or_default()
    }

    /// Checks every `chain.*` rule; addresses, URL and key source only when enabled.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, rule: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                rule: rule.into(),
            })
        }
        let deposit = parse_wei("chain.deposit_wei", &self.deposit_wei)?;
        if deposit == 0 {
            return invalid("chain.deposit_wei", "must be more than 0");
        }
        let min_balance = parse_wei("chain.min_balance_wei", &self.min_balance_wei)?;
        if min_balance > deposit {
            return invalid(
                "chain.min_balance_wei",
                format!("must not exceed chain.deposit_wei ({deposit})"),
            );
        }
        let per_channel = parse_wei(
            "chain.auto_open.per_channel_cap_wei",
            &self.auto_open.per_channel_cap_wei,
        )?;
        let total = parse_wei(
            "chain.auto_open.total_cap_wei",
            &self.auto_open.total_cap_wei,
        )?;
        if per_channel > total {
            return invalid(
                "chain.auto_open.per_channel_cap_wei",
                format!("must not exceed chain.auto_open.total_cap_wei ({total})"),
            );
        }
        if self.auto_open.enabled && deposit > per_channel {
            return invalid(
                "chain.deposit_wei",
                format!(
                    "{deposit} exceeds chain.auto_open.per_channel_cap_wei ({per_channel}) while auto_open is enabled"
                ),
            );
        }
        if self.confirmations == 0 || self.confirmations > 1000 {
            return invalid("chain.confirmations", "must be between 1 and 1000");
        }
        if self.rpc_timeout_seconds == 0 {
            return invalid("chain.rpc_timeout_seconds", "must be at least 1");
        }
        if self.channel_duration_seconds <= self.min_time_left_seconds {
            return invalid(
                "chain.channel_duration_seconds",
                format!(
                    "must be longer than chain.min_time_left_seconds ({}), or a new channel is never usable",
                    self.min_time_left_seconds
                ),
            );
        }
        if !self.enabled {
            return Ok(());
        }
        if !(self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://")) {
            return invalid(
                "chain.rpc_url",
                format!("`{}` must start with http:// or https://", self.rpc_url),
            );
        }
        if self.chain_id == 0 {
            return invalid("chain.chain_id", "must be more than 0");
        }
        let address = self.contract_address.trim();
        if !(address.len() == 42
            && address.starts_with("0x")
            && address[2..].chars().all(|c| c.is_ascii_hexdigit()))
        {
            return invalid(
                "chain.contract_address",
                format!("`{address}` must be 0x followed by 40 hex digits"),
            );
        }
        match (self.key_file.trim().is_empty(), self.key_env.trim().is_empty()) {
            (true, true) => invalid(
                "chain.key_file",
                "the node's EVM key is needed: set chain.key_file (a file holding the hex key) or chain.key_env (the variable holding it)",
            ),
            (false, false) => invalid(
                "chain.key_file",
                "set only one of chain.key_file and chain.key_env",
            ),
            _ => Ok(()),
        }
    }
}
