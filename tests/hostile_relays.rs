//! Hostile relays and hostile announcements, against real relays on 127.0.0.1: an honest
//! one (nostr-relay-builder's in-process relay) and a hostile one written here, a WebSocket
//! server that answers each REQ with whatever the test scripts — events that do not match
//! the filter, forgeries, an endless stream without EOSE. The node's lookups and its follow
//! subscription stay bounded, ignore what does not match, and still take what the honest
//! relay has. Announced endpoints on non-public addresses are refused, class by class,
//! unless `nostr.allow_ws_loopback`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use btp_nips_node::discovery::announcement::{AnnouncementFields, HostClass};
use btp_nips_node::discovery::bounds::ReqBounds;
use btp_nips_node::discovery::follows::{FollowListMonitor, GetFollowState};
use btp_nips_node::discovery::relays::{RelaySet, RelayTuning};
use btp_nips_node::discovery::resolver::{system_clock, NostrResolver, ResolverSettings};
use btp_nips_node::lifecycle::Event as PeerEvent;
use btp_nips_node::ports::{Admission, Fault, PeerDirectory, Resolution};
use futures::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::{
    Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, Tag, TagKind, Timestamp as NostrTimestamp,
};
use support::relays::{Impl, TestRelay};
use support::wait::eventually;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

// ---- a hostile relay ----

/// What the hostile relay sends for one REQ.
#[derive(Clone)]
struct Answer {
    /// Sent in turn, `total` messages in all (cycling through them).
    events: Vec<Event>,
    total: usize,
    /// EOSE after this many of them; without it the REQ never ends.
    eose: Option<usize>,
}

type Script = Arc<dyn Fn(&serde_json::Value) -> Answer + Send + Sync>;

/// A WebSocket server speaking just enough NIP-01 to answer REQs as scripted; counts the
/// events it sent.
struct HostileRelay {
    port: u16,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileRelay {
    async fn start(script: impl Fn(&serde_json::Value) -> Answer + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                let sent = counter.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let (mut sink, mut source) = ws.split();
                    // One writer; each REQ's answer is produced into it with backpressure.
                    let (out, mut queue) = tokio::sync::mpsc::channel::<String>(256);
                    let writer = tokio::spawn(async move {
                        while let Some(text) = queue.recv().await {
                            if sink.send(Message::text(text)).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut producers = Vec::new();
                    while let Some(Ok(msg)) = source.next().await {
                        let Message::Text(text) = msg else { continue };
                        let Ok(serde_json::Value::Array(parts)) =
                            serde_json::from_str::<serde_json::Value>(text.as_str())
                        else {
                            continue;
                        };
                        if parts.first().and_then(|v| v.as_str()) != Some("REQ") {
                            continue;
                        }
                        let sub = parts[1].as_str().unwrap_or_default().to_string();
                        let answer = script(&parts[2]);
                        let out = out.clone();
                        let sent = sent.clone();
                        producers.push(tokio::spawn(async move {
                            let jsons: Vec<String> =
                                answer.events.iter().map(|e| e.as_json()).collect();
                            let sub_json = serde_json::to_string(&sub).unwrap();
                            for i in 0..answer.total {
                                if answer.eose == Some(i) {
                                    let _ = out.send(format!("[\"EOSE\",{sub_json}]")).await;
                                }
                                let Some(json) = jsons.get(i % jsons.len().max(1)) else {
                                    break;
                                };
                                let msg = format!("[\"EVENT\",{sub_json},{json}]");
                                if out.send(msg).await.is_err() {
                                    return;
                                }
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                            if answer.eose == Some(answer.total) {
                                let _ = out.send(format!("[\"EOSE\",{sub_json}]")).await;
                            }
                        }));
                    }
                    for p in producers {
                        p.abort();
                    }
                    writer.abort();
                });
            }
        });
        HostileRelay { port, sent, task }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- helpers ----

/// Relay timings for these tests: a query waits a minute for EOSE, far longer than any
/// test here waits for its lookup, so a lookup that ends did not end by timing out.
fn patient_tuning() -> RelayTuning {
    RelayTuning {
        query_timeout: Duration::from_secs(60),
        ..support::relays::tuning()
    }
}

async fn relay_set(urls: &[String], bounds: ReqBounds) -> RelaySet {
    let set = RelaySet::connect(Keys::generate(), urls, patient_tuning())
        .await
        .unwrap()
        .with_bounds(bounds);
    assert_eq!(
        set.wait_connected(Duration::from_secs(10)).await,
        urls.len()
    );
    set
}

fn resolver(relays: &RelaySet, allow_ws_loopback: bool) -> NostrResolver {
    NostrResolver::new(
        relays.clone(),
        ResolverSettings {
            allow_ws_loopback,
            found_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(300),
            max_authors_per_req: 100,
            batch_window: Duration::from_millis(5),
            parallel_reqs: 4,
        },
        system_clock(),
    )
}

fn fields(endpoint: &str) -> AnnouncementFields {
    AnnouncementFields {
        node_id: "peer".into(),
        endpoint: endpoint.into(),
        base_address: format!("0x{}", "5a".repeat(20)),
        supported_tokens: vec!["eth".into()],
        features: vec!["subscriptions".into()],
        metadata: None,
    }
}

fn now() -> NostrTimestamp {
    NostrTimestamp::now()
}

/// Publishes `events` to the honest relay; it must accept each.
async fn publish(relay: &TestRelay, events: &[Event]) {
    let set = relay_set(&[relay.url()], ReqBounds::default()).await;
    for event in events {
        let (accepted, refused) = set.publish(event).await;
        assert!(refused.is_empty(), "refused: {refused:?}");
        assert_eq!(accepted.len(), 1);
    }
    set.shutdown().await;
}

/// Events that do not answer an announcement REQ for `peer`: another author's
/// announcement, the peer's events of another kind and of another `d` tag.
fn non_matching(peer: &Keys, each: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(3 * each);
    for i in 0..each {
        let at = NostrTimestamp::from(now().as_secs() - i as u64);
        events.push(fields("wss://evil.example/btp").sign(&Keys::generate(), at));
        events.push(
            EventBuilder::text_note(format!("note {i}"))
                .custom_created_at(at)
                .sign_with_keys(peer)
                .unwrap(),
        );
        events.push(
            EventBuilder::new(Kind::Custom(32001), "")
                .tags([Tag::identifier(format!("other-{i}"))])
                .custom_created_at(at)
                .sign_with_keys(peer)
                .unwrap(),
        );
    }
    events
}

fn found_endpoint(resolution: &Resolution) -> Option<&str> {
    match resolution {
        Resolution::Found(a) => Some(&a.endpoint),
        _ => None,
    }
}

// ---- the resolver ----

/// A relay that answers the announcement REQ with 100,000 non-matching events and never
/// EOSEs is cut off at `nostr.max_events_per_req`; nothing it sent is kept, and the
/// honest relay's announcement still resolves — long before the query timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_relay_is_cut_off_and_the_honest_relay_still_resolves() {
    let peer = Keys::generate();
    let honest = TestRelay::start(Impl::Builder).await;
    publish(
        &honest,
        &[fields("wss://peer.example/btp").sign(&peer, now())],
    )
    .await;
    let flood = non_matching(&peer, 200);
    let hostile = HostileRelay::start(move |_| Answer {
        events: flood.clone(),
        total: 100_000,
        eose: None,
    })
    .await;
    let bounds = ReqBounds {
        max_events: 1_000,
        max_bytes: 64 * 1024 * 1024,
    };
    let relays = relay_set(&[honest.url(), hostile.url()], bounds).await;
    let strict = resolver(&relays, false);

    let answers = tokio::time::timeout(
        Duration::from_secs(30),
        strict.resolve_many(&[peer.public_key()]),
    )
    .await
    .expect("the lookup waited on the flooding relay");
    assert_eq!(
        found_endpoint(&answers[&peer.public_key()]),
        Some("wss://peer.example/btp"),
        "{answers:?}"
    );
    assert!(hostile.sent() > 1_000, "the relay did not flood");
    let stats = relays.stats();
    assert_eq!(stats.cut_by_events.load(Ordering::Relaxed), 1);
    let ignored = stats.ignored.total();
    assert_eq!(
        ignored, 1_000,
        "every event up to the bound was read and ignored"
    );
    for (why, n) in [
        ("author", &stats.ignored.author),
        ("kind", &stats.ignored.kind),
        ("d tag", &stats.ignored.tag),
    ] {
        assert!(n.load(Ordering::Relaxed) > 300, "{why}: {n:?}");
    }

    // The same query, answer by answer: the flooding relay's answer is cut and keeps
    // nothing it sent; the honest relay's is complete.
    let filter = nostr_relay_builder::prelude::Filter::new()
        .kind(Kind::Custom(32001))
        .author(peer.public_key())
        .identifier("ilp-node-info");
    let answers = tokio::time::timeout(Duration::from_secs(30), relays.query(filter))
        .await
        .expect("the query waited on the flooding relay");
    let bad = answers
        .iter()
        .find(|a| a.url.as_str().contains(&hostile.port.to_string()))
        .unwrap();
    assert!(!bad.answered);
    assert!(bad.events.is_empty(), "kept {} events", bad.events.len());
    assert_eq!(bad.ignored, 1_000);
    let problem = bad.problem.as_deref().unwrap();
    assert!(
        problem.contains("more than 1000 events (nostr.max_events_per_req)"),
        "{problem}"
    );
    let good = answers.iter().find(|a| a.answered).unwrap();
    assert_eq!(good.events.len(), 1);
    assert_eq!(stats.cut_by_events.load(Ordering::Relaxed), 2);
    relays.shutdown().await;
}

/// A relay that sends more bytes than `nostr.max_bytes_per_req` is cut off too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_sending_too_many_bytes_is_cut_off() {
    let peer = Keys::generate();
    // Large events (other author), 100 KB each: the byte bound ends the REQ first.
    let big: Vec<Event> = (0..4)
        .map(|i| {
            EventBuilder::new(Kind::Custom(32001), "x".repeat(100_000 + i))
                .tags([Tag::identifier("ilp-node-info")])
                .sign_with_keys(&Keys::generate())
                .unwrap()
        })
        .collect();
    let hostile = HostileRelay::start(move |_| Answer {
        events: big.clone(),
        total: 10_000,
        eose: None,
    })
    .await;
    let bounds = ReqBounds {
        max_events: 100_000,
        max_bytes: 1024 * 1024,
    };
    let relays = relay_set(&[hostile.url()], bounds).await;
    let answers = tokio::time::timeout(
        Duration::from_secs(30),
        resolver(&relays, false).resolve_many(&[peer.public_key()]),
    )
    .await
    .expect("the lookup waited on the flooding relay");
    match &answers[&peer.public_key()] {
        Resolution::Failed(Fault::Local(why)) => {
            assert!(why.contains("nostr.max_bytes_per_req"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let stats = relays.stats();
    assert_eq!(stats.cut_by_bytes.load(Ordering::Relaxed), 1);
    assert!(stats.ignored.author.load(Ordering::Relaxed) <= 11);
    relays.shutdown().await;
}

/// The peer's own announcement, re-dated and re-pointed by a relay (same id, so the
/// signature no longer matches), with the peer's events of another kind and `d` tag and
/// another author's announcement: all ignored. The relay cannot fail the peer with them:
/// with nothing else, the peer is not found; with the honest relay's copy, it is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_events_from_a_hostile_relay_are_ignored() {
    let peer = Keys::generate();
    let real =
        fields("wss://peer.example/btp").sign(&peer, NostrTimestamp::from(now().as_secs() - 100));
    let mut forged = real.clone();
    forged.created_at = now();
    forged.tags = forged
        .tags
        .iter()
        .map(|t| match t.as_slice()[0].as_str() {
            "ilp-endpoint" => {
                Tag::custom(TagKind::custom("ilp-endpoint"), ["wss://evil.example/btp"])
            }
            _ => t.clone(),
        })
        .collect();
    let mut others = non_matching(&peer, 1);
    others.push(forged.clone());
    // First the real announcement (the client has then checked its id once), then the
    // forgery under that id with everything else.
    let round = Arc::new(Mutex::new(0));
    let hostile = {
        let real = real.clone();
        HostileRelay::start(move |_| {
            let mut round = round.lock().unwrap();
            *round += 1;
            Answer {
                events: if *round == 1 {
                    vec![real.clone()]
                } else {
                    others.clone()
                },
                total: if *round == 1 { 1 } else { others.len() },
                eose: Some(if *round == 1 { 1 } else { others.len() }),
            }
        })
        .await
    };
    let relays = relay_set(&[hostile.url()], ReqBounds::default()).await;
    let strict = resolver(&relays, false);
    let first = strict.resolve_many(&[peer.public_key()]).await;
    assert_eq!(
        found_endpoint(&first[&peer.public_key()]),
        Some("wss://peer.example/btp")
    );
    strict.clear_cache();
    let second = strict.resolve_many(&[peer.public_key()]).await;
    assert_eq!(
        second[&peer.public_key()],
        Resolution::NotFound,
        "the hostile relay's events decided the lookup"
    );
    let stats = relays.stats();
    assert_eq!(stats.ignored.signature.load(Ordering::Relaxed), 1);
    assert_eq!(stats.ignored.author.load(Ordering::Relaxed), 1);
    assert_eq!(stats.ignored.kind.load(Ordering::Relaxed), 1);
    assert_eq!(stats.ignored.tag.load(Ordering::Relaxed), 1);
    relays.shutdown().await;

    // With an honest relay holding the real announcement, the real one is found.
    let honest = TestRelay::start(Impl::Builder).await;
    publish(&honest, &[real]).await;
    let relays = relay_set(&[honest.url(), hostile.url()], ReqBounds::default()).await;
    let answers = resolver(&relays, false)
        .resolve_many(&[peer.public_key()])
        .await;
    assert_eq!(
        found_endpoint(&answers[&peer.public_key()]),
        Some("wss://peer.example/btp")
    );
    relays.shutdown().await;
}

// ---- announced endpoints ----

/// Every class of non-public address is refused with its reason and counted; with
/// `nostr.allow_ws_loopback` each is accepted; public addresses and names always are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_endpoints_on_non_public_addresses_are_refused_by_class() {
    use HostClass::*;
    let refused: Vec<(&str, &str, HostClass)> = vec![
        ("wss://10.0.0.1/", "wss://10.0.0.1/", Private),
        (
            "wss://172.16.5.4:8443/btp",
            "wss://172.16.5.4:8443/btp",
            Private,
        ),
        ("wss://192.168.1.1/btp", "wss://192.168.1.1/btp", Private),
        ("wss://[fd12::1]/btp", "wss://[fd12::1]/btp", Private),
        (
            "wss://169.254.169.254/latest",
            "wss://169.254.169.254/latest",
            LinkLocal,
        ),
        ("wss://[fe80::1]/btp", "wss://[fe80::1]/btp", LinkLocal),
        (
            "wss://127.0.0.1:7000/btp",
            "wss://127.0.0.1:7000/btp",
            Loopback,
        ),
        ("wss://[::1]:7000/btp", "wss://[::1]:7000/btp", Loopback),
        (
            "wss://localhost:7000/btp",
            "wss://localhost:7000/btp",
            Loopback,
        ),
        (
            "wss://[::ffff:127.0.0.1]/btp",
            "wss://[::ffff:7f00:1]/btp",
            Loopback,
        ),
        // A decimal IPv4 literal is the same address once parsed.
        ("wss://2130706433/btp", "wss://127.0.0.1/btp", Loopback),
        ("wss://0.0.0.0/btp", "wss://0.0.0.0/btp", Unspecified),
        ("wss://100.64.0.1/btp", "wss://100.64.0.1/btp", Shared),
        (
            "wss://192.0.2.10/btp",
            "wss://192.0.2.10/btp",
            Documentation,
        ),
        (
            "wss://[2001:db8::1]/btp",
            "wss://[2001:db8::1]/btp",
            Documentation,
        ),
        ("wss://224.0.0.1/btp", "wss://224.0.0.1/btp", Reserved),
    ];
    let public = [
        "wss://93.184.216.34/btp",
        "wss://[2606:4700::1111]/btp",
        "wss://peer.example/btp",
    ];
    let honest = TestRelay::start(Impl::Builder).await;
    let mut events = Vec::new();
    let mut cases = Vec::new();
    for (endpoint, shown, class) in &refused {
        let keys = Keys::generate();
        events.push(fields(endpoint).sign(&keys, now()));
        cases.push((keys.public_key(), *endpoint, Some((*shown, *class))));
    }
    for endpoint in public {
        let keys = Keys::generate();
        events.push(fields(endpoint).sign(&keys, now()));
        cases.push((keys.public_key(), endpoint, None));
    }
    publish(&honest, &events).await;
    let relays = relay_set(&[honest.url()], ReqBounds::default()).await;
    let keys: Vec<PublicKey> = cases.iter().map(|c| c.0).collect();

    let strict = resolver(&relays, false);
    let answers = strict.resolve_many(&keys).await;
    for (pk, endpoint, refusal) in &cases {
        match (refusal, &answers[pk]) {
            (Some((shown, class)), Resolution::Failed(Fault::Permanent(why))) => {
                let expected = format!(
                    "endpoint {shown} is {}; set nostr.allow_ws_loopback to allow it",
                    class.describe()
                );
                assert!(why.ends_with(&expected), "{endpoint}: {why}");
            }
            (None, Resolution::Found(a)) => assert_eq!(a.endpoint, *endpoint),
            (_, other) => panic!("{endpoint}: {other:?}"),
        }
    }
    let counted = &strict.stats().endpoints_refused;
    for class in HostClass::ALL {
        let expected = refused.iter().filter(|r| r.2 == class).count() as u64;
        assert_eq!(
            counted.counter(class).load(Ordering::Relaxed),
            expected,
            "{class:?}"
        );
    }

    let allowing = resolver(&relays, true);
    let answers = allowing.resolve_many(&keys).await;
    for (pk, endpoint, _) in &cases {
        assert!(
            matches!(&answers[pk], Resolution::Found(_)),
            "{endpoint}: {:?}",
            answers[pk]
        );
    }
    assert_eq!(allowing.stats().endpoints_refused.total(), 0);
    relays.shutdown().await;
}

// ---- the follow list ----

/// What the follow monitor told the node.
#[derive(Default)]
struct Recorded {
    reconciled: Option<Vec<String>>,
    followed: HashSet<String>,
}

#[derive(Default)]
struct RecordingDirectory(Mutex<Recorded>);

#[async_trait]
impl PeerDirectory for RecordingDirectory {
    async fn admit(&self, _: &str) -> Admission {
        Admission::Admitted { known: false }
    }
    fn observe(&self, _: &str, _: PeerEvent) {}
    fn follow(&self, pk: &str) {
        self.0.lock().unwrap().followed.insert(pk.to_string());
    }
    fn unfollow(&self, pk: &str) {
        self.0.lock().unwrap().followed.remove(pk);
    }
    fn reconcile(&self, followed: Vec<String>) {
        let mut r = self.0.lock().unwrap();
        r.followed = followed.iter().cloned().collect();
        r.reconciled = Some(followed);
    }
}

fn contact_list(author: &Keys, created_at: u64, follows: &[PublicKey]) -> Event {
    EventBuilder::new(Kind::ContactList, "")
        .tags(follows.iter().map(|pk| Tag::public_key(*pk)))
        .custom_created_at(NostrTimestamp::from(created_at))
        .sign_with_keys(author)
        .unwrap()
}

/// A relay that answers the follow-list REQ with 100,000 events that are not the
/// operator's list (other authors' lists naming an attacker, the operator's notes) and
/// never EOSEs: cut off, nothing it sent is followed, and the startup reconcile happens
/// with the honest relay's list at once rather than after the initial wait.
#[actix_rt::test]
async fn a_flooding_relay_cannot_stall_or_poison_the_follow_list() {
    let operator = Keys::generate();
    let friend = Keys::generate().public_key();
    let attacker = Keys::generate().public_key();
    let honest = TestRelay::start(Impl::Builder).await;
    publish(
        &honest,
        &[contact_list(&operator, now().as_secs() - 100, &[friend])],
    )
    .await;
    let mut flood = Vec::new();
    for i in 0..200u64 {
        flood.push(contact_list(
            &Keys::generate(),
            now().as_secs() - i,
            &[attacker],
        ));
        flood.push(
            EventBuilder::text_note(format!("note {i}"))
                .sign_with_keys(&operator)
                .unwrap(),
        );
    }
    let hostile = HostileRelay::start(move |_| Answer {
        events: flood.clone(),
        total: 100_000,
        eose: None,
    })
    .await;
    let relays = relay_set(
        &[honest.url(), hostile.url()],
        ReqBounds {
            max_events: 1_000,
            max_bytes: 64 * 1024 * 1024,
        },
    )
    .await;
    let directory = Arc::new(RecordingDirectory::default());
    let monitor = FollowListMonitor::new(
        relays.clone(),
        operator.public_key(),
        None,
        directory.clone(),
        // The startup waits this long for a relay's EOSE: far longer than the test.
        Duration::from_secs(120),
    )
    .start();
    let reconciled = eventually(Duration::from_secs(30), "the startup reconcile", || {
        let directory = directory.clone();
        async move { directory.0.lock().unwrap().reconciled.clone() }
    })
    .await;
    assert_eq!(reconciled, vec![friend.to_hex()]);
    let state = monitor.send(GetFollowState).await.unwrap();
    assert!(state.reconciled);
    let stats = relays.stats();
    assert_eq!(stats.cut_by_events.load(Ordering::Relaxed), 1);
    assert_eq!(stats.ignored.total(), 1_000);
    assert!(stats.ignored.author.load(Ordering::Relaxed) >= 400);
    assert!(stats.ignored.kind.load(Ordering::Relaxed) >= 400);
    assert!(!directory
        .0
        .lock()
        .unwrap()
        .followed
        .contains(&attacker.to_hex()));
    relays.shutdown().await;
}

/// A relay that sends its EOSE and then streams events that are not the operator's list
/// without end is cut off too; the honest relay's newer list still arrives and is acted on.
#[actix_rt::test]
async fn a_relay_streaming_junk_after_eose_is_cut_and_new_lists_still_arrive() {
    let operator = Keys::generate();
    let (friend, later) = (Keys::generate().public_key(), Keys::generate().public_key());
    let attacker = Keys::generate().public_key();
    let honest = TestRelay::start(Impl::Builder).await;
    let t = now().as_secs() - 100;
    publish(&honest, &[contact_list(&operator, t, &[friend])]).await;
    // The operator's own list, replayed again and again: not newer, so ignored too.
    let mut junk = vec![contact_list(&operator, t, &[friend])];
    for _ in 0..100 {
        junk.push(contact_list(&Keys::generate(), t + 50, &[attacker]));
    }
    let hostile = HostileRelay::start(move |_| Answer {
        events: junk.clone(),
        total: 100_000,
        eose: Some(0),
    })
    .await;
    let relays = relay_set(
        &[honest.url(), hostile.url()],
        ReqBounds {
            max_events: 500,
            max_bytes: 64 * 1024 * 1024,
        },
    )
    .await;
    let directory = Arc::new(RecordingDirectory::default());
    let _monitor = FollowListMonitor::new(
        relays.clone(),
        operator.public_key(),
        None,
        directory.clone(),
        Duration::from_secs(120),
    )
    .start();
    eventually(Duration::from_secs(30), "the junk stream cut off", || {
        let cuts = relays.stats().cut_by_events.load(Ordering::Relaxed);
        async move { (cuts == 1).then_some(()) }
    })
    .await;
    let stats = relays.stats();
    assert_eq!(stats.ignored.total(), 500);
    assert!(stats.ignored.stale.load(Ordering::Relaxed) >= 1);
    assert!(stats.ignored.author.load(Ordering::Relaxed) >= 400);

    publish(
        &honest,
        &[contact_list(&operator, t + 10, &[friend, later])],
    )
    .await;
    eventually(Duration::from_secs(30), "the newer list acted on", || {
        let followed = directory.0.lock().unwrap().followed.clone();
        async move { followed.contains(&later.to_hex()).then_some(()) }
    })
    .await;
    let followed = directory.0.lock().unwrap().followed.clone();
    assert!(followed.contains(&friend.to_hex()));
    assert!(!followed.contains(&attacker.to_hex()));
    relays.shutdown().await;
}
