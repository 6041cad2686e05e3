//! One peer's lifecycle as plain logic: given events and the current time, it changes
//! state, queues actions for its driver and names its next deadline. It owns no socket, no
//! clock and no database (quinn-proto's `Connection` is the model), so the whole lifecycle,
//! backoff and heartbeat are tested with simulated time in microseconds.
//!
//! The driver's loop is: feed an event with [`PeerLifecycle::handle`] (or a deadline with
//! [`PeerLifecycle::handle_timeout`]), drain [`PeerLifecycle::poll_action`], execute each
//! action and feed its result back as an event, then sleep until
//! [`PeerLifecycle::poll_timeout`].
//!
//! Its deadlines live in one table keyed by timer kind (`super::timer`), each timer tied to
//! the state it runs in. Events are handled by concern (discovery, session and heartbeat,
//! channel, event flow, operator and supervisor); an event that does not apply in the
//! current state, or a result nobody is waiting for, is refused and changes nothing.

use std::collections::VecDeque;
use std::time::Duration;

use super::backoff::BackoffPolicy;
use super::priority::{calculate_priority, cap_subscriber_hint};
use super::record::PeerRecord;
use super::state::{PeerIntent, PeerState};
use super::time::Timestamp;
use super::timer::{Timer, TimerTable};
use crate::config::PeerConnectionSettings;

/// The lifecycle's timing and retry rules, from `btp_nips.peer_connections`.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// A PONG that changes only the heartbeat fields is written at most this often
    /// (zero: every PONG); any other change writes the whole record at once.
    pub heartbeat_write_interval: Duration,
    pub backoff: BackoffPolicy,
    /// Connected this long → the attempt counter resets.
    pub stable_connection: Duration,
    /// "Every relay answered, none has it" this many times in a row → failed.
    pub max_discovery_attempts: u32,
    pub discovery_retry: Duration,
    pub channel_opening_timeout: Duration,
    pub channel_poll_interval: Duration,
    /// While `channel_needed` waits for the operator, the chain is re-checked this often (a
    /// channel the operator opened with `open-channel` is found and the peer goes on).
    pub channel_recheck_interval: Duration,
    /// Whether a peer needs a payment channel before it is connected. A node without a
    /// chain (`chain.enabled: false`) connects every authenticated session as it is.
    pub channels_required: bool,
}

/// Heartbeat rounds per heartbeat interval (see [`LifecycleConfig::heartbeat_round`]).
pub const HEARTBEAT_ROUNDS_PER_INTERVAL: u32 = 60;

impl LifecycleConfig {
    /// PINGs go out in rounds: a peer's first PING waits for the next multiple of this
    /// (since the Unix epoch) at or after one interval, so every PING due within one round,
    /// whichever peer it is for, leaves on one wake-up of the node's threads instead of one
    /// each. 1/60 of the interval (1 s at the default 60 s): a peer's first PING comes at
    /// most one round late, and every later one exactly an interval after the last was
    /// due, so peers that share a round keep sharing it.
    pub fn heartbeat_round(&self) -> Duration {
        self.heartbeat_interval / HEARTBEAT_ROUNDS_PER_INTERVAL
    }
}

impl From<&PeerConnectionSettings> for LifecycleConfig {
    fn from(s: &PeerConnectionSettings) -> Self {
        LifecycleConfig {
            heartbeat_interval: s.heartbeat_interval,
            heartbeat_timeout: s.heartbeat_timeout,
            heartbeat_write_interval: s.heartbeat_write_interval,
            backoff: BackoffPolicy {
                initial: s.reconnect_initial_delay,
                max: s.reconnect_max_delay,
                jitter: s.reconnect_jitter,
                max_attempts: s.max_reconnect_attempts,
            },
            stable_connection: s.stable_connection,
            max_discovery_attempts: s.max_discovery_attempts,
            discovery_retry: s.discovery_retry,
            channel_opening_timeout: s.channel_opening_timeout,
            channel_poll_interval: s.channel_poll_interval,
            channel_recheck_interval: s.channel_recheck_interval,
            channels_required: true,
        }
    }
}

/// A fault reported by an adapter, already classified by whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The peer's, for now: it did not answer in time, refused the connection, dropped it.
    /// Retried with backoff; the peer is failed once its attempts run out.
    Transient(String),
    /// The peer's, for good: no valid announcement, authentication refused for a bad key
    /// or signature. The peer is failed with this reason.
    Permanent(String),
    /// The remote refused us by its policy (not admitted, its connection limit, its
    /// operator): retried with backoff up to the maximum delay, never failed for that alone.
    Refused(String),
    /// The node's own: its relays, its RPC, its operator relay or its database are
    /// unreachable, or a port is not configured. Costs the peer no attempt and never fails
    /// it: the peer waits, disconnected with this reason, and goes on when the cause clears.
    Local(String),
}

impl Fault {
    pub fn reason(&self) -> &str {
        match self {
            Fault::Transient(r) | Fault::Permanent(r) | Fault::Refused(r) | Fault::Local(r) => r,
        }
    }

    /// Whether this is the node's own fault rather than the peer's.
    pub fn is_local(&self) -> bool {
        matches!(self, Fault::Local(_))
    }
}

/// What a peer announced in its kind 32001 event (already validated by the resolver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub ilp_address: String,
    pub endpoint: String,
    pub base_address: String,
    /// The `subscribers` hint from the announcement metadata: untrusted, capped.
    pub subscribers: Option<u64>,
}

/// Something that happened to the peer, fed to [`PeerLifecycle::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin, or resume after a restart, from whatever state the record holds.
    Resume,
    /// The announcement was found and is valid.
    Resolved(Announcement),
    /// Every relay answered and none has an announcement.
    NotFound,
    /// Resolution failed: no relay answered (transient), or the announcement is invalid.
    ResolveFailed(Fault),
    /// The BTP session is open and authenticated.
    SessionOpened,
    /// The session could not be opened.
    SessionFailed(Fault),
    /// An established session ended.
    SessionLost(String),
    /// A fault of the node's own (its operator relay, its database) interrupted this peer:
    /// the session is dropped and resumed later, costing the peer no attempt.
    LocalFault(String),
    /// A write the next step relied on (the open transaction's hash, before its broadcast)
    /// was not confirmed: that step is dropped, and the peer waits for the node.
    DurableWriteFailed(String),
    /// A usable channel to the peer exists on chain.
    ChannelFound { channel_id: String },
    /// No usable channel exists.
    ChannelMissing,
    /// A channel is needed and the operator has been told; nothing is sent until they approve.
    ChannelAwaitingOperator,
    /// The operator (or the auto-open policy) approved opening a channel.
    OpenChannelApproved,
    /// Our open transaction is signed but not yet sent: its hash is made durable first, and
    /// only then is it broadcast ([`Action::BroadcastChannel`]).
    ChannelTxSigned { tx_hash: String },
    /// The signed open transaction was handed to the chain.
    ChannelBroadcast,
    /// The open transaction is not yet confirmed.
    ChannelPending,
    /// The open transaction has its confirmations and the channel checks out.
    ChannelConfirmed { channel_id: String },
    /// A reorg dropped the open transaction.
    ChannelDropped,
    /// A chain call failed.
    ChannelFailed(Fault),
    /// The initial REQ was sent; these subscriptions are open.
    Subscribed { subscription_ids: Vec<String> },
    /// An event from the peer was verified and published to the operator's relay: the
    /// cursor moves past it (in any state: an event published while the session was
    /// closing still counts as received).
    EventReceived { created_at: u64, id: String },
    /// A PONG echoing `nonce` arrived.
    PongReceived {
        nonce: u64,
        /// The round trip as the driver timed it (finer than the lifecycle's millisecond
        /// clock); `None`: taken from the clock.
        rtt: Option<Duration>,
    },
    /// The peer broke the protocol; it needs a person.
    Misbehaved(String),
    /// The operator's follow list now does / does not name this peer.
    FollowChanged { followed: bool },
    /// Deliberate stop (unfollow, operator command): recorded as intent, never retried.
    DisconnectRequested { reason: String },
    /// The operator stops the peer until `until`: like a deliberate stop, with the end of
    /// the pause kept as the next attempt (the driver retries it then, also after a
    /// restart).
    PauseRequested { reason: String, until: Timestamp },
    /// The supervisor took this peer's slot for a higher-priority one.
    Evicted,
    /// [`Event::Evicted`], with the reason recorded on the peer (which peer took the slot,
    /// and why it outranks this one).
    EvictedFor { reason: String },
    /// The node has lost its own network (most of its peers at once, or every dial): the
    /// loss that brought this disconnected peer here costs it no attempt, and it waits
    /// with `reason` until the node's connectivity returns.
    NetworkOutage { reason: String },
    /// The node's connectivity is back: a peer waiting on the outage dials now.
    NetworkRestored,
    /// Explicit retry (operator command or a new follow): leaves failed or a deliberate stop.
    RetryRequested,
    /// The driver gives up on this peer (e.g. restart intensity exceeded): failed, with reason.
    GiveUp { reason: String },
}

/// Work for the driver. Results come back as [`Event`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Find and validate the peer's announcement.
    Resolve,
    /// Open and authenticate a BTP session to the record's endpoint.
    OpenSession,
    /// Look on chain for a usable channel to the record's base address.
    CheckChannel,
    /// A channel is needed: apply the auto-open policy or tell the operator.
    RequestChannel,
    /// Sign the channel-open transaction (approved); it is not sent yet.
    OpenChannel,
    /// Broadcast the signed open transaction, whose hash is already durable.
    BroadcastChannel { tx_hash: String },
    /// Check the confirmations of our open transaction.
    AwaitChannel { tx_hash: String },
    /// Send the initial REQ for the peer's events.
    Subscribe,
    /// Send a PING carrying `nonce`.
    SendPing { nonce: u64 },
    /// Close the session (and its subscriptions).
    CloseSession,
    /// Write the record; `durable`: wait for the commit before going on.
    Persist { durable: bool },
    /// Tell the supervisor the peer's new latency (a PONG between heartbeat writes); the
    /// record is not written (yet).
    ReportHeartbeat,
}

/// An event that does not apply in the peer's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("transition {from} -> {to} is not in the table")]
    InvalidTransition { from: PeerState, to: PeerState },
    #[error("event {event} does not apply in state {state}")]
    Unexpected {
        event: &'static str,
        state: PeerState,
    },
}

/// An operation whose result the lifecycle is waiting for; a result that nobody waits for
/// is stale (the peer moved on) and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Resolve,
    Session,
    ChannelCheck,
    ChannelRequest,
    ChannelOpen,
    ChannelBroadcast,
    ChannelStatus,
}

/// The lifecycle of one peer.
#[derive(Debug)]
pub struct PeerLifecycle {
    /// Everything durable; written whole on each `Persist`.
    record: PeerRecord,
    config: LifecycleConfig,
    /// Work queued for the driver.
    actions: VecDeque<Action>,
    /// The one operation in flight, if any.
    awaiting: Option<Awaiting>,
    /// Whether a BTP session is open (it is not durable: a restart loses it).
    session_up: bool,
    /// Once the session is up, go to connected (set when a channel is ready first).
    connect_when_session_up: bool,
    /// Supervisor parked the peer (evicted / no slot): no retry timer until resumed.
    parked: bool,
    /// Consecutive "not found" answers in `discovering`.
    discovery_misses: u32,
    /// Consecutive waits on the node's own faults (they lengthen the next wait, never
    /// the peer's attempts); reset once the peer gets anywhere.
    node_waits: u32,
    /// Whether the last move to `disconnected` was a loss the peer was charged an attempt
    /// for; a network outage found afterwards gives that attempt back, once.
    refundable_loss: bool,
    /// Every deadline; each timer runs only in its own state.
    timers: TimerTable,
    /// The PING in flight: its nonce and when it was sent (its PONG is due at
    /// `Timer::PongDue`).
    ping_in_flight: Option<(u64, Timestamp)>,
    /// When the record was last queued for writing: a PONG writes only once
    /// `heartbeat_write_interval` has passed since (`None`: not yet in this run).
    last_written: Option<Timestamp>,
    /// Source of backoff jitter and PING nonces; seeded by the driver.
    rng: fastrand::Rng,
}

/// Recorded on a peer that gave up, or never got, a slot under `max_active_connections`.
pub const CONNECTION_LIMIT_REASON: &str = "connection limit: waiting for a slot";

/// Recorded on a peer in `channel_needed` waiting for the operator to approve a channel.
pub const AWAITING_OPERATOR_REASON: &str = "waiting for the operator to open a channel";

/// How every reason of a peer waiting on one of the node's own faults begins.
pub const NODE_WAIT_PREFIX: &str = "waiting for this node: ";

/// How every reason of a peer the remote refused by its policy begins (retried, never
/// failed for it).
pub const REMOTE_REFUSAL_PREFIX: &str = "refused by the remote: ";

/// The node-side cause named while the node's own network is down.
pub const NETWORK_OUTAGE: &str = "network outage";

/// Smoothing factor of the round-trip estimate (TCP's SRTT uses 1/8).
const RTT_SMOOTHING: f64 = 0.125;

/// The driver's interface: construction, inspection, events, deadlines and actions.
impl PeerLifecycle {
    /// Takes over a record (new, or loaded from the database). Call `handle(Resume)` to start.
    pub fn new(record: PeerRecord, config: LifecycleConfig, seed: u64) -> Self {
        let mut lifecycle = PeerLifecycle {
            record,
            config,
            actions: VecDeque::new(),
            awaiting: None,
            session_up: false,
            connect_when_session_up: false,
            parked: false,
            discovery_misses: 0,
            node_waits: 0,
            refundable_loss: false,
            timers: TimerTable::default(),
            ping_in_flight: None,
            last_written: None,
            rng: fastrand::Rng::with_seed(seed),
        };
        // The deadlines a record carries (next attempt, channel opening) hold from the start.
        lifecycle.arm_reconnect();
        lifecycle.arm_channel_timeout();
        lifecycle
    }

    pub fn record(&self) -> &PeerRecord {
        &self.record
    }

    pub fn state(&self) -> PeerState {
        self.record.state
    }

    pub fn priority(&self) -> u8 {
        self.record.priority
    }

    pub fn session_up(&self) -> bool {
        self.session_up
    }

    /// Next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest moment `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_timeout()
    }

    /// Does whatever deadlines at or before `now` call for.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        // The timers due on entry, in handling order. One that an earlier handler stopped
        // (the peer left its state) is skipped; one armed during this call waits for the
        // next.
        for timer in self.timers.expired(now) {
            if self.timers.is_expired(timer, now) {
                self.on_timer(timer, now);
            }
        }
    }

    /// Feeds one event. An event that does not apply in the current state (or a result
    /// nobody is waiting for) is refused and changes nothing.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Result<(), LifecycleError> {
        match event {
            Event::Resume => {
                self.resume(now);
                Ok(())
            }
            // Discovery.
            Event::Resolved(announcement) => self.on_resolved(announcement, now),
            Event::NotFound => self.on_not_found(now),
            Event::ResolveFailed(fault) => {
                self.on_failed(Awaiting::Resolve, "ResolveFailed", fault, now)
            }
            // The BTP session.
            Event::SessionOpened => self.on_session_opened(now),
            Event::SessionFailed(fault) => {
                self.on_failed(Awaiting::Session, "SessionFailed", fault, now)
            }
            Event::SessionLost(reason) => self.on_session_lost(reason, now),
            Event::LocalFault(reason) => self.on_local_fault(reason, now),
            Event::DurableWriteFailed(reason) => self.on_durable_write_failed(reason, now),
            Event::PongReceived { nonce, rtt } => self.on_pong(nonce, rtt, now),
            Event::Misbehaved(reason) => self.on_misbehaved(reason, now),
            // The payment channel.
            Event::ChannelFound { channel_id } => self.on_channel_found(channel_id, now),
            Event::ChannelMissing => self.on_channel_missing(now),
            Event::ChannelAwaitingOperator => self.on_channel_awaiting_operator(now),
            Event::OpenChannelApproved => self.on_open_channel_approved(),
            Event::ChannelTxSigned { tx_hash } => self.on_channel_tx_signed(tx_hash, now),
            Event::ChannelBroadcast => {
                self.poll_channel_later(Awaiting::ChannelBroadcast, "ChannelBroadcast", now)
            }
            Event::ChannelPending => {
                self.poll_channel_later(Awaiting::ChannelStatus, "ChannelPending", now)
            }
            Event::ChannelConfirmed { channel_id } => self.on_channel_confirmed(channel_id, now),
            Event::ChannelDropped => self.on_channel_dropped(now),
            Event::ChannelFailed(fault) => self.on_channel_failed(fault, now),
            // The event flow.
            Event::Subscribed { subscription_ids } => self.on_subscribed(subscription_ids, now),
            Event::EventReceived { created_at, id } => {
                self.on_event_received(created_at, &id, now);
                Ok(())
            }
            // The operator's intent and the supervisor.
            Event::FollowChanged { followed } => {
                self.on_follow_changed(followed, now);
                Ok(())
            }
            Event::DisconnectRequested { reason } => {
                self.on_disconnect_requested(reason, None, now)
            }
            Event::PauseRequested { reason, until } => {
                self.on_disconnect_requested(reason, Some(until), now)
            }
            Event::Evicted => self.on_evicted(now, CONNECTION_LIMIT_REASON.into()),
            Event::EvictedFor { reason } => self.on_evicted(now, reason),
            Event::NetworkOutage { reason } => self.on_network_outage(reason, now),
            Event::NetworkRestored => self.on_network_restored(now),
            Event::RetryRequested => self.on_retry_requested(now),
            Event::GiveUp { reason } => self.on_give_up(reason, now),
        }
    }

    /// Moves to `to` if the table allows it.
    pub fn transition(&mut self, to: PeerState, now: Timestamp) -> Result<(), LifecycleError> {
        let from = self.record.state;
        if from.transition_reason(to).is_none() {
            return Err(LifecycleError::InvalidTransition { from, to });
        }
        log::debug!("peer {}: {from} -> {to}", self.record.nostr_pubkey);
        if from == PeerState::Connected && to != PeerState::Connected {
            // Leaving connected closes the session and its subscriptions (the driver sends
            // the CLOSEs with the session it holds); none stays open.
            self.record.subscription_ids.clear();
        }
        self.record.state = to;
        self.record.updated_at = now;
        // A timer belongs to its state: leaving the state stops it, and entering one arms
        // the deadlines its record already carries.
        self.timers.keep_only(to);
        self.arm_reconnect();
        self.arm_channel_timeout();
        Ok(())
    }

    /// Marks the peer as waiting for a connection slot (the supervisor resumes it later).
    pub fn park(&mut self) {
        self.parked = true;
        self.arm_reconnect();
    }
}

/// Deadlines: arming them, and what each one does when it expires.
impl PeerLifecycle {
    fn on_timer(&mut self, timer: Timer, now: Timestamp) {
        match timer {
            Timer::DiscoveryRetry => {
                self.timers.stop(timer);
                self.start(Awaiting::Resolve, Action::Resolve);
            }
            Timer::ChannelRecheck => {
                // Waiting for the operator: has a channel appeared on chain meanwhile? Not
                // while another chain call is in flight: the timer stays due until it ends.
                if self.awaiting.is_none() {
                    self.timers.stop(timer);
                    self.start(Awaiting::ChannelCheck, Action::CheckChannel);
                } else {
                    // Not a deadline left in the past (the driver would wake at once, again
                    // and again): the next look comes one interval later.
                    self.timers
                        .set(timer, now + self.config.channel_recheck_interval);
                }
            }
            Timer::ChannelTimeout => self.fail(now, "channel timeout".into()),
            Timer::ChannelPoll => {
                self.timers.stop(timer);
                self.await_channel();
            }
            Timer::PongDue => {
                let reason = format!(
                    "heartbeat timeout: no PONG within {}s",
                    self.config.heartbeat_timeout.as_secs_f64()
                );
                self.lose(now, reason, true);
            }
            Timer::StableConnection => {
                self.timers.stop(timer);
                self.record.reconnect_attempts = 0;
                self.persist(now, false);
            }
            Timer::Ping => {
                // One PING at a time: while one is in flight, the next waits for its PONG
                // (or the session is lost at `PongDue`). The next is exactly one interval
                // after this one was due, not after now: a timer handled a little late
                // would otherwise push every later PING back. The first PING was put on a
                // round, so every later one stays in that round. After a stall longer than
                // an interval, the next round from now (no burst of missed ones).
                let due = self.timers.get(Timer::Ping).unwrap_or(now);
                let mut next = due + self.config.heartbeat_interval;
                if next <= now {
                    next = self.round_after(now);
                }
                self.timers.set(Timer::Ping, next);
                if self.ping_in_flight.is_none() {
                    let nonce = self.rng.u64(..);
                    self.ping_in_flight = Some((nonce, now));
                    self.timers
                        .set(Timer::PongDue, now + self.config.heartbeat_timeout);
                    self.actions.push_back(Action::SendPing { nonce });
                }
            }
            Timer::Reconnect => {
                self.timers.stop(timer);
                self.record.next_attempt_at = None;
                self.begin_discovery(now);
            }
        }
    }

    /// Arms `timer` for `at` if it runs in the current state; elsewhere it could never
    /// expire (leaving the state would stop it), so it is not armed at all.
    /// When the first PING of a connection made at `now` goes out: one interval later, on
    /// the next heartbeat round (see [`LifecycleConfig::heartbeat_round`]).
    fn next_ping_round(&self, now: Timestamp) -> Timestamp {
        let at = (now + self.config.heartbeat_interval).as_millis();
        let round = self.round_millis();
        Timestamp::from_millis(at.div_ceil(round) * round)
    }

    /// The first heartbeat round boundary strictly after `now`.
    fn round_after(&self, now: Timestamp) -> Timestamp {
        let round = self.round_millis();
        Timestamp::from_millis((now.as_millis() / round + 1) * round)
    }

    fn round_millis(&self) -> u64 {
        (self.config.heartbeat_round().as_millis() as u64).max(1)
    }

    fn arm(&mut self, timer: Timer, at: Timestamp) {
        if timer.state() == self.record.state {
            self.timers.set(timer, at);
        }
    }

    /// Arms the retry of a disconnected peer for the record's `next_attempt_at` (at once
    /// if it has none), or stops it if the peer is to stay down (deliberately stopped, or
    /// parked by the supervisor).
    fn arm_reconnect(&mut self) {
        if self.retries() {
            let at = self.record.next_attempt_at.unwrap_or_default();
            self.arm(Timer::Reconnect, at);
        } else {
            self.timers.stop(Timer::Reconnect);
        }
    }

    /// Whether a disconnected peer is waiting to be retried.
    fn retries(&self) -> bool {
        self.record.desired == PeerIntent::Connect && !self.parked
    }

    /// Arms the deadline of our channel opening from the record's `channel_opening_since`:
    /// when this node (last) began watching the open transaction.
    fn arm_channel_timeout(&mut self) {
        match self.record.channel_opening_since {
            Some(since) => self.arm(
                Timer::ChannelTimeout,
                since + self.config.channel_opening_timeout,
            ),
            None => self.timers.stop(Timer::ChannelTimeout),
        }
    }

    /// Stops every timer and forgets the PING in flight.
    fn clear_timers(&mut self) {
        self.timers.stop_all();
        self.ping_in_flight = None;
    }
}

/// Guards and bookkeeping shared by the event handlers.
impl PeerLifecycle {
    fn unexpected(&self, event: &'static str) -> LifecycleError {
        LifecycleError::Unexpected {
            event,
            state: self.record.state,
        }
    }

    /// Refuses `event` unless the peer is in one of `states`; returns the current state.
    fn only_in(
        &self,
        event: &'static str,
        states: &[PeerState],
    ) -> Result<PeerState, LifecycleError> {
        let state = self.record.state;
        if states.contains(&state) {
            Ok(state)
        } else {
            Err(self.unexpected(event))
        }
    }

    fn start(&mut self, op: Awaiting, action: Action) {
        self.awaiting = Some(op);
        self.actions.push_back(action);
    }

    /// Takes the result of an operation: refuses `event` unless one of `ops` is in flight,
    /// and returns the one that was.
    fn finish(
        &mut self,
        event: &'static str,
        ops: &[Awaiting],
    ) -> Result<Awaiting, LifecycleError> {
        match self.awaiting {
            Some(op) if ops.contains(&op) => {
                self.awaiting = None;
                Ok(op)
            }
            _ => Err(self.unexpected(event)),
        }
    }

    fn persist(&mut self, now: Timestamp, durable: bool) {
        self.record.updated_at = now;
        self.last_written = Some(now);
        // One write carries the whole record: a later one in the same batch supersedes.
        match self.actions.back_mut() {
            Some(Action::Persist { durable: queued }) => *queued |= durable,
            Some(report @ Action::ReportHeartbeat) => *report = Action::Persist { durable },
            _ => self.actions.push_back(Action::Persist { durable }),
        }
    }

    /// A heartbeat the supervisor should see but the database need not have yet.
    fn report_heartbeat(&mut self) {
        if !matches!(
            self.actions.back(),
            Some(Action::Persist { .. } | Action::ReportHeartbeat)
        ) {
            self.actions.push_back(Action::ReportHeartbeat);
        }
    }

    fn reprioritise(&mut self) {
        self.record.priority = calculate_priority(
            self.record.followed,
            self.record.rtt_us,
            self.record.subscribers,
        );
    }

    /// A failed operation: its fault decides between a retry with backoff and failed.
    fn on_failed(
        &mut self,
        op: Awaiting,
        event: &'static str,
        fault: Fault,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish(event, &[op])?;
        self.fault(now, fault);
        Ok(())
    }

    fn fault(&mut self, now: Timestamp, fault: Fault) {
        match fault {
            Fault::Transient(reason) => self.lose(now, reason, false),
            Fault::Permanent(reason) => self.fail(now, reason),
            Fault::Refused(reason) => self.refused(now, reason),
            Fault::Local(reason) => self.wait_on_node(now, reason, false),
        }
    }

    /// A transient loss: disconnected, one backoff wait, or failed once attempts run out.
    fn lose(&mut self, now: Timestamp, reason: String, close_session: bool) {
        let attempts = self.record.reconnect_attempts;
        if attempts >= self.config.backoff.max_attempts {
            self.fail(
                now,
                format!("reconnect attempts exhausted ({attempts}); last: {reason}"),
            );
            return;
        }
        let delay = self.config.backoff.delay(attempts, &mut self.rng);
        self.refundable_loss = self.disconnect_for(now, delay, reason, close_session, attempts + 1);
    }

    /// The remote's policy refused us: a backoff wait like any loss, counted, but the
    /// delay stops growing at the maximum and the peer is never failed for it.
    fn refused(&mut self, now: Timestamp, reason: String) {
        let attempts = self.record.reconnect_attempts;
        let delay = self.config.backoff.delay(attempts, &mut self.rng);
        let counted = attempts
            .saturating_add(1)
            .min(self.config.backoff.max_attempts);
        let reason = format!("{REMOTE_REFUSAL_PREFIX}{reason}");
        self.disconnect_for(now, delay, reason, false, counted);
    }

    /// The node's own fault: the peer waits, costing it no attempt. The waits grow like a
    /// backoff (so an outage is not a busy loop) from a count that is not the peer's.
    fn wait_on_node(&mut self, now: Timestamp, reason: String, close_session: bool) {
        let delay = self.config.backoff.delay(self.node_waits, &mut self.rng);
        self.node_waits = self.node_waits.saturating_add(1);
        let attempts = self.record.reconnect_attempts;
        let reason = format!("{NODE_WAIT_PREFIX}{reason}");
        self.disconnect_for(now, delay, reason, close_session, attempts);
        self.refundable_loss = false;
    }

    /// Disconnected with `reason`, retried after `delay`, with `attempts` recorded; false
    /// if the peer could not be moved to `disconnected`.
    fn disconnect_for(
        &mut self,
        now: Timestamp,
        delay: std::time::Duration,
        reason: String,
        close_session: bool,
        attempts: u32,
    ) -> bool {
        if self.transition(PeerState::Disconnected, now).is_err() {
            return false;
        }
        self.refundable_loss = false;
        self.record.reconnect_attempts = attempts;
        self.record.next_attempt_at = Some(now + delay);
        self.record.failure_reason = Some(reason);
        if close_session || self.session_up {
            self.actions.push_back(Action::CloseSession);
        }
        self.session_up = false;
        self.awaiting = None;
        self.connect_when_session_up = false;
        self.clear_timers();
        self.arm_reconnect();
        self.persist(now, false);
        true
    }

    /// A permanent fault: failed, with the reason recorded.
    fn fail(&mut self, now: Timestamp, reason: String) {
        // Every state but `failed` itself has an edge to `failed` in the table.
        if self.transition(PeerState::Failed, now).is_err() {
            return;
        }
        log::warn!("peer {} failed: {reason}", self.record.nostr_pubkey);
        self.record.failure_reason = Some(reason);
        self.record.next_attempt_at = None;
        self.forget_pending_open();
        self.leave_active();
        self.persist(now, false);
    }

    /// A failed or retried peer starts over from the chain: an open that confirmed meanwhile
    /// is found by the channel check, so no deadline or hash of the old attempt survives.
    fn forget_pending_open(&mut self) {
        if self.record.channel_id.is_none() {
            self.record.channel_tx_hash = None;
        }
        self.record.channel_opening_since = None;
        self.timers.stop(Timer::ChannelTimeout);
    }

    /// Drops the session and every timer and pending operation.
    fn leave_active(&mut self) {
        if self.session_up {
            self.actions.push_back(Action::CloseSession);
        }
        self.session_up = false;
        self.awaiting = None;
        self.connect_when_session_up = false;
        self.clear_timers();
    }
}

/// Restart and discovery: finding the peer's announcement.
impl PeerLifecycle {
    /// Brings the peer back from whatever its record says, after an actor start or restart.
    fn resume(&mut self, now: Timestamp) {
        use PeerState as S;
        // Whatever was queued belonged to the previous run; only a pending write survives.
        let persist_pending = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Persist { .. }));
        self.actions.clear();
        if persist_pending {
            self.persist(now, false);
        }
        self.awaiting = None;
        self.session_up = false;
        self.connect_when_session_up = false;
        self.parked = false;
        if self.record.desired == PeerIntent::Connect {
            match self.record.state {
                S::Discovering => self.start(Awaiting::Resolve, Action::Resolve),
                S::Connecting if self.record.endpoint.is_some() => {
                    self.start(Awaiting::Session, Action::OpenSession)
                }
                S::Connecting => self.start(Awaiting::Resolve, Action::Resolve),
                S::ChannelNeeded | S::ChannelOpening if !self.config.channels_required => {
                    // Channels are no longer required: dial again, nothing to wait for.
                    let _ = self.transition(S::Disconnected, now);
                    self.record.failure_reason = Some("channels are not required".into());
                    self.record.next_attempt_at = Some(now);
                    self.leave_active();
                    self.persist(now, false);
                }
                S::ChannelNeeded => self.start(Awaiting::ChannelCheck, Action::CheckChannel),
                S::ChannelOpening => match self.record.channel_tx_hash {
                    Some(_) => {
                        // The chain is asked first (the open may have confirmed while the
                        // node was down), and the timeout counts from now: an outage of
                        // the node's own is not the transaction's slowness.
                        self.record.channel_opening_since = Some(now);
                        self.arm_channel_timeout();
                        self.persist(now, false);
                        self.await_channel();
                    }
                    None => {
                        // No hash was ever made durable, so no transaction can be pending.
                        let _ = self.transition(S::ChannelNeeded, now);
                        self.persist(now, false);
                        self.start(Awaiting::ChannelRequest, Action::RequestChannel);
                    }
                },
                S::Connected => {
                    // The session did not survive the restart; reconnect now, not counted
                    // as a failed attempt: the peer did nothing wrong.
                    let _ = self.transition(S::Disconnected, now);
                    self.record.failure_reason = Some("node restarted".into());
                    self.record.next_attempt_at = Some(now);
                    self.leave_active();
                    self.persist(now, false);
                }
                S::Disconnected | S::Failed => {}
            }
        }
        // No longer parked: a disconnected peer is retried when its record says.
        self.arm_reconnect();
    }

    fn begin_discovery(&mut self, now: Timestamp) {
        if self.transition(PeerState::Discovering, now).is_ok() {
            self.refundable_loss = false;
            self.record.failure_reason = None;
            self.discovery_misses = 0;
            self.timers.stop(Timer::DiscoveryRetry);
            self.persist(now, false);
            self.start(Awaiting::Resolve, Action::Resolve);
        }
    }

    fn on_resolved(
        &mut self,
        announcement: Announcement,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish("Resolved", &[Awaiting::Resolve])?;
        self.record.ilp_address = Some(announcement.ilp_address);
        self.record.endpoint = Some(announcement.endpoint);
        self.record.base_address = Some(announcement.base_address);
        self.record.subscribers = announcement.subscribers.map(cap_subscriber_hint);
        self.discovery_misses = 0;
        self.reprioritise();
        if self.record.state == PeerState::Discovering {
            self.transition(PeerState::Connecting, now)?;
        }
        self.start(Awaiting::Session, Action::OpenSession);
        self.persist(now, false);
        Ok(())
    }

    fn on_not_found(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.finish("NotFound", &[Awaiting::Resolve])?;
        self.discovery_misses += 1;
        if self.discovery_misses >= self.config.max_discovery_attempts {
            self.fail(now, "no announcement".into());
        } else {
            self.arm(Timer::DiscoveryRetry, now + self.config.discovery_retry);
        }
        Ok(())
    }
}

/// The BTP session and its heartbeat.
impl PeerLifecycle {
    fn on_session_opened(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.finish("SessionOpened", &[Awaiting::Session])?;
        self.session_up = true;
        if self.connect_when_session_up || !self.config.channels_required {
            self.enter_connected(now)?;
        } else if self.record.channel_tx_hash.is_some() && self.record.channel_id.is_none() {
            // Our open transaction from before a restart may still be pending.
            self.transition(PeerState::ChannelOpening, now)?;
            self.record.channel_opening_since = Some(now);
            self.arm_channel_timeout();
            self.await_channel();
            self.persist(now, false);
        } else {
            self.start(Awaiting::ChannelCheck, Action::CheckChannel);
        }
        Ok(())
    }

    fn on_session_lost(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        if !self.session_up {
            return Err(self.unexpected("SessionLost"));
        }
        self.session_up = false;
        self.lose(now, reason, false);
        Ok(())
    }

    fn on_local_fault(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        self.only_in(
            "LocalFault",
            &[
                PeerState::Connecting,
                PeerState::ChannelNeeded,
                PeerState::ChannelOpening,
                PeerState::Connected,
            ],
        )?;
        self.wait_on_node(now, reason, true);
        Ok(())
    }

    fn on_durable_write_failed(
        &mut self,
        reason: String,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.only_in("DurableWriteFailed", &[PeerState::ChannelOpening])?;
        // The broadcast waited on this write: it never goes out, and no hash of a
        // transaction the chain will never see stays behind.
        self.actions
            .retain(|a| !matches!(a, Action::BroadcastChannel { .. }));
        self.forget_pending_open();
        self.wait_on_node(
            now,
            format!("the database did not confirm the channel transaction: {reason}"),
            true,
        );
        Ok(())
    }

    fn on_pong(
        &mut self,
        nonce: u64,
        rtt: Option<Duration>,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.only_in("PongReceived", &[PeerState::Connected])?;
        let Some((_, sent)) = self
            .ping_in_flight
            .filter(|&(expected, _)| expected == nonce)
        else {
            return Err(self.unexpected("PongReceived"));
        };
        self.ping_in_flight = None;
        self.timers.stop(Timer::PongDue);
        let sample = rtt.unwrap_or(now - sent).as_secs_f64() * 1_000_000.0;
        let smoothed = match self.record.rtt_us {
            None => sample,
            Some(old) => old as f64 + RTT_SMOOTHING * (sample - old as f64),
        };
        self.record.rtt_us = Some(smoothed.round() as u32);
        self.record.last_heartbeat = Some(now);
        let priority = self.record.priority;
        self.reprioritise();
        // Heartbeat time and latency are soft state, written every so often; a new
        // priority decides eviction and the order of redials, so it is written at once.
        let write_due = self
            .last_written
            .is_none_or(|at| now - at >= self.config.heartbeat_write_interval);
        if write_due || self.record.priority != priority {
            self.persist(now, false);
        } else {
            self.report_heartbeat();
        }
        Ok(())
    }

    fn on_misbehaved(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        self.only_in("Misbehaved", &[PeerState::Connected])?;
        self.fail(now, reason);
        Ok(())
    }

    /// Goes to connected once a channel is ready, opening a session first if needed.
    fn go_connected(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        if self.session_up {
            self.enter_connected(now)
        } else {
            self.connect_when_session_up = true;
            self.start(Awaiting::Session, Action::OpenSession);
            Ok(())
        }
    }

    fn enter_connected(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.transition(PeerState::Connected, now)?;
        self.connect_when_session_up = false;
        self.ping_in_flight = None;
        self.timers.stop(Timer::PongDue);
        let next = self.next_ping_round(now);
        self.arm(Timer::Ping, next);
        // Only a reconnect has attempts to forget once the connection proves stable.
        if self.record.reconnect_attempts > 0 {
            self.arm(Timer::StableConnection, now + self.config.stable_connection);
        } else {
            self.timers.stop(Timer::StableConnection);
        }
        self.record.failure_reason = None;
        self.record.next_attempt_at = None;
        self.record.channel_opening_since = None;
        self.node_waits = 0;
        self.actions.push_back(Action::Subscribe);
        self.persist(now, false);
        Ok(())
    }
}

/// The payment channel: finding one, asking for one, opening one and waiting for it.
impl PeerLifecycle {
    fn on_channel_found(
        &mut self,
        channel_id: String,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish("ChannelFound", &[Awaiting::ChannelCheck])?;
        self.timers.stop(Timer::ChannelRecheck);
        self.record.channel_id = Some(channel_id);
        self.go_connected(now)
    }

    fn on_channel_missing(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.finish("ChannelMissing", &[Awaiting::ChannelCheck])?;
        if self.record.state != PeerState::ChannelNeeded {
            self.transition(PeerState::ChannelNeeded, now)?;
            self.persist(now, false);
        }
        self.start(Awaiting::ChannelRequest, Action::RequestChannel);
        Ok(())
    }

    fn on_channel_awaiting_operator(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.finish("ChannelAwaitingOperator", &[Awaiting::ChannelRequest])?;
        self.record.failure_reason = Some(AWAITING_OPERATOR_REASON.into());
        self.arm(
            Timer::ChannelRecheck,
            now + self.config.channel_recheck_interval,
        );
        self.persist(now, false);
        Ok(())
    }

    fn on_open_channel_approved(&mut self) -> Result<(), LifecycleError> {
        self.only_in("OpenChannelApproved", &[PeerState::ChannelNeeded])?;
        if self.awaiting == Some(Awaiting::ChannelOpen) {
            return Err(self.unexpected("OpenChannelApproved"));
        }
        // The approval supersedes a pending request or re-check.
        self.awaiting = None;
        self.timers.stop(Timer::ChannelRecheck);
        self.start(Awaiting::ChannelOpen, Action::OpenChannel);
        Ok(())
    }

    fn on_channel_tx_signed(
        &mut self,
        tx_hash: String,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish(
            "ChannelTxSigned",
            &[Awaiting::ChannelOpen, Awaiting::ChannelRequest],
        )?;
        self.transition(PeerState::ChannelOpening, now)?;
        self.record.channel_tx_hash = Some(tx_hash.clone());
        self.record.channel_opening_since = Some(now);
        self.record.failure_reason = None;
        self.arm_channel_timeout();
        // The hash goes to disk before the transaction goes to the chain: a crash in
        // between leaves a hash the chain never saw (found dropped on restart, and
        // opened again), never a deposit the node forgot.
        self.persist(now, true);
        self.start(
            Awaiting::ChannelBroadcast,
            Action::BroadcastChannel { tx_hash },
        );
        Ok(())
    }

    /// The open transaction was sent, or is not confirmed yet: check again later.
    fn poll_channel_later(
        &mut self,
        op: Awaiting,
        event: &'static str,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish(event, &[op])?;
        self.arm(Timer::ChannelPoll, now + self.config.channel_poll_interval);
        Ok(())
    }

    fn on_channel_confirmed(
        &mut self,
        channel_id: String,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.finish("ChannelConfirmed", &[Awaiting::ChannelStatus])?;
        self.record.channel_id = Some(channel_id);
        self.record.channel_opening_since = None;
        self.arm_channel_timeout();
        self.timers.stop(Timer::ChannelPoll);
        self.go_connected(now)?;
        self.persist(now, false);
        Ok(())
    }

    fn on_channel_dropped(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.finish("ChannelDropped", &[Awaiting::ChannelStatus])?;
        self.transition(PeerState::ChannelNeeded, now)?;
        self.record.channel_tx_hash = None;
        self.record.channel_opening_since = None;
        self.record.failure_reason = Some("a reorg dropped the open transaction".into());
        self.persist(now, false);
        self.start(Awaiting::ChannelRequest, Action::RequestChannel);
        Ok(())
    }

    fn on_channel_failed(&mut self, fault: Fault, now: Timestamp) -> Result<(), LifecycleError> {
        let op = self.finish(
            "ChannelFailed",
            &[
                Awaiting::ChannelCheck,
                Awaiting::ChannelRequest,
                Awaiting::ChannelOpen,
                Awaiting::ChannelBroadcast,
                Awaiting::ChannelStatus,
            ],
        )?;
        let recheck_at = now + self.config.channel_recheck_interval;
        match (op, &fault) {
            // RPC trouble while waiting for confirmations: keep waiting.
            (Awaiting::ChannelStatus, Fault::Transient(_) | Fault::Local(_)) => {
                self.arm(Timer::ChannelPoll, now + self.config.channel_poll_interval);
            }
            // The operator may approve again; the peer stays channel_needed.
            (Awaiting::ChannelOpen, Fault::Transient(reason) | Fault::Local(reason)) => {
                self.record.failure_reason = Some(format!("channel open failed: {reason}"));
                self.arm(Timer::ChannelRecheck, recheck_at);
                self.persist(now, false);
            }
            // A re-check while waiting for the operator failed: check again later.
            (Awaiting::ChannelCheck, Fault::Transient(_) | Fault::Local(_))
                if self.record.state == PeerState::ChannelNeeded =>
            {
                self.arm(Timer::ChannelRecheck, recheck_at);
            }
            // The broadcast may have reached the chain or not: the status check tells (a
            // transaction the chain never saw is reported dropped).
            (Awaiting::ChannelBroadcast, Fault::Transient(_) | Fault::Local(_)) => {
                self.arm(Timer::ChannelPoll, now + self.config.channel_poll_interval);
            }
            // The chain refused the transaction (e.g. insufficient funds): nothing is
            // pending; back to channel_needed, waiting for the operator.
            (Awaiting::ChannelBroadcast, Fault::Permanent(reason)) => {
                self.transition(PeerState::ChannelNeeded, now)?;
                self.record.channel_tx_hash = None;
                self.record.channel_opening_since = None;
                self.record.failure_reason =
                    Some(format!("channel open refused by the chain: {reason}"));
                self.arm(Timer::ChannelRecheck, recheck_at);
                self.persist(now, false);
            }
            _ => self.fault(now, fault),
        }
        Ok(())
    }

    fn await_channel(&mut self) {
        if let Some(tx_hash) = self.record.channel_tx_hash.clone() {
            self.start(Awaiting::ChannelStatus, Action::AwaitChannel { tx_hash });
        }
    }
}

/// The event flow: subscriptions to the peer and the cursor of its events.
impl PeerLifecycle {
    fn on_subscribed(
        &mut self,
        subscription_ids: Vec<String>,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        self.only_in("Subscribed", &[PeerState::Connected])?;
        self.record.subscription_ids = subscription_ids;
        self.persist(now, false);
        Ok(())
    }

    /// Valid in any state: an event published while the session was closing still counts
    /// as received.
    fn on_event_received(&mut self, created_at: u64, id: &str, now: Timestamp) {
        let cursor = self
            .record
            .event_cursor
            .get_or_insert_with(Default::default);
        if cursor.advance(created_at, id) {
            self.persist(now, false);
        }
    }
}

/// The operator's intent and the supervisor's decisions.
impl PeerLifecycle {
    fn on_follow_changed(&mut self, followed: bool, now: Timestamp) {
        let newly_followed = followed && !self.record.followed;
        self.record.followed = followed;
        self.reprioritise();
        // A peer first known from its inbound session may have had no announcement then;
        // now that the operator follows it, it is looked up at once, not at the next retry.
        if newly_followed && self.timers.get(Timer::DiscoveryRetry).is_some() {
            self.timers.stop(Timer::DiscoveryRetry);
            self.start(Awaiting::Resolve, Action::Resolve);
        }
        self.persist(now, false);
    }

    fn on_disconnect_requested(
        &mut self,
        reason: String,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), LifecycleError> {
        use PeerState as S;
        let state = self.record.state;
        self.record.desired = PeerIntent::Disconnect;
        self.record.next_attempt_at = until;
        if !matches!(state, S::Disconnected | S::Failed) {
            self.transition(S::Disconnected, now)?;
        }
        // A failed peer keeps the reason it failed for.
        if state != S::Failed {
            self.record.failure_reason = Some(reason);
        }
        self.leave_active();
        self.persist(now, false);
        Ok(())
    }

    fn on_evicted(&mut self, now: Timestamp, reason: String) -> Result<(), LifecycleError> {
        use PeerState as S;
        // A peer whose channel is being opened keeps its slot: its deposit is in flight.
        let state = self.only_in(
            "Evicted",
            &[
                S::Discovering,
                S::Connecting,
                S::ChannelNeeded,
                S::Connected,
                S::Disconnected,
                S::Failed,
            ],
        )?;
        if matches!(state, S::Disconnected | S::Failed) {
            self.park();
            return Ok(());
        }
        self.transition(S::Disconnected, now)?;
        self.parked = true;
        self.record.next_attempt_at = None;
        self.record.failure_reason = Some(reason);
        self.leave_active();
        self.persist(now, false);
        Ok(())
    }

    fn on_retry_requested(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        use PeerState as S;
        let deliberate = self.record.desired == PeerIntent::Disconnect;
        if deliberate && !matches!(self.record.state, S::Failed | S::Disconnected) {
            // Stopped deliberately but not down yet: only the intent changes.
            self.record.desired = PeerIntent::Connect;
            self.persist(now, false);
            return Ok(());
        }
        let state = self.only_in("RetryRequested", &[S::Failed, S::Disconnected])?;
        self.record.desired = PeerIntent::Connect;
        self.forget_pending_open();
        if state == S::Failed || deliberate {
            self.record.reconnect_attempts = 0;
        }
        self.parked = false;
        self.record.next_attempt_at = None;
        self.begin_discovery(now);
        Ok(())
    }

    /// The node's own network was down when this peer was lost: the attempt that loss
    /// counted is given back (once), and the peer waits on the node. Its retry stays armed:
    /// while the outage lasts a failed dial costs nothing (the dial port reports the node's
    /// own fault), and the first dial that gets through ends the outage.
    fn on_network_outage(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        self.only_in("NetworkOutage", &[PeerState::Disconnected])?;
        if self.record.desired != PeerIntent::Connect {
            return Err(self.unexpected("NetworkOutage"));
        }
        if std::mem::take(&mut self.refundable_loss) {
            self.record.reconnect_attempts = self.record.reconnect_attempts.saturating_sub(1);
        }
        self.record.failure_reason = Some(format!("{NODE_WAIT_PREFIX}{reason}"));
        self.persist(now, false);
        Ok(())
    }

    /// Connectivity is back: a peer still waiting to be retried dials now (the supervisor
    /// sends this within its dial budget).
    fn on_network_restored(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.only_in("NetworkRestored", &[PeerState::Disconnected])?;
        if !self.retries() {
            return Err(self.unexpected("NetworkRestored"));
        }
        self.timers.stop(Timer::Reconnect);
        self.record.next_attempt_at = None;
        self.begin_discovery(now);
        Ok(())
    }

    fn on_give_up(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        use PeerState as S;
        self.only_in(
            "GiveUp",
            &[
                S::Discovering,
                S::Connecting,
                S::ChannelNeeded,
                S::ChannelOpening,
                S::Connected,
                S::Disconnected,
            ],
        )?;
        self.fail(now, reason);
        Ok(())
    }
}
