//! [`DialQueue`]: peers waiting for the dial budget, best priority first, found by key.
//!
//! The supervisor keeps two of them (stored peers brought back after a restart, and new
//! follows). Ten thousand followed peers sit in them at once while the budget lets them
//! through, and every follow decision, inbound admission and operator lookup asks whether
//! a peer is queued: a lookup is a hash probe, never a walk of the queue.

use std::collections::{BTreeMap, HashMap};

use crate::lifecycle::PeerRecord;

/// Records ordered by (priority, public key), each key at most once.
#[derive(Debug, Default)]
pub struct DialQueue {
    /// The order the budget takes them in.
    order: BTreeMap<(u8, String), PeerRecord>,
    /// Each queued key's priority: its place in `order`.
    priority: HashMap<String, u8>,
}

impl DialQueue {
    /// Queues `record` in its place; a record already queued for the same peer is replaced.
    pub fn push(&mut self, record: PeerRecord) {
        self.remove(&record.nostr_pubkey);
        self.priority
            .insert(record.nostr_pubkey.clone(), record.priority);
        self.order
            .insert((record.priority, record.nostr_pubkey.clone()), record);
    }

    /// The next record the budget lets through.
    pub fn first(&self) -> Option<&PeerRecord> {
        self.order.values().next()
    }

    pub fn pop_first(&mut self) -> Option<PeerRecord> {
        let (_, record) = self.order.pop_first()?;
        self.priority.remove(&record.nostr_pubkey);
        Some(record)
    }

    pub fn get(&self, pubkey: &str) -> Option<&PeerRecord> {
        let priority = *self.priority.get(pubkey)?;
        self.order.get(&(priority, pubkey.to_string()))
    }

    pub fn contains(&self, pubkey: &str) -> bool {
        self.priority.contains_key(pubkey)
    }

    /// Takes `pubkey`'s record out of the queue (a decision about it came before its turn).
    pub fn remove(&mut self, pubkey: &str) -> Option<PeerRecord> {
        let priority = self.priority.remove(pubkey)?;
        self.order.remove(&(priority, pubkey.to_string()))
    }

    /// Every queued record, in the order the budget takes them.
    pub fn iter(&self) -> impl Iterator<Item = &PeerRecord> {
        self.order.values()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl FromIterator<PeerRecord> for DialQueue {
    fn from_iter<I: IntoIterator<Item = PeerRecord>>(records: I) -> Self {
        let mut queue = DialQueue::default();
        for record in records {
            queue.push(record);
        }
        queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Timestamp;

    fn record(pubkey: &str, priority: u8) -> PeerRecord {
        let mut record = PeerRecord::new(pubkey, true, Timestamp(0));
        record.priority = priority;
        record
    }

    fn keys(queue: &DialQueue) -> Vec<&str> {
        queue.iter().map(|r| r.nostr_pubkey.as_str()).collect()
    }

    #[test]
    fn records_leave_best_priority_first_then_by_key() {
        let mut queue: DialQueue = [record("c", 3), record("b", 1), record("a", 3)]
            .into_iter()
            .collect();
        queue.push(record("d", 2));
        assert_eq!(keys(&queue), ["b", "d", "a", "c"]);
        assert_eq!(queue.first().map(|r| r.nostr_pubkey.as_str()), Some("b"));
        let taken: Vec<String> = std::iter::from_fn(|| queue.pop_first())
            .map(|r| r.nostr_pubkey)
            .collect();
        assert_eq!(taken, ["b", "d", "a", "c"]);
        assert!(queue.is_empty() && !queue.contains("b"));
    }

    #[test]
    fn a_peer_is_found_taken_out_and_queued_once() {
        let mut queue: DialQueue = [record("a", 3), record("b", 1)].into_iter().collect();
        assert_eq!(queue.get("a").map(|r| r.priority), Some(3));
        assert!(queue.get("z").is_none());
        // Queued again with a new priority: one entry, in its new place.
        queue.push(record("a", 1));
        assert_eq!(keys(&queue), ["a", "b"]);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.remove("a").map(|r| r.priority), Some(1));
        assert!(queue.remove("a").is_none());
        assert_eq!(keys(&queue), ["b"]);
        assert_eq!(queue.len(), 1);
    }
}
