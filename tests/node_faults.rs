//! Whose fault it is, through the real actors (simulated time, in-memory peers): a node
//! without a chain connects peers without channels; a node whose own adapter is missing
//! (no relays configured) keeps its peers waiting without spending their attempts; a peer
//! the remote refuses by policy is retried, never failed for it.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::node::{Node, NodeBuilder};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Fault;
use support::node::*;

/// The port a node is started without (the builder then uses what the settings enable).
enum Port {
    Resolver,
    Channels,
}

/// A node on the in-memory world, except for `lacking`, with `yaml` over the defaults.
async fn node_lacking(
    lacking: Port,
    world: &MemoryWorld,
    dir: &tempfile::TempDir,
    yaml: &str,
) -> Node {
    let url = format!("sqlite://{}", dir.path().join("node.db").display());
    let settings = settings(&format!("database: {{url: \"{url}\"}}\n{yaml}\n"));
    let ports = world.ports();
    let builder = NodeBuilder::new(settings)
        .without_admin()
        .ephemeral()
        .sessions(ports.sessions)
        .subscriptions(ports.subscriptions)
        .without_listener();
    let builder = match lacking {
        Port::Resolver => builder.channels(ports.channels),
        Port::Channels => builder.resolver(ports.resolver),
    };
    builder.start().await.unwrap()
}

#[actix_rt::test]
async fn without_a_chain_peers_are_connected_without_channels_and_stay_connected() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // Announced and answering, but no channel exists anywhere.
    let peer = pubkey(1);
    world.announce(&peer, MemoryWorld::announcement_for(&peer));
    // The node's own channel adapter: not configured, because the chain is off.
    let node = node_lacking(Port::Channels, &world, &dir, "chain: {enabled: false}").await;
    node.follow(&peer).await.unwrap();
    wait_until(&node, Duration::from_secs(5), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;
    // Far past what ten failed attempts would take with the default backoff (~17 min).
    let peers = wait_until(
        &node,
        Duration::from_secs(3600),
        "an hour of heartbeats",
        |p| world.pings_answered() >= 55 && p.iter().all(|r| r.state == PeerState::Connected),
    )
    .await;
    assert_eq!(peers[0].reconnect_attempts, 0);
    assert_eq!(peers[0].channel_id, None);
    assert_eq!(world.open_count(), 0);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_port_the_node_lacks_keeps_peers_waiting_without_spending_their_attempts() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(2);
    world.add_ready_peer(&peer);
    // No relays configured: the resolver is this node's missing piece, not the peer's.
    let node = node_lacking(Port::Resolver, &world, &dir, "nostr: {relays: []}").await;
    node.follow(&peer).await.unwrap();
    // Two hours: with the peer's own transient faults it would have been failed long ago.
    actix::clock::sleep(Duration::from_secs(2 * 3600)).await;
    let record = node.peer(&peer).await.unwrap().expect("the peer is known");
    assert_ne!(record.state, PeerState::Failed, "{record:?}");
    assert_eq!(record.reconnect_attempts, 0, "{record:?}");
    let reason = record.failure_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("waiting for this node: ") && reason.contains("not configured"),
        "{reason}"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_refused_by_the_remotes_policy_is_retried_and_never_failed() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(3);
    world.add_ready_peer(&peer);
    world.refuse_sessions(
        &peer,
        Some(Fault::Refused(
            "not admitted: connection limit (1) reached".into(),
        )),
    );
    let node = start_node(&world, &dir, "{}", &[]).await;
    node.follow(&peer).await.unwrap();
    // Long enough for well over ten attempts at the maximum delay (300 s).
    actix::clock::sleep(Duration::from_secs(4 * 3600)).await;
    let record = node.peer(&peer).await.unwrap().expect("the peer is known");
    assert_eq!(record.state, PeerState::Disconnected, "{record:?}");
    assert!(record.reconnect_attempts >= 10, "{record:?}");
    assert!(
        record
            .failure_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("refused by the remote: not admitted")),
        "the reason says whose decision it was: {record:?}"
    );
    // The remote lets us in again: connected.
    world.refuse_sessions(&peer, None);
    wait_until(&node, Duration::from_secs(600), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;
    node.shutdown().await.unwrap();
}

/// The node's database goes away just as a channel transaction is signed: the durable
/// write of its hash is not confirmed within `persistence.durable_write_timeout_ms`. The
/// peer actor keeps answering meanwhile, the transaction is never broadcast, the peer waits
/// for the node without an attempt counted, and once the database is back the peer opens
/// its channel and connects — with exactly one broadcast.
#[actix_rt::test]
async fn a_database_outage_during_a_durable_write_costs_the_peer_nothing() {
    use btp_nips_node::storage::scratch::ScratchPostgres;
    use btp_nips_node::storage::Database;
    use diesel::connection::SimpleConnection;
    use diesel::RunQueryDsl;

    tokio::time::pause();
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(1);
    world.announce(&peer, MemoryWorld::announcement_for(&peer));
    world.set_auto_open(true);
    let db = Database::open_with_timeout(pg.url(), 2, Duration::from_millis(200)).unwrap();
    let node = memory_node(
        settings(
            "persistence: {durable_write_timeout_ms: 500, retry_max_delay_ms: 200}\n\
             btp_nips: {peer_connections: {reconnect_initial_delay_ms: 1000, \
             reconnect_max_delay_ms: 2000, reconnect_jitter: 0.0}}",
        ),
        &world,
    )
    .database(db)
    .start()
    .await
    .unwrap();

    // The database refuses every connection from now on.
    let block = |allow: bool| {
        pg.admin()
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
                pg.name()
            ))
            .unwrap();
        if !allow {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                pg.name()
            ))
            .execute(&mut pg.admin())
            .unwrap();
        }
    };
    block(false);
    node.follow(&peer).await.unwrap();

    // Asked of the peer's own actor: it answers while its write is unconfirmed.
    let waiting = support::wait::eventually(Duration::from_secs(60), "waiting", || async {
        node.peer(&peer)
            .await
            .unwrap()
            .filter(|r| r.state == PeerState::Disconnected)
    })
    .await;
    let reason = waiting.failure_reason.as_deref().unwrap();
    assert!(
        reason.starts_with("waiting for this node") && reason.contains("durable_write_timeout"),
        "{reason}"
    );
    assert_eq!(
        waiting.reconnect_attempts, 0,
        "the node's fault costs no attempt"
    );
    assert_eq!(waiting.channel_tx_hash, None);
    assert_eq!(
        world.broadcast_count(),
        0,
        "never broadcast without its hash on disk"
    );

    block(true);
    wait_until(&node, Duration::from_secs(120), "connected", |p| {
        state_of(p, &peer) == Some(PeerState::Connected)
    })
    .await;
    assert_eq!(world.broadcast_count(), 1);
    let record = node.peer(&peer).await.unwrap().unwrap();
    assert_eq!(record.reconnect_attempts, 0);
    node.shutdown().await.unwrap();
}
