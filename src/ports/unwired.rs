//! The ports of a node built before its real adapters exist: every call is a transient
//! fault that names the missing adapter, so peers wait in `disconnected` with backoff
//! instead of pretending to connect — except `subscribe`, which opens nothing and says so
//! (a node without an operator relay configured moves no events, but keeps its sessions). `run` replaces
//! each port with its real adapter when that adapter is configured.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AddressResolver, ChannelPort, ChannelRequest, ChannelStatus, Fault, PeerTarget, Ports,
    Resolution, Session, SessionConnector, Subscriptions,
};

/// Stands where an adapter is not built yet.
#[derive(Clone, Copy, Debug)]
pub struct Unwired;

impl Unwired {
    pub fn ports() -> Ports {
        Ports {
            resolver: Arc::new(Unwired),
            sessions: Arc::new(Unwired),
            channels: Arc::new(Unwired),
            subscriptions: Arc::new(Unwired),
        }
    }

    fn fault(adapter: &str) -> Fault {
        Fault::Local(format!(
            "the {adapter} adapter is not configured on this node"
        ))
    }
}

#[async_trait]
impl AddressResolver for Unwired {
    async fn resolve(&self, _nostr_pubkey: &str) -> Resolution {
        Resolution::Failed(Self::fault("Nostr discovery"))
    }
}

#[async_trait]
impl SessionConnector for Unwired {
    async fn open(&self, _peer: &PeerTarget) -> Result<Arc<dyn Session>, Fault> {
        Err(Self::fault("BTP session"))
    }
}

#[async_trait]
impl ChannelPort for Unwired {
    async fn find_channel(&self, _peer: &PeerTarget) -> Result<Option<String>, Fault> {
        Err(Self::fault("EVM channel"))
    }
    async fn request_channel(&self, _peer: &PeerTarget) -> Result<ChannelRequest, Fault> {
        Err(Self::fault("EVM channel"))
    }
    async fn open_channel(&self, _peer: &PeerTarget, _: Option<u128>) -> Result<String, Fault> {
        Err(Self::fault("EVM channel"))
    }
    async fn broadcast_open(&self, _tx_hash: &str) -> Result<(), Fault> {
        Err(Self::fault("EVM channel"))
    }
    async fn channel_status(&self, _tx_hash: &str) -> Result<ChannelStatus, Fault> {
        Err(Self::fault("EVM channel"))
    }
    fn confirmations_required(&self) -> u64 {
        1
    }
    /// No chain: no policy.
    async fn channel_policy(&self) -> Option<super::ChannelPolicyStatus> {
        None
    }
}

#[async_trait]
impl Subscriptions for Unwired {
    /// No operator relay is configured: no subscription is opened, and the connected peer
    /// keeps its session and heartbeat (failing here would tear every session down and
    /// spend the peer's reconnect attempts for nothing).
    async fn subscribe(
        &self,
        peer: &PeerTarget,
        _session: Arc<dyn Session>,
    ) -> Result<Vec<String>, Fault> {
        log::warn!(
            "peer {}: connected, but no operator relay is configured (events.operator_relay): \
             no subscription opened",
            peer.nostr_pubkey
        );
        Ok(Vec::new())
    }
    async fn unsubscribe(
        &self,
        _peer: &PeerTarget,
        _session: Arc<dyn Session>,
        _subscription_ids: &[String],
    ) {
    }
}
