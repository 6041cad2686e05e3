//! `PeerActor`: one per peer. It owns that peer's [`PeerLifecycle`], its session, and the
//! one timer that wakes it at the lifecycle's next deadline (heartbeat, PONG due, backoff,
//! channel poll). It is a thin driver: it executes the lifecycle's actions through the
//! [`Ports`], feeds the results back as events, persists every change through the
//! persistence actor and reports it to its supervisor.
//!
//! Faults stop at this boundary: an adapter that panics is caught here and the actor stops;
//! the actix `Supervisor` it runs under restarts it (same struct, timers re-armed from the
//! lifecycle), and past the restart intensity the peer is failed with that reason. Other
//! peers never notice.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;

use super::clock::NodeClock;
use super::notification::ChannelProgress;
use super::persistence::{Flush, PersistenceActor, SaveRecord};
use crate::lifecycle::{Action, Event, LifecycleConfig, PeerLifecycle, PeerRecord, Timestamp};
use crate::ports::{ChannelRequest, ChannelStatus, PeerTarget, Ports, Resolution, Session};

/// At most `max_restarts` restarts within `window`; one more and the peer is failed.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
}

/// Our open transaction toward this peer gained confirmations, or its channel is open
/// (sent to the supervisor after the report of the state the peer was in, through the same
/// mailbox, so the node's listeners get both in order).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ChannelProgressed(pub ChannelProgress);

/// A peer's record changed (sent to the supervisor with every write).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PeerReport(pub PeerRecord);

/// A PONG between heartbeat writes: the peer's new latency, nothing else changed and
/// nothing written (the supervisor keeps it in its copy of the record).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct HeartbeatReport {
    /// The actor's own copy, shared: a PONG copies no key.
    pub nostr_pubkey: Arc<str>,
    pub rtt_us: u32,
    pub at: Timestamp,
}

/// Deliberately disconnect (unfollow, operator): recorded as intent, never retried.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub reason: String,
    /// The end of an operator's pause: retried then (`None`: held until retried).
    pub until: Option<Timestamp>,
}

/// Give up this peer's connection slot to a higher-priority peer; `reason` is recorded.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Evict {
    pub reason: String,
}

/// Explicit retry: leaves failed or a deliberate disconnect.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Retry;

/// The operator's follow list now does / does not name this peer.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetFollowed(pub bool);

/// The operator approved opening a channel to this peer.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ApproveChannel {
    /// The operator's deposit (`None`: the configured one).
    pub deposit_wei: Option<u128>,
}

/// Something another part of the node observed about this peer (an event received from
/// it, a protocol violation), fed to its lifecycle as is.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Observed(pub Event);

/// Stop for good (the supervisor has dropped its address, so no restart follows).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The peer's current record.
#[derive(Message, Debug, Clone)]
#[rtype(result = "PeerRecord")]
pub struct GetRecord;

pub struct PeerActor {
    /// The peer's state machine; the only place its state lives.
    lifecycle: PeerLifecycle,
    ports: Ports,
    persistence: Addr<PersistenceActor>,
    /// Where changes are reported (the supervisor keeps its registry from these).
    supervisor: Recipient<PeerReport>,
    clock: NodeClock,
    /// The open session, if any (not durable: a restart loses it).
    session: Option<Arc<dyn Session>>,
    /// Futures bound to the session (its close watcher), cancelled with it.
    session_tasks: Vec<SpawnHandle>,
    /// The PING in flight, cancelled with the session; one at a time (the lifecycle sends
    /// the next only after the PONG), so a long-lived session holds one handle, not one
    /// per PING it ever sent.
    ping_task: Option<SpawnHandle>,
    /// The subscriptions opened on the session, closed with it (the record forgets them as
    /// soon as the lifecycle leaves connected, before the driver closes the session).
    session_subscriptions: Vec<String>,
    /// Wakes the actor at the lifecycle's next deadline (the one it was set for).
    timer: Option<(Timestamp, SpawnHandle)>,
    restart_policy: RestartPolicy,
    /// When recent restarts happened; survives restarts because actix reuses the struct.
    restarts: VecDeque<Timestamp>,
    /// A write the next actions rely on is in flight: nothing more is executed, and events
    /// wait in `deferred`, until it is confirmed or given up. The actor still answers
    /// (`GetRecord`, `Shutdown`) meanwhile.
    awaiting_durable: bool,
    /// Events that arrived while a durable write was awaited, in arrival order.
    deferred: VecDeque<Event>,
    /// The deposit the operator approved the next open with, if not the configured one.
    approved_deposit: Option<u128>,
    /// Where restarts are counted (the supervisor's figure), if anywhere.
    restart_count: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The supervisor's number for this actor; its snapshots carry it (see `SaveRecord`).
    generation: u64,
    /// Where the progress of our open transaction is reported, if anywhere.
    channel_reports: Option<Recipient<ChannelProgressed>>,
    /// Where a PONG between heartbeat writes is reported; without it, as a whole record.
    heartbeat_reports: Option<Recipient<HeartbeatReport>>,
    /// The peer's key, shared with each heartbeat report.
    shared_pubkey: Arc<str>,
    /// The last progress reported (transaction, confirmations): a poll that finds nothing
    /// new reports nothing.
    last_channel_report: Option<(String, u64)>,
}

impl PeerActor {
    pub fn new(
        record: PeerRecord,
        config: LifecycleConfig,
        restart_policy: RestartPolicy,
        ports: Ports,
        persistence: Addr<PersistenceActor>,
        supervisor: Recipient<PeerReport>,
        clock: NodeClock,
    ) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        record.nostr_pubkey.hash(&mut hasher);
        let shared_pubkey = Arc::from(record.nostr_pubkey.as_str());
        let mut lifecycle = PeerLifecycle::new(record, config, hasher.finish());
        let _ = lifecycle.handle(Event::Resume, clock.now());
        PeerActor {
            lifecycle,
            ports,
            persistence,
            supervisor,
            clock,
            session: None,
            session_tasks: Vec::new(),
            ping_task: None,
            session_subscriptions: Vec::new(),
            timer: None,
            restart_policy,
            restarts: VecDeque::new(),
            awaiting_durable: false,
            deferred: VecDeque::new(),
            approved_deposit: None,
            restart_count: None,
            generation: 0,
            channel_reports: None,
            heartbeat_reports: None,
            shared_pubkey,
            last_channel_report: None,
        }
    }

    /// Reports each new confirmation count of our open transaction (and the channel's id
    /// when it is open) to `recipient`.
    pub fn reporting_channels(mut self, recipient: Recipient<ChannelProgressed>) -> Self {
        self.channel_reports = Some(recipient);
        self
    }

    /// Reports each PONG not written to the database to `recipient`, as its latency only.
    pub fn reporting_heartbeats(mut self, recipient: Recipient<HeartbeatReport>) -> Self {
        self.heartbeat_reports = Some(recipient);
        self
    }

    /// Reports where the open `tx_hash` stands, unless that was the last report.
    fn report_channel(&mut self, tx_hash: &str, confirmations: u64, channel_id: Option<String>) {
        let Some(recipient) = &self.channel_reports else {
            return;
        };
        let required = self.ports.channels.confirmations_required();
        // The confirmed report always goes out: it is the one that carries the channel id.
        let confirmations = if channel_id.is_some() {
            confirmations.max(required)
        } else {
            confirmations
        };
        let seen = (tx_hash.to_owned(), confirmations);
        if channel_id.is_none() && self.last_channel_report.as_ref() == Some(&seen) {
            return;
        }
        recipient.do_send(ChannelProgressed(ChannelProgress {
            nostr_pubkey: self.pubkey().to_owned(),
            tx_hash: tx_hash.to_owned(),
            confirmations,
            required,
            channel_id,
            at: self.clock.now(),
        }));
        self.last_channel_report = Some(seen);
    }

    /// Numbers this actor's snapshots with `generation`.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Counts this actor's restarts into `counter`.
    pub fn counting_restarts(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.restart_count = Some(counter);
        self
    }

    fn pubkey(&self) -> &str {
        &self.lifecycle.record().nostr_pubkey
    }

    /// Feeds one event and runs whatever it calls for.
    fn feed(&mut self, event: Event, ctx: &mut Context<Self>) -> bool {
        if self.awaiting_durable {
            self.deferred.push_back(event);
            return true;
        }
        let now = self.clock.now();
        let lifecycle = &mut self.lifecycle;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| lifecycle.handle(event, now)));
        let accepted = match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                log::debug!("peer {}: {e}", self.pubkey());
                false
            }
            Err(panic) => {
                self.crash(
                    ctx,
                    format!("lifecycle panicked: {}", panic_message(&panic)),
                );
                return false;
            }
        };
        self.drive(ctx);
        accepted
    }

    /// The timer fired: let the lifecycle handle its deadlines.
    fn on_deadline(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        if self.awaiting_durable {
            // Re-armed when the write is settled.
            return;
        }
        let now = self.clock.now();
        let lifecycle = &mut self.lifecycle;
        if let Err(panic) =
            std::panic::catch_unwind(AssertUnwindSafe(|| lifecycle.handle_timeout(now)))
        {
            self.crash(
                ctx,
                format!("lifecycle panicked: {}", panic_message(&panic)),
            );
            return;
        }
        self.drive(ctx);
    }

    /// Executes queued actions, then sleeps until the next deadline.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.awaiting_durable {
            return;
        }
        while let Some(action) = self.lifecycle.poll_action() {
            if !self.execute(action, ctx) {
                // Paused until a durable write completes; the continuation drives on.
                return;
            }
        }
        self.rearm(ctx);
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let deadline = self.lifecycle.poll_timeout();
        if self.timer.map(|(armed, _)| armed) == deadline {
            // Already set for it, or nothing to set (most events change no deadline).
            return;
        }
        if let Some((_, timer)) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(deadline) = deadline {
            let delay = deadline.saturating_since(self.clock.now());
            let timer = ctx.run_later(delay, |act, ctx| act.on_deadline(ctx));
            self.timer = Some((deadline, timer));
        }
    }

    /// Runs `fut` as this actor's work, catching a panic as a fault of this peer only.
    fn spawn_op<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &'static str,
        fut: impl Future<Output = T> + 'static,
        on_done: impl FnOnce(&mut Self, T, &mut Context<Self>) + 'static,
    ) -> SpawnHandle {
        let guarded = AssertUnwindSafe(fut).catch_unwind();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(guarded).map(move |result, act, ctx| match result {
                Ok(value) => on_done(act, value, ctx),
                Err(panic) => act.crash(ctx, format!("{what} panicked: {}", panic_message(&panic))),
            }),
        )
    }

    /// A fault in this peer's code: stop, and let the supervisor restart us.
    fn crash(&mut self, ctx: &mut Context<Self>, what: String) {
        log::error!("peer {}: {what}; restarting", self.pubkey());
        ctx.stop();
    }

    /// Returns false when the remaining actions must wait for a durable write.
    fn execute(&mut self, action: Action, ctx: &mut Context<Self>) -> bool {
        // Built only by the actions that hand the peer to a port (not per PING or report).
        let target = || PeerTarget::from(self.lifecycle.record());
        match action {
            Action::Resolve => {
                let resolver = self.ports.resolver.clone();
                let target = target();
                let fut = async move { resolver.resolve(&target.nostr_pubkey).await };
                self.spawn_op(ctx, "resolver", fut, |act, resolution, ctx| {
                    let event = match resolution {
                        Resolution::Found(a) => Event::Resolved(a),
                        Resolution::NotFound => Event::NotFound,
                        Resolution::Failed(f) => Event::ResolveFailed(f),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::OpenSession => {
                let sessions = self.ports.sessions.clone();
                let target = target();
                let fut = async move { sessions.open(&target).await };
                self.spawn_op(
                    ctx,
                    "session connector",
                    fut,
                    |act, result, ctx| match result {
                        Ok(session) => act.session_opened(session, ctx),
                        Err(fault) => {
                            act.feed(Event::SessionFailed(fault), ctx);
                        }
                    },
                );
            }
            Action::CheckChannel => {
                let channels = self.ports.channels.clone();
                let target = target();
                let fut = async move { channels.find_channel(&target).await };
                self.spawn_op(ctx, "channel port", fut, |act, result, ctx| {
                    let event = match result {
                        Ok(Some(channel_id)) => Event::ChannelFound { channel_id },
                        Ok(None) => Event::ChannelMissing,
                        Err(f) => Event::ChannelFailed(f),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::RequestChannel => {
                let channels = self.ports.channels.clone();
                let target = target();
                let fut = async move { channels.request_channel(&target).await };
                self.spawn_op(ctx, "channel port", fut, |act, result, ctx| {
                    let event = match result {
                        Ok(ChannelRequest::Opened { tx_hash }) => {
                            return act.signed(tx_hash, ctx);
                        }
                        Ok(ChannelRequest::AwaitingOperator) => Event::ChannelAwaitingOperator,
                        Err(f) => Event::ChannelFailed(f),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::OpenChannel => {
                let channels = self.ports.channels.clone();
                // The operator's deposit goes with the open it approved, and only that one.
                let deposit = self.approved_deposit.take();
                let target = target();
                let fut = async move { channels.open_channel(&target, deposit).await };
                self.spawn_op(ctx, "channel port", fut, |act, result, ctx| match result {
                    Ok(tx_hash) => act.signed(tx_hash, ctx),
                    Err(f) => {
                        act.feed(Event::ChannelFailed(f), ctx);
                    }
                });
            }
            Action::BroadcastChannel { tx_hash } => {
                let channels = self.ports.channels.clone();
                let fut = async move { channels.broadcast_open(&tx_hash).await };
                self.spawn_op(ctx, "channel port", fut, |act, result, ctx| {
                    let event = match result {
                        Ok(()) => Event::ChannelBroadcast,
                        Err(f) => Event::ChannelFailed(f),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::AwaitChannel { tx_hash } => {
                let channels = self.ports.channels.clone();
                let asked = tx_hash.clone();
                let fut = async move { channels.channel_status(&asked).await };
                self.spawn_op(ctx, "channel port", fut, move |act, result, ctx| {
                    let event = match result {
                        Ok(ChannelStatus::Pending { confirmations }) => {
                            act.report_channel(&tx_hash, confirmations, None);
                            Event::ChannelPending
                        }
                        Ok(ChannelStatus::Confirmed { channel_id }) => {
                            act.report_channel(&tx_hash, 0, Some(channel_id.clone()));
                            Event::ChannelConfirmed { channel_id }
                        }
                        Ok(ChannelStatus::Dropped) => Event::ChannelDropped,
                        Err(f) => Event::ChannelFailed(f),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::Subscribe => {
                let Some(session) = self.session.clone() else {
                    ctx.notify(Observed(Event::SessionLost(
                        "no session to subscribe on".into(),
                    )));
                    return true;
                };
                let subscriptions = self.ports.subscriptions.clone();
                let on = session.clone();
                let target = target();
                let fut = async move { subscriptions.subscribe(&target, on).await };
                self.spawn_op(ctx, "subscriptions", fut, move |act, result, ctx| {
                    let event = match result {
                        Ok(subscription_ids) => {
                            if act
                                .session
                                .as_ref()
                                .is_some_and(|s| Arc::ptr_eq(s, &session))
                            {
                                act.session_subscriptions = subscription_ids.clone();
                            }
                            Event::Subscribed { subscription_ids }
                        }
                        Err(f) => Event::SessionLost(format!("initial REQ failed: {}", f.reason())),
                    };
                    act.feed(event, ctx);
                });
            }
            Action::SendPing { nonce } => {
                if let Some(session) = self.session.clone() {
                    let fut = async move {
                        // Timed here, finer than the lifecycle's millisecond clock.
                        let sent = tokio::time::Instant::now();
                        session
                            .ping(nonce)
                            .await
                            .map(|echoed| (echoed, sent.elapsed()))
                    };
                    let handle = self.spawn_op(ctx, "session", fut, |act, result, ctx| {
                        let event = match result {
                            Ok((echoed, rtt)) => Event::PongReceived {
                                nonce: echoed,
                                rtt: Some(rtt),
                            },
                            Err(f) => Event::SessionLost(f.reason().to_string()),
                        };
                        act.feed(event, ctx);
                    });
                    if let Some(previous) = self.ping_task.replace(handle) {
                        ctx.cancel_future(previous);
                    }
                }
            }
            Action::CloseSession => self.close_session(ctx),
            Action::ReportHeartbeat => {
                let record = self.lifecycle.record();
                match (
                    &self.heartbeat_reports,
                    record.rtt_us,
                    record.last_heartbeat,
                ) {
                    (Some(recipient), Some(rtt_us), Some(at)) => {
                        recipient.do_send(HeartbeatReport {
                            nostr_pubkey: self.shared_pubkey.clone(),
                            rtt_us,
                            at,
                        })
                    }
                    _ => self.supervisor.do_send(PeerReport(record.clone())),
                }
            }
            Action::Persist { durable } => {
                let record = self.lifecycle.record().clone();
                self.persistence.do_send(SaveRecord {
                    record: record.clone(),
                    generation: self.generation,
                });
                self.supervisor.do_send(PeerReport(record));
                if durable {
                    self.await_durable(ctx);
                    return false;
                }
            }
        }
        true
    }

    /// Waits (without blocking the mailbox) until everything saved so far is durable, then
    /// goes on with the queued actions and the events that arrived meanwhile. If the write
    /// cannot be confirmed (the database is away past the persistence timeout), what relied
    /// on it never happens: the lifecycle drops it and the peer waits for the database.
    fn await_durable(&mut self, ctx: &mut Context<Self>) {
        self.awaiting_durable = true;
        let flush = self.persistence.send(Flush);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(flush).map(|result, act, ctx| {
                act.awaiting_durable = false;
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(format!("the persistence actor is gone: {e}")),
                };
                match failure {
                    None => act.drive(ctx),
                    Some(why) => act.durable_write_failed(why, ctx),
                }
                while !act.awaiting_durable {
                    let Some(event) = act.deferred.pop_front() else {
                        break;
                    };
                    act.feed(event, ctx);
                }
            }),
        );
    }

    /// A durable write the next step relied on was not confirmed: an open transaction
    /// whose hash it held is never broadcast, and its nonce goes back to the adapter.
    fn durable_write_failed(&mut self, why: String, ctx: &mut Context<Self>) {
        log::warn!(
            "peer {}: a write this peer waited on was not confirmed: {why}",
            self.pubkey()
        );
        let unsent = self.lifecycle.record().channel_tx_hash.clone();
        self.feed(Event::DurableWriteFailed(why.clone()), ctx);
        if let Some(tx_hash) = unsent.filter(|_| self.lifecycle.record().channel_tx_hash.is_none())
        {
            let channels = self.ports.channels.clone();
            let reason = format!("its hash could not be made durable: {why}");
            actix::spawn(async move { channels.abandon_open(&tx_hash, &reason).await });
        }
    }

    /// An open transaction was signed for this peer. If the lifecycle no longer waits for
    /// it (the peer moved on meanwhile), its hash is recorded nowhere and it is never
    /// broadcast: the adapter is told at once, so its nonce goes to the next open instead
    /// of leaving a gap that holds later opens back.
    fn signed(&mut self, tx_hash: String, ctx: &mut Context<Self>) {
        if self.feed(
            Event::ChannelTxSigned {
                tx_hash: tx_hash.clone(),
            },
            ctx,
        ) {
            return;
        }
        let reason = format!(
            "peer {} moved on ({}) before the open was recorded",
            self.pubkey(),
            self.lifecycle.state()
        );
        let channels = self.ports.channels.clone();
        // Not tied to this actor's life: a stopping actor still gives the nonce back.
        actix::spawn(async move { channels.abandon_open(&tx_hash, &reason).await });
    }

    fn session_opened(&mut self, session: Arc<dyn Session>, ctx: &mut Context<Self>) {
        self.close_session(ctx);
        self.session = Some(session.clone());
        if !self.feed(Event::SessionOpened, ctx) {
            // Nobody waits for this session any more (the peer moved on): close it.
            self.close_session(ctx);
            return;
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &session))
        {
            let closed = session.closed();
            let handle = self.spawn_op(ctx, "session", closed, |act, reason, ctx| {
                act.session = None;
                act.feed(Event::SessionLost(reason), ctx);
            });
            self.session_tasks.push(handle);
        }
    }

    fn close_session(&mut self, ctx: &mut Context<Self>) {
        for handle in self.session_tasks.drain(..).chain(self.ping_task.take()) {
            ctx.cancel_future(handle);
        }
        let ids = std::mem::take(&mut self.session_subscriptions);
        if let Some(session) = self.session.take() {
            let subscriptions = self.ports.subscriptions.clone();
            let target = PeerTarget::from(self.lifecycle.record());
            // Not tied to this actor's life: a stopping actor still closes its session.
            actix::spawn(async move {
                if !ids.is_empty() {
                    subscriptions
                        .unsubscribe(&target, session.clone(), &ids)
                        .await;
                }
                session.close().await;
            });
        }
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.drive(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        log::debug!(
            "peer {} stopped in {}",
            self.pubkey(),
            self.lifecycle.state()
        );
    }
}

impl Supervised for PeerActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        // actix cancelled every future and timer of the old run; rebuild from the lifecycle.
        self.timer = None;
        self.awaiting_durable = false;
        self.deferred.clear();
        if let Some(count) = &self.restart_count {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.session_tasks.clear();
        self.ping_task = None;
        self.close_session(ctx);
        let now = self.clock.now();
        let window = self.restart_policy.window;
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        let event = if self.restarts.len() as u32 > self.restart_policy.max_restarts {
            Event::GiveUp {
                reason: format!(
                    "restart intensity: {} restarts within {}s",
                    self.restarts.len(),
                    window.as_secs()
                ),
            }
        } else {
            Event::Resume
        };
        if let Err(e) = self.lifecycle.handle(event, now) {
            log::debug!("peer {}: {e}", self.pubkey());
        }
        // `started` runs next and drives the queued actions.
    }
}

impl Handler<Disconnect> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        let event = match msg.until {
            None => Event::DisconnectRequested { reason: msg.reason },
            Some(until) => Event::PauseRequested {
                reason: msg.reason,
                until,
            },
        };
        self.feed(event, ctx);
    }
}

impl Handler<Observed> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) {
        self.feed(msg.0, ctx);
    }
}

impl Handler<Evict> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Evict, ctx: &mut Self::Context) {
        self.feed(Event::EvictedFor { reason: msg.reason }, ctx);
    }
}

impl Handler<Retry> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: Retry, ctx: &mut Self::Context) {
        self.feed(Event::RetryRequested, ctx);
    }
}

impl Handler<SetFollowed> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: SetFollowed, ctx: &mut Self::Context) {
        self.feed(Event::FollowChanged { followed: msg.0 }, ctx);
    }
}

impl Handler<ApproveChannel> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: ApproveChannel, ctx: &mut Self::Context) {
        self.approved_deposit = msg.deposit_wei;
        self.feed(Event::OpenChannelApproved, ctx);
    }
}

impl Handler<Shutdown> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close_session(ctx);
        ctx.stop();
    }
}

impl Handler<GetRecord> for PeerActor {
    type Result = MessageResult<GetRecord>;
    fn handle(&mut self, _: GetRecord, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.lifecycle.record().clone())
    }
}
