//! The node's Prometheus metrics, in a registry of its own (two nodes in one process keep
//! separate figures). Labels are bounded: states and transitions, never a peer's key.
//!
//! Counters move as things happen (the event recorder counts transitions); gauges are
//! read from the node when scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::lifecycle::PeerState;
use crate::node::PeerChange;

/// The content type of [`Metrics::encode`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    /// `new` for a peer new to the node.
    from: String,
    to: String,
}

/// What a scrape reads from the node.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Known peers per state (every state, zeros included).
    pub peers: Vec<(PeerState, usize)>,
    pub waiting_slot: usize,
    pub persistence_pending: usize,
}

pub struct Metrics {
    registry: Registry,
    peers: Family<StateLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter<u64, AtomicU64>>,
    waiting_slot: Gauge,
    persistence_pending: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "btp_nips_build_info",
            "The running version (always 1)",
            build,
        );
        let peers = Family::<StateLabels, Gauge>::default();
        for state in PeerState::ALL {
            // Every state from the first scrape on, so a sum over states is the peer count.
            let _ = peers.get_or_create(&StateLabels {
                state: state.as_str().to_string(),
            });
        }
        registry.register(
            "btp_nips_peers",
            "Known peers per lifecycle state",
            peers.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_peer_transitions",
            "Peer state changes (from `new`: a peer new to the node)",
            transitions.clone(),
        );
        let waiting_slot = Gauge::default();
        registry.register(
            "btp_nips_peers_waiting_slot",
            "Wanted peers waiting for a connection slot (btp_nips.peer_connections.max_active_connections)",
            waiting_slot.clone(),
        );
        let persistence_pending = Gauge::default();
        registry.register(
            "btp_nips_persistence_pending",
            "Peer snapshots held by the persistence actor, not yet committed",
            persistence_pending.clone(),
        );
        Metrics {
            registry,
            peers,
            transitions,
            waiting_slot,
            persistence_pending,
        }
    }

    /// Counts one state change.
    pub fn count_transition(&self, change: &PeerChange) {
        let from = change.from.map_or("new", |s| s.as_str());
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.to_string(),
                to: change.record.state.as_str().to_string(),
            })
            .inc();
    }

    /// Sets the gauges from `snapshot` and renders every metric as text.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        for (state, count) in &snapshot.peers {
            self.peers
                .get_or_create(&StateLabels {
                    state: state.as_str().to_string(),
                })
                .set(*count as i64);
        }
        self.waiting_slot.set(snapshot.waiting_slot as i64);
        self.persistence_pending
            .set(snapshot.persistence_pending as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
