//! BTP sessions under test: session settings on loopback, a raw WebSocket client that
//! speaks BTP by hand (to send what our own client never would), and a handler that can be
//! told to stop answering.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use btp_nips_node::config::{SessionSettings, Settings};
use btp_nips_node::lifecycle::Announcement;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::session::connection::Link;
use btp_nips_node::session::{IlpHandler, PeerIdentity};
use btp_nips_node::wire::btp::Packet;
use btp_nips_node::wire::ilp;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Session settings for tests: loopback, short timeouts, plus `yaml` overrides of the
/// `session` section.
pub fn session_settings(yaml: &str) -> SessionSettings {
    let doc = format!(
        "session:\n  listen: \"127.0.0.1:0\"\n  auth_timeout_ms: 3000\n  connect_timeout_ms: 3000\n  request_timeout_ms: 5000\n  ws_ping_interval_ms: 500\n{yaml}"
    );
    Settings::from_yaml_overrides(&doc)
        .expect("test settings are valid")
        .session
}

/// The node's service, unless told to go silent: then PINGs are never answered (the
/// socket and its WebSocket pings stay up), as a hung peer would behave.
pub struct Switchable {
    pub inner: Arc<dyn IlpHandler>,
    pub silent: AtomicBool,
}

impl Switchable {
    pub fn wrap(inner: Arc<dyn IlpHandler>) -> Arc<Switchable> {
        Arc::new(Switchable {
            inner,
            silent: AtomicBool::new(false),
        })
    }
}

/// Tells `world` (the node's in-memory discovery) where the peer `pubkey` listens, with a
/// channel already open to it.
pub fn announce_peer(world: &MemoryWorld, pubkey: &str, endpoint: String) {
    world.announce(
        pubkey,
        Announcement {
            ilp_address: format!("g.btp-nips.peer.{}", &pubkey[..16]),
            endpoint,
            base_address: format!("0x{:0>40}", &pubkey[..16]),
            subscribers: None,
        },
    );
    world.add_channel(pubkey);
}

#[async_trait]
impl IlpHandler for Switchable {
    async fn handle_prepare(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        prepare: ilp::Prepare,
    ) -> ilp::Packet {
        if self.silent.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        self.inner.handle_prepare(from, link, prepare).await
    }
}

pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket connection.
pub async fn raw_connect(endpoint: &str) -> RawWs {
    tokio_tungstenite::connect_async(endpoint)
        .await
        .expect("WebSocket connect")
        .0
}

/// What the server did after we sent something.
#[derive(Debug)]
pub enum Reaction {
    /// It answered with this BTP packet.
    Answer(Packet),
    /// It closed the connection (with this reason, if any).
    Closed(String),
}

/// The next thing the server does, within 5 s (WebSocket pings and pongs skipped).
pub async fn next_reaction(ws: &mut RawWs) -> Reaction {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the server reacts within 5 s");
        match next {
            None => return Reaction::Closed(String::new()),
            Some(Err(e)) => return Reaction::Closed(e.to_string()),
            Some(Ok(Message::Binary(b))) => {
                return Reaction::Answer(Packet::decode(&b).expect("the server sends valid BTP"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Reaction::Closed(frame.map_or(String::new(), |f| f.reason.to_string()))
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Sends one BTP packet.
pub async fn send_packet(ws: &mut RawWs, packet: &Packet) {
    ws.send(Message::Binary(packet.encode().unwrap().into()))
        .await
        .expect("send");
}

/// Sends raw bytes as one binary message.
pub async fn send_bytes(ws: &mut RawWs, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).await.expect("send");
}

/// Whether the server admitted us: a BTP Response (an Error is a response too, but a
/// refusal).
pub fn admitted(reaction: &Reaction) -> bool {
    matches!(reaction, Reaction::Answer(p) if matches!(p.body, btp_nips_node::wire::btp::Body::Response(_)))
}

/// Opens a raw connection and authenticates `client` to `server` at `endpoint`; what the
/// server did.
pub async fn knock(endpoint: &str, server: &nostr::PublicKey, client: &nostr::Keys) -> Reaction {
    let token = btp_nips_node::session::auth::sign_token(
        client,
        endpoint,
        server,
        btp_nips_node::session::unix_now(),
        fastrand::u64(..),
    )
    .unwrap();
    let mut ws = raw_connect(endpoint).await;
    send_packet(
        &mut ws,
        &Packet::auth(
            1,
            &client.public_key().to_hex(),
            &btp_nips_node::session::auth::token_text(&token),
        ),
    )
    .await;
    next_reaction(&mut ws).await
}

/// The BTP Error text of an answer, or a panic saying what came instead.
pub fn refusal_text(reaction: Reaction) -> String {
    match reaction {
        Reaction::Answer(packet) => btp_nips_node::session::connection::error_text(&packet)
            .unwrap_or_else(|| panic!("expected a BTP Error, got {packet:?}")),
        Reaction::Closed(reason) => panic!("closed without a BTP Error: {reason}"),
    }
}
