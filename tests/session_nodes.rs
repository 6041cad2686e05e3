//! Two whole nodes on loopback, each in its own actix system with its own database, BTP
//! server and Nostr key, following each other: they connect and authenticate both ways,
//! heartbeat over the real session (PING/PONG, latency recorded), detect a hung peer and a
//! killed peer within heartbeat interval + PONG timeout, and reconnect when it returns.
//! Discovery and channels come from in-memory doubles (their adapters have their own tests);
//! everything on the wire is real.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::NodeBuilder;
use btp_nips_node::ports::memory::MemoryWorld;
use nostr::Keys;
use support::node::{wait_record, NodeThread};
use support::sessions::*;

const HEARTBEAT: Duration = Duration::from_secs(2);
const PONG_TIMEOUT: Duration = Duration::from_secs(1);

/// One node running in its own thread and actix system.
struct RunningNode {
    node: NodeThread,
    /// Where its resolver finds peers (the discovery double).
    world: MemoryWorld,
    handler: Arc<Switchable>,
}

impl RunningNode {
    fn start(name: &str, keys: Keys, db_url: String, listen: String) -> RunningNode {
        let yaml = format!(
            "node:\n  id: \"{name}\"\ndatabase:\n  url: \"{db_url}\"\n\
             btp_nips:\n  peer_connections:\n    heartbeat_interval_seconds: {}\n\
             \x20   heartbeat_timeout_seconds: {}\n    reconnect_initial_delay_ms: 100\n\
             \x20   reconnect_max_delay_ms: 400\n    max_reconnect_attempts: 64\n",
            HEARTBEAT.as_secs(),
            PONG_TIMEOUT.as_secs()
        );
        let mut settings: Settings = Settings::from_yaml_overrides(&yaml).unwrap();
        settings.session = session_settings("");
        let world = MemoryWorld::new();
        let ports = world.ports();
        let (handler_tx, handler_rx) = std::sync::mpsc::channel();
        let node = NodeThread::start(move || {
            NodeBuilder::new(settings)
                .without_admin()
                .keys(keys)
                .listen(listen)
                .resolver(ports.resolver)
                .channels(ports.channels)
                .wrap_handler(move |inner| {
                    let handler = Switchable::wrap(inner);
                    handler_tx.send(handler.clone()).unwrap();
                    handler
                })
        });
        let handler = handler_rx.recv().expect("the node's handler");
        RunningNode {
            node,
            world,
            handler,
        }
    }

    fn port(&self) -> u16 {
        self.node.local_addr().expect("listening").port()
    }

    fn endpoint(&self) -> String {
        self.node.loopback_endpoint().expect("listening")
    }

    /// Tells this node where `peer` is, and makes it follow `peer`.
    async fn follow(&self, peer_keys: &Keys, peer: &RunningNode) {
        let pubkey = peer_keys.public_key().to_hex();
        announce_peer(&self.world, &pubkey, peer.endpoint());
        self.node.follow(&pubkey).await.unwrap();
    }

    fn kill(&mut self) {
        self.node.kill();
    }
}

/// Polls `node`'s record of `peer` until `done` holds; panics after `limit`.
async fn wait_for(
    node: &RunningNode,
    peer: &Keys,
    limit: Duration,
    what: &str,
    done: impl Fn(&PeerRecord) -> bool,
) -> PeerRecord {
    wait_record(&node.node, &peer.public_key().to_hex(), limit, what, done).await
}

fn connected_with_heartbeat_after(r: &PeerRecord, after: Option<Timestamp>) -> bool {
    r.state == PeerState::Connected
        && r.rtt_us.is_some()
        && r.last_heartbeat
            .is_some_and(|h| after.is_none_or(|a| h > a))
}

#[actix_rt::test]
async fn two_nodes_authenticate_heartbeat_detect_loss_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
    let (keys_a, keys_b) = (Keys::generate(), Keys::generate());
    let a = RunningNode::start("alpha", keys_a.clone(), url("a.db"), "127.0.0.1:0".into());
    let mut b = RunningNode::start("beta", keys_b.clone(), url("b.db"), "127.0.0.1:0".into());
    a.follow(&keys_b, &b).await;
    b.follow(&keys_a, &a).await;

    // Both directions: authenticated sessions, then a PONG each (latency recorded).
    let limit = HEARTBEAT * 3;
    let ab = wait_for(
        &a,
        &keys_b,
        limit,
        "alpha connected to beta with a PONG",
        |r| connected_with_heartbeat_after(r, None),
    )
    .await;
    let ba = wait_for(
        &b,
        &keys_a,
        limit,
        "beta connected to alpha with a PONG",
        |r| connected_with_heartbeat_after(r, None),
    )
    .await;
    assert!(ab.rtt_us.unwrap() < 1_000_000, "{ab:?}");
    assert!(ba.rtt_us.unwrap() < 1_000_000, "{ba:?}");
    // Measured latency feeds priority: a followed peer with a fast round trip.
    assert_eq!(
        ab.priority,
        btp_nips_node::lifecycle::priority::calculate_priority(true, ab.rtt_us, None)
    );
    // A few more heartbeats keep it connected.
    let later = wait_for(&a, &keys_b, limit, "a second PONG", |r| {
        connected_with_heartbeat_after(r, ab.last_heartbeat)
    })
    .await;
    assert_eq!(later.reconnect_attempts, 0);

    // Beta hangs: its socket stays up (WebSocket pings still answered) but PINGs get no
    // PONG. Alpha notices within heartbeat interval + PONG timeout.
    let bound = HEARTBEAT + PONG_TIMEOUT + Duration::from_millis(700);
    b.handler.silent.store(true, Ordering::SeqCst);
    let hung_at = Instant::now();
    let lost = wait_for(&a, &keys_b, bound, "alpha to notice beta hung", |r| {
        r.state != PeerState::Connected
    })
    .await;
    assert!(hung_at.elapsed() <= bound);
    assert!(
        lost.failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("heartbeat timeout")),
        "{lost:?}"
    );
    // Beta answers again: alpha reconnects (backoff) and heartbeats.
    b.handler.silent.store(false, Ordering::SeqCst);
    let back = wait_for(&a, &keys_b, limit, "alpha reconnected to beta", |r| {
        connected_with_heartbeat_after(r, later.last_heartbeat)
    })
    .await;

    // Beta is killed: alpha notices within interval + timeout (here: the socket closes).
    b.kill();
    let killed_at = Instant::now();
    let lost = wait_for(&a, &keys_b, bound, "alpha to notice beta killed", |r| {
        r.state != PeerState::Connected
    })
    .await;
    assert!(killed_at.elapsed() <= bound, "{lost:?}");
    // While beta is down, alpha keeps retrying with backoff (transient faults).
    let retrying = wait_for(&a, &keys_b, limit, "a failed reconnect attempt", |r| {
        r.reconnect_attempts >= 2
    })
    .await;
    assert_ne!(retrying.state, PeerState::Failed, "{retrying:?}");

    // Beta comes back on the same port with the same key and database.
    let b2 = RunningNode::start(
        "beta",
        keys_b.clone(),
        url("b.db"),
        format!("127.0.0.1:{}", b.port()),
    );
    b2.follow(&keys_a, &a).await;
    wait_for(
        &a,
        &keys_b,
        limit * 2,
        "alpha reconnected to the restarted beta",
        |r| connected_with_heartbeat_after(r, back.last_heartbeat),
    )
    .await;
    wait_for(
        &b2,
        &keys_a,
        limit * 2,
        "the restarted beta reconnected to alpha",
        |r| connected_with_heartbeat_after(r, ba.last_heartbeat),
    )
    .await;
}

#[actix_rt::test]
async fn a_peer_whose_endpoint_belongs_to_another_key_is_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
    let a = RunningNode::start("alpha", Keys::generate(), url("a.db"), "127.0.0.1:0".into());
    let b = RunningNode::start("beta", Keys::generate(), url("b.db"), "127.0.0.1:0".into());
    // An announcement claims beta's endpoint for a key beta does not hold.
    let claimed = Keys::generate();
    a.follow(&claimed, &b).await;
    let failed = wait_for(
        &a,
        &claimed,
        Duration::from_secs(10),
        "the peer failed",
        |r| r.state == PeerState::Failed,
    )
    .await;
    let reason = failed.failure_reason.unwrap_or_default();
    assert!(reason.contains("authentication refused"), "{reason}");
    assert!(reason.contains("bound to pubkey"), "{reason}");
    // Permanent: no retry is scheduled.
    assert_eq!(failed.next_attempt_at, None);
}
