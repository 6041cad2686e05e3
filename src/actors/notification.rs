//! What the node tells whoever listens ([`crate::node::Node::notifications`]): every peer
//! state change, the progress of a channel it opens, follows and unfollows, and each
//! heartbeat's round trip. The supervisor sends them all on one channel, in the order it
//! learned them, so a listener (the admin event stream, the metrics) sees a peer's news in
//! the order it happened.

use std::sync::Arc;

use serde::Serialize;

use super::supervisor::PeerChange;
use crate::lifecycle::Timestamp;

/// One piece of news from the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A peer's state (or the operator's intent for it) changed (boxed: the record is large,
    /// and every heartbeat would otherwise be as big).
    State(Box<PeerChange>),
    /// Our open transaction toward a peer gained confirmations, or its channel is open.
    Channel(ChannelProgress),
    /// A peer was followed or unfollowed.
    Follow(FollowChange),
    /// A PONG arrived.
    Heartbeat(Heartbeat),
}

impl Notification {
    /// The peer it is about.
    pub fn pubkey(&self) -> &str {
        match self {
            Notification::State(c) => &c.record.nostr_pubkey,
            Notification::Channel(c) => &c.nostr_pubkey,
            Notification::Follow(f) => &f.nostr_pubkey,
            Notification::Heartbeat(h) => &h.nostr_pubkey,
        }
    }
}

/// Where our channel-open transaction toward a peer stands, each time its confirmations
/// change (and once more, with the channel's id, when it is open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelProgress {
    #[serde(rename = "pubkey")]
    pub nostr_pubkey: String,
    pub tx_hash: String,
    /// Blocks from the one holding the transaction to the head (0: not mined yet).
    pub confirmations: u64,
    /// How many the channel port waits for before the channel counts as open.
    pub required: u64,
    /// Set once the channel is open.
    pub channel_id: Option<String>,
    /// When the node learned it (milliseconds since the Unix epoch).
    pub at: Timestamp,
}

/// Who followed or unfollowed a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowSource {
    /// The operator's follow list (kind 3) on the Nostr relays.
    FollowList,
    /// The operator through the admin API (`connect`).
    Operator,
}

impl FollowSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowSource::FollowList => "follow_list",
            FollowSource::Operator => "operator",
        }
    }
}

/// A peer became followed, or stopped being followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowChange {
    #[serde(rename = "pubkey")]
    pub nostr_pubkey: String,
    /// `true`: followed now; `false`: unfollowed.
    pub followed: bool,
    pub by: FollowSource,
    pub at: Timestamp,
}

/// A PONG arrived: the peer's heartbeat round trip as the node tracks it (smoothed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// Shared with the peer's actor, which reports every PONG: no copy per heartbeat.
    #[serde(rename = "pubkey")]
    pub nostr_pubkey: Arc<str>,
    /// Microseconds.
    pub rtt_us: u32,
    /// When the PONG arrived, on the node's clock.
    pub at: Timestamp,
}
