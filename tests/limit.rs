//! The connection limit: at `max_active_connections` a higher-priority peer takes the slot
//! of the lowest-priority one; followed peers are never evicted, nor is a peer whose channel
//! is opening; a peer without a slot waits and gets the next one that frees up.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::{PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::node::SupervisorStats;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Admission;
use support::node::*;

async fn start(
    world: &MemoryWorld,
    dir: &tempfile::TempDir,
    limit: usize,
    stored: &[PeerRecord],
) -> Node {
    let yaml = format!(
        "btp_nips: {{peer_connections: {{max_active_connections: {limit}, startup_dial_batch: 100}}}}"
    );
    start_node(world, dir, &yaml, stored).await
}

async fn stats(node: &Node) -> SupervisorStats {
    node.stats().await.unwrap()
}

#[actix_rt::test]
async fn with_a_small_limit_the_lowest_priority_peer_is_evicted_and_followed_ones_never() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // Three unfollowed peers: two fast (priority 7), one slow (priority 10).
    let stored_peers = vec![
        stored(1, PeerState::Disconnected, false, Some(50)),
        stored(2, PeerState::Disconnected, false, Some(60)),
        stored(3, PeerState::Disconnected, false, None),
    ];
    for i in 1..=6 {
        world.add_ready_peer(&pubkey(i));
    }
    let node = start(&world, &dir, 3, &stored_peers).await;
    wait_until(&node, Duration::from_secs(10), "3 connected", |p| {
        count_in(p, PeerState::Connected) == 3
    })
    .await;

    // A followed peer arrives: the slow unfollowed one (priority 10) gives up its slot.
    node.follow(&pubkey(4)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(10), "eviction", |p| {
        state_of(p, &pubkey(4)) == Some(PeerState::Connected)
    })
    .await;
    assert_eq!(state_of(&peers, &pubkey(3)), Some(PeerState::Disconnected));
    let evicted = peers.iter().find(|p| p.nostr_pubkey == pubkey(3)).unwrap();
    assert!(evicted
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("connection limit"));
    assert_eq!(state_of(&peers, &pubkey(1)), Some(PeerState::Connected));
    assert_eq!(state_of(&peers, &pubkey(2)), Some(PeerState::Connected));

    // Two more follows: each evicts one of the priority-7 peers.
    node.follow(&pubkey(5)).await.unwrap();
    node.follow(&pubkey(6)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(10), "all followed in", |p| {
        (4..=6).all(|i| state_of(p, &pubkey(i)) == Some(PeerState::Connected))
    })
    .await;
    assert_eq!(count_in(&peers, PeerState::Connected), 3);

    // Every slot is held by a followed peer now: a new follow waits, nobody is evicted.
    world.add_ready_peer(&pubkey(7));
    node.follow(&pubkey(7)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(5), "7 waiting", |p| {
        state_of(p, &pubkey(7)) == Some(PeerState::Disconnected)
    })
    .await;
    assert!((4..=6).all(|i| state_of(&peers, &pubkey(i)) == Some(PeerState::Connected)));
    assert_eq!(
        stats(&node).await,
        SupervisorStats {
            running: 3,
            connected: 3,
            waiting: 4,
            idle: 0,
            recovering: 0
        }
    );
    // An unknown inbound peer is refused at the limit.
    let admission = node.admit(&pubkey(99)).await.unwrap();
    assert!(
        matches!(admission, Admission::Refused { .. }),
        "{admission:?}"
    );

    // A slot frees up (operator disconnects 5): the best waiting peer (7, followed) gets it.
    node.disconnect(&pubkey(5), "operator").await.unwrap();
    wait_until(&node, Duration::from_secs(10), "7 connected", |p| {
        state_of(p, &pubkey(7)) == Some(PeerState::Connected)
    })
    .await;
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_whose_channel_is_opening_is_not_evicted() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.set_confirmations_needed(1_000_000);
    // An unfollowed, slow peer (priority 10) waiting for its channel.
    let mut opening = stored(1, PeerState::ChannelOpening, false, None);
    opening.channel_tx_hash = Some("0xtx-1".into());
    opening.channel_opening_since = Some(Timestamp(1_700_000_000_000));
    world.add_pending_tx("0xtx-1", &pubkey(1));
    world.add_ready_peer(&pubkey(2));
    let node = start(&world, &dir, 1, &[opening]).await;
    wait_until(&node, Duration::from_secs(5), "1 running", |p| {
        state_of(p, &pubkey(1)) == Some(PeerState::ChannelOpening)
    })
    .await;
    node.follow(&pubkey(2)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(5), "2 waiting", |p| {
        state_of(p, &pubkey(2)) == Some(PeerState::Disconnected)
    })
    .await;
    assert_eq!(
        state_of(&peers, &pubkey(1)),
        Some(PeerState::ChannelOpening)
    );
    assert_eq!(stats(&node).await.running, 1);
    assert!(!world.connect_log().contains(&pubkey(2)));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn at_1000_connections_the_lowest_priority_peer_makes_room() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // 1000 unfollowed peers: 999 fast (priority 7) and one slow (priority 10).
    let mut peers: Vec<PeerRecord> = (1..=999)
        .map(|i| stored(i, PeerState::Disconnected, false, Some(20)))
        .collect();
    peers.push(stored(1000, PeerState::Disconnected, false, None));
    for i in 1..=1001 {
        world.add_ready_peer(&pubkey(i));
    }
    let node = start(&world, &dir, 1000, &peers).await;
    wait_until(&node, Duration::from_secs(60), "1000 connected", |p| {
        count_in(p, PeerState::Connected) == 1000
    })
    .await;
    node.follow(&pubkey(1001)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(10), "eviction", |p| {
        state_of(p, &pubkey(1001)) == Some(PeerState::Connected)
    })
    .await;
    assert_eq!(
        state_of(&peers, &pubkey(1000)),
        Some(PeerState::Disconnected)
    );
    assert_eq!(count_in(&peers, PeerState::Connected), 1000);
    let s = stats(&node).await;
    assert_eq!((s.running, s.waiting), (1000, 1));
    node.shutdown().await.unwrap();
    let stored = node.db().load(&pubkey(1000)).unwrap().unwrap();
    assert_eq!(stored.state, PeerState::Disconnected);
    assert!(stored
        .failure_reason
        .unwrap()
        .starts_with("connection limit"));
}
