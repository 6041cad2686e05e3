//! The persistence actor: the only writer of peer records.
//!
//! It owns the peer snapshots that are not yet durable. Peers send it [`SaveRecord`] with
//! their whole current record; the actor keeps only the newest snapshot of each peer
//! (a record is a complete snapshot, so coalescing loses nothing) and writes what it holds
//! in batches, one transaction per batch ([`Database::upsert_batch`]): every
//! `flush_interval`, or as soon as `max_batch` peers are pending, whichever comes first.
//!
//! The write runs on tokio's blocking pool, never on the actor's thread, and only one write
//! is in flight at a time, so snapshots reach the database in the order they were received.
//! A failed write is logged, its records go back under any newer snapshots that arrived
//! meanwhile, and it is retried after a backoff (`retry_initial_delay`, doubling up to
//! `retry_max_delay`): no change is ever dropped. [`Flush`] answers once every change
//! received before it is committed; a caller whose next step depends on a state being
//! durable (e.g. "channel tx sent") awaits it. When the actor stops it makes one last,
//! synchronous write of whatever it still holds.
//!
//! A record that no row can hold (a value past what a column stores) never blocks the
//! others: the batch is written without it, the peer's row is written as `failed` with the
//! reason (the offending values taken out), the peer's actor is told to give up through the
//! [`PeerDirectory`], and the refusal is logged and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::PersistenceSettings;
use crate::lifecycle::peer::Event;
use crate::lifecycle::record::{PeerRecord, PeerTransition};
use crate::lifecycle::state::PeerState;
use crate::ports::PeerDirectory;
use crate::storage::{storable, Database, StorageError};

/// Stores this snapshot of a peer (replacing any older one not yet written).
///
/// `generation` says whose decision it is: the supervisor numbers every peer actor it
/// starts and every decision it makes for a peer without one, always upward. A snapshot
/// from a generation older than one already seen for the peer (an actor told to stop that
/// still had work in flight) is dropped and counted: it never overwrites a later decision.
/// 0 is "unversioned", never dropped for its generation.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SaveRecord {
    pub record: PeerRecord,
    pub generation: u64,
}

impl SaveRecord {
    /// A snapshot that carries no generation.
    pub fn unversioned(record: PeerRecord) -> Self {
        SaveRecord {
            record,
            generation: 0,
        }
    }
}

/// Appends one state change to its peer's history; written with the next batch. While
/// the database is away, only the newest `persistence.history_per_peer` of each peer wait.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordTransition(pub PeerTransition);

/// Resolves once every `SaveRecord` received before it is committed to the database, or
/// with [`PersistenceError::TimedOut`] past `persistence.durable_write_timeout_ms`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), PersistenceError>")]
pub struct Flush;

/// Returns the actor's counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PersistenceStats")]
pub struct GetStats;

/// What the persistence actor has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistenceStats {
    /// `SaveRecord` messages received.
    pub changes_received: u64,
    /// Rows written by committed transactions (after coalescing: at most one per peer and
    /// batch).
    pub records_written: u64,
    /// Committed write transactions.
    pub transactions: u64,
    /// Writes that failed and were put back to be retried.
    pub failed_attempts: u64,
    /// Peer snapshots held but not yet committed (waiting, or in the write in flight).
    pub pending: usize,
    /// Records that could not be stored as they were; each peer was written as `failed`.
    pub records_unwritable: u64,
    /// History entries dropped before they were written (a peer changed state more than
    /// `history_per_peer` times while the database was away).
    pub transitions_dropped: u64,
    /// Snapshots dropped for coming from an older generation than one already saved.
    pub stale_saves_dropped: u64,
}

/// Why a [`Flush`] could not be confirmed. Failed writes are retried, never reported here:
/// only a stop can end a wait unsuccessfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistenceError {
    #[error(
        "the persistence actor stopped and its last write failed, the changes are not durable: {0}"
    )]
    LastWriteFailed(String),
    #[error("the persistence actor stopped before confirming the write")]
    Stopped,
    #[error(
        "the database did not confirm the write within {0:?} (persistence.durable_write_timeout_ms); it is still being retried"
    )]
    TimedOut(Duration),
}

/// The batch being written on the blocking pool.
struct InFlight {
    /// Every change numbered up to this is in `records` (or older than a snapshot that is).
    covers_seq: u64,
    /// Shared with the write task; kept so a failure can put them back and a stop can
    /// rewrite them.
    records: Arc<Vec<PeerRecord>>,
    /// History entries in this write, oldest first.
    transitions: Arc<Vec<PeerTransition>>,
}

type FlushReply = oneshot::Sender<Result<(), PersistenceError>>;

/// Batches peer snapshots into transactions; see the module documentation.
pub struct PersistenceActor {
    db: Database,
    settings: PersistenceSettings,
    /// The newest snapshot of each peer not yet handed to a write.
    pending: HashMap<String, PeerRecord>,
    /// The newest generation seen per peer (see [`SaveRecord`]).
    generations: HashMap<String, u64>,
    /// History entries not yet handed to a write, per peer, oldest first (at most
    /// `history_per_peer` each).
    transitions: HashMap<String, VecDeque<PeerTransition>>,
    /// The write running now, if any (at most one, to keep order).
    in_flight: Option<InFlight>,
    /// Number of the last change received; changes are numbered 1, 2, … on arrival.
    received_seq: u64,
    /// Every change numbered up to this is committed.
    durable_seq: u64,
    /// `Flush` callers, each waiting for a change number to become durable.
    waiters: Vec<(u64, FlushReply)>,
    /// The flush-interval timer, armed while changes wait and nothing else will write them.
    flush_timer: Option<SpawnHandle>,
    /// Armed after a failed write; no write starts until it fires.
    retry_timer: Option<SpawnHandle>,
    /// How long the next failure waits before retrying; doubles per failure, reset by success.
    next_retry_delay: Duration,
    /// Held by each write for its duration. The last write at stop takes it and sets it to
    /// `true` (closed): a write task still queued then finds it closed and skips, so it
    /// cannot overwrite the last write with older snapshots.
    writer: Arc<Mutex<bool>>,
    /// Told when a peer's record cannot be stored, so its actor gives up with the reason.
    directory: Option<Arc<dyn PeerDirectory>>,
    stats: PersistenceStats,
}

/// A record that could not be stored as it was.
struct Isolated {
    nostr_pubkey: String,
    reason: String,
    /// The record was already `failed`: its actor has nothing left to give up.
    already_failed: bool,
}

/// Writes `records` in one transaction; a record no row can hold is written instead as
/// `failed` with the reason, in a second transaction, and returned.
fn write_isolating(
    db: &Database,
    records: &[PeerRecord],
    transitions: &[PeerTransition],
    keep_per_peer: usize,
) -> Result<Vec<Isolated>, StorageError> {
    let outcome = db.write_batch(records, transitions, keep_per_peer)?;
    if outcome.unwritable.is_empty() {
        return Ok(Vec::new());
    }
    let mut isolated = Vec::with_capacity(outcome.unwritable.len());
    let mut replacements = Vec::with_capacity(outcome.unwritable.len());
    for refused in outcome.unwritable {
        let Some(record) = records
            .iter()
            .rev()
            .find(|r| r.nostr_pubkey == refused.nostr_pubkey)
        else {
            continue;
        };
        let reason = format!("this peer's record cannot be stored: {}", refused.error);
        let mut failed = storable(record);
        failed.state = PeerState::Failed;
        failed.next_attempt_at = None;
        failed.failure_reason = Some(reason.clone());
        replacements.push(failed);
        isolated.push(Isolated {
            nostr_pubkey: refused.nostr_pubkey,
            reason,
            already_failed: record.state == PeerState::Failed,
        });
    }
    db.upsert_batch(&replacements)?;
    Ok(isolated)
}

impl PersistenceActor {
    pub fn new(db: Database, settings: PersistenceSettings) -> Self {
        let next_retry_delay = settings.retry_initial_delay;
        PersistenceActor {
            db,
            settings,
            pending: HashMap::new(),
            transitions: HashMap::new(),
            generations: HashMap::new(),
            in_flight: None,
            received_seq: 0,
            durable_seq: 0,
            waiters: Vec::new(),
            flush_timer: None,
            retry_timer: None,
            next_retry_delay,
            writer: Arc::new(Mutex::new(false)),
            directory: None,
            stats: PersistenceStats::default(),
        }
    }

    /// Tells `directory` about peers whose records cannot be stored.
    pub fn with_directory(mut self, directory: Arc<dyn PeerDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Logs, counts and reports records that could not be stored as they were.
    fn report_isolated(&mut self, isolated: Vec<Isolated>) {
        for refused in isolated {
            self.stats.records_unwritable += 1;
            log::error!(
                "persistence: peer {} written as failed: {}",
                refused.nostr_pubkey,
                refused.reason
            );
            if let (false, Some(directory)) = (refused.already_failed, &self.directory) {
                directory.observe(
                    &refused.nostr_pubkey,
                    Event::GiveUp {
                        reason: refused.reason,
                    },
                );
            }
        }
    }

    /// Arms the flush-interval timer unless something else will write the pending changes
    /// (a timer already armed, a write in flight, a retry waiting).
    fn arm_flush_timer(&mut self, ctx: &mut Context<Self>) {
        if self.flush_timer.is_some() || self.in_flight.is_some() || self.retry_timer.is_some() {
            return;
        }
        let handle = ctx.run_later(self.settings.flush_interval, |act, ctx| {
            act.flush_timer = None;
            act.start_write(ctx);
        });
        self.flush_timer = Some(handle);
    }

    /// Hands everything pending to one write on the blocking pool, unless a write is already
    /// in flight or a retry is waiting (they come back here when done).
    fn start_write(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() || self.retry_timer.is_some() || self.nothing_pending() {
            return;
        }
        if let Some(handle) = self.flush_timer.take() {
            ctx.cancel_future(handle);
        }
        let records: Arc<Vec<PeerRecord>> =
            Arc::new(self.pending.drain().map(|(_, record)| record).collect());
        let transitions: Arc<Vec<PeerTransition>> = Arc::new(
            self.transitions
                .drain()
                .flat_map(|(_, queued)| queued)
                .collect(),
        );
        self.in_flight = Some(InFlight {
            covers_seq: self.received_seq,
            records: Arc::clone(&records),
            transitions: Arc::clone(&transitions),
        });
        let keep = self.settings.history_per_peer;
        let db = self.db.clone();
        let writer = Arc::clone(&self.writer);
        let write = tokio::task::spawn_blocking(move || {
            let closed = writer.lock().unwrap_or_else(PoisonError::into_inner);
            if *closed {
                // The actor stopped and its last write covered these records.
                return Ok(Vec::new());
            }
            write_isolating(&db, &records, &transitions, keep)
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write)
                .map(|joined, act, ctx| act.write_finished(joined, ctx)),
        );
    }

    fn write_finished(
        &mut self,
        joined: Result<Result<Vec<Isolated>, StorageError>, tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        let outcome = match joined {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(join) => Err(format!("the write task did not finish: {join}")),
        };
        match outcome {
            Ok(isolated) => {
                self.report_isolated(isolated);
                self.stats.transactions += 1;
                self.stats.records_written += batch.records.len() as u64;
                self.durable_seq = batch.covers_seq;
                self.next_retry_delay = self.settings.retry_initial_delay;
                self.answer_waiters();
                self.schedule_next(ctx);
            }
            Err(error) => {
                self.stats.failed_attempts += 1;
                let delay = self.next_retry_delay;
                self.next_retry_delay = (delay * 2).min(self.settings.retry_max_delay);
                log::warn!(
                    "persistence: writing {} peer records failed (failure {}), retrying in {:?}: {}",
                    batch.records.len(),
                    self.stats.failed_attempts,
                    delay,
                    error
                );
                let records = Arc::try_unwrap(batch.records).unwrap_or_else(|arc| (*arc).clone());
                for record in records {
                    // A newer snapshot of the same peer, received meanwhile, wins.
                    self.pending
                        .entry(record.nostr_pubkey.clone())
                        .or_insert(record);
                }
                // History goes back before what arrived meanwhile, in its order.
                for transition in batch.transitions.iter().rev() {
                    let queued = self
                        .transitions
                        .entry(transition.nostr_pubkey.clone())
                        .or_default();
                    if queued.len() < self.settings.history_per_peer {
                        queued.push_front(transition.clone());
                    } else {
                        self.stats.transitions_dropped += 1;
                    }
                }
                let handle = ctx.run_later(delay, |act, ctx| {
                    act.retry_timer = None;
                    act.start_write(ctx);
                });
                self.retry_timer = Some(handle);
            }
        }
    }

    /// After a write: what arrived meanwhile is written at once if it is a full batch or
    /// someone is waiting for it, otherwise at the next interval.
    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        if self.nothing_pending() {
            return;
        }
        if self.pending.len() >= self.settings.max_batch || !self.waiters.is_empty() {
            self.start_write(ctx);
        } else {
            self.arm_flush_timer(ctx);
        }
    }

    fn nothing_pending(&self) -> bool {
        self.pending.is_empty() && self.transitions.is_empty()
    }

    /// Answers every `Flush` whose changes are now all committed.
    fn answer_waiters(&mut self) {
        let durable = self.durable_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(seq, _)| *seq <= durable);
        self.waiters = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
    }

    /// The last write, made synchronously when the actor stops: everything pending, and the
    /// batch in flight (whose outcome the actor will never see) under it.
    fn write_remaining(&mut self) {
        let writer = Arc::clone(&self.writer);
        let mut closed = writer.lock().unwrap_or_else(PoisonError::into_inner);
        *closed = true;
        // Holding the lock: a write that was running has finished (committed or not).
        let mut remaining = std::mem::take(&mut self.pending);
        let mut history = Vec::new();
        if let Some(batch) = self.in_flight.take() {
            for record in batch.records.iter() {
                remaining
                    .entry(record.nostr_pubkey.clone())
                    .or_insert_with(|| record.clone());
            }
            history.extend(batch.transitions.iter().cloned());
        }
        history.extend(self.transitions.drain().flat_map(|(_, queued)| queued));
        let result = if remaining.is_empty() && history.is_empty() {
            Ok(())
        } else {
            let records: Vec<PeerRecord> = remaining.into_values().collect();
            let keep = self.settings.history_per_peer;
            match write_isolating(&self.db, &records, &history, keep) {
                Ok(isolated) => {
                    self.report_isolated(isolated);
                    self.stats.transactions += 1;
                    self.stats.records_written += records.len() as u64;
                    log::info!(
                        "persistence: wrote the last {} peer records at stop",
                        records.len()
                    );
                    Ok(())
                }
                Err(error) => {
                    log::error!(
                        "persistence: the last write at stop failed, {} peer records are not durable: {}",
                        records.len(),
                        error
                    );
                    Err(PersistenceError::LastWriteFailed(error.to_string()))
                }
            }
        };
        if result.is_ok() {
            self.durable_seq = self.received_seq;
        }
        for (_, reply) in self.waiters.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}

impl Actor for PersistenceActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.write_remaining();
    }
}

impl Handler<SaveRecord> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, save: SaveRecord, ctx: &mut Self::Context) {
        let SaveRecord { record, generation } = save;
        if generation != 0 {
            let newest = self
                .generations
                .entry(record.nostr_pubkey.clone())
                .or_default();
            if generation < *newest {
                self.stats.stale_saves_dropped += 1;
                log::debug!(
                    "persistence: peer {}: a snapshot of generation {generation} dropped (generation {} decided since)",
                    record.nostr_pubkey,
                    *newest
                );
                return;
            }
            *newest = generation;
        }
        self.received_seq += 1;
        self.stats.changes_received += 1;
        self.pending.insert(record.nostr_pubkey.clone(), record);
        if self.pending.len() >= self.settings.max_batch {
            self.start_write(ctx);
        } else {
            self.arm_flush_timer(ctx);
        }
    }
}

impl Handler<RecordTransition> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, RecordTransition(transition): RecordTransition, ctx: &mut Self::Context) {
        self.received_seq += 1;
        let queued = self
            .transitions
            .entry(transition.nostr_pubkey.clone())
            .or_default();
        if queued.len() >= self.settings.history_per_peer {
            queued.pop_front();
            self.stats.transitions_dropped += 1;
        }
        queued.push_back(transition);
        self.arm_flush_timer(ctx);
    }
}

impl Handler<Flush> for PersistenceActor {
    type Result = ResponseFuture<Result<(), PersistenceError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let target = self.received_seq;
        if self.durable_seq >= target {
            return Box::pin(async { Ok(()) });
        }
        let (reply, answer) = oneshot::channel();
        self.waiters.push((target, reply));
        // Someone is waiting: write now rather than at the next interval (a retry in
        // backoff still waits for its timer).
        self.start_write(ctx);
        let limit = self.settings.durable_write_timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answered) => answered.unwrap_or(Err(PersistenceError::Stopped)),
                // The changes stay pending and keep being retried; only the wait ends.
                Err(_) => Err(PersistenceError::TimedOut(limit)),
            }
        })
    }
}

impl Handler<GetStats> for PersistenceActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        let in_flight = self
            .in_flight
            .as_ref()
            .map_or(0, |batch| batch.records.len());
        MessageResult(PersistenceStats {
            pending: self.pending.len() + in_flight,
            ..self.stats
        })
    }
}
