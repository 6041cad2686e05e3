//! The node as one thing: [`NodeBuilder`] assembles it, [`Node`] is the handle to it.
//!
//! The binary, the tests, the benchmark all build their nodes here, so a node in a test is
//! the node an operator runs, with only the ports a test chooses to replace. The builder
//! opens the database, builds each real adapter the settings enable (Nostr discovery, BTP
//! sessions, the EVM chain, the event flow), starts the persistence actor, the supervisor,
//! the session server and the discovery actors. [`Node`] is a cheap-clone handle whose
//! methods are the node's operations, with [`Node::shutdown`] owning the stop order.
//!
//! Must be started from inside a running actix `System`; the handle may be used from any
//! thread.

mod builder;
#[cfg(feature = "test-support")]
mod thread;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use nostr::{Keys, PublicKey};
use tokio::sync::{broadcast, watch, Mutex};

pub use crate::actors::notification::{
    ChannelProgress, FollowChange, FollowSource, Heartbeat, Notification,
};
pub use crate::actors::supervisor::{PeerChange, SupervisorError, SupervisorStats};
pub use builder::NodeBuilder;
#[cfg(feature = "test-support")]
pub use thread::NodeThread;

pub use crate::actors::persistence::PersistenceStats;

use crate::actors::persistence::{Flush, GetStats, PersistenceActor, PersistenceError};
use crate::actors::supervisor::{
    AdmitInbound, ApproveChannelFor, DisconnectPeer, FollowPeer, GetSupervisorStats, ListPeers,
    PeerSnapshot, PeerSupervisor, RetryPeer, StopAllPeers, UnfollowPeer,
};
use crate::discovery::{Discovery, DiscoveryActors};
use crate::events::EventFlow;
use crate::lifecycle::record::PeerTransition;
use crate::lifecycle::PeerRecord;
use crate::ports::{Admission, ChannelPolicyStatus, ChannelPort, PeerDirectory};
use crate::session::SessionServer;
use crate::storage::{Database, StorageError};
use crate::wire::ilp::Address;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("persistence: {0}")]
    Persistence(#[from] PersistenceError),
    #[error("the node is stopped ({0})")]
    Mailbox(#[from] MailboxError),
    #[error("{0}")]
    Peer(#[from] SupervisorError),
    #[error("node key: {0}")]
    Keys(String),
    #[error("discovery: {0}")]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error("event flow: {0}")]
    Events(#[from] crate::events::relay::OperatorRelayError),
    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
    #[error("session.listen `{listen}`: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("admin.listen `{listen}`: {source}")]
    AdminListen {
        listen: String,
        source: std::io::Error,
    },
}

/// One relay the node holds a connection to, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConnection {
    pub url: String,
    /// `discovery` (`nostr.relays`) or `operator` (`events.operator_relay`).
    pub role: &'static str,
    pub connected: bool,
}

/// A running node. Cloning is cheap; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    own_address: Address,
    db: Database,
    persistence: Addr<PersistenceActor>,
    supervisor: Addr<PeerSupervisor>,
    /// The registry as the adapters see it.
    directory: Arc<dyn PeerDirectory>,
    /// Every peer state change, channel progress, follow and PONG; `notifications()`
    /// subscribes here.
    changes: broadcast::Sender<Notification>,
    /// The inbound BTP endpoint, when `session.listen` is set.
    server: Option<SessionServer>,
    /// The event flow, when `events.operator_relay` is set.
    events: Option<Arc<EventFlow>>,
    /// The EVM channel adapter, when `chain.enabled` (its figures for the metrics).
    chain: Option<Arc<crate::chain::EvmChannels>>,
    /// Discovery on Nostr, when `nostr.relays` is set, and its actors.
    discovery: Option<(Discovery, DiscoveryActors)>,
    /// The channel port the peers use (its policy for the operator).
    channels: Arc<dyn ChannelPort>,
    /// Whose follow list the node connects: the follow monitor's operator when discovery
    /// runs, else `nostr.operator_pubkey` if set.
    operator: Option<PublicKey>,
    /// `node.public_endpoint`, when set (what the node announces).
    public_endpoint: Option<String>,
    /// The clock the peers' deadlines come from (the admin API's "seconds until").
    clock: crate::actors::clock::NodeClock,
    /// When the node started (its uptime).
    started: std::time::Instant,
    /// `node.id`, the node's name in its ILP address.
    node_id: String,
    /// Whether a BTP listener was asked for (readiness waits for it).
    listen_configured: bool,
    /// The event ring and the metrics of the admin API, fed from the node's start.
    admin_parts: crate::admin::AdminParts,
    /// The admin API, when `admin.listen` is set (started once the handle exists).
    admin: std::sync::OnceLock<crate::admin::AdminServer>,
    /// Held by the one `shutdown` that runs the stop order; later calls wait on `stopped`.
    stopping: Mutex<bool>,
    stopped: watch::Sender<bool>,
}

impl Node {
    /// The node's Nostr key (sessions, discovery, event flow).
    pub fn public_key(&self) -> PublicKey {
        self.inner.keys.public_key()
    }

    /// The node's ILP address, `g.btp-nips.<node id>.<pubkey prefix>`.
    pub fn own_address(&self) -> &Address {
        &self.inner.own_address
    }

    /// Where the BTP server listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.server.as_ref().map(|s| s.local_addr)
    }

    /// Where the admin API listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin.get().map(|a| a.local_addr)
    }

    /// `node.id`.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// How long the node has run.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Now, on the clock the peers' deadlines are taken from.
    pub fn now(&self) -> crate::lifecycle::Timestamp {
        self.inner.clock.now()
    }

    /// The admin API's event ring and metrics.
    pub fn admin_parts(&self) -> &crate::admin::AdminParts {
        &self.inner.admin_parts
    }

    /// Why the node is not ready to serve yet (empty: ready): startup recovery still
    /// queued, or a configured BTP listener not bound.
    pub async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        match self.stats().await {
            Ok(stats) if stats.recovering > 0 => reasons.push(format!(
                "startup recovery: {} stored peers still queued",
                stats.recovering
            )),
            Ok(_) => {}
            Err(e) => reasons.push(e.to_string()),
        }
        if self.inner.listen_configured && self.local_addr().is_none() {
            reasons.push("the BTP listener (session.listen) is not bound".to_string());
        }
        if *self.inner.stopped.borrow() {
            reasons.push("the node is stopped".to_string());
        }
        reasons
    }

    /// The loopback endpoint peers on this machine dial (`ws://127.0.0.1:PORT/btp`).
    pub fn loopback_endpoint(&self) -> Option<String> {
        self.local_addr()
            .map(|a| format!("ws://127.0.0.1:{}/btp", a.port()))
    }

    /// The node's database.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The event flow, when one is configured.
    pub fn event_flow(&self) -> Option<&Arc<EventFlow>> {
        self.inner.events.as_ref()
    }

    /// The EVM channel adapter, when the chain is enabled (not when a test gave the node a
    /// channel port of its own).
    pub fn chain(&self) -> Option<&Arc<crate::chain::EvmChannels>> {
        self.inner.chain.as_ref()
    }

    /// Discovery on Nostr, when relays are configured.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.inner.discovery.as_ref().map(|(d, _)| d)
    }

    /// Whose follow list the node connects (see `Inner::operator`).
    pub fn operator(&self) -> Option<PublicKey> {
        self.inner.operator
    }

    /// The endpoint the node announces (`node.public_endpoint`), when set.
    pub fn public_endpoint(&self) -> Option<&str> {
        self.inner.public_endpoint.as_deref()
    }

    /// The channel port's deposit and auto-open policy, with what is left of its total cap
    /// now; `None` when the port has none (no chain).
    pub async fn channel_policy(&self) -> Option<ChannelPolicyStatus> {
        self.inner.channels.channel_policy().await
    }

    /// The discovery relays, then the operator's relay, each with whether it is connected.
    pub async fn relays(&self) -> Vec<RelayConnection> {
        let mut relays = Vec::new();
        if let Some(discovery) = self.discovery() {
            for (url, connected) in discovery.relays.connections().await {
                relays.push(RelayConnection {
                    url,
                    role: "discovery",
                    connected,
                });
            }
        }
        if let Some(relay) = self.event_flow().and_then(|f| f.operator_relay()) {
            relays.push(RelayConnection {
                url: relay.url().to_string(),
                role: "operator",
                connected: relay.is_connected(),
            });
        }
        relays
    }

    /// The node's registry as a port, for an adapter started outside the builder.
    pub fn directory(&self) -> Arc<dyn PeerDirectory> {
        self.inner.directory.clone()
    }

    /// How many peers hold a live inbound session.
    pub fn inbound_sessions(&self) -> usize {
        self.inner.server.as_ref().map_or(0, |s| s.live_sessions())
    }

    /// The session layer's counters (refused sockets, requests over the in-flight cap,
    /// sessions closed for not reading or for idling); `None` without a BTP listener.
    pub fn session_stats(&self) -> Option<crate::session::SessionStatsSnapshot> {
        self.inner.server.as_ref().map(|s| s.stats())
    }

    /// Follows `nostr_pubkey` (as a new entry of the operator's follow list would).
    pub async fn follow(&self, nostr_pubkey: &str) -> Result<(), NodeError> {
        self.follow_by(nostr_pubkey, FollowSource::FollowList).await
    }

    /// Follows and connects `nostr_pubkey` on the operator's word (the admin API's
    /// `connect`), whether or not the follow list names it.
    pub async fn connect(&self, nostr_pubkey: &str) -> Result<(), NodeError> {
        self.follow_by(nostr_pubkey, FollowSource::Operator).await
    }

    async fn follow_by(&self, nostr_pubkey: &str, by: FollowSource) -> Result<(), NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        Ok(self
            .inner
            .supervisor
            .send(FollowPeer { nostr_pubkey, by })
            .await?)
    }

    /// Unfollows `nostr_pubkey` (as its removal from the operator's follow list would):
    /// deliberately disconnected, not reconnected.
    pub async fn unfollow(&self, nostr_pubkey: &str) -> Result<(), NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        let by = FollowSource::FollowList;
        Ok(self
            .inner
            .supervisor
            .send(UnfollowPeer { nostr_pubkey, by })
            .await?)
    }

    /// Retries a failed or deliberately disconnected peer now.
    pub async fn retry(&self, nostr_pubkey: &str) -> Result<(), NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        Ok(self
            .inner
            .supervisor
            .send(RetryPeer { nostr_pubkey })
            .await??)
    }

    /// Disconnects a peer on purpose; it stays disconnected, even across restarts, until
    /// retried or followed again.
    pub async fn disconnect(&self, nostr_pubkey: &str, reason: &str) -> Result<(), NodeError> {
        self.pause(nostr_pubkey, reason, None).await
    }

    /// Disconnects a peer on purpose for `pause` (retried by itself when it ends, also
    /// across a restart); `None` holds it until retried, like [`Node::disconnect`].
    pub async fn pause(
        &self,
        nostr_pubkey: &str,
        reason: &str,
        pause: Option<std::time::Duration>,
    ) -> Result<(), NodeError> {
        let message = DisconnectPeer {
            nostr_pubkey: nostr_pubkey.to_owned(),
            reason: reason.to_owned(),
            pause,
        };
        Ok(self.inner.supervisor.send(message).await??)
    }

    /// Approves opening a channel to a peer waiting in `channel_needed`.
    pub async fn approve_channel(&self, nostr_pubkey: &str) -> Result<(), NodeError> {
        self.approve_channel_with(nostr_pubkey, None).await
    }

    /// Approves opening a channel with `deposit_wei` (`None`: the configured deposit).
    pub async fn approve_channel_with(
        &self,
        nostr_pubkey: &str,
        deposit_wei: Option<u128>,
    ) -> Result<(), NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        Ok(self
            .inner
            .supervisor
            .send(ApproveChannelFor {
                nostr_pubkey,
                deposit_wei,
            })
            .await??)
    }

    /// Whether a remote node with this key would be admitted for an inbound session now
    /// (what the BTP server asks after authenticating it).
    pub async fn admit(&self, nostr_pubkey: &str) -> Result<Admission, NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        Ok(self
            .inner
            .supervisor
            .send(AdmitInbound { nostr_pubkey })
            .await?)
    }

    /// Every known peer's latest record, best priority first.
    pub async fn peers(&self) -> Result<Vec<PeerRecord>, NodeError> {
        Ok(self.inner.supervisor.send(ListPeers).await?)
    }

    /// One peer's live record.
    pub async fn peer(&self, nostr_pubkey: &str) -> Result<Option<PeerRecord>, NodeError> {
        let nostr_pubkey = nostr_pubkey.to_owned();
        Ok(self
            .inner
            .supervisor
            .send(PeerSnapshot { nostr_pubkey })
            .await?)
    }

    /// One peer's newest `limit` state changes, newest first, as committed (call
    /// [`Node::flush`] first to include the latest).
    pub async fn history(
        &self,
        nostr_pubkey: &str,
        limit: usize,
    ) -> Result<Vec<PeerTransition>, NodeError> {
        let db = self.inner.db.clone();
        let nostr_pubkey = nostr_pubkey.to_owned();
        tokio::task::spawn_blocking(move || db.history(&nostr_pubkey, limit))
            .await
            .map_err(|e| {
                NodeError::Storage(StorageError::Task(format!("reading the history: {e}")))
            })?
            .map_err(NodeError::from)
    }

    /// Counts of the registry (running, connected, waiting, idle, recovering).
    pub async fn stats(&self) -> Result<SupervisorStats, NodeError> {
        Ok(self.inner.supervisor.send(GetSupervisorStats).await?)
    }

    /// What the persistence actor has written so far.
    pub async fn persistence_stats(&self) -> Result<PersistenceStats, NodeError> {
        Ok(self.inner.persistence.send(GetStats).await?)
    }

    /// Waits until every change made so far is committed.
    pub async fn flush(&self) -> Result<(), NodeError> {
        Ok(self.inner.persistence.send(Flush).await??)
    }

    /// Every peer state change, channel progress, follow and PONG from now on, in the
    /// order the node learned them. A receiver that falls behind by more than the
    /// channel's capacity is told how many it missed (`RecvError::Lagged`).
    pub fn notifications(&self) -> broadcast::Receiver<Notification> {
        self.inner.changes.subscribe()
    }

    /// Stops the node: no new sessions, the event flow's served subscriptions ended,
    /// every peer actor stopped, every change they made committed, the relays closed.
    /// Returns when all of that is done; a second call waits for the first.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let mut stopping = self.inner.stopping.lock().await;
        if *stopping {
            drop(stopping);
            self.stopped().await;
            return Ok(());
        }
        *stopping = true;
        let result = self.stop_in_order().await;
        self.inner.stopped.send_replace(true);
        result
    }

    async fn stop_in_order(&self) -> Result<(), NodeError> {
        let inner = &self.inner;
        // The operator's API first: nothing may change peers while they stop.
        if let Some(admin) = inner.admin.get() {
            admin.stop().await;
        }
        if let Some(server) = &inner.server {
            server.stop().await;
        }
        if let Some(flow) = &inner.events {
            flow.stop();
        }
        inner.supervisor.send(StopAllPeers).await?;
        inner.persistence.send(Flush).await??;
        if let Some((discovery, _)) = &inner.discovery {
            discovery.relays.shutdown().await;
        }
        Ok(())
    }

    /// Resolves once [`Node::shutdown`] has finished.
    pub async fn stopped(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        let _ = stopped.wait_for(|done| *done).await;
    }
}
