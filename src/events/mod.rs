//! The event flow of connected peers: what makes `connected` mean events move.
//!
//! - [`messages`] — the NIP-01 messages inside BTP-NIPs packets, read and written.
//! - [`inbox`] — what this node asked its peers for, and the checks every received EVENT
//!   passes (id, signature, filter) before it is published.
//! - [`serve`] — the peers' REQs, answered from the operator's relay: stored, EOSE, live.
//! - [`flow`] — [`flow::EventFlow`], the node's [`crate::ports::Subscriptions`] and its
//!   [`crate::session::NostrMessages`]: ties the above to sessions and peer lifecycles.
//! - [`relay`] — the operator's own Nostr relay; [`store`] makes it the real
//!   [`OperatorStore`]; [`reads`] takes its stored reads past nostr-sdk's event pipeline.
//! - [`verified`] — [`VerifiedEvent`], the only kind of event the operator's relay is given:
//!   an event is checked once, by whoever received it, and never published unchecked.
//!
//! The flow sees the operator's relay only as an [`OperatorStore`], so its logic is tested
//! against an in-memory store as well as against real relays.

use async_trait::async_trait;
use futures::stream::BoxStream;
use nostr::{Event, EventId, Filter};

pub mod flow;
pub mod inbox;
pub mod messages;
pub mod reads;
pub mod relay;
pub mod serve;
pub mod store;
pub mod verified;

pub use flow::EventFlow;
pub use verified::VerifiedEvent;

/// Why the operator's relay did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The relay answered no (OK false, CLOSED): asking again will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The relay did not answer (down, timeout, lagging feed): later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The operator's relay, as the event flow uses it.
#[async_trait]
pub trait OperatorStore: Send + Sync {
    /// Publishes `event` (checked already: see [`VerifiedEvent`]); Ok once the relay has it
    /// (a duplicate counts).
    async fn publish(&self, event: &VerifiedEvent) -> Result<(), StoreError>;
    /// The stored events matching `filter` as `(created_at, id)`, oldest first, read in
    /// pages of `page_size`; at most `max` (the newest), and whether more existed. Only
    /// ids are kept, so a large read holds no events in memory.
    async fn stored_ids(
        &self,
        filter: Filter,
        page_size: usize,
        max: usize,
    ) -> Result<(Vec<(u64, EventId)>, bool), StoreError>;
    /// The events with these ids still stored, oldest first (one page of a read).
    async fn events(&self, ids: &[EventId]) -> Result<Vec<Event>, StoreError>;
    /// The events matching `filter` as the relay gets them, from now on. An `Err` item
    /// means the feed broke (events may have been lost); the stream ends after it.
    async fn live(
        &self,
        filter: Filter,
    ) -> Result<BoxStream<'static, Result<Event, StoreError>>, StoreError>;
}
