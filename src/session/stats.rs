//! What the session layer refused, closed and bounded, counted in one place: every limit of
//! the sessions (sockets not yet authenticated, requests in flight, the write deadline, idle
//! strangers, the replay guard) adds to a counter here, and the high-water marks show the
//! bounded queues never grew past their settings. One [`SessionStats`] is shared by the
//! client and the server of a node (it lives in the [`super::SessionContext`]); read it
//! with [`SessionStats::snapshot`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The live counters (atomics: updated from every session's tasks without a lock).
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Sockets refused because `session.max_unauthenticated` were waiting to authenticate.
    pub refused_unauthenticated: AtomicU64,
    /// Sockets refused because their IP had `session.max_unauthenticated_per_ip` waiting.
    pub refused_unauthenticated_per_ip: AtomicU64,
    /// Sockets closed at the auth deadline (`session.auth_timeout_ms`).
    pub auth_timeouts: AtomicU64,
    /// Authentications refused (bad token, wrong secret, replayed, not admitted).
    pub auth_refused: AtomicU64,
    /// Sessions closed because the peer did not read (`session.write_timeout_ms`).
    pub closed_write_deadline: AtomicU64,
    /// Strangers' sessions closed for sending nothing (`session.unknown_idle_timeout_ms`).
    pub closed_idle_stranger: AtomicU64,
    /// Requests refused because the session had `session.max_requests_in_flight`.
    pub requests_refused_in_flight: AtomicU64,
    /// Tokens refused because the replay guard was full and had to forget older ones
    /// (`session.max_replay_entries`).
    pub refused_replay_guard_full: AtomicU64,
    /// Sockets waiting to authenticate now (a gauge).
    pub unauthenticated: AtomicUsize,
    /// The longest any session's output queue has been (at most `session.max_queued_messages`).
    pub queue_high_water: AtomicUsize,
    /// The most requests any session had in flight (at most `session.max_requests_in_flight`).
    pub in_flight_high_water: AtomicUsize,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStatsSnapshot {
    pub refused_unauthenticated: u64,
    pub refused_unauthenticated_per_ip: u64,
    pub auth_timeouts: u64,
    pub auth_refused: u64,
    pub closed_write_deadline: u64,
    pub closed_idle_stranger: u64,
    pub requests_refused_in_flight: u64,
    pub refused_replay_guard_full: u64,
    pub unauthenticated: usize,
    pub queue_high_water: usize,
    pub in_flight_high_water: usize,
}

impl SessionStats {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Raises `mark` to `seen` if that is higher.
    pub fn high_water(mark: &AtomicUsize, seen: usize) {
        mark.fetch_max(seen, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SessionStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SessionStatsSnapshot {
            refused_unauthenticated: get(&self.refused_unauthenticated),
            refused_unauthenticated_per_ip: get(&self.refused_unauthenticated_per_ip),
            auth_timeouts: get(&self.auth_timeouts),
            auth_refused: get(&self.auth_refused),
            closed_write_deadline: get(&self.closed_write_deadline),
            closed_idle_stranger: get(&self.closed_idle_stranger),
            requests_refused_in_flight: get(&self.requests_refused_in_flight),
            refused_replay_guard_full: get(&self.refused_replay_guard_full),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            queue_high_water: self.queue_high_water.load(Ordering::Relaxed),
            in_flight_high_water: self.in_flight_high_water.load(Ordering::Relaxed),
        }
    }
}
