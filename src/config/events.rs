//! `events`: the event flow between the operator's relay and the connected peers.

use serde::Deserialize;

use super::check::{Key, Problems};
use super::ConfigError;
use crate::discovery::announcement::check_endpoint;

/// The most `events.max_future_seconds` may be: one year.
pub const MAX_FUTURE_SECONDS: u64 = 365 * 24 * 3600;
/// The most `events.max_events_in_flight` may be: under every peer's default
/// `session.max_requests_in_flight`.
const MAX_EVENTS_IN_FLIGHT: usize = 64;

/// The most `events.max_cursor_ids` may be (each one is stored with the peer).
pub const MAX_CURSOR_IDS: usize = 10_000;

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
    /// EVENTs a served subscription has in flight, not yet answered: a window, so the
    /// flow is not one round trip (and one relay OK) per event.
    pub max_events_in_flight: usize,
    /// Filters one REQ may carry; a REQ with more is refused with a NOTICE.
    pub max_filters_per_req: usize,
    /// Live REQs (one per filter of a served subscription) one peer may hold on the
    /// operator's relay connection.
    pub max_live_reqs_per_peer: usize,
    /// Live REQs all peers together may hold on the operator's relay connection; keep it
    /// below the relay's own per-connection REQ limit.
    pub max_live_reqs: usize,
    /// Of `max_live_reqs`, how many only followed peers may use: peers not followed share
    /// the rest, so their load can never take a followed peer's room.
    pub live_reqs_reserved_for_followed: usize,
    /// An EVENT created more than this many seconds ahead of the node's clock is refused
    /// (and never moves the peer's cursor).
    pub max_future_seconds: u64,
    /// Ids of events received at the cursor's second that the cursor remembers; events of
    /// that second beyond them are published again on resume (the relay drops repeats).
    pub max_cursor_ids: usize,
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
        p.add(Key("events.max_events_in_flight").between(
            self.max_events_in_flight,
            1,
            MAX_EVENTS_IN_FLIGHT,
        ));
        p.add(Key("events.max_live_reqs").nonzero(self.max_live_reqs));
        p.add(Key("events.max_live_reqs_per_peer").between(
            self.max_live_reqs_per_peer,
            1,
            self.max_live_reqs.max(1),
        ));
        p.add(Key("events.max_filters_per_req").between(
            self.max_filters_per_req,
            1,
            self.max_live_reqs_per_peer.max(1),
        ));
        p.add(Key("events.live_reqs_reserved_for_followed").between(
            self.live_reqs_reserved_for_followed,
            0,
            self.max_live_reqs,
        ));
        // Bounded so that `now + max_future_seconds` is a time every store can hold.
        p.add(Key("events.max_future_seconds").between(
            self.max_future_seconds,
            1,
            MAX_FUTURE_SECONDS,
        ));
        p.add(Key("events.max_cursor_ids").between(self.max_cursor_ids, 1, MAX_CURSOR_IDS));
        p.finish()
    }
}
