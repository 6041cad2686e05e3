//! Real peer sessions: BTP/2.0 over WebSocket, mutual Nostr-key authentication, and the
//! node's PING/PONG and ILDCP over ILP.
//!
//! - [`auth`] — tokens and proofs (Nostr mode) and shared secrets, as plain logic.
//! - [`connection`] — one BTP connection: request ids, timeouts, frame classification.
//! - `transport` — the one read loop and write loop of every session, over either
//!   WebSocket library (tokio-tungstenite when dialing, actix-ws when accepting).
//! - [`client`] — dials out ([`client::BtpConnector`] is the node's
//!   [`crate::ports::SessionConnector`]); [`client::BtpSession`] is a
//!   [`crate::ports::Session`].
//! - [`server`] — the inbound endpoint in an actix-web server (actix-ws), with admission
//!   through the node's peer directory.
//! - [`service`] — what the node answers to an ILP Prepare (PING → PONG, ILDCP).
//! - [`ildcp`] — RFC 31.
//! - [`stats`] — the counters of every limit above (refused sockets, requests, closed
//!   sessions), read through [`SessionServer::stats`] or [`SessionContext::stats`].
//!
//! The node's Nostr key comes in as a [`nostr::Keys`], loaded by the node builder (the one
//! identity of every part, `crate::discovery::identity`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nostr::{Keys, PublicKey};

use crate::config::{SessionSettings, SharedSecretPeer};
use crate::wire::ilp::Address;

pub mod auth;
pub mod client;
pub mod connection;
pub mod ildcp;
pub mod server;
pub mod service;
pub mod stats;
pub mod threads;
mod transport;

pub use client::{BtpConnector, BtpSession};
pub use server::SessionServer;
pub use service::{IlpHandler, NodeService, NostrMessages};
pub use stats::{SessionStats, SessionStatsSnapshot};

/// Who is at the other end of an authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A btp-nips node that proved this Nostr key.
    Nostr(PublicKey),
    /// A plain ILP peer that knew the shared secret of this configured username.
    SharedSecret(String),
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Nostr(pk) => write!(f, "nostr:{}", pk.to_hex()),
            PeerIdentity::SharedSecret(name) => write!(f, "ilp:{name}"),
        }
    }
}

/// The session's timeouts, and the idle timeout derived from the ping interval.
#[derive(Debug, Clone)]
pub struct SessionTimings {
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub request_timeout: Duration,
    pub ws_ping_interval: Duration,
    /// No frame at all (not even a WebSocket pong) for this long → the connection is dead.
    pub idle_timeout: Duration,
}

impl From<&SessionSettings> for SessionTimings {
    fn from(s: &SessionSettings) -> Self {
        SessionTimings {
            connect_timeout: s.connect_timeout,
            auth_timeout: s.auth_timeout,
            request_timeout: s.request_timeout,
            ws_ping_interval: s.ws_ping_interval,
            idle_timeout: s.ws_ping_interval * 3,
        }
    }
}

/// Everything a session needs, shared by the client and the server of one node.
pub struct SessionContext {
    /// The node's Nostr key: signs tokens and proofs.
    pub keys: Keys,
    /// This node's ILP address (`g.btp-nips.<id>.<pubkey prefix>`), the PING's sender.
    pub own_address: Address,
    pub settings: SessionSettings,
    pub timings: SessionTimings,
    /// Ids of tokens already accepted by our server.
    pub replay: Mutex<auth::ReplayGuard>,
    /// Answers the peers' ILP Prepares.
    pub handler: Arc<dyn IlpHandler>,
    /// What the sessions of this context refused, closed and bounded.
    pub stats: Arc<SessionStats>,
}

impl SessionContext {
    /// A context with the node's own service (PING → PONG, ILDCP) as handler.
    pub fn new(keys: Keys, node_id: &str, settings: SessionSettings) -> Arc<SessionContext> {
        let own_address = own_address(node_id, &keys.public_key());
        let handler = Arc::new(NodeService::new(
            own_address.clone(),
            settings.asset_code.clone(),
            settings.asset_scale,
        ));
        Self::with_handler(keys, own_address, settings, handler)
    }

    /// A context answering Prepares with `handler` (tests, other services).
    pub fn with_handler(
        keys: Keys,
        own_address: Address,
        settings: SessionSettings,
        handler: Arc<dyn IlpHandler>,
    ) -> Arc<SessionContext> {
        Arc::new(SessionContext {
            keys,
            own_address,
            timings: SessionTimings::from(&settings),
            replay: Mutex::new(auth::ReplayGuard::new(settings.max_replay_entries)),
            handler,
            stats: Arc::new(SessionStats::default()),
            settings,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// The shared-secret peer configured under `username`.
    pub fn shared_secret_peer(&self, username: &str) -> Option<&SharedSecretPeer> {
        self.settings
            .shared_secret_peers
            .iter()
            .find(|p| p.username == username)
    }

    /// The shared-secret peer whose endpoint is `endpoint` (outbound).
    pub fn shared_secret_for_endpoint(&self, endpoint: &str) -> Option<&SharedSecretPeer> {
        self.settings
            .shared_secret_peers
            .iter()
            .find(|p| p.endpoint.as_deref() == Some(endpoint))
    }
}

/// `g.btp-nips.<node id>.<first 16 hex chars of the pubkey>` (PROTOCOLS.md).
pub fn own_address(node_id: &str, pubkey: &PublicKey) -> Address {
    Address::new(format!("g.btp-nips.{node_id}.{}", &pubkey.to_hex()[..16]))
        .expect("a validated node id and hex make a valid address")
}

/// Unix seconds now (wall clock; the token checks take it as input).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
