//! [`NostrResolver`], the real [`AddressResolver`]: finds a pubkey's kind 32001
//! announcement on the configured relays, judges it (see [`super::announcement`]) and
//! remembers the answer: found for `found_ttl` (1 h by default), "not found" and invalid
//! for `not_found_ttl` (5 min). A transient answer is never cached.
//!
//! Lookups are batched: the peer actors' `resolve` calls that arrive within
//! `batch_window` are asked together, up to `max_authors_per_req` authors per REQ.
//!
//! The answer for each pubkey:
//! - a valid newest announcement → `Found`;
//! - an invalid one → `Failed(Permanent(reason))`;
//! - every relay answered (EOSE, nothing cut off by the limit) and none has one →
//!   `NotFound` (the lifecycle fails the peer after `max_discovery_attempts` of these);
//! - otherwise (a relay down, silent, refusing or cut off by a bound) → `Failed(Transient)`:
//!   an empty fetch is not proof of absence.
//!
//! What a relay sends is screened twice: [`RelaySet::query`] ignores events that do not
//! match the REQ (another author, kind or `d` tag) and bounds each relay's answer; here, an
//! event whose id or signature does not check out is ignored as if it had not been sent.
//! An announced endpoint on a non-public address is refused (see
//! [`super::announcement::check_announced_host`]) and counted in [`ResolverStats`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use nostr_sdk::prelude::{Event, Filter, PublicKey};
use tokio::sync::{mpsc, oneshot};

use super::announcement::{
    announcement_kind, screen, select_newest, validate, HostClass, InvalidAnnouncement,
    ANNOUNCEMENT_D_TAG,
};
use super::bounds::Ignored;
use super::relays::RelaySet;
use crate::lifecycle::Timestamp;
use crate::ports::{AddressResolver, Fault, Resolution};

/// Where the resolver reads the time (its caches expire by it); tests drive it by hand.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now_system)
}

#[derive(Debug, Clone)]
pub struct ResolverSettings {
    pub allow_ws_loopback: bool,
    pub found_ttl: Duration,
    pub not_found_ttl: Duration,
    /// Authors per REQ; a relay caps how much one REQ returns.
    pub max_authors_per_req: usize,
    /// How long `resolve` calls are gathered into one batch.
    pub batch_window: Duration,
    /// REQs in flight at once per batch.
    pub parallel_reqs: usize,
}

/// Counters, for tests, the benchmark and the admin metrics. What the relays sent that was
/// ignored or cut off is counted in [`RelaySet::stats`].
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// REQs sent (one per chunk, to all relays at once).
    pub reqs: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Announcements refused for an endpoint on a non-public address, per class.
    pub endpoints_refused: EndpointRefusals,
}

/// Announced endpoints refused, per [`HostClass`].
#[derive(Debug, Default)]
pub struct EndpointRefusals {
    pub loopback: AtomicU64,
    pub private: AtomicU64,
    pub link_local: AtomicU64,
    pub unspecified: AtomicU64,
    pub shared: AtomicU64,
    pub documentation: AtomicU64,
    pub reserved: AtomicU64,
}

impl EndpointRefusals {
    pub fn counter(&self, class: HostClass) -> &AtomicU64 {
        match class {
            HostClass::Loopback => &self.loopback,
            HostClass::Private => &self.private,
            HostClass::LinkLocal => &self.link_local,
            HostClass::Unspecified => &self.unspecified,
            HostClass::Shared => &self.shared,
            HostClass::Documentation => &self.documentation,
            HostClass::Reserved => &self.reserved,
        }
    }

    /// Every refusal, whatever the class.
    pub fn total(&self) -> u64 {
        HostClass::ALL
            .iter()
            .map(|c| self.counter(*c).load(Ordering::Relaxed))
            .sum()
    }
}

struct Cached {
    resolution: Resolution,
    expires_at: Timestamp,
}

struct Inner {
    relays: RelaySet,
    settings: ResolverSettings,
    clock: Clock,
    cache: Mutex<HashMap<PublicKey, Cached>>,
    stats: ResolverStats,
}

type Waiter = (PublicKey, oneshot::Sender<Resolution>);

/// The Nostr-backed resolver. Cheap to clone.
#[derive(Clone)]
pub struct NostrResolver {
    inner: Arc<Inner>,
    batch: mpsc::UnboundedSender<Waiter>,
}

impl NostrResolver {
    /// Starts the batching task (needs a tokio runtime).
    pub fn new(relays: RelaySet, settings: ResolverSettings, clock: Clock) -> Self {
        let inner = Arc::new(Inner {
            relays,
            settings,
            clock,
            cache: Mutex::new(HashMap::new()),
            stats: ResolverStats::default(),
        });
        let (batch, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(inner.clone(), rx));
        NostrResolver { inner, batch }
    }

    pub fn stats(&self) -> &ResolverStats {
        &self.inner.stats
    }

    /// The relays it asks (their [`RelaySet::stats`] count what was ignored or cut off).
    pub fn relays(&self) -> &RelaySet {
        &self.inner.relays
    }

    /// Resolves many pubkeys at once (cache first, then batched REQs).
    pub async fn resolve_many(&self, pubkeys: &[PublicKey]) -> HashMap<PublicKey, Resolution> {
        self.inner.clone().resolve_many(pubkeys.to_vec()).await
    }

    /// Forgets every cached answer.
    pub fn clear_cache(&self) {
        self.inner.cache.lock().expect("cache lock").clear();
    }
}

#[async_trait]
impl AddressResolver for NostrResolver {
    async fn resolve(&self, nostr_pubkey: &str) -> Resolution {
        let pubkey = match PublicKey::from_hex(nostr_pubkey) {
            Ok(pk) => pk,
            Err(e) => {
                return Resolution::Failed(Fault::Permanent(format!(
                    "{nostr_pubkey:?} is not a Nostr public key: {e}"
                )))
            }
        };
        if let Some(hit) = self.inner.cached(&pubkey) {
            return hit;
        }
        let (tx, rx) = oneshot::channel();
        if self.batch.send((pubkey, tx)).is_err() {
            return Resolution::Failed(Fault::Local("resolver stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Resolution::Failed(Fault::Local("resolver stopped".into())))
    }
}

/// Gathers `resolve` calls for `batch_window` and resolves each batch in its own task.
async fn run_batches(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        let deadline = tokio::time::Instant::now() + inner.settings.batch_window;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            waiters.push(next);
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut keys: Vec<PublicKey> = waiters.iter().map(|(k, _)| *k).collect();
            keys.sort();
            keys.dedup();
            let results = inner.resolve_many(keys).await;
            for (key, tx) in waiters {
                let answer = results
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Resolution::Failed(Fault::Local("resolution lost".into())));
                let _ = tx.send(answer);
            }
        });
    }
}

impl Inner {
    fn cached(&self, pubkey: &PublicKey) -> Option<Resolution> {
        let now = (self.clock)();
        let mut cache = self.cache.lock().expect("cache lock");
        match cache.get(pubkey) {
            Some(c) if c.expires_at > now => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Some(c.resolution.clone())
            }
            Some(_) => {
                cache.remove(pubkey);
                None
            }
            None => None,
        }
    }

    fn remember(&self, pubkey: PublicKey, resolution: &Resolution) {
        let ttl = match resolution {
            Resolution::Found(_) => self.settings.found_ttl,
            Resolution::NotFound | Resolution::Failed(Fault::Permanent(_)) => {
                self.settings.not_found_ttl
            }
            // Our relays' trouble says nothing about the peer: ask again next time.
            Resolution::Failed(_) => return,
        };
        let expires_at = (self.clock)() + ttl;
        self.cache.lock().expect("cache lock").insert(
            pubkey,
            Cached {
                resolution: resolution.clone(),
                expires_at,
            },
        );
    }

    async fn resolve_many(
        self: Arc<Self>,
        pubkeys: Vec<PublicKey>,
    ) -> HashMap<PublicKey, Resolution> {
        let mut out = HashMap::with_capacity(pubkeys.len());
        let mut misses = Vec::new();
        for pk in pubkeys {
            match self.cached(&pk) {
                Some(hit) => {
                    out.insert(pk, hit);
                }
                None => misses.push(pk),
            }
        }
        misses.sort();
        misses.dedup();
        let chunk = self.settings.max_authors_per_req.max(1);
        let chunks: Vec<Vec<PublicKey>> = misses.chunks(chunk).map(<[_]>::to_vec).collect();
        let asks = chunks.into_iter().map(|c| {
            let me = self.clone();
            async move { me.resolve_chunk(c).await }
        });
        let mut chunks =
            futures::stream::iter(asks).buffer_unordered(self.settings.parallel_reqs.max(1));
        while let Some(results) = chunks.next().await {
            for (pk, resolution) in results {
                self.remember(pk, &resolution);
                out.insert(pk, resolution);
            }
        }
        out
    }

    /// One REQ for `authors` to every relay; judges each author's answer.
    async fn resolve_chunk(&self, authors: Vec<PublicKey>) -> Vec<(PublicKey, Resolution)> {
        self.stats.reqs.fetch_add(1, Ordering::Relaxed);
        // Headroom for relays that keep more than one version of an addressable event.
        let limit = authors.len() * 2;
        let filter = Filter::new()
            .kind(announcement_kind())
            .authors(authors.iter().copied())
            .identifier(ANNOUNCEMENT_D_TAG)
            .limit(limit);
        let answers = self.relays.query(filter).await;
        let mut by_author: HashMap<PublicKey, Vec<Event>> = HashMap::new();
        for answer in &answers {
            for event in &answer.events {
                by_author
                    .entry(event.pubkey)
                    .or_default()
                    .push(event.clone());
            }
        }
        authors
            .iter()
            .map(|pk| {
                let events = by_author.remove(pk).unwrap_or_default();
                // A relay's answer is complete for this author if it sent EOSE and either
                // has the author's event or was not cut off by the limit.
                let complete = |a: &super::relays::RelayAnswer| {
                    a.answered
                        && (a.events.len() < limit || a.events.iter().any(|e| e.pubkey == *pk))
                };
                let all_complete = answers.iter().all(complete);
                let problems: Vec<String> = answers
                    .iter()
                    .filter(|a| !complete(a))
                    .map(|a| {
                        a.problem
                            .clone()
                            .unwrap_or_else(|| format!("{}: answer cut off by the limit", a.url))
                    })
                    .collect();
                let verdict = judge(
                    pk,
                    &events,
                    all_complete,
                    &problems,
                    answers.len(),
                    self.settings.allow_ws_loopback,
                );
                self.count(pk, &verdict);
                (*pk, verdict.resolution)
            })
            .collect()
    }

    /// Counts (and logs) what `verdict` ignored or refused.
    fn count(&self, pubkey: &PublicKey, verdict: &Judgement) {
        let relay_stats = self.relays.stats();
        for _ in 0..verdict.forgeries {
            relay_stats.count_ignored(Ignored::Signature);
        }
        if verdict.forgeries > 0 {
            log::warn!(
                "ignored {} announcement(s) for {pubkey} with a bad id or signature",
                verdict.forgeries
            );
        }
        if let Some(class) = verdict.refused_endpoint {
            self.stats
                .endpoints_refused
                .counter(class)
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The verdict on one author, with what it set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub resolution: Resolution,
    /// Events ignored because their id or signature does not check out.
    pub forgeries: usize,
    /// The class of the announced endpoint's address, when that is why it was refused.
    pub refused_endpoint: Option<HostClass>,
}

/// The verdict on one author from everything the relays sent for it. An event that is not
/// the author's own announcement slot (see [`screen`]: a forgery, or one the relays should
/// not have sent) is ignored, as if it had not been sent: a relay cannot fail a peer by
/// making one up.
pub fn judge(
    pubkey: &PublicKey,
    events: &[Event],
    every_relay_answered: bool,
    problems: &[String],
    relay_count: usize,
    allow_ws_loopback: bool,
) -> Judgement {
    let mut forgeries = 0;
    let mut authentic = Vec::new();
    for event in events {
        match screen(event, pubkey) {
            Ok(()) => authentic.push(event),
            Err(_) => forgeries += 1,
        }
    }
    let verdict = |resolution, refused_endpoint| Judgement {
        resolution,
        forgeries,
        refused_endpoint,
    };
    if let Some(newest) = select_newest(authentic) {
        return match validate(newest, allow_ws_loopback) {
            Ok(a) => verdict(Resolution::Found(a), None),
            Err(why) => {
                let class = match &why {
                    InvalidAnnouncement::EndpointHost { class, .. } => Some(*class),
                    _ => None,
                };
                verdict(Resolution::Failed(Fault::Permanent(why.to_string())), class)
            }
        };
    }
    if every_relay_answered && relay_count > 0 {
        return verdict(Resolution::NotFound, None);
    }
    let detail = if problems.is_empty() {
        "no relays configured".to_string()
    } else {
        problems.join("; ")
    };
    // Our relays not answering is this node's fault, not the peer's.
    let unanswered = problems.len();
    verdict(
        Resolution::Failed(Fault::Local(if unanswered >= relay_count {
            format!("no relay answered: {detail}")
        } else {
            format!("{unanswered} of {relay_count} relays did not answer: {detail}")
        })),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::announcement::AnnouncementFields;
    use nostr_sdk::prelude::{Keys, Timestamp as NostrTimestamp};

    /// A peer's announcement with `version`, created at `created_at`.
    fn announcement_at(keys: &Keys, version: &str, created_at: u64) -> Event {
        use nostr_sdk::prelude::{EventBuilder, Tag, TagKind};
        let base = AnnouncementFields {
            node_id: "peer".into(),
            endpoint: "wss://peer.example/btp".into(),
            base_address: format!("0x{}", "11".repeat(20)),
            supported_tokens: vec![],
            features: vec![],
            metadata: None,
        }
        .sign(keys, NostrTimestamp::from(created_at));
        let tags: Vec<Tag> = base
            .tags
            .iter()
            .map(|t| match t.as_slice()[0].as_str() {
                "version" => Tag::custom(TagKind::custom("version"), [version.to_string()]),
                _ => t.clone(),
            })
            .collect();
        EventBuilder::new(base.kind, base.content.clone())
            .tags(tags)
            .custom_created_at(base.created_at)
            .sign_with_keys(keys)
            .unwrap()
    }

    fn announcement(keys: &Keys, version: &str) -> Event {
        announcement_at(keys, version, 1_700_000_000)
    }

    #[test]
    fn absence_needs_every_relay_and_silence_is_transient() {
        let pk = Keys::generate().public_key();
        assert_eq!(
            judge(&pk, &[], true, &[], 2, false).resolution,
            Resolution::NotFound
        );
        let one_down = vec!["ws://b: not connected".to_string()];
        match judge(&pk, &[], false, &one_down, 2, false).resolution {
            Resolution::Failed(Fault::Local(why)) => {
                assert!(why.starts_with("1 of 2 relays did not answer"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let all_down = vec!["a: timeout".to_string(), "b: timeout".to_string()];
        match judge(&pk, &[], false, &all_down, 2, false).resolution {
            Resolution::Failed(Fault::Local(why)) => {
                assert!(why.starts_with("no relay answered"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&pk, &[], true, &[], 0, false).resolution,
            Resolution::Failed(Fault::Local(_))
        ));
    }

    #[test]
    fn a_forgery_cannot_outrank_or_hide_the_real_announcement() {
        let keys = Keys::generate();
        let real = announcement(&keys, "1.0.0");
        let mut forged = announcement(&keys, "1.0.0");
        forged.created_at = NostrTimestamp::from(1_900_000_000);
        let other_author = announcement(&Keys::generate(), "1.0.0");
        let events = vec![forged.clone(), real, other_author];
        assert!(matches!(
            judge(&keys.public_key(), &events, true, &[], 1, false).resolution,
            Resolution::Found(_)
        ));
        // Only a forgery: ignored and counted, as if the relay had not sent it (a relay
        // cannot fail a peer by making up its announcement).
        let verdict = judge(&keys.public_key(), &[forged], true, &[], 1, false);
        assert_eq!(verdict.resolution, Resolution::NotFound);
        assert_eq!(verdict.forgeries, 1);
        // The newest authentic version decides, even if an older one was valid.
        let newer_bad = announcement_at(&keys, "9.0.0", 1_700_000_100);
        let events = vec![announcement(&keys, "1.0.0"), newer_bad];
        match judge(&keys.public_key(), &events, true, &[], 1, false).resolution {
            Resolution::Failed(Fault::Permanent(why)) => assert!(why.contains("version"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
