//! The node's recent peer state changes, numbered, for the admin event stream.
//!
//! One recorder task per node takes every [`PeerChange`] from the node's notifications,
//! counts it in the metrics, numbers it, keeps the newest `admin.event_buffer` of them in a
//! ring and passes it on to the stream's live clients. A client that reconnects with
//! `Last-Event-ID` is given what it missed from the ring, then the live events, with
//! nothing lost or repeated in between (both are taken under one lock); one that was away
//! longer than the ring holds is told how many it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use super::metrics::Metrics;
use crate::lifecycle::{PeerIntent, Timestamp};
use crate::node::PeerChange;

/// How far a live client may fall behind before it is told it missed events.
const LIVE_CAPACITY: usize = 4096;

/// One numbered state change, ready to send.
#[derive(Debug, Clone)]
pub struct NumberedEvent {
    pub id: u64,
    /// The peer it is about (for the `?peer=` filter).
    pub pubkey: String,
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

/// The ring of recent events and the live feed.
pub struct EventLog {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<NumberedEvent>>,
}

impl EventLog {
    pub fn new(capacity: usize) -> Arc<EventLog> {
        Arc::new(EventLog {
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity: capacity.max(1),
            }),
            live: broadcast::channel(LIVE_CAPACITY).0,
        })
    }

    /// Numbers `change`, keeps it and passes it on.
    pub fn record(&self, change: &PeerChange) {
        let data = serde_json::to_string(&PeerStateEvent::of(change))
            .expect("a peer state event is plain JSON");
        let mut ring = self.ring.lock().expect("event ring lock");
        let event = Arc::new(NumberedEvent {
            id: ring.next_id,
            pubkey: change.record.nostr_pubkey.clone(),
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

    /// Counts `n` changes the recorder never saw (it fell behind the node's notifications):
    /// their ids are skipped, so a resuming client learns it missed them.
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
    mut changes: broadcast::Receiver<PeerChange>,
    log: Arc<EventLog>,
    metrics: Arc<Metrics>,
) {
    loop {
        match changes.recv().await {
            Ok(change) => {
                metrics.count_transition(&change);
                log.record(&change);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                log::warn!("the admin event recorder fell behind: {n} peer state changes lost");
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

    fn change(i: u64) -> PeerChange {
        let mut record = PeerRecord::new(format!("{i:064x}"), true, Timestamp(1));
        record.state = PeerState::Connecting;
        PeerChange {
            from: Some(PeerState::Discovering),
            record,
        }
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
}
