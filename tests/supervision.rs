//! Supervision: a fault (a panic) inside one peer's adapter call restarts that peer's
//! actor per the restart policy; other peers never notice; past the intensity limit the
//! peer is failed with reason "restart intensity".

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use support::node::*;

async fn start(world: &MemoryWorld, dir: &tempfile::TempDir) -> Node {
    let yaml = "btp_nips: {peer_connections: {max_restarts: 3, restart_window_seconds: 60}}";
    start_node(world, dir, yaml, &[]).await
}

#[actix_rt::test]
async fn a_faulty_peer_restarts_and_the_others_are_untouched() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (faulty, a, b) = (pubkey(1), pubkey(2), pubkey(3));
    for p in [&faulty, &a, &b] {
        world.add_ready_peer(p);
    }
    world.panic_on_resolve(&faulty, 2);
    let node = start(&world, &dir).await;
    for p in [&a, &faulty, &b] {
        node.follow(&p.clone()).await.unwrap();
    }
    let peers = wait_until(&node, Duration::from_secs(30), "all connected", |peers| {
        peers.len() == 3 && count_in(peers, PeerState::Connected) == 3
    })
    .await;
    assert_eq!(state_of(&peers, &faulty), Some(PeerState::Connected));
    let log = world.connect_log();
    for p in [&a, &b] {
        assert_eq!(
            log.iter().filter(|x| *x == p).count(),
            1,
            "{p} was disturbed"
        );
    }
    // The faulty peer went through its lifecycle once more after each restart.
    assert_eq!(log.iter().filter(|x| **x == faulty).count(), 1);
    node.shutdown().await.unwrap();
    let stored = node.db().load(&faulty).unwrap().unwrap();
    assert_eq!(stored.state, PeerState::Connected);
}

#[actix_rt::test]
async fn past_the_restart_intensity_the_peer_is_failed_with_that_reason() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (faulty, healthy) = (pubkey(1), pubkey(2));
    world.add_ready_peer(&faulty);
    world.add_ready_peer(&healthy);
    world.panic_on_resolve(&faulty, 1000);
    let node = start(&world, &dir).await;
    for p in [&faulty, &healthy] {
        node.follow(&p.clone()).await.unwrap();
    }
    let peers = wait_until(&node, Duration::from_secs(30), "faulty failed", |peers| {
        state_of(peers, &faulty) == Some(PeerState::Failed)
            && state_of(peers, &healthy) == Some(PeerState::Connected)
    })
    .await;
    let failed = peers.iter().find(|p| p.nostr_pubkey == faulty).unwrap();
    let reason = failed.failure_reason.as_deref().unwrap();
    assert!(
        reason.starts_with("restart intensity: 4 restarts within 60s"),
        "{reason}"
    );
    node.shutdown().await.unwrap();
    let stored = node.db().load(&faulty).unwrap().unwrap();
    assert_eq!(stored.state, PeerState::Failed);
    assert_eq!(stored.failure_reason.as_deref(), Some(reason));
}
