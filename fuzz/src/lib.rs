//! The node's wire codecs, compiled here on their own so the decoder fuzz targets need
//! none of the node's dependencies. The files are the node's own (`src/wire/`), included
//! by path: what is fuzzed is exactly what the node runs. With the `messages` feature, the
//! NIP-01 messages inside BTP-NIPs (`src/events/messages.rs`) too, which need only nostr.

#[path = "../../src/wire/mod.rs"]
pub mod wire;

/// The bounded, escaping formatter the codecs show remote bytes with (std only).
#[path = "../../src/untrusted.rs"]
pub mod untrusted;

#[cfg(feature = "messages")]
#[path = "../../src/events/messages.rs"]
pub mod messages;
