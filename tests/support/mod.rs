//! What the integration tests share. Each test file takes all of it (`mod support;`) and
//! uses what it needs, hence the `dead_code` allowance.
//!
//! - [`wait`]: one poll-with-deadline and the waits built on it.
//! - [`node`]: a node under test on the in-memory world, in the test's actix system or in a
//!   thread of its own ([`node::NodeThread`]); stored records; waiting on its peers.
//! - [`admin`]: a node with its admin API on a free port, a client of it, a metrics parser.
//! - [`binary`]: the binary as an operator runs it: a configuration file, the `run`
//!   process and its log, the CLI commands against it.
//! - [`browser`]: a headless Chromium driven over the DevTools protocol.
//! - [`sessions`]: BTP sessions on loopback, and a raw WebSocket client for what our own
//!   client never sends.
//! - [`chain`]: a local anvil with the contract deployed, and an RPC proxy to take down.
//! - [`relays`]: real Nostr relays of two implementations, and [`relays::on_both_relays!`].
//! - [`sim`]: the sans-IO lifecycle in simulated time.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod admin;
pub mod binary;
pub mod browser;
pub mod chain;
pub mod node;
pub mod relays;
pub mod sessions;
pub mod sim;
pub mod wait;

/// A loopback port nothing listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
