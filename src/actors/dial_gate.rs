//! [`DialGate`]: the one way the peer actors open sessions. It wraps the session port
//! with the node's dial budget — at most `startup_dial_batch` opens in progress at once,
//! the budget that also paces startup recovery, new follows and the redial after an
//! outage — and tells the supervisor how each dial ended: a run of dials failing
//! unreachable is how the node notices its own network is down, and the first dial that
//! gets through is how it notices the network is back. While an outage is on, a dial that
//! fails unreachable is reported to its peer as the node's own fault, costing it nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix::prelude::*;
use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::lifecycle::peer::NETWORK_OUTAGE;
use crate::ports::{Fault, PeerTarget, Session, SessionConnector};

/// How a dial ended, as far as the node's own network is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// The remote answered: a session opened, or it refused us by its policy.
    Through,
    /// Timed out, refused by the network, dropped: nothing shows the network works.
    Unreachable,
    /// Neither (an endpoint we must not dial, a bad key, a fault of our own).
    Other,
}

/// A dial ended (sent to the supervisor).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DialObserved {
    pub nostr_pubkey: String,
    pub outcome: DialOutcome,
}

/// Counts of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DialGateStats {
    /// Opens in progress (each holds one unit of the budget).
    pub in_flight: usize,
    /// Dials waiting for a unit of the budget.
    pub queued: usize,
    /// Dials that failed while an outage was on, reported as the node's own fault.
    pub outage_dials: u64,
}

pub struct DialGate {
    inner: Arc<dyn SessionConnector>,
    budget: Semaphore,
    /// The outage in progress (its reason), set by the supervisor.
    outage: Mutex<Option<String>>,
    /// Where outcomes go (set once the supervisor runs).
    observer: OnceLock<Recipient<DialObserved>>,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    outage_dials: AtomicU64,
}

/// Counts one dial in `counter` for as long as it lives (a dropped dial ends it too).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DialGate {
    /// `budget`: opens allowed in progress at once (at least 1).
    pub fn new(inner: Arc<dyn SessionConnector>, budget: usize) -> Self {
        DialGate {
            inner,
            budget: Semaphore::new(budget.max(1)),
            outage: Mutex::new(None),
            observer: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            outage_dials: AtomicU64::new(0),
        }
    }

    /// Where dial outcomes are sent from now on (the first call wins).
    pub fn observe(&self, observer: Recipient<DialObserved>) {
        let _ = self.observer.set(observer);
    }

    /// Begins (with its reason) or ends an outage.
    pub fn set_outage(&self, reason: Option<String>) {
        *self.outage.lock().expect("outage lock") = reason;
    }

    pub fn stats(&self) -> DialGateStats {
        DialGateStats {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
            outage_dials: self.outage_dials.load(Ordering::SeqCst),
        }
    }

    fn classify(result: &Result<Arc<dyn Session>, Fault>) -> DialOutcome {
        match result {
            Ok(_) | Err(Fault::Refused(_)) => DialOutcome::Through,
            Err(Fault::Transient(_)) => DialOutcome::Unreachable,
            Err(Fault::Permanent(_) | Fault::Local(_)) => DialOutcome::Other,
        }
    }
}

#[async_trait]
impl SessionConnector for DialGate {
    async fn open(&self, peer: &PeerTarget) -> Result<Arc<dyn Session>, Fault> {
        let permit = {
            let _queued = Counted::new(&self.queued);
            self.budget
                .acquire()
                .await
                .map_err(|_| Fault::Local("the dial budget is closed".into()))?
        };
        let result = {
            let _dialing = Counted::new(&self.in_flight);
            self.inner.open(peer).await
        };
        drop(permit);
        let outcome = Self::classify(&result);
        if let Some(observer) = self.observer.get() {
            observer.do_send(DialObserved {
                nostr_pubkey: peer.nostr_pubkey.clone(),
                outcome,
            });
        }
        match result {
            Err(Fault::Transient(reason)) => {
                let outage = self.outage.lock().expect("outage lock").clone();
                match outage {
                    Some(cause) => {
                        self.outage_dials.fetch_add(1, Ordering::SeqCst);
                        Err(Fault::Local(format!(
                            "{NETWORK_OUTAGE}: {cause}; this dial: {reason}"
                        )))
                    }
                    None => Err(Fault::Transient(reason)),
                }
            }
            other => other,
        }
    }
}
