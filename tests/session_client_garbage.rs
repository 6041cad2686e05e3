//! Our client against a hand-written server (tokio-tungstenite, loopback) that
//! authenticates properly and then misbehaves: every kind of garbage closes the session
//! with the reason, never a panic; and a server that cannot prove the key we expected is
//! refused permanently. Also: bad `session` settings are refused naming their key.

mod support;

use std::time::Duration;

use btp_nips_node::config::Settings;
use btp_nips_node::ports::Session;
use btp_nips_node::session::auth::{self, PROTOCOL_AUTH_PROOF};
use btp_nips_node::session::client::{BtpSession, ClientAuth, ConnectError};
use btp_nips_node::session::{unix_now, SessionContext};
use btp_nips_node::wire::btp::{self, Packet, ProtocolEntry};
use futures::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use support::sessions::*;
use tokio_tungstenite::tungstenite::Message;

/// Accepts one connection, answers the auth with a proof signed by `prover`, then sends
/// `after` as one binary message.
async fn rogue_server(prover: Keys, after: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}/btp", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let auth_packet = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => break Packet::decode(&b).unwrap(),
                Some(Ok(_)) => {}
                _ => return,
            }
        };
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
        ws.send(Message::Binary(answer.encode().unwrap().into()))
            .await
            .unwrap();
        let _ = ws.send(Message::Binary(after.into())).await;
        // Keep the socket open: the client must close it on its own.
        while let Some(Ok(_)) = ws.next().await {}
    });
    (endpoint, task)
}

#[actix_rt::test]
async fn garbage_from_the_server_closes_our_session_with_the_reason() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", vec![0xde, 0xad, 0xbe, 0xef]),
        ("truncated", vec![6, 0, 0, 0, 1, 40, 1]),
        (
            "oversize length",
            vec![1, 0, 0, 0, 1, 0x84, 0x7f, 0xff, 0xff, 0xff],
        ),
        ("over 64 KiB", vec![1; 70 * 1024]),
    ];
    for (what, garbage) in cases {
        let server = Keys::generate();
        let (endpoint, task) = rogue_server(server.clone(), garbage).await;
        let ctx = SessionContext::new(Keys::generate(), "client", session_settings(""));
        let session = BtpSession::connect(
            ctx,
            &endpoint,
            ClientAuth::Nostr {
                server: server.public_key(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: auth failed: {e}"));
        let reason = tokio::time::timeout(Duration::from_secs(5), session.closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: session not closed"));
        assert!(
            reason.contains("unreadable") || reason.contains("WebSocket error"),
            "{what}: {reason}"
        );
        task.abort();
    }
}

#[actix_rt::test]
async fn a_server_that_cannot_prove_the_expected_key_is_refused_permanently() {
    let expected = Keys::generate();
    let impostor = Keys::generate();
    let (endpoint, task) = rogue_server(impostor, vec![]).await;
    let ctx = SessionContext::new(Keys::generate(), "client", session_settings(""));
    let result = BtpSession::connect(
        ctx,
        &endpoint,
        ClientAuth::Nostr {
            server: expected.public_key(),
        },
    )
    .await;
    match result {
        Err(ConnectError::Permanent(reason)) => {
            assert!(reason.contains("did not prove key"), "{reason}")
        }
        Err(other) => panic!("expected a permanent refusal, got {other:?}"),
        Ok(_) => panic!("an impostor was accepted"),
    }
    task.abort();
}

#[actix_rt::test]
async fn a_dial_abandoned_during_authentication_closes_its_socket() {
    // A server that upgrades the connection and then never answers the auth.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}/btp", listener.local_addr().unwrap());
    let (auth_seen_tx, auth_seen) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut auth_seen_tx = Some(auth_seen_tx);
        // Everything the client sends until the socket ends; the auth is never answered.
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => {
                    if let Some(tx) = auth_seen_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "closed",
                Some(Ok(_)) => {}
            }
        }
    });
    let ctx = SessionContext::new(Keys::generate(), "client", session_settings(""));
    let dial = tokio::spawn(async move {
        let auth = ClientAuth::Nostr {
            server: Keys::generate().public_key(),
        };
        BtpSession::connect(ctx, &endpoint, auth).await.map(|_| ())
    });
    auth_seen.await.expect("the client sent its auth");
    // The dial is dropped mid-authentication (an eviction, an unfollow, a restart).
    dial.abort();
    let seen = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server sees the socket end without waiting for any timeout")
        .unwrap();
    assert_eq!(seen, "closed");
}

#[test]
fn bad_session_settings_name_their_key() {
    let cases = [
        ("session:\n  listen: \"not-an-address\"\n", "session.listen"),
        (
            "session:\n  request_timeout_ms: 0\n",
            "session.request_timeout_ms",
        ),
        (
            "session:\n  shared_secret_peers:\n    - { username: \"a\", secret: \"short\" }\n",
            "session.shared_secret_peers.secret",
        ),
        (
            "session:\n  shared_secret_peers:\n    - { username: \"a.b\", secret: \"0123456789abcdef\" }\n",
            "session.shared_secret_peers.username",
        ),
    ];
    for (yaml, key) in cases {
        let err = Settings::from_yaml_overrides(yaml).expect_err(yaml);
        assert_eq!(err.key(), Some(key), "{yaml}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}
