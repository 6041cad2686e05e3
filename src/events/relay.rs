//! The operator's own Nostr relay, the one relay the node sits beside: events received from
//! peers are published to it ([`OperatorRelay::publish`]) and the events served to peers
//! come from it — first what it has stored ([`OperatorRelay::stored`]), then what arrives
//! ([`OperatorRelay::live`]).
//!
//! It is a [`RelaySet`] over exactly one URL: one nostr-sdk connection, redialled every
//! [`RelayTuning::retry_interval`] while the relay is down. Stored events are read a page
//! at a time, each page its own REQ that tells EOSE from silence; their messages are taken
//! off the connection before nostr-sdk sees them ([`super::reads`]): nostr-sdk would verify
//! every event (the relay is the operator's own, and whoever receives an event from this
//! node verifies it anyway), and broadcast it to every listener below.
//!
//! Everything else on the connection shares one notification buffer of
//! [`RelayTuning::notification_capacity`] messages per listener: the OKs a publish waits
//! for and every live subscription. Each event the connection
//! receives for the first time takes two places in it (nostr-sdk sends an `Event` and a
//! `Message` notification), a repeat one place. A listener that falls further behind
//! loses messages: a publish then fails as [`OperatorRelayError::Unavailable`], and a live
//! subscription yields [`OperatorRelayError::Lagged`].
//!
//! What two real relays taught (nostr-relay-builder 0.44, the PyPI `nostr-relay` 1.14):
//!
//! - `until` is inclusive on nostr-relay-builder (NIP-01) and *exclusive* on
//!   `nostr-relay`; the paging in [`OperatorRelay::stored`] is correct for either.
//! - A duplicate is `OK true "duplicate: …"` on nostr-relay-builder but `OK false
//!   "duplicate: exists"` on `nostr-relay`; both count as accepted here.
//! - `nostr-relay` refuses an event with `["OK", "", false, reason]` — no event id — which
//!   nostr-sdk cannot parse and drops, so such a refusal looks like silence
//!   ([`OperatorRelayError::Unavailable`] after [`RelayTuning::query_timeout`]). It also
//!   slows the whole connection down after every refused event (2 s per message,
//!   doubling). That is why [`OperatorRelay::publish`] takes only a [`VerifiedEvent`]: an
//!   invalid event cannot be given to it, and the check is not made twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use nostr_sdk::pool::relay::Error as SdkRelayError;
use nostr_sdk::prelude::{
    ClientMessage, Event, EventId, Filter, Keys, MachineReadablePrefix, Relay, RelayMessage,
    RelayNotification, RelayStatus, RelayUrl, SubscriptionId, Timestamp,
};
use serde::de::IgnoredAny;
use tokio::sync::broadcast::{self, error::RecvError};

use super::reads::{ReadMessage, ReadRoutes, ReadTransport, RouteEnd};
use super::VerifiedEvent;
use crate::discovery::bounds::mismatch;
use crate::discovery::relays::{RelayError, RelaySet, RelayTuning};
use crate::untrusted::untrusted;

/// What went wrong with the operator's relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorRelayError {
    /// The URL is not a relay URL.
    #[error("operator relay URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The relay answered `OK false` (other than "duplicate:"): `reason` is its message.
    #[error("the operator relay refused the event: {reason}")]
    Refused { reason: String },
    /// The relay is not connected, or did not answer in time, or the connection was lost
    /// while waiting. The event of a failed publish may still have been stored: publishing
    /// it again is safe (a duplicate counts as accepted).
    #[error("the operator relay is unavailable: {reason}")]
    Unavailable { reason: String },
    /// The relay ended a live subscription (`CLOSED`): `reason` is its message. The
    /// subscription yields nothing more.
    #[error("the operator relay closed the subscription: {reason}")]
    Closed { reason: String },
    /// A live subscription's listener fell behind the connection's notification buffer:
    /// `missed` notifications (events and other messages) were lost to it. The
    /// subscription goes on; the events in the gap can be read with
    /// [`OperatorRelay::stored`].
    #[error("{missed} relay notifications lost (the live subscription fell behind)")]
    Lagged { missed: u64 },
}

/// The events a read found.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Oldest first: ascending `created_at`, then ascending id.
    pub events: Vec<Event>,
    /// The relay had more than `max` matching events: `events` are the newest `max`.
    pub truncated: bool,
}

/// The ids a read found ([`OperatorRelay::stored_index`]).
#[derive(Debug, Clone, Default)]
pub struct StoredIndex {
    /// `(created_at, id)`, oldest first.
    pub ids: Vec<(u64, EventId)>,
    /// The relay had more than `max` matching events: `ids` are the newest `max`.
    pub truncated: bool,
}

/// The node's connection to the operator's relay.
#[derive(Clone)]
pub struct OperatorRelay {
    /// The connection, a set of exactly one relay.
    set: RelaySet,
    /// That relay (nostr-sdk's handle, shared with `set`'s client).
    relay: Relay,
    /// Its URL, as nostr-sdk parsed it.
    url: RelayUrl,
    /// The stored reads waiting for their messages (taken off the connection by its
    /// transport).
    reads: ReadRoutes,
}

impl OperatorRelay {
    /// Connects (in the background: a relay that is down now is redialled every
    /// `tuning.retry_interval`; [`OperatorRelay::wait_connected`] waits for it). The
    /// connection signs with a key of its own, made here (used only if the relay asks for
    /// NIP-42 authentication).
    pub async fn connect(url: &str, tuning: RelayTuning) -> Result<Self, OperatorRelayError> {
        let reads = ReadRoutes::default();
        let transport = ReadTransport::new(reads.clone());
        let set = RelaySet::connect_with_transport(
            Keys::generate(),
            &[url.to_string()],
            tuning,
            transport,
        )
        .await
        .map_err(|e| match e {
            RelayError::Url { url, reason } => OperatorRelayError::Url { url, reason },
        })?;
        let url = set.urls()[0].clone();
        let relay = set
            .client()
            .relay(&url)
            .await
            .map_err(|e| OperatorRelayError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(OperatorRelay {
            set,
            relay,
            url,
            reads,
        })
    }

    /// The relay's URL (as nostr-sdk normalised it).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The underlying connection, for what this type does not cover.
    pub fn relays(&self) -> &RelaySet {
        &self.set
    }

    /// Waits (up to `timeout`) for the relay to be connected; says whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.relay.wait_for_connection(timeout).await;
        self.relay.is_connected()
    }

    /// Whether the relay is connected now.
    pub fn is_connected(&self) -> bool {
        self.relay.is_connected()
    }

    /// Connected, or waits up to `connect_timeout` for it; else `Unavailable`.
    async fn ready(&self) -> Result<(), OperatorRelayError> {
        let status = self.relay.status();
        if matches!(status, RelayStatus::Terminated | RelayStatus::Banned) {
            return Err(self.unavailable(format!("connection {status}")));
        }
        if !self.relay.is_connected() {
            self.relay
                .wait_for_connection(self.set.tuning().connect_timeout)
                .await;
            if !self.relay.is_connected() {
                return Err(self.unavailable(format!("not connected ({})", self.relay.status())));
            }
        }
        Ok(())
    }

    fn unavailable(&self, what: String) -> OperatorRelayError {
        OperatorRelayError::Unavailable {
            reason: format!("{}: {what}", self.url),
        }
    }

    /// Publishes `event` and waits (up to `query_timeout`) for the relay's OK.
    ///
    /// Only a [`VerifiedEvent`] is taken, so the relay never sees an invalid event.
    ///
    /// `Ok(())` when the relay accepted it, or already had it ("duplicate:", whether the
    /// relay says `OK true` or `OK false`); [`OperatorRelayError::Refused`] when the relay
    /// answered `OK false`;
    /// [`OperatorRelayError::Unavailable`] when it is not connected (after waiting
    /// `connect_timeout`) or did not answer.
    pub async fn publish(&self, event: &VerifiedEvent) -> Result<(), OperatorRelayError> {
        self.ready().await?;
        let timeout = self.set.tuning().query_timeout;
        match tokio::time::timeout(timeout, self.relay.send_event(event)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(SdkRelayError::RelayMessage(message))) => {
                if MachineReadablePrefix::parse(&message) == Some(MachineReadablePrefix::Duplicate)
                {
                    Ok(())
                } else {
                    Err(OperatorRelayError::Refused { reason: message })
                }
            }
            Ok(Err(e)) => Err(self.unavailable(format!("event {} not published: {e}", event.id))),
            Err(_) => Err(self.unavailable(format!(
                "no OK for event {} within {}s",
                event.id,
                timeout.as_secs_f64()
            ))),
        }
    }

    /// Every stored event matching `filter` (its `limit` is ignored), oldest first:
    /// ascending `created_at`, then ascending id.
    ///
    /// Relays answer a REQ newest first and cap how many events it returns, so this pages
    /// backwards, `page_size` events a REQ: a page as long as `page_size` means there may
    /// be more, and the next asks below the oldest second seen. Events of that boundary
    /// second are asked again (repeats are dropped by id), so none is missed whichever way
    /// the relay reads `until`; a second holding a full page or more is read alone, with
    /// the limit doubled until its page comes back short. `page_size` must not exceed the
    /// relay's own cap (a capped page would look short, i.e. complete).
    ///
    /// Stops once more than `max` events are known and the newest `max` of them are
    /// certain: [`Stored::truncated`] is then set and `events` are those newest `max`.
    /// (One exception: a crowded second is read alone only until more than `max` events
    /// are known; if the cut falls inside such a second that was not read whole, which of
    /// its events are kept is the relay's choice rather than the highest ids.)
    ///
    /// The caller's own `until`, if any, is passed on as is (so it is inclusive or not as
    /// the relay reads it).
    ///
    /// The paging keeps only ids ([`OperatorRelay::stored_index`]); the events are then
    /// fetched by id, `page_size` a REQ ([`OperatorRelay::events_by_id`]): one deleted in
    /// between is absent.
    ///
    /// Fails with [`OperatorRelayError::Unavailable`] when a page is not answered (no EOSE
    /// within `query_timeout`, not connected within `connect_timeout`, CLOSED, or its
    /// messages lost from the notification buffer), or answered with events after its
    /// `until`; nothing partial is returned.
    pub async fn stored(
        &self,
        filter: Filter,
        page_size: usize,
        max: usize,
    ) -> Result<Stored, OperatorRelayError> {
        let index = self.stored_index(filter, page_size, max).await?;
        let ids: Vec<EventId> = index.ids.iter().map(|(_, id)| *id).collect();
        let mut events = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(page_size.max(1)) {
            events.extend(self.events_by_id(chunk).await?);
        }
        Ok(Stored {
            events,
            truncated: index.truncated,
        })
    }

    /// What [`OperatorRelay::stored`] would return, as `(created_at, id)` pairs only: the
    /// same paging, but no event is kept beyond the page being read, so a large read costs
    /// 40 bytes an event. Read the events themselves with [`OperatorRelay::events_by_id`],
    /// a page at a time.
    pub async fn stored_index(
        &self,
        filter: Filter,
        page_size: usize,
        max: usize,
    ) -> Result<StoredIndex, OperatorRelayError> {
        let page_size = page_size.max(1);
        let since = filter.since.map(|t| t.as_secs());
        let mut seen: HashMap<EventId, u64> = HashMap::new();
        // Every matching event created at or after this second has been seen.
        let mut complete_from: Option<u64> = None;
        // The relay reads `until` inclusively (NIP-01): learnt once a page holds an event
        // at exactly `until`. Until then it is taken as exclusive (the PyPI nostr-relay),
        // which is safe either way: the boundary second is asked for again, never missed.
        let mut inclusive = false;
        loop {
            if let Some(c) = complete_from {
                let certain = seen.values().filter(|&&t| t >= c).count();
                if (seen.len() > max && certain >= max) || since.is_some_and(|s| c <= s) {
                    break;
                }
            }
            let until = match complete_from {
                None => filter.until.map(|t| t.as_secs()),
                Some(0) => break,
                Some(c) if inclusive => Some(c - 1),
                Some(c) => Some(c),
            };
            let page = self.page(&filter, since, until, page_size).await?;
            let full = page.len() >= page_size;
            let was_inclusive = inclusive;
            inclusive |= until.is_some_and(|u| page.iter().any(|e| e.created_at.as_secs() == u));
            let oldest = page.iter().map(|e| e.created_at.as_secs()).min();
            for event in page {
                seen.entry(event.id).or_insert(event.created_at.as_secs());
            }
            let (true, Some(oldest)) = (full, oldest) else {
                // A short page: nothing more below.
                break;
            };
            let next = complete_from.map_or(oldest + 1, |c| c.min(oldest + 1));
            if Some(next) != complete_from || inclusive != was_inclusive {
                complete_from = Some(next);
                continue;
            }
            // A full page of one second (`next - 1`, the top of the window) and repeats:
            // read that second alone, with a growing limit.
            let second = next - 1;
            let mut limit = page_size.saturating_mul(2);
            loop {
                let until = if inclusive { second } else { second + 1 };
                let page = self.page(&filter, Some(second), Some(until), limit).await?;
                let short = page.len() < limit;
                inclusive |= page.iter().any(|e| e.created_at.as_secs() == until);
                for event in page {
                    seen.entry(event.id).or_insert(event.created_at.as_secs());
                }
                let known = seen.values().filter(|&&t| t >= second).count();
                if short || known > max || limit == usize::MAX {
                    break;
                }
                limit = limit.saturating_mul(2);
            }
            complete_from = Some(second);
        }
        let mut ids: Vec<(u64, EventId)> = seen.into_iter().map(|(id, t)| (t, id)).collect();
        ids.sort_unstable();
        let truncated = ids.len() > max;
        if truncated {
            ids.drain(..ids.len() - max);
        }
        Ok(StoredIndex { ids, truncated })
    }

    /// The events with these ids the relay still holds (one REQ), oldest first: ascending
    /// `created_at`, then ascending id. One deleted meanwhile is simply absent.
    pub async fn events_by_id(&self, ids: &[EventId]) -> Result<Vec<Event>, OperatorRelayError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = Filter::new().ids(ids.iter().copied()).limit(ids.len());
        let mut events = self.read(filter).await?;
        // Only what was asked for, each once, however the relay answered.
        let asked: HashSet<EventId> = ids.iter().copied().collect();
        let mut kept = HashSet::with_capacity(ids.len());
        events.retain(|e| asked.contains(&e.id) && kept.insert(e.id));
        events.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(events)
    }

    /// One REQ: `filter` between `since` and `until` (as the relay reads them), at most
    /// `limit` events, in the relay's order.
    async fn page(
        &self,
        filter: &Filter,
        since: Option<u64>,
        until: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Event>, OperatorRelayError> {
        let mut f = filter.clone().limit(limit);
        f.since = since.map(Timestamp::from);
        f.until = until.map(Timestamp::from);
        let events = self.read(f).await?;
        // Paging relies on `until` (read either way); a relay that ignores it could keep it
        // paging forever.
        if let Some(late) = until.and_then(|u| events.iter().find(|e| e.created_at.as_secs() > u)) {
            return Err(self.unavailable(format!(
                "answered `until` {} with event {} of {}: cannot page",
                until.unwrap_or_default(),
                late.id,
                late.created_at.as_secs()
            )));
        }
        Ok(events)
    }

    /// One REQ for stored events, answered past nostr-sdk ([`super::reads`]): the events
    /// matching `filter` (each once; not verified: see the module docs), in the relay's
    /// order, once the relay says EOSE. Expired events (NIP-40) are left out, as nostr-sdk
    /// does. [`OperatorRelayError::Unavailable`] when the relay is not connected within
    /// `connect_timeout`, does not say EOSE within `query_timeout`, says CLOSED, the
    /// connection is lost meanwhile, or it sends more than `nostr.max_events_per_req`
    /// events or `nostr.max_bytes_per_req` bytes.
    async fn read(&self, filter: Filter) -> Result<Vec<Event>, OperatorRelayError> {
        self.ready().await?;
        let bounds = self.set.bounds();
        let mut route = self.reads.open(bounds.max_bytes);
        let id = SubscriptionId::new(route.id());
        self.relay
            .send_msg(ClientMessage::req(id.clone(), vec![filter.clone()]))
            .map_err(|e| self.unavailable(format!("REQ not sent: {e}")))?;
        let mut events: Vec<Event> = Vec::new();
        let mut kept = HashSet::new();
        let mut received = 0usize;
        let wait = async {
            loop {
                match route.next().await {
                    Ok(ReadMessage::Event(text)) => {
                        received += 1;
                        if received > bounds.max_events {
                            return Err(format!(
                                "answer cut off: it sent more than {} events \
                                 (nostr.max_events_per_req)",
                                bounds.max_events
                            ));
                        }
                        let event =
                            match serde_json::from_str::<(IgnoredAny, IgnoredAny, Event)>(&text) {
                                Ok((_, _, event)) => event,
                                Err(e) => {
                                    log::warn!(
                                        "{}: unreadable stored event skipped: {e}",
                                        self.url
                                    );
                                    continue;
                                }
                            };
                        if let Some(why) = mismatch(&filter, &event) {
                            self.set.stats().count_ignored(why);
                        } else if event.is_expired() || !kept.insert(event.id) {
                            continue;
                        } else {
                            events.push(event);
                        }
                    }
                    Ok(ReadMessage::Eose) => return Ok(()),
                    Ok(ReadMessage::Closed(text)) => {
                        let message =
                            serde_json::from_str::<(IgnoredAny, IgnoredAny, String)>(&text)
                                .map(|(_, _, m)| m)
                                .unwrap_or_default();
                        return Err(format!("CLOSED: {}", untrusted(&message)));
                    }
                    Err(RouteEnd::Disconnected) => {
                        return Err("disconnected during the read".to_owned())
                    }
                    Err(RouteEnd::Cut { max_bytes }) => {
                        return Err(format!(
                            "answer cut off: it sent more than {max_bytes} bytes \
                             (nostr.max_bytes_per_req)"
                        ))
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(self.set.tuning().query_timeout, wait).await;
        // Best effort: the route is closed either way, so nothing more of it is kept.
        let _ = self.relay.send_msg(ClientMessage::close(id));
        match outcome {
            Ok(Ok(())) => Ok(events),
            Ok(Err(problem)) => Err(self.unavailable(problem)),
            Err(_) => Err(self.unavailable(format!(
                "no EOSE within {}s",
                self.set.tuning().query_timeout.as_secs_f64()
            ))),
        }
    }

    /// A subscription that stays open: the events matching `filter` as the relay sends
    /// them — first those it already has, in its order (newest first on both test relays),
    /// then each new one as it is stored. Relays match new events against the whole
    /// filter, `since` included: with `since` = now, an event stored now but created
    /// earlier (an old event forwarded late) is not delivered; `limit: 0` without `since`
    /// asks for new events only, whatever their `created_at` (NIP-01; the PyPI
    /// `nostr-relay` ignores `limit: 0` and sends its stored events too). See
    /// [`LiveEvents`] for reconnection, lag and closing. To serve "stored, then live"
    /// without a gap, open this before reading [`OperatorRelay::stored`] and drop repeats
    /// by id.
    ///
    /// [`OperatorRelayError::Unavailable`] if the relay is not connected within
    /// `connect_timeout` or the REQ cannot be sent.
    pub async fn live(&self, filter: Filter) -> Result<LiveEvents, OperatorRelayError> {
        self.ready().await?;
        let tuning = self.set.tuning();
        // Listen before subscribing, so nothing the relay sends for it is missed.
        let notifications = self.relay.notifications();
        let mut live = LiveEvents {
            relay: self.relay.clone(),
            id: SubscriptionId::generate(),
            filter,
            notifications,
            connections: self.relay.stats().success(),
            started: Timestamp::now(),
            newest: None,
            recent: VecDeque::new(),
            recent_ids: HashSet::new(),
            recent_capacity: tuning.notification_capacity.max(1024),
            resubscriptions: 0,
            ended: false,
        };
        live.send_req(vec![live.filter.clone()])
            .map_err(|e| self.unavailable(format!("REQ not sent: {e}")))?;
        Ok(live)
    }

    /// Closes the connection for good (every [`LiveEvents`] then ends).
    pub async fn shutdown(&self) {
        self.set.shutdown().await;
    }
}

/// A live subscription on the operator's relay ([`OperatorRelay::live`]).
///
/// - **Reconnection.** A restarted relay has forgotten the subscription. The REQ is sent
///   outside nostr-sdk's own subscription bookkeeping (which resubscribes only when the
///   reconnect falls in a later whole second than the subscription, and then replays from
///   the original filter). Instead, whenever the connection comes back
///   ([`RelayStatus::Connected`], or a later successful connection noticed after a lag),
///   the REQ is sent again under the same id with two filters: the caller's filter with
///   `limit: 0` (new events from now on, exactly as before), and a catch-up: the caller's
///   filter without its limit and with `since` raised to the newest `created_at` yielded
///   (or the subscription's start if later; never later than now). So events the relay
///   stored while the connection was down are delivered if created from that second on;
///   ids already yielded are dropped (the last `max(notification_capacity, 1024)` are
///   remembered). Events stored during the outage with an older `created_at` are not:
///   read them with [`OperatorRelay::stored`]. A relay that ignores `limit: 0` (the PyPI
///   `nostr-relay`) replays everything matching the filter again, and events older than
///   the remembered ids come out a second time. [`LiveEvents::resubscriptions`] counts
///   these renewals. While the relay is down, `next` simply waits.
/// - **Lag.** Events are buffered in the connection's notification buffer until `next`
///   takes them; a burst within it loses nothing. If the listener falls further behind,
///   `next` yields [`OperatorRelayError::Lagged`] once for that gap and goes on.
/// - **End.** `next` returns `None` once the connection is shut down for good, or after
///   yielding [`OperatorRelayError::Closed`] when the relay closed the subscription.
/// - **Drop** sends CLOSE for the subscription.
pub struct LiveEvents {
    /// The relay the subscription lives on.
    relay: Relay,
    /// The subscription's id, kept across resubscriptions.
    id: SubscriptionId,
    /// The filter as asked for.
    filter: Filter,
    /// The connection's notifications, from before the first REQ.
    notifications: broadcast::Receiver<RelayNotification>,
    /// Successful connections of the relay when the REQ was last sent.
    connections: usize,
    /// When the subscription was opened.
    started: Timestamp,
    /// The newest `created_at` yielded.
    newest: Option<Timestamp>,
    /// The ids most recently yielded, oldest first (to drop what a resubscription repeats).
    recent: VecDeque<EventId>,
    /// The same ids, to look up.
    recent_ids: HashSet<EventId>,
    /// How many ids `recent` keeps.
    recent_capacity: usize,
    /// How many times the REQ was sent again after a reconnection.
    resubscriptions: u64,
    /// Nothing more will come.
    ended: bool,
}

impl LiveEvents {
    /// The subscription's id on the relay.
    pub fn subscription_id(&self) -> &SubscriptionId {
        &self.id
    }

    /// The filter as asked for.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// How many times the subscription was sent again after the relay reconnected.
    pub fn resubscriptions(&self) -> u64 {
        self.resubscriptions
    }

    /// The next event: `Some(Ok(event))`; `Some(Err(Lagged))` after a gap (then goes on);
    /// `Some(Err(Closed))` when the relay ended the subscription (then `None`); `None`
    /// when the connection is shut down for good. Waits while the relay is down.
    pub async fn next(&mut self) -> Option<Result<Event, OperatorRelayError>> {
        while !self.ended {
            match self.notifications.recv().await {
                Ok(RelayNotification::Message { message }) => match message {
                    RelayMessage::Event {
                        subscription_id,
                        event,
                    } if *subscription_id == self.id => {
                        if let Some(event) = self.first_time(event.into_owned()) {
                            return Some(Ok(event));
                        }
                    }
                    RelayMessage::Closed {
                        subscription_id,
                        message,
                    } if *subscription_id == self.id => {
                        self.ended = true;
                        return Some(Err(OperatorRelayError::Closed {
                            reason: message.into_owned(),
                        }));
                    }
                    _ => {}
                },
                Ok(RelayNotification::RelayStatus {
                    status: RelayStatus::Connected,
                }) => self.resubscribe(),
                Ok(RelayNotification::RelayStatus {
                    status: RelayStatus::Terminated | RelayStatus::Banned,
                })
                | Ok(RelayNotification::Shutdown)
                | Err(RecvError::Closed) => self.ended = true,
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    // The gap may have hidden a reconnection.
                    if self.relay.is_connected() && self.relay.stats().success() != self.connections
                    {
                        self.resubscribe();
                    }
                    return Some(Err(OperatorRelayError::Lagged { missed }));
                }
            }
        }
        None
    }

    /// `event` unless it was yielded already; remembers it.
    fn first_time(&mut self, event: Event) -> Option<Event> {
        if !self.recent_ids.insert(event.id) {
            return None;
        }
        self.recent.push_back(event.id);
        if self.recent.len() > self.recent_capacity {
            if let Some(old) = self.recent.pop_front() {
                self.recent_ids.remove(&old);
            }
        }
        if self.newest.is_none_or(|n| event.created_at > n) {
            self.newest = Some(event.created_at);
        }
        Some(event)
    }

    /// Sends the REQ again: the filter for new events, and a catch-up from the newest
    /// second yielded (see the type's docs).
    fn resubscribe(&mut self) {
        let new_only = self.filter.clone().limit(0);
        let mut catch_up = self.filter.clone();
        catch_up.limit = None;
        let from = self
            .newest
            .map_or(self.started, |n| n.max(self.started))
            .min(Timestamp::now());
        catch_up.since = Some(catch_up.since.map_or(from, |s| s.max(from)));
        match self.send_req(vec![new_only, catch_up]) {
            Ok(()) => self.resubscriptions += 1,
            Err(e) => log::warn!(
                "operator relay {}: live subscription {} not renewed: {e}",
                self.relay.url(),
                self.id
            ),
        }
    }

    fn send_req(&mut self, filters: Vec<Filter>) -> Result<(), SdkRelayError> {
        self.connections = self.relay.stats().success();
        self.relay
            .send_msg(ClientMessage::req(self.id.clone(), filters))
    }
}

impl Drop for LiveEvents {
    fn drop(&mut self) {
        // Best effort: fails only if the connection is already gone for good.
        let _ = self.relay.send_msg(ClientMessage::close(self.id.clone()));
    }
}
