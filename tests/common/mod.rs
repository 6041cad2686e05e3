//! Shared by the integration tests: settings, databases (a temporary SQLite file, or a
//! fresh PostgreSQL database per test), and waiting on the node in simulated time.
#![allow(dead_code)]

use std::time::Duration;

use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{priority, PeerRecord, PeerState, Timestamp};

/// A 64-hex pubkey unique to `i`.
pub fn pubkey(i: usize) -> String {
    format!("{:0>64x}", 0xb0b0_0000_0000u64 + i as u64)
}

/// Defaults overlaid with `yaml`; the database URL is set by the caller.
pub fn settings(yaml: &str) -> Settings {
    Settings::from_yaml_overrides(yaml).expect("test settings are valid")
}

/// A stored record as an earlier run would have left it.
pub fn stored(i: usize, state: PeerState, followed: bool, rtt_ms: Option<u32>) -> PeerRecord {
    let mut r = PeerRecord::new(pubkey(i), followed, Timestamp(1_700_000_000_000));
    r.state = state;
    r.rtt_ms = rtt_ms;
    r.priority = priority::calculate_priority(followed, rtt_ms, None);
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

/// Polls the node's view of its peers (in simulated time) until `done` holds; panics with
/// the peers' states if it does not within `limit` of simulated time.
pub async fn wait_until(
    node: &btp_nips_node::node::Node,
    limit: Duration,
    what: &str,
    done: impl Fn(&[PeerRecord]) -> bool,
) -> Vec<PeerRecord> {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        let peers = node.peers().await.expect("node running");
        if done(&peers) {
            return peers;
        }
        if waited >= limit {
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
            panic!("timed out waiting for {what}: {states:?}");
        }
        actix::clock::sleep(step).await;
        waited += step;
    }
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
) -> btp_nips_node::node::Node {
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

/// A node builder on the in-memory world, without a BTP listener.
pub fn memory_node(
    settings: Settings,
    world: &btp_nips_node::ports::memory::MemoryWorld,
) -> btp_nips_node::node::NodeBuilder {
    btp_nips_node::node::NodeBuilder::new(settings)
        .ports(world.ports())
        .without_listener()
}
