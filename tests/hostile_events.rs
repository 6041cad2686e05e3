//! Hostile input through the event flow: whole nodes on loopback beside real Nostr relays
//! (nostr-relay-builder, in process), over real BTP sessions, with the attack sent through
//! them by a plain session of the attacker's.
//!
//! - A stranger's REQs (600 filters, then as many as it may hold) never take the operator's
//!   relay from a followed peer: its REQ still reaches EOSE and gets live events.
//! - A followed peer's events created far in the future (`2^63`, now + 1 day) are refused
//!   with the reason and move no cursor; its next normal events still land.
//! - 50,000 events of one second leave the cursor's id set at its bound, stored too, and
//!   the flow goes on.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use btp_nips_node::config::Settings;
use btp_nips_node::events::messages::{ok_packet, read_ok, NostrMessage};
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
use futures::StreamExt;
use nostr::{Event, EventBuilder, Filter, Keys, Timestamp as NostrTime};
use nostr_relay_builder::prelude::{LocalRelay, RateLimit, RelayBuilder};
use support::node::NodeThread;
use support::relays::{Impl, TestRelay};
use support::sessions::{announce_peer, session_settings};
use support::wait::{eventually, poll};

const SOON: Duration = Duration::from_secs(30);

/// One node in its own thread and actix system, beside the relay at `relay_url`, with
/// `events` (YAML lines of the `events` section, each indented two spaces) added.
struct RunningNode {
    node: NodeThread,
    flow: Arc<EventFlow>,
    world: MemoryWorld,
}

impl RunningNode {
    fn start(name: &str, keys: Keys, db_url: String, relay_url: &str, events: &str) -> Self {
        let yaml = format!(
            "node:\n  id: \"{name}\"\ndatabase:\n  url: \"{db_url}\"\n\
             btp_nips:\n  peer_connections:\n    reconnect_initial_delay_ms: 100\n\
             \x20   reconnect_max_delay_ms: 400\n    max_reconnect_attempts: 64\n\
             nostr:\n  allow_ws_loopback: true\n  query_timeout_ms: 5000\n\
             \x20 connect_timeout_ms: 1000\n  retry_interval_ms: 200\n\
             session:\n  listen: \"127.0.0.1:0\"\n  request_timeout_ms: 10000\n\
             events:\n  operator_relay: \"{relay_url}\"\n{events}"
        );
        let settings = Settings::from_yaml_overrides(&yaml).unwrap();
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

    async fn wait_record(
        &self,
        peer: &Keys,
        what: &str,
        done: impl Fn(&PeerRecord) -> bool,
    ) -> PeerRecord {
        let pubkey = peer.public_key().to_hex();
        support::node::wait_record(&self.node, &pubkey, SOON, what, done).await
    }
}

/// A plain client of a relay, as the operator's tools would be.
async fn relay_client(url: &str) -> nostr_sdk::Client {
    let client = nostr_sdk::Client::default();
    client.add_relay(url).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client
}

/// The events of `author` the relay at `client` holds.
async fn events_of(client: &nostr_sdk::Client, author: &Keys) -> Vec<Event> {
    let filter = Filter::new().author(author.public_key());
    client
        .fetch_events(filter, Duration::from_secs(10))
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Polls the relay at `client` until it holds every one of `wanted`; panics after SOON.
async fn wait_for(client: &nostr_sdk::Client, author: &Keys, wanted: &[&Event]) {
    poll(SOON, Duration::from_millis(50), || async move {
        let held = events_of(client, author).await;
        let missing = wanted
            .iter()
            .filter(|w| !held.iter().any(|e| e.id == w.id))
            .count();
        if missing == 0 {
            Ok(())
        } else {
            Err(missing)
        }
    })
    .await
    .unwrap_or_else(|missing| panic!("timed out: {missing} events not on the relay"));
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

/// What a plain BTP-NIPs client received from the node it sent REQs to.
#[derive(Default)]
struct Received {
    events: usize,
    eose: Vec<String>,
    notices: Vec<String>,
}

/// Answers the node's EVENTs with OK, and records what came.
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
                self.0.lock().unwrap().events += 1;
            }
            NostrMessage::Eose { id } => self.0.lock().unwrap().eose.push(id),
            NostrMessage::Notice { message } => self.0.lock().unwrap().notices.push(message),
            other => panic!("unexpected {other:?}"),
        }
        ilp::Packet::Fulfill(ilp::Fulfill::peer_control(answer))
    }
}

/// A session of a key nobody follows, to `node` (whose key is `server`).
async fn stranger_session(node: &RunningNode, server: &Keys) -> (BtpSession, Arc<Mutex<Received>>) {
    let keys = Keys::generate();
    let received = Arc::new(Mutex::new(Received::default()));
    let ctx = SessionContext::with_handler(
        keys.clone(),
        own_address("stranger", &keys.public_key()),
        session_settings(""),
        Arc::new(Recorder(received.clone())),
    );
    let session = BtpSession::connect(
        ctx,
        &node.endpoint(),
        ClientAuth::Nostr {
            server: server.public_key(),
        },
    )
    .await
    .unwrap();
    (session, received)
}

/// A REQ `id` of `n` empty filters (each matches everything).
fn wide_req(id: &str, n: usize) -> btp_nips::Packet {
    NostrMessage::Req {
        id: id.into(),
        filters: vec![Filter::new(); n],
    }
    .to_packet("g.x", 1)
}

/// The NOTICE a REQ was answered with, or `None` when it was accepted.
async fn req_answer(session: &BtpSession, req: btp_nips::Packet) -> Option<String> {
    let answer = session.send(req).await.unwrap()?;
    assert_eq!(answer.message_type, MessageType::Notice);
    Some(answer.payload.nostr.to_string())
}

#[actix_rt::test]
async fn a_strangers_600_filter_req_never_takes_the_operator_relay_from_a_followed_peer() {
    let dir = tempfile::tempdir().unwrap();
    let db = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
    // B's relay refuses REQs beyond 601 on one connection (relays cap them; 601 makes the
    // 600 filters of one REQ exactly enough to leave no room for anyone else).
    let relay_b = LocalRelay::new(
        RelayBuilder::default()
            .addr("127.0.0.1".parse().unwrap())
            .rate_limit(RateLimit {
                max_reqs: 601,
                notes_per_minute: 1_000_000,
            }),
    );
    relay_b.run().await.unwrap();
    let url_b = relay_b.url().await.to_string();
    let relay_f = TestRelay::start(Impl::Builder).await;
    let (keys_b, keys_f) = (Keys::generate(), Keys::generate());
    let (to_b, to_f) = (
        relay_client(&url_b).await,
        relay_client(&relay_f.url()).await,
    );
    let t0 = unix_now() - 1_000;
    let stored: Vec<Event> = (0..3)
        .map(|i| note(&keys_b, &format!("stored {i}"), t0 + i))
        .collect();
    for e in &stored {
        publish(&to_b, e).await;
    }
    // Strangers together may hold 40 live REQs here; followed peers 8 more.
    let b = RunningNode::start(
        "beta",
        keys_b.clone(),
        db("b.db"),
        &url_b,
        "  max_live_reqs: 48\n  live_reqs_reserved_for_followed: 8\n",
    );
    let f = RunningNode::start("phi", keys_f.clone(), db("f.db"), &relay_f.url(), "");
    // B follows F: what tells B's flow that F is followed.
    b.follow(&keys_f, f.endpoint()).await;
    b.wait_record(&keys_f, "B subscribed to F", |r| {
        r.state == PeerState::Connected && !r.subscription_ids.is_empty()
    })
    .await;

    // The attack: one stranger's 600-filter REQ, then as much as it and another may hold.
    let (s1, got1) = stranger_session(&b, &keys_b).await;
    let wide = req_answer(&s1, wide_req("wide", 600)).await;
    // Whatever the node made of it (refused, or served to EOSE), it is done with it.
    eventually(SOON, "the 600-filter REQ answered or served", || {
        let done = wide.is_some() || !got1.lock().unwrap().eose.is_empty();
        async move { done.then_some(()) }
    })
    .await;
    let s1_a = req_answer(&s1, wide_req("a", 16)).await;
    let s1_b = req_answer(&s1, wide_req("b", 16)).await;
    let s1_c = req_answer(&s1, wide_req("c", 1)).await;
    let (s2, _got2) = stranger_session(&b, &keys_b).await;
    let s2_a = req_answer(&s2, wide_req("a", 16)).await;
    let s2_b = req_answer(&s2, wide_req("b", 8)).await;

    // F follows B: its REQ reaches EOSE on B (B's stored events land on F's relay) and
    // then gets what B's operator writes live.
    f.follow(&keys_b, b.endpoint()).await;
    let wanted: Vec<&Event> = stored.iter().collect();
    wait_for(&to_f, &keys_b, &wanted).await;
    eventually(SOON, "F received EOSE from B", || {
        let eose = f.flow.stats.eose.load(Ordering::Relaxed);
        async move { (eose >= 1).then_some(()) }
    })
    .await;
    let live = note(&keys_b, "live", unix_now());
    publish(&to_b, &live).await;
    wait_for(&to_f, &keys_b, &[&live]).await;
    let record = f
        .wait_record(&keys_b, "F's cursor at the live event", |r| {
            r.event_cursor
                .as_ref()
                .is_some_and(|c| c.created_at == live.created_at.as_secs())
        })
        .await;
    assert_eq!(record.state, PeerState::Connected);

    // Each refusal names its setting and is counted.
    let named = |answer: &Option<String>, setting: &str| {
        let text = answer.clone().unwrap_or_default();
        assert!(text.contains(setting), "{text:?} names {setting}");
    };
    named(&wide, "events.max_filters_per_req");
    assert_eq!(
        (&s1_a, &s1_b),
        (&None, &None),
        "16 filters twice are served"
    );
    named(&s1_c, "events.max_live_reqs_per_peer");
    named(&s2_a, "events.live_reqs_reserved_for_followed");
    assert_eq!(s2_b, None, "room in the strangers' share");
    let stats = b.flow.serve_stats();
    assert_eq!(stats.refused_filters_per_req.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused_live_reqs_per_peer.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused_live_reqs_strangers.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused_live_reqs.load(Ordering::Relaxed), 0);
    assert_eq!(b.flow.served_live_reqs(), 16 + 16 + 8 + 1);
    relay_b.shutdown();
}

/// What a sending peer heard back for each event: the OK (accepted, message), or what
/// came instead.
type Answers = Arc<Mutex<Vec<Result<(bool, String), String>>>>;

/// A followed peer that answers the node's REQ with `events` (signed beforehand), one
/// after the other (up to `in_flight` at once), and records the answers. The events from
/// `split` on wait for `gate`.
struct Sender {
    inner: NodeService,
    events: Arc<Vec<Event>>,
    split: usize,
    gate: Arc<tokio::sync::Notify>,
    in_flight: usize,
    answers: Answers,
}

#[async_trait]
impl IlpHandler for Sender {
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
        let (events, split, gate) = (self.events.clone(), self.split, self.gate.clone());
        let (link, answers, in_flight) = (link.clone(), self.answers.clone(), self.in_flight);
        tokio::spawn(async move {
            for part in [0..split, split..events.len()] {
                if part.start == split && !part.is_empty() {
                    gate.notified().await;
                }
                let sends = futures::stream::iter(part).map(|i| {
                    let message = NostrMessage::Event {
                        id: id.clone(),
                        event: Box::new(events[i].clone()),
                    };
                    let link = link.clone();
                    async move {
                        match send_btp_nips(&link, &message.to_packet("g.x", 1), SOON).await {
                            Ok(Some(answer)) => read_ok(&answer).map_err(|e| e.to_string()),
                            other => Err(format!("{other:?}")),
                        }
                    }
                });
                let mut sends = sends.buffered(in_flight);
                while let Some(answer) = sends.next().await {
                    answers.lock().unwrap().push(answer);
                }
            }
        });
        ilp::Packet::Fulfill(ilp::Fulfill::peer_control(Vec::new()))
    }
}

/// A peer of key `keys` that sends `events` when asked.
async fn sending_peer(
    keys: &Keys,
    events: Vec<Event>,
    in_flight: usize,
) -> (SessionServer, Answers) {
    let split = events.len();
    let (server, answers, _) = gated_peer(keys, events, split, in_flight).await;
    (server, answers)
}

/// [`sending_peer`], with the events from `split` on held until the gate is opened.
async fn gated_peer(
    keys: &Keys,
    events: Vec<Event>,
    split: usize,
    in_flight: usize,
) -> (SessionServer, Answers, Arc<tokio::sync::Notify>) {
    let keys = keys.clone();
    let address = own_address("sender", &keys.public_key());
    let answers = Answers::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let handler = Arc::new(Sender {
        inner: NodeService::new(address.clone(), "msat".into(), 0),
        events: Arc::new(events),
        split,
        gate: gate.clone(),
        in_flight,
        answers: answers.clone(),
    });
    let ctx = SessionContext::with_handler(keys.clone(), address, session_settings(""), handler);
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    (server, answers, gate)
}

fn endpoint_of(server: &SessionServer) -> String {
    format!("ws://127.0.0.1:{}/btp", server.local_addr.port())
}

/// The `created_at` of the normal events the future-dated test sends after the others
/// (in the past, so no clock can call them future).
fn past() -> u64 {
    unix_now() - 100
}

#[actix_rt::test]
async fn events_from_far_in_the_future_are_refused_and_the_peers_next_events_still_land() {
    let dir = tempfile::tempdir().unwrap();
    let relay_a = TestRelay::start(Impl::Builder).await;
    let to_a = relay_client(&relay_a.url()).await;
    let a = RunningNode::start(
        "alpha",
        Keys::generate(),
        format!("sqlite://{}", dir.path().join("a.db").display()),
        &relay_a.url(),
        "",
    );
    let keys = Keys::generate();
    let events = vec![
        note(&keys, "at 2^63", 1 << 63),
        note(&keys, "tomorrow", unix_now() + 86_400),
        note(&keys, "normal 1", past()),
        note(&keys, "normal 2", past() + 1),
    ];
    let (server, answers) = sending_peer(&keys, events, 1).await;
    a.follow(&keys, endpoint_of(&server)).await;
    eventually(SOON, "four answers", || {
        let n = answers.lock().unwrap().len();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let answers = answers.lock().unwrap().clone();
    for refused in &answers[..2] {
        let (accepted, why) = refused.clone().expect("answered with OK");
        assert!(!accepted, "a future-dated event is refused: {why}");
        assert!(
            why.contains("in the future") || why.contains("ahead of this node's clock"),
            "{why}"
        );
        assert!(why.contains("events.max_future_seconds"), "{why}");
    }
    for landed in &answers[2..] {
        assert_eq!(landed.clone().map(|(ok, _)| ok), Ok(true), "{landed:?}");
    }
    let held = events_of(&to_a, &keys).await;
    let mut texts: Vec<&str> = held.iter().map(|e| e.content.as_str()).collect();
    texts.sort();
    assert_eq!(
        texts,
        ["normal 1", "normal 2"],
        "only the normal events land"
    );
    let record = a
        .wait_record(&keys, "the cursor at the last normal event", |r| {
            r.event_cursor.is_some()
        })
        .await;
    let cursor = record.event_cursor.clone().unwrap();
    let last = held.iter().max_by_key(|e| e.created_at).unwrap();
    assert_eq!(cursor.created_at, last.created_at.as_secs());
    assert_eq!(cursor.ids, vec![last.id.to_hex()]);
    assert_eq!(record.state, PeerState::Connected, "{record:?}");
    assert_eq!(a.flow.stats.future_dated.load(Ordering::Relaxed), 2);
    assert_eq!(a.flow.stats.refused.load(Ordering::Relaxed), 0);
    server.stop().await;
}

/// How many events of one second the cursor test sends.
const CROWDED: usize = 50_000;
/// The `created_at` of that second, fixed for the whole test run.
fn crowded_second() -> u64 {
    static SECOND: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SECOND.get_or_init(|| unix_now() - 10_000)
}

#[actix_rt::test]
async fn fifty_thousand_events_of_one_second_keep_the_cursor_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let relay_a = TestRelay::start(Impl::Builder).await;
    let to_a = relay_client(&relay_a.url()).await;
    let keys_a = Keys::generate();
    let events = "  max_cursor_ids: 64\n";
    let mut a = RunningNode::start("alpha", keys_a.clone(), db.clone(), &relay_a.url(), events);
    let keys = Keys::generate();
    let signer = keys.clone();
    let crowd = tokio::task::spawn_blocking(move || {
        let second = crowded_second();
        let mut all: Vec<Event> = (0..CROWDED)
            .map(|i| note(&signer, &format!("crowd {i}"), second))
            .collect();
        all.push(note(&signer, "the next second", second + 1));
        all
    })
    .await
    .unwrap();
    let (server, answers, gate) = gated_peer(&keys, crowd, CROWDED, 64).await;
    a.follow(&keys, endpoint_of(&server)).await;
    eventually(Duration::from_secs(600), "the crowd answered", || {
        let n = answers.lock().unwrap().len();
        async move { (n >= CROWDED).then_some(()) }
    })
    .await;
    // The node's record of the peer (what it persists) holds the bound of ids, no more.
    let record = a
        .wait_record(&keys, "the bound of ids at the crowded second", |r| {
            r.event_cursor
                .as_ref()
                .is_some_and(|c| c.created_at == crowded_second() && c.ids.len() >= 64)
        })
        .await;
    let cursor = record.event_cursor.unwrap();
    assert_eq!(cursor.ids.len(), 64);
    // The flow goes on: the next second's event lands and moves the cursor.
    gate.notify_one();
    eventually(SOON, "every answer", || {
        let n = answers.lock().unwrap().len();
        async move { (n > CROWDED).then_some(()) }
    })
    .await;
    let refusals: Vec<_> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|a| !matches!(a, Ok((true, _))))
        .take(3)
        .cloned()
        .collect();
    assert!(refusals.is_empty(), "every event accepted: {refusals:?}");
    let next = a
        .wait_record(&keys, "the cursor at the next second", |r| {
            r.event_cursor
                .as_ref()
                .is_some_and(|c| c.created_at > cursor.created_at)
        })
        .await
        .event_cursor
        .unwrap();
    assert_eq!(next.ids.len(), 1);
    let filter = Filter::new()
        .author(keys.public_key())
        .since(NostrTime::from(next.created_at));
    let landed = to_a
        .fetch_events(filter, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(landed.len(), 1, "the next second's event is on A's relay");
    assert_eq!(
        a.flow.stats.published.load(Ordering::Relaxed) as usize,
        CROWDED + 1
    );

    // What was stored is as bounded: the crowded second's record after a restart.
    a.node.kill();
    server.stop().await;
    let a = RunningNode::start("alpha", keys_a, db, &relay_a.url(), events);
    let restored = support::node::record_of(&a.node, &keys.public_key().to_hex())
        .await
        .expect("A remembers the peer");
    assert_eq!(restored.event_cursor, Some(next));
}

/// A crowded second's cursor is stored at its bound: the record a restarted node reads.
#[actix_rt::test]
async fn the_cursor_of_a_crowded_second_is_stored_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let relay_a = TestRelay::start(Impl::Builder).await;
    let keys_a = Keys::generate();
    let events = "  max_cursor_ids: 8\n";
    let mut a = RunningNode::start("alpha", keys_a.clone(), db.clone(), &relay_a.url(), events);
    let keys = Keys::generate();
    let crowd = (0..40)
        .map(|i| note(&keys, &format!("crowd {i}"), crowded_second()))
        .collect();
    let (server, answers) = sending_peer(&keys, crowd, 4).await;
    a.follow(&keys, endpoint_of(&server)).await;
    eventually(SOON, "the crowd sent", || {
        let n = answers.lock().unwrap().len();
        async move { (n >= 40).then_some(()) }
    })
    .await;
    let record = a
        .wait_record(&keys, "8 ids at the crowded second", |r| {
            r.event_cursor.as_ref().is_some_and(|c| c.ids.len() >= 8)
        })
        .await;
    assert_eq!(record.event_cursor.as_ref().unwrap().ids.len(), 8);
    a.node.kill();
    server.stop().await;
    let a = RunningNode::start("alpha", keys_a, db, &relay_a.url(), events);
    let restored = support::node::record_of(&a.node, &keys.public_key().to_hex())
        .await
        .expect("A remembers the peer");
    assert_eq!(restored.event_cursor.map(|c| c.ids.len()), Some(8));
}
