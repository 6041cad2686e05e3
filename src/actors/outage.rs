//! [`OutageDetector`]: how the node tells its own network outage from its peers' faults.
//! Fed the losses and dials the supervisor sees, with the time, it decides when the node
//! itself is cut off: more than a fraction of its connected peers lost within a short
//! window (and at least a minimum number, so one peer of two is not an outage), or a run
//! of dials to distinct peers all failing unreachable with none getting through. The
//! outage ends with the first dial that gets through. No IO and no clock: the supervisor
//! hands it the time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::PeerConnectionSettings;
use crate::lifecycle::Timestamp;

/// When losses and failed dials mean the node's own network is down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutageRules {
    /// Losses this close together are counted together.
    pub window: Duration,
    /// More than this fraction of the peers connected before the losses must be lost.
    pub loss_fraction: f64,
    /// At least this many peers must be lost.
    pub min_lost_peers: usize,
    /// This many dials in a row to distinct peers failing unreachable, none getting through.
    pub dial_failures: usize,
}

impl From<&PeerConnectionSettings> for OutageRules {
    fn from(s: &PeerConnectionSettings) -> Self {
        OutageRules {
            window: s.outage_window,
            loss_fraction: s.outage_loss_fraction,
            min_lost_peers: s.outage_min_lost_peers,
            dial_failures: s.outage_dial_failures,
        }
    }
}

/// An outage in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub since: Timestamp,
    /// What showed it (e.g. "6 of 10 connected peers lost within 5s").
    pub reason: String,
}

/// What one loss or failed dial means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The peer's own fault, as far as the node can tell.
    PeersFault,
    /// An outage begins now; `peers` are the ones whose losses or dials showed it.
    Began { reason: String, peers: Vec<String> },
    /// An outage is already on: this loss is part of it.
    During { reason: String },
}

#[derive(Debug)]
pub struct OutageDetector {
    rules: OutageRules,
    /// Recent losses of connected peers, oldest first.
    losses: VecDeque<(Timestamp, String)>,
    /// Distinct peers whose dials failed unreachable since a dial last got through.
    failed_dials: Vec<String>,
    active: Option<Outage>,
    /// Outages found so far.
    detected: u64,
}

impl OutageDetector {
    pub fn new(rules: OutageRules) -> Self {
        OutageDetector {
            rules,
            losses: VecDeque::new(),
            failed_dials: Vec::new(),
            active: None,
            detected: 0,
        }
    }

    pub fn active(&self) -> Option<&Outage> {
        self.active.as_ref()
    }

    pub fn detected(&self) -> u64 {
        self.detected
    }

    /// A connected peer was lost (its attempt counted); `still_connected` peers remain.
    pub fn peer_lost(&mut self, pubkey: &str, now: Timestamp, still_connected: usize) -> Verdict {
        if let Some(outage) = &self.active {
            return Verdict::During {
                reason: outage.reason.clone(),
            };
        }
        let window = self.rules.window;
        while self
            .losses
            .front()
            .is_some_and(|(at, _)| now.saturating_since(*at) > window)
        {
            self.losses.pop_front();
        }
        if !self.losses.iter().any(|(_, p)| p == pubkey) {
            self.losses.push_back((now, pubkey.to_owned()));
        }
        let lost = self.losses.len();
        let before = still_connected + lost;
        if lost < self.rules.min_lost_peers
            || lost as f64 <= self.rules.loss_fraction * before as f64
        {
            return Verdict::PeersFault;
        }
        let reason = format!(
            "{lost} of {before} connected peers lost within {}s",
            window.as_secs_f64()
        );
        let peers = self.losses.drain(..).map(|(_, p)| p).collect();
        self.begin(now, reason, peers)
    }

    /// A dial failed unreachable (timed out, refused by the network, dropped).
    pub fn dial_failed(&mut self, pubkey: &str, now: Timestamp) -> Verdict {
        if let Some(outage) = &self.active {
            return Verdict::During {
                reason: outage.reason.clone(),
            };
        }
        if !self.failed_dials.iter().any(|p| p == pubkey) {
            self.failed_dials.push(pubkey.to_owned());
        }
        let failed = self.failed_dials.len();
        if failed < self.rules.dial_failures {
            return Verdict::PeersFault;
        }
        let reason =
            format!("dials to {failed} peers in a row failed unreachable, none got through");
        let peers = std::mem::take(&mut self.failed_dials);
        self.begin(now, reason, peers)
    }

    /// A dial got through (a session opened, or the remote answered with a refusal): the
    /// network works. Returns the outage this ends, if one was on.
    pub fn dial_through(&mut self) -> Option<Outage> {
        self.failed_dials.clear();
        self.losses.clear();
        self.active.take()
    }

    fn begin(&mut self, now: Timestamp, reason: String, peers: Vec<String>) -> Verdict {
        self.detected += 1;
        self.losses.clear();
        self.failed_dials.clear();
        self.active = Some(Outage {
            since: now,
            reason: reason.clone(),
        });
        Verdict::Began { reason, peers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> OutageRules {
        OutageRules {
            window: Duration::from_secs(5),
            loss_fraction: 0.5,
            min_lost_peers: 3,
            dial_failures: 4,
        }
    }

    const T: Timestamp = Timestamp(1_000_000);

    #[test]
    fn more_than_half_of_the_connected_peers_lost_together_is_an_outage() {
        let mut d = OutageDetector::new(rules());
        // 10 connected; losses leave 9, 8, … connected.
        for i in 0..5 {
            let v = d.peer_lost(&format!("p{i}"), T, 9 - i);
            assert_eq!(v, Verdict::PeersFault, "{i}");
        }
        match d.peer_lost("p5", T + Duration::from_secs(4), 4) {
            Verdict::Began { reason, peers } => {
                assert_eq!(reason, "6 of 10 connected peers lost within 5s");
                assert_eq!(peers.len(), 6);
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(d.peer_lost("p6", T, 3), Verdict::During { .. }));
        assert_eq!(d.detected(), 1);
        assert!(d.dial_through().is_some());
        assert!(d.active().is_none());
    }

    #[test]
    fn losses_spread_out_or_too_few_are_the_peers_own() {
        let mut d = OutageDetector::new(rules());
        // One of two: below the minimum.
        assert_eq!(d.peer_lost("a", T, 1), Verdict::PeersFault);
        assert_eq!(d.peer_lost("b", T, 0), Verdict::PeersFault);
        // Six of ten, but more than the window apart.
        let mut d = OutageDetector::new(rules());
        for i in 0..6 {
            let at = T + Duration::from_secs(6 * i as u64);
            assert_eq!(
                d.peer_lost(&format!("p{i}"), at, 9 - i),
                Verdict::PeersFault
            );
        }
        assert_eq!(d.detected(), 0);
    }

    #[test]
    fn a_run_of_failed_dials_to_distinct_peers_is_an_outage_unless_one_gets_through() {
        let mut d = OutageDetector::new(rules());
        for _ in 0..5 {
            assert_eq!(d.dial_failed("same", T), Verdict::PeersFault);
        }
        d.dial_failed("b", T);
        d.dial_failed("c", T);
        assert!(d.dial_through().is_none());
        for p in ["a", "b", "c"] {
            assert_eq!(d.dial_failed(p, T), Verdict::PeersFault);
        }
        assert!(matches!(d.dial_failed("d", T), Verdict::Began { peers, .. } if peers.len() == 4));
    }
}
