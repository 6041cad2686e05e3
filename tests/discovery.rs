//! Discovery against real relays on 127.0.0.1 — the same suite on two independent relay
//! implementations (nostr-relay-builder's in-process relay, and the Python `nostr-relay`):
//! announce → resolve, newest wins across relays, invalid announcements refused with their
//! reason, "not found" cached, a relay down is transient; and the follow list: follow,
//! unfollow, replaced list, older list ignored, reconcile after a restart, relay restart.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use btp_nips_node::discovery::announcement::{ilp_address_for, AnnouncementFields};
use btp_nips_node::discovery::announcer::{Announcer, GetPublished, SetAnnouncement};
use btp_nips_node::discovery::follows::{FollowListMonitor, GetFollowState};
use btp_nips_node::discovery::relays::RelaySet;
use btp_nips_node::discovery::resolver::{Clock, NostrResolver, ResolverSettings};
use btp_nips_node::lifecycle::{PeerIntent, PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::{AddressResolver, Fault, Resolution};
use btp_nips_node::storage::Database;
use nostr_relay_builder::prelude::{
    Event, EventBuilder, Keys, Kind, PublicKey, Tag, TagKind, Timestamp as NostrTimestamp,
};
use support::relays::{on_both_relays, tuning, Impl, TestRelay};
use support::wait::poll;

on_both_relays!(
    #[actix_rt::test]
    announce_then_resolve_round_trip,
    many_peers_are_resolved_in_batched_reqs,
    every_relay_answering_without_it_fails_the_peer_after_the_tries,
    newest_announcement_wins_across_relays,
    invalid_announcements_are_refused_with_their_reason,
    not_found_is_cached_and_expires,
    relay_down_is_transient_and_the_peer_is_not_failed,
    follow_unfollow_and_replaced_lists,
    an_older_list_arriving_later_is_ignored,
    reconcile_after_a_restart_with_the_list_changed_meanwhile,
    the_follow_subscription_survives_a_relay_restart,
);

async fn relay_set(relays: &[&TestRelay]) -> RelaySet {
    let urls: Vec<String> = relays.iter().map(|r| r.url()).collect();
    let set = RelaySet::connect(Keys::generate(), &urls, tuning())
        .await
        .unwrap();
    assert_eq!(
        set.wait_connected(Duration::from_secs(10)).await,
        urls.len()
    );
    set
}

/// A clock the test moves by hand (simulated time for the caches).
fn manual_clock() -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(1_800_000_000_000));
    let read = now.clone();
    (
        Arc::new(move || Timestamp(read.load(Ordering::SeqCst))),
        now,
    )
}

fn resolver(relays: &RelaySet, clock: Clock) -> NostrResolver {
    NostrResolver::new(
        relays.clone(),
        ResolverSettings {
            allow_ws_loopback: true,
            found_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(300),
            max_authors_per_req: 100,
            batch_window: Duration::from_millis(5),
            parallel_reqs: 4,
        },
        clock,
    )
}

fn fields(node_id: &str, port: u16) -> AnnouncementFields {
    AnnouncementFields {
        node_id: node_id.into(),
        endpoint: format!("ws://127.0.0.1:{port}/btp"),
        base_address: format!("0x{}", "5a".repeat(20)),
        supported_tokens: vec!["eth".into()],
        features: vec!["subscriptions".into()],
        metadata: None,
    }
}

/// Publishes `event` through its own client to exactly `relays`; every one must accept.
async fn publish(relays: &[&TestRelay], event: &Event) {
    let set = relay_set(relays).await;
    let (accepted, refused) = set.publish(event).await;
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert_eq!(accepted.len(), relays.len());
    set.shutdown().await;
}

/// An announcement by `keys` with `tag` set to `value` (the other tags as we write them).
fn announcement_with(keys: &Keys, created_at: u64, tag: &str, value: &str) -> Event {
    let base = fields("peer", 9).sign(keys, NostrTimestamp::from(created_at));
    let tags: Vec<Tag> = base
        .tags
        .iter()
        .map(|t| {
            if t.as_slice()[0] == tag {
                Tag::custom(TagKind::custom(tag), [value.to_string()])
            } else {
                t.clone()
            }
        })
        .collect();
    EventBuilder::new(base.kind, base.content.clone())
        .tags(tags)
        .custom_created_at(base.created_at)
        .sign_with_keys(keys)
        .unwrap()
}

/// Waits until the client has noticed that its relays are gone.
async fn wait_disconnected(set: &RelaySet) {
    poll(
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async {
            let relays = set.client().relays().await;
            relays
                .values()
                .all(|r| !r.is_connected())
                .then_some(())
                .ok_or(())
        },
    )
    .await
    .expect("the client still believes a stopped relay is connected");
}

fn now_secs() -> u64 {
    NostrTimestamp::now().as_secs()
}

async fn announce_then_resolve_round_trip(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let node_keys = Keys::generate();
    let node_relays = relay_set(&[&relay]).await;
    let announcer = Announcer::new(
        node_relays.clone(),
        node_keys.clone(),
        true,
        Some(fields("alice", 7001)),
        Duration::from_millis(200),
    )
    .start();
    let published = poll(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let published = announcer.send(GetPublished).await.unwrap();
            if published.as_ref().is_some_and(|p| !p.accepted.is_empty()) {
                Ok(published)
            } else {
                Err(published)
            }
        },
    )
    .await
    .unwrap_or_else(|last| last);
    let published = published.expect("published");
    assert_eq!(published.accepted.len(), 1, "{:?}", published.pending);

    let other = relay_set(&[&relay]).await;
    let (clock, now) = manual_clock();
    let r = resolver(&other, clock);
    let pk = node_keys.public_key().to_hex();
    let Resolution::Found(a) = r.resolve(&pk).await else {
        panic!("not found")
    };
    assert_eq!(
        a.ilp_address,
        ilp_address_for("alice", &node_keys.public_key())
    );
    assert_eq!(a.endpoint, "ws://127.0.0.1:7001/btp");
    assert_eq!(a.base_address, format!("0x{}", "5a".repeat(20)));

    // A change of fields is published as a newer version, which wins once the cache expires.
    announcer
        .send(SetAnnouncement(fields("alice", 7002)))
        .await
        .unwrap()
        .unwrap();
    let bad = announcer
        .send(SetAnnouncement(AnnouncementFields {
            base_address: "0xnope".into(),
            ..fields("alice", 7003)
        }))
        .await
        .unwrap();
    assert!(bad.unwrap_err().contains("0xnope"));
    let mut endpoint = String::new();
    for _ in 0..100 {
        now.fetch_add(3_600_001, Ordering::SeqCst);
        if let Resolution::Found(a) = r.resolve(&pk).await {
            endpoint = a.endpoint;
            if endpoint.ends_with(":7002/btp") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(endpoint, "ws://127.0.0.1:7002/btp");
    // Found answers are cached: within the hour the relay is not asked again.
    let reqs = r.stats().reqs.load(Ordering::SeqCst);
    assert!(matches!(r.resolve(&pk).await, Resolution::Found(_)));
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), reqs);
}

async fn many_peers_are_resolved_in_batched_reqs(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let set = relay_set(&[&relay]).await;
    let t = now_secs() - 10;
    let peers: Vec<Keys> = (0..300).map(|_| Keys::generate()).collect();
    let events: Vec<Event> = peers
        .iter()
        .map(|k| announcement_with(k, t, "version", "1.0.0"))
        .collect();
    for chunk in events.chunks(50) {
        let sent = futures::future::join_all(chunk.iter().map(|e| set.publish(e))).await;
        assert!(sent.iter().all(|(ok, _)| ok.len() == 1));
    }
    let (clock, _) = manual_clock();
    let r = resolver(&set, clock);
    // As 300 peer actors would: concurrent calls, gathered into batches of ≤ 100 authors.
    let hex: Vec<String> = peers.iter().map(|k| k.public_key().to_hex()).collect();
    let answers = futures::future::join_all(hex.iter().map(|pk| r.resolve(pk))).await;
    for (pk, answer) in hex.iter().zip(&answers) {
        match answer {
            Resolution::Found(a) => assert!(a.ilp_address.ends_with(&pk[..16])),
            other => panic!("{pk}: {other:?}"),
        }
    }
    assert_eq!(
        r.stats().reqs.load(Ordering::SeqCst),
        3,
        "300 authors, 100 per REQ"
    );
}

async fn every_relay_answering_without_it_fails_the_peer_after_the_tries(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let set = relay_set(&[&relay]).await;
    let (clock, _) = manual_clock();
    let r = resolver(&set, clock);
    let dir = tempfile::tempdir().unwrap();
    let settings = support::node::settings(&format!(
        "database: {{url: \"sqlite://{}\"}}\nbtp_nips: {{peer_connections: {{max_discovery_attempts: 2, discovery_retry_seconds: 1}}}}\n",
        dir.path().join("n.db").display()
    ));
    let world = MemoryWorld::new();
    let node = support::node::memory_node(settings, &world)
        .resolver(Arc::new(r.clone()))
        .start()
        .await
        .unwrap();
    let nobody = Keys::generate().public_key().to_hex();
    node.follow(&nobody).await.unwrap();
    let peers = support::node::wait_until(&node, Duration::from_secs(20), "failed", |p| {
        p.iter().any(|p| p.state == PeerState::Failed)
    })
    .await;
    assert_eq!(peers[0].failure_reason.as_deref(), Some("no announcement"));
    // The second try was answered from the "not found" cache: one REQ in all.
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats().cache_hits.load(Ordering::SeqCst), 1);
    node.shutdown().await.unwrap();
}

async fn newest_announcement_wins_across_relays(kind: Impl) {
    let a = TestRelay::start(kind).await;
    let b = TestRelay::start(kind).await;
    let keys = Keys::generate();
    let t = now_secs() - 100;
    // Relay a only has the old version, relay b only the new one.
    publish(
        &[&a],
        &announcement_with(&keys, t, "ilp-endpoint", "ws://127.0.0.1:1/old"),
    )
    .await;
    publish(
        &[&b],
        &announcement_with(&keys, t + 10, "ilp-endpoint", "ws://127.0.0.1:1/new"),
    )
    .await;
    // A tie in created_at (another author): the lowest id wins, whichever relay has it.
    let tie_keys = Keys::generate();
    let x = announcement_with(&tie_keys, t, "ilp-endpoint", "ws://127.0.0.1:1/x");
    let y = announcement_with(&tie_keys, t, "ilp-endpoint", "ws://127.0.0.1:1/y");
    publish(&[&a], &x).await;
    publish(&[&b], &y).await;
    let lowest = if x.id < y.id { "x" } else { "y" };

    let set = relay_set(&[&a, &b]).await;
    let (clock, _) = manual_clock();
    let r = resolver(&set, clock);
    let answers = r
        .resolve_many(&[keys.public_key(), tie_keys.public_key()])
        .await;
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), 1, "one batched REQ");
    match &answers[&keys.public_key()] {
        Resolution::Found(found) => assert_eq!(found.endpoint, "ws://127.0.0.1:1/new"),
        other => panic!("{other:?}"),
    }
    match &answers[&tie_keys.public_key()] {
        Resolution::Found(found) => {
            assert_eq!(found.endpoint, format!("ws://127.0.0.1:1/{lowest}"))
        }
        other => panic!("{other:?}"),
    }
}

async fn invalid_announcements_are_refused_with_their_reason(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let t = now_secs() - 10;
    let stranger = Keys::generate();
    let foreign = format!("g.btp-nips.peer.{}", &stranger.public_key().to_hex()[..16]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("ilp-address", foreign, "not bound to its author"),
        (
            "ilp-address",
            "g.btp-nips.9peer.0011223344556677".into(),
            "nodeId",
        ),
        ("ilp-address", "g..bad".into(), "ilp-address"),
        (
            "ilp-endpoint",
            "ws://192.0.2.7:80/btp".into(),
            "not loopback",
        ),
        (
            "ilp-endpoint",
            "http://127.0.0.1:80/btp".into(),
            "expected wss",
        ),
        ("base-address", "0xabc".into(), "base-address"),
        ("version", "2.1.0".into(), "not supported"),
        ("version", "latest".into(), "semantic version"),
    ];
    let mut keyed = Vec::new();
    for (tag, value, reason) in &cases {
        let keys = Keys::generate();
        publish(&[&relay], &announcement_with(&keys, t, tag, value)).await;
        keyed.push((keys.public_key(), *tag, reason.to_string()));
    }
    // A forged event (content changed after signing) is refused by the relay itself, so
    // it can never be found.
    let forger = Keys::generate();
    let mut forged = announcement_with(&forger, t, "version", "1.0.0");
    forged.content = "{\"subscribers\": 999}".into();
    let set = relay_set(&[&relay]).await;
    let (accepted, _) = set.publish(&forged).await;
    assert!(accepted.is_empty(), "the relay accepted a forged event");

    let (clock, _) = manual_clock();
    let r = resolver(&set, clock);
    let mut all: Vec<PublicKey> = keyed.iter().map(|(k, _, _)| *k).collect();
    all.push(forger.public_key());
    let answers = r.resolve_many(&all).await;
    for (pk, tag, reason) in &keyed {
        match &answers[pk] {
            Resolution::Failed(Fault::Permanent(why)) => {
                assert!(why.contains(reason.as_str()), "{tag}: {why}")
            }
            other => panic!("{tag}: {other:?}"),
        }
    }
    assert_eq!(answers[&forger.public_key()], Resolution::NotFound);
    // Not a pubkey at all.
    assert!(matches!(
        r.resolve("zz").await,
        Resolution::Failed(Fault::Permanent(why)) if why.contains("not a Nostr public key")
    ));
}

async fn not_found_is_cached_and_expires(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let set = relay_set(&[&relay]).await;
    let (clock, now) = manual_clock();
    let r = resolver(&set, clock);
    let keys = Keys::generate();
    let pk = keys.public_key().to_hex();
    assert_eq!(r.resolve(&pk).await, Resolution::NotFound);
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), 1);
    // The peer announces now; within five minutes the cached answer stands, unasked.
    publish(
        &[&relay],
        &announcement_with(&keys, now_secs(), "version", "1.0.0"),
    )
    .await;
    now.fetch_add(299_000, Ordering::SeqCst);
    assert_eq!(r.resolve(&pk).await, Resolution::NotFound);
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats().cache_hits.load(Ordering::SeqCst), 1);
    now.fetch_add(2_000, Ordering::SeqCst);
    assert!(matches!(r.resolve(&pk).await, Resolution::Found(_)));
    assert_eq!(r.stats().reqs.load(Ordering::SeqCst), 2);
}

async fn relay_down_is_transient_and_the_peer_is_not_failed(kind: Impl) {
    let mut relay = TestRelay::start(kind).await;
    let keys = Keys::generate();
    let pk = keys.public_key().to_hex();
    publish(
        &[&relay],
        &announcement_with(&keys, now_secs(), "version", "1.0.0"),
    )
    .await;
    let set = relay_set(&[&relay]).await;
    let (clock, _) = manual_clock();
    let r = resolver(&set, clock);
    relay.stop().await;
    wait_disconnected(&set).await;
    match r.resolve(&pk).await {
        Resolution::Failed(Fault::Local(why)) => {
            assert!(why.contains("no relay answered"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // The node: the followed peer waits in disconnected (retried), never failed, and its
    // attempts are not spent on the node's own relays…
    let dir = tempfile::tempdir().unwrap();
    let settings = support::node::settings(&format!(
        "database: {{url: \"sqlite://{}\"}}\nbtp_nips: {{peer_connections: {{reconnect_initial_delay_ms: 200, reconnect_max_delay_ms: 400, max_discovery_attempts: 1}}}}\n",
        dir.path().join("n.db").display()
    ));
    let world = MemoryWorld::new();
    let node = support::node::memory_node(settings, &world)
        .resolver(Arc::new(r.clone()))
        .start()
        .await
        .unwrap();
    node.follow(&pk).await.unwrap();
    let peers = support::node::wait_until(&node, Duration::from_secs(20), "disconnected", |p| {
        p.iter().any(|p| {
            p.state == PeerState::Disconnected
                && p.failure_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("no relay answered"))
        })
    })
    .await;
    assert_eq!(peers[0].reconnect_attempts, 0, "{:?}", peers[0]);
    assert!(peers[0]
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("waiting for this node: "));
    // …and once the relay is back it is discovered.
    relay.restart().await;
    support::node::wait_until(&node, Duration::from_secs(30), "resolved", |p| {
        p.iter().any(|p| p.ilp_address.is_some())
    })
    .await;
    let peers = support::node::wait_until(&node, Duration::from_secs(1), "any", |_| true).await;
    assert_ne!(peers[0].state, PeerState::Failed);
    node.shutdown().await.unwrap();
}

// ---- the follow list ----

fn contact_list(operator: &Keys, created_at: u64, follows: &[&Keys]) -> Event {
    let tags: Vec<Tag> = follows
        .iter()
        .map(|k| Tag::public_key(k.public_key()))
        .collect();
    EventBuilder::new(Kind::ContactList, "")
        .tags(tags)
        .custom_created_at(NostrTimestamp::from(created_at))
        .sign_with_keys(operator)
        .unwrap()
}

struct FollowNode {
    node: Node,
    monitor: Addr<FollowListMonitor>,
    relays: RelaySet,
}

async fn follow_node(db_url: &str, relays: &[&TestRelay], operator: &Keys) -> FollowNode {
    let settings = support::node::settings(&format!("database: {{url: \"{db_url}\"}}\n"));
    let db = Database::open(db_url, 2).unwrap();
    let world = MemoryWorld::new();
    let node = support::node::memory_node(settings, &world)
        .database(db)
        .start()
        .await
        .unwrap();
    let set = relay_set(relays).await;
    let monitor = FollowListMonitor::new(
        set.clone(),
        operator.public_key(),
        None,
        node.directory(),
        Duration::from_secs(5),
    )
    .start();
    FollowNode {
        node,
        monitor,
        relays: set,
    }
}

fn record<'a>(peers: &'a [PeerRecord], keys: &Keys) -> Option<&'a PeerRecord> {
    let hex = keys.public_key().to_hex();
    peers.iter().find(|p| p.nostr_pubkey == hex)
}

fn following(peers: &[PeerRecord], keys: &Keys) -> bool {
    record(peers, keys).is_some_and(|r| r.followed && r.desired == PeerIntent::Connect)
}

fn unfollowed(peers: &[PeerRecord], keys: &Keys) -> bool {
    record(peers, keys).is_some_and(|r| {
        !r.followed
            && r.desired == PeerIntent::Disconnect
            && r.failure_reason.as_deref() == Some("unfollowed")
    })
}

async fn follow_unfollow_and_replaced_lists(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let operator = Keys::generate();
    let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    let n = follow_node(&url, &[&relay], &operator).await;
    let t = now_secs() - 1000;
    publish(&[&relay], &contact_list(&operator, t, &[&a, &b])).await;
    support::node::wait_until(&n.node, Duration::from_secs(20), "a and b followed", |p| {
        following(p, &a) && following(p, &b)
    })
    .await;
    // The list is replaced: a is unfollowed (deliberately disconnected), c followed.
    publish(&[&relay], &contact_list(&operator, t + 10, &[&b, &c])).await;
    let peers = support::node::wait_until(&n.node, Duration::from_secs(20), "a out, c in", |p| {
        unfollowed(p, &a) && following(p, &c)
    })
    .await;
    assert!(following(&peers, &b));
    // An empty list unfollows everyone.
    publish(&[&relay], &contact_list(&operator, t + 20, &[])).await;
    support::node::wait_until(&n.node, Duration::from_secs(20), "all unfollowed", |p| {
        unfollowed(p, &a) && unfollowed(p, &b) && unfollowed(p, &c)
    })
    .await;
    let state = n.monitor.send(GetFollowState).await.unwrap();
    assert_eq!(state.list.map(|(_, at)| at), Some(t + 20));
    n.node.shutdown().await.unwrap();
}

async fn an_older_list_arriving_later_is_ignored(kind: Impl) {
    let one = TestRelay::start(kind).await;
    let two = TestRelay::start(kind).await;
    let operator = Keys::generate();
    let (a, b) = (Keys::generate(), Keys::generate());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("o.db").display());
    let n = follow_node(&url, &[&one, &two], &operator).await;
    let t = now_secs() - 1000;
    publish(&[&one], &contact_list(&operator, t + 10, &[&a])).await;
    support::node::wait_until(&n.node, Duration::from_secs(20), "a followed", |p| {
        following(p, &a)
    })
    .await;
    // Relay two never saw the newer list, so it takes (and forwards live) an older one.
    publish(&[&two], &contact_list(&operator, t, &[&b])).await;
    let ignored = poll(
        Duration::from_secs(5),
        Duration::from_millis(25),
        || async {
            let ignored = n.monitor.send(GetFollowState).await.unwrap().ignored_older;
            if ignored > 0 {
                Ok(ignored)
            } else {
                Err(ignored)
            }
        },
    )
    .await
    .unwrap_or_else(|last| last);
    assert_eq!(ignored, 1, "the older list never reached the monitor");
    let peers = support::node::wait_until(&n.node, Duration::from_secs(1), "any", |_| true).await;
    assert!(following(&peers, &a));
    assert!(
        record(&peers, &b).is_none(),
        "b was followed from an older list"
    );
    n.node.shutdown().await.unwrap();
}

async fn reconcile_after_a_restart_with_the_list_changed_meanwhile(kind: Impl) {
    let relay = TestRelay::start(kind).await;
    let operator = Keys::generate();
    let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let t = now_secs() - 1000;
    publish(&[&relay], &contact_list(&operator, t, &[&a, &b])).await;
    {
        let n = follow_node(&url, &[&relay], &operator).await;
        support::node::wait_until(&n.node, Duration::from_secs(20), "a, b followed", |p| {
            following(p, &a) && following(p, &b)
        })
        .await;
        // The monitor's relays go first, so nothing of the old node acts on the new list.
        n.relays.shutdown().await;
        n.node.shutdown().await.unwrap();
    }
    // While the node is down the operator unfollows a and follows c.
    publish(&[&relay], &contact_list(&operator, t + 10, &[&b, &c])).await;
    let stored = Database::open(&url, 1).unwrap().load_all().unwrap();
    assert!(following(&stored, &a) && following(&stored, &b));

    let n = follow_node(&url, &[&relay], &operator).await;
    let peers = support::node::wait_until(&n.node, Duration::from_secs(20), "reconciled", |p| {
        unfollowed(p, &a) && following(p, &b) && following(p, &c)
    })
    .await;
    assert_eq!(peers.len(), 3);
    assert!(n.monitor.send(GetFollowState).await.unwrap().reconciled);
    n.node.shutdown().await.unwrap();
    // The decision is durable: a stays disconnected on the next start.
    let stored = Database::open(&url, 1).unwrap().load_all().unwrap();
    assert!(unfollowed(&stored, &a), "{stored:?}");
    assert!(following(&stored, &c));
}

async fn the_follow_subscription_survives_a_relay_restart(kind: Impl) {
    let mut relay = TestRelay::start(kind).await;
    let operator = Keys::generate();
    let (a, d) = (Keys::generate(), Keys::generate());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let t = now_secs() - 1000;
    publish(&[&relay], &contact_list(&operator, t, &[&a])).await;
    let n = follow_node(&url, &[&relay], &operator).await;
    support::node::wait_until(&n.node, Duration::from_secs(20), "a followed", |p| {
        following(p, &a)
    })
    .await;
    relay.restart().await;
    // Wait until the monitor's client is back on the restarted relay.
    assert_eq!(n.relays.wait_connected(Duration::from_secs(20)).await, 1);
    publish(&[&relay], &contact_list(&operator, t + 10, &[&a, &d])).await;
    support::node::wait_until(
        &n.node,
        Duration::from_secs(20),
        "d followed after the restart",
        |p| following(p, &a) && following(p, &d),
    )
    .await;
    n.node.shutdown().await.unwrap();
}
