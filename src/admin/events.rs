//! The node's recent news, numbered, for the admin event stream.
//!
//! One recorder task per node takes every [`Notification`] from the node's notifications,
//! counts it in the metrics, numbers it, keeps the newest `admin.event_buffer` of them in a
//! ring and passes it on to the stream's live clients. Four kinds go through the one ring,
//! numbered in the order the node learned them: `peer_state`, `channel` (our open
//! transaction's confirmations, then the channel's id), `follow` (followed or unfollowed,
//! and by whom) and `heartbeat` (a PONG's round trip, at most one per peer every
//! `admin.heartbeat_event_interval_seconds`: every PONG still counts in the metrics).
//!
//! A client that reconnects with `Last-Event-ID` is given what it missed from the ring,
//! then the live events, with nothing lost or repeated in between (both are taken under
//! one lock); one that was away longer than the ring holds is told how many it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use super::metrics::Metrics;
use crate::lifecycle::{PeerIntent, Timestamp};
use crate::node::{Notification, PeerChange};

/// How far a live client may fall behind before it is told it missed events.
const LIVE_CAPACITY: usize = 4096;

/// The kinds of event the stream carries (the SSE `event:` field).
pub const PEER_STATE: &str = "peer_state";
pub const CHANNEL: &str = "channel";
pub const FOLLOW: &str = "follow";
pub const HEARTBEAT: &str = "heartbeat";

/// One numbered event, ready to send.
#[derive(Debug, Clone)]
pub struct NumberedEvent {
    pub id: u64,
    /// [`PEER_STATE`], [`CHANNEL`], [`FOLLOW`] or [`HEARTBEAT`].
    pub kind: &'static str,
    /// The peer it is about (for the `?peer=` filter); a heartbeat's shares the node's
    /// copy (no new one per PONG).
    pub pubkey: Arc<str>,
    /// The event's JSON.
    pub data: String,
}

/// The JSON of a `peer_state` event.
#[derive(Debug, Serialize)]
pub struct PeerStateEvent<'a> {
    pub pubkey: &'a str,
    /// `null` for a peer new to the node.
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub reason: Option<&'a str>,
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub next_attempt_at: Option<Timestamp>,
    /// Whether the operator stopped the peer.
    pub stopped_by_operator: bool,
    pub followed: bool,
}

impl<'a> PeerStateEvent<'a> {
    pub fn of(change: &'a PeerChange) -> Self {
        let r = &change.record;
        PeerStateEvent {
            pubkey: &r.nostr_pubkey,
            from: change.from.map(|s| s.as_str()),
            to: r.state.as_str(),
            reason: r.failure_reason.as_deref(),
            attempts: r.reconnect_attempts,
            next_attempt_at: r.next_attempt_at,
            stopped_by_operator: r.desired == PeerIntent::Disconnect,
            followed: r.followed,
        }
    }
}

/// What a subscriber gets: the events it missed that the ring still holds, how many it
/// missed that the ring no longer holds, and the live events from then on.
pub struct Subscription {
    pub missed: u64,
    pub backlog: Vec<Arc<NumberedEvent>>,
    pub live: broadcast::Receiver<Arc<NumberedEvent>>,
}

struct Ring {
    /// The id the next event gets (ids start at 1).
    next_id: u64,
    events: VecDeque<Arc<NumberedEvent>>,
    capacity: usize,
}

/// Lets through at most one heartbeat per peer every `interval`, judged by the time each
/// PONG arrived on the node's clock (so simulated time throttles like real time).
#[derive(Debug)]
pub struct HeartbeatThrottle {
    interval: Duration,
    /// When each peer's last heartbeat was let through.
    last: HashMap<String, Timestamp>,
    /// The map is pruned of entries older than [`THROTTLE_FORGET_AFTER`] (or `interval`)
    /// when it reaches this size, so peers long gone do not hold memory.
    prune_at: usize,
}

/// The smallest size at which the throttle's map is pruned.
const THROTTLE_PRUNE_MIN: usize = 1024;
/// A peer whose last heartbeat is older than this (or than the throttle's interval, if
/// longer) is forgotten when the map is pruned. Not the interval alone: a peer heartbeats
/// less often than it is shown (60 s against 30 s by default), and forgetting it between
/// two PONGs would make every PONG a new entry and every prune a sweep of all of them.
const THROTTLE_FORGET_AFTER: Duration = Duration::from_secs(3600);

impl HeartbeatThrottle {
    pub fn new(interval: Duration) -> Self {
        HeartbeatThrottle {
            interval,
            last: HashMap::new(),
            prune_at: THROTTLE_PRUNE_MIN,
        }
    }

    /// Whether a heartbeat of `pubkey` that arrived `at` is shown.
    pub fn admit(&mut self, pubkey: &str, at: Timestamp) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        // A peer already remembered is updated in place: one lookup, no new key.
        if let Some(shown) = self.last.get_mut(pubkey) {
            if at.saturating_since(*shown) < self.interval {
                return false;
            }
            *shown = at;
            return true;
        }
        if self.last.len() >= self.prune_at {
            let forget_after = self.interval.max(THROTTLE_FORGET_AFTER);
            self.last
                .retain(|_, shown| at.saturating_since(*shown) < forget_after);
            self.prune_at = (self.last.len() * 2).max(THROTTLE_PRUNE_MIN);
        }
        self.last.insert(pubkey.to_owned(), at);
        true
    }

    /// Peers whose last shown heartbeat is remembered.
    pub fn remembered(&self) -> usize {
        self.last.len()
    }
}

/// The ring of recent events and the live feed.
pub struct EventLog {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<NumberedEvent>>,
    heartbeats: Mutex<HeartbeatThrottle>,
}

impl EventLog {
    /// A ring of `capacity` events that shows every heartbeat.
    pub fn new(capacity: usize) -> Arc<EventLog> {
        Self::with_heartbeat_interval(capacity, Duration::ZERO)
    }

    /// A ring of `capacity` events showing at most one heartbeat per peer every
    /// `heartbeat_interval`.
    pub fn with_heartbeat_interval(capacity: usize, heartbeat_interval: Duration) -> Arc<EventLog> {
        Arc::new(EventLog {
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity: capacity.max(1),
            }),
            live: broadcast::channel(LIVE_CAPACITY).0,
            heartbeats: Mutex::new(HeartbeatThrottle::new(heartbeat_interval)),
        })
    }

    /// Numbers a state change, keeps it and passes it on.
    pub fn record(&self, change: &PeerChange) {
        let data = serde_json::to_string(&PeerStateEvent::of(change))
            .expect("a peer state event is plain JSON");
        self.push(PEER_STATE, change.record.nostr_pubkey.as_str().into(), data);
    }

    /// Numbers `news`, keeps it and passes it on; a heartbeat inside its peer's throttle
    /// interval is dropped (returns whether it was kept).
    pub fn record_notification(&self, news: &Notification) -> bool {
        let about = news.pubkey();
        let (kind, pubkey, data) = match news {
            Notification::State(change) => {
                self.record(change);
                return true;
            }
            Notification::Channel(progress) => {
                (CHANNEL, about.into(), serde_json::to_string(progress))
            }
            Notification::Follow(follow) => (FOLLOW, about.into(), serde_json::to_string(follow)),
            Notification::Heartbeat(heartbeat) => {
                let mut throttle = self.heartbeats.lock().expect("heartbeat throttle lock");
                if !throttle.admit(about, heartbeat.at) {
                    return false;
                }
                let shared = heartbeat.nostr_pubkey.clone();
                (HEARTBEAT, shared, serde_json::to_string(heartbeat))
            }
        };
        self.push(kind, pubkey, data.expect("an event is plain JSON"));
        true
    }

    fn push(&self, kind: &'static str, pubkey: Arc<str>, data: String) {
        let mut ring = self.ring.lock().expect("event ring lock");
        let event = Arc::new(NumberedEvent {
            id: ring.next_id,
            kind,
            pubkey,
            data,
        });
        ring.next_id += 1;
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // No live client: nobody to tell.
        let _ = self.live.send(event);
    }

    /// Counts `n` notifications the recorder never saw (it fell behind the node): their
    /// ids are skipped, so a resuming client learns it missed them.
    pub fn skip(&self, n: u64) {
        self.ring.lock().expect("event ring lock").next_id += n;
    }

    /// The id of the newest event (0: none yet).
    pub fn last_id(&self) -> u64 {
        self.ring.lock().expect("event ring lock").next_id - 1
    }

    /// Subscribes to the events after `after` (None: only the live ones from now).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = self.ring.lock().expect("event ring lock");
        let live = self.live.subscribe();
        let Some(after) = after else {
            return Subscription {
                missed: 0,
                backlog: Vec::new(),
                live,
            };
        };
        let backlog: Vec<_> = ring
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect();
        let first_kept = backlog.first().map_or(ring.next_id, |e| e.id);
        let missed = first_kept.saturating_sub(after.saturating_add(1));
        Subscription {
            missed,
            backlog,
            live,
        }
    }
}

/// Feeds the node's notifications to `log` and `metrics` until the node drops its sender.
pub async fn run_recorder(
    mut notifications: broadcast::Receiver<Notification>,
    log: Arc<EventLog>,
    metrics: Arc<Metrics>,
) {
    loop {
        match notifications.recv().await {
            Ok(news) => {
                match &news {
                    Notification::State(change) => metrics.count_transition(change),
                    Notification::Heartbeat(heartbeat) => metrics.observe_heartbeat(heartbeat),
                    Notification::Channel(_) | Notification::Follow(_) => {}
                }
                log.record_notification(&news);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                log::warn!("the admin event recorder fell behind: {n} notifications lost");
                log.skip(n);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{PeerRecord, PeerState};
    use crate::node::{FollowChange, FollowSource, Heartbeat};

    fn change(i: u64) -> PeerChange {
        let mut record = PeerRecord::new(format!("{i:064x}"), true, Timestamp(1));
        record.state = PeerState::Connecting;
        PeerChange {
            from: Some(PeerState::Discovering),
            record,
        }
    }

    fn heartbeat(peer: u64, at_ms: u64) -> Notification {
        Notification::Heartbeat(Heartbeat {
            nostr_pubkey: format!("{peer:064x}").into(),
            rtt_us: 1500,
            at: Timestamp(at_ms),
        })
    }

    #[test]
    fn a_resuming_subscriber_gets_what_it_missed_and_is_told_what_the_ring_dropped() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record(&change(i));
        }
        assert_eq!(log.last_id(), 5);
        // Held: 3, 4, 5.
        let sub = log.subscribe(Some(3));
        assert_eq!(sub.missed, 0);
        assert_eq!(sub.backlog.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
        let sub = log.subscribe(Some(0));
        assert_eq!(sub.missed, 2, "events 1 and 2 left the ring");
        assert_eq!(sub.backlog.len(), 3);
        let sub = log.subscribe(Some(5));
        assert_eq!((sub.missed, sub.backlog.len()), (0, 0));
        log.skip(2);
        log.record(&change(9));
        let sub = log.subscribe(Some(5));
        assert_eq!(sub.missed, 2, "skipped ids count as missed");
        assert_eq!(sub.backlog[0].id, 8);
    }

    #[test]
    fn a_live_subscriber_gets_every_new_event_after_its_backlog() {
        let log = EventLog::new(10);
        log.record(&change(1));
        let mut sub = log.subscribe(Some(0));
        log.record(&change(2));
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.live.try_recv().unwrap().id, 2);
        assert!(sub.live.try_recv().is_err());
    }

    #[test]
    fn every_kind_is_numbered_in_one_sequence_with_its_own_json() {
        let log = EventLog::new(10);
        log.record_notification(&Notification::Follow(FollowChange {
            nostr_pubkey: format!("{:064x}", 1),
            followed: true,
            by: FollowSource::Operator,
            at: Timestamp(5),
        }));
        log.record_notification(&Notification::State(Box::new(change(1))));
        log.record_notification(&heartbeat(1, 10));
        let sub = log.subscribe(Some(0));
        let kinds: Vec<_> = sub.backlog.iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(kinds, [(1, FOLLOW), (2, PEER_STATE), (3, HEARTBEAT)]);
        let follow: serde_json::Value = serde_json::from_str(&sub.backlog[0].data).unwrap();
        assert_eq!(follow["by"], "operator");
        assert_eq!(follow["followed"], true);
        assert_eq!(follow["pubkey"], format!("{:064x}", 1));
        let beat: serde_json::Value = serde_json::from_str(&sub.backlog[2].data).unwrap();
        assert_eq!(
            (beat["rtt_us"].as_u64(), beat["at"].as_u64()),
            (Some(1500), Some(10))
        );
    }

    #[test]
    fn heartbeats_are_shown_at_most_once_per_peer_per_interval() {
        let log = EventLog::with_heartbeat_interval(100, Duration::from_secs(30));
        let mut kept = Vec::new();
        // Two peers, a PONG each every 2 s for 5 minutes.
        for t in (0..300_000).step_by(2_000) {
            for peer in [1, 2] {
                if log.record_notification(&heartbeat(peer, 1_000_000 + t)) {
                    kept.push((peer, t));
                }
            }
        }
        for peer in [1, 2] {
            let times: Vec<u64> = kept.iter().filter(|k| k.0 == peer).map(|k| k.1).collect();
            assert_eq!(times.len(), 10, "one per 30 s over 300 s: {times:?}");
            assert!(times.windows(2).all(|w| w[1] - w[0] >= 30_000), "{times:?}");
        }
        assert_eq!(log.last_id(), 20);
        // 0: every PONG.
        let every = EventLog::new(10);
        assert!(every.record_notification(&heartbeat(1, 1)));
        assert!(every.record_notification(&heartbeat(1, 2)));
    }

    #[test]
    fn the_throttle_forgets_peers_it_has_not_seen_for_an_hour() {
        let mut throttle = HeartbeatThrottle::new(Duration::from_secs(1));
        for i in 0..THROTTLE_PRUNE_MIN as u64 {
            assert!(throttle.admit(&format!("{i:064x}"), Timestamp(0)));
        }
        assert_eq!(throttle.remembered(), THROTTLE_PRUNE_MIN);
        // An hour on, one more: the old entries are pruned, not kept forever.
        let hour = THROTTLE_FORGET_AFTER.as_millis() as u64;
        assert!(throttle.admit("new", Timestamp(hour)));
        assert_eq!(throttle.remembered(), 1);
        assert!(
            !throttle.admit("new", Timestamp(hour + 500)),
            "still within its interval"
        );
    }

    #[test]
    fn peers_heartbeating_less_often_than_the_throttle_are_remembered_not_churned() {
        // 30 s throttle, 60 s heartbeats (the defaults): every PONG is shown.
        let mut throttle = HeartbeatThrottle::new(Duration::from_secs(30));
        let peers = THROTTLE_PRUNE_MIN as u64;
        for i in 0..peers {
            assert!(throttle.admit(&format!("{i:064x}"), Timestamp(i)));
        }
        // A minute on, a new peer fills the map to its pruning size: the peers heard a
        // minute ago are still heartbeating and keep their entries (else each of their next
        // PONGs is a new entry again, and the map is swept again and again).
        assert!(throttle.admit("new", Timestamp(60_000)));
        assert_eq!(throttle.remembered(), peers as usize + 1);
        for i in 0..peers {
            assert!(throttle.admit(&format!("{i:064x}"), Timestamp(60_000 + i)));
        }
        assert_eq!(throttle.remembered(), peers as usize + 1);
    }
}
