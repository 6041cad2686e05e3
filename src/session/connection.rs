//! One BTP connection, independent of which WebSocket library carries it: request ids and
//! the requests waiting for their answer (each with its timeout), the classification of
//! every incoming frame, and the one-time close with its reason. The client
//! ([`super::client`]) and the server ([`super::server`]) run the same reader and writer
//! (`transport`) around a [`Link`]; what a frame means is decided here, once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use crate::wire::btp::{self, Body, Packet};
use crate::wire::ilp;

/// Largest WebSocket message accepted: a BTP packet around a full ILP packet (32 KiB of
/// data) with room to spare. A larger one is garbage by definition.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// What the writer half sends.
#[derive(Debug)]
pub enum Outgoing {
    /// One BTP packet as one binary message.
    Packet(Vec<u8>),
    /// A WebSocket close with this reason, then the writer stops.
    Close(String),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// What an incoming binary frame turned out to be.
#[derive(Debug)]
pub enum Incoming {
    /// An answer, delivered to the request waiting for it.
    Answered,
    /// An answer nobody waits for (e.g. after its timeout): logged and dropped, never answered.
    Unexpected(u32),
    /// A Message or Transfer from the peer: the caller serves it.
    Request(Packet),
}

/// The shared state of one connection.
pub struct Link {
    /// Feeds the writer half.
    out: mpsc::UnboundedSender<Outgoing>,
    /// Requests waiting for a Response or Error, by request id.
    pending: Mutex<HashMap<u32, oneshot::Sender<Packet>>>,
    next_id: AtomicU32,
    /// `Some(reason)` once closed; the first reason wins.
    closed: watch::Sender<Option<String>>,
    /// How long a request waits for its answer (ilp-plugin-btp uses 35 s).
    pub request_timeout: Duration,
}

impl Link {
    /// A link and the receiver its writer half drains.
    pub fn new(request_timeout: Duration) -> (Arc<Link>, mpsc::UnboundedReceiver<Outgoing>) {
        let (out, rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(None);
        let link = Link {
            out,
            pending: Mutex::new(HashMap::new()),
            // Random start, as ilp-plugin-btp does, so ids of two sessions do not line up.
            next_id: AtomicU32::new(fastrand::u32(..)),
            closed,
            request_timeout,
        };
        (Arc::new(link), rx)
    }

    /// Sends a request (a Message or Transfer; its request id is set here) and waits for
    /// the answer.
    pub async fn request(&self, mut packet: Packet) -> Result<Packet, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        packet.request_id = id;
        let bytes = packet
            .encode()
            .map_err(|e| LinkError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        if let Some(reason) = self.close_reason() {
            self.forget(id);
            return Err(LinkError::Closed(reason));
        }
        if self.out.send(Outgoing::Packet(bytes)).is_err() {
            self.forget(id);
            return Err(LinkError::Closed("writer gone".into()));
        }
        let mut closed = self.closed.subscribe();
        let answer = async {
            tokio::select! {
                // An answer that arrived just before the close still counts.
                biased;
                answer = rx => answer.map_err(|_| LinkError::Closed(self.close_reason().unwrap_or_default())),
                _ = closed.wait_for(Option::is_some) => Err(LinkError::Closed(self.close_reason().unwrap_or_default())),
            }
        };
        let result = match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout(self.request_timeout)),
        };
        self.forget(id);
        result
    }

    fn forget(&self, id: u32) {
        self.pending.lock().expect("pending lock").remove(&id);
    }

    /// Sends an answer (Response or Error) to a request of the peer.
    pub fn answer(&self, packet: &Packet) {
        match packet.encode() {
            Ok(bytes) => {
                let _ = self.out.send(Outgoing::Packet(bytes));
            }
            Err(e) => log::error!("cannot encode our own answer: {e}"),
        }
    }

    /// Classifies one binary frame. An unreadable one is an error whose text says what
    /// was wrong; the caller disconnects the peer with it.
    pub fn on_binary(&self, bytes: &[u8]) -> Result<Incoming, String> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(format!(
                "message of {} bytes exceeds {MAX_MESSAGE_LEN}",
                bytes.len()
            ));
        }
        let packet = Packet::decode(bytes).map_err(|e| e.to_string())?;
        if packet.body.is_response() {
            let waiter = self
                .pending
                .lock()
                .expect("pending lock")
                .remove(&packet.request_id);
            return Ok(match waiter {
                Some(tx) => {
                    let _ = tx.send(packet);
                    Incoming::Answered
                }
                None => Incoming::Unexpected(packet.request_id),
            });
        }
        Ok(Incoming::Request(packet))
    }

    /// Closes the link (idempotent): the writer sends a close frame, waiting requests fail.
    pub fn shut(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let first = self.closed.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            let _ = self.out.send(Outgoing::Close(reason));
            self.pending.lock().expect("pending lock").clear();
        }
    }

    pub fn close_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Resolves with the reason once the link is closed.
    pub fn closed(&self) -> BoxFuture<'static, String> {
        let mut rx = self.closed.subscribe();
        Box::pin(async move {
            match rx.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "connection dropped".into(),
            }
        })
    }
}

/// A BTP Error answering `request_id`, with `message` as its data (as ilp-plugin-btp does).
pub fn error_packet(request_id: u32, code: [u8; 3], name: &str, message: &str) -> Packet {
    let mut packet = Packet::error(request_id, code, name, &ilp::Timestamp::now());
    if let Body::Error { data, .. } = &mut packet.body {
        let mut bytes = message.as_bytes().to_vec();
        bytes.truncate(btp::MAX_ERROR_DATA_LEN);
        *data = bytes;
    }
    packet
}

/// Whether `packet` is a BTP Error with a temporary (T..) code: worth trying again later.
pub fn is_temporary_error(packet: &Packet) -> bool {
    matches!(&packet.body, Body::Error { code, .. } if code[0] == b'T')
}

/// The text of a BTP Error (its name and data), for logs and faults.
pub fn error_text(packet: &Packet) -> Option<String> {
    match &packet.body {
        Body::Error {
            code, name, data, ..
        } => Some(format!(
            "{} {}: {}",
            String::from_utf8_lossy(code),
            name,
            String::from_utf8_lossy(data)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_gets_its_own_answer_or_times_out() {
        let (link, mut rx) = Link::new(Duration::from_secs(35));
        let l2 = link.clone();
        let task = tokio::spawn(async move { l2.request(Packet::ilp_message(0, vec![1])).await });
        let Some(Outgoing::Packet(sent)) = rx.recv().await else {
            panic!("nothing sent")
        };
        let sent = Packet::decode(&sent).unwrap();
        // An answer to another id is unexpected and does not resolve the request.
        let other = Packet::ilp_response(sent.request_id.wrapping_add(1), vec![2]);
        assert!(matches!(
            link.on_binary(&other.encode().unwrap()),
            Ok(Incoming::Unexpected(_))
        ));
        let answer = Packet::ilp_response(sent.request_id, vec![3]);
        assert!(matches!(
            link.on_binary(&answer.encode().unwrap()),
            Ok(Incoming::Answered)
        ));
        assert_eq!(task.await.unwrap().unwrap(), answer);

        // Unanswered: times out after the configured 35 s of (simulated) time.
        let l3 = link.clone();
        let started = tokio::time::Instant::now();
        let result = l3.request(Packet::ilp_message(0, vec![1])).await;
        assert_eq!(result, Err(LinkError::Timeout(Duration::from_secs(35))));
        assert_eq!(started.elapsed(), Duration::from_secs(35));
        assert!(link.pending.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn closing_fails_waiting_requests_and_reports_the_first_reason() {
        let (link, _rx) = Link::new(Duration::from_secs(35));
        let l2 = link.clone();
        let task = tokio::spawn(async move { l2.request(Packet::ilp_message(0, vec![1])).await });
        tokio::task::yield_now().await;
        let closed = link.closed();
        link.shut("peer sent garbage");
        link.shut("second reason");
        assert_eq!(closed.await, "peer sent garbage");
        assert_eq!(
            task.await.unwrap(),
            Err(LinkError::Closed("peer sent garbage".into()))
        );
        assert!(matches!(
            link.request(Packet::ilp_message(0, vec![])).await,
            Err(LinkError::Closed(_))
        ));
    }

    #[test]
    fn garbage_and_oversize_frames_are_errors_naming_the_problem() {
        let (link, _rx) = Link::new(Duration::from_secs(1));
        assert!(link.on_binary(&[]).unwrap_err().contains("type"));
        assert!(link
            .on_binary(&[9, 0, 0, 0, 1, 0])
            .unwrap_err()
            .contains("unknown type 9"));
        // Truncated: declares 5 bytes of contents, has 1.
        assert!(link.on_binary(&[6, 0, 0, 0, 1, 5, 0]).is_err());
        // A length of length claiming 2^64 bytes.
        let huge = [
            6, 0, 0, 0, 1, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(link.on_binary(&huge).is_err());
        let big = vec![6u8; MAX_MESSAGE_LEN + 1];
        assert!(link.on_binary(&big).unwrap_err().contains("exceeds"));
    }
}
