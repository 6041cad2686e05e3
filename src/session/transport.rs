//! The one reader and the one writer of every BTP session, whichever WebSocket library
//! carries it. The client dials with tokio-tungstenite and the server accepts with
//! actix-ws; each library is an adapter here ([`FrameSource`] for its incoming half,
//! [`FrameSink`] for its outgoing half), and [`read_loop`] and [`write_loop`] are written
//! once against those two traits.
//!
//! - [`write_loop`] sends what the [`Link`] queues (packets, then its one close) and a
//!   WebSocket ping once the peer has been silent for `ws_ping_interval`: its answer shows
//!   the peer alive and keeps the connection warm, which any frame of the peer already
//!   does, so a busy session sends none. A write the peer does not take within
//!   `session.write_timeout_ms` (it stopped reading) closes the session and the socket;
//!   the reader's pongs are bounded the same way.
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
    type Bytes: Into<bytes::Bytes>;

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
pub(super) struct Killer(Option<SocketHandle>);

impl Killer {
    pub(super) fn kill(self) {
        if let Some(socket) = self.0 {
            socket.shutdown();
        }
    }
}

/// A handle on an accepted TCP socket that another part of the program owns (actix-web's
/// connection), to shut it down while that owner is stuck flushing to a peer that does not
/// read. It holds no descriptor of its own (a node with N sessions needs N descriptors, not
/// 2N): it remembers the descriptor's number and the socket's cookie (`SO_COOKIE`, unique
/// for the kernel's lifetime, never reused), and shuts the descriptor down only while that
/// number still names that socket.
///
/// The socket's owner must run on the thread that calls [`SocketHandle::shutdown`] (an
/// actix-web worker runs a connection and everything its handler spawns on one thread):
/// then the owner cannot close the descriptor between the check and the shutdown, and a
/// number that now names another socket (the owner closed ours, someone opened one) fails
/// the check.
#[derive(Debug, Clone, Copy)]
pub(super) struct SocketHandle {
    fd: std::os::fd::RawFd,
    cookie: u64,
}

impl SocketHandle {
    /// A handle on the socket `fd` names now.
    pub(super) fn of(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<SocketHandle> {
        use std::os::fd::AsRawFd;
        let fd = fd.as_raw_fd();
        Ok(SocketHandle {
            fd,
            cookie: socket_cookie(fd)?,
        })
    }

    /// Shuts the socket down both ways, if the descriptor still names it; `false` if it
    /// no longer does (nothing was touched).
    pub(super) fn shutdown(&self) -> bool {
        if socket_cookie(self.fd).ok() != Some(self.cookie) {
            return false;
        }
        // SAFETY: a plain syscall on a descriptor number; it affects only the socket it
        // names, which the cookie just showed is ours.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) == 0 }
    }
}

/// The kernel's cookie of the socket `fd` names.
fn socket_cookie(fd: std::os::fd::RawFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if done == 0 && len as usize == std::mem::size_of::<u64>() {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends what the link queues, and a WebSocket ping whenever nothing was heard from the
/// peer for `ping_every` (see [`Link::heard`]), until the link's close has gone out or the
/// connection fails. A write the peer does not take within `write_timeout` closes the link
/// and the socket (the reason says so).
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
    // The first tick is immediate; the first check is one interval after opening.
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
            Step::Ping => {
                // A peer heard from within the interval is alive and the connection warm:
                // no ping, and the next check is one interval after what was heard last.
                // (Its frames answer a request or ping of ours, or are its own keepalive.)
                let quiet_until = link.last_heard() + ping_every;
                if quiet_until > tokio::time::Instant::now() {
                    ticker.reset_at(quiet_until);
                    continue;
                }
                tokio::time::timeout(write_timeout, sink.send_ping()).await
            }
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
    who: &(dyn std::fmt::Display + Sync),
    idle_limit: Option<Duration>,
) -> Option<String> {
    let idle = ctx.timings.idle_timeout;
    let closed = link.closed();
    tokio::pin!(closed);
    let mut last_packet = tokio::time::Instant::now();
    // One timer for the whole session, pushed back by every frame (no timer per frame).
    let silence = tokio::time::sleep(idle);
    tokio::pin!(silence);
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
            _ = &mut silence => Err(()),
            next = stream.next_frame() => Ok(next),
        };
        if let Ok(Some(Ok(_))) = &next {
            let now = tokio::time::Instant::now();
            link.heard(now);
            silence.as_mut().reset(now + idle);
        }
        let reason = match next {
            Err(()) => format!("no frame for {idle:?}"),
            Ok(None) => "connection closed".into(),
            Ok(Some(Err(e))) => {
                log::warn!("disconnecting {who}: WebSocket error: {}", untrusted(&e));
                format!("WebSocket error: {e}")
            }
            Ok(Some(Ok(Frame::Binary(bytes)))) => {
                last_packet = tokio::time::Instant::now();
                match dispatch_binary(link, &ctx.handler, peer, bytes.into()).await {
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
    pub socket: Option<SocketHandle>,
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
        Killer(self.socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd, IntoRawFd};

    /// A sink that counts what it is asked to send.
    struct Counting {
        pings: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FrameSink for Counting {
        async fn send_binary(&mut self, _bytes: Vec<u8>) -> Result<(), ()> {
            Ok(())
        }

        async fn send_ping(&mut self) -> Result<(), ()> {
            self.pings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }

        async fn close(self, _reason: String) {}
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_peer_silent_for_an_interval_is_pinged() {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::time::{sleep, Instant};
        let every = Duration::from_secs(20);
        let (link, out) = Link::new(Duration::from_secs(35));
        let pings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink = Counting {
            pings: pings.clone(),
        };
        tokio::spawn(write_loop(
            sink,
            out,
            link.clone(),
            every,
            Duration::from_secs(5),
        ));

        // Two minutes of a peer heard from every 5 s (its PONGs, say): no ping at all.
        for _ in 0..24 {
            sleep(Duration::from_secs(5)).await;
            link.heard(Instant::now());
        }
        assert_eq!(pings.load(Relaxed), 0);

        // Then silence: the first ping one interval after its last frame, then one per
        // interval while it stays silent.
        sleep(every - Duration::from_secs(1)).await;
        assert_eq!(pings.load(Relaxed), 0);
        sleep(Duration::from_secs(2)).await;
        assert_eq!(pings.load(Relaxed), 1);
        sleep(every).await;
        assert_eq!(pings.load(Relaxed), 2);

        // Heard again (its pong): the next ping waits a whole interval from then.
        link.heard(Instant::now());
        sleep(every - Duration::from_secs(1)).await;
        assert_eq!(pings.load(Relaxed), 2);
        sleep(Duration::from_secs(2)).await;
        assert_eq!(pings.load(Relaxed), 3);
    }

    /// Both ends of one loopback TCP connection.
    fn connection() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (ours, accepted)
    }

    #[test]
    fn a_socket_handle_shuts_down_its_socket_and_never_one_that_took_its_number() {
        let mut byte = [0u8; 1];
        // While its socket lives, the handle ends it: the peer reads the end.
        let (mut peer, accepted) = connection();
        let handle = SocketHandle::of(accepted.as_fd()).unwrap();
        assert!(handle.shutdown());
        assert_eq!(peer.read(&mut byte).unwrap(), 0, "the peer sees the end");

        // Its socket closed and its number now naming another socket (dup2 closes the
        // first and reuses the number at once): the handle touches nothing.
        let (_peer, accepted) = connection();
        let handle = SocketHandle::of(accepted.as_fd()).unwrap();
        let (mut other_peer, other) = connection();
        let number = accepted.into_raw_fd();
        // SAFETY: `number` is ours (taken from `accepted`); dup2 closes it and makes it a
        // second descriptor of `other`'s socket, closed below.
        assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), number) }, number);
        assert!(!handle.shutdown(), "another socket's number is not ours");
        // The other socket still works both ways.
        other_peer.write_all(b"x").unwrap();
        (&other).read_exact(&mut byte).unwrap();
        (&other).write_all(b"y").unwrap();
        other_peer.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"y");
        // SAFETY: our duplicate, not used after.
        unsafe { libc::close(number) };
    }
}
