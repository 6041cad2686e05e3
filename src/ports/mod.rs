//! The outside worlds, each behind a small trait: Nostr discovery ([`AddressResolver`]),
//! BTP sessions ([`SessionConnector`], [`Session`]), the EVM chain ([`ChannelPort`]) and
//! the event subscriptions ([`Subscriptions`]). The peer actor only talks to these, so the
//! core runs unchanged against in-memory doubles ([`memory`]) and real adapters.
//!
//! The other direction has a port too: adapters that learn something about peers (the
//! session server admitting a caller, the follow-list monitor, the event flow) tell the
//! node through a [`PeerDirectory`], never through the actors themselves.
//!
//! Every adapter classifies its own faults into [`Fault::Transient`] (retried with
//! backoff) or [`Fault::Permanent`] (the peer is failed with the reason).

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

pub use crate::lifecycle::{Announcement, Fault};
use crate::lifecycle::{Event, EventCursor, PeerRecord};
use crate::wire::btp_nips;

#[cfg(feature = "test-support")]
pub mod memory;
pub mod unwired;

/// What an adapter needs to know about a peer, taken from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    pub nostr_pubkey: String,
    pub ilp_address: Option<String>,
    pub endpoint: Option<String>,
    pub base_address: Option<String>,
    /// Whether the operator follows this peer (the channel auto-open policy covers only these).
    pub followed: bool,
    /// Where the events received from this peer stopped (the REQ resumes there).
    pub event_cursor: Option<EventCursor>,
}

impl From<&PeerRecord> for PeerTarget {
    fn from(r: &PeerRecord) -> Self {
        PeerTarget {
            nostr_pubkey: r.nostr_pubkey.clone(),
            ilp_address: r.ilp_address.clone(),
            endpoint: r.endpoint.clone(),
            base_address: r.base_address.clone(),
            followed: r.followed,
            event_cursor: r.event_cursor.clone(),
        }
    }
}

/// The answer to "where is this peer?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A valid announcement.
    Found(Announcement),
    /// Every relay answered and none has one.
    NotFound,
    /// No relay answered (transient) or the announcement is invalid (permanent).
    Failed(Fault),
}

/// Finds and validates a peer's kind 32001 announcement.
#[async_trait]
pub trait AddressResolver: Send + Sync {
    async fn resolve(&self, nostr_pubkey: &str) -> Resolution;
}

/// Opens authenticated BTP sessions.
#[async_trait]
pub trait SessionConnector: Send + Sync {
    async fn open(&self, peer: &PeerTarget) -> Result<Arc<dyn Session>, Fault>;
}

/// One open, authenticated session to a peer.
#[async_trait]
pub trait Session: Send + Sync {
    /// Sends a PING with `nonce`; resolves with the nonce the PONG echoed. If the peer never
    /// answers, the future never resolves: the lifecycle's PONG deadline decides.
    async fn ping(&self, nonce: u64) -> Result<u64, Fault>;
    /// Sends a BTP-NIPs packet (REQ, CLOSE, …) as a zero-amount Prepare; resolves with the
    /// packet the Fulfill carried, if any. A Reject, a timeout or a closed session is a
    /// transient fault naming it.
    async fn send(&self, packet: btp_nips::Packet) -> Result<Option<btp_nips::Packet>, Fault>;
    /// Resolves, with the reason, when the session ends by itself.
    fn closed(&self) -> BoxFuture<'static, String>;
    /// Closes the session (idempotent).
    async fn close(&self);
}

/// What a channel request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRequest {
    /// The auto-open policy signed an open transaction (not yet sent: see
    /// [`ChannelPort::broadcast_open`]).
    Opened { tx_hash: String },
    /// The operator has been told and must approve.
    AwaitingOperator,
}

/// Where our open transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStatus {
    Pending {
        confirmations: u64,
    },
    Confirmed {
        channel_id: String,
    },
    /// No longer on the canonical chain (reorg) nor in any pool, and unable to land beside
    /// a new open (the adapter decides when; see `crate::chain`).
    Dropped,
}

/// The channel policy as it stands, for the operator: what an open deposits and what the
/// auto-open policy may still spend. Wei as `u128` (a figure past it shows as `u128::MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicyStatus {
    /// What an open deposits unless the operator says otherwise (`chain.deposit_wei`).
    pub deposit_wei: u128,
    /// Whether followed peers get a channel without asking (`chain.auto_open.enabled`).
    pub auto_open: bool,
    /// The most one automatic open may deposit; `None` when auto-open is off.
    pub per_channel_cap_wei: Option<u128>,
    /// The most all automatic opens together may lock; `None` when auto-open is off.
    pub total_cap_wei: Option<u128>,
    /// Counted against the total cap now, as the auto-open check counts it: the wei locked
    /// in open channels plus automatic opens reserved, signed or sent and not yet mined.
    /// `None` when auto-open is off or the locked wei could not be read.
    pub total_cap_used_wei: Option<u128>,
    /// What is left of the total cap now (`None` as for `total_cap_used_wei`).
    pub total_cap_left_wei: Option<u128>,
    /// Why the figures of now are missing although auto-open is on (e.g. the RPC failed).
    pub unknown_reason: Option<String>,
}

/// Payment channels on the EVM chain.
#[async_trait]
pub trait ChannelPort: Send + Sync {
    /// A usable open channel from us to the peer, if one exists.
    async fn find_channel(&self, peer: &PeerTarget) -> Result<Option<String>, Fault>;
    /// A channel is needed: apply the auto-open policy or tell the operator.
    async fn request_channel(&self, peer: &PeerTarget) -> Result<ChannelRequest, Fault>;
    /// Signs the open transaction (operator approved) without sending it; returns its hash.
    /// The core makes the hash durable, then calls [`ChannelPort::broadcast_open`].
    /// `deposit_wei`: the operator's deposit for this channel (`None`: the configured one).
    async fn open_channel(
        &self,
        peer: &PeerTarget,
        deposit_wei: Option<u128>,
    ) -> Result<String, Fault>;
    /// Sends the open transaction signed under `tx_hash`. A transient fault means it may or
    /// may not have reached the chain; `channel_status` tells which.
    async fn broadcast_open(&self, tx_hash: &str) -> Result<(), Fault>;
    /// Confirmations of our open transaction. An open signed here and never sent is sent
    /// now (the same bytes) rather than reported dropped.
    async fn channel_status(&self, tx_hash: &str) -> Result<ChannelStatus, Fault>;
    /// How many confirmations an open waits for before `channel_status` reports it
    /// `Confirmed` (what the operator's event stream shows as "n of N").
    fn confirmations_required(&self) -> u64;
    /// The open signed under `tx_hash` will never be broadcast (the peer moved on before
    /// its hash was recorded): forget it, so the next open takes its nonce.
    async fn abandon_open(&self, _tx_hash: &str, _reason: &str) {}
    /// The deposit and the auto-open policy with what is left of its total cap now (one
    /// chain read); `None` when this port has no policy to tell.
    async fn channel_policy(&self) -> Option<ChannelPolicyStatus> {
        None
    }
}

/// The initial REQ toward a connected peer, and its closing.
#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// Opens the peer's subscriptions over `session` (REQ from `peer.event_cursor`);
    /// returns their ids.
    async fn subscribe(
        &self,
        peer: &PeerTarget,
        session: Arc<dyn Session>,
    ) -> Result<Vec<String>, Fault>;
    /// Closes them (CLOSE over `session`, if it is still open); best effort.
    async fn unsubscribe(
        &self,
        peer: &PeerTarget,
        session: Arc<dyn Session>,
        subscription_ids: &[String],
    );
}

/// The set of adapters a node runs with.
#[derive(Clone)]
pub struct Ports {
    pub resolver: Arc<dyn AddressResolver>,
    pub sessions: Arc<dyn SessionConnector>,
    pub channels: Arc<dyn ChannelPort>,
    pub subscriptions: Arc<dyn Subscriptions>,
}

/// The answer to "may this remote node open a session with us?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; `known` says whether the node has a record of the peer (followed, or met
    /// before). Unknown peers are counted against `session.max_unknown_inbound`.
    Admitted { known: bool },
    /// Refused, with the reason the caller is told.
    Refused { reason: String },
}

/// The node's registry of peers, as the adapters see it: what they may ask and tell.
///
/// Implemented over the supervisor; given to the session server, the follow-list monitor
/// and the event flow when they are built.
#[async_trait]
pub trait PeerDirectory: Send + Sync {
    /// May `nostr_pubkey` open an inbound session? One round trip.
    async fn admit(&self, nostr_pubkey: &str) -> Admission;
    /// Something happened to a running peer (an event received, misbehaviour, its session
    /// lost); dropped if the peer has no running actor.
    fn observe(&self, nostr_pubkey: &str, event: Event);
    /// The operator's follow list names this peer (new or again).
    fn follow(&self, nostr_pubkey: &str);
    /// The operator's follow list no longer names this peer.
    fn unfollow(&self, nostr_pubkey: &str);
    /// The operator's whole follow list, as found at startup.
    fn reconcile(&self, followed: Vec<String>);
    /// The last inbound session of this peer ended. A peer the operator does not follow
    /// held its slot only for that session: it gives it back and is not dialled.
    fn inbound_ended(&self, nostr_pubkey: &str) {
        let _ = nostr_pubkey;
    }
}
