//! `events`: the event flow between the operator's relay and the connected peers.

use serde::Deserialize;

use super::check::{Key, Problems};
use super::ConfigError;
use crate::discovery::announcement::check_endpoint;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// The operator's own relay (ws:// or wss://); empty: no events move.
    pub operator_relay: String,
    /// Open subscriptions one peer may hold on this node; a REQ beyond them gets a NOTICE.
    pub max_subscriptions_per_peer: usize,
    /// Events asked of the operator's relay per page of stored events.
    pub stored_page_size: usize,
    /// At most this many stored events are served per REQ (the newest; a NOTICE says so).
    pub max_stored_events: usize,
}

impl EventSettings {
    /// Checks the section; an error names its key. `allow_ws_loopback` is
    /// `nostr.allow_ws_loopback`, which also governs the operator's relay.
    pub fn validate(&self, allow_ws_loopback: bool) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        let url = self.operator_relay.trim();
        if !url.is_empty() {
            p.add(Key("events.operator_relay").passes(check_endpoint(url, allow_ws_loopback)));
        }
        p.add(Key("events.max_subscriptions_per_peer").nonzero(self.max_subscriptions_per_peer));
        p.add(Key("events.stored_page_size").nonzero(self.stored_page_size));
        p.add(Key("events.max_stored_events").nonzero(self.max_stored_events));
        p.finish()
    }
}
