//! A node under test: its settings, stored records as an earlier run would have left them,
//! a node on the in-memory world (in the test's actix system, or in a thread of its own),
//! and waiting until its peers are as a test wants them.

use std::time::Duration;

use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{priority, PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::{Node, NodeBuilder};

use super::wait::poll;

/// A 64-hex pubkey unique to `i`.
pub fn pubkey(i: usize) -> String {
    format!("{:0>64x}", 0xb0b0_0000_0000u64 + i as u64)
}

/// Defaults overlaid with `yaml`; the database URL is set by the caller.
pub fn settings(yaml: &str) -> Settings {
    Settings::from_yaml_overrides(yaml).expect("test settings are valid")
}

/// A stored record as an earlier run would have left it.
/// Settings that bring back one stored peer per hour after a restart: the others stay
/// queued for startup recovery while a test looks at them.
pub const ONE_DIAL_PER_HOUR: &str =
    "btp_nips: {peer_connections: {startup_dial_batch: 1, startup_dial_interval_ms: 3600000}}";

/// Peers 1..=n stored as followed and disconnected, each one the world answers for.
pub fn ready_stored_peers(
    world: &btp_nips_node::ports::memory::MemoryWorld,
    n: usize,
) -> Vec<PeerRecord> {
    (1..=n)
        .map(|i| {
            world.add_ready_peer(&pubkey(i));
            stored(i, PeerState::Disconnected, true, Some(10))
        })
        .collect()
}

/// `rtt_ms` in milliseconds (stored as microseconds).
pub fn stored(i: usize, state: PeerState, followed: bool, rtt_ms: Option<u32>) -> PeerRecord {
    let mut r = PeerRecord::new(pubkey(i), followed, Timestamp(1_700_000_000_000));
    r.state = state;
    r.rtt_us = rtt_ms.map(|ms| ms * 1000);
    r.priority = priority::calculate_priority(followed, r.rtt_us, None);
    let a = btp_nips_node::ports::memory::MemoryWorld::announcement_for(&r.nostr_pubkey);
    if state != PeerState::Discovering {
        r.ilp_address = Some(a.ilp_address);
        r.endpoint = Some(a.endpoint);
        r.base_address = Some(a.base_address);
    }
    r
}

/// The admin URL of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    std::env::var("BTP_NIPS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Polls the node's view of its peers every 50 ms until `done` holds; panics with the
/// peers' states if it does not within `limit` (simulated time where the test paused the
/// clock).
pub async fn wait_until(
    node: &Node,
    limit: Duration,
    what: &str,
    done: impl Fn(&[PeerRecord]) -> bool,
) -> Vec<PeerRecord> {
    let done = &done;
    poll(limit, Duration::from_millis(50), || async move {
        let peers = node.peers().await.expect("node running");
        if done(&peers) {
            Ok(peers)
        } else {
            Err(peers)
        }
    })
    .await
    .unwrap_or_else(|peers| {
        let states: Vec<String> = peers
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{:?}",
                    &p.nostr_pubkey[56..],
                    p.state,
                    p.failure_reason
                )
            })
            .collect();
        panic!("timed out waiting for {what}: {states:?}")
    })
}

/// The node's record of `pubkey`, if it has one.
pub async fn record_of(node: &Node, pubkey: &str) -> Option<PeerRecord> {
    let peers = node.peers().await.expect("node running");
    peers.into_iter().find(|p| p.nostr_pubkey == pubkey)
}

/// Polls the node's record of `pubkey` every 20 ms until `done` holds; panics with the
/// record after `limit`.
pub async fn wait_record(
    node: &Node,
    pubkey: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&PeerRecord) -> bool,
) -> PeerRecord {
    let done = &done;
    poll(limit, Duration::from_millis(20), || async move {
        match record_of(node, pubkey).await {
            Some(record) if done(&record) => Ok(record),
            seen => Err(seen),
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("timed out after {limit:?} waiting for {what}: {seen:?}"))
}

pub fn state_of(peers: &[PeerRecord], pubkey: &str) -> Option<PeerState> {
    peers
        .iter()
        .find(|p| p.nostr_pubkey == pubkey)
        .map(|p| p.state)
}

pub fn count_in(peers: &[PeerRecord], state: PeerState) -> usize {
    peers.iter().filter(|p| p.state == state).count()
}

/// A node on a fresh SQLite file in `dir`, with `stored` already in its database, the
/// settings overridden by `yaml`, the in-memory world as its ports, and a fixed clock anchor.
pub async fn start_node(
    world: &btp_nips_node::ports::memory::MemoryWorld,
    dir: &tempfile::TempDir,
    yaml: &str,
    stored: &[PeerRecord],
) -> Node {
    let path = dir.path().join("node.db");
    let db = btp_nips_node::storage::Database::open(path.to_str().unwrap(), 2).unwrap();
    db.upsert_batch(stored).unwrap();
    memory_node(settings(yaml), world)
        .database(db)
        .clock(btp_nips_node::actors::clock::NodeClock::anchored_at(
            Timestamp(1_700_000_000_000),
        ))
        .start()
        .await
        .unwrap()
}

/// A node builder on the in-memory world, without a BTP listener or an admin API.
pub fn memory_node(
    settings: Settings,
    world: &btp_nips_node::ports::memory::MemoryWorld,
) -> NodeBuilder {
    NodeBuilder::new(settings)
        .without_admin()
        .ephemeral()
        .ports(world.ports())
        .without_listener()
}

pub use btp_nips_node::node::NodeThread;
