//! The event flow of connected peers: what makes `connected` mean events move.
//!
//! - [`relay`] — the operator's own Nostr relay: where received events are published and
//!   where the events served to peers come from (stored, then live).
pub mod relay;
