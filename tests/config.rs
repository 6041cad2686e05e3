//! Configuration: the defaults (`config/default.yaml`), files and environment override them, and
//! every invalid value is refused with an error naming its key.

use std::io::Write;
use std::time::Duration;

use btp_nips_node::config::{ConfigError, Settings};

#[test]
fn peer_connection_defaults_and_an_embedded_sqlite_database() {
    let s = Settings::defaults().unwrap();
    let c = &s.btp_nips.peer_connections;
    assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
    assert_eq!(c.max_reconnect_attempts, 10);
    assert_eq!(c.reconnect_initial_delay, Duration::from_millis(1000));
    assert_eq!(c.reconnect_max_delay, Duration::from_millis(300_000));
    assert_eq!(c.channel_opening_timeout, Duration::from_secs(600));
    assert!(c.auto_reconnect_on_startup);
    assert_eq!(c.max_active_connections, 1000);
    assert!(
        s.database.url.starts_with("sqlite://"),
        "SQLite is the embedded default"
    );
}

#[test]
fn every_invalid_value_is_refused_naming_its_key() {
    let cases = [
        ("node: {id: \"9lives\"}", "node.id"),
        ("node: {id: \"Upper\"}", "node.id"),
        ("node: {id: \"\"}", "node.id"),
        ("database: {url: \"mysql://x\"}", "database.url"),
        ("database: {url: \"  \"}", "database.url"),
        ("database: {pool_size: 0}", "database.pool_size"),
        (
            "persistence: {flush_interval_ms: 0}",
            "persistence.flush_interval_ms",
        ),
        ("persistence: {max_batch: 0}", "persistence.max_batch"),
        (
            "persistence: {retry_initial_delay_ms: 0}",
            "persistence.retry_initial_delay_ms",
        ),
        (
            "persistence: {retry_initial_delay_ms: 500, retry_max_delay_ms: 100}",
            "persistence.retry_max_delay_ms",
        ),
    ];
    let peer = [
        (
            "heartbeat_interval_seconds: 0",
            "heartbeat_interval_seconds",
        ),
        ("heartbeat_timeout_seconds: 0", "heartbeat_timeout_seconds"),
        ("heartbeat_timeout_seconds: 60", "heartbeat_timeout_seconds"),
        ("max_reconnect_attempts: 0", "max_reconnect_attempts"),
        (
            "reconnect_initial_delay_ms: 0",
            "reconnect_initial_delay_ms",
        ),
        ("reconnect_max_delay_ms: 10", "reconnect_max_delay_ms"),
        ("reconnect_jitter: 1.0", "reconnect_jitter"),
        ("reconnect_jitter: -0.1", "reconnect_jitter"),
        (
            "channel_opening_timeout_seconds: 0",
            "channel_opening_timeout_seconds",
        ),
        (
            "channel_poll_interval_seconds: 0",
            "channel_poll_interval_seconds",
        ),
        (
            "channel_poll_interval_seconds: 601",
            "channel_poll_interval_seconds",
        ),
        ("max_active_connections: 0", "max_active_connections"),
        ("max_discovery_attempts: 0", "max_discovery_attempts"),
        ("discovery_retry_seconds: 0", "discovery_retry_seconds"),
        ("restart_window_seconds: 0", "restart_window_seconds"),
        ("startup_dial_batch: 0", "startup_dial_batch"),
        ("startup_dial_interval_ms: 0", "startup_dial_interval_ms"),
        ("outage_window_seconds: 0", "outage_window_seconds"),
        ("outage_loss_fraction: 1.0", "outage_loss_fraction"),
        ("outage_loss_fraction: 0", "outage_loss_fraction"),
        ("outage_min_lost_peers: 1", "outage_min_lost_peers"),
        ("outage_dial_failures: 1", "outage_dial_failures"),
    ];
    let peer_cases: Vec<(String, String)> = peer
        .iter()
        .map(|(yaml, key)| {
            (
                format!("btp_nips: {{peer_connections: {{{yaml}}}}}"),
                format!("btp_nips.peer_connections.{key}"),
            )
        })
        .collect();
    let all = cases
        .iter()
        .map(|(y, k)| (y.to_string(), k.to_string()))
        .chain(peer_cases);
    for (yaml, key) in all {
        let err = Settings::from_yaml_overrides(&yaml).expect_err(&yaml);
        assert_eq!(err.key(), Some(key.as_str()), "{yaml}: {err}");
        assert!(
            err.to_string().contains(&key),
            "message names the key: {err}"
        );
    }
}

#[test]
fn a_timeout_not_shorter_than_the_interval_says_why() {
    let err = Settings::from_yaml_overrides(
        "btp_nips: {peer_connections: {heartbeat_interval_seconds: 30, heartbeat_timeout_seconds: 30}}",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration key `btp_nips.peer_connections.heartbeat_timeout_seconds` is invalid: \
         must be at least 1 and shorter than heartbeat_interval_seconds (30)"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_with_their_name() {
    let err =
        Settings::from_yaml_overrides("btp_nips: {peer_connections: {heartbeat_intervall: 5}}")
            .unwrap_err();
    assert!(matches!(err, ConfigError::Load(_)));
    assert!(err.to_string().contains("heartbeat_intervall"), "{err}");
    let err = Settings::from_yaml_overrides("database: {pool_size: many}").unwrap_err();
    assert!(err.to_string().contains("pool_size"), "{err}");
}

#[test]
fn a_file_overrides_the_defaults_and_a_missing_file_is_an_error() {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    writeln!(
        file,
        "btp_nips:\n  peer_connections:\n    max_active_connections: 7"
    )
    .unwrap();
    let s = Settings::load(Some(file.path())).unwrap();
    assert_eq!(s.btp_nips.peer_connections.max_active_connections, 7);
    assert_eq!(
        s.btp_nips.peer_connections.heartbeat_interval,
        Duration::from_secs(60)
    );
    let err = Settings::load(Some(std::path::Path::new("/nonexistent/node.yaml"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/node.yaml"), "{err}");
}

#[test]
fn each_replaced_key_is_refused_naming_the_one_that_replaced_it() {
    for (yaml, old, new) in [
        (
            "session: {secret_key_hex: \"ab\"}",
            "session.secret_key_hex",
            "node.key_file",
        ),
        (
            "nostr: {key_file: \"k.nsec\"}",
            "nostr.key_file",
            "node.key_file",
        ),
        ("nostr: {key_env: \"K\"}", "nostr.key_env", "node.key_file"),
        (
            "session: {public_endpoint: \"wss://a.example\"}",
            "session.public_endpoint",
            "node.public_endpoint",
        ),
        (
            "nostr: {announce: {endpoint: \"wss://a.example\"}}",
            "nostr.announce.endpoint",
            "node.public_endpoint",
        ),
    ] {
        let err = Settings::from_yaml_overrides(yaml).expect_err(yaml);
        assert_eq!(err.key(), Some(old), "{yaml}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(old) && message.contains(new),
            "{yaml}: {message}"
        );
    }
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let err = Settings::from_yaml_overrides(
        "node: {id: \"9lives\", public_endpoint: \"http://x\"}\n\
         database: {pool_size: 0}\n\
         btp_nips: {peer_connections: {max_active_connections: 0, reconnect_jitter: 2.0}}\n\
         chain: {deposit_wei: \"lots\"}\n\
         session: {asset_code: \"\"}\n",
    )
    .unwrap_err();
    let keys: Vec<_> = err.problems().iter().map(|p| p.key().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "node.id",
            "database.pool_size",
            "btp_nips.peer_connections.reconnect_jitter",
            "btp_nips.peer_connections.max_active_connections",
            "chain.deposit_wei",
            "session.asset_code",
            "node.public_endpoint",
        ],
        "{err}"
    );
    let message = err.to_string();
    assert!(message.starts_with("7 configuration problems"), "{message}");
    for key in keys {
        assert!(message.contains(key), "{message}");
    }
}

#[test]
fn the_public_endpoint_is_one_key_checked_as_peers_dial_it() {
    let s = Settings::from_yaml_overrides("node: {public_endpoint: \"wss://node.example/btp\"}")
        .unwrap();
    assert_eq!(s.node.public_endpoint, "wss://node.example/btp");
    // ws:// only to loopback; announced (with relays) only as nostr allows and with the
    // settlement address it is announced with.
    for (yaml, key) in [
        (
            "node: {public_endpoint: \"ws://node.example/btp\"}",
            "node.public_endpoint",
        ),
        (
            "node: {public_endpoint: \"ws://127.0.0.1:7700/btp\"}\nnostr: {relays: [\"wss://r.example\"], announce: {base_address: \"0x0000000000000000000000000000000000000001\"}}",
            "node.public_endpoint",
        ),
        (
            "node: {public_endpoint: \"wss://node.example\"}\nnostr: {relays: [\"wss://r.example\"]}",
            "nostr.announce.base_address",
        ),
    ] {
        let err = Settings::from_yaml_overrides(yaml).expect_err(yaml);
        assert_eq!(err.key(), Some(key), "{yaml}: {err}");
    }
}
