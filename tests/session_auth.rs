//! The inbound endpoint refuses what it must (wrong key, replayed, expired, mis-bound and
//! forged tokens, wrong shared secrets) with a BTP Error, our client turns a refusal into
//! a permanent fault and a timeout into a transient one, and garbage of every kind
//! disconnects the sender without answering it and without hurting the server.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::Fault;
use btp_nips_node::ports::{PeerTarget, SessionConnector};
use btp_nips_node::session::auth::{self, sign_token, token_text};
use btp_nips_node::session::client::{BtpSession, ClientAuth, ConnectError};
use btp_nips_node::session::{unix_now, BtpConnector, SessionContext, SessionServer};
use btp_nips_node::wire::btp::{self, Packet};
use btp_nips_node::wire::btp_nips;
use btp_nips_node::wire::ilp;
use nostr::Keys;
use support::sessions::*;

const SECRET: &str = "a-shared-secret-of-32-characters";

fn server(keys: Keys) -> (SessionServer, String) {
    let settings = session_settings(&format!(
        "  shared_secret_peers:\n    - {{ username: \"plain\", secret: \"{SECRET}\" }}\n"
    ));
    let ctx = SessionContext::new(keys, "server", settings);
    let server = SessionServer::start(ctx, "127.0.0.1:0", None).unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    (server, endpoint)
}

fn client_ctx() -> std::sync::Arc<SessionContext> {
    SessionContext::new(Keys::generate(), "client", session_settings(""))
}

/// Sends an auth packet with `token` under `username` and returns the server's reaction.
async fn try_token(endpoint: &str, username: &str, token: &str) -> Reaction {
    let mut ws = raw_connect(endpoint).await;
    send_packet(&mut ws, &Packet::auth(7, username, token)).await;
    next_reaction(&mut ws).await
}

#[actix_rt::test]
async fn tokens_are_refused_when_replayed_expired_misbound_or_forged() {
    let server_keys = Keys::generate();
    let server_pk = server_keys.public_key();
    let (_server, endpoint) = server(server_keys);
    let client = Keys::generate();
    let me = client.public_key().to_hex();
    let now = unix_now();

    // A good token is accepted once, and the Response carries the server's proof.
    let token = sign_token(&client, &endpoint, &server_pk, now, 1).unwrap();
    match try_token(&endpoint, &me, &token_text(&token)).await {
        Reaction::Answer(p) => {
            assert!(matches!(p.body, btp::Body::Response(_)), "{p:?}");
            assert_eq!(p.request_id, 7);
            let proof = p
                .entry(auth::PROTOCOL_AUTH_PROOF)
                .expect("auth_proof entry");
            auth::verify_proof(
                std::str::from_utf8(&proof.data).unwrap(),
                &token,
                &server_pk,
            )
            .unwrap();
        }
        other => panic!("good token refused: {other:?}"),
    }
    // Replayed.
    let text = refusal_text(try_token(&endpoint, &me, &token_text(&token)).await);
    assert!(text.contains("replayed"), "{text}");
    // Expired (default max age 60 s).
    let old = sign_token(&client, &endpoint, &server_pk, now - 120, 2).unwrap();
    let text = refusal_text(try_token(&endpoint, &me, &token_text(&old)).await);
    assert!(text.contains("expired"), "{text}");
    // Bound to another endpoint.
    let other_endpoint = endpoint.replace("/btp", "/elsewhere");
    let misbound = sign_token(&client, &other_endpoint, &server_pk, now, 3).unwrap();
    let text = refusal_text(try_token(&endpoint, &me, &token_text(&misbound)).await);
    assert!(text.contains("bound to endpoint"), "{text}");
    // Bound to another server's key (the client meant to reach someone else).
    let stranger = Keys::generate().public_key();
    let wrong_key = sign_token(&client, &endpoint, &stranger, now, 4).unwrap();
    let text = refusal_text(try_token(&endpoint, &me, &token_text(&wrong_key)).await);
    assert!(text.contains("bound to pubkey"), "{text}");
    // Signed by someone else than the username claims.
    let mallory = Keys::generate();
    let theirs = sign_token(&mallory, &endpoint, &server_pk, now, 5).unwrap();
    let text = refusal_text(try_token(&endpoint, &me, &token_text(&theirs)).await);
    assert!(text.contains("is not the token's author"), "{text}");
    // Forged: altered after signing.
    let fresh = sign_token(&client, &endpoint, &server_pk, now, 6).unwrap();
    let forged = token_text(&fresh).replace("\"nonce\",\"", "\"nonce\",\"f");
    let text = refusal_text(try_token(&endpoint, &me, &forged).await);
    assert!(text.contains("forged"), "{text}");
    // Shared-secret mode: the wrong secret is refused, the right one accepted.
    let text = refusal_text(try_token(&endpoint, "plain", "not-the-secret").await);
    assert!(text.contains("wrong shared secret"), "{text}");
    match try_token(&endpoint, "plain", SECRET).await {
        Reaction::Answer(p) => assert!(matches!(p.body, btp::Body::Response(_)), "{p:?}"),
        other => panic!("right secret refused: {other:?}"),
    }
}

#[actix_rt::test]
async fn one_listener_proves_whichever_of_its_keys_a_client_asks_for() {
    let (a, b) = (Keys::generate(), Keys::generate());
    let own = Keys::generate();
    let ctx = SessionContext::new(own.clone(), "farm", session_settings(""));
    let server =
        SessionServer::start_with_identities(ctx, "127.0.0.1:0", None, [a.clone(), b.clone()])
            .unwrap();
    let endpoint = format!("ws://127.0.0.1:{}/btp", server.local_addr.port());
    let connector = BtpConnector::new(client_ctx());
    let target = |keys: &Keys| PeerTarget {
        nostr_pubkey: keys.public_key().to_hex(),
        ilp_address: None,
        endpoint: Some(endpoint.clone()),
        base_address: None,
        followed: true,
        event_cursor: None,
    };
    // Our client checks the proof is signed by the key it dialed: each session proves
    // the key its token named, not one shared by the listener.
    let mut sessions = Vec::new();
    for keys in [&a, &b] {
        let session = connector.open(&target(keys)).await.expect("authenticated");
        assert_eq!(session.ping(7).await, Ok(7));
        sessions.push(session);
    }
    // One client, two of the server's keys: two sessions, neither replacing the other.
    assert_eq!(server.live_sessions(), 2);
    // A key the server does not hold (not even the context's own) is refused for good.
    for keys in [&Keys::generate(), &own] {
        match connector.open(&target(keys)).await {
            Err(Fault::Permanent(reason)) => {
                assert!(reason.contains("bound to pubkey"), "{reason}");
            }
            Err(other) => panic!("expected a permanent refusal, got {other:?}"),
            Ok(_) => panic!("a key the server does not hold was accepted"),
        }
    }
}

#[actix_rt::test]
async fn our_client_fails_permanently_on_refusal_and_transiently_on_timeout() {
    let server_keys = Keys::generate();
    let (_server, endpoint) = server(server_keys.clone());
    let ctx = client_ctx();

    // Dialing the right endpoint with the wrong expected key: the server refuses our token
    // (it is bound to another pubkey), and that is permanent.
    let connector = BtpConnector::new(ctx.clone());
    let wrong = PeerTarget {
        nostr_pubkey: Keys::generate().public_key().to_hex(),
        ilp_address: None,
        endpoint: Some(endpoint.clone()),
        base_address: None,
        followed: true,
        event_cursor: None,
    };
    match connector.open(&wrong).await {
        Err(Fault::Permanent(reason)) => {
            assert!(reason.contains("authentication refused"), "{reason}");
            assert!(reason.contains("bound to pubkey"), "{reason}");
        }
        Err(other) => panic!("expected a permanent fault, got {other:?}"),
        Ok(_) => panic!("a wrong key was accepted"),
    }
    // The right key: both sides prove themselves, and a PING is answered.
    let right = PeerTarget {
        nostr_pubkey: server_keys.public_key().to_hex(),
        ..wrong.clone()
    };
    let session = connector.open(&right).await.expect("authenticated");
    assert_eq!(session.ping(0xfeed).await, Ok(0xfeed));

    // ws:// to a non-loopback host is never dialed.
    let remote = PeerTarget {
        endpoint: Some("ws://192.0.2.1:7700/btp".into()),
        ..right.clone()
    };
    match connector.open(&remote).await {
        Err(Fault::Permanent(reason)) => assert!(reason.contains("loopback"), "{reason}"),
        other => panic!("expected a permanent refusal, got {:?}", other.err()),
    }

    // A server that accepts TCP but never answers the handshake: a transient timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_endpoint = format!("ws://{}/btp", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let result = BtpSession::connect(
        ctx.clone(),
        &silent_endpoint,
        ClientAuth::Nostr {
            server: server_keys.public_key(),
        },
    )
    .await;
    match result {
        Err(ConnectError::Transient(reason)) => assert!(reason.contains("no answer"), "{reason}"),
        other => panic!("expected a transient timeout, got {:?}", other.err()),
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    // wss:// goes through rustls (ring provider): against a server that speaks no TLS,
    // the handshake fails as a transient fault — no panic about a missing crypto provider.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_endpoint = format!("wss://{}/btp", plain.local_addr().unwrap());
    let plain_task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, _) = plain.accept().await.unwrap();
        let _ = tcp.write_all(b"HTTP/1.1 400 not TLS\r\n\r\n").await;
    });
    let result = BtpSession::connect(
        ctx.clone(),
        &tls_endpoint,
        ClientAuth::Nostr {
            server: server_keys.public_key(),
        },
    )
    .await;
    match result {
        Err(ConnectError::Transient(reason)) => {
            assert!(reason.contains("connect to wss://"), "{reason}")
        }
        other => panic!("expected a transient TLS failure, got {:?}", other.err()),
    }
    plain_task.abort();

    // Nobody listening: transient too.
    drop(silent);
    let result = BtpSession::connect(
        ctx,
        &silent_endpoint,
        ClientAuth::Nostr {
            server: server_keys.public_key(),
        },
    )
    .await;
    assert!(
        matches!(result, Err(ConnectError::Transient(_))),
        "{:?}",
        result.err()
    );
}

/// An authenticated raw connection.
async fn authenticated(endpoint: &str, server: &nostr::PublicKey) -> RawWs {
    let client = Keys::generate();
    let token = sign_token(&client, endpoint, server, unix_now(), fastrand::u64(..)).unwrap();
    let mut ws = raw_connect(endpoint).await;
    send_packet(
        &mut ws,
        &Packet::auth(1, &client.public_key().to_hex(), &token_text(&token)),
    )
    .await;
    match next_reaction(&mut ws).await {
        Reaction::Answer(p) if matches!(p.body, btp::Body::Response(_)) => ws,
        other => panic!("not authenticated: {other:?}"),
    }
}

#[actix_rt::test]
async fn garbage_disconnects_the_sender_and_never_hurts_the_server() {
    let server_keys = Keys::generate();
    let server_pk = server_keys.public_key();
    let (_server, endpoint) = server(server_keys);

    let mut garbage: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]),
        ("empty message", vec![]),
        ("obsolete BTP/1.0 type", vec![3, 0, 0, 0, 1, 0]),
        ("truncated contents", vec![6, 0, 0, 0, 1, 20, 1, 2, 3]),
        (
            "oversize length (2^64)",
            vec![
                6, 0, 0, 0, 1, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        ("trailing bytes", {
            let mut p = Packet::ilp_message(2, vec![]).encode().unwrap();
            p.push(0);
            p
        }),
        ("frame over 64 KiB", vec![6; 70 * 1024]),
    ];
    // Truncations of a valid Message carrying a PING: every prefix is garbage.
    let ping = btp_nips::Packet::ping("g.btp-nips.x.0011223344556677", 1, "0000000000000001")
        .to_prepare(ilp::Timestamp::now().checked_add_millis(30_000).unwrap())
        .unwrap();
    let full = Packet::ilp_message(9, ping.encode().unwrap())
        .encode()
        .unwrap();
    for cut in [1, 5, 6, full.len() / 2, full.len() - 1] {
        garbage.push(("truncated valid packet", full[..cut].to_vec()));
    }

    // Before authentication: garbage is not answered, the connection is closed.
    let mut ws = raw_connect(&endpoint).await;
    send_bytes(&mut ws, vec![0xff, 0, 0]).await;
    match next_reaction(&mut ws).await {
        Reaction::Closed(reason) => assert!(reason.contains("unreadable"), "{reason}"),
        Reaction::Answer(p) => panic!("garbage was answered: {p:?}"),
    }
    // A non-auth first packet is refused with a BTP Error.
    let mut ws = raw_connect(&endpoint).await;
    send_packet(&mut ws, &Packet::ilp_message(3, full.clone())).await;
    let text = refusal_text(next_reaction(&mut ws).await);
    assert!(text.contains("auth"), "{text}");

    for (what, bytes) in garbage {
        let mut ws = authenticated(&endpoint, &server_pk).await;
        send_bytes(&mut ws, bytes).await;
        match next_reaction(&mut ws).await {
            Reaction::Closed(_) => {}
            Reaction::Answer(p) => panic!("{what}: garbage was answered: {p:?}"),
        }
    }
    // A text frame is not BTP either.
    let mut ws = authenticated(&endpoint, &server_pk).await;
    futures::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text("hello".into()),
    )
    .await
    .unwrap();
    assert!(matches!(next_reaction(&mut ws).await, Reaction::Closed(_)));

    // A readable BTP Message whose ILP is unreadable is answered with an Error, and the
    // connection stays up; then a real PING on the same connection gets its PONG.
    let mut ws = authenticated(&endpoint, &server_pk).await;
    send_packet(&mut ws, &Packet::ilp_message(10, vec![12, 3, 1, 2])).await;
    let text = refusal_text(next_reaction(&mut ws).await);
    assert!(text.starts_with("F01"), "{text}");
    send_bytes(&mut ws, full).await;
    match next_reaction(&mut ws).await {
        Reaction::Answer(p) => {
            assert_eq!(p.request_id, 9);
            let Some(ilp::Packet::Fulfill(f)) = p.decode_ilp().unwrap() else {
                panic!("PING not fulfilled: {p:?}")
            };
            let pong = btp_nips::Packet::decode(&f.data).unwrap();
            assert_eq!(pong.nonce(), Some("0000000000000001"));
        }
        other => panic!("PING not answered: {other:?}"),
    }
}

#[actix_rt::test]
async fn a_peer_holds_one_inbound_session_the_newest() {
    let server_keys = Keys::generate();
    let server_pk = server_keys.public_key();
    let (server, endpoint) = server(server_keys);
    let client = Keys::generate();
    let knock = |nonce: u64| {
        let token = sign_token(&client, &endpoint, &server_pk, unix_now(), nonce).unwrap();
        let username = client.public_key().to_hex();
        let endpoint = endpoint.clone();
        async move {
            let mut ws = raw_connect(&endpoint).await;
            send_packet(&mut ws, &Packet::auth(1, &username, &token_text(&token))).await;
            match next_reaction(&mut ws).await {
                Reaction::Answer(p) if matches!(p.body, btp::Body::Response(_)) => ws,
                other => panic!("not authenticated: {other:?}"),
            }
        }
    };
    let mut first = knock(1).await;
    assert_eq!(server.live_sessions(), 1);
    let mut second = knock(2).await;
    match next_reaction(&mut first).await {
        Reaction::Closed(reason) => assert!(reason.contains("replaced"), "{reason}"),
        Reaction::Answer(p) => panic!("unexpected {p:?}"),
    }
    assert_eq!(server.live_sessions(), 1);
    // The newer one is served.
    let ping = btp_nips::Packet::ping("g.btp-nips.x.0011223344556677", 1, "0000000000000002")
        .to_prepare(ilp::Timestamp::now().checked_add_millis(30_000).unwrap())
        .unwrap();
    send_packet(&mut second, &Packet::ilp_message(4, ping.encode().unwrap())).await;
    match next_reaction(&mut second).await {
        Reaction::Answer(p) => assert!(matches!(
            p.decode_ilp().unwrap(),
            Some(ilp::Packet::Fulfill(_))
        )),
        other => panic!("PING not answered: {other:?}"),
    }
    drop(second);
    let started = std::time::Instant::now();
    while server.live_sessions() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed session still counted"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A dialled session reads through a small buffer (`DIAL_READ_BUFFER`): a message many
/// times its size, up to the message limit, still arrives whole. Here the server's auth
/// Response carries, besides its proof, an entry padding it to near the limit.
#[actix_rt::test]
async fn a_dialled_session_reads_messages_larger_than_its_read_buffer() {
    use btp_nips_node::ports::Session as _;
    use btp_nips_node::session::client::DIAL_READ_BUFFER;
    use btp_nips_node::session::connection::MAX_MESSAGE_LEN;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server_keys = Keys::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}/btp", listener.local_addr().unwrap());
    let padding = MAX_MESSAGE_LEN - 2048;
    assert!(padding > 4 * DIAL_READ_BUFFER);
    let (keys, served) = (server_keys.clone(), endpoint.clone());
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let auth = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => break Packet::decode(&b).unwrap(),
                Some(Ok(_)) => {}
                other => panic!("no auth packet: {other:?}"),
            }
        };
        let token = auth
            .entry("auth_token")
            .and_then(|e| e.text_data())
            .unwrap();
        let policy = auth::TokenPolicy {
            endpoints: vec![served],
            max_age_secs: 60,
            max_skew_secs: 60,
        };
        let token = auth::check_token(None, token, &keys.public_key(), &policy, unix_now())
            .expect("our client's token");
        let proof = auth::sign_proof(&keys, &token, unix_now()).unwrap();
        let response = Packet::response(
            auth.request_id,
            vec![
                btp::ProtocolEntry::json(auth::PROTOCOL_AUTH_PROOF, token_text(&proof).into()),
                btp::ProtocolEntry::octet_stream("padding", vec![0x5a; padding]),
            ],
        )
        .encode()
        .unwrap();
        assert!(response.len() <= MAX_MESSAGE_LEN);
        ws.send(Message::Binary(response.into())).await.unwrap();
        // Held open until the client is done.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let session = BtpSession::connect(
        client_ctx(),
        &endpoint,
        ClientAuth::Nostr {
            server: server_keys.public_key(),
        },
    )
    .await
    .expect("the padded Response was read whole and its proof checked");
    session.close().await;
    server_task.abort();
}
