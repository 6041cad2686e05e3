//! The one reader and the one writer of every BTP session, whichever WebSocket library
//! carries it. The client dials with tokio-tungstenite and the server accepts with
//! actix-ws; each library is an adapter here ([`FrameSource`] for its incoming half,
//! [`FrameSink`] for its outgoing half), and [`read_loop`] and [`write_loop`] are written
//! once against those two traits.
//!
//! - [`write_loop`] sends what the [`Link`] queues (packets, then its one close) and a
//!   WebSocket ping every `ws_ping_interval` to keep the connection warm. A write the peer
//!   does not take within `session.write_timeout_ms` (it stopped reading) closes the
//!   session and the socket; the reader's pongs are bounded the same way.
//! - [`read_loop`] hands every binary message to [`dispatch_binary`] and ends the session
//!   on garbage, on a text frame, on the peer's close, on a dead connection, when no
//!   frame at all arrived within the idle timeout, or (a stranger's session) when no BTP
//!   packet arrived within `session.unknown_idle_timeout_ms`.
//!
//! Messages over [`super::connection::MAX_MESSAGE_LEN`] are refused by both libraries
//! (configured where each connection is made) and again by [`Link::on_binary`].

use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::connection::{Link, Outgoing};
use super::service::dispatch_binary;
use super::stats::SessionStats;
use super::{PeerIdentity, SessionContext};
use crate::untrusted::untrusted;

/// An incoming WebSocket frame, as the session sees it.
pub(super) enum Frame<B> {
    /// One whole binary message: a BTP packet, or garbage.
    Binary(B),
    /// A text frame: never BTP.
    Text,
    /// The peer's close, with its reason when the library reports one.
    Close(Option<String>),
    /// A ping (already answered by the adapter) or a pong: proof of life, nothing more.
    Control,
}

/// The incoming half of a WebSocket connection.
pub(super) trait FrameSource {
    /// A binary message's bytes, as the library hands them over (not copied).
    type Bytes: AsRef<[u8]>;

    /// The next frame; `None` once the connection is gone, `Err` with the library's
    /// description of a broken one.
    async fn next_frame(&mut self) -> Option<Result<Frame<Self::Bytes>, String>>;
}

/// The outgoing half of a WebSocket connection. `Err` means the connection is gone.
pub(super) trait FrameSink: Sized {
    async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ()>;

    /// An empty WebSocket ping.
    async fn send_ping(&mut self) -> Result<(), ()>;

    /// A normal close carrying `reason` (already cut to fit a close frame).
    async fn close(self, reason: String);

    /// The writer stops without the link's close: a send failed or the link is gone.
    async fn abandon(self) {}

    /// Ends the connection at once, whatever is still unsent (the peer does not read).
    /// Dropping the halves is enough where the library closes the socket then.
    fn killer(&self) -> Killer {
        Killer(None)
    }
}

/// Shuts a socket down (both directions) even while writes to it are stuck.
pub(super) struct Killer(Option<Arc<std::net::TcpStream>>);

impl Killer {
    pub(super) fn kill(self) {
        if let Some(socket) = self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Sends what the link queues, and a WebSocket ping every `ping_every`, until the link's
/// close has gone out or the connection fails. A write the peer does not take within
/// `write_timeout` closes the link and the socket (the reason says so).
pub(super) async fn write_loop<S: FrameSink>(
    mut sink: S,
    mut out: Receiver<Outgoing>,
    link: Arc<Link>,
    ping_every: Duration,
    write_timeout: Duration,
) {
    enum Step {
        Packet(Vec<u8>),
        Ping,
        Close(String),
        Stop,
    }
    let killer = sink.killer();
    let stalled = |link: &Link| {
        let reason =
            format!("the peer did not read for {write_timeout:?} (session.write_timeout_ms)");
        SessionStats::count(&link.stats().closed_write_deadline);
        log::warn!("closing a session: {reason}");
        link.shut(reason);
    };
    let mut ticker = tokio::time::interval(ping_every);
    // The first tick is immediate; the first ping goes out one interval after opening.
    ticker.tick().await;
    let closed = link.closed();
    tokio::pin!(closed);
    loop {
        // Queued packets first: what was queued before the close goes out before it.
        let step = tokio::select! {
            biased;
            next = out.recv() => match next {
                Some(Outgoing::Packet(bytes)) => Step::Packet(bytes),
                Some(Outgoing::Close(reason)) => Step::Close(reason),
                None => Step::Stop,
            },
            reason = &mut closed => Step::Close(reason),
            _ = ticker.tick() => Step::Ping,
        };
        let sent = match step {
            Step::Packet(bytes) => {
                tokio::time::timeout(write_timeout, sink.send_binary(bytes)).await
            }
            Step::Ping => tokio::time::timeout(write_timeout, sink.send_ping()).await,
            Step::Close(reason) => {
                let close = sink.close(close_reason_text(&reason));
                if tokio::time::timeout(write_timeout, close).await.is_err() {
                    killer.kill();
                }
                return;
            }
            Step::Stop => break,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(())) => break,
            Err(_) => {
                stalled(&link);
                killer.kill();
                return;
            }
        }
    }
    if tokio::time::timeout(write_timeout, sink.abandon())
        .await
        .is_err()
    {
        killer.kill();
    }
}

/// Reads frames until the link closes (`None`: closed on our side, nothing left to do) or
/// the session must end (`Some(reason)`: the caller shuts the link with it). `who` names
/// the peer in the logs. With `idle_limit` (a stranger's session) the session also ends
/// when the peer sent no BTP packet for that long.
pub(super) async fn read_loop<R: FrameSource>(
    mut stream: R,
    link: &Arc<Link>,
    ctx: &SessionContext,
    peer: &PeerIdentity,
    who: &str,
    idle_limit: Option<Duration>,
) -> Option<String> {
    let idle = ctx.timings.idle_timeout;
    let closed = link.closed();
    tokio::pin!(closed);
    let mut last_packet = tokio::time::Instant::now();
    loop {
        let stranger_idle = async {
            match idle_limit {
                Some(limit) => tokio::time::sleep_until(last_packet + limit).await,
                None => futures::future::pending().await,
            }
        };
        let next = tokio::select! {
            _ = &mut closed => return None,
            _ = stranger_idle => {
                let limit = idle_limit.unwrap_or_default();
                SessionStats::count(&ctx.stats.closed_idle_stranger);
                log::info!("closing the session of {who}: a peer this node does not follow, idle for {limit:?}");
                return Some(format!(
                    "idle for {limit:?}: this node does not follow you (session.unknown_idle_timeout_ms)"
                ));
            }
            next = tokio::time::timeout(idle, stream.next_frame()) => next,
        };
        let reason = match next {
            Err(_) => format!("no frame for {idle:?}"),
            Ok(None) => "connection closed".into(),
            Ok(Some(Err(e))) => {
                log::warn!("disconnecting {who}: WebSocket error: {}", untrusted(&e));
                format!("WebSocket error: {e}")
            }
            Ok(Some(Ok(Frame::Binary(bytes)))) => {
                last_packet = tokio::time::Instant::now();
                match dispatch_binary(link, &ctx.handler, peer, bytes.as_ref()).await {
                    Ok(()) => continue,
                    Err(reason) => {
                        log::warn!("disconnecting {who}: {}", untrusted(&reason));
                        reason
                    }
                }
            }
            Ok(Some(Ok(Frame::Text))) => {
                log::warn!("disconnecting {who}: text frame (BTP is binary)");
                "peer sent a text frame".into()
            }
            Ok(Some(Ok(Frame::Close(reason)))) => format!(
                "closed by peer{}",
                reason.map_or(String::new(), |r| format!(": {}", untrusted(&r)))
            ),
            Ok(Some(Ok(Frame::Control))) => continue,
        };
        return Some(reason);
    }
}

/// A close reason fits in 123 bytes (RFC 6455); cut at a character boundary.
pub(super) fn close_reason_text(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

// ---- tokio-tungstenite: the connections we dial ----

/// A dialed connection, `ws://` or `wss://`.
pub(super) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl FrameSource for SplitStream<WsStream> {
    type Bytes = tokio_tungstenite::tungstenite::Bytes;

    async fn next_frame(&mut self) -> Option<Result<Frame<Self::Bytes>, String>> {
        let frame = match self.next().await? {
            Err(e) => return Some(Err(e.to_string())),
            Ok(Message::Binary(bytes)) => Frame::Binary(bytes),
            Ok(Message::Text(_)) => Frame::Text,
            Ok(Message::Close(frame)) => Frame::Close(frame.map(|f| f.reason.to_string())),
            // tungstenite answers pings itself; a raw frame is never read by a client.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Frame::Control,
        };
        Some(Ok(frame))
    }
}

impl FrameSink for SplitSink<WsStream, Message> {
    async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        self.send(Message::Binary(bytes.into()))
            .await
            .map_err(|_| ())
    }

    async fn send_ping(&mut self) -> Result<(), ()> {
        self.send(Message::Ping(Vec::new().into()))
            .await
            .map_err(|_| ())
    }

    async fn close(mut self, reason: String) {
        let frame = CloseFrame {
            code: WsCloseCode::Normal,
            reason: reason.into(),
        };
        let _ = self.send(Message::Close(Some(frame))).await;
    }
}

// ---- actix-ws: the connections we accept ----

/// An accepted connection's incoming half, with the session that answers its pings.
pub(super) struct ActixSource {
    pub stream: AggregatedMessageStream,
    pub session: actix_ws::Session,
    /// A pong the peer does not take within this (it does not read) ends the session.
    pub write_timeout: Duration,
    pub stats: Arc<SessionStats>,
}

impl FrameSource for ActixSource {
    type Bytes = actix_web::web::Bytes;

    async fn next_frame(&mut self) -> Option<Result<Frame<Self::Bytes>, String>> {
        let frame = match self.stream.recv().await? {
            Err(e) => return Some(Err(e.to_string())),
            Ok(AggregatedMessage::Binary(bytes)) => Frame::Binary(bytes),
            Ok(AggregatedMessage::Text(_)) => Frame::Text,
            // The peer's own reason is not reported: the session ends "closed by peer".
            Ok(AggregatedMessage::Close(_)) => Frame::Close(None),
            // actix-ws leaves pings to us (ilp-plugin-btp sends one at once).
            // Bounded like every write: a peer flooding pings without reading the pongs
            // cannot hold the reader here.
            Ok(AggregatedMessage::Ping(p)) => {
                let pong = self.session.pong(&p);
                if tokio::time::timeout(self.write_timeout, pong)
                    .await
                    .is_err()
                {
                    SessionStats::count(&self.stats.closed_write_deadline);
                    return Some(Err(format!(
                        "the peer did not read its pongs for {:?} (session.write_timeout_ms)",
                        self.write_timeout
                    )));
                }
                Frame::Control
            }
            Ok(AggregatedMessage::Pong(_)) => Frame::Control,
        };
        Some(Ok(frame))
    }
}

/// An accepted connection's outgoing half, and a handle on its socket to end it when the
/// peer stops reading (actix-ws alone would keep trying to flush to it).
pub(super) struct ActixSink {
    pub session: actix_ws::Session,
    pub socket: Option<Arc<std::net::TcpStream>>,
}

impl FrameSink for ActixSink {
    async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        self.session.binary(bytes).await.map_err(|_| ())
    }

    async fn send_ping(&mut self) -> Result<(), ()> {
        self.session.ping(b"").await.map_err(|_| ())
    }

    async fn close(self, reason: String) {
        let _ = self
            .session
            .close(Some(CloseReason {
                code: CloseCode::Normal,
                description: Some(reason),
            }))
            .await;
    }

    /// actix-ws keeps the connection open until told: close it without a reason.
    async fn abandon(self) {
        let _ = self.session.close(None).await;
    }

    fn killer(&self) -> Killer {
        Killer(self.socket.clone())
    }
}
