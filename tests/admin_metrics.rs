//! The node's Prometheus metrics beyond the state gauges: faults by owner and step,
//! connect durations, heartbeat round trips, actor restarts, sessions and persistence —
//! each moved by what really happened in a running node, parsed from `/metrics`.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::{Fault, PeerState};
use btp_nips_node::ports::memory::MemoryWorld;
use support::admin::{admin_node, parse_metrics, Sample};
use support::node::*;

const LIMIT: Duration = Duration::from_secs(20);

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
}

#[actix_rt::test]
async fn faults_durations_heartbeats_and_restarts_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (good, refused, panics) = (pubkey(1), pubkey(2), pubkey(3));
    world.add_ready_peer(&good);
    world.add_ready_peer(&refused);
    world.refuse_sessions(
        &refused,
        Some(Fault::Permanent("auth_token: bad signature".into())),
    );
    world.add_ready_peer(&panics);
    world.panic_on_resolve(&panics, 1);
    // A remote that refuses us by its policy: its own decision, retried, never failed.
    let full = pubkey(4);
    world.add_ready_peer(&full);
    world.refuse_sessions(
        &full,
        Some(Fault::Refused(
            "not admitted: connection limit (1) reached".into(),
        )),
    );
    let (node, api) = admin_node(
        &world,
        &dir,
        "btp_nips: {peer_connections: {heartbeat_interval_seconds: 2, heartbeat_timeout_seconds: 1}}",
        "",
        &[],
    )
    .await;
    for peer in [&good, &refused, &panics, &full] {
        node.follow(peer).await.unwrap();
    }
    wait_until(&node, LIMIT, "settled", |p| {
        state_of(p, &good) == Some(PeerState::Connected)
            && state_of(p, &panics) == Some(PeerState::Connected)
            && state_of(p, &refused) == Some(PeerState::Failed)
            && state_of(p, &full) == Some(PeerState::Disconnected)
    })
    .await;
    // At least one PONG (heartbeat every two seconds).
    support::wait::eventually(LIMIT, "a heartbeat", || {
        let api = api.clone();
        async move {
            let samples = parse_metrics(&api.metrics().await);
            (value(&samples, "btp_nips_heartbeat_rtt_seconds_count", &[])? >= 1.0).then_some(())
        }
    })
    .await;

    let samples = parse_metrics(&api.metrics().await);
    assert_eq!(
        value(&samples, "btp_nips_connect_duration_seconds_count", &[]),
        Some(2.0),
        "two peers went connecting -> connected"
    );
    assert_eq!(
        value(
            &samples,
            "btp_nips_peer_faults_total",
            &[("owner", "peer"), ("kind", "session")]
        ),
        Some(1.0),
        "the refused session is the peer's fault"
    );
    assert!(
        value(
            &samples,
            "btp_nips_peer_faults_total",
            &[("owner", "remote"), ("kind", "session")]
        )
        .unwrap()
            >= 1.0,
        "a refusal by the remote's policy is the remote's"
    );
    assert!(
        value(&samples, "btp_nips_actor_restarts_total", &[]).unwrap() >= 1.0,
        "the panicking resolver restarted the actor"
    );
    assert_eq!(
        value(&samples, "btp_nips_sessions", &[("direction", "outbound")]),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "btp_nips_persistence_write_failures_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "btp_nips_heartbeat_timeouts_total", &[]),
        Some(0.0)
    );
    assert_eq!(value(&samples, "btp_nips_network_outage", &[]), Some(0.0));

    // The peer stops answering PINGs: its loss is a heartbeat timeout, the peer's fault.
    world.set_silent(&good, true);
    support::wait::eventually(LIMIT, "a heartbeat timeout", || {
        let api = api.clone();
        async move {
            let samples = parse_metrics(&api.metrics().await);
            (value(&samples, "btp_nips_heartbeat_timeouts_total", &[])? >= 1.0).then_some(())
        }
    })
    .await;
    let samples = parse_metrics(&api.metrics().await);
    assert!(
        value(
            &samples,
            "btp_nips_peer_faults_total",
            &[("owner", "peer"), ("kind", "connection")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(samples.iter().all(|s| s.label("pubkey").is_none()));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn per_peer_series_exist_only_with_admin_metrics_per_peer_and_follow_the_peers() {
    let (dir_on, dir_off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let world = MemoryWorld::new();
    let (fast, other) = (pubkey(1), pubkey(2));
    world.add_ready_peer(&fast);
    world.add_ready_peer(&other);
    let heartbeat =
        "btp_nips: {peer_connections: {heartbeat_interval_seconds: 2, heartbeat_timeout_seconds: 1}}";
    let (on, api_on) = admin_node(
        &world,
        &dir_on,
        heartbeat,
        "  metrics_per_peer: true\n",
        &[],
    )
    .await;
    let (off, api_off) = admin_node(&world, &dir_off, heartbeat, "", &[]).await;
    for node in [&on, &off] {
        node.follow(&fast).await.unwrap();
        node.follow(&other).await.unwrap();
        wait_until(node, LIMIT, "a PONG from each", |p| {
            count_in(p, PeerState::Connected) == 2 && p.iter().all(|r| r.rtt_us.is_some())
        })
        .await;
    }

    // Off (the default): no series has a peer label, and the per-peer families are absent.
    let samples = parse_metrics(&api_off.metrics().await);
    assert!(
        samples.iter().all(|s| s.label("peer").is_none()
            && !s.name.starts_with("btp_nips_peer_state")
            && !s.name.starts_with("btp_nips_peer_heartbeat_rtt")),
        "no per-peer series: {samples:?}"
    );
    assert_eq!(value(&samples, "btp_nips_chain_locked_wei", &[]), Some(0.0));

    // On: each peer's state and round trip, labelled with its pubkey (the round trip as
    // the peer's record held it just before or just after the scrape: a PONG may land
    // between).
    let before = on.peers().await.unwrap();
    let samples = parse_metrics(&api_on.metrics().await);
    let after = on.peers().await.unwrap();
    for peer in [&fast, &other] {
        assert_eq!(
            value(
                &samples,
                "btp_nips_peer_state",
                &[("peer", peer), ("state", "connected")]
            ),
            Some(1.0),
            "{samples:?}"
        );
        let rtt = value(
            &samples,
            "btp_nips_peer_heartbeat_rtt_seconds",
            &[("peer", peer)],
        )
        .expect("the round trip of a peer that answered");
        let held = |peers: &[btp_nips_node::lifecycle::PeerRecord]| {
            let rtt_us = peers
                .iter()
                .find(|r| &r.nostr_pubkey == peer)
                .unwrap()
                .rtt_us;
            f64::from(rtt_us.unwrap()) / 1e6
        };
        assert!(rtt == held(&before) || rtt == held(&after), "{rtt}");
    }
    // A peer's state moves: its old series goes, so a peer has one state at a time.
    on.disconnect(&other, "maintenance").await.unwrap();
    wait_record(&on, &other, LIMIT, "stopped", |r| {
        r.state == PeerState::Disconnected
    })
    .await;
    let samples = parse_metrics(&api_on.metrics().await);
    let states: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "btp_nips_peer_state" && s.label("peer") == Some(&other))
        .filter_map(|s| s.label("state"))
        .collect();
    assert_eq!(states, ["disconnected"]);
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "btp_nips_peer_state")
            .count(),
        2,
        "one series per known peer"
    );
    on.shutdown().await.unwrap();
    off.shutdown().await.unwrap();
}
