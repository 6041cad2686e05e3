//! The other direction: peers' REQs answered from the operator's relay. Each accepted REQ
//! runs as one task that sends the stored events (oldest first, so the asker's cursor
//! only moves forward), then EOSE, then the live events as the relay gets them, each as
//! an EVENT request over the session the REQ came on, up to `events.max_events_in_flight`
//! at once (a window: answers are taken in the order the events went, and EOSE goes only
//! once every stored event is answered). CLOSE, a newer REQ with the same id, or the end
//! of the session stops it. An event too large for one BTP-NIPs packet is never cut: the
//! asker gets a NOTICE naming it instead.
//!
//! Every filter of a served subscription is one live REQ on the node's single connection
//! to the operator's relay, and relays cap the REQs of one connection; so what one asker
//! may hold is bounded, each refusal a NOTICE naming its setting and counted in
//! [`ServeStats`]:
//!
//! - filters per REQ (`events.max_filters_per_req`);
//! - open subscriptions per peer (`events.max_subscriptions_per_peer`);
//! - live REQs per peer (`events.max_live_reqs_per_peer`) and in all
//!   (`events.max_live_reqs`), of which `events.live_reqs_reserved_for_followed` only
//!   followed peers may use: peers not followed share the rest, so no load of theirs can
//!   take a followed peer's room (and with the total set under the relay's own limit, the
//!   relay never refuses a followed peer's REQ). Whether the asker is followed is what the
//!   flow learnt when it subscribed to that peer ([`Serving::set_followed`]); a peer this
//!   node follows but has not yet subscribed to counts as not followed until then.
//!
//! Stored events are read as ids first (at most `max_stored` for the whole REQ, the
//! newest), then fetched in chunks of half a page, the next chunk read while the current
//! one is sent, so a REQ holds at most one page of events in memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, FuturesOrdered, StreamExt};
use nostr::{Event, EventId, Filter, PublicKey};
use tokio::task::JoinHandle;

use super::messages::{read_ok, NostrMessage};
use super::OperatorStore;
use crate::config::EventSettings;
use crate::session::connection::Link;
use crate::session::service::{send_btp_nips, SendError};
use crate::session::{unix_now, PeerIdentity};

/// How REQs are served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub max_per_peer: usize,
    pub max_filters_per_req: usize,
    pub max_live_per_peer: usize,
    pub max_live: usize,
    pub reserved_for_followed: usize,
    pub page_size: usize,
    pub max_stored: usize,
    /// EVENTs sent and not yet answered, per subscription.
    pub window: usize,
    /// How long the asker has to answer one EVENT.
    pub request_timeout: Duration,
    /// This node's ILP address (the sender of what it sends).
    pub own_address: String,
}

impl ServeSettings {
    /// The settings of the `events` section; each EVENT waits `request_timeout` for its
    /// answer; `own_address` sends.
    pub fn from_settings(
        s: &EventSettings,
        request_timeout: Duration,
        own_address: &str,
    ) -> ServeSettings {
        ServeSettings {
            max_per_peer: s.max_subscriptions_per_peer,
            max_filters_per_req: s.max_filters_per_req,
            max_live_per_peer: s.max_live_reqs_per_peer,
            max_live: s.max_live_reqs,
            reserved_for_followed: s.live_reqs_reserved_for_followed,
            page_size: s.stored_page_size,
            max_stored: s.max_stored_events,
            window: s.max_events_in_flight.max(1),
            request_timeout,
            own_address: own_address.to_owned(),
        }
    }
}

/// Counters, for logs, the benchmark and the admin metrics.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub events_sent: AtomicU64,
    pub too_large: AtomicU64,
    /// REQs refused for carrying more than `events.max_filters_per_req` filters.
    pub refused_filters_per_req: AtomicU64,
    /// REQs refused at `events.max_subscriptions_per_peer`.
    pub refused_subscriptions_per_peer: AtomicU64,
    /// REQs refused at `events.max_live_reqs_per_peer`.
    pub refused_live_reqs_per_peer: AtomicU64,
    /// REQs refused at `events.max_live_reqs`.
    pub refused_live_reqs: AtomicU64,
    /// REQs of peers not followed refused because the rest of `events.max_live_reqs` is
    /// `events.live_reqs_reserved_for_followed`.
    pub refused_live_reqs_strangers: AtomicU64,
}

/// One running subscription.
struct Running {
    /// Tells a finished task's clean-up from a newer subscription under the same id.
    generation: u64,
    task: JoinHandle<()>,
    /// Its live REQs on the operator's relay (its filters).
    live: usize,
    /// Whether it counts against the share of peers not followed.
    stranger: bool,
}

/// The subscriptions peers hold on this node.
pub struct Serving {
    store: Arc<dyn OperatorStore>,
    settings: ServeSettings,
    open: Arc<Mutex<HashMap<PeerIdentity, HashMap<String, Running>>>>,
    next_generation: AtomicU64,
    /// The peers this node follows, as the flow learnt when it subscribed to them.
    followed: Mutex<HashSet<PublicKey>>,
    pub stats: Arc<ServeStats>,
}

impl Serving {
    pub fn new(store: Arc<dyn OperatorStore>, settings: ServeSettings) -> Serving {
        Serving {
            store,
            settings,
            open: Arc::default(),
            next_generation: Default::default(),
            followed: Mutex::default(),
            stats: Arc::default(),
        }
    }

    /// Records whether this node follows `peer` (its REQs then may use the live REQs
    /// reserved for followed peers).
    pub fn set_followed(&self, peer: &PublicKey, followed: bool) {
        let mut set = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if followed {
            set.insert(*peer);
        } else {
            set.remove(peer);
        }
    }

    /// Whether `peer` is one this node follows.
    pub fn is_followed(&self, peer: &PeerIdentity) -> bool {
        match peer {
            PeerIdentity::Nostr(pk) => self
                .followed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(pk),
            _ => false,
        }
    }

    fn refuse(&self, counter: &AtomicU64, notice: String) -> Result<(), String> {
        counter.fetch_add(1, Ordering::Relaxed);
        Err(notice)
    }

    /// A REQ from `from` over `link`: starts serving it, or says why not (the NOTICE text).
    pub fn request(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        id: String,
        filters: Vec<Filter>,
    ) -> Result<(), String> {
        let s = &self.settings;
        let asked = filters.len();
        if asked > s.max_filters_per_req {
            return self.refuse(
                &self.stats.refused_filters_per_req,
                format!(
                    "subscription {id} refused: {asked} filters, more than one REQ may carry \
                     here ({}, events.max_filters_per_req)",
                    s.max_filters_per_req
                ),
            );
        }
        let stranger = !self.is_followed(from);
        let mut open = self.lock();
        if let Some(peer_subs) = open.get_mut(from) {
            // NIP-01: a REQ with an open id replaces that subscription.
            if let Some(old) = peer_subs.remove(&id) {
                old.task.abort();
            }
            // Subscriptions of a session that ended count no more.
            peer_subs.retain(|_, r| !r.task.is_finished());
        }
        let (subs_held, peer_live) = open.get(from).map_or((0, 0), |subs| {
            (subs.len(), subs.values().map(|r| r.live).sum::<usize>())
        });
        let (total, strangers) = open
            .values()
            .flat_map(|subs| subs.values())
            .filter(|r| !r.task.is_finished())
            .fold((0, 0), |(t, st), r| {
                (t + r.live, st + if r.stranger { r.live } else { 0 })
            });
        let strangers_share = s.max_live.saturating_sub(s.reserved_for_followed);
        let refused = if subs_held >= s.max_per_peer {
            Some((
                &self.stats.refused_subscriptions_per_peer,
                format!(
                    "{subs_held} subscriptions open, the most one peer may hold here \
                     (events.max_subscriptions_per_peer)"
                ),
            ))
        } else if peer_live + asked > s.max_live_per_peer {
            Some((
                &self.stats.refused_live_reqs_per_peer,
                format!(
                    "{peer_live} live REQs held and {asked} asked, more than one peer may \
                     hold here ({}, events.max_live_reqs_per_peer)",
                    s.max_live_per_peer
                ),
            ))
        } else if total + asked > s.max_live {
            Some((
                &self.stats.refused_live_reqs,
                format!(
                    "{total} live REQs held by all peers and {asked} asked, more than this \
                     node holds on its relay ({}, events.max_live_reqs)",
                    s.max_live
                ),
            ))
        } else if stranger && strangers + asked > strangers_share {
            Some((
                &self.stats.refused_live_reqs_strangers,
                format!(
                    "{strangers} live REQs held by peers this node does not follow and {asked} \
                     asked, more than their share ({strangers_share}: events.max_live_reqs \
                     less events.live_reqs_reserved_for_followed)"
                ),
            ))
        } else {
            None
        };
        if let Some((counter, why)) = refused {
            if open.get(from).is_some_and(|subs| subs.is_empty()) {
                open.remove(from);
            }
            drop(open);
            return self.refuse(counter, format!("subscription {id} refused: {why}"));
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            store: self.store.clone(),
            settings: self.settings.clone(),
            stats: self.stats.clone(),
            link: link.clone(),
            peer: from.clone(),
            id: id.clone(),
            filters,
        };
        let open_map = self.open.clone();
        let (peer, sub) = (from.clone(), id.clone());
        let task = tokio::spawn(async move {
            let link = job.link.clone();
            let reason = tokio::select! {
                r = job.run() => r,
                r = link.closed() => format!("session closed: {r}"),
            };
            log::debug!("{peer}: subscription {sub} ended: {reason}");
            let mut open = open_map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(subs) = open.get_mut(&peer) {
                if subs.get(&sub).is_some_and(|r| r.generation == generation) {
                    subs.remove(&sub);
                }
                if subs.is_empty() {
                    open.remove(&peer);
                }
            }
        });
        open.entry(from.clone()).or_default().insert(
            id,
            Running {
                generation,
                task,
                live: asked,
                stranger,
            },
        );
        Ok(())
    }

    /// A CLOSE from `from`: stops its subscription `id` (false if none was open).
    pub fn close(&self, from: &PeerIdentity, id: &str) -> bool {
        let mut open = self.lock();
        let Some(subs) = open.get_mut(from) else {
            return false;
        };
        let found = subs.remove(id).map(|r| r.task.abort()).is_some();
        if subs.is_empty() {
            open.remove(from);
        }
        found
    }

    /// Open subscriptions of `from`.
    pub fn open_count(&self, from: &PeerIdentity) -> usize {
        self.lock()
            .get(from)
            .map_or(0, |s| s.values().filter(|r| !r.task.is_finished()).count())
    }

    /// Live REQs the served subscriptions hold on the operator's relay now (one per filter).
    pub fn live_reqs(&self) -> usize {
        self.lock()
            .values()
            .flat_map(|subs| subs.values())
            .filter(|r| !r.task.is_finished())
            .map(|r| r.live)
            .sum()
    }

    /// Stops every subscription (shutdown).
    pub fn stop_all(&self) {
        for (_, subs) in self.lock().drain() {
            for (_, r) in subs {
                r.task.abort();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerIdentity, HashMap<String, Running>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One subscription being served.
struct Job {
    store: Arc<dyn OperatorStore>,
    settings: ServeSettings,
    stats: Arc<ServeStats>,
    link: Arc<Link>,
    peer: PeerIdentity,
    id: String,
    filters: Vec<Filter>,
}

impl Job {
    /// Serves until the asker stops answering or the relay's live feed ends; returns why.
    async fn run(self) -> String {
        // Live first, so nothing published while the stored events go out is missed. The
        // live filter is the asked one with `limit: 0` (NIP-01: new events only), not
        // `since: now`, so an event published now with an older created_at still goes.
        let mut feeds = Vec::with_capacity(self.filters.len());
        for filter in &self.filters {
            let live = filter.clone().limit(0);
            match self.store.live(live).await {
                Ok(feed) => feeds.push(feed),
                Err(e) => return self.notice_and_end(&format!("operator relay: {e}")).await,
            }
        }
        let mut live = stream::select_all(feeds);

        // The stored events of all filters, as ids: the newest `max_stored` in all.
        let max = self.settings.max_stored;
        let mut index: BTreeSet<(u64, EventId)> = BTreeSet::new();
        let mut truncated = false;
        for filter in &self.filters {
            match self
                .store
                .stored_ids(filter.clone(), self.settings.page_size, max)
                .await
            {
                Ok((ids, cut)) => {
                    index.extend(ids);
                    truncated |= cut;
                    while index.len() > max {
                        index.pop_first();
                        truncated = true;
                    }
                }
                Err(e) => return self.notice_and_end(&format!("operator relay: {e}")).await,
            }
        }
        if truncated {
            let text = format!(
                "subscription {}: only the newest {} stored events are served \
                 (events.max_stored_events)",
                self.id, self.settings.max_stored
            );
            if let Err(e) = self.send(NostrMessage::Notice { message: text }).await {
                return e;
            }
        }
        // Events already sent from the stored set, so the live feed does not repeat them
        // (one published while the stored ones were read is in both; a relay that ignores
        // `limit: 0` repeats them all).
        let index: Vec<EventId> = index.into_iter().map(|(_, id)| id).collect();
        let sent: HashSet<EventId> = index.iter().copied().collect();
        // Oldest first, in chunks of half a page, the next one read while the current one
        // goes out (so the window does not wait for each read): at most one page of events
        // is held (and the window's events in flight).
        let window = self.settings.window;
        let mut chunks = index.chunks((self.settings.page_size / 2).max(1));
        let mut in_flight = FuturesOrdered::new();
        let mut current = Vec::new().into_iter();
        let mut reading = chunks.next().map(|ids| self.store.events(ids));
        let mut read: Option<Vec<Event>> = None;
        loop {
            if current.len() == 0 {
                if let Some(events) = read.take() {
                    current = events.into_iter();
                    reading = chunks.next().map(|ids| self.store.events(ids));
                }
            }
            while in_flight.len() < window {
                let Some(event) = current.next() else { break };
                in_flight.push_back(self.send_event(event));
            }
            if current.len() == 0 && read.is_none() && reading.is_none() && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                events = async { reading.as_mut().expect("guarded").await },
                    if reading.is_some() && read.is_none() =>
                {
                    reading = None;
                    match events {
                        Ok(events) => read = Some(events),
                        Err(e) => {
                            return self.notice_and_end(&format!("operator relay: {e}")).await
                        }
                    }
                }
                Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(e) = answer {
                        return e;
                    }
                }
            }
        }
        if let Err(e) = self
            .send(NostrMessage::Eose {
                id: self.id.clone(),
            })
            .await
        {
            return e;
        }
        // Live events as the relay gives them, while the window has room; answers as they
        // come, in order.
        loop {
            tokio::select! {
                item = live.next(), if in_flight.len() < window => match item {
                    Some(Ok(event)) => {
                        if !sent.contains(&event.id) {
                            in_flight.push_back(self.send_event(event));
                        }
                    }
                    Some(Err(e)) => {
                        return self.notice_and_end(&format!("operator relay: {e}")).await
                    }
                    None => break,
                },
                Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(e) = answer {
                        return e;
                    }
                }
            }
        }
        while let Some(answer) = in_flight.next().await {
            if let Err(e) = answer {
                return e;
            }
        }
        self.notice_and_end("operator relay: live feed ended").await
    }

    /// Sends one event; one too large for a packet is replaced by a NOTICE naming it.
    async fn send_event(&self, event: Event) -> Result<(), String> {
        let message = NostrMessage::Event {
            id: self.id.clone(),
            event: Box::new(event.clone()),
        };
        match self.send(message).await {
            Ok(()) => {
                self.stats.events_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.starts_with(TOO_LARGE) => {
                self.stats.too_large.fetch_add(1, Ordering::Relaxed);
                let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
                log::warn!(
                    "{}: event {} not sent on subscription {}: {e}",
                    self.peer,
                    event.id,
                    self.id
                );
                self.send(NostrMessage::Notice {
                    message: format!(
                        "event {} not sent: its {size}-byte JSON does not fit in one \
                         BTP-NIPs packet ({} bytes at most); it is never cut",
                        event.id,
                        crate::wire::btp_nips::MAX_PACKET_LEN
                    ),
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one message and waits for the answer; an EVENT the asker refused ends the
    /// subscription (the asker has no use for what follows).
    async fn send(&self, message: NostrMessage) -> Result<(), String> {
        let packet = message.to_packet(&self.settings.own_address, unix_now());
        match send_btp_nips(&self.link, &packet, self.settings.request_timeout).await {
            Ok(Some(answer)) if matches!(message, NostrMessage::Event { .. }) => {
                match read_ok(&answer) {
                    Ok((true, _)) => Ok(()),
                    Ok((false, why)) => {
                        // The asker's relay would not take it: its business, go on.
                        log::debug!("{}: event not accepted: {why}", self.peer);
                        Ok(())
                    }
                    Err(e) => Err(format!("answer to EVENT unreadable: {e}")),
                }
            }
            Ok(_) => Ok(()),
            Err(SendError::TooLarge(e)) => Err(format!("{TOO_LARGE}{e}")),
            Err(SendError::Rejected { code, message }) => {
                Err(format!("the peer refused it ({code}): {message}"))
            }
            Err(SendError::Failed(e)) => Err(e),
        }
    }

    async fn notice_and_end(&self, problem: &str) -> String {
        let _ = self
            .send(NostrMessage::Notice {
                message: format!("subscription {} ended: {problem}", self.id),
            })
            .await;
        problem.to_owned()
    }
}

const TOO_LARGE: &str = "too large: ";
