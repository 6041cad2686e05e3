//! The node's own network outage: when most of its connected peers are lost at once, or
//! every dial fails unreachable, the losses are the node's, not the peers'. They cost no
//! attempt, the peers wait naming the outage, and they are redialled once a dial gets
//! through again. A peer lost on its own is charged as usual.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::{Action, Event, LifecycleConfig, PeerRecord, PeerState};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Fault;
use support::node::*;
use support::sim::Sim;

const OUTAGE_REASON: &str = "waiting for this node: network outage";

fn waits_on_outage(r: &PeerRecord) -> bool {
    r.state == PeerState::Disconnected
        && r.reconnect_attempts == 0
        && r.failure_reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with(OUTAGE_REASON))
}

#[actix_rt::test]
async fn six_of_ten_connected_peers_lost_at_once_cost_no_attempt_and_come_back() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let stored_peers = ready_stored_peers(&world, 10);
    let node = start_node(&world, &dir, "{}", &stored_peers).await;
    wait_until(&node, Duration::from_secs(10), "10 connected", |p| {
        count_in(p, PeerState::Connected) == 10
    })
    .await;

    // The node's network goes down: six sessions drop together, and no dial gets through.
    world.set_network_down(true);
    for i in 1..=6 {
        assert_eq!(world.kill_sessions(&pubkey(i), "connection reset"), 1);
    }
    wait_until(
        &node,
        Duration::from_secs(5),
        "6 waiting on the node",
        |p| {
            p.iter()
                .filter(|r| (1..=6).any(|i| r.nostr_pubkey == pubkey(i)))
                .all(waits_on_outage)
        },
    )
    .await;
    let stats = node.stats().await.unwrap();
    assert_eq!(
        (stats.outages_detected, stats.outage),
        (1, true),
        "{stats:?}"
    );
    let reason = record_of(&node, &pubkey(1))
        .await
        .unwrap()
        .failure_reason
        .unwrap();
    assert!(
        reason.contains("6 of 10 connected peers lost within 5s"),
        "{reason}"
    );

    // Their retries while the network is down fail, and cost nothing either.
    let dials_before = world.connect_log().len();
    actix::clock::sleep(Duration::from_secs(60)).await;
    assert!(
        world.connect_log().len() > dials_before,
        "the peers kept trying"
    );
    let peers = node.peers().await.unwrap();
    for i in 1..=6 {
        let r = peers.iter().find(|r| r.nostr_pubkey == pubkey(i)).unwrap();
        assert!(waits_on_outage(r), "{r:?}");
    }
    assert_eq!(count_in(&peers, PeerState::Connected), 4);

    // The network is back: the first dial that gets through ends the outage, and every
    // peer is redialled.
    world.set_network_down(false);
    let peers = wait_until(&node, Duration::from_secs(600), "10 connected again", |p| {
        count_in(p, PeerState::Connected) == 10
    })
    .await;
    assert!(peers.iter().all(|r| r.reconnect_attempts == 0), "{peers:?}");
    assert!(!node.stats().await.unwrap().outage);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn one_of_ten_lost_is_the_peers_own_and_costs_an_attempt() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let stored_peers = ready_stored_peers(&world, 10);
    let node = start_node(&world, &dir, "{}", &stored_peers).await;
    wait_until(&node, Duration::from_secs(10), "10 connected", |p| {
        count_in(p, PeerState::Connected) == 10
    })
    .await;

    world.refuse_sessions(
        &pubkey(1),
        Some(Fault::Transient("connection refused".into())),
    );
    world.kill_sessions(&pubkey(1), "connection reset");
    let lost = wait_record(&node, &pubkey(1), Duration::from_secs(5), "1 lost", |r| {
        r.state == PeerState::Disconnected
    })
    .await;
    assert_eq!(lost.reconnect_attempts, 1);
    assert_eq!(lost.failure_reason.as_deref(), Some("connection reset"));
    // Its retry fails too: charged again.
    let retried = wait_record(&node, &pubkey(1), Duration::from_secs(30), "retried", |r| {
        r.reconnect_attempts == 2
    })
    .await;
    assert_eq!(
        retried.failure_reason.as_deref(),
        Some("connection refused")
    );
    let stats = node.stats().await.unwrap();
    assert_eq!(
        (stats.outages_detected, stats.outage),
        (0, false),
        "{stats:?}"
    );
    assert_eq!(stats.connected, 9);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn every_dial_failing_unreachable_is_an_outage_that_costs_no_attempt() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // The node starts without a network: each of its twelve stored peers fails to dial.
    world.set_network_down(true);
    let stored_peers = ready_stored_peers(&world, 12);
    let node = start_node(&world, &dir, "{}", &stored_peers).await;
    wait_until(
        &node,
        Duration::from_secs(30),
        "12 waiting on the node",
        |p| p.len() == 12 && p.iter().all(waits_on_outage),
    )
    .await;
    let reason = record_of(&node, &pubkey(1))
        .await
        .unwrap()
        .failure_reason
        .unwrap();
    assert!(reason.contains("failed unreachable"), "{reason}");
    assert_eq!(node.stats().await.unwrap().outages_detected, 1);

    world.set_network_down(false);
    let peers = wait_until(&node, Duration::from_secs(600), "12 connected", |p| {
        count_in(p, PeerState::Connected) == 12
    })
    .await;
    assert!(peers.iter().all(|r| r.reconnect_attempts == 0), "{peers:?}");
    node.shutdown().await.unwrap();
}

// ---- the lifecycle's side, in simulated time ----

#[test]
fn an_outage_gives_back_the_attempt_of_the_loss_once_and_a_restored_network_dials_at_once() {
    let mut sim = Sim::new(LifecycleConfig::default());
    sim.connect();
    // Not while connected: only a loss can be excused.
    assert!(sim
        .try_feed(Event::NetworkOutage {
            reason: "network outage: x".into()
        })
        .is_err());
    sim.feed(Event::SessionLost("connection reset".into()));
    assert_eq!(sim.lc.record().reconnect_attempts, 1);
    let retry_at = sim.lc.record().next_attempt_at;

    sim.feed(Event::NetworkOutage {
        reason: "network outage: 6 of 10 connected peers lost within 5s".into(),
    });
    let r = sim.lc.record();
    assert_eq!(r.reconnect_attempts, 0);
    assert_eq!(
        r.failure_reason.as_deref(),
        Some("waiting for this node: network outage: 6 of 10 connected peers lost within 5s")
    );
    assert_eq!(r.next_attempt_at, retry_at, "its retry stays armed");
    // Told twice, it is given back once.
    sim.feed(Event::NetworkOutage {
        reason: "network outage: again".into(),
    });
    assert_eq!(sim.lc.record().reconnect_attempts, 0);

    // The network is back: it dials now, not at its backoff time.
    let before = sim.log.len();
    sim.feed(Event::NetworkRestored);
    assert_eq!(sim.state(), PeerState::Discovering);
    assert!(sim.log[before..].iter().any(|(_, a)| *a == Action::Resolve));
    assert!(sim.try_feed(Event::NetworkRestored).is_err());
}

#[test]
fn an_eviction_records_for_whom() {
    let mut sim = Sim::new(LifecycleConfig::default());
    sim.connect();
    sim.feed(Event::EvictedFor {
        reason: "evicted for abc (priority 3 < 10)".into(),
    });
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(
        sim.lc.record().failure_reason.as_deref(),
        Some("evicted for abc (priority 3 < 10)")
    );
    assert_eq!(sim.lc.poll_timeout(), None, "parked: no retry of its own");
}
