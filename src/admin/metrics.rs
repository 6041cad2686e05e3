//! The node's Prometheus metrics, in a registry of its own (two nodes in one process keep
//! separate figures). Labels are bounded: states and transitions, never a peer's key —
//! unless the operator turns on `admin.metrics_per_peer`, which adds a peer's state and
//! heartbeat round trip as series labelled with its pubkey.
//!
//! Counters move as things happen (the event recorder counts transitions); gauges are
//! read from the node when scraped.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::actors::supervisor::Heartbeat;
use crate::lifecycle::{PeerIntent, PeerState, Timestamp};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    /// Whose fault: `peer`, `node` (its own relays, RPC, database, network) or `remote`
    /// (the remote's policy refused us).
    owner: String,
    /// The step it happened at: `discovery`, `session`, `channel`, `connection`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabels {
    relay: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerStateLabels {
    peer: String,
    state: String,
}

/// One peer's figures, for the per-peer series.
#[derive(Debug, Clone)]
pub struct PeerFigures {
    pub pubkey: String,
    pub state: PeerState,
    /// The smoothed heartbeat round trip, in microseconds, once a PONG came.
    pub rtt_us: Option<u32>,
}

/// The series `admin.metrics_per_peer` adds.
struct PerPeer {
    state: Family<PeerStateLabels, Gauge>,
    rtt: Family<PeerLabels, Gauge<f64, AtomicU64>>,
}

/// What a scrape reads from the node. Totals are the node's own counters (monotonic);
/// the metric counters are brought up to them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Known peers per state (every state, zeros included).
    pub peers: Vec<(PeerState, usize)>,
    pub waiting_slot: usize,
    pub persistence_pending: usize,
    pub persistence_write_failures: u64,
    pub records_unwritable: u64,
    pub actor_restarts: u64,
    pub evictions: u64,
    /// Whether the node's own network is down now.
    pub outage: bool,
    pub sessions_inbound: usize,
    pub sessions_outbound: usize,
    /// `(result, total)`: events received from peers, by what was done with them.
    pub events_received: Vec<(&'static str, u64)>,
    /// `(setting, total)`: peers' REQs refused by a serving limit.
    pub reqs_refused: Vec<(&'static str, u64)>,
    /// `(reason, total)`: inbound sessions refused.
    pub inbound_refused: Vec<(&'static str, u64)>,
    /// `(result, total)`: announcement lookups and what relays sent that was ignored.
    pub discovery_lookups: Vec<(&'static str, u64)>,
    /// `(relay, up)`.
    pub relays_up: Vec<(String, bool)>,
    /// `(reason, total)`: admin API requests refused.
    pub admin_refused: Vec<(&'static str, u64)>,
    pub admin_event_clients: usize,
    /// `(reason, total)`: sessions the node closed.
    pub sessions_closed: Vec<(&'static str, u64)>,
    /// Requests refused at `session.max_requests_in_flight`.
    pub requests_refused_in_flight: u64,
    /// Wei locked in this node's open channels (`None`: not read this time; the last
    /// figure stays).
    pub chain_locked_wei: Option<f64>,
    /// Every peer's figures, read only when [`Metrics::per_peer`] is on.
    pub peer_figures: Vec<PeerFigures>,
}

pub struct Metrics {
    registry: Registry,
    peers: Family<StateLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter<u64, AtomicU64>>,
    faults: Family<FaultLabels, Counter<u64, AtomicU64>>,
    connect_duration: Histogram,
    heartbeat_rtt: Histogram,
    heartbeat_timeouts: Counter<u64, AtomicU64>,
    waiting_slot: Gauge,
    persistence_pending: Gauge,
    persistence_write_failures: Counter<u64, AtomicU64>,
    records_unwritable: Counter<u64, AtomicU64>,
    actor_restarts: Counter<u64, AtomicU64>,
    evictions: Counter<u64, AtomicU64>,
    outage: Gauge,
    sessions: Family<DirectionLabels, Gauge>,
    events_received: Family<ResultLabels, Counter<u64, AtomicU64>>,
    reqs_refused: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    inbound_refused: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    discovery_lookups: Family<ResultLabels, Counter<u64, AtomicU64>>,
    relay_up: Family<RelayLabels, Gauge>,
    admin_refused: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    admin_event_clients: Gauge,
    sessions_closed: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    requests_refused_in_flight: Counter<u64, AtomicU64>,
    chain_locked_wei: Gauge<f64, AtomicU64>,
    /// The per-peer series, when `admin.metrics_per_peer` is on.
    per_peer: Option<PerPeer>,
    /// When each peer now in `connecting` entered it (for the connect duration).
    connecting_since: Mutex<HashMap<String, Timestamp>>,
}

/// Brings a metric counter up to the node's own total (which only grows).
fn catch_up(counter: &Counter<u64, AtomicU64>, total: u64) {
    let shown = counter.get();
    if total > shown {
        counter.inc_by(total - shown);
    }
}

impl Metrics {
    /// `per_peer`: add the per-peer series (`admin.metrics_per_peer`).
    pub fn new(per_peer: bool) -> Metrics {
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
        let faults = Family::<FaultLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_peer_faults",
            "Peers lost or failed, by whose fault (peer, node, remote) and the step (discovery, session, channel, connection)",
            faults.clone(),
        );
        let connect_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "btp_nips_connect_duration_seconds",
            "From connecting to connected",
            connect_duration.clone(),
        );
        let heartbeat_rtt = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "btp_nips_heartbeat_rtt_seconds",
            "PING/PONG round trip per PONG (the node's smoothed figure)",
            heartbeat_rtt.clone(),
        );
        let heartbeat_timeouts = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_heartbeat_timeouts",
            "Connections lost because no PONG came within the heartbeat timeout",
            heartbeat_timeouts.clone(),
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
        let persistence_write_failures = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_persistence_write_failures",
            "Batch writes that failed and were retried",
            persistence_write_failures.clone(),
        );
        let records_unwritable = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_persistence_records_unwritable",
            "Peer records no row could hold (the peer was written as failed)",
            records_unwritable.clone(),
        );
        let actor_restarts = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_actor_restarts",
            "Peer actors restarted after a fault",
            actor_restarts.clone(),
        );
        let evictions = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_evictions",
            "Unfollowed peers that gave their slot to a higher-priority peer",
            evictions.clone(),
        );
        let outage = Gauge::default();
        registry.register(
            "btp_nips_network_outage",
            "1 while the node finds its own network down",
            outage.clone(),
        );
        let sessions = Family::<DirectionLabels, Gauge>::default();
        registry.register(
            "btp_nips_sessions",
            "Live BTP sessions (outbound: the connected peers this node dialled)",
            sessions.clone(),
        );
        let events_received = Family::<ResultLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_events_received",
            "Events received from peers, by what was done with them",
            events_received.clone(),
        );
        let reqs_refused = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_reqs_refused",
            "Peers' REQs refused, by the limit (setting) they hit",
            reqs_refused.clone(),
        );
        let inbound_refused = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_inbound_refused",
            "Inbound sockets and sessions refused, by reason",
            inbound_refused.clone(),
        );
        let discovery_lookups = Family::<ResultLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_discovery_lookups",
            "Announcement lookups (REQs, cache hits) and relay events ignored or cut",
            discovery_lookups.clone(),
        );
        let relay_up = Family::<RelayLabels, Gauge>::default();
        registry.register(
            "btp_nips_discovery_relay_up",
            "1 while the node is connected to the discovery relay",
            relay_up.clone(),
        );
        let admin_refused = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_admin_refused",
            "Admin API requests refused (no or wrong token, NIP-98 refused, event-stream clients over admin.max_event_clients)",
            admin_refused.clone(),
        );
        let admin_event_clients = Gauge::default();
        registry.register(
            "btp_nips_admin_event_clients",
            "Clients of the admin event stream now",
            admin_event_clients.clone(),
        );
        let sessions_closed = Family::<ReasonLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "btp_nips_sessions_closed",
            "Sessions the node closed, by the limit that closed them",
            sessions_closed.clone(),
        );
        let requests_refused_in_flight = Counter::<u64, AtomicU64>::default();
        registry.register(
            "btp_nips_requests_refused_in_flight",
            "Peers' requests refused at session.max_requests_in_flight",
            requests_refused_in_flight.clone(),
        );
        let chain_locked_wei = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "btp_nips_chain_locked_wei",
            "Wei this node has locked in payment channels not yet closed (deposits less payouts and refunds; 0 with the chain off)",
            chain_locked_wei.clone(),
        );
        let per_peer = per_peer.then(|| {
            let state = Family::<PeerStateLabels, Gauge>::default();
            registry.register(
                "btp_nips_peer_state",
                "1 for each peer, labelled with its pubkey and its lifecycle state (admin.metrics_per_peer)",
                state.clone(),
            );
            let rtt = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
            registry.register(
                "btp_nips_peer_heartbeat_rtt_seconds",
                "Each peer's smoothed heartbeat round trip, once a PONG came (admin.metrics_per_peer)",
                rtt.clone(),
            );
            PerPeer { state, rtt }
        });
        Metrics {
            registry,
            chain_locked_wei,
            per_peer,
            sessions_closed,
            requests_refused_in_flight,
            admin_refused,
            admin_event_clients,
            peers,
            transitions,
            faults,
            connect_duration,
            heartbeat_rtt,
            heartbeat_timeouts,
            waiting_slot,
            persistence_pending,
            persistence_write_failures,
            records_unwritable,
            actor_restarts,
            evictions,
            outage,
            sessions,
            events_received,
            reqs_refused,
            inbound_refused,
            discovery_lookups,
            relay_up,
            connecting_since: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the per-peer series are on (the scrape then reads every peer's figures).
    pub fn per_peer(&self) -> bool {
        self.per_peer.is_some()
    }

    /// Counts one PONG's round trip.
    pub fn observe_heartbeat(&self, heartbeat: &Heartbeat) {
        self.heartbeat_rtt
            .observe(f64::from(heartbeat.rtt_us) / 1_000_000.0);
    }

    /// Counts a loss or failure by owner and step, and connect durations.
    fn count_fault_and_duration(&self, change: &PeerChange) {
        let record = &change.record;
        let to = record.state;
        {
            let mut since = self
                .connecting_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if to == PeerState::Connecting {
                since.insert(record.nostr_pubkey.clone(), record.updated_at);
            } else if let Some(began) = since.remove(&record.nostr_pubkey) {
                if to == PeerState::Connected {
                    self.connect_duration
                        .observe(record.updated_at.saturating_since(began).as_secs_f64());
                }
            }
        }
        let Some(from) = change.from else { return };
        if !matches!(to, PeerState::Disconnected | PeerState::Failed)
            || record.desired == PeerIntent::Disconnect
        {
            return;
        }
        let reason = record.failure_reason.as_deref().unwrap_or("");
        if reason.starts_with("heartbeat timeout") {
            self.heartbeat_timeouts.inc();
        }
        use crate::lifecycle::peer::{NODE_WAIT_PREFIX, REMOTE_REFUSAL_PREFIX};
        let owner = if reason.starts_with(NODE_WAIT_PREFIX) {
            "node"
        } else if reason.starts_with(REMOTE_REFUSAL_PREFIX) {
            "remote"
        } else {
            "peer"
        };
        let kind = match from {
            PeerState::Discovering => "discovery",
            PeerState::Connecting => "session",
            PeerState::ChannelNeeded | PeerState::ChannelOpening => "channel",
            PeerState::Connected => "connection",
            PeerState::Disconnected | PeerState::Failed => "retry",
        };
        self.faults
            .get_or_create(&FaultLabels {
                owner: owner.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts one state change.
    pub fn count_transition(&self, change: &PeerChange) {
        if change.from == Some(change.record.state) {
            return;
        }
        self.count_fault_and_duration(change);
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
        catch_up(
            &self.persistence_write_failures,
            snapshot.persistence_write_failures,
        );
        catch_up(&self.records_unwritable, snapshot.records_unwritable);
        catch_up(&self.actor_restarts, snapshot.actor_restarts);
        catch_up(&self.evictions, snapshot.evictions);
        self.outage.set(i64::from(snapshot.outage));
        for (direction, n) in [
            ("inbound", snapshot.sessions_inbound),
            ("outbound", snapshot.sessions_outbound),
        ] {
            self.sessions
                .get_or_create(&DirectionLabels {
                    direction: direction.to_string(),
                })
                .set(n as i64);
        }
        let by_result = |family: &Family<ResultLabels, Counter<u64, AtomicU64>>,
                         totals: &[(&'static str, u64)]| {
            for (result, total) in totals {
                let counter = family.get_or_create(&ResultLabels {
                    result: result.to_string(),
                });
                catch_up(&counter, *total);
            }
        };
        by_result(&self.events_received, &snapshot.events_received);
        by_result(&self.discovery_lookups, &snapshot.discovery_lookups);
        let by_reason = |family: &Family<ReasonLabels, Counter<u64, AtomicU64>>,
                         totals: &[(&'static str, u64)]| {
            for (reason, total) in totals {
                let counter = family.get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                });
                catch_up(&counter, *total);
            }
        };
        by_reason(&self.reqs_refused, &snapshot.reqs_refused);
        by_reason(&self.inbound_refused, &snapshot.inbound_refused);
        by_reason(&self.admin_refused, &snapshot.admin_refused);
        by_reason(&self.sessions_closed, &snapshot.sessions_closed);
        catch_up(
            &self.requests_refused_in_flight,
            snapshot.requests_refused_in_flight,
        );
        self.admin_event_clients
            .set(snapshot.admin_event_clients as i64);
        for (relay, up) in &snapshot.relays_up {
            self.relay_up
                .get_or_create(&RelayLabels {
                    relay: relay.clone(),
                })
                .set(i64::from(*up));
        }

        if let Some(wei) = snapshot.chain_locked_wei {
            self.chain_locked_wei.set(wei);
        }
        if let Some(per_peer) = &self.per_peer {
            // Only the peers known now: a forgotten peer's series goes.
            per_peer.state.clear();
            per_peer.rtt.clear();
            for peer in &snapshot.peer_figures {
                per_peer
                    .state
                    .get_or_create(&PeerStateLabels {
                        peer: peer.pubkey.clone(),
                        state: peer.state.as_str().to_string(),
                    })
                    .set(1);
                if let Some(rtt_us) = peer.rtt_us {
                    per_peer
                        .rtt
                        .get_or_create(&PeerLabels {
                            peer: peer.pubkey.clone(),
                        })
                        .set(f64::from(rtt_us) / 1_000_000.0);
                }
            }
        }

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
