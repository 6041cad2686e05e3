//! Two nodes as separate processes of the binary, with a real relay and the chain off (the
//! default): each finds the other through its announcement and its operator's follow list,
//! both links reach `connected` without a payment channel, and they stay connected far
//! past what ten failed attempts would take with the short backoff configured here.

mod support;

use std::time::{Duration, Instant};

use btp_nips_node::discovery::relays::{RelaySet, RelayTuning};
use btp_nips_node::storage::Database;
use nostr_relay_builder::prelude::{EventBuilder, Keys, Kind, Tag};
use support::binary::{NodeConfig, NodeProcess};
use support::relays::{Impl, TestRelay};

/// A node process on `relay` following `operator`'s list, with a short backoff and a
/// heartbeat every 2 s. Each looks for the other's announcement for up to 30 s: the other
/// process publishes it only once it has started, which a loaded machine makes slow.
fn start(
    dir: &std::path::Path,
    name: &str,
    relay: &str,
    operator: &Keys,
    keys: &Keys,
) -> (NodeProcess, String) {
    let config = NodeConfig::new(dir, name)
        .btp_listener()
        .discovery(relay, operator, &format!("0x{}", "ab".repeat(20)))
        .section(
            "btp_nips:\n  peer_connections:\n    heartbeat_interval_seconds: 2\n    \
             heartbeat_timeout_seconds: 1\n    max_reconnect_attempts: 10\n    \
             reconnect_initial_delay_ms: 20\n    reconnect_max_delay_ms: 50\n    \
             discovery_retry_seconds: 1\n    max_discovery_attempts: 30\n",
        )
        .write();
    (
        NodeProcess::start(&config, Some(keys), Some("info")),
        config.db_url,
    )
}

#[actix_rt::test]
async fn two_node_processes_without_a_chain_connect_and_stay_connected() {
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
    let (key_a, key_b) = (Keys::generate(), Keys::generate());
    let (op_a, op_b) = (Keys::generate(), Keys::generate());
    // Each operator follows the other's node, signed by an independent client.
    for (operator, follows) in [(&op_a, &key_b), (&op_b, &key_a)] {
        let list = EventBuilder::new(Kind::ContactList, "")
            .tags([Tag::public_key(follows.public_key())])
            .sign_with_keys(operator)
            .unwrap();
        assert_eq!(client.publish(&list).await.0.len(), 1);
    }

    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_db) = start(dir.path(), "alpha", &relay.url(), &op_a, &key_a);
    let (mut b, b_db) = start(dir.path(), "beta", &relay.url(), &op_b, &key_b);
    let connected = |of: &Keys| {
        format!(
            "peer {}: connecting -> connected",
            &of.public_key().to_hex()[..16]
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        a.drain();
        b.drain();
        if a.has(&connected(&key_b)) && b.has(&connected(&key_a)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not both connected:\nA: {:#?}\nB: {:#?}",
            a.log,
            b.log
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ten attempts at 20–50 ms apart take under a second; five heartbeats take ten.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.drain();
        b.drain();
    }
    for (node, log) in [("A", &a.log), ("B", &b.log)] {
        let trouble: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("-> failed") || l.contains("connected -> disconnected"))
            .collect();
        assert!(
            trouble.is_empty(),
            "{node} lost or failed a peer: {trouble:#?}"
        );
    }
    a.stop().await;
    b.stop().await;
    for (db_url, peer) in [(&a_db, &key_b), (&b_db, &key_a)] {
        let stored = Database::open(db_url, 1).unwrap().load_all().unwrap();
        let record = stored
            .iter()
            .find(|r| r.nostr_pubkey == peer.public_key().to_hex())
            .expect("the followed peer is stored");
        // (The one stopped second may have lost the first already: no attempt count here.)
        assert_eq!(record.channel_id, None, "no channel without a chain");
        assert!(record.last_heartbeat.is_some(), "heartbeats were answered");
    }
    client.shutdown().await;
}
