//! One BTP connection, independent of which WebSocket library carries it: request ids and
//! the requests waiting for their answer (each with its timeout), the classification of
//! every incoming frame, and the one-time close with its reason. What it holds is bounded:
//! the output queue (`session.max_queued_messages`; producers wait while it is full) and
//! the peer's requests being served (`session.max_requests_in_flight`; more are refused). The client
//! ([`super::client`]) and the server ([`super::server`]) run the same reader and writer
//! (`transport`) around a [`Link`]; what a frame means is decided here, once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::stats::SessionStats;

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

/// How much one connection may hold: its output queue and the peer's requests being served.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// Packets waiting for the socket (`session.max_queued_messages`).
    pub max_queued: usize,
    /// Requests of the peer served at once (`session.max_requests_in_flight`).
    pub max_in_flight: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            max_queued: 64,
            max_in_flight: 128,
        }
    }
}

/// One request of the peer being served; dropping it frees its slot.
pub struct InFlight(#[allow(dead_code)] OwnedSemaphorePermit);

/// The shared state of one connection.
pub struct Link {
    /// Feeds the writer half; bounded, so a peer that does not read makes the producers
    /// wait instead of growing memory.
    out: mpsc::Sender<Outgoing>,
    /// Requests waiting for a Response or Error, by request id.
    pending: Mutex<HashMap<u32, oneshot::Sender<Bytes>>>,
    next_id: AtomicU32,
    /// `Some(reason)` once closed; the first reason wins.
    closed: watch::Sender<Option<String>>,
    /// Those waiting for the close ([`Link::closed`]), told once. A oneshot each rather
    /// than the watch: the peer actor's watcher is polled whenever its actor wakes, and a
    /// oneshot answers that poll without a lock.
    close_waiters: Mutex<Vec<oneshot::Sender<String>>>,
    /// Whether the peer's requests are served yet: a client serves nothing before the
    /// server proved its key.
    serving: watch::Sender<bool>,
    /// Slots for the peer's requests being served.
    in_flight: Arc<Semaphore>,
    limits: LinkLimits,
    stats: Arc<SessionStats>,
    /// How long a request waits for its answer (ilp-plugin-btp uses 35 s).
    pub request_timeout: Duration,
    /// When the link was made: the origin of `heard_at`.
    opened: tokio::time::Instant,
    /// Milliseconds after `opened` when the last frame of the peer arrived: the writer
    /// pings only a peer silent for a whole interval.
    heard_at: AtomicU64,
}

impl Link {
    /// A link with the default limits and counters of its own, and the receiver its
    /// writer half drains.
    pub fn new(request_timeout: Duration) -> (Arc<Link>, mpsc::Receiver<Outgoing>) {
        Self::bounded(
            request_timeout,
            LinkLimits::default(),
            Arc::new(SessionStats::default()),
        )
    }

    /// A link within `limits`, counting into `stats`; it serves the peer's requests at once
    /// (see [`Link::hold_requests`]).
    pub fn bounded(
        request_timeout: Duration,
        limits: LinkLimits,
        stats: Arc<SessionStats>,
    ) -> (Arc<Link>, mpsc::Receiver<Outgoing>) {
        let (out, rx) = mpsc::channel(limits.max_queued.max(1));
        let (closed, _) = watch::channel(None);
        let (serving, _) = watch::channel(true);
        let link = Link {
            out,
            pending: Mutex::new(HashMap::new()),
            // Random start, as ilp-plugin-btp does, so ids of two sessions do not line up.
            next_id: AtomicU32::new(fastrand::u32(..)),
            closed,
            close_waiters: Mutex::new(Vec::new()),
            serving,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
            stats,
            request_timeout,
            opened: tokio::time::Instant::now(),
            heard_at: AtomicU64::new(0),
        };
        (Arc::new(link), rx)
    }

    /// A frame of the peer (any: a packet, a ping, a pong) arrived at `at`.
    pub fn heard(&self, at: tokio::time::Instant) {
        let ms = at.saturating_duration_since(self.opened).as_millis();
        self.heard_at
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the last frame of the peer arrived (the link's opening if none yet), to the
    /// millisecond.
    pub fn last_heard(&self) -> tokio::time::Instant {
        self.opened + Duration::from_millis(self.heard_at.load(Ordering::Relaxed))
    }

    /// The counters this link adds to.
    pub fn stats(&self) -> &Arc<SessionStats> {
        &self.stats
    }

    /// Queues one message for the writer, waiting while the queue is full; false if the
    /// link closed (or its writer is gone) first.
    async fn enqueue(&self, message: Outgoing) -> bool {
        if self.is_closed() {
            return false;
        }
        // Room in the queue (the usual case): no need to watch for the close meanwhile.
        let message = match self.out.try_send(message) {
            Ok(()) => {
                self.note_queue_length();
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        let mut closed = self.closed.subscribe();
        if closed.borrow().is_some() {
            return false;
        }
        let sent = tokio::select! {
            sent = self.out.send(message) => sent.is_ok(),
            _ = closed.wait_for(Option::is_some) => false,
        };
        if sent {
            self.note_queue_length();
        }
        sent
    }

    fn note_queue_length(&self) {
        let queued = self.limits.max_queued.saturating_sub(self.out.capacity());
        SessionStats::high_water(&self.stats.queue_high_water, queued);
    }

    /// Sends a request (a Message or Transfer; its request id is set here) and waits for
    /// the answer, at most the link's request timeout.
    pub async fn request(&self, mut packet: Packet) -> Result<Packet, LinkError> {
        let answer = self
            .request_raw(
                |id| {
                    packet.request_id = id;
                    packet.encode().map_err(|e| e.to_string())
                },
                Some(self.request_timeout),
            )
            .await?;
        Packet::decode(&answer).map_err(|e| self.unreadable_answer(e))
    }

    /// Sends the request `write` encodes for the request id it is given, and waits for the
    /// answer, as it came (a Response or Error; read it in place, and give an unreadable
    /// one to [`Link::unreadable_answer`]): at most `timeout`, or, with `None`, for as long
    /// as the caller waits (a caller with a deadline of its own, which drops the future at
    /// it, leaving nothing behind).
    pub async fn request_raw(
        &self,
        write: impl FnOnce(u32) -> Result<Vec<u8>, String>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = write(id).map_err(LinkError::Encode)?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        // However this request ends (answered, timed out, closed, or its future dropped
        // while waiting), its entry goes with it.
        let _entry = PendingEntry { link: self, id };
        if let Some(reason) = self.close_reason() {
            return Err(LinkError::Closed(reason));
        }
        let answer = async {
            if !self.enqueue(Outgoing::Packet(bytes)).await {
                return Err(LinkError::Closed(
                    self.close_reason().unwrap_or_else(|| "writer gone".into()),
                ));
            }
            // The close drops every waiting entry's sender (after the reason is set), so
            // the answer's channel also tells of the close; an answer that arrived just
            // before it still counts.
            rx.await
                .map_err(|_| LinkError::Closed(self.close_reason().unwrap_or_default()))
        };
        let Some(timeout) = timeout else {
            return answer.await;
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout(timeout)),
        }
    }

    /// An answer to our request that is not a BTP packet: the peer is disconnected with
    /// what was wrong, as for any unreadable frame.
    pub fn unreadable_answer(&self, error: btp::BtpError) -> LinkError {
        let reason = format!("peer sent an unreadable packet: {error}");
        self.shut(reason.clone());
        LinkError::Closed(reason)
    }

    /// Whether a request of ours still waits for its answer.
    pub fn awaits_answers(&self) -> bool {
        !self.pending.lock().expect("pending lock").is_empty()
    }

    /// Sends an answer (Response or Error) to a request of the peer, waiting while the
    /// output queue is full (dropped if the link closes meanwhile).
    pub async fn answer(&self, packet: &Packet) {
        match packet.encode() {
            Ok(bytes) => {
                self.enqueue(Outgoing::Packet(bytes)).await;
            }
            Err(e) => log::error!("cannot encode our own answer: {e}"),
        }
    }

    /// A slot for one more request of the peer, or `None` when
    /// `session.max_requests_in_flight` are being served.
    pub fn begin_request(&self) -> Option<InFlight> {
        let permit = self.in_flight.clone().try_acquire_owned().ok()?;
        let busy = self.limits.max_in_flight - self.in_flight.available_permits();
        SessionStats::high_water(&self.stats.in_flight_high_water, busy);
        Some(InFlight(permit))
    }

    /// The refusal of a request over `session.max_requests_in_flight`: a temporary BTP
    /// Error (try again once answers came back).
    pub fn busy_refusal(&self, request_id: u32) -> Packet {
        SessionStats::count(&self.stats.requests_refused_in_flight);
        error_packet(
            request_id,
            *b"T03",
            "ConnectorBusyError",
            &format!(
                "{} requests of this session are already being served \
                 (session.max_requests_in_flight)",
                self.limits.max_in_flight
            ),
        )
    }

    /// Holds the peer's requests until [`Link::start_serving`] (a client, until the
    /// server proved its key).
    pub fn hold_requests(&self) {
        self.serving.send_replace(false);
    }

    pub fn start_serving(&self) {
        self.serving.send_replace(true);
    }

    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Waits until the peer's requests may be served; false if the link closed first.
    pub async fn serving_allowed(&self) -> bool {
        let mut serving = self.serving.subscribe();
        let mut closed = self.closed.subscribe();
        tokio::select! {
            biased;
            _ = closed.wait_for(Option::is_some) => false,
            ok = serving.wait_for(|s| *s) => ok.is_ok() && !self.is_closed(),
        }
    }

    /// Classifies one binary frame. An unreadable one is an error whose text says what
    /// was wrong; the caller disconnects the peer with it. An answer goes to the request
    /// waiting for it as it came (read there, in place for a PING's), so the reader
    /// builds nothing for it.
    pub fn on_binary(&self, bytes: Bytes) -> Result<Incoming, String> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(format!(
                "message of {} bytes exceeds {MAX_MESSAGE_LEN}",
                bytes.len()
            ));
        }
        if let [btp::TYPE_RESPONSE | btp::TYPE_ERROR, a, b, c, d, ..] = bytes[..] {
            let id = u32::from_be_bytes([a, b, c, d]);
            let waiter = self.pending.lock().expect("pending lock").remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(bytes);
                return Ok(Incoming::Answered);
            }
        }
        let packet = Packet::decode(&bytes).map_err(|e| e.to_string())?;
        if packet.body.is_response() {
            // Its request is gone (timed out, given up), or it never was ours.
            return Ok(Incoming::Unexpected(packet.request_id));
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
            // A full queue (a peer that does not read) leaves no room: the writer then
            // learns of the close from the watch, once it has room to act.
            let _ = self.out.try_send(Outgoing::Close(reason.clone()));
            self.pending.lock().expect("pending lock").clear();
            let waiters = std::mem::take(&mut *self.close_waiters.lock().expect("waiters lock"));
            for waiter in waiters {
                let _ = waiter.send(reason.clone());
            }
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
        let (tx, rx) = oneshot::channel();
        {
            // Checked under the waiters' lock: a close after this finds the new waiter.
            let mut waiters = self.close_waiters.lock().expect("waiters lock");
            if let Some(reason) = self.close_reason() {
                return Box::pin(std::future::ready(reason));
            }
            waiters.retain(|w| !w.is_closed());
            waiters.push(tx);
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| "connection dropped".into()) })
    }
}

/// A request of ours waiting for its answer: dropping it removes the request's entry.
struct PendingEntry<'a> {
    link: &'a Link,
    id: u32,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.link
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
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
            link.on_binary(other.encode().unwrap().into()),
            Ok(Incoming::Unexpected(_))
        ));
        let answer = Packet::ilp_response(sent.request_id, vec![3]);
        assert!(matches!(
            link.on_binary(answer.encode().unwrap().into()),
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

    #[tokio::test(start_paused = true)]
    async fn a_request_given_up_while_it_waits_leaves_no_entry() {
        let (link, mut rx) = Link::new(Duration::from_secs(35));
        let mut request = Box::pin(link.request(Packet::ilp_message(0, vec![1])));
        tokio::select! {
            _ = &mut request => panic!("answered without an answer"),
            sent = rx.recv() => assert!(matches!(sent, Some(Outgoing::Packet(_)))),
        }
        assert_eq!(
            link.pending.lock().unwrap().len(),
            1,
            "waiting for its answer"
        );
        drop(request);
        assert!(link.pending.lock().unwrap().is_empty());
        assert!(!link.awaits_answers());
    }

    #[tokio::test]
    async fn everyone_waiting_for_the_close_hears_its_first_reason_and_given_up_waits_go() {
        let (link, _rx) = Link::new(Duration::from_secs(35));
        // Waits given up before the close leave nothing behind.
        for _ in 0..1000 {
            drop(link.closed());
        }
        let early = link.closed();
        assert_eq!(link.close_waiters.lock().unwrap().len(), 1);
        link.shut("peer went away");
        link.shut("second reason");
        assert!(link.close_waiters.lock().unwrap().is_empty());
        assert_eq!(early.await, "peer went away");
        assert_eq!(
            link.closed().await,
            "peer went away",
            "a wait begun after the close"
        );
        // A link dropped without a close ends the waits too.
        let (link, _rx) = Link::new(Duration::from_secs(35));
        let waiting = link.closed();
        drop(link);
        assert_eq!(waiting.await, "connection dropped");
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

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_answer_to_a_waiting_request_disconnects_the_peer_with_why() {
        let (link, mut rx) = Link::new(Duration::from_secs(35));
        let l2 = link.clone();
        let task = tokio::spawn(async move { l2.request(Packet::ilp_message(0, vec![1])).await });
        let Some(Outgoing::Packet(sent)) = rx.recv().await else {
            panic!("nothing sent")
        };
        let id = Packet::decode(&sent).unwrap().request_id.to_be_bytes();
        // A Response to that id whose contents are cut short.
        let garbage = Bytes::copy_from_slice(&[1, id[0], id[1], id[2], id[3], 5, 0]);
        assert!(matches!(link.on_binary(garbage), Ok(Incoming::Answered)));
        let Err(LinkError::Closed(reason)) = task.await.unwrap() else {
            panic!("an unreadable answer was taken")
        };
        assert!(
            reason.starts_with("peer sent an unreadable packet: "),
            "{reason}"
        );
        assert_eq!(link.close_reason(), Some(reason));
        // The same bytes with nobody waiting are refused by the reader itself.
        let (link, _rx) = Link::new(Duration::from_secs(35));
        let garbage = Bytes::copy_from_slice(&[1, id[0], id[1], id[2], id[3], 5, 0]);
        assert!(link.on_binary(garbage).is_err());
    }

    #[test]
    fn garbage_and_oversize_frames_are_errors_naming_the_problem() {
        let (link, _rx) = Link::new(Duration::from_secs(1));
        assert!(link.on_binary(Bytes::new()).unwrap_err().contains("type"));
        assert!(link
            .on_binary(Bytes::from_static(&[9, 0, 0, 0, 1, 0]))
            .unwrap_err()
            .contains("unknown type 9"));
        // Truncated: declares 5 bytes of contents, has 1.
        assert!(link
            .on_binary(Bytes::from_static(&[6, 0, 0, 0, 1, 5, 0]))
            .is_err());
        // A length of length claiming 2^64 bytes.
        let huge = [
            6, 0, 0, 0, 1, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(link.on_binary(Bytes::copy_from_slice(&huge)).is_err());
        let big = vec![6u8; MAX_MESSAGE_LEN + 1];
        assert!(link.on_binary(big.into()).unwrap_err().contains("exceeds"));
    }
}
