//! The binary with discovery: `keygen`, the `nostr` configuration refused naming its key,
//! and `run` against a real relay on 127.0.0.1 — it announces itself, follows the
//! operator's list, resolves the followed peer through the relay and stores it.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use btp_nips_node::discovery::announcement::{announcement_kind, ilp_address_for};
use btp_nips_node::discovery::relays::{RelaySet, RelayTuning};
use btp_nips_node::storage::Database;
use nostr_relay_builder::prelude::{
    EventBuilder, Filter, Keys, Kind, Tag, Timestamp as NostrTimestamp,
};
use support::relays::{Impl, TestRelay};

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

#[test]
fn keygen_writes_a_private_key_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.nsec");
    let out = Command::new(BIN)
        .args(["keygen", "--out", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pubkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(pubkey.len(), 64, "{pubkey}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        Keys::parse(text.trim()).unwrap().public_key().to_hex(),
        pubkey
    );
    let again = Command::new(BIN)
        .args(["keygen", "--out", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn bad_nostr_settings_are_refused_naming_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        ("nostr: {relays: [\"http://127.0.0.1:1\"]}", "nostr.relays"),
        ("nostr: {relays: [\"ws://127.0.0.1:1\"]}", "nostr.relays"),
        (
            "nostr: {operator_pubkey: \"npub1nope\"}",
            "nostr.operator_pubkey",
        ),
        (
            "node: {public_endpoint: \"wss://a.example\"}\nnostr: {relays: [\"wss://r.example\"], announce: {base_address: \"0x12\"}}",
            "nostr.announce.base_address",
        ),
        (
            "nostr: {announce: {endpoint: \"wss://a.example\"}}",
            "node.public_endpoint",
        ),
        (
            "nostr: {max_authors_per_req: 0}",
            "nostr.max_authors_per_req",
        ),
    ] {
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = Command::new(BIN)
            .args(["peers", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{yaml}: {stderr}");
    }
}

#[test]
fn run_without_a_key_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "database: {{url: \"sqlite://{}\"}}\nnode: {{key_file: \"{}\"}}\nnostr: {{relays: [\"ws://127.0.0.1:9\"], allow_ws_loopback: true}}\n",
            dir.path().join("n.db").display(),
            dir.path().join("missing.nsec").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("BTP_NIPS_NODE_NSEC")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.nsec"), "{stderr}");
    assert!(stderr.contains("btp-nips-node init"), "{stderr}");
}

#[actix_rt::test]
async fn run_announces_follows_and_resolves_through_a_relay() {
    let relay = TestRelay::start(Impl::Builder).await;
    let tuning = RelayTuning {
        query_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        retry_interval: Duration::from_millis(300),
        notification_capacity: 4096,
    };
    let client = RelaySet::connect(Keys::generate(), &[relay.url()], tuning)
        .await
        .unwrap();
    client.wait_connected(Duration::from_secs(5)).await;
    let node_keys = Keys::generate();
    let operator = Keys::generate();
    let peer = Keys::generate();
    // The peer has announced itself; the operator follows it.
    let peer_event = btp_nips_node::discovery::announcement::AnnouncementFields {
        node_id: "peer".into(),
        endpoint: "ws://127.0.0.1:9/btp".into(),
        base_address: format!("0x{}", "77".repeat(20)),
        supported_tokens: vec!["eth".into()],
        features: vec![],
        metadata: None,
    }
    .sign(&peer, NostrTimestamp::now());
    assert_eq!(client.publish(&peer_event).await.0.len(), 1);
    let follows = EventBuilder::new(Kind::ContactList, "")
        .tags([Tag::public_key(peer.public_key())])
        .sign_with_keys(&operator)
        .unwrap();
    assert_eq!(client.publish(&follows).await.0.len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("node.db").display());
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {{id: \"cli\", public_endpoint: \"ws://127.0.0.1:7777/btp\"}}\nadmin: {{listen: \"\"}}\ndatabase: {{url: \"{url}\"}}\nsession: {{listen: \"127.0.0.1:0\"}}\nnostr:\n  relays: [\"{}\"]\n  allow_ws_loopback: true\n  operator_pubkey: \"{}\"\n  announce: {{base_address: \"0x{}\"}}\n",
            relay.url(),
            operator.public_key().to_hex(),
            "ab".repeat(20)
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("BTP_NIPS_NODE_NSEC", node_keys.secret_key().to_secret_hex())
        .env("RUST_LOG", "info,btp_nips_node::lifecycle=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    // The node's announcement appears on the relay, bound to its key and node id.
    let filter = Filter::new()
        .kind(announcement_kind())
        .author(node_keys.public_key());
    let mut announced = None;
    for _ in 0..200 {
        let answers = client.query(filter.clone()).await;
        if let Some(e) = answers.iter().flat_map(|a| a.events.iter()).next() {
            announced = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announced = announced.expect("the node announced itself");
    let address = announced
        .tags
        .iter()
        .find(|t| t.as_slice()[0] == "ilp-address")
        .map(|t| t.as_slice()[1].clone());
    assert_eq!(
        address,
        Some(ilp_address_for("cli", &node_keys.public_key()))
    );

    // The followed peer was resolved through the relay (its BTP adapter is not wired, so it
    // goes on to connecting and waits there with backoff).
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !log
        .iter()
        .any(|l: &String| l.contains("discovering -> connecting"))
    {
        assert!(std::time::Instant::now() < deadline, "{log:#?}");
        // Never block this thread: the relay runs on it.
        match rx.try_recv() {
            Ok(line) => log.push(line),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Let the relay serve the node's last words while it shuts down.
    let mut exit = None;
    for _ in 0..600 {
        exit = child.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(exit.expect("the node stopped").success());
    let stored = Database::open(&url, 1).unwrap().load_all().unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].nostr_pubkey, peer.public_key().to_hex());
    assert!(stored[0].followed);
    assert_eq!(
        stored[0].ilp_address.as_deref(),
        Some(ilp_address_for("peer", &peer.public_key()).as_str())
    );
    client.shutdown().await;
}
