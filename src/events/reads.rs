//! Stored reads of the operator's relay, taken past nostr-sdk's event pipeline.
//!
//! nostr-sdk (nostr-relay-pool 0.44) passes every EVENT a relay sends through one pipeline,
//! with no switch to leave any step out: the message is parsed through a JSON value, the
//! event's signature is verified (`SharedState::verify_and_cache`, cached by id only once
//! verified), it is looked up in and saved to the client's database, and it is broadcast
//! twice to every listener of the connection. For the stored events the node reads to serve
//! a peer, all of that is cost without use: the relay is the operator's own (it checked
//! each event when it took it), the peer checks every event it receives anyway (the
//! node's inbox does), and the broadcast fills the buffer of every live subscription on
//! the connection while they wait for their stored events to go out.
//!
//! So the connection's transport ([`ReadTransport`], nostr-relay-pool's public
//! `WebSocketTransport` hook around its default transport) takes the messages of the
//! node's own stored reads — subscription ids beginning with [`READ_PREFIX`] — off the
//! stream before nostr-sdk sees them and hands them to the read waiting for them
//! ([`ReadRoutes::open`]). The read's REQ is sent as a raw message, so nostr-sdk keeps no
//! record of the subscription. Everything else — publishing, live subscriptions, NIP-42
//! AUTH, reconnection — stays nostr-sdk's, on the same connection.
//!
//! The transport also dials the connection itself (when it is direct, not through a proxy),
//! to set `TCP_NODELAY` on it: the node's messages to its relay are small and often follow
//! one another unanswered (a CLOSE then the next page's REQ, a window of EVENTs), which
//! Nagle's algorithm would hold back for the relay's delayed ACK.
//!
//! What a read takes is still bounded: the bytes of its messages (`nostr.max_bytes_per_req`,
//! counted here as they arrive: a read sent more is cut off and fails) and its events
//! (`nostr.max_events_per_req`, counted by the reader). Events are parsed and matched
//! against the read's filter by the reader, not verified.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_wsocket::{Message, WebSocket};
use futures::stream::{FuturesUnordered, SplitSink};
use futures::{Sink, SinkExt, Stream, StreamExt, TryStreamExt};
use nostr::util::BoxedFuture;
use nostr::Url;
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{
    DefaultWebsocketTransport, WebSocketSink, WebSocketStream, WebSocketTransport,
};
use nostr_sdk::pool::ConnectionMode;
use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How the subscription ids of the node's stored reads begin (and no other's).
pub const READ_PREFIX: &str = "btpn-read-";

/// A message of a stored read, as the transport hands it on.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadMessage {
    /// `["EVENT", id, event]`: the whole message text.
    Event(String),
    /// `["EOSE", id]`.
    Eose,
    /// `["CLOSED", id, message]`: the whole message text.
    Closed(String),
}

/// One read waiting for its messages.
#[derive(Debug)]
struct Route {
    to: mpsc::UnboundedSender<ReadMessage>,
    /// Bytes of messages handed on so far, and the most it may be sent.
    bytes: usize,
    max_bytes: usize,
    /// Set when the read was cut off for being sent more than `max_bytes`.
    cut: Arc<AtomicBool>,
}

/// The reads waiting for their messages, by subscription id; shared by the transport of
/// the connection and the readers.
#[derive(Debug, Clone, Default)]
pub struct ReadRoutes(Arc<Mutex<HashMap<String, Route>>>);

/// The receiving end of one read ([`ReadRoutes::open`]); closes the route when dropped.
pub struct ReadRoute {
    routes: ReadRoutes,
    id: String,
    messages: mpsc::UnboundedReceiver<ReadMessage>,
    cut: Arc<AtomicBool>,
    max_bytes: usize,
}

/// Why a read's messages stopped coming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEnd {
    /// The connection ended (or was replaced) while the read waited.
    Disconnected,
    /// The relay sent more than `max_bytes` for the read.
    Cut { max_bytes: usize },
}

impl ReadRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new read, taking at most `max_bytes` of messages: its subscription id (to send
    /// the REQ under) and where its messages come.
    pub fn open(&self, max_bytes: usize) -> ReadRoute {
        let id = format!("{READ_PREFIX}{:016x}", fastrand::u64(..));
        let (to, messages) = mpsc::unbounded_channel();
        let cut = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            id.clone(),
            Route {
                to,
                bytes: 0,
                max_bytes,
                cut: cut.clone(),
            },
        );
        ReadRoute {
            routes: self.clone(),
            id,
            messages,
            cut,
            max_bytes,
        }
    }

    /// Every read waiting now ends ([`RouteEnd::Disconnected`]): the connection their REQs
    /// went on is gone.
    fn close_all(&self) {
        self.lock().clear();
    }

    /// `text` if it is not a stored read's message (nostr-sdk gets it); `None` when it is
    /// one, handed to its read (or dropped when that read is over).
    fn divert(&self, text: String) -> Option<String> {
        if !text.contains(READ_PREFIX) {
            return Some(text);
        }
        let Ok(head) = serde_json::from_str::<Head>(&text) else {
            return Some(text);
        };
        let Some(sub) = head.sub.filter(|s| s.starts_with(READ_PREFIX)) else {
            return Some(text);
        };
        let message = match head.label.as_str() {
            "EVENT" => ReadMessage::Event(text),
            "EOSE" => ReadMessage::Eose,
            "CLOSED" => ReadMessage::Closed(text),
            _ => return Some(text),
        };
        let mut routes = self.lock();
        if let Some(route) = routes.get_mut(&sub) {
            let size = match &message {
                ReadMessage::Event(t) | ReadMessage::Closed(t) => t.len(),
                ReadMessage::Eose => 0,
            };
            route.bytes = route.bytes.saturating_add(size);
            if route.bytes > route.max_bytes {
                route.cut.store(true, Ordering::Relaxed);
                routes.remove(&sub);
            } else if route.to.send(message).is_err() {
                routes.remove(&sub);
            }
        }
        // A read's message after its end (it was closed meanwhile) is dropped too: nostr-sdk
        // has no subscription of that id.
        None
    }
}

impl ReadRoute {
    /// The subscription id to send the REQ under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next message of the read, or why none will come.
    pub async fn next(&mut self) -> Result<ReadMessage, RouteEnd> {
        match self.messages.recv().await {
            Some(message) => Ok(message),
            None => {
                if self.cut.load(Ordering::Relaxed) {
                    Err(RouteEnd::Cut {
                        max_bytes: self.max_bytes,
                    })
                } else {
                    Err(RouteEnd::Disconnected)
                }
            }
        }
    }
}

impl Drop for ReadRoute {
    fn drop(&mut self) {
        self.routes.lock().remove(&self.id);
    }
}

/// The first two items of a relay message: its label and, when it is a string, the second
/// (a subscription id for EVENT, EOSE and CLOSED). The rest is skipped unparsed.
struct Head {
    label: String,
    sub: Option<String>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Head, D::Error> {
        struct HeadVisitor;
        impl<'de> Visitor<'de> for HeadVisitor {
            type Value = Head;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a relay message array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Head, A::Error> {
                let label: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom("no label"))?;
                let sub = seq
                    .next_element::<serde_json::Value>()?
                    .and_then(|v| v.as_str().map(str::to_owned));
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Head { label, sub })
            }
        }
        d.deserialize_seq(HeadVisitor)
    }
}

/// nostr-relay-pool's default WebSocket transport, with the messages of the node's stored
/// reads taken off the stream (see the module docs), and a direct connection dialled with
/// `TCP_NODELAY` ([`dial_nodelay`]).
#[derive(Debug, Clone)]
pub struct ReadTransport {
    routes: ReadRoutes,
}

impl ReadTransport {
    /// A transport handing stored reads' messages to `routes`.
    pub fn new(routes: ReadRoutes) -> ReadTransport {
        ReadTransport { routes }
    }
}

impl WebSocketTransport for ReadTransport {
    fn support_ping(&self) -> bool {
        DefaultWebsocketTransport.support_ping()
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let (sink, stream) = if matches!(mode, ConnectionMode::Direct) {
                let (tx, rx) = dial_nodelay(url, timeout).await?.split();
                let sink: WebSocketSink = Box::new(ErrorsMapped(tx));
                let stream: WebSocketStream = Box::pin(rx.map_err(TransportError::backend));
                (sink, stream)
            } else {
                DefaultWebsocketTransport
                    .connect(url, mode, timeout)
                    .await?
            };
            // Reads waiting on an earlier connection will get nothing more.
            self.routes.close_all();
            let stream: WebSocketStream = Box::pin(Diverted {
                inner: stream,
                routes: self.routes.clone(),
            });
            Ok((sink, stream))
        })
    }
}

/// A WebSocket connection to `url` (TLS for `wss`, all within `timeout`), on a socket with
/// `TCP_NODELAY` set.
///
/// Without it, Nagle's algorithm holds back a small message written while the previous one
/// is unacknowledged, and the relay acknowledges a message it does not answer (a CLOSE)
/// only after its delayed-ACK timer (40 ms on Linux): every stored read after a CLOSE, and
/// every publish after another still unanswered, waited that long.
///
/// The host's addresses are tried in the resolver's order, each [`NEXT_ADDRESS_AFTER`]
/// after the one before, the first connected kept (as the default transport, async-wsocket,
/// does; RFC 8305): an address that never answers, such as an IPv6 route that
/// drops packets, does not take the whole `timeout` from the others.
async fn dial_nodelay(url: &Url, timeout: Duration) -> Result<WebSocket, TransportError> {
    let host = url
        .host_str()
        .ok_or_else(|| dial_error(format!("{url}: no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| dial_error(format!("{url}: no port")))?;
    let dial = async {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(TransportError::backend)?;
        let tcp = first_connected(addrs, NEXT_ADDRESS_AFTER, TcpStream::connect)
            .await
            .map_err(|e| match e {
                Some(e) => TransportError::backend(e),
                None => dial_error(format!("{host}: no address")),
            })?;
        tcp.set_nodelay(true).map_err(TransportError::backend)?;
        let (ws, _) = tokio_tungstenite_wsocket::client_async_tls(url.as_str(), tcp)
            .await
            .map_err(TransportError::backend)?;
        Ok(WebSocket::Tokio(ws))
    };
    tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| dial_error(format!("{url}: not connected within {timeout:?}")))?
}

/// The first of `addrs` that `connect` connects to, the `i`th tried from `i × after` on;
/// else the last error (`None`: no address).
async fn first_connected<A, T, F, C>(
    addrs: impl IntoIterator<Item = A>,
    after: Duration,
    connect: C,
) -> Result<T, Option<std::io::Error>>
where
    C: Fn(A) -> F,
    F: std::future::Future<Output = std::io::Result<T>>,
{
    let connect = &connect;
    let mut attempts: FuturesUnordered<_> = addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| async move {
            tokio::time::sleep(after * i as u32).await;
            connect(addr).await
        })
        .collect();
    let mut last = None;
    while let Some(attempt) = attempts.next().await {
        match attempt {
            Ok(connected) => return Ok(connected),
            Err(e) => last = Some(e),
        }
    }
    Err(last)
}

/// How long one address of the operator relay's host is tried alone before the next one
/// is tried too.
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

fn dial_error(what: String) -> TransportError {
    TransportError::backend(std::io::Error::other(what))
}

/// The sending half of a dialled connection, its errors as the transport's.
struct ErrorsMapped(SplitSink<WebSocket, Message>);

impl Sink<Message> for ErrorsMapped {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready_unpin(cx).map_err(TransportError::backend)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.0
            .start_send_unpin(item)
            .map_err(TransportError::backend)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_flush_unpin(cx).map_err(TransportError::backend)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_close_unpin(cx).map_err(TransportError::backend)
    }
}

/// A connection's incoming messages, less those of stored reads.
struct Diverted {
    inner: WebSocketStream,
    routes: ReadRoutes,
}

impl Stream for Diverted {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Text(text)))) => {
                    if let Some(text) = self.routes.divert(text) {
                        return Poll::Ready(Some(Ok(Message::Text(text))));
                    }
                }
                Poll::Ready(None) => {
                    self.routes.close_all();
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
    }
}

impl Drop for Diverted {
    fn drop(&mut self) {
        // The connection is gone: no read waiting on it will be answered.
        self.routes.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_waiting_reads_messages_are_taken_and_within_its_bytes() {
        let routes = ReadRoutes::default();
        let mut read = routes.open(200);
        let id = read.id().to_owned();
        assert!(id.starts_with(READ_PREFIX));

        // Other subscriptions' messages, and anything else, go on to nostr-sdk.
        for other in [
            r#"["EVENT","live-1",{"id":"x"}]"#.to_owned(),
            r#"["EOSE","live-1"]"#.to_owned(),
            format!(r#"["NOTICE","{id}"]"#),
            format!(r#"["OK","{id}",true,""]"#),
            "not json btpn-read-".to_owned(),
        ] {
            assert_eq!(routes.divert(other.clone()), Some(other));
        }
        // The read's own messages (spaces or not) are taken and handed on in order.
        let event = format!(r#"[ "EVENT", "{id}", {{"id":"y"}} ]"#);
        assert_eq!(routes.divert(event.clone()), None);
        assert_eq!(routes.divert(format!(r#"["EOSE","{id}"]"#)), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(read.next().await, Ok(ReadMessage::Event(event)));
            assert_eq!(read.next().await, Ok(ReadMessage::Eose));
        });

        // More than its bytes: cut off, and later messages are dropped.
        let big = format!(r#"["EVENT","{id}","{}"]"#, "z".repeat(200));
        assert_eq!(routes.divert(big.clone()), None);
        assert_eq!(routes.divert(big), None);
        rt.block_on(async {
            assert_eq!(read.next().await, Err(RouteEnd::Cut { max_bytes: 200 }));
        });

        // A connection's end ends every read waiting.
        let mut waiting = routes.open(1000);
        routes.close_all();
        rt.block_on(async {
            assert_eq!(waiting.next().await, Err(RouteEnd::Disconnected));
        });
        drop(read);
        assert!(routes.lock().is_empty());
    }

    #[test]
    fn the_relay_connection_is_dialled_with_nodelay() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = Url::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite_wsocket::accept_async(tcp).await.unwrap();
                // Echo one message, so the connection is shown to carry messages.
                let message = ws.next().await.unwrap().unwrap();
                ws.send(message).await.unwrap();
            });
            let mut ws = dial_nodelay(&url, Duration::from_secs(30)).await.unwrap();
            let tcp = match &ws {
                WebSocket::Tokio(inner) => match inner.get_ref() {
                    tokio_tungstenite_wsocket::MaybeTlsStream::Plain(tcp) => tcp,
                    _ => panic!("a ws:// URL is dialled without TLS"),
                },
                #[allow(unreachable_patterns)]
                _ => panic!("dialled over TCP"),
            };
            assert!(tcp.nodelay().unwrap(), "TCP_NODELAY is set");
            ws.send(Message::Text("ping".to_owned())).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::Text("ping".to_owned())
            );
            server.await.unwrap();
        });
    }

    #[test]
    fn an_address_that_never_answers_does_not_hold_up_the_next() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let after = Duration::from_millis(250);
            let start = tokio::time::Instant::now();
            // The first never answers, the second refuses, the third connects.
            let connected = first_connected([1, 2, 3], after, |addr| async move {
                match addr {
                    1 => std::future::pending().await,
                    2 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                    n => Ok(n),
                }
            })
            .await;
            assert_eq!(connected.unwrap(), 3);
            assert_eq!(start.elapsed(), after * 2);

            // None connects: the last error.
            let refused = first_connected([1, 2], after, |_| async {
                Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            })
            .await;
            assert_eq!(
                refused.unwrap_err().map(|e| e.kind()),
                Some(std::io::ErrorKind::ConnectionRefused)
            );
            let none = first_connected(std::iter::empty::<u8>(), after, |_| async { Ok(()) }).await;
            assert!(none.unwrap_err().is_none());
        });
    }
}
