//! The connection limit: at `max_active_connections` a higher-priority peer takes the slot
//! of the lowest-priority one; followed peers are never evicted, nor is a peer whose channel
//! is opening; a peer without a slot waits and gets the next one that frees up. Inbound
//! peers the node admits hold slots like any peer; a peer in backoff or waiting for the
//! operator gives its slot to one ready to dial; new follows are dialled within the budget.

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
    assert_eq!(
        evicted.failure_reason.as_deref(),
        Some(format!("evicted for {} (priority 3 < 10)", pubkey(4)).as_str())
    );
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
            recovering: 0,
            evictions: 3,
            ..Default::default()
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
    assert_eq!(
        stored.failure_reason.unwrap(),
        format!("evicted for {} (priority 3 < 10)", pubkey(1001))
    );
}

/// Admits `pubkey` as an inbound peer and says whether it got in.
async fn inbound(node: &Node, pubkey: &str) -> bool {
    match node.admit(pubkey).await.unwrap() {
        Admission::Admitted { .. } => true,
        Admission::Refused { .. } => false,
    }
}

#[actix_rt::test]
async fn at_a_limit_of_1_a_followed_peer_evicts_an_inbound_one_naming_itself() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=4 {
        world.add_ready_peer(&pubkey(i));
    }
    let node = start(&world, &dir, 1, &[]).await;

    // A peer that follows us opens a session: recorded, unfollowed, holding the slot.
    assert_eq!(
        node.admit(&pubkey(1)).await.unwrap(),
        Admission::Admitted { known: false }
    );
    let stranger = wait_record(
        &node,
        &pubkey(1),
        Duration::from_secs(5),
        "connected",
        |r| r.state == PeerState::Connected,
    )
    .await;
    assert!(!stranger.followed);
    assert_eq!(stranger.priority, 10);
    assert_eq!(stats(&node).await.running, 1);
    // Its next session is admitted (it holds a slot) but it is still a stranger to the
    // session server; another stranger finds no slot.
    assert_eq!(
        node.admit(&pubkey(1)).await.unwrap(),
        Admission::Admitted { known: false }
    );
    assert_eq!(
        node.admit(&pubkey(2)).await.unwrap(),
        Admission::Refused {
            reason: "connection limit (btp_nips.peer_connections.max_active_connections: 1) \
                     reached"
                .into()
        }
    );

    // A followed peer's dial takes the slot; the evicted peer says for whom, and why.
    node.follow(&pubkey(3)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(5), "3 connected", |p| {
        state_of(p, &pubkey(3)) == Some(PeerState::Connected)
    })
    .await;
    let evicted = peers.iter().find(|p| p.nostr_pubkey == pubkey(1)).unwrap();
    assert_eq!(evicted.state, PeerState::Disconnected);
    assert_eq!(
        evicted.failure_reason.as_deref(),
        Some(format!("evicted for {} (priority 3 < 10)", pubkey(3)).as_str())
    );
    // A second followed peer waits: followed peers are never evicted.
    node.follow(&pubkey(4)).await.unwrap();
    wait_record(
        &node,
        &pubkey(4),
        Duration::from_secs(5),
        "4 waiting",
        |r| {
            r.state == PeerState::Disconnected
                && r.failure_reason.as_deref() == Some("connection limit: waiting for a slot")
        },
    )
    .await;
    let s = stats(&node).await;
    assert_eq!((s.running, s.waiting, s.evictions), (1, 2, 1), "{s:?}");

    // The slot frees up: the followed peer goes before the inbound one.
    node.disconnect(&pubkey(3), "operator").await.unwrap();
    wait_record(
        &node,
        &pubkey(4),
        Duration::from_secs(5),
        "4 connected",
        |r| r.state == PeerState::Connected,
    )
    .await;
    assert_eq!(
        state_of(&node.peers().await.unwrap(), &pubkey(1)),
        Some(PeerState::Disconnected)
    );
    node.shutdown().await.unwrap();
    let row = node.db().load(&pubkey(1)).unwrap().unwrap();
    assert!(!row.followed);
    assert!(row.failure_reason.unwrap().starts_with("evicted for"));
}

#[actix_rt::test]
async fn at_1000_followed_and_inbound_peers_share_the_slots() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=2200 {
        world.add_ready_peer(&pubkey(i));
    }
    let node = start(&world, &dir, 1000, &[]).await;

    // 600 peers that follow us take 600 slots.
    for i in 1..=600 {
        assert!(inbound(&node, &pubkey(i)).await, "{i}");
    }
    wait_until(&node, Duration::from_secs(60), "600 connected", |p| {
        count_in(p, PeerState::Connected) == 600
    })
    .await;
    // 500 follows: 400 free slots, then 100 inbound peers make room.
    for i in 1001..=1500 {
        node.follow(&pubkey(i)).await.unwrap();
    }
    let peers = wait_until(&node, Duration::from_secs(60), "500 followed in", |p| {
        (1001..=1500).all(|i| state_of(p, &pubkey(i)) == Some(PeerState::Connected))
    })
    .await;
    assert_eq!(count_in(&peers, PeerState::Connected), 1000);
    let evicted: Vec<_> = peers
        .iter()
        .filter(|p| !p.followed && p.state == PeerState::Disconnected)
        .collect();
    assert_eq!(evicted.len(), 100);
    assert!(evicted.iter().all(|p| p
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("evicted for ")));
    let s = stats(&node).await;
    assert_eq!(
        (s.running, s.waiting, s.evictions),
        (1000, 100, 100),
        "{s:?}"
    );
    // At the limit a stranger is refused; a followed peer already known is not.
    assert!(!inbound(&node, &pubkey(2000)).await);
    assert!(inbound(&node, &pubkey(1001)).await);

    // 600 more follows: every inbound peer gives way, and 100 followed peers wait.
    for i in 1501..=2100 {
        node.follow(&pubkey(i)).await.unwrap();
    }
    let peers = wait_until(&node, Duration::from_secs(60), "all inbound out", |p| {
        p.iter()
            .filter(|r| r.followed && r.state == PeerState::Connected)
            .count()
            == 1000
    })
    .await;
    assert!(peers
        .iter()
        .filter(|p| !p.followed)
        .all(|p| p.state == PeerState::Disconnected));
    let s = support::wait::eventually(Duration::from_secs(10), "the dial queue", || async {
        let s = stats(&node).await;
        (s.dial_queue == 0).then_some(s)
    })
    .await;
    assert_eq!(
        (s.running, s.waiting, s.evictions),
        (1000, 700, 600),
        "{s:?}"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_in_backoff_or_waiting_for_the_operator_gives_its_slot_to_a_ready_one() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // 1: its sessions fail (backoff). 2: no channel, the operator must approve one.
    world.announce(&pubkey(1), MemoryWorld::announcement_for(&pubkey(1)));
    world.refuse_sessions(
        &pubkey(1),
        Some(btp_nips_node::ports::Fault::Transient(
            "connection reset".into(),
        )),
    );
    world.announce(&pubkey(2), MemoryWorld::announcement_for(&pubkey(2)));
    for i in 3..=4 {
        world.add_ready_peer(&pubkey(i));
    }
    let node = start(&world, &dir, 1, &[]).await;

    node.follow(&pubkey(1)).await.unwrap();
    wait_record(
        &node,
        &pubkey(1),
        Duration::from_secs(5),
        "1 in backoff",
        |r| r.state == PeerState::Disconnected && r.reconnect_attempts == 1,
    )
    .await;
    // A followed peer ready to dial does not wait for 1's backoff to end.
    node.follow(&pubkey(3)).await.unwrap();
    wait_record(
        &node,
        &pubkey(3),
        Duration::from_secs(5),
        "3 connected",
        |r| r.state == PeerState::Connected,
    )
    .await;
    let s = stats(&node).await;
    assert_eq!((s.running, s.waiting, s.displaced), (1, 1, 1), "{s:?}");
    // When its backoff ends, 1 finds the slot held by a followed peer: it waits.
    actix::clock::sleep(Duration::from_secs(30)).await;
    assert_eq!(stats(&node).await.running, 1);
    assert_eq!(
        world
            .connect_log()
            .iter()
            .filter(|p| **p == pubkey(1))
            .count(),
        1
    );

    // The slot frees; 2 takes it and waits for the operator; 4, ready, takes it over.
    node.disconnect(&pubkey(3), "operator").await.unwrap();
    world.refuse_sessions(&pubkey(1), None);
    node.disconnect(&pubkey(1), "operator").await.unwrap();
    node.follow(&pubkey(2)).await.unwrap();
    wait_record(
        &node,
        &pubkey(2),
        Duration::from_secs(5),
        "2 waits for the operator",
        |r| r.state == PeerState::ChannelNeeded,
    )
    .await;
    node.follow(&pubkey(4)).await.unwrap();
    wait_record(
        &node,
        &pubkey(4),
        Duration::from_secs(5),
        "4 connected",
        |r| r.state == PeerState::Connected,
    )
    .await;
    let two = record_of(&node, &pubkey(2)).await.unwrap();
    assert_eq!(two.state, PeerState::Disconnected);
    assert!(two.failure_reason.unwrap().starts_with("connection limit"));
    assert_eq!(stats(&node).await.displaced, 2);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_5000_entry_follow_list_is_dialled_within_the_dial_budget() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // Each dial takes longer than one interval of the budget: a budget that only paced
    // starts would still let dials pile up.
    world.set_dial_delay(Duration::from_millis(350));
    let follows: Vec<String> = (1..=5000).map(pubkey).collect();
    for p in &follows {
        world.add_ready_peer(p);
    }
    let yaml = "btp_nips: {peer_connections: {max_active_connections: 1000, \
                startup_dial_batch: 50, startup_dial_interval_ms: 100}}";
    let node = start_node(&world, &dir, yaml, &[]).await;
    node.directory().reconcile(follows);
    let s = support::wait::eventually(Duration::from_secs(600), "1000 connected", || async {
        let s = node.stats().await.unwrap();
        (s.connected == 1000 && s.dial_queue == 0).then_some(s)
    })
    .await;
    assert_eq!((s.running, s.waiting), (1000, 4000), "{s:?}");
    let peak = world.peak_dials_in_flight();
    assert!(peak <= 50, "{peak} dials in progress at once");
    assert!(peak >= 25, "dials were not batched but serial: {peak}");
    assert_eq!(world.connect_log().len(), 1000);
    node.shutdown().await.unwrap();
}
