//! Hostile peers and strangers against real sessions on loopback: a client that floods
//! PINGs and never reads is disconnected with every queue bounded; sockets that never
//! authenticate are capped in total and per IP; idle strangers give their sessions back
//! while a followed peer's heartbeat is answered throughout; the replay guard stays within
//! its bound; our client answers nothing before the server proved its key; and refusals
//! do not tell which shared-secret usernames exist.

mod support;

use std::time::Duration;

use btp_nips_node::actors::supervisor::INBOUND_ENDED_REASON;
use btp_nips_node::config::{SessionSettings, Settings};
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::node::{Node, NodeBuilder};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Session;
use btp_nips_node::session::auth::{self, sign_token, token_text, PROTOCOL_AUTH_PROOF};
use btp_nips_node::session::client::{BtpSession, ClientAuth};
use btp_nips_node::session::{unix_now, SessionContext, SessionServer};
use btp_nips_node::wire::btp::{self, Packet, ProtocolEntry};
use btp_nips_node::wire::btp_nips;
use btp_nips_node::wire::ilp::Timestamp;
use futures::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use support::sessions::*;
use support::wait::eventually;
use tokio_tungstenite::tungstenite::Message;

/// Authenticates `client` over a fresh raw connection; panics unless admitted.
async fn authenticated_raw(endpoint: &str, server: &nostr::PublicKey, client: &Keys) -> RawWs {
    let token = sign_token(client, endpoint, server, unix_now(), fastrand::u64(..)).unwrap();
    let mut ws = raw_connect(endpoint).await;
    send_packet(
        &mut ws,
        &Packet::auth(1, &client.public_key().to_hex(), &token_text(&token)),
    )
    .await;
    match next_reaction(&mut ws).await {
        Reaction::Answer(p) if matches!(p.body, btp::Body::Response(_)) => ws,
        other => panic!("not admitted: {other:?}"),
    }
}

/// One BTP Message carrying a BTP-NIPs PING as an ILP Prepare, under `request_id`.
fn ping_message(request_id: u32) -> Vec<u8> {
    let ping = btp_nips::Packet::ping("g.btp-nips.x.0011223344556677", 1, "00000000000000ff");
    let expiry = Timestamp::now().checked_add_millis(600_000).unwrap();
    let prepare = ping.to_prepare(expiry).unwrap().encode().unwrap();
    Packet::ilp_message(request_id, prepare).encode().unwrap()
}

#[actix_rt::test]
async fn a_client_that_floods_pings_and_never_reads_is_disconnected_with_bounded_queues() {
    let mut settings = session_settings(
        "  max_queued_messages: 16\n  max_requests_in_flight: 8\n  write_timeout_ms: 1000\n",
    );
    // A minute before a silent connection counts as dead: only not reading can end it here.
    settings.ws_ping_interval = Duration::from_secs(20);
    let keys = Keys::generate();
    let ctx = SessionContext::new(keys.clone(), "server", settings);
    let server = SessionServer::start(ctx.clone(), "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let mut ws = authenticated_raw(&endpoint, &keys.public_key(), &Keys::generate()).await;
    assert_eq!(server.live_sessions(), 1);

    // 200,000 PINGs, never reading a single answer. Once the node stops reading, our
    // writes stall; once it gives up on us, they fail.
    let template = ping_message(0);
    let flood = async {
        for i in 0..200_000u32 {
            let mut bytes = template.clone();
            bytes[1..5].copy_from_slice(&i.to_be_bytes());
            if ws.feed(Message::Binary(bytes.into())).await.is_err() {
                return i;
            }
            if i % 64 == 63 && ws.flush().await.is_err() {
                return i;
            }
        }
        200_000
    };
    let sent = tokio::time::timeout(Duration::from_secs(30), flood).await;
    eventually(
        Duration::from_secs(15),
        "the flooding client disconnected",
        || {
            let live = server.live_sessions();
            async move { (live == 0).then_some(()) }
        },
    )
    .await;
    let stats = server.stats();
    assert_eq!(stats.closed_write_deadline, 1, "{stats:?}");
    assert!(stats.requests_refused_in_flight >= 1, "{stats:?}");
    // Nothing grew past its bound while the client sent: the per-session output queue and
    // the requests being served.
    assert!(stats.queue_high_water <= 16, "{stats:?}");
    assert!(stats.in_flight_high_water <= 8, "{stats:?}");
    // The socket itself is gone, not only the session: what the client can still read
    // ends.
    assert!(sent.is_ok(), "the client's writes hung instead of failing");
    assert_socket_ends(&mut ws).await;
    server.stop().await;
}

#[actix_rt::test]
async fn a_client_that_floods_websocket_pings_and_never_reads_the_pongs_is_disconnected() {
    let mut settings = session_settings("  write_timeout_ms: 1000\n");
    // A minute before a silent connection counts as dead: only not reading can end it here.
    settings.ws_ping_interval = Duration::from_secs(20);
    let keys = Keys::generate();
    let ctx = SessionContext::new(keys.clone(), "server", settings);
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let mut ws = authenticated_raw(&endpoint, &keys.public_key(), &Keys::generate()).await;
    let flood = async {
        for i in 0..200_000u32 {
            if ws.feed(Message::Ping(vec![7u8; 125].into())).await.is_err() {
                return;
            }
            if i % 64 == 63 && ws.flush().await.is_err() {
                return;
            }
        }
    };
    let flooded = tokio::time::timeout(Duration::from_secs(30), flood).await;
    eventually(
        Duration::from_secs(15),
        "the ping flooder disconnected",
        || {
            let live = server.live_sessions();
            async move { (live == 0).then_some(()) }
        },
    )
    .await;
    let stats = server.stats();
    assert!(stats.closed_write_deadline >= 1, "{stats:?}");
    assert!(
        flooded.is_ok(),
        "the client's writes hung instead of failing"
    );
    assert_socket_ends(&mut ws).await;
    server.stop().await;
}

/// Reads what is left on `ws` until the connection ends (within 10 s).
async fn assert_socket_ends(ws: &mut RawWs) {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the socket stayed open");
}

/// A node on the in-memory world listening on loopback with `session`.
async fn listening_node(
    session: SessionSettings,
    keys: &Keys,
    world: &MemoryWorld,
) -> (Node, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.keep().join("n.db").display());
    // Admitted strangers hold connection slots like any peer: room for every stranger a
    // test opens, so what is measured is the session layer's bounds, not the slot limit.
    let mut settings = Settings::from_yaml_overrides(&format!(
        "database:\n  url: \"{url}\"\nbtp_nips:\n  peer_connections:\n    max_active_connections: 5000\n"
    ))
    .unwrap();
    settings.session = session;
    let node = NodeBuilder::new(settings)
        .without_admin()
        .keys(keys.clone())
        .ports(world.ports())
        .start()
        .await
        .unwrap();
    let endpoint = node.loopback_endpoint().unwrap();
    (node, endpoint)
}

/// The HTTP status a WebSocket upgrade to `endpoint` is refused with, and its body.
async fn refused_upgrade(endpoint: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(endpoint).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("refused without an HTTP answer: {e}"),
    }
}

#[actix_rt::test]
async fn sockets_that_never_authenticate_are_capped_in_total_and_per_ip() {
    let keys = Keys::generate();
    let ctx = SessionContext::new(
        keys.clone(),
        "server",
        session_settings("  max_unauthenticated: 4\n  max_unauthenticated_per_ip: 64\n"),
    );
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(raw_connect(&endpoint).await);
    }
    let (status, body) = refused_upgrade(&endpoint).await;
    assert_eq!(status, 503);
    assert!(body.contains("session.max_unauthenticated"), "{body}");
    // One authenticates: its slot is free again for the next socket.
    let mut first = silent.remove(0);
    let client = Keys::generate();
    let token = sign_token(&client, &endpoint, &keys.public_key(), unix_now(), 1).unwrap();
    send_packet(
        &mut first,
        &Packet::auth(1, &client.public_key().to_hex(), &token_text(&token)),
    )
    .await;
    assert!(admitted(&next_reaction(&mut first).await));
    silent.push(raw_connect(&endpoint).await);
    // The rest never authenticate: each is closed at the auth deadline (3 s in the tests).
    for mut ws in silent {
        match next_reaction_within(&mut ws, Duration::from_secs(6)).await {
            Reaction::Closed(reason) => {
                assert!(reason.contains("authentication timed out"), "{reason}")
            }
            other => panic!("expected the auth deadline, got {other:?}"),
        }
    }
    let stats = server.stats();
    assert_eq!(stats.refused_unauthenticated, 1, "{stats:?}");
    assert_eq!(stats.auth_timeouts, 4, "{stats:?}");
    assert_eq!(stats.unauthenticated, 0, "{stats:?}");
    server.stop().await;

    // Per IP: every socket here comes from 127.0.0.1.
    let ctx = SessionContext::new(
        keys.clone(),
        "server",
        session_settings("  max_unauthenticated: 64\n  max_unauthenticated_per_ip: 2\n"),
    );
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let _held = (raw_connect(&endpoint).await, raw_connect(&endpoint).await);
    let (status, body) = refused_upgrade(&endpoint).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("session.max_unauthenticated_per_ip"),
        "{body}"
    );
    assert_eq!(server.stats().refused_unauthenticated_per_ip, 1);
    server.stop().await;
}

/// The next thing the server does within `limit` (pings and pongs skipped).
async fn next_reaction_within(ws: &mut RawWs, limit: Duration) -> Reaction {
    let next = tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                None => return Reaction::Closed(String::new()),
                Some(Err(e)) => return Reaction::Closed(e.to_string()),
                Some(Ok(Message::Binary(b))) => {
                    return Reaction::Answer(Packet::decode(&b).unwrap())
                }
                Some(Ok(Message::Close(frame))) => {
                    return Reaction::Closed(frame.map_or(String::new(), |f| f.reason.to_string()))
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    next.expect("the server reacts in time")
}

#[actix_rt::test]
async fn idle_strangers_are_closed_while_a_followed_peer_keeps_its_heartbeat() {
    let world = MemoryWorld::new();
    let keys = Keys::generate();
    let mut session =
        session_settings("  max_unknown_inbound: 2000\n  unknown_idle_timeout_ms: 8000\n");
    // WebSocket pings every 20 s: the strangers never read, so they would otherwise be
    // dropped as dead connections (3 intervals without a pong) rather than as idle.
    session.ws_ping_interval = Duration::from_secs(20);
    let (node, endpoint) = listening_node(session, &keys, &world).await;
    // A followed peer dials in with our own client and heartbeats all along.
    let friend = Keys::generate();
    world.add_ready_peer(&friend.public_key().to_hex());
    node.follow(&friend.public_key().to_hex()).await.unwrap();
    let friend_ctx = SessionContext::new(friend.clone(), "friend", session_settings(""));
    let session = BtpSession::connect(
        friend_ctx,
        &endpoint,
        ClientAuth::Nostr {
            server: keys.public_key(),
        },
    )
    .await
    .unwrap();
    let heartbeat = async {
        let mut answered = 0u64;
        for nonce in 0..u64::MAX {
            let pong = tokio::time::timeout(Duration::from_secs(5), session.ping(nonce)).await;
            assert_eq!(
                pong,
                Ok(Ok(nonce)),
                "PING {nonce} of the followed peer missed"
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered
    };
    tokio::pin!(heartbeat);

    // As many strangers as the fd limit comfortably allows (two fds each: both ends are
    // in this process), every one admitted as unknown; they send nothing after auth.
    let strangers = stranger_count();
    let mut held = Vec::with_capacity(strangers);
    let mut most_open = 0;
    let started = std::time::Instant::now();
    let opening = async {
        for _ in 0..strangers {
            held.push(authenticated_raw(&endpoint, &keys.public_key(), &Keys::generate()).await);
            most_open = most_open.max(node.inbound_sessions());
        }
    };
    tokio::select! {
        _ = &mut heartbeat => unreachable!(),
        _ = opening => {}
    }
    eprintln!(
        "{strangers} strangers in {:?}, at most {most_open} open at once",
        started.elapsed()
    );
    assert!(
        most_open > 300.min(strangers),
        "only {most_open} open at once"
    );
    // Idle, they are closed; the followed peer (active or not) keeps its session.
    let settled = async {
        eventually(Duration::from_secs(30), "idle strangers closed", || {
            let live = node.inbound_sessions();
            async move { (live == 1).then_some(()) }
        })
        .await
    };
    tokio::select! {
        _ = &mut heartbeat => unreachable!(),
        _ = settled => {}
    }
    let stats = node.session_stats().unwrap();
    assert_eq!(stats.closed_idle_stranger as usize, strangers, "{stats:?}");
    assert_eq!(session.ping(7).await, Ok(7));
    drop(held);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_stranger_our_dial_never_reached_gives_its_slot_back_when_its_session_ends() {
    let world = MemoryWorld::new();
    let keys = Keys::generate();
    let (node, endpoint) = listening_node(session_settings(""), &keys, &world).await;
    // Nobody announced this key: the node's own dial to it never gets anywhere.
    let stranger = Keys::generate();
    let pubkey = stranger.public_key().to_hex();
    let running = |node: &Node| {
        let node = node.clone();
        async move { node.stats().await.unwrap().running }
    };

    let ws = authenticated_raw(&endpoint, &keys.public_key(), &stranger).await;
    assert_eq!(
        running(&node).await,
        1,
        "the stranger holds a slot while connected"
    );
    drop(ws);
    eventually(
        Duration::from_secs(10),
        "the stranger's slot given back",
        || {
            let running = running(&node);
            async move { (running.await == 0).then_some(()) }
        },
    )
    .await;
    let record = node.peer(&pubkey).await.unwrap().expect("still recorded");
    assert_eq!(record.state, PeerState::Disconnected);
    assert_eq!(record.failure_reason.as_deref(), Some(INBOUND_ENDED_REASON));
    let stats = node.stats().await.unwrap();
    assert_eq!(stats.waiting, 0, "it waits for no slot: {stats:?}");

    // It may come back by its own session.
    let _back = authenticated_raw(&endpoint, &keys.public_key(), &stranger).await;
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_stranger_met_before_is_still_counted_and_closed_as_a_stranger() {
    let world = MemoryWorld::new();
    let keys = Keys::generate();
    let mut session = session_settings(
        "  max_unknown_inbound: 1
  unknown_idle_timeout_ms: 1500
",
    );
    // WebSocket pings every 20 s: the stranger never reads, so it would otherwise be
    // dropped as a dead connection rather than as idle.
    session.ws_ping_interval = Duration::from_secs(20);
    let (node, endpoint) = listening_node(session, &keys, &world).await;
    let stranger = Keys::generate();
    // Its first visit leaves a record.
    drop(authenticated_raw(&endpoint, &keys.public_key(), &stranger).await);
    eventually(Duration::from_secs(10), "the first visit recorded", || {
        let node = node.clone();
        let pubkey = stranger.public_key().to_hex();
        async move { node.peer(&pubkey).await.unwrap().map(|_| ()) }
    })
    .await;

    // Back again, it takes the one place strangers have: another stranger is refused.
    let mut back = authenticated_raw(&endpoint, &keys.public_key(), &stranger).await;
    let text = refusal_text(knock(&endpoint, &keys.public_key(), &Keys::generate()).await);
    assert!(text.contains("session.max_unknown_inbound"), "{text}");
    // And, silent, it is closed as an idle stranger.
    match next_reaction_within(&mut back, Duration::from_secs(10)).await {
        Reaction::Closed(_) => {}
        other => panic!("expected the idle close, got {other:?}"),
    }
    assert!(node.session_stats().unwrap().closed_idle_stranger >= 1);
    node.shutdown().await.unwrap();
}

/// At least 300 strangers; more when the fd limit allows (at most 1,000).
fn stranger_count() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    (limit.saturating_sub(200) / 3).clamp(300, 1000)
}

#[test]
fn the_replay_guard_stays_within_its_bound_and_never_accepts_a_replay() {
    const BOUND: usize = 50_000;
    const NOW: u64 = 1_800_000_000;
    let mut guard = auth::ReplayGuard::new(BOUND);
    // 200,000 logins within one token lifetime: more than the bound.
    let ids: Vec<[u8; 32]> = (0..200_000u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        // Expiries spread over 50 s, all still fresh at NOW: the guard must choose what to
        // forget.
        let until = NOW + 60 + (i as u64) / 4_000;
        assert!(guard.admit(*id, until, NOW).is_ok(), "login {i} refused");
        assert!(guard.len() <= BOUND);
    }
    assert_eq!(guard.len(), BOUND);
    // Every one of them, replayed, is refused: the newest because they are remembered,
    // the oldest because the guard no longer accepts tokens that old.
    for (i, id) in ids.iter().enumerate() {
        let until = NOW + 60 + (i as u64) / 4_000;
        assert!(guard.admit(*id, until, NOW).is_err(), "replay {i} accepted");
    }
    assert!(guard.len() <= BOUND);
    // A fresh token is still accepted; once all have expired the guard empties.
    assert!(guard.admit([0xff; 32], NOW + 200, NOW).is_ok());
    assert!(guard.admit([0xfe; 32], NOW + 500, NOW + 300).is_ok());
    assert_eq!(guard.len(), 1);
}

/// A server that, on our auth, first sends `before` (BTP packets), then the auth Response
/// with a proof signed by `prover`, then `after`; it reports the request ids our client
/// answered.
async fn server_that_asks_early(
    prover: Keys,
    before: Vec<Packet>,
    after: Vec<Packet>,
) -> (String, tokio::task::JoinHandle<Vec<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}/btp", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let auth_packet = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => break Packet::decode(&b).unwrap(),
                Some(Ok(_)) => {}
                _ => return Vec::new(),
            }
        };
        for p in before {
            let _ = ws.send(Message::Binary(p.encode().unwrap().into())).await;
        }
        let creds = btp::parse_auth(&auth_packet).unwrap();
        let token = nostr::Event::from_json(&creds.token).unwrap();
        let proof = auth::sign_proof(&prover, &token, unix_now()).unwrap();
        let answer = Packet::response(
            auth_packet.request_id,
            vec![ProtocolEntry::json(
                PROTOCOL_AUTH_PROOF,
                auth::token_text(&proof).into_bytes(),
            )],
        );
        let _ = ws
            .send(Message::Binary(answer.encode().unwrap().into()))
            .await;
        for p in after {
            let _ = ws.send(Message::Binary(p.encode().unwrap().into())).await;
        }
        let mut answered = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m {
                    if let Ok(p) = Packet::decode(&b) {
                        if p.body.is_response() {
                            answered.push(p.request_id);
                        }
                    }
                }
            }
        })
        .await;
        answered
    });
    (endpoint, task)
}

#[actix_rt::test]
async fn our_client_answers_nothing_before_the_server_proved_its_key() {
    let ping = Packet::decode(&ping_message(77)).unwrap();
    let ctx = || SessionContext::new(Keys::generate(), "client", session_settings(""));

    // A request before the auth Response: the client never answers it and gives up.
    let server = Keys::generate();
    let (endpoint, task) = server_that_asks_early(server.clone(), vec![ping.clone()], vec![]).await;
    let result = BtpSession::connect(
        ctx(),
        &endpoint,
        ClientAuth::Nostr {
            server: server.public_key(),
        },
    )
    .await;
    assert!(
        result.is_err(),
        "a server that asked before proving was accepted"
    );
    drop(result);
    assert_eq!(task.await.unwrap(), Vec::<u32>::new());

    // A request right behind a proof that fails: never answered either.
    let server = Keys::generate();
    let impostor = Keys::generate();
    let (endpoint, task) = server_that_asks_early(impostor, vec![], vec![ping.clone()]).await;
    let result = BtpSession::connect(
        ctx(),
        &endpoint,
        ClientAuth::Nostr {
            server: server.public_key(),
        },
    )
    .await;
    assert!(result.is_err());
    drop(result);
    assert_eq!(task.await.unwrap(), Vec::<u32>::new());

    // A request right behind a proof that holds is served once the session is up.
    let server = Keys::generate();
    let (endpoint, task) = server_that_asks_early(server.clone(), vec![], vec![ping]).await;
    let session = BtpSession::connect(
        ctx(),
        &endpoint,
        ClientAuth::Nostr {
            server: server.public_key(),
        },
    )
    .await
    .unwrap();
    assert_eq!(task.await.unwrap(), vec![77]);
    drop(session);
}

#[actix_rt::test]
async fn refusals_do_not_tell_which_shared_secret_usernames_exist() {
    const SECRET: &str = "a-shared-secret-of-32-characters";
    let settings = session_settings(&format!(
        "  shared_secret_peers:\n    - {{ username: \"plain\", secret: \"{SECRET}\" }}\n"
    ));
    let ctx = SessionContext::new(Keys::generate(), "server", settings);
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let refusal = |username: &'static str, secret: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let mut ws = raw_connect(&endpoint).await;
            send_packet(&mut ws, &Packet::auth(7, username, secret)).await;
            refusal_text(next_reaction(&mut ws).await)
        }
    };
    let wrong_secret = refusal("plain", "not-the-secret").await;
    let longer = refusal("plain", "a-shared-secret-of-32-characters-and-more").await;
    let unknown_user = refusal("nobody", "not-the-secret").await;
    assert_eq!(wrong_secret, unknown_user);
    assert_eq!(wrong_secret, longer);
    assert!(!wrong_secret.contains("plain"), "{wrong_secret}");
    server.stop().await;

    // The token lifetimes have upper bounds.
    for (key, value) in [
        ("token_max_age_seconds", "86400"),
        ("token_max_skew_seconds", "86400"),
    ] {
        let err = Settings::from_yaml_overrides(&format!("session:\n  {key}: {value}\n"))
            .expect_err("an unbounded token lifetime was accepted");
        assert_eq!(err.key(), Some(leak(format!("session.{key}"))), "{err}");
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
