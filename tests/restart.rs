//! Restart recovery: every peer's state is in the database; a new actor system on the same
//! database brings back every non-terminal peer (discovering, channel_needed and
//! channel_opening included) in priority order, and leaves failed and deliberately
//! disconnected peers where they are.

mod support;

use std::time::Duration;

use btp_nips_node::actors::clock::NodeClock;
use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{PeerIntent, PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::storage::scratch::ScratchPostgres;
use btp_nips_node::storage::Database;
use support::node::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn run_node<T>(
    db: &Database,
    settings: &Settings,
    world: &MemoryWorld,
    body: impl AsyncFnOnce(&Node) -> T,
) -> T {
    actix::System::new().block_on(async {
        tokio::time::pause();
        let node = memory_node(settings.clone(), world)
            .database(db.clone())
            .clock(NodeClock::anchored_at(T0))
            .start()
            .await
            .unwrap();
        let out = body(&node).await;
        node.shutdown().await.unwrap();
        out
    })
}

/// Peers in all seven states plus a deliberately disconnected one, with distinct priorities.
fn seven_states() -> Vec<PeerRecord> {
    let mut peers = vec![
        stored(1, PeerState::Discovering, false, None), // priority 10
        stored(2, PeerState::Connecting, true, None),   // 3
        stored(3, PeerState::ChannelNeeded, false, Some(10)), // 7
        stored(4, PeerState::ChannelOpening, true, Some(10)), // 1
        stored(5, PeerState::Connected, true, None),    // 3
        stored(6, PeerState::Disconnected, false, Some(10)), // 7
        stored(7, PeerState::Failed, true, Some(10)),   // 1
        stored(8, PeerState::Disconnected, true, Some(10)), // 1, deliberately stopped
    ];
    peers[3].channel_tx_hash = Some("0xtx-4".into());
    peers[3].channel_opening_since = Some(T0);
    peers[5].reconnect_attempts = 2;
    peers[6].failure_reason = Some("authentication refused".into());
    peers[7].desired = PeerIntent::Disconnect;
    peers[7].failure_reason = Some("operator".into());
    peers
}

/// Runs `check` on a SQLite file and on a fresh PostgreSQL database.
fn on_both_backends(check: fn(&Database)) {
    let dir = tempfile::tempdir().unwrap();
    check(&Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap());
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    check(&Database::open(pg.url(), 2).unwrap());
}

#[test]
fn a_new_system_resumes_every_non_terminal_peer_in_priority_order() {
    on_both_backends(resumes_every_non_terminal_peer_in_priority_order);
}

#[test]
fn peers_survive_a_full_stop_and_start_of_the_actor_system() {
    on_both_backends(survive_a_full_stop_and_start);
}

fn resumes_every_non_terminal_peer_in_priority_order(db: &Database) {
    let peers = seven_states();
    db.upsert_batch(&peers).unwrap();
    let world = MemoryWorld::new();
    for i in 1..=8 {
        world.add_ready_peer(&pubkey(i));
    }
    world.add_pending_tx("0xtx-4", &pubkey(4));
    // One peer admitted per dial tick: the order of session opens is the resume order.
    let settings = settings(
        "btp_nips: {peer_connections: {startup_dial_batch: 1, startup_dial_interval_ms: 1000}}",
    );

    let after = run_node(db, &settings, &world, async |node: &Node| {
        wait_until(node, Duration::from_secs(60), "six connected", |p| {
            count_in(p, PeerState::Connected) == 6
        })
        .await
    });

    // Every non-terminal peer is connected again, including discovering (1), channel_needed
    // (3) and channel_opening (4, on its stored transaction: nothing opened twice).
    for i in 1..=6 {
        assert_eq!(
            state_of(&after, &pubkey(i)),
            Some(PeerState::Connected),
            "peer {i}"
        );
    }
    assert_eq!(
        world.open_count(),
        0,
        "the pending open was resumed, not resent"
    );
    // Failed and deliberately disconnected peers stay put, untouched.
    let log = world.connect_log();
    assert!(!log.contains(&pubkey(7)) && !log.contains(&pubkey(8)));
    assert_eq!(db.load(&pubkey(7)).unwrap().unwrap(), peers[6]);
    assert_eq!(db.load(&pubkey(8)).unwrap().unwrap(), peers[7]);
    // Reconnects went best priority first: 4 (1), then 2 and 5 (3), then 3 and 6 (7), then 1 (10).
    let order: Vec<usize> = log
        .iter()
        .map(|p| (1..=8).find(|i| pubkey(*i) == *p).unwrap())
        .collect();
    assert_eq!(order, [4, 2, 5, 3, 6, 1]);
    // The stored rows say so too.
    for i in 1..=6 {
        assert_eq!(
            db.load(&pubkey(i)).unwrap().unwrap().state,
            PeerState::Connected
        );
    }
}

fn survive_a_full_stop_and_start(db: &Database) {
    let world = MemoryWorld::new();
    for i in 1..=20 {
        world.add_ready_peer(&pubkey(i));
    }
    world.refuse_sessions(
        &pubkey(20),
        Some(btp_nips_node::ports::Fault::Permanent(
            "authentication refused".into(),
        )),
    );
    let settings = settings("{}");

    // First life: follow 20 peers, stop one on purpose; one is refused for good.
    run_node(db, &settings, &world, async |node: &Node| {
        for i in 1..=20 {
            node.follow(&pubkey(i)).await.unwrap();
        }
        wait_until(node, Duration::from_secs(60), "19 connected", |p| {
            count_in(p, PeerState::Connected) == 19 && count_in(p, PeerState::Failed) == 1
        })
        .await;
        node.disconnect(&pubkey(19), "operator").await.unwrap();
        wait_until(node, Duration::from_secs(5), "19 stopped", |p| {
            state_of(p, &pubkey(19)) == Some(PeerState::Disconnected)
        })
        .await;
    });
    let stored = db.load_all().unwrap();
    assert_eq!(count_in(&stored, PeerState::Connected), 18);
    let log_before = world.connect_log().len();

    // Second life on the same database.
    run_node(db, &settings, &world, async |node: &Node| {
        wait_until(node, Duration::from_secs(60), "18 back", |p| {
            count_in(p, PeerState::Connected) == 18
        })
        .await;
    });
    let reconnected = &world.connect_log()[log_before..];
    assert_eq!(reconnected.len(), 18);
    assert!(!reconnected.contains(&pubkey(19)) && !reconnected.contains(&pubkey(20)));
    let p19 = db.load(&pubkey(19)).unwrap().unwrap();
    assert_eq!(
        (p19.state, p19.desired),
        (PeerState::Disconnected, PeerIntent::Disconnect)
    );
    let p20 = db.load(&pubkey(20)).unwrap().unwrap();
    assert_eq!(p20.state, PeerState::Failed);
    assert_eq!(
        p20.failure_reason.as_deref(),
        Some("authentication refused")
    );
}

#[actix_rt::test]
async fn a_peer_followed_while_still_queued_for_recovery_goes_first() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=3 {
        world.add_ready_peer(&pubkey(i));
    }
    let stored_peers: Vec<PeerRecord> = (1..=3)
        .map(|i| stored(i, PeerState::Disconnected, false, None))
        .collect();
    // One peer per 10 s: 1 starts at once, 2 and 3 wait in the recovery queue.
    let yaml =
        "btp_nips: {peer_connections: {startup_dial_batch: 1, startup_dial_interval_ms: 10000}}";
    let node = start_node(&world, &dir, yaml, &stored_peers).await;
    node.follow(&pubkey(3)).await.unwrap();
    let peers = wait_until(&node, Duration::from_secs(30), "all back", |p| {
        count_in(p, PeerState::Connected) == 3
    })
    .await;
    let followed = peers.iter().find(|p| p.nostr_pubkey == pubkey(3)).unwrap();
    assert!(followed.followed);
    assert_eq!(followed.priority, 3, "follow priority, recomputed");
    assert_eq!(world.connect_log(), [pubkey(1), pubkey(3), pubkey(2)]);
    node.shutdown().await.unwrap();
}
