//! The operator's decisions hold: a stop or a retry applies to a peer still queued for
//! startup recovery, and a peer the operator disconnected is refused inbound even when
//! followed.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::{PeerIntent, PeerState};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Admission;
use support::node::*;

#[actix_rt::test]
async fn disconnect_and_retry_apply_to_peers_queued_for_startup_recovery() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let stored_peers = ready_stored_peers(&world, 3);
    // One stored peer per hour comes back: two stay queued.
    let yaml = ONE_DIAL_PER_HOUR;
    let node = start_node(&world, &dir, yaml, &stored_peers).await;
    assert_eq!(node.stats().await.unwrap().recovering, 2);
    let queued = |i| pubkey(i);

    node.disconnect(&queued(2), "operator").await.unwrap();
    let stopped = node.peer(&queued(2)).await.unwrap().expect("known");
    assert_eq!(stopped.desired, PeerIntent::Disconnect);
    assert_eq!(stopped.state, PeerState::Disconnected);

    node.retry(&queued(3)).await.unwrap();
    wait_until(
        &node,
        Duration::from_secs(5),
        "the retried peer connected",
        |p| state_of(p, &queued(3)) == Some(PeerState::Connected),
    )
    .await;
    assert_eq!(node.stats().await.unwrap().recovering, 0);
    // The stop is durable: the stored row says so.
    node.flush().await.unwrap();
    let row = node.db().load(&queued(2)).unwrap().unwrap();
    assert_eq!(row.desired, PeerIntent::Disconnect);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_the_operator_disconnected_is_refused_inbound_even_when_followed() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let friend = pubkey(7);
    world.add_ready_peer(&friend);
    let node = start_node(&world, &dir, "{}", &[]).await;
    node.follow(&friend).await.unwrap();
    assert_eq!(
        node.admit(&friend).await.unwrap(),
        Admission::Admitted { known: true }
    );
    node.disconnect(&friend, "operator").await.unwrap();
    wait_until(&node, Duration::from_secs(5), "stopped", |p| {
        p.iter()
            .any(|r| r.nostr_pubkey == friend && r.desired == PeerIntent::Disconnect)
    })
    .await;
    let admission = node.admit(&friend).await.unwrap();
    assert!(
        matches!(&admission, Admission::Refused { reason } if reason.contains("operator")),
        "{admission:?}"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn unfollow_followed_at_once_by_follow_leaves_the_peer_followed_and_connected() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(9);
    world.add_ready_peer(&peer);
    let node = start_node(&world, &dir, "{}", &[]).await;
    node.follow(&peer).await.unwrap();
    wait_until(&node, Duration::from_secs(5), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;
    // Two follow lists close together: the second names the peer again. Both reach the
    // supervisor before the peer's actor has acted on the first (as the follow-list
    // monitor sends them).
    let directory = node.directory();
    directory.unfollow(&peer);
    directory.follow(&peer);
    let settled = |p: &[btp_nips_node::lifecycle::PeerRecord]| {
        p.iter().any(|r| {
            r.nostr_pubkey == peer
                && r.followed
                && r.desired == PeerIntent::Connect
                && r.state == PeerState::Connected
        })
    };
    wait_until(
        &node,
        Duration::from_secs(30),
        "followed and connected again",
        settled,
    )
    .await;
    // It stays that way: nothing late undoes the follow.
    actix::clock::sleep(Duration::from_secs(120)).await;
    assert!(settled(&node.peers().await.unwrap()));
    node.shutdown().await.unwrap();
    // And after a restart.
    let row =
        btp_nips_node::storage::Database::open(dir.path().join("node.db").to_str().unwrap(), 1)
            .unwrap()
            .load(&peer)
            .unwrap()
            .unwrap();
    assert_eq!((row.followed, row.desired), (true, PeerIntent::Connect));
}
