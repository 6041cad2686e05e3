//! The event flow end to end: two whole nodes on loopback, each beside its own real Nostr
//! relay (nostr-relay-builder, in process), over real BTP sessions. Node A follows B:
//! A's relay gets B's stored events, then B's new ones live; A restarts and resumes from
//! the last event it had. Peers that send forged or non-matching events are failed with
//! the reason; a peer's subscriptions are limited (NOTICE beyond); an event too large for
//! one packet is refused with a NOTICE, never cut. Discovery and channels come from the
//! in-memory doubles (their adapters have their own tests against the real things).

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use btp_nips_node::config::Settings;
use btp_nips_node::events::messages::{ok_packet, NostrMessage};
use btp_nips_node::events::EventFlow;
use btp_nips_node::lifecycle::{PeerRecord, PeerState};
use btp_nips_node::node::NodeBuilder;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Session;
use btp_nips_node::session::client::ClientAuth;
use btp_nips_node::session::connection::Link;
use btp_nips_node::session::service::send_btp_nips;
use btp_nips_node::session::{
    own_address, unix_now, BtpSession, IlpHandler, NodeService, PeerIdentity, SessionContext,
    SessionServer,
};
use btp_nips_node::wire::btp_nips::{self, MessageType};
use btp_nips_node::wire::ilp;
use nostr::{Event, EventBuilder, Filter, Keys, Timestamp as NostrTime};
use support::node::NodeThread;
use support::relays::{Impl, TestRelay};
use support::sessions::{announce_peer, session_settings};
use support::wait::poll;

const SOON: Duration = Duration::from_secs(20);

/// One node in its own thread and actix system, beside the relay at `relay_url`.
struct RunningNode {
    node: NodeThread,
    flow: Arc<EventFlow>,
    world: MemoryWorld,
}

impl RunningNode {
    fn start(name: &str, keys: Keys, db_url: String, relay_url: &str, max_subs: usize) -> Self {
        let yaml = format!(
            "node:\n  id: \"{name}\"\ndatabase:\n  url: \"{db_url}\"\n\
             btp_nips:\n  peer_connections:\n    reconnect_initial_delay_ms: 100\n\
             \x20   reconnect_max_delay_ms: 400\n    max_reconnect_attempts: 64\n\
             nostr:\n  allow_ws_loopback: true\n  query_timeout_ms: 3000\n\
             \x20 connect_timeout_ms: 1000\n  retry_interval_ms: 200\n\
             session:\n  listen: \"127.0.0.1:0\"\n  request_timeout_ms: 5000\n\
             events:\n  operator_relay: \"{relay_url}\"\n\
             \x20 max_subscriptions_per_peer: {max_subs}\n  stored_page_size: 7\n"
        );
        let settings = Settings::from_yaml_overrides(&yaml).unwrap();
        // Discovery and channels from the in-memory doubles; sessions and events are real.
        let world = MemoryWorld::new();
        let ports = world.ports();
        let node = NodeThread::start(move || {
            NodeBuilder::new(settings)
                .without_admin()
                .keys(keys)
                .resolver(ports.resolver)
                .channels(ports.channels)
        });
        let flow = node.event_flow().expect("an operator relay").clone();
        RunningNode { node, flow, world }
    }

    fn endpoint(&self) -> String {
        self.node.loopback_endpoint().expect("listening")
    }

    /// Tells this node where the peer with `peer_keys` listens, and follows it.
    async fn follow(&self, peer_keys: &Keys, endpoint: String) {
        let pubkey = peer_keys.public_key().to_hex();
        announce_peer(&self.world, &pubkey, endpoint);
        self.node.follow(&pubkey).await.unwrap();
    }

    fn kill(&mut self) {
        self.node.kill();
    }
}

async fn record_of(node: &RunningNode, peer: &Keys) -> Option<PeerRecord> {
    support::node::record_of(&node.node, &peer.public_key().to_hex()).await
}

/// Polls until `done` holds for `node`'s record of `peer`; panics after SOON.
async fn wait_record(
    node: &RunningNode,
    peer: &Keys,
    what: &str,
    done: impl Fn(&PeerRecord) -> bool,
) -> PeerRecord {
    let pubkey = peer.public_key().to_hex();
    support::node::wait_record(&node.node, &pubkey, SOON, what, done).await
}

/// A plain client of a relay, as the operator's tools would be.
async fn relay_client(url: &str) -> nostr_sdk::Client {
    let client = nostr_sdk::Client::default();
    client.add_relay(url).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client
}

/// The events of `author` the relay at `client` holds, oldest first.
async fn events_of(client: &nostr_sdk::Client, author: &Keys) -> Vec<Event> {
    let filter = Filter::new().author(author.public_key());
    let mut events: Vec<Event> = client
        .fetch_events(filter, Duration::from_secs(5))
        .await
        .unwrap()
        .into_iter()
        .collect();
    events.sort_by_key(|e| (e.created_at, e.id));
    events
}

/// Polls the relay at `client` until it holds `n` events of `author`; panics after SOON.
async fn wait_events(client: &nostr_sdk::Client, author: &Keys, n: usize) -> Vec<Event> {
    poll(SOON, Duration::from_millis(50), || async move {
        let events = events_of(client, author).await;
        if events.len() >= n {
            Ok(events)
        } else {
            Err(events.len())
        }
    })
    .await
    .unwrap_or_else(|had| panic!("timed out waiting for {n} events, the relay has {had}"))
}

fn note(keys: &Keys, text: &str, at: u64) -> Event {
    EventBuilder::text_note(text)
        .custom_created_at(NostrTime::from(at))
        .sign_with_keys(keys)
        .unwrap()
}

async fn publish(client: &nostr_sdk::Client, event: &Event) {
    let out = client.send_event(event).await.unwrap();
    assert!(
        !out.success.is_empty(),
        "the relay took {}: {:?}",
        event.id,
        out.failed
    );
}

#[actix_rt::test]
async fn a_follows_b_gets_stored_then_live_events_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
    let (relay_a, relay_b) = (
        TestRelay::start(Impl::Builder).await,
        TestRelay::start(Impl::Python).await,
    );
    let (keys_a, keys_b) = (Keys::generate(), Keys::generate());
    let (to_a, to_b) = (
        relay_client(&relay_a.url()).await,
        relay_client(&relay_b.url()).await,
    );

    // B's operator has written 10 notes before the nodes meet (more than a page of 7).
    let t0 = unix_now() - 1_000;
    for i in 0..10 {
        publish(&to_b, &note(&keys_b, &format!("stored {i}"), t0 + i)).await;
    }
    let b = RunningNode::start("beta", keys_b.clone(), db("b.db"), &relay_b.url(), 4);
    let mut a = RunningNode::start("alpha", keys_a.clone(), db("a.db"), &relay_a.url(), 4);
    a.follow(&keys_b, b.endpoint()).await;

    let got = wait_events(&to_a, &keys_b, 10).await;
    assert_eq!(
        got,
        events_of(&to_b, &keys_b).await,
        "A's relay holds B's stored events"
    );
    let record = wait_record(&a, &keys_b, "cursor at the newest stored event", |r| {
        r.state == PeerState::Connected
            && r.subscription_ids.len() == 1
            && r.event_cursor
                .as_ref()
                .is_some_and(|c| c.created_at == t0 + 9)
    })
    .await;
    assert_eq!(record.event_cursor.unwrap().ids, vec![got[9].id.to_hex()]);

    // Live: what B's operator writes now reaches A's relay.
    for i in 0..3 {
        publish(&to_b, &note(&keys_b, &format!("live {i}"), t0 + 100 + i)).await;
    }
    wait_events(&to_a, &keys_b, 13).await;
    assert_eq!(a.flow.stats.published.load(Ordering::Relaxed), 13);
    assert_eq!(a.flow.stats.refused.load(Ordering::Relaxed), 0);
    let cursor = wait_record(&a, &keys_b, "cursor at the newest live event", |r| {
        r.event_cursor
            .as_ref()
            .is_some_and(|c| c.created_at == t0 + 102)
    })
    .await
    .event_cursor
    .unwrap();
    let sent_before = b.flow.serve_stats().events_sent.load(Ordering::Relaxed);
    assert_eq!(sent_before, 13);

    // A stops; B's operator writes two more; A comes back on the same database.
    a.kill();
    for i in 0..2 {
        publish(
            &to_b,
            &note(&keys_b, &format!("while away {i}"), t0 + 200 + i),
        )
        .await;
    }
    let a = RunningNode::start("alpha", keys_a.clone(), db("a.db"), &relay_a.url(), 4);
    let restored = record_of(&a, &keys_b).await.expect("A remembers B");
    assert_eq!(
        restored.event_cursor,
        Some(cursor),
        "the cursor survived the restart"
    );
    // The new node's discovery double knows where B is again (the real resolver would
    // find B's announcement on the relays).
    a.follow(&keys_b, b.endpoint()).await;
    wait_record(&a, &keys_b, "subscribed again", |r| {
        r.state == PeerState::Connected && !r.subscription_ids.is_empty()
    })
    .await;
    wait_events(&to_a, &keys_b, 15).await;
    wait_record(&a, &keys_b, "cursor after the resume", |r| {
        r.event_cursor
            .as_ref()
            .is_some_and(|c| c.created_at == t0 + 201)
    })
    .await;
    // The resumed REQ asked from the cursor's second: B sent the cursor's own event (the
    // second is inclusive, so a same-second event is never missed) and the two new ones;
    // A published only the two new ones.
    let sent_after = b.flow.serve_stats().events_sent.load(Ordering::Relaxed);
    assert_eq!(
        sent_after - sent_before,
        3,
        "nothing older than the cursor was asked"
    );
    assert_eq!(a.flow.stats.published.load(Ordering::Relaxed), 2);
    assert_eq!(a.flow.stats.already_received.load(Ordering::Relaxed), 1);
}

/// A peer that answers a REQ by sending the events `make` builds for it.
struct Misbehaving {
    inner: NodeService,
    keys: Keys,
    make: fn(&Keys) -> Event,
    answers: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl IlpHandler for Misbehaving {
    async fn handle_prepare(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        prepare: ilp::Prepare,
    ) -> ilp::Packet {
        let Ok(packet) = btp_nips::Packet::decode(&prepare.data) else {
            return self.inner.handle_prepare(from, link, prepare).await;
        };
        if packet.message_type != MessageType::Req {
            return self.inner.handle_prepare(from, link, prepare).await;
        }
        let Ok(NostrMessage::Req { id, .. }) = NostrMessage::read(&packet) else {
            panic!("our node sends readable REQs");
        };
        let event = (self.make)(&self.keys);
        let (link, answers) = (link.clone(), self.answers.clone());
        tokio::spawn(async move {
            let message = NostrMessage::Event {
                id,
                event: Box::new(event),
            };
            let answer = send_btp_nips(&link, &message.to_packet("g.x", 1), SOON).await;
            answers.lock().unwrap().push(format!("{answer:?}"));
        });
        ilp::Packet::Fulfill(ilp::Fulfill::peer_control(Vec::new()))
    }
}

async fn misbehaving_peer(
    make: fn(&Keys) -> Event,
) -> (Keys, SessionServer, Arc<Mutex<Vec<String>>>) {
    let keys = Keys::generate();
    let address = own_address("bad", &keys.public_key());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(Misbehaving {
        inner: NodeService::new(address.clone(), "msat".into(), 0),
        keys: keys.clone(),
        make,
        answers: answers.clone(),
    });
    let ctx = SessionContext::with_handler(keys.clone(), address, session_settings(""), handler);
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    (keys, server, answers)
}

#[actix_rt::test]
async fn forged_and_non_matching_events_are_refused_and_fail_the_peer_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let relay_a = TestRelay::start(Impl::Builder).await;
    let keys_a = Keys::generate();
    let a = RunningNode::start(
        "alpha",
        keys_a,
        format!("sqlite://{}", dir.path().join("a.db").display()),
        &relay_a.url(),
        4,
    );
    let forged: fn(&Keys) -> Event = |keys| {
        let mut json = serde_json::to_value(note(keys, "original", unix_now())).unwrap();
        json["content"] = "altered after signing".into();
        serde_json::from_value(json).unwrap()
    };
    let stranger: fn(&Keys) -> Event = |_| note(&Keys::generate(), "not the peer's", unix_now());
    let cases = [(forged, "forged event"), (stranger, "was not asked for")];
    let to_a = relay_client(&relay_a.url()).await;
    for (make, reason) in cases {
        let (keys, server, answers) = misbehaving_peer(make).await;
        a.follow(
            &keys,
            format!("ws://127.0.0.1:{}/btp", server.local_addr.port()),
        )
        .await;
        let failed = wait_record(&a, &keys, "the peer failed", |r| {
            r.state == PeerState::Failed
        })
        .await;
        let why = failed.failure_reason.unwrap_or_default();
        assert!(
            why.contains(reason),
            "failure reason {why:?} names {reason:?}"
        );
        let answer = answers.lock().unwrap().first().cloned().unwrap_or_default();
        assert!(
            answer.contains("F00") && answer.contains(reason),
            "{answer}"
        );
        server.stop().await;
    }
    assert_eq!(a.flow.stats.published.load(Ordering::Relaxed), 0);
    assert_eq!(a.flow.stats.refused.load(Ordering::Relaxed), 2);
    let all: Vec<Event> = to_a
        .fetch_events(Filter::new(), Duration::from_secs(5))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(all.is_empty(), "nothing reached A's relay: {all:?}");
}

/// What a plain BTP-NIPs client received from the node it subscribed to.
#[derive(Default)]
struct Received {
    events: Vec<Event>,
    eose: Vec<String>,
    notices: Vec<String>,
}

/// Answers the node's EVENTs with OK, and records everything.
struct Recorder(Arc<Mutex<Received>>);

#[async_trait]
impl IlpHandler for Recorder {
    async fn handle_prepare(
        &self,
        _from: &PeerIdentity,
        _link: &Arc<Link>,
        prepare: ilp::Prepare,
    ) -> ilp::Packet {
        let packet = btp_nips::Packet::decode(&prepare.data).expect("the node sends BTP-NIPs");
        let mut answer = Vec::new();
        match NostrMessage::read(&packet).expect("the node sends readable messages") {
            NostrMessage::Event { event, .. } => {
                answer = ok_packet(&event.id, true, "", "g.x", 1).encode().unwrap();
                self.0.lock().unwrap().events.push(*event);
            }
            NostrMessage::Eose { id } => self.0.lock().unwrap().eose.push(id),
            NostrMessage::Notice { message } => self.0.lock().unwrap().notices.push(message),
            other => panic!("unexpected {other:?}"),
        }
        ilp::Packet::Fulfill(ilp::Fulfill::peer_control(answer))
    }
}

#[actix_rt::test]
async fn subscriptions_are_limited_with_a_notice_and_oversize_events_are_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let relay_b = TestRelay::start(Impl::Builder).await;
    let keys_b = Keys::generate();
    let to_b = relay_client(&relay_b.url()).await;
    let t0 = unix_now() - 100;
    let small = note(&keys_b, "fits", t0);
    // ~40 kB of content: more than one BTP-NIPs packet (32767 bytes) can carry.
    let large = note(&keys_b, &"x".repeat(40_000), t0 + 1);
    let after = note(&keys_b, "after the large one", t0 + 2);
    for e in [&small, &large, &after] {
        publish(&to_b, e).await;
    }
    let b = RunningNode::start(
        "beta",
        keys_b.clone(),
        format!("sqlite://{}", dir.path().join("b.db").display()),
        &relay_b.url(),
        2,
    );

    // A plain client of B's, authenticated with a key of its own.
    let keys_c = Keys::generate();
    let received = Arc::new(Mutex::new(Received::default()));
    let ctx = SessionContext::with_handler(
        keys_c.clone(),
        own_address("client", &keys_c.public_key()),
        session_settings(""),
        Arc::new(Recorder(received.clone())),
    );
    let session = BtpSession::connect(
        ctx,
        &b.endpoint(),
        ClientAuth::Nostr {
            server: keys_b.public_key(),
        },
    )
    .await
    .unwrap();
    let req = |id: &str| {
        NostrMessage::Req {
            id: id.into(),
            filters: vec![Filter::new().author(keys_b.public_key())],
        }
        .to_packet("g.x", 1)
    };
    assert_eq!(
        session.send(req("s1")).await.unwrap(),
        None,
        "first REQ accepted"
    );
    assert_eq!(
        session.send(req("s2")).await.unwrap(),
        None,
        "second REQ accepted"
    );
    let refused = session.send(req("s3")).await.unwrap().expect("a NOTICE");
    assert_eq!(refused.message_type, MessageType::Notice);
    let text = refused.payload.nostr.to_string();
    assert!(text.contains("events.max_subscriptions_per_peer"), "{text}");
    let peer = PeerIdentity::Nostr(keys_c.public_key());
    assert_eq!(b.flow.served_subscriptions(&peer), 2);

    // CLOSE frees a slot.
    let close = NostrMessage::Close { id: "s2".into() }.to_packet("g.x", 1);
    assert_eq!(session.send(close).await.unwrap(), None);
    assert_eq!(
        session.send(req("s3")).await.unwrap(),
        None,
        "room again after CLOSE"
    );

    // Each open subscription got the two events that fit, in order, a NOTICE naming the
    // large one, and EOSE; nothing of the large one was cut into a packet.
    let started = Instant::now();
    loop {
        let done = {
            let r = received.lock().unwrap();
            r.eose.iter().filter(|id| id.as_str() != "s2").count() >= 2
        };
        if done {
            break;
        }
        assert!(started.elapsed() < SOON, "EOSE for s1 and s3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = received.lock().unwrap();
    assert!(
        !r.events.iter().any(|e| e.id == large.id),
        "the large event never travels"
    );
    let per_sub = r.events.iter().filter(|e| e.id == small.id).count();
    assert!(per_sub >= 2, "s1 and s3 each got the small event");
    let large_id = large.id.to_hex();
    assert!(
        r.notices
            .iter()
            .any(|n| n.contains(&large_id) && n.contains("never cut")),
        "a NOTICE names the large event: {:?}",
        r.notices
    );
    assert!(b.flow.serve_stats().too_large.load(Ordering::Relaxed) >= 2);
}

/// Stored events are read in chunks smaller than a page (the next one read while the
/// current one goes out, a window of EVENTs in flight): across all of them, the asker still
/// gets every stored event exactly once, oldest first (ascending `created_at`, then id),
/// and EOSE only after the last.
#[actix_rt::test]
async fn stored_events_go_out_oldest_first_exactly_once_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let relay_b = TestRelay::start(Impl::Builder).await;
    let keys_b = Keys::generate();
    let to_b = relay_client(&relay_b.url()).await;
    let t0 = unix_now() - 1_000;
    // 23 events (more than three pages of 7), four of them sharing one second.
    let mut stored: Vec<Event> = (0..19)
        .map(|i| note(&keys_b, &format!("single {i}"), t0 + 2 * i))
        .collect();
    stored.extend((0..4).map(|i| note(&keys_b, &format!("crowd {i}"), t0 + 11)));
    for e in &stored {
        publish(&to_b, e).await;
    }
    stored.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let b = RunningNode::start(
        "beta",
        keys_b.clone(),
        format!("sqlite://{}", dir.path().join("b.db").display()),
        &relay_b.url(),
        2,
    );

    let keys_c = Keys::generate();
    let received = Arc::new(Mutex::new(Received::default()));
    let ctx = SessionContext::with_handler(
        keys_c.clone(),
        own_address("client", &keys_c.public_key()),
        session_settings(""),
        Arc::new(Recorder(received.clone())),
    );
    let session = BtpSession::connect(
        ctx,
        &b.endpoint(),
        ClientAuth::Nostr {
            server: keys_b.public_key(),
        },
    )
    .await
    .unwrap();
    let req = NostrMessage::Req {
        id: "s1".into(),
        filters: vec![Filter::new().author(keys_b.public_key())],
    }
    .to_packet("g.x", 1);
    assert_eq!(session.send(req).await.unwrap(), None, "REQ accepted");

    let started = Instant::now();
    let events_at_eose = loop {
        {
            let r = received.lock().unwrap();
            if !r.eose.is_empty() {
                break r.events.len();
            }
        }
        assert!(started.elapsed() < SOON, "EOSE for s1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let r = received.lock().unwrap();
    assert_eq!(
        events_at_eose,
        stored.len(),
        "EOSE after every stored event"
    );
    let got: Vec<_> = r.events.iter().map(|e| e.id).collect();
    let expected: Vec<_> = stored.iter().map(|e| e.id).collect();
    assert_eq!(got, expected, "each once, oldest first");
    assert!(r.notices.is_empty(), "{:?}", r.notices);
}
