//! The operator's pause: a disconnect with an end. The peer is stopped like a deliberate
//! disconnect (refused inbound, not redialled), comes back by itself when the pause ends —
//! also when the node restarted meanwhile — and a retry ends the pause early. Through the
//! admin API, `pause_seconds` out of range is refused naming the bounds. An approval may
//! carry the operator's deposit.

mod support;

use std::time::Duration;

use serde_json::json;

use btp_nips_node::actors::clock::NodeClock;
use btp_nips_node::lifecycle::{PeerIntent, PeerState, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use support::admin::admin_node;
use support::node::*;

const HOUR: Duration = Duration::from_secs(3600);

async fn node_on(world: &MemoryWorld, path: &std::path::Path) -> Node {
    let db = btp_nips_node::storage::Database::open(path.to_str().unwrap(), 2).unwrap();
    memory_node(settings(""), world)
        .database(db)
        .clock(NodeClock::anchored_at(Timestamp(1_700_000_000_000)))
        .start()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn a_paused_peer_comes_back_when_the_pause_ends_even_across_a_restart() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let world = MemoryWorld::new();
    let peer = pubkey(1);
    world.add_ready_peer(&peer);
    let node = node_on(&world, &path).await;
    node.follow(&peer).await.unwrap();
    wait_until(&node, Duration::from_secs(10), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;

    node.pause(&peer, "maintenance", Some(HOUR)).await.unwrap();
    let paused = wait_record(&node, &peer, Duration::from_secs(10), "paused", |r| {
        r.state == PeerState::Disconnected
    })
    .await;
    assert_eq!(paused.desired, PeerIntent::Disconnect);
    assert_eq!(paused.failure_reason.as_deref(), Some("maintenance"));
    let until = paused.paused_until().expect("the end of the pause is kept");
    // Half the pause later it is still down, and the node is restarted.
    tokio::time::advance(HOUR / 2).await;
    assert_eq!(
        record_of(&node, &peer).await.unwrap().state,
        PeerState::Disconnected
    );
    node.shutdown().await.unwrap();

    let node = node_on(&world, &path).await;
    let stored = record_of(&node, &peer).await.unwrap();
    assert_eq!(
        stored.paused_until(),
        Some(until),
        "the pause survives the restart"
    );
    assert_eq!(stored.state, PeerState::Disconnected);
    let back = wait_record(&node, &peer, 2 * HOUR, "back after the pause", |r| {
        r.state == PeerState::Connected
    })
    .await;
    assert_eq!(back.desired, PeerIntent::Connect);
    assert!(
        node.now() >= until,
        "not before the pause ended: {:?} < {until:?}",
        node.now()
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_retry_ends_a_pause_early_and_a_disconnect_without_one_holds() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (paused, held) = (pubkey(1), pubkey(2));
    for peer in [&paused, &held] {
        world.add_ready_peer(peer);
    }
    let node = node_on(&world, &dir.path().join("node.db")).await;
    for peer in [&paused, &held] {
        node.follow(peer).await.unwrap();
    }
    wait_until(&node, Duration::from_secs(10), "connected", |p| {
        count_in(p, PeerState::Connected) == 2
    })
    .await;
    node.pause(&paused, "a while", Some(HOUR)).await.unwrap();
    node.disconnect(&held, "for good").await.unwrap();
    wait_until(&node, Duration::from_secs(10), "both down", |p| {
        count_in(p, PeerState::Disconnected) == 2
    })
    .await;
    node.retry(&paused).await.unwrap();
    wait_record(&node, &paused, Duration::from_secs(10), "retried", |r| {
        r.state == PeerState::Connected
    })
    .await;
    // Far past any pause: the peer disconnected without one is still down.
    tokio::time::advance(24 * HOUR).await;
    let peers = wait_until(&node, Duration::from_secs(5), "settled", |_| true).await;
    assert_eq!(state_of(&peers, &held), Some(PeerState::Disconnected));
    assert_eq!(state_of(&peers, &paused), Some(PeerState::Connected));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn the_api_pauses_a_peer_and_refuses_a_pause_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(1);
    world.add_ready_peer(&peer);
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;
    node.follow(&peer).await.unwrap();
    wait_record(&node, &peer, Duration::from_secs(10), "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;
    let path = format!("/v1/peers/{peer}/disconnect");
    for bad in [0u64, 31 * 24 * 3600] {
        let (status, body) = api
            .post(&path, json!({"reason": "x", "pause_seconds": bad}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("pause_seconds"),
            "{body}"
        );
    }
    assert_eq!(
        record_of(&node, &peer).await.unwrap().state,
        PeerState::Connected,
        "a refused request changes nothing"
    );
    let (status, body) = api
        .post(&path, json!({"reason": "short", "pause_seconds": 1}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, view) = api.get(&format!("/v1/peers/{peer}")).await;
    assert!(
        view["next_attempt_in_seconds"].as_u64().unwrap() <= 1,
        "{view}"
    );
    // Comes back by itself (real time: the pause is one second).
    wait_record(&node, &peer, Duration::from_secs(20), "back", |r| {
        r.state == PeerState::Connected && r.desired == PeerIntent::Connect
    })
    .await;
    node.shutdown().await.unwrap();
}

/// `approve-channel` with the operator's deposit: the open is signed with it (and the next
/// open, not approved with one, with the configured deposit); a deposit that is not a whole
/// positive number of wei is refused naming `deposit_wei`, and nothing is opened.
#[actix_rt::test]
async fn an_approval_carries_the_operators_deposit_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (a, b) = (pubkey(1), pubkey(2));
    for peer in [&a, &b] {
        world.announce(peer, MemoryWorld::announcement_for(peer));
    }
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;
    for peer in [&a, &b] {
        node.follow(peer).await.unwrap();
    }
    wait_until(&node, Duration::from_secs(10), "both need a channel", |p| {
        count_in(p, PeerState::ChannelNeeded) == 2
    })
    .await;

    for (bad, why) in [
        ("0", "more than 0"),
        ("12.5", "whole number"),
        ("-1", "whole number"),
    ] {
        let (status, body) = api
            .post(
                &format!("/v1/peers/{a}/approve-channel"),
                json!({ "deposit_wei": bad }),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("deposit_wei") && error.contains(why),
            "{error}"
        );
    }
    assert!(world.approved_deposits().is_empty(), "nothing was opened");

    let (status, body) = api
        .post(
            &format!("/v1/peers/{a}/approve-channel"),
            json!({ "deposit_wei": "340282366920938463463374607431768211455" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api
        .post(&format!("/v1/peers/{b}/approve-channel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    wait_until(&node, Duration::from_secs(10), "both connected", |p| {
        count_in(p, PeerState::Connected) == 2
    })
    .await;
    let mut deposits = world.approved_deposits();
    deposits.sort();
    assert_eq!(deposits, [(a, Some(u128::MAX)), (b, None)]);
    node.shutdown().await.unwrap();
}
