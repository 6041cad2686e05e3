//! The other direction: peers' REQs answered from the operator's relay. Each accepted REQ
//! runs as one task that sends the stored events (oldest first, so the asker's cursor
//! only moves forward), then EOSE, then the live events as the relay gets them, each as
//! an EVENT request over the session the REQ came on, one at a time (the next goes once
//! the asker has answered the previous). CLOSE, a newer REQ with the same id, or the end
//! of the session stops it. A peer holds at most `max_per_peer` open subscriptions; a REQ
//! beyond them is refused with a NOTICE. An event too large for one BTP-NIPs packet is
//! never cut: the asker gets a NOTICE naming it instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use nostr::{Event, Filter};
use tokio::task::JoinHandle;

use super::messages::{read_ok, NostrMessage};
use super::OperatorStore;
use crate::session::connection::Link;
use crate::session::service::{send_btp_nips, SendError};
use crate::session::{unix_now, PeerIdentity};

/// How REQs are served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub max_per_peer: usize,
    pub page_size: usize,
    pub max_stored: usize,
    /// How long the asker has to answer one EVENT.
    pub request_timeout: Duration,
    /// This node's ILP address (the sender of what it sends).
    pub own_address: String,
}

/// Counters, for logs and the benchmark.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub events_sent: std::sync::atomic::AtomicU64,
    pub too_large: std::sync::atomic::AtomicU64,
}

/// One running subscription.
struct Running {
    /// Tells a finished task's clean-up from a newer subscription under the same id.
    generation: u64,
    task: JoinHandle<()>,
}

/// The subscriptions peers hold on this node.
pub struct Serving {
    store: Arc<dyn OperatorStore>,
    settings: ServeSettings,
    open: Arc<Mutex<HashMap<PeerIdentity, HashMap<String, Running>>>>,
    next_generation: std::sync::atomic::AtomicU64,
    pub stats: Arc<ServeStats>,
}

impl Serving {
    pub fn new(store: Arc<dyn OperatorStore>, settings: ServeSettings) -> Serving {
        Serving {
            store,
            settings,
            open: Arc::default(),
            next_generation: Default::default(),
            stats: Arc::default(),
        }
    }

    /// A REQ from `from` over `link`: starts serving it, or says why not (the NOTICE text).
    pub fn request(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        id: String,
        filters: Vec<Filter>,
    ) -> Result<(), String> {
        let mut open = self.lock();
        let peer_subs = open.entry(from.clone()).or_default();
        // NIP-01: a REQ with an open id replaces that subscription.
        if let Some(old) = peer_subs.remove(&id) {
            old.task.abort();
        }
        // Subscriptions of a session that ended count no more.
        peer_subs.retain(|_, r| !r.task.is_finished());
        if peer_subs.len() >= self.settings.max_per_peer {
            return Err(format!(
                "subscription {id} refused: {} subscriptions open, the most one peer may hold \
                 here (events.max_subscriptions_per_peer)",
                peer_subs.len()
            ));
        }
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        peer_subs.insert(id, Running { generation, task });
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

        let mut stored: Vec<Event> = Vec::new();
        let mut truncated = false;
        for filter in &self.filters {
            match self
                .store
                .stored(
                    filter.clone(),
                    self.settings.page_size,
                    self.settings.max_stored,
                )
                .await
            {
                Ok((events, cut)) => {
                    stored.extend(events);
                    truncated |= cut;
                }
                Err(e) => return self.notice_and_end(&format!("operator relay: {e}")).await,
            }
        }
        stored.sort_by_key(|e| (e.created_at, e.id));
        stored.dedup_by(|a, b| a.id == b.id);
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
        let mut sent: HashSet<nostr::EventId> = HashSet::new();
        for event in stored {
            if let Err(e) = self.send_event(&event).await {
                return e;
            }
            sent.insert(event.id);
        }
        if let Err(e) = self
            .send(NostrMessage::Eose {
                id: self.id.clone(),
            })
            .await
        {
            return e;
        }
        while let Some(item) = live.next().await {
            match item {
                Ok(event) => {
                    if sent.contains(&event.id) {
                        continue;
                    }
                    if let Err(e) = self.send_event(&event).await {
                        return e;
                    }
                }
                Err(e) => return self.notice_and_end(&format!("operator relay: {e}")).await,
            }
        }
        self.notice_and_end("operator relay: live feed ended").await
    }

    /// Sends one event; one too large for a packet is replaced by a NOTICE naming it.
    async fn send_event(&self, event: &Event) -> Result<(), String> {
        let message = NostrMessage::Event {
            id: self.id.clone(),
            event: Box::new(event.clone()),
        };
        match self.send(message).await {
            Ok(()) => {
                self.stats
                    .events_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.starts_with(TOO_LARGE) => {
                self.stats
                    .too_large
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let size = serde_json::to_vec(event).map_or(0, |v| v.len());
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
