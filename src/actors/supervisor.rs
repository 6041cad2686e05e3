//! `PeerSupervisor`: the registry of peers. It starts every peer actor under an actix
//! `Supervisor` (restarted after a fault, see `PeerActor`), stops those that are failed or
//! deliberately disconnected, and keeps at most `max_active_connections` actors running.
//! Followed peers and the inbound peers it admits (they follow us) share those slots: at
//! the limit a peer that is ready to dial first takes the slot of one that does not need it
//! now (in backoff, or waiting for the operator to open a channel), else the slot of the
//! lowest-priority unfollowed one (followed peers and peers whose channel is opening are
//! never evicted; the evicted peer records for whom); a peer that gets no slot waits,
//! recorded as such, and is started, best priority first, when one frees up.
//!
//! On startup it is handed every stored record and brings back the non-terminal ones in
//! priority order, at most `startup_dial_batch` every `startup_dial_interval`: a restart
//! with thousands of peers is not a thundering herd. New follows and the redial after a
//! network outage go through the same budget, and every session open goes through the
//! [`DialGate`], which keeps at most `startup_dial_batch` of them in progress at once.
//!
//! It also watches for the node's own network outage ([`OutageDetector`]): most of its
//! connected peers lost at once, or a run of dials all failing unreachable. Those losses
//! cost the peers no attempt; they wait on the node and are redialled when a dial gets
//! through again.

use std::collections::{BTreeSet, HashMap, VecDeque};

use actix::prelude::*;

use super::clock::NodeClock;
use super::dial_gate::{DialGate, DialObserved, DialOutcome};
use super::dial_queue::DialQueue;
pub use super::notification::Heartbeat;
use super::notification::{FollowChange, FollowSource, Notification};
use super::outage::{OutageDetector, OutageRules, Verdict};
use super::peer::{
    ApproveChannel, ChannelProgressed, Disconnect, Evict, GetRecord, HeartbeatReport, Observed,
    PeerActor, PeerReport, RestartPolicy, Retry, SetFollowed, Shutdown,
};
use super::persistence::{PersistenceActor, RecordTransition, SaveRecord};
use crate::config::PeerConnectionSettings;
use crate::lifecycle::peer::{
    AWAITING_OPERATOR_REASON, CONNECTION_LIMIT_REASON, NETWORK_OUTAGE, NODE_WAIT_PREFIX,
};
use crate::lifecycle::{
    Event, LifecycleConfig, PeerIntent, PeerLifecycle, PeerRecord, PeerState, Timestamp,
};
use crate::ports::{Admission, Ports};

/// How often the end of operators' pauses is checked (a pause ends within this).
const PAUSE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The operator's follow list names this peer (new or again), or the operator connects it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FollowPeer {
    pub nostr_pubkey: String,
    /// Who asked (told to the node's listeners when the peer was not followed before).
    pub by: FollowSource,
}

/// The operator's follow list no longer names this peer: a deliberate disconnect.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct UnfollowPeer {
    pub nostr_pubkey: String,
    pub by: FollowSource,
}

/// The operator's whole follow list, as found at startup: stored peers it no longer names
/// are unfollowed (deliberately disconnected), pubkeys not yet followed are followed.
/// Peers already followed are left as they are (a failed one stays failed).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ReconcileFollows {
    pub followed: Vec<String>,
}

/// The operator disconnects a peer on purpose; it is not reconnected, even after a
/// restart — until retried, or, with a `pause`, until the pause ends.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct DisconnectPeer {
    pub nostr_pubkey: String,
    pub reason: String,
    pub pause: Option<std::time::Duration>,
}

/// Another part of the node observed something about a running peer (the event flow: an
/// event received, a forged one); passed to its actor. Dropped if the peer has no running
/// actor (it is no longer connected, so there is nothing to update).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ObservedPeer {
    pub nostr_pubkey: String,
    pub event: Event,
}

/// The operator retries a failed or deliberately disconnected peer.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct RetryPeer {
    pub nostr_pubkey: String,
}

/// The operator approves opening a channel to a peer in `channel_needed`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct ApproveChannelFor {
    pub nostr_pubkey: String,
    /// The deposit to open with (`None`: the configured one).
    pub deposit_wei: Option<u128>,
}

/// A remote node asks to open a session with us: may it have a slot?
#[derive(Message, Debug, Clone)]
#[rtype(result = "crate::ports::Admission")]
pub struct AdmitInbound {
    pub nostr_pubkey: String,
}

/// A remote node's last inbound session with us ended.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct InboundEnded {
    pub nostr_pubkey: String,
}

/// Why a peer the operator does not follow, which our own dial has not reached, gives its
/// slot back when its session with us ends.
pub const INBOUND_ENDED_REASON: &str =
    "not followed and not reachable by our dial: its session with this node ended";

/// Whether the node dials this stored peer on its own (at startup, or when a slot frees):
/// every peer that wants a connection, except a stranger parked when its session with us
/// ended — the reason it was parked for is what says so, and it survives a restart.
fn dials_by_itself(record: &PeerRecord) -> bool {
    let parked_stranger =
        !record.followed && record.failure_reason.as_deref() == Some(INBOUND_ENDED_REASON);
    record.resumes_on_startup() && !parked_stranger
}

/// Every known peer's latest record, best priority first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<PeerRecord>")]
pub struct ListPeers;

/// The live record of one running peer, asked of its actor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Option<PeerRecord>")]
pub struct PeerSnapshot {
    pub nostr_pubkey: String,
}

/// Counts of the registry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "SupervisorStats")]
pub struct GetSupervisorStats;

/// Stops every peer actor (node shutdown); answered once every one of them has handled
/// its stop, so every change they made is already queued for the persistence actor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StopAllPeers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SupervisorStats {
    /// Peers holding a connection slot (a running actor).
    pub running: usize,
    /// Of those, the ones connected.
    pub connected: usize,
    /// Wanted peers waiting for a slot.
    pub waiting: usize,
    /// Failed, deliberately disconnected or dormant peers.
    pub idle: usize,
    /// Stored peers still queued for the startup dial budget.
    pub recovering: usize,
    /// New peers (follows) queued for the dial budget.
    pub dial_queue: usize,
    /// Session opens in progress (at most `startup_dial_batch`).
    pub dials_in_flight: usize,
    /// Unfollowed peers that gave their slot to a higher-priority one.
    pub evictions: u64,
    /// Peers in backoff or waiting for the operator that gave their slot to a peer ready
    /// to dial.
    pub displaced: u64,
    /// Times the node found its own network down.
    pub outages_detected: u64,
    /// Whether the node's own network is down right now.
    pub outage: bool,
    /// Peer actors restarted after a fault (a panic in an adapter or the lifecycle).
    pub actor_restarts: u64,
}

/// A peer's state changed: what [`crate::node::Node::notifications`] delivers.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerChange {
    /// The state before (`None`: a peer new to the node).
    pub from: Option<PeerState>,
    /// The record after the change (its state, reason, attempts, next attempt).
    pub record: PeerRecord,
}

impl std::fmt::Display for PeerChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        let pubkey = &r.nostr_pubkey[..r.nostr_pubkey.len().min(16)];
        match self.from {
            Some(from) => write!(f, "peer {pubkey}: {from} -> {}", r.state)?,
            None => write!(f, "peer {pubkey}: new, {}", r.state)?,
        }
        if r.desired == PeerIntent::Disconnect {
            write!(f, " (stopped by the operator)")?;
        }
        if let Some(reason) = &r.failure_reason {
            write!(f, ": {reason}")?;
        }
        if let (PeerState::Connected, Some(rtt_us)) = (r.state, r.rtt_us) {
            let rtt = crate::lifecycle::record::Millis(rtt_us);
            write!(f, " (rtt {rtt})")?;
        }
        if let Some(at) = r.next_attempt_at {
            if r.state == PeerState::Disconnected {
                let wait = at.saturating_since(r.updated_at);
                write!(
                    f,
                    "; attempt {} in {}ms",
                    r.reconnect_attempts,
                    wait.as_millis()
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no peer with pubkey {0}")]
    UnknownPeer(String),
    #[error("peer {pubkey} is {state}; {what}")]
    NotApplicable {
        pubkey: String,
        state: PeerState,
        what: &'static str,
    },
}

/// Feeds `event` to a lifecycle built on `record` (no actor, no IO); returns the resulting
/// record and whether it changed.
fn run_offline(
    config: &LifecycleConfig,
    record: PeerRecord,
    event: Event,
    now: Timestamp,
) -> (PeerRecord, bool) {
    let before = record.clone();
    let mut lifecycle = PeerLifecycle::new(record, config.clone(), 0);
    if let Err(e) = lifecycle.handle(event, now) {
        log::debug!("peer {}: {e}", before.nostr_pubkey);
        return (before, false);
    }
    let after = lifecycle.record().clone();
    let changed = after != before;
    (after, changed)
}

/// A peer with a running actor.
struct RunningPeer {
    addr: Addr<PeerActor>,
    /// Its latest reported record (priority, state, followed drive eviction decisions).
    record: PeerRecord,
    /// What this supervisor last decided for the peer. A report sent before the actor
    /// saw a later decision (a stop reported after a new follow) never overrides it.
    wants: PeerIntent,
}

pub struct PeerSupervisor {
    settings: PeerConnectionSettings,
    lifecycle_config: LifecycleConfig,
    restart_policy: RestartPolicy,
    ports: Ports,
    persistence: Addr<PersistenceActor>,
    clock: NodeClock,
    /// Peers holding a connection slot.
    running: HashMap<String, RunningPeer>,
    /// Records of peers without a running actor: waiting, failed, deliberately stopped or
    /// dormant (stored, but `auto_reconnect_on_startup` is off).
    idle: HashMap<String, PeerRecord>,
    /// The subset of `idle` that wants a slot, ordered best priority first.
    waiting: BTreeSet<(u8, String)>,
    /// Stored peers to bring back after a restart, best priority first.
    recovery: DialQueue,
    /// Paces `recovery`, `follow_queue` and `redial_queue` (the dial budget).
    recovery_timer: Option<SpawnHandle>,
    /// Peers the operator paused, by the end of their pause; retried when it passes.
    pauses: BTreeSet<(Timestamp, String)>,
    /// The last generation given out (see [`SaveRecord`]).
    generation: std::cell::Cell<u64>,
    /// Counted by every peer actor when it restarts.
    actor_restarts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// New peers waiting for the dial budget, best priority first.
    follow_queue: DialQueue,
    /// Running peers that waited out a network outage, to be redialled within the budget.
    redial_queue: VecDeque<String>,
    /// Peers let through the dial budget since the current interval began.
    dialed_this_interval: usize,
    /// When the current interval of the dial budget began.
    interval_began: Timestamp,
    /// Every session open of the peers goes through it.
    gate: std::sync::Arc<DialGate>,
    outage: OutageDetector,
    evictions: u64,
    displaced: u64,
    /// Every state change, channel progress, follow and PONG, for whoever listens (the
    /// operator's event stream, the metrics, tests).
    changes: tokio::sync::broadcast::Sender<Notification>,
}

impl PeerSupervisor {
    /// `stored` is every record in the database; the non-terminal ones are brought back.
    /// `channels_required`: whether peers need a payment channel to be connected.
    pub fn new(
        settings: PeerConnectionSettings,
        ports: Ports,
        persistence: Addr<PersistenceActor>,
        clock: NodeClock,
        stored: Vec<PeerRecord>,
        changes: tokio::sync::broadcast::Sender<Notification>,
        channels_required: bool,
    ) -> Self {
        let lifecycle_config = LifecycleConfig {
            channels_required,
            ..LifecycleConfig::from(&settings)
        };
        let mut idle = HashMap::new();
        let mut recovery = Vec::new();
        for record in stored {
            if dials_by_itself(&record) && settings.auto_reconnect_on_startup {
                // What the record says as of now: a session that was "connected" did not
                // survive the restart.
                let (record, _) =
                    run_offline(&lifecycle_config, record, Event::Resume, clock.now());
                recovery.push(record);
            } else {
                idle.insert(record.nostr_pubkey.clone(), record);
            }
        }
        // Paused before a restart: the pause still ends when it was meant to.
        let pauses = idle
            .values()
            .filter_map(|r| Some((r.paused_until()?, r.nostr_pubkey.clone())))
            .collect();
        let gate = std::sync::Arc::new(DialGate::new(
            ports.sessions.clone(),
            settings.startup_dial_batch,
        ));
        let ports = Ports {
            sessions: gate.clone(),
            ..ports
        };
        let outage = OutageDetector::new(OutageRules::from(&settings));
        PeerSupervisor {
            lifecycle_config,
            restart_policy: RestartPolicy {
                max_restarts: settings.max_restarts,
                window: settings.restart_window,
            },
            settings,
            ports,
            persistence,
            clock,
            running: HashMap::new(),
            idle,
            waiting: BTreeSet::new(),
            recovery: recovery.into_iter().collect(),
            recovery_timer: None,
            pauses,
            actor_restarts: Default::default(),
            generation: std::cell::Cell::new(0),
            follow_queue: DialQueue::default(),
            redial_queue: VecDeque::new(),
            dialed_this_interval: 0,
            interval_began: Timestamp::default(),
            gate,
            outage,
            evictions: 0,
            displaced: 0,
            changes,
        }
    }

    fn limit(&self) -> usize {
        self.settings.max_active_connections
    }

    /// Logs and broadcasts a change of state (or of the operator's intent); other changes
    /// (a heartbeat, a cursor) are not news.
    fn announce_change(&self, before: Option<&PeerRecord>, after: &PeerRecord) {
        if before.is_none_or(|b| b.state != after.state) {
            self.persistence
                .do_send(RecordTransition(crate::lifecycle::record::PeerTransition {
                    nostr_pubkey: after.nostr_pubkey.clone(),
                    from: before.map(|b| b.state),
                    to: after.state,
                    reason: after.failure_reason.clone(),
                    at: self.clock.now(),
                }));
        }
        let news = match before {
            None => true,
            Some(b) => b.state != after.state || b.desired != after.desired,
        };
        let listened = self.changes.receiver_count() > 0;
        if !news || !(listened || log::log_enabled!(log::Level::Info)) {
            return;
        }
        let change = PeerChange {
            from: before.map(|b| b.state),
            record: after.clone(),
        };
        log::info!("{change}");
        if listened {
            let _ = self.changes.send(Notification::State(Box::new(change)));
        }
    }

    /// Tells the listeners, if any.
    fn notify(&self, news: impl FnOnce() -> Notification) {
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(news());
        }
    }

    /// Tells the listeners that `pubkey` is now followed (or not), if that is news.
    fn announce_follow(&self, pubkey: &str, was_followed: bool, followed: bool, by: FollowSource) {
        if was_followed == followed {
            return;
        }
        log::info!(
            "peer {}: {} by the {}",
            &pubkey[..pubkey.len().min(16)],
            if followed { "followed" } else { "unfollowed" },
            match by {
                FollowSource::FollowList => "follow list",
                FollowSource::Operator => "operator",
            }
        );
        self.notify(|| {
            Notification::Follow(FollowChange {
                nostr_pubkey: pubkey.to_owned(),
                followed,
                by,
                at: self.clock.now(),
            })
        });
    }

    /// Whether the registry holds `pubkey` as followed.
    fn is_followed(&self, pubkey: &str) -> bool {
        self.running
            .get(pubkey)
            .map(|p| &p.record)
            .or_else(|| self.idle.get(pubkey))
            .or_else(|| self.queued_record(pubkey))
            .is_some_and(|r| r.followed)
    }

    /// Retries every paused peer whose pause has ended and that is still paused as it was
    /// (not retried, re-paused or disconnected for good meanwhile).
    fn end_pauses(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        while let Some((until, pubkey)) = self.pauses.first().cloned() {
            if until > now {
                break;
            }
            self.pauses.pop_first();
            let still_paused = self
                .idle
                .get(&pubkey)
                .is_some_and(|r| r.paused_until() == Some(until));
            if still_paused {
                log::info!("peer {pubkey}: the operator's pause ended; retrying");
                let _ = Handler::handle(
                    self,
                    RetryPeer {
                        nostr_pubkey: pubkey,
                    },
                    ctx,
                );
            }
        }
    }

    /// Starts `record`'s actor if a slot is free, or can be taken from a peer that does
    /// not need it now or from a lower-priority one; otherwise records it as waiting.
    fn admit(&mut self, record: PeerRecord, ctx: &mut Context<Self>) {
        if self.running.len() >= self.limit() && !self.make_room_for(&record, ctx) {
            self.wait_for_slot(record);
            return;
        }
        self.start(record, ctx);
    }

    /// The lowest-priority running peer worse than `priority`, if any may be evicted.
    fn eviction_candidate(&self, priority: u8) -> Option<String> {
        self.running
            .iter()
            .filter(|(_, p)| !p.record.followed && p.record.state != PeerState::ChannelOpening)
            .max_by(|(ka, a), (kb, b)| (a.record.priority, *ka).cmp(&(b.record.priority, *kb)))
            .filter(|(_, p)| p.record.priority > priority)
            .map(|(k, _)| k.clone())
    }

    /// Takes `pubkey`'s slot for `newcomer`, recording for whom on the evicted peer.
    fn evict(&mut self, pubkey: &str, newcomer: &PeerRecord) {
        if let Some(peer) = self.running.remove(pubkey) {
            let reason = format!(
                "evicted for {} (priority {} < {})",
                newcomer.nostr_pubkey, newcomer.priority, peer.record.priority
            );
            log::info!("peer {pubkey} {reason} at the connection limit");
            self.evictions += 1;
            self.stop_for_slot(peer, reason);
        }
    }

    /// Stops a running peer that gives up its slot; its record waits for the next one.
    fn stop_for_slot(&mut self, peer: RunningPeer, reason: String) {
        peer.addr.do_send(Evict {
            reason: reason.clone(),
        });
        peer.addr.do_send(Shutdown);
        let record = self.apply_offline(peer.record, Event::EvictedFor { reason }, false);
        self.park(record);
    }

    /// A wanted peer without a slot: recorded as waiting, started when one frees up.
    fn wait_for_slot(&mut self, record: PeerRecord) {
        let record = self.apply_offline(record, Event::Evicted, true);
        self.park(record);
    }

    fn park(&mut self, record: PeerRecord) {
        if let Some(until) = record.paused_until() {
            self.pauses.insert((until, record.nostr_pubkey.clone()));
        }
        if dials_by_itself(&record) {
            self.waiting
                .insert((record.priority, record.nostr_pubkey.clone()));
        }
        self.idle.insert(record.nostr_pubkey.clone(), record);
    }

    fn unpark(&mut self, pubkey: &str) -> Option<PeerRecord> {
        let record = self.idle.remove(pubkey)?;
        self.waiting
            .remove(&(record.priority, record.nostr_pubkey.clone()));
        Some(record)
    }

    /// Runs the lifecycle on a record that has no actor, and persists the result.
    fn apply_offline(&self, record: PeerRecord, event: Event, persist: bool) -> PeerRecord {
        let before = record.clone();
        let (after, changed) = run_offline(&self.lifecycle_config, record, event, self.clock.now());
        if changed {
            self.announce_change(Some(&before), &after);
        }
        if persist && changed {
            self.save(after.clone());
        }
        after
    }

    /// A new generation: higher than every actor started and every decision saved before.
    fn next_generation(&self) -> u64 {
        let next = self.generation.get() + 1;
        self.generation.set(next);
        next
    }

    /// Saves a decision the supervisor made for a peer without a running actor: a late
    /// snapshot of an actor stopped before it can never overwrite it.
    fn save(&self, record: PeerRecord) {
        self.persistence.do_send(SaveRecord {
            record,
            generation: self.next_generation(),
        });
    }

    fn start(&mut self, record: PeerRecord, ctx: &mut Context<Self>) {
        let pubkey = record.nostr_pubkey.clone();
        let config = self.lifecycle_config.clone();
        let policy = self.restart_policy;
        let ports = self.ports.clone();
        let persistence = self.persistence.clone();
        let me = ctx.address().recipient();
        let progress = ctx.address().recipient();
        let heartbeats = ctx.address().recipient();
        let clock = self.clock;
        let initial = record.clone();
        let restarts = self.actor_restarts.clone();
        let generation = self.next_generation();
        let addr = Supervisor::start(move |_| {
            PeerActor::new(initial, config, policy, ports, persistence, me, clock)
                .counting_restarts(restarts)
                .with_generation(generation)
                .reporting_channels(progress)
                .reporting_heartbeats(heartbeats)
        });
        let wants = record.desired;
        self.running.insert(
            pubkey,
            RunningPeer {
                addr,
                record,
                wants,
            },
        );
    }

    /// Stops a running peer for good and keeps its record.
    fn retire(&mut self, pubkey: &str, ctx: &mut Context<Self>) {
        if let Some(peer) = self.running.remove(pubkey) {
            peer.addr.do_send(Shutdown);
            self.park(peer.record);
            self.fill_slots(ctx);
        }
    }

    /// Gives free slots to waiting peers, best priority first (those ready to dial
    /// before those still in backoff).
    fn fill_slots(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.limit() {
            let Some(pubkey) = self.next_waiter(false) else {
                break;
            };
            if let Some(record) = self.unpark(&pubkey) {
                self.start(record, ctx);
            }
        }
    }

    /// Explicit retry or new follow of a peer without an actor: back to discovering.
    fn bring_back(&mut self, record: PeerRecord, followed: Option<bool>, ctx: &mut Context<Self>) {
        let record = self.apply_offline(record, Event::RetryRequested, true);
        let record = match followed {
            Some(f) => self.apply_offline(record, Event::FollowChanged { followed: f }, true),
            None => record,
        };
        self.admit(record, ctx);
    }

    fn running_or_unknown(&self, pubkey: &str) -> Result<(), SupervisorError> {
        let queued = self.recovery.contains(pubkey) || self.follow_queue.contains(pubkey);
        if self.running.contains_key(pubkey) || self.idle.contains_key(pubkey) || queued {
            Ok(())
        } else {
            Err(SupervisorError::UnknownPeer(pubkey.to_string()))
        }
    }

    /// Takes a stored peer out of the startup recovery queue (an operator or follow-list
    /// decision about it comes before its turn).
    fn take_recovering(&mut self, pubkey: &str) -> Option<PeerRecord> {
        self.recovery
            .remove(pubkey)
            .or_else(|| self.follow_queue.remove(pubkey))
    }

    /// `pubkey`'s record if it waits for the dial budget.
    fn queued_record(&self, pubkey: &str) -> Option<&PeerRecord> {
        self.recovery
            .get(pubkey)
            .or_else(|| self.follow_queue.get(pubkey))
    }

    /// Every record queued for the dial budget (stored peers, then new follows).
    fn queued(&self) -> impl Iterator<Item = &PeerRecord> {
        self.recovery.iter().chain(self.follow_queue.iter())
    }
}

impl Actor for PeerSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::info!(
            "supervisor: {} stored peers to bring back, {} idle",
            self.recovery.len(),
            self.idle.len()
        );
        ctx.run_interval(PAUSE_CHECK_INTERVAL, |act, ctx| act.end_pauses(ctx));
        self.gate.observe(ctx.address().recipient());
        self.pump_dials(ctx);
    }
}

impl Handler<PeerReport> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, PeerReport(record): PeerReport, ctx: &mut Self::Context) {
        let pubkey = record.nostr_pubkey.clone();
        let stopped = record.desired == PeerIntent::Disconnect;
        if let Some(peer) = self.running.get(&pubkey) {
            // A stop the supervisor has since overruled (followed or retried again) is a
            // report from before the actor saw that: not the end of the peer.
            let finished = record.state == PeerState::Failed
                || (stopped && peer.wants == PeerIntent::Disconnect);
            self.announce_change(Some(&peer.record), &record);
            if let (Some(rtt_us), Some(at)) = (record.rtt_us, record.last_heartbeat) {
                if record.last_heartbeat != peer.record.last_heartbeat {
                    self.notify(|| {
                        Notification::Heartbeat(Heartbeat {
                            nostr_pubkey: pubkey.as_str().into(),
                            rtt_us,
                            at,
                        })
                    });
                }
            }
            let before = std::mem::replace(
                &mut self.running.get_mut(&pubkey).expect("running").record,
                record,
            );
            if finished {
                self.retire(&pubkey, ctx);
            } else {
                self.watch_for_outage(&before, ctx);
                self.offer_unneeded_slot(&pubkey, ctx);
            }
        } else if let Some(idle) = self
            .idle
            .get(&pubkey)
            .filter(|idle| idle.updated_at <= record.updated_at)
        {
            // A late report from an actor already stopped (e.g. its eviction write).
            self.announce_change(Some(idle), &record);
            self.unpark(&pubkey);
            self.park(record);
        }
    }
}

impl Handler<HeartbeatReport> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, report: HeartbeatReport, _ctx: &mut Self::Context) {
        let Some(peer) = self.running.get_mut(&*report.nostr_pubkey) else {
            return;
        };
        if peer.record.last_heartbeat == Some(report.at) {
            return;
        }
        peer.record.rtt_us = Some(report.rtt_us);
        peer.record.last_heartbeat = Some(report.at);
        let HeartbeatReport {
            nostr_pubkey,
            rtt_us,
            at,
        } = report;
        self.notify(|| {
            Notification::Heartbeat(Heartbeat {
                nostr_pubkey,
                rtt_us,
                at,
            })
        });
    }
}

impl Handler<ChannelProgressed> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, ChannelProgressed(progress): ChannelProgressed, _ctx: &mut Self::Context) {
        log::debug!(
            "peer {}: open {} has {}/{} confirmations{}",
            &progress.nostr_pubkey[..progress.nostr_pubkey.len().min(16)],
            progress.tx_hash,
            progress.confirmations,
            progress.required,
            progress
                .channel_id
                .as_deref()
                .map(|id| format!(": channel {id}"))
                .unwrap_or_default()
        );
        self.notify(|| Notification::Channel(progress));
    }
}

impl Handler<FollowPeer> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: FollowPeer, ctx: &mut Self::Context) {
        let pubkey = msg.nostr_pubkey;
        self.announce_follow(&pubkey, self.is_followed(&pubkey), true, msg.by);
        if let Some(peer) = self.running.get_mut(&pubkey) {
            peer.record.followed = true;
            peer.addr.do_send(SetFollowed(true));
            if peer.wants == PeerIntent::Disconnect {
                // A stop is on its way to the actor (an unfollow just before): undo it.
                peer.wants = PeerIntent::Connect;
                peer.addr.do_send(Retry);
            }
        } else if let Some(record) = self.unpark(&pubkey) {
            // Followed anew: a failed or deliberately stopped peer comes back too.
            self.bring_back(record, Some(true), ctx);
        } else if let Some(record) = self.take_recovering(&pubkey) {
            // Still queued for the startup dial budget: followed now, it goes first.
            let record = self.apply_offline(record, Event::FollowChanged { followed: true }, true);
            self.admit(record, ctx);
        } else {
            let record = PeerRecord::new(pubkey, true, self.clock.now());
            self.announce_change(None, &record);
            self.save(record.clone());
            // Through the dial budget: a long follow list is dialled in batches.
            self.queue_dial(record, ctx);
        }
    }
}

impl Handler<UnfollowPeer> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: UnfollowPeer, _ctx: &mut Self::Context) {
        let reason = "unfollowed".to_string();
        let pubkey = msg.nostr_pubkey;
        self.announce_follow(&pubkey, self.is_followed(&pubkey), false, msg.by);
        if let Some(peer) = self.running.get_mut(&pubkey) {
            peer.record.followed = false;
            peer.wants = PeerIntent::Disconnect;
            peer.addr.do_send(SetFollowed(false));
            peer.addr.do_send(Disconnect {
                reason,
                until: None,
            });
        } else if let Some(record) = self.unpark(&pubkey) {
            let record =
                self.apply_offline(record, Event::FollowChanged { followed: false }, false);
            let record = self.apply_offline(record, Event::DisconnectRequested { reason }, true);
            self.park(record);
        } else if let Some(record) = self.take_recovering(&pubkey) {
            let record =
                self.apply_offline(record, Event::FollowChanged { followed: false }, false);
            let record = self.apply_offline(record, Event::DisconnectRequested { reason }, true);
            self.park(record);
        }
    }
}

impl Handler<ReconcileFollows> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ReconcileFollows, ctx: &mut Self::Context) {
        let wanted: std::collections::HashSet<String> = msg.followed.into_iter().collect();
        let followed_now: Vec<String> = self
            .running
            .values()
            .map(|p| &p.record)
            .chain(self.idle.values())
            .chain(self.queued())
            .filter(|r| r.followed)
            .map(|r| r.nostr_pubkey.clone())
            .collect();
        let (mut unfollowed, mut followed) = (0usize, 0usize);
        for pubkey in &followed_now {
            if !wanted.contains(pubkey) {
                unfollowed += 1;
                let nostr_pubkey = pubkey.clone();
                let by = FollowSource::FollowList;
                Handler::handle(self, UnfollowPeer { nostr_pubkey, by }, ctx);
            }
        }
        let already: std::collections::HashSet<&String> = followed_now.iter().collect();
        let mut new: Vec<&String> = wanted.iter().filter(|p| !already.contains(p)).collect();
        new.sort();
        for pubkey in new {
            followed += 1;
            let nostr_pubkey = pubkey.clone();
            let by = FollowSource::FollowList;
            Handler::handle(self, FollowPeer { nostr_pubkey, by }, ctx);
        }
        log::info!("follow list reconciled: {followed} followed, {unfollowed} unfollowed");
    }
}

impl Handler<DisconnectPeer> for PeerSupervisor {
    type Result = Result<(), SupervisorError>;
    fn handle(&mut self, msg: DisconnectPeer, _ctx: &mut Self::Context) -> Self::Result {
        self.running_or_unknown(&msg.nostr_pubkey)?;
        let until = msg.pause.map(|pause| self.clock.now() + pause);
        if let Some(peer) = self.running.get_mut(&msg.nostr_pubkey) {
            peer.wants = PeerIntent::Disconnect;
            peer.addr.do_send(Disconnect {
                reason: msg.reason,
                until,
            });
        } else if let Some(record) = self
            .unpark(&msg.nostr_pubkey)
            .or_else(|| self.take_recovering(&msg.nostr_pubkey))
        {
            let event = match until {
                None => Event::DisconnectRequested { reason: msg.reason },
                Some(until) => Event::PauseRequested {
                    reason: msg.reason,
                    until,
                },
            };
            let record = self.apply_offline(record, event, true);
            self.park(record);
        }
        Ok(())
    }
}

impl Handler<ObservedPeer> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ObservedPeer, _ctx: &mut Self::Context) {
        match self.running.get(&msg.nostr_pubkey) {
            Some(peer) => peer.addr.do_send(Observed(msg.event)),
            None => log::debug!(
                "peer {}: {:?} observed with no running actor; dropped",
                msg.nostr_pubkey,
                msg.event
            ),
        }
    }
}

impl Handler<RetryPeer> for PeerSupervisor {
    type Result = Result<(), SupervisorError>;
    fn handle(&mut self, msg: RetryPeer, ctx: &mut Self::Context) -> Self::Result {
        self.running_or_unknown(&msg.nostr_pubkey)?;
        if let Some(peer) = self.running.get_mut(&msg.nostr_pubkey) {
            // A peer on its way (or connected) has nothing to retry; saying so beats a
            // silent no-op. One being stopped is taken back.
            let stopping = peer.wants == PeerIntent::Disconnect;
            if !stopping
                && !matches!(
                    peer.record.state,
                    PeerState::Failed | PeerState::Disconnected
                )
            {
                return Err(SupervisorError::NotApplicable {
                    pubkey: msg.nostr_pubkey,
                    state: peer.record.state,
                    what: "only a failed or disconnected peer can be retried",
                });
            }
            peer.wants = PeerIntent::Connect;
            peer.addr.do_send(Retry);
        } else if let Some(record) = self.unpark(&msg.nostr_pubkey) {
            self.bring_back(record, None, ctx);
        } else if let Some(record) = self.take_recovering(&msg.nostr_pubkey) {
            // Queued for the startup dial budget: the operator's retry goes first.
            self.admit(record, ctx);
        }
        Ok(())
    }
}

impl Handler<ApproveChannelFor> for PeerSupervisor {
    type Result = Result<(), SupervisorError>;
    fn handle(&mut self, msg: ApproveChannelFor, _ctx: &mut Self::Context) -> Self::Result {
        match self.running.get(&msg.nostr_pubkey) {
            Some(peer) if peer.record.state == PeerState::ChannelNeeded => {
                peer.addr.do_send(ApproveChannel {
                    deposit_wei: msg.deposit_wei,
                });
                Ok(())
            }
            Some(peer) => Err(SupervisorError::NotApplicable {
                pubkey: msg.nostr_pubkey,
                state: peer.record.state,
                what: "a channel can only be approved in channel_needed",
            }),
            None => Err(SupervisorError::UnknownPeer(msg.nostr_pubkey)),
        }
    }
}

impl Handler<AdmitInbound> for PeerSupervisor {
    type Result = MessageResult<AdmitInbound>;
    fn handle(&mut self, msg: AdmitInbound, ctx: &mut Self::Context) -> Self::Result {
        let pubkey = msg.nostr_pubkey;
        let known = self
            .running
            .get(&pubkey)
            .map(|p| &p.record)
            .or_else(|| self.idle.get(&pubkey))
            .or_else(|| self.queued_record(&pubkey));
        let admission = match known {
            // The operator's stop holds for both directions, followed or not.
            Some(record) if record.desired == PeerIntent::Disconnect => Admission::Refused {
                reason: "disconnected by the operator".into(),
            },
            // Known means followed: a stranger met before is still a stranger to the
            // session server, counted against `session.max_unknown_inbound` and closed when
            // idle (else keys registered once would come back without either bound).
            Some(record) if self.running.contains_key(&pubkey) || record.followed => {
                Admission::Admitted {
                    known: record.followed,
                }
            }
            Some(_) if self.running.len() < self.limit() => Admission::Admitted { known: false },
            None if self.running.len() < self.limit() => {
                // A peer that follows us is recorded and managed like any other: it takes
                // a slot now, and gives it up to a better peer at the limit.
                self.record_inbound(&pubkey, ctx);
                Admission::Admitted { known: false }
            }
            // At the limit only followed or running peers get in: a newcomer starts with
            // the worst priority, so it outranks no running peer (admission evicts the
            // moment a better peer wants a slot).
            _ => Admission::Refused {
                reason: format!(
                    "connection limit (btp_nips.peer_connections.max_active_connections: {}) \
                     reached",
                    self.limit()
                ),
            },
        };
        MessageResult(admission)
    }
}

impl Handler<InboundEnded> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: InboundEnded, ctx: &mut Self::Context) {
        let pubkey = msg.nostr_pubkey;
        // Only a stranger our own dial never reached: one we connected to holds its slot
        // like any peer, and a channel being opened keeps it (its deposit is in flight).
        let gives_back = self.running.get(&pubkey).is_some_and(|p| {
            !p.record.followed
                && !matches!(
                    p.record.state,
                    PeerState::Connected | PeerState::ChannelOpening
                )
        });
        if !gives_back {
            return;
        }
        if let Some(peer) = self.running.remove(&pubkey) {
            log::info!("peer {pubkey}: {INBOUND_ENDED_REASON}; its slot is free");
            // It waits for no slot (see `dials_by_itself`): it comes back by its own
            // session, or not at all.
            self.stop_for_slot(peer, INBOUND_ENDED_REASON.to_string());
            self.fill_slots(ctx);
        }
    }
}

impl Handler<ListPeers> for PeerSupervisor {
    type Result = MessageResult<ListPeers>;
    fn handle(&mut self, _: ListPeers, _ctx: &mut Self::Context) -> Self::Result {
        let mut all: Vec<PeerRecord> = self
            .running
            .values()
            .map(|p| p.record.clone())
            .chain(self.idle.values().cloned())
            .chain(self.queued().cloned())
            .collect();
        all.sort_by(|a, b| (a.priority, &a.nostr_pubkey).cmp(&(b.priority, &b.nostr_pubkey)));
        MessageResult(all)
    }
}

impl Handler<PeerSnapshot> for PeerSupervisor {
    type Result = ResponseFuture<Option<PeerRecord>>;
    fn handle(&mut self, msg: PeerSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        match self.running.get(&msg.nostr_pubkey) {
            Some(peer) => {
                let request = peer.addr.send(GetRecord);
                Box::pin(async move { request.await.ok() })
            }
            None => {
                let record = self
                    .idle
                    .get(&msg.nostr_pubkey)
                    .or_else(|| self.queued_record(&msg.nostr_pubkey))
                    .cloned();
                Box::pin(async move { record })
            }
        }
    }
}

impl Handler<GetSupervisorStats> for PeerSupervisor {
    type Result = MessageResult<GetSupervisorStats>;
    fn handle(&mut self, _: GetSupervisorStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(SupervisorStats {
            running: self.running.len(),
            connected: self
                .running
                .values()
                .filter(|p| p.record.state == PeerState::Connected)
                .count(),
            waiting: self.waiting.len(),
            idle: self.idle.len() - self.waiting.len(),
            recovering: self.recovery.len(),
            dial_queue: self.follow_queue.len(),
            dials_in_flight: self.gate.stats().in_flight,
            evictions: self.evictions,
            displaced: self.displaced,
            outages_detected: self.outage.detected(),
            outage: self.outage.active().is_some(),
            actor_restarts: self
                .actor_restarts
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

impl Handler<StopAllPeers> for PeerSupervisor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: StopAllPeers, ctx: &mut Self::Context) -> Self::Result {
        if let Some(timer) = self.recovery_timer.take() {
            ctx.cancel_future(timer);
        }
        let mut stopping = Vec::with_capacity(self.running.len());
        for (_, peer) in self.running.drain() {
            // The request holds no address: once the actor stops, nothing keeps it alive
            // (an address still held would make actix restart it).
            stopping.push(peer.addr.send(Shutdown));
            self.idle
                .insert(peer.record.nostr_pubkey.clone(), peer.record);
        }
        Box::pin(async move {
            // An actor that is already gone has nothing left to say.
            futures::future::join_all(stopping).await;
        })
    }
}

/// The dial budget: stored peers, new follows and the redial after an outage, at most
/// `startup_dial_batch` every `startup_dial_interval`.
impl PeerSupervisor {
    /// Queues a new peer for the dial budget (best priority first) and lets through what
    /// the budget allows now.
    fn queue_dial(&mut self, record: PeerRecord, ctx: &mut Context<Self>) {
        self.follow_queue.push(record);
        self.pump_dials(ctx);
    }

    /// Lets through as many queued dials as the current interval has budget for, best
    /// priority first; runs the interval timer while anything is left.
    fn pump_dials(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        if self.recovery_timer.is_none()
            && now.saturating_since(self.interval_began) >= self.settings.startup_dial_interval
        {
            self.begin_interval(now);
        }
        while self.dialed_this_interval < self.settings.startup_dial_batch {
            if let Some(pubkey) = self.redial_queue.pop_front() {
                if let Some(peer) = self.running.get(&pubkey) {
                    peer.addr.do_send(Observed(Event::NetworkRestored));
                    self.dialed_this_interval += 1;
                }
                continue;
            }
            let from_follows = match (self.recovery.first(), self.follow_queue.first()) {
                (Some(stored), Some(new)) => {
                    (new.priority, &new.nostr_pubkey) < (stored.priority, &stored.nostr_pubkey)
                }
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => break,
            };
            let next = if from_follows {
                self.follow_queue.pop_first()
            } else {
                self.recovery.pop_first()
            };
            if let Some(record) = next {
                self.dialed_this_interval += 1;
                self.admit(record, ctx);
            }
        }
        let pending = !(self.recovery.is_empty()
            && self.follow_queue.is_empty()
            && self.redial_queue.is_empty());
        match (pending, self.recovery_timer.take()) {
            (true, None) => {
                let every = self.settings.startup_dial_interval;
                self.recovery_timer = Some(ctx.run_interval(every, |act, ctx| {
                    act.begin_interval(act.clock.now());
                    act.pump_dials(ctx);
                }));
            }
            (false, Some(timer)) => {
                ctx.cancel_future(timer);
            }
            (true, Some(timer)) => self.recovery_timer = Some(timer),
            (false, None) => {}
        }
    }

    fn begin_interval(&mut self, now: Timestamp) {
        self.dialed_this_interval = 0;
        self.interval_began = now;
    }
}

/// Slots: who may take one at the limit, and who gives one up.
impl PeerSupervisor {
    /// At the limit: frees a slot for `newcomer` (ready to dial) from a running peer that
    /// does not need it now, else from a lower-priority evictable one. False: no room.
    fn make_room_for(&mut self, newcomer: &PeerRecord, ctx: &mut Context<Self>) -> bool {
        if let Some(idle) = self.unneeded_slot(&newcomer.nostr_pubkey) {
            self.displace(&idle, &newcomer.nostr_pubkey, ctx);
            return true;
        }
        match self.eviction_candidate(newcomer.priority) {
            Some(victim) => {
                self.evict(&victim, newcomer);
                true
            }
            None => false,
        }
    }

    /// Whether a running peer holds its slot without using it: in backoff (its next
    /// attempt is still ahead) or waiting for the operator to open a channel.
    fn holds_unneeded_slot(record: &PeerRecord, now: Timestamp) -> bool {
        match record.state {
            PeerState::Disconnected => {
                record.desired == PeerIntent::Connect
                    && record.next_attempt_at.is_some_and(|at| at > now)
            }
            PeerState::ChannelNeeded => {
                record.failure_reason.as_deref() == Some(AWAITING_OPERATOR_REASON)
            }
            _ => false,
        }
    }

    /// The worst-priority running peer (other than `except`) holding a slot it does not use.
    fn unneeded_slot(&self, except: &str) -> Option<String> {
        let now = self.clock.now();
        self.running
            .iter()
            .filter(|(k, p)| k.as_str() != except && Self::holds_unneeded_slot(&p.record, now))
            .max_by(|(ka, a), (kb, b)| (a.record.priority, *ka).cmp(&(b.record.priority, *kb)))
            .map(|(k, _)| k.clone())
    }

    /// Stops a running peer that does not use its slot now, for `for_pubkey`. One in
    /// backoff keeps its reason and next attempt, and competes for a slot again then.
    fn displace(&mut self, pubkey: &str, for_pubkey: &str, ctx: &mut Context<Self>) {
        let Some(peer) = self.running.remove(pubkey) else {
            return;
        };
        self.displaced += 1;
        let due = (peer.record.state == PeerState::Disconnected)
            .then_some(peer.record.next_attempt_at)
            .flatten();
        log::info!(
            "peer {pubkey} ({}) gives its slot to {for_pubkey}, ready to dial",
            peer.record.state
        );
        let reason = format!("{CONNECTION_LIMIT_REASON} (gave it to {for_pubkey})");
        self.stop_for_slot(peer, reason);
        if let Some(at) = due {
            let wait = at.saturating_since(self.clock.now());
            let pubkey = pubkey.to_owned();
            ctx.run_later(wait, move |act, ctx| act.wake_waiter(&pubkey, ctx));
        }
    }

    /// A displaced peer's backoff is over: it competes for a slot like any peer ready to
    /// dial (it waits again if there is none for it).
    fn wake_waiter(&mut self, pubkey: &str, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let due = self.idle.get(pubkey).is_some_and(|r| {
            self.waiting.contains(&(r.priority, r.nostr_pubkey.clone()))
                && r.next_attempt_at.is_none_or(|at| at <= now)
        });
        if due {
            if let Some(record) = self.unpark(pubkey) {
                self.admit(record, ctx);
            }
        }
    }

    /// The best waiting peer: one ready to dial first, else (unless `ready_only`) the
    /// best still in backoff.
    fn next_waiter(&self, ready_only: bool) -> Option<String> {
        let now = self.clock.now();
        let ready = self.waiting.iter().find(|(_, pubkey)| {
            self.idle
                .get(pubkey)
                .is_some_and(|r| r.next_attempt_at.is_none_or(|at| at <= now))
        });
        match ready {
            Some((_, pubkey)) => Some(pubkey.clone()),
            None if ready_only => None,
            None => self.waiting.first().map(|(_, pubkey)| pubkey.clone()),
        }
    }

    /// A running peer just reported: if it no longer uses its slot and a peer ready to
    /// dial waits for one, the waiting peer gets it.
    fn offer_unneeded_slot(&mut self, pubkey: &str, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let unneeded = self
            .running
            .get(pubkey)
            .is_some_and(|p| Self::holds_unneeded_slot(&p.record, now));
        if !unneeded || self.running.len() < self.limit() {
            return;
        }
        let Some(waiter) = self.next_waiter(true) else {
            return;
        };
        if let Some(record) = self.unpark(&waiter) {
            self.displace(pubkey, &waiter, ctx);
            self.start(record, ctx);
        }
    }

    /// An inbound peer the node did not know: recorded (unfollowed) and started.
    fn record_inbound(&mut self, pubkey: &str, ctx: &mut Context<Self>) {
        let record = PeerRecord::new(pubkey, false, self.clock.now());
        self.announce_change(None, &record);
        self.save(record.clone());
        self.start(record, ctx);
    }
}

/// The node's own network outage.
impl PeerSupervisor {
    /// A running peer reported (its record before is `before`): a connected peer lost at
    /// a cost of an attempt may be part of an outage.
    fn watch_for_outage(&mut self, before: &PeerRecord, ctx: &mut Context<Self>) {
        let pubkey = &before.nostr_pubkey;
        let Some(after) = self.running.get(pubkey).map(|p| &p.record) else {
            return;
        };
        let lost = before.state == PeerState::Connected
            && after.state == PeerState::Disconnected
            && after.desired == PeerIntent::Connect
            && after.reconnect_attempts > before.reconnect_attempts;
        if !lost {
            return;
        }
        let connected = self
            .running
            .values()
            .filter(|p| p.record.state == PeerState::Connected)
            .count();
        let verdict = self.outage.peer_lost(pubkey, self.clock.now(), connected);
        self.act_on(verdict, pubkey, ctx);
    }

    fn act_on(&mut self, verdict: Verdict, pubkey: &str, _ctx: &mut Context<Self>) {
        match verdict {
            Verdict::PeersFault => {}
            Verdict::During { reason } => self.excuse(pubkey, &reason),
            Verdict::Began { reason, peers } => {
                log::warn!(
                    "this node's network looks down ({reason}): peers wait without losing attempts"
                );
                self.gate.set_outage(Some(reason.clone()));
                for peer in peers {
                    self.excuse(&peer, &reason);
                }
            }
        }
    }

    /// The peer's last loss was the node's outage: it costs no attempt, and the peer waits.
    fn excuse(&self, pubkey: &str, reason: &str) {
        if let Some(peer) = self.running.get(pubkey) {
            peer.addr.do_send(Observed(Event::NetworkOutage {
                reason: format!("{NETWORK_OUTAGE}: {reason}"),
            }));
        }
    }

    /// A dial got through while the node was in an outage: every peer that waited on it
    /// is redialled, within the dial budget.
    fn end_outage(&mut self, through: &str, ctx: &mut Context<Self>) {
        let Some(outage) = self.outage.dial_through() else {
            return;
        };
        self.gate.set_outage(None);
        let waiting_prefix = format!("{NODE_WAIT_PREFIX}{NETWORK_OUTAGE}");
        let mut waiting: Vec<(u8, String)> = self
            .running
            .iter()
            .filter(|(k, p)| {
                k.as_str() != through
                    && p.record.state == PeerState::Disconnected
                    && p.record
                        .failure_reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&waiting_prefix))
            })
            .map(|(k, p)| (p.record.priority, k.clone()))
            .collect();
        waiting.sort();
        log::info!(
            "this node's network is back (down since {}: {}); redialling {} peers",
            outage.since,
            outage.reason,
            waiting.len()
        );
        self.redial_queue
            .extend(waiting.into_iter().map(|(_, pubkey)| pubkey));
        self.pump_dials(ctx);
    }
}

impl Handler<DialObserved> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: DialObserved, ctx: &mut Self::Context) {
        match msg.outcome {
            DialOutcome::Through => self.end_outage(&msg.nostr_pubkey, ctx),
            DialOutcome::Unreachable => {
                let verdict = self.outage.dial_failed(&msg.nostr_pubkey, self.clock.now());
                self.act_on(verdict, &msg.nostr_pubkey, ctx);
            }
            DialOutcome::Other => {}
        }
    }
}
