//! The heartbeat through the real actors (simulated time, in-memory sessions): answered
//! PINGs keep peers connected and record their latency; a silent peer is disconnected
//! after interval + timeout and reconnected with backoff; a dropped session is noticed at
//! once. The other peers are not disturbed.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::ports::memory::MemoryWorld;
use support::node::*;

#[actix_rt::test]
async fn a_silent_peer_is_disconnected_and_reconnected_while_the_others_stay() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (quiet, chatty) = (pubkey(1), pubkey(2));
    world.add_ready_peer(&quiet);
    world.add_ready_peer(&chatty);
    let node = start_node(&world, &dir, "{}", &[]).await;
    for p in [&quiet, &chatty] {
        node.follow(&p.clone()).await.unwrap();
    }
    wait_until(&node, Duration::from_secs(5), "connected", |p| {
        count_in(p, PeerState::Connected) == 2
    })
    .await;
    // Two heartbeat intervals: both answer.
    let peers = wait_until(&node, Duration::from_secs(130), "two PONGs", |p| {
        p.iter().all(|r| r.last_heartbeat.is_some()) && world.pings_answered() >= 4
    })
    .await;
    assert!(peers.iter().all(|r| r.rtt_us.is_some()));
    assert_eq!(count_in(&peers, PeerState::Connected), 2);

    // One goes silent: within interval (60 s) + timeout (10 s) it is disconnected.
    world.set_silent(&quiet, true);
    let lost = wait_until(&node, Duration::from_secs(71), "quiet lost", |p| {
        state_of(p, &quiet) == Some(PeerState::Disconnected)
    })
    .await;
    let record = lost.iter().find(|r| r.nostr_pubkey == quiet).unwrap();
    assert!(record
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("heartbeat timeout"));
    assert_eq!(record.reconnect_attempts, 1);
    assert_eq!(state_of(&lost, &chatty), Some(PeerState::Connected));

    // It answers again: the scheduled reconnect brings it back.
    world.set_silent(&quiet, false);
    wait_until(&node, Duration::from_secs(5), "quiet back", |p| {
        state_of(p, &quiet) == Some(PeerState::Connected)
    })
    .await;
    assert_eq!(
        world.connect_log().iter().filter(|p| **p == chatty).count(),
        1,
        "the other peer kept its one session"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_dropped_session_is_noticed_at_once_and_redialled() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(1);
    world.add_ready_peer(&peer);
    let node = start_node(&world, &dir, "{}", &[]).await;
    node.follow(&peer.clone()).await.unwrap();
    wait_until(&node, Duration::from_secs(5), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;
    assert_eq!(world.kill_sessions(&peer, "connection reset by peer"), 1);
    // Well before any heartbeat would notice: the session's end is an event of its own.
    let peers = wait_until(&node, Duration::from_millis(500), "lost", |p| {
        p[0].failure_reason.as_deref() == Some("connection reset by peer")
    })
    .await;
    assert_eq!(peers[0].state, PeerState::Disconnected);
    // First backoff is 1 s (minus jitter): reconnected shortly after.
    wait_until(&node, Duration::from_secs(2), "redialled", |p| {
        p[0].state == PeerState::Connected
    })
    .await;
    assert_eq!(world.connect_log().len(), 2);
    node.shutdown().await.unwrap();
}
