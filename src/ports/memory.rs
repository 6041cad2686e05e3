//! In-memory doubles of every port, for tests of the core and for the benchmark: one
//! [`MemoryWorld`] plays the relays, the peers and the chain, and lets a test script what
//! each of them does (answer, stay silent, refuse, drop a session, panic).
//!
//! These are doubles for the core only; each real adapter is tested against the real thing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    AddressResolver, Announcement, ChannelPolicyStatus, ChannelPort, ChannelRequest, ChannelStatus,
    Fault, PeerTarget, Ports, Resolution, Session, SessionConnector, Subscriptions,
};

#[derive(Default)]
struct World {
    resolutions: HashMap<String, Resolution>,
    resolve_panics: HashMap<String, u32>,
    session_refusals: HashMap<String, Fault>,
    silent: HashSet<String>,
    live_sessions: HashMap<String, Vec<watch::Sender<Option<String>>>>,
    connect_log: Vec<String>,
    channels: HashMap<String, String>,
    auto_open: bool,
    confirmations_needed: u64,
    pending_txs: HashMap<String, (String, u64)>,
    open_count: u64,
    /// Each operator-approved open: the peer and the deposit it was approved with.
    deposits: Vec<(String, Option<u128>)>,
    broadcasts: HashSet<String>,
    subscribe_count: u64,
    /// How long opening a session takes (simulated under a paused clock).
    dial_delay: std::time::Duration,
    /// The node's own network is down: every dial fails as unreachable.
    network_down: bool,
    /// What `channel_policy` answers (default: nothing known).
    policy: Option<ChannelPolicyStatus>,
}

/// A scriptable world behind all four ports. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct MemoryWorld {
    inner: Arc<Mutex<World>>,
    pings_answered: Arc<AtomicU64>,
    dials: Arc<DialCounters>,
}

/// Session opens in progress, and the most there ever were at once.
#[derive(Default)]
struct DialCounters {
    in_flight: AtomicU64,
    peak: AtomicU64,
}

/// Counts one open in progress for as long as it lives (a dropped dial ends it too).
struct DialInFlight(Arc<DialCounters>);

impl DialInFlight {
    fn begin(counters: &Arc<DialCounters>) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak.fetch_max(now, Ordering::SeqCst);
        DialInFlight(counters.clone())
    }
}

impl Drop for DialInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryWorld {
    pub fn new() -> Self {
        Self::default()
    }

    /// The four ports, all backed by this world.
    pub fn ports(&self) -> Ports {
        Ports {
            resolver: Arc::new(self.clone()),
            sessions: Arc::new(self.clone()),
            channels: Arc::new(self.clone()),
            subscriptions: Arc::new(self.clone()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.inner.lock().expect("memory world lock"))
    }

    /// A peer whose announcement resolves, whose session opens and who has a channel.
    pub fn add_ready_peer(&self, pubkey: &str) {
        self.announce(pubkey, Self::announcement_for(pubkey));
        self.add_channel(pubkey);
    }

    /// A plausible announcement for `pubkey`.
    pub fn announcement_for(pubkey: &str) -> Announcement {
        let prefix: String = pubkey.chars().take(16).collect();
        Announcement {
            ilp_address: format!("g.btp-nips.peer.{prefix}"),
            endpoint: format!("ws://127.0.0.1:1/{prefix}"),
            base_address: format!("0x{:0>40}", prefix),
            subscribers: None,
        }
    }

    pub fn announce(&self, pubkey: &str, announcement: Announcement) {
        self.set_resolution(pubkey, Resolution::Found(announcement));
    }

    /// What resolving `pubkey` answers from now on (unknown pubkeys answer `NotFound`).
    pub fn set_resolution(&self, pubkey: &str, resolution: Resolution) {
        self.with(|w| w.resolutions.insert(pubkey.to_string(), resolution));
    }

    /// The next `times` resolutions of `pubkey` panic (a fault injected into its actor).
    pub fn panic_on_resolve(&self, pubkey: &str, times: u32) {
        self.with(|w| w.resolve_panics.insert(pubkey.to_string(), times));
    }

    /// Opening a session to `pubkey` fails with `fault` (or succeeds again with `None`).
    pub fn refuse_sessions(&self, pubkey: &str, fault: Option<Fault>) {
        self.with(|w| match fault {
            Some(f) => w.session_refusals.insert(pubkey.to_string(), f),
            None => w.session_refusals.remove(pubkey),
        });
    }

    /// The peer stops (or resumes) answering PINGs.
    pub fn set_silent(&self, pubkey: &str, silent: bool) {
        self.with(|w| {
            if silent {
                w.silent.insert(pubkey.to_string());
            } else {
                w.silent.remove(pubkey);
            }
        });
    }

    /// Ends every live session to `pubkey`, as a dropped connection would.
    pub fn kill_sessions(&self, pubkey: &str, reason: &str) -> usize {
        let senders = self.with(|w| w.live_sessions.remove(pubkey).unwrap_or_default());
        for tx in &senders {
            let _ = tx.send(Some(reason.to_string()));
        }
        senders.len()
    }

    /// Pubkeys in the order sessions were opened to them.
    pub fn connect_log(&self) -> Vec<String> {
        self.with(|w| w.connect_log.clone())
    }

    /// Every session open takes `delay` from now on (tokio time: simulated when paused).
    pub fn set_dial_delay(&self, delay: std::time::Duration) {
        self.with(|w| w.dial_delay = delay);
    }

    /// Takes the node's own network down (every dial fails, unreachable) or back up.
    pub fn set_network_down(&self, down: bool) {
        self.with(|w| w.network_down = down);
    }

    /// Session opens in progress right now.
    pub fn dials_in_flight(&self) -> u64 {
        self.dials.in_flight.load(Ordering::SeqCst)
    }

    /// The most session opens that were ever in progress at once.
    pub fn peak_dials_in_flight(&self) -> u64 {
        self.dials.peak.load(Ordering::SeqCst)
    }

    pub fn pings_answered(&self) -> u64 {
        self.pings_answered.load(Ordering::Relaxed)
    }

    /// A usable channel to `pubkey` exists.
    pub fn add_channel(&self, pubkey: &str) {
        self.with(|w| {
            w.channels
                .insert(pubkey.to_string(), format!("0xchan-{pubkey}"))
        });
    }

    /// Channels are opened without asking the operator.
    pub fn set_auto_open(&self, auto_open: bool) {
        self.with(|w| w.auto_open = auto_open);
    }

    /// What the channel port tells of its policy from now on (`None`: nothing).
    pub fn set_channel_policy(&self, policy: Option<ChannelPolicyStatus>) {
        self.with(|w| w.policy = policy);
    }

    /// Status checks an open transaction needs before it is confirmed.
    pub fn set_confirmations_needed(&self, n: u64) {
        self.with(|w| w.confirmations_needed = n);
    }

    /// An open transaction to `pubkey`'s channel is in flight (sent by an earlier run).
    pub fn add_pending_tx(&self, tx_hash: &str, pubkey: &str) {
        self.with(|w| {
            w.pending_txs
                .insert(tx_hash.to_string(), (pubkey.to_string(), 0))
        });
    }

    /// Open transactions broadcast so far.
    pub fn broadcast_count(&self) -> usize {
        self.with(|w| w.broadcasts.len())
    }

    /// Each operator-approved open so far: the peer and the deposit approved.
    pub fn approved_deposits(&self) -> Vec<(String, Option<u128>)> {
        self.with(|w| w.deposits.clone())
    }

    /// Open transactions signed so far.
    pub fn open_count(&self) -> u64 {
        self.with(|w| w.open_count)
    }

    pub fn subscribe_count(&self) -> u64 {
        self.with(|w| w.subscribe_count)
    }

    fn send_open(w: &mut World, peer: &PeerTarget) -> String {
        w.open_count += 1;
        let tx_hash = format!("0xtx{}-{}", w.open_count, peer.nostr_pubkey);
        w.pending_txs
            .insert(tx_hash.clone(), (peer.nostr_pubkey.clone(), 0));
        tx_hash
    }
}

#[async_trait]
impl AddressResolver for MemoryWorld {
    async fn resolve(&self, nostr_pubkey: &str) -> Resolution {
        let panic_now = self.with(|w| match w.resolve_panics.get_mut(nostr_pubkey) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        });
        if panic_now {
            panic!("injected fault while resolving {nostr_pubkey}");
        }
        self.with(|w| {
            w.resolutions
                .get(nostr_pubkey)
                .cloned()
                .unwrap_or(Resolution::NotFound)
        })
    }
}

struct MemorySession {
    pubkey: String,
    world: MemoryWorld,
    closed: watch::Receiver<Option<String>>,
    closer: watch::Sender<Option<String>>,
}

#[async_trait]
impl SessionConnector for MemoryWorld {
    async fn open(&self, peer: &PeerTarget) -> Result<Arc<dyn Session>, Fault> {
        let pubkey = peer.nostr_pubkey.clone();
        let _dialing = DialInFlight::begin(&self.dials);
        let delay = self.with(|w| w.dial_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (closer, closed) = watch::channel(None);
        self.with(|w| {
            w.connect_log.push(pubkey.clone());
            if w.network_down {
                return Err(Fault::Transient(format!(
                    "connect to {pubkey}: network is unreachable"
                )));
            }
            if let Some(fault) = w.session_refusals.get(&pubkey) {
                return Err(fault.clone());
            }
            w.live_sessions
                .entry(pubkey.clone())
                .or_default()
                .push(closer.clone());
            Ok(())
        })?;
        Ok(Arc::new(MemorySession {
            pubkey,
            world: self.clone(),
            closed,
            closer,
        }))
    }
}

#[async_trait]
impl Session for MemorySession {
    async fn ping(&self, nonce: u64) -> Result<u64, Fault> {
        if self.closed.borrow().is_some() {
            return Err(Fault::Transient("session closed".into()));
        }
        if self.world.with(|w| w.silent.contains(&self.pubkey)) {
            futures::future::pending::<()>().await;
        }
        self.world.pings_answered.fetch_add(1, Ordering::Relaxed);
        Ok(nonce)
    }

    async fn send(
        &self,
        _packet: crate::wire::btp_nips::Packet,
    ) -> Result<Option<crate::wire::btp_nips::Packet>, Fault> {
        if self.closed.borrow().is_some() {
            return Err(Fault::Transient("session closed".into()));
        }
        Ok(None)
    }

    fn closed(&self) -> BoxFuture<'static, String> {
        let mut rx = self.closed.clone();
        Box::pin(async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
        })
    }

    async fn close(&self) {
        let _ = self.closer.send(Some("closed by us".into()));
    }
}

#[async_trait]
impl ChannelPort for MemoryWorld {
    async fn find_channel(&self, peer: &PeerTarget) -> Result<Option<String>, Fault> {
        Ok(self.with(|w| w.channels.get(&peer.nostr_pubkey).cloned()))
    }

    async fn request_channel(&self, peer: &PeerTarget) -> Result<ChannelRequest, Fault> {
        Ok(self.with(|w| {
            if w.auto_open {
                ChannelRequest::Opened {
                    tx_hash: Self::send_open(w, peer),
                }
            } else {
                ChannelRequest::AwaitingOperator
            }
        }))
    }

    async fn open_channel(
        &self,
        peer: &PeerTarget,
        deposit_wei: Option<u128>,
    ) -> Result<String, Fault> {
        Ok(self.with(|w| {
            w.deposits.push((peer.nostr_pubkey.clone(), deposit_wei));
            Self::send_open(w, peer)
        }))
    }

    async fn broadcast_open(&self, tx_hash: &str) -> Result<(), Fault> {
        self.with(|w| {
            if w.pending_txs.contains_key(tx_hash) {
                w.broadcasts.insert(tx_hash.to_string());
                Ok(())
            } else {
                Err(Fault::Transient(format!("no signed transaction {tx_hash}")))
            }
        })
    }

    /// Each status check counts one confirmation; the check after the
    /// `set_confirmations_needed` pending ones confirms.
    fn confirmations_required(&self) -> u64 {
        self.with(|w| w.confirmations_needed + 1)
    }

    async fn channel_status(&self, tx_hash: &str) -> Result<ChannelStatus, Fault> {
        self.with(|w| {
            let needed = w.confirmations_needed;
            let Some((pubkey, checks)) = w.pending_txs.get_mut(tx_hash) else {
                return Ok(ChannelStatus::Dropped);
            };
            *checks += 1;
            if *checks > needed {
                let pubkey = pubkey.clone();
                let id = format!("0xchan-{pubkey}");
                w.channels.insert(pubkey, id.clone());
                Ok(ChannelStatus::Confirmed { channel_id: id })
            } else {
                Ok(ChannelStatus::Pending {
                    confirmations: *checks,
                })
            }
        })
    }

    /// As scripted with `set_channel_policy`.
    async fn channel_policy(&self) -> Option<ChannelPolicyStatus> {
        self.with(|w| w.policy.clone())
    }
}

#[async_trait]
impl Subscriptions for MemoryWorld {
    async fn subscribe(
        &self,
        peer: &PeerTarget,
        _session: Arc<dyn Session>,
    ) -> Result<Vec<String>, Fault> {
        self.with(|w| w.subscribe_count += 1);
        let prefix: String = peer.nostr_pubkey.chars().take(8).collect();
        Ok(vec![format!("sub-{prefix}")])
    }

    async fn unsubscribe(
        &self,
        _peer: &PeerTarget,
        _session: Arc<dyn Session>,
        _subscription_ids: &[String],
    ) {
    }
}
