//! The seven peer states and the one table of allowed transitions.
//!
//! The first block of [`TRANSITIONS`] is the original design's table, kept as it was. The
//! second block holds every edge this node adds, each with the one-line reason it exists:
//! the original table sent every fault to `failed` (which only a person can leave), while
//! its error handling wanted transient faults retried. Here a transient fault (or one of
//! the node's own) goes to `disconnected` and is retried; a permanent one goes to `failed`
//! with a recorded reason.

use serde::{Deserialize, Serialize};

/// Where a peer is in its lifecycle. The names are the protocol's, and the strings stored
/// in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Looking for the peer's kind 32001 announcement.
    Discovering,
    /// Opening an authenticated BTP session.
    Connecting,
    /// Session up but no payment channel yet; waiting for the operator or the auto-open policy.
    ChannelNeeded,
    /// Channel-open transaction sent; waiting for confirmations.
    ChannelOpening,
    /// Initial REQ sent, events flowing, heartbeat running.
    Connected,
    /// Lost (or deliberately closed); retried with backoff unless the operator said stop.
    Disconnected,
    /// Needs a person: left only by an explicit retry or a new follow.
    Failed,
}

impl PeerState {
    pub const ALL: [PeerState; 7] = [
        PeerState::Discovering,
        PeerState::Connecting,
        PeerState::ChannelNeeded,
        PeerState::ChannelOpening,
        PeerState::Connected,
        PeerState::Disconnected,
        PeerState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Discovering => "discovering",
            PeerState::Connecting => "connecting",
            PeerState::ChannelNeeded => "channel_needed",
            PeerState::ChannelOpening => "channel_opening",
            PeerState::Connected => "connected",
            PeerState::Disconnected => "disconnected",
            PeerState::Failed => "failed",
        }
    }

    /// Parses the database / wire spelling.
    pub fn parse(s: &str) -> Option<PeerState> {
        PeerState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The reason the edge `self → to` exists, or `None` if the table has no such edge.
    pub fn transition_reason(self, to: PeerState) -> Option<&'static str> {
        TRANSITIONS
            .iter()
            .find(|(from, target, _)| *from == self && *target == to)
            .map(|(_, _, reason)| *reason)
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use PeerState::*;

/// Every allowed transition, with its reason.
pub const TRANSITIONS: &[(PeerState, PeerState, &str)] = &[
    // --- The core table. ---
    (Discovering, Connecting, "announcement found and valid"),
    (
        Discovering,
        Failed,
        "no valid announcement after the configured tries, or an invalid one",
    ),
    (
        Connecting,
        ChannelNeeded,
        "session authenticated, no usable channel on chain",
    ),
    (
        Connecting,
        Connected,
        "session authenticated and a usable channel exists",
    ),
    (Connecting, Failed, "authentication refused (permanent)"),
    (
        ChannelNeeded,
        ChannelOpening,
        "channel-open transaction sent and made durable",
    ),
    (
        ChannelNeeded,
        Failed,
        "channel cannot be opened (permanent)",
    ),
    (
        ChannelOpening,
        Connected,
        "open transaction confirmed and channel re-read",
    ),
    (ChannelOpening, Failed, "channel timeout"),
    (Connected, Disconnected, "session lost or heartbeat missed"),
    (Connected, Failed, "peer misbehaved (permanent)"),
    (
        Disconnected,
        Discovering,
        "backoff elapsed: try again from the announcement",
    ),
    (Disconnected, Failed, "reconnect attempts exhausted"),
    (
        Failed,
        Discovering,
        "explicit retry by the operator, or followed anew",
    ),
    // --- Edges this node adds. ---
    (
        Discovering,
        Disconnected,
        "transient fault (no relay answered), deliberate stop, or evicted",
    ),
    (
        Connecting,
        Disconnected,
        "transient fault (timeout, refused), deliberate stop, or evicted",
    ),
    (
        Connecting,
        ChannelOpening,
        "our open transaction from before a restart is still pending",
    ),
    (
        ChannelNeeded,
        Connected,
        "a channel appeared on chain (opened by someone else)",
    ),
    (
        ChannelNeeded,
        Disconnected,
        "transient fault, deliberate stop, or evicted",
    ),
    (
        ChannelOpening,
        ChannelNeeded,
        "a reorg dropped the open transaction, or the chain refused it",
    ),
    (
        ChannelOpening,
        Disconnected,
        "deliberate stop, or session lost while confirming (hash kept)",
    ),
];

/// What the operator wants for a peer. `Disconnect` is recorded intent, not a lost
/// connection: such a peer is never reconnected on restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerIntent {
    Connect,
    Disconnect,
}

impl PeerIntent {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerIntent::Connect => "connect",
            PeerIntent::Disconnect => "disconnect",
        }
    }

    pub fn parse(s: &str) -> Option<PeerIntent> {
        match s {
            "connect" => Some(PeerIntent::Connect),
            "disconnect" => Some(PeerIntent::Disconnect),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in PeerState::ALL {
            assert_eq!(PeerState::parse(state.as_str()), Some(state));
        }
        assert_eq!(PeerState::parse("active"), None);
    }

    #[test]
    fn the_original_edges_are_all_present_and_unique() {
        let original = [
            (Discovering, Connecting),
            (Discovering, Failed),
            (Connecting, ChannelNeeded),
            (Connecting, Connected),
            (Connecting, Failed),
            (ChannelNeeded, ChannelOpening),
            (ChannelNeeded, Failed),
            (ChannelOpening, Connected),
            (ChannelOpening, Failed),
            (Connected, Disconnected),
            (Connected, Failed),
            (Disconnected, Discovering),
            (Disconnected, Failed),
            (Failed, Discovering),
        ];
        for (from, to) in original {
            assert!(from.transition_reason(to).is_some(), "{from} -> {to}");
        }
        for (i, (a, b, _)) in TRANSITIONS.iter().enumerate() {
            assert!(
                !TRANSITIONS[i + 1..]
                    .iter()
                    .any(|(c, d, _)| a == c && b == d),
                "duplicate edge {a} -> {b}"
            );
        }
        assert!(Failed.transition_reason(Connected).is_none());
        assert!(Disconnected.transition_reason(Connected).is_none());
    }
}
