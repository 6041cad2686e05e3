//! Counters of the admin API itself: refused credentials, NIP-98 authorizations, event
//! stream clients (served now, refused at `admin.max_event_clients`) and log filter
//! changes. One set per node (in [`super::AdminParts`]), so the metrics can read them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The admin API's counters; every field only grows except `event_clients`.
#[derive(Debug, Default)]
pub struct AdminStats {
    /// Requests refused 401 (no, malformed or wrong credentials, NIP-98 included).
    pub auth_refused: AtomicU64,
    /// Requests let in by a NIP-98 event of the operator.
    pub nip98_accepted: AtomicU64,
    /// NIP-98 authorizations refused (also counted in `auth_refused`).
    pub nip98_refused: AtomicU64,
    /// Event-stream clients served now.
    pub event_clients: AtomicUsize,
    /// Event-stream clients refused because `admin.max_event_clients` were served.
    pub event_clients_refused: AtomicU64,
    /// Successful changes of the running node's log filter.
    pub log_filter_changes: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AdminStatsSnapshot {
    pub auth_refused: u64,
    pub nip98_accepted: u64,
    pub nip98_refused: u64,
    pub event_clients: usize,
    pub event_clients_refused: u64,
    pub log_filter_changes: u64,
}

impl AdminStats {
    pub fn snapshot(&self) -> AdminStatsSnapshot {
        AdminStatsSnapshot {
            auth_refused: self.auth_refused.load(Ordering::Relaxed),
            nip98_accepted: self.nip98_accepted.load(Ordering::Relaxed),
            nip98_refused: self.nip98_refused.load(Ordering::Relaxed),
            event_clients: self.event_clients.load(Ordering::Relaxed),
            event_clients_refused: self.event_clients_refused.load(Ordering::Relaxed),
            log_filter_changes: self.log_filter_changes.load(Ordering::Relaxed),
        }
    }

    /// Takes one of `max` event-stream slots; None when all are taken (counted).
    pub fn take_event_slot(self: &Arc<Self>, max: usize) -> Option<EventSlot> {
        let taken = self
            .event_clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(EventSlot(self.clone())),
            Err(_) => {
                self.event_clients_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// One event-stream client's slot; given back when dropped.
#[derive(Debug)]
pub struct EventSlot(Arc<AdminStats>);

impl Drop for EventSlot {
    fn drop(&mut self) {
        self.0.event_clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_counted_and_given_back() {
        let stats = Arc::new(AdminStats::default());
        let a = stats.take_event_slot(2).unwrap();
        let _b = stats.take_event_slot(2).unwrap();
        assert!(stats.take_event_slot(2).is_none());
        assert_eq!(stats.snapshot().event_clients_refused, 1);
        drop(a);
        assert_eq!(stats.snapshot().event_clients, 1);
        assert!(stats.take_event_slot(2).is_some());
    }
}
