//! `PeerSupervisor`: the registry of peers. It starts every peer actor under an actix
//! `Supervisor` (restarted after a fault, see `PeerActor`), stops those that are failed or
//! deliberately disconnected, and keeps at most `max_active_connections` actors running:
//! at the limit a higher-priority peer takes the slot of the lowest-priority one (followed
//! peers and peers whose channel is opening are never evicted); a peer that gets no slot
//! waits, recorded as such, and is started, best priority first, when one frees up.
//!
//! On startup it is handed every stored record and brings back the non-terminal ones in
//! priority order, at most `startup_dial_batch` every `startup_dial_interval`: a restart
//! with thousands of peers is not a thundering herd.

use std::collections::{BTreeSet, HashMap, VecDeque};

use actix::prelude::*;

use super::clock::NodeClock;
use super::peer::{
    ApproveChannel, Disconnect, Evict, GetRecord, Observed, PeerActor, PeerReport, RestartPolicy,
    Retry, SetFollowed, Shutdown,
};
use super::persistence::{PersistenceActor, RecordTransition, SaveRecord};
use crate::config::PeerConnectionSettings;
use crate::lifecycle::{
    Event, LifecycleConfig, PeerIntent, PeerLifecycle, PeerRecord, PeerState, Timestamp,
};
use crate::ports::{Admission, Ports};

/// How often the end of operators' pauses is checked (a pause ends within this).
const PAUSE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The operator's follow list names this peer (new or again).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FollowPeer {
    pub nostr_pubkey: String,
}

/// The operator's follow list no longer names this peer: a deliberate disconnect.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct UnfollowPeer {
    pub nostr_pubkey: String,
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
}

/// A remote node asks to open a session with us: may it have a slot?
#[derive(Message, Debug, Clone)]
#[rtype(result = "crate::ports::Admission")]
pub struct AdmitInbound {
    pub nostr_pubkey: String,
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
        if let (PeerState::Connected, Some(rtt)) = (r.state, r.rtt_ms) {
            write!(f, " (rtt {rtt} ms)")?;
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
    recovery: VecDeque<PeerRecord>,
    recovery_timer: Option<SpawnHandle>,
    /// Peers the operator paused, by the end of their pause; retried when it passes.
    pauses: BTreeSet<(Timestamp, String)>,
    /// Every state change, for whoever listens (tests, the operator's event stream).
    changes: tokio::sync::broadcast::Sender<PeerChange>,
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
        changes: tokio::sync::broadcast::Sender<PeerChange>,
        channels_required: bool,
    ) -> Self {
        let lifecycle_config = LifecycleConfig {
            channels_required,
            ..LifecycleConfig::from(&settings)
        };
        let mut idle = HashMap::new();
        let mut recovery = Vec::new();
        for record in stored {
            if record.resumes_on_startup() && settings.auto_reconnect_on_startup {
                // What the record says as of now: a session that was "connected" did not
                // survive the restart.
                let (record, _) =
                    run_offline(&lifecycle_config, record, Event::Resume, clock.now());
                recovery.push(record);
            } else {
                idle.insert(record.nostr_pubkey.clone(), record);
            }
        }
        recovery.sort_by(|a, b| (a.priority, &a.nostr_pubkey).cmp(&(b.priority, &b.nostr_pubkey)));
        // Paused before a restart: the pause still ends when it was meant to.
        let pauses = idle
            .values()
            .filter_map(|r| Some((r.paused_until()?, r.nostr_pubkey.clone())))
            .collect();
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
            recovery: recovery.into(),
            recovery_timer: None,
            pauses,
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
            let _ = self.changes.send(change);
        }
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

    /// Brings back the next batch of stored peers.
    fn recover_batch(&mut self, ctx: &mut Context<Self>) {
        for _ in 0..self.settings.startup_dial_batch {
            let Some(record) = self.recovery.pop_front() else {
                break;
            };
            self.admit(record, ctx);
        }
        if self.recovery.is_empty() {
            if let Some(timer) = self.recovery_timer.take() {
                ctx.cancel_future(timer);
            }
        }
    }

    /// Starts `record`'s actor if a slot is free or can be taken from a lower-priority
    /// peer; otherwise records it as waiting.
    fn admit(&mut self, record: PeerRecord, ctx: &mut Context<Self>) {
        if self.running.len() >= self.limit() {
            match self.eviction_candidate(record.priority) {
                Some(victim) => self.evict(&victim),
                None => {
                    self.wait_for_slot(record);
                    return;
                }
            }
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

    fn evict(&mut self, pubkey: &str) {
        if let Some(peer) = self.running.remove(pubkey) {
            log::info!(
                "evicting peer {pubkey} (priority {}) at the connection limit",
                peer.record.priority
            );
            peer.addr.do_send(Evict);
            peer.addr.do_send(Shutdown);
            let record = self.apply_offline(peer.record, Event::Evicted, false);
            self.park(record);
        }
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
        if record.resumes_on_startup() {
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
            self.persistence.do_send(SaveRecord(after.clone()));
        }
        after
    }

    fn start(&mut self, record: PeerRecord, ctx: &mut Context<Self>) {
        let pubkey = record.nostr_pubkey.clone();
        let config = self.lifecycle_config.clone();
        let policy = self.restart_policy;
        let ports = self.ports.clone();
        let persistence = self.persistence.clone();
        let me = ctx.address().recipient();
        let clock = self.clock;
        let initial = record.clone();
        let addr = Supervisor::start(move |_| {
            PeerActor::new(initial, config, policy, ports, persistence, me, clock)
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

    /// Gives free slots to waiting peers, best priority first.
    fn fill_slots(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.limit() {
            let Some((_, pubkey)) = self.waiting.pop_first() else {
                break;
            };
            if let Some(record) = self.idle.remove(&pubkey) {
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
        let queued = self.recovery.iter().any(|r| r.nostr_pubkey == pubkey);
        if self.running.contains_key(pubkey) || self.idle.contains_key(pubkey) || queued {
            Ok(())
        } else {
            Err(SupervisorError::UnknownPeer(pubkey.to_string()))
        }
    }

    /// Takes a stored peer out of the startup recovery queue (an operator or follow-list
    /// decision about it comes before its turn).
    fn take_recovering(&mut self, pubkey: &str) -> Option<PeerRecord> {
        let pos = self
            .recovery
            .iter()
            .position(|r| r.nostr_pubkey == pubkey)?;
        self.recovery.remove(pos)
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
        self.recover_batch(ctx);
        if !self.recovery.is_empty() {
            let every = self.settings.startup_dial_interval;
            self.recovery_timer = Some(ctx.run_interval(every, |act, ctx| act.recover_batch(ctx)));
        }
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
            if let Some(peer) = self.running.get_mut(&pubkey) {
                peer.record = record;
            }
            if finished {
                self.retire(&pubkey, ctx);
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

impl Handler<FollowPeer> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: FollowPeer, ctx: &mut Self::Context) {
        let pubkey = msg.nostr_pubkey;
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
            self.persistence.do_send(SaveRecord(record.clone()));
            self.admit(record, ctx);
        }
    }
}

impl Handler<UnfollowPeer> for PeerSupervisor {
    type Result = ();
    fn handle(&mut self, msg: UnfollowPeer, _ctx: &mut Self::Context) {
        let reason = "unfollowed".to_string();
        let pubkey = msg.nostr_pubkey;
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
            .chain(self.recovery.iter())
            .filter(|r| r.followed)
            .map(|r| r.nostr_pubkey.clone())
            .collect();
        let (mut unfollowed, mut followed) = (0usize, 0usize);
        for pubkey in &followed_now {
            if !wanted.contains(pubkey) {
                unfollowed += 1;
                let nostr_pubkey = pubkey.clone();
                Handler::handle(self, UnfollowPeer { nostr_pubkey }, ctx);
            }
        }
        let already: std::collections::HashSet<&String> = followed_now.iter().collect();
        let mut new: Vec<&String> = wanted.iter().filter(|p| !already.contains(p)).collect();
        new.sort();
        for pubkey in new {
            followed += 1;
            let nostr_pubkey = pubkey.clone();
            Handler::handle(self, FollowPeer { nostr_pubkey }, ctx);
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
                peer.addr.do_send(ApproveChannel);
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
    fn handle(&mut self, msg: AdmitInbound, _ctx: &mut Self::Context) -> Self::Result {
        let pubkey = msg.nostr_pubkey;
        let known = self
            .running
            .get(&pubkey)
            .map(|p| &p.record)
            .or_else(|| self.idle.get(&pubkey));
        let admission = match known {
            // The operator's stop holds for both directions, followed or not.
            Some(record) if record.desired == PeerIntent::Disconnect => Admission::Refused {
                reason: "disconnected by the operator".into(),
            },
            Some(record) if self.running.contains_key(&pubkey) || record.followed => {
                Admission::Admitted { known: true }
            }
            Some(_) if self.running.len() < self.limit() => Admission::Admitted { known: true },
            None if self.running.len() < self.limit() => Admission::Admitted { known: false },
            // At the limit only followed or running peers get in. Evicting for an inbound
            // peer would be pointless: an inbound session holds no slot, and a known peer
            // that outranks an evictable running one has its slot already (admission
            // evicts the moment a better peer wants one).
            _ => Admission::Refused {
                reason: format!("connection limit ({}) reached", self.limit()),
            },
        };
        MessageResult(admission)
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
            .chain(self.recovery.iter().cloned())
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
                let record = self.idle.get(&msg.nostr_pubkey).cloned().or_else(|| {
                    self.recovery
                        .iter()
                        .find(|r| r.nostr_pubkey == msg.nostr_pubkey)
                        .cloned()
                });
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
