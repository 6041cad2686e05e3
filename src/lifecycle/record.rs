//! The durable form of one peer: everything the node must remember about it across a
//! restart. The lifecycle produces these snapshots; storage writes them whole (an upsert
//! keyed by `nostr_pubkey`), which is what lets the persistence actor coalesce changes per
//! peer without losing any: the newest snapshot of a peer contains every older change.

use serde::{Deserialize, Serialize};

use super::state::{PeerIntent, PeerState};
use super::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's Nostr public key (64 lowercase hex chars); the peer's identity.
    pub nostr_pubkey: String,
    /// Learned from the peer's kind 32001 announcement.
    pub ilp_address: Option<String>,
    /// BTP WebSocket URL, from the announcement.
    pub endpoint: Option<String>,
    /// EVM address that receives channel payments, from the announcement.
    pub base_address: Option<String>,
    pub state: PeerState,
    /// The operator's intent: a deliberately disconnected peer is never reconnected on restart.
    pub desired: PeerIntent,
    /// Whether the operator's follow list (kind 3) names this peer.
    pub followed: bool,
    /// Untrusted, capped subscriber-count hint from the announcement metadata.
    pub subscribers: Option<u32>,
    /// 1 (best) … 10 (worst); see `lifecycle::priority`.
    pub priority: u8,
    /// On-chain channel id once a channel is known.
    pub channel_id: Option<String>,
    /// Hash of our channel-open transaction, made durable before we wait on it.
    pub channel_tx_hash: Option<String>,
    /// When the channel wait began; with the configured timeout it gives the deadline.
    pub channel_opening_since: Option<Timestamp>,
    /// Last PONG received.
    pub last_heartbeat: Option<Timestamp>,
    /// Smoothed PING/PONG round trip in milliseconds.
    pub rtt_us: Option<u32>,
    /// Consecutive failed attempts; reset after a stable connection.
    pub reconnect_attempts: u32,
    /// When the next connection attempt is due (kept so a restart does not forget it).
    pub next_attempt_at: Option<Timestamp>,
    /// Why the peer is failed or disconnected.
    pub failure_reason: Option<String>,
    /// Open subscription ids toward this peer.
    pub subscription_ids: Vec<String>,
    /// Where the event flow from this peer stopped; the next REQ resumes here.
    pub event_cursor: Option<EventCursor>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One change of a peer's state, kept as its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTransition {
    pub nostr_pubkey: String,
    /// `None` for a peer new to the node.
    pub from: Option<PeerState>,
    pub to: PeerState,
    /// The reason the record held after the change (why it failed, why it waits).
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// How far the events of a peer have been received: the `created_at` (unix seconds) of the
/// newest event received, and the ids of the events received at that second. A REQ resumes
/// with `since` = that second (inclusive, so an event of the same second that had not
/// arrived yet is not missed) and the ids tell which of that second's events are already
/// here (so none is published twice).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    pub created_at: u64,
    pub ids: Vec<String>,
}

impl EventCursor {
    /// Moves the cursor past an event just received (events older than the cursor leave it
    /// where it is). Returns whether the event was new to the cursor: `false` for one
    /// already received at the cursor's second.
    pub fn advance(&mut self, created_at: u64, id: &str) -> bool {
        if created_at > self.created_at {
            self.created_at = created_at;
            self.ids.clear();
            self.ids.push(id.to_owned());
            true
        } else if created_at == self.created_at {
            if self.ids.iter().any(|known| known == id) {
                return false;
            }
            self.ids.push(id.to_owned());
            true
        } else {
            true
        }
    }

    /// Whether `id` at `created_at` is an event this cursor already counts as received.
    pub fn has(&self, created_at: u64, id: &str) -> bool {
        created_at == self.created_at && self.ids.iter().any(|known| known == id)
    }
}

impl PeerRecord {
    /// A peer we have just learned of, about to be discovered.
    pub fn new(nostr_pubkey: impl Into<String>, followed: bool, now: Timestamp) -> Self {
        let mut record = PeerRecord {
            nostr_pubkey: nostr_pubkey.into(),
            ilp_address: None,
            endpoint: None,
            base_address: None,
            state: PeerState::Discovering,
            desired: PeerIntent::Connect,
            followed,
            subscribers: None,
            priority: 10,
            channel_id: None,
            channel_tx_hash: None,
            channel_opening_since: None,
            last_heartbeat: None,
            rtt_us: None,
            reconnect_attempts: 0,
            next_attempt_at: None,
            failure_reason: None,
            subscription_ids: Vec::new(),
            event_cursor: None,
            created_at: now,
            updated_at: now,
        };
        record.priority =
            super::priority::calculate_priority(record.followed, record.rtt_us, record.subscribers);
        record
    }

    /// Whether the node should bring this peer back after a restart.
    /// When the operator's pause of this peer ends (a deliberate stop with an end).
    pub fn paused_until(&self) -> Option<Timestamp> {
        if self.desired == PeerIntent::Disconnect {
            self.next_attempt_at
        } else {
            None
        }
    }

    pub fn resumes_on_startup(&self) -> bool {
        self.desired == PeerIntent::Connect && self.state != PeerState::Failed
    }
}

/// A round trip in microseconds, shown in milliseconds with the precision that matters:
/// `0.042 ms`, `3.1 ms`, `250 ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u32);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = f64::from(self.0) / 1000.0;
        match self.0 {
            0..1_000 => write!(f, "{ms:.3} ms"),
            1_000..10_000 => write!(f, "{ms:.2} ms"),
            10_000..100_000 => write!(f, "{ms:.1} ms"),
            _ => write!(f, "{ms:.0} ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Millis;

    #[test]
    fn round_trips_show_the_precision_that_matters() {
        assert_eq!(Millis(42).to_string(), "0.042 ms");
        assert_eq!(Millis(3_140).to_string(), "3.14 ms");
        assert_eq!(Millis(42_500).to_string(), "42.5 ms");
        assert_eq!(Millis(250_000).to_string(), "250 ms");
    }
}
