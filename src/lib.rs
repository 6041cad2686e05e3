//! # btp-nips-node
//!
//! Runs beside an operator's Nostr relay and connects it, over Interledger (BTP), to the
//! relays of the people the operator follows.
//!
//! Where things are:
//! - [`lifecycle`] — the peer lifecycle as plain, time-driven logic with no IO and no clock
//!   of its own: states, the transition table, backoff, heartbeat, priority.
//! - [`actors`] — the actix actors that drive it: one [`actors::peer::PeerActor`] per peer,
//!   the [`actors::supervisor::PeerSupervisor`] (restarts, connection limit, recovery) and
//!   the [`actors::persistence::PersistenceActor`] (batched durable writes).
//! - [`ports`] — the small traits behind which the outside worlds live (Nostr discovery,
//!   BTP sessions, the EVM channel, subscriptions), with in-memory doubles for tests, and
//!   [`ports::PeerDirectory`], through which adapters tell the node about peers.
//! - [`storage`] — diesel: one schema, PostgreSQL and SQLite behind one connection type.
//! - [`chain`] — payment channels on the EVM chain: the contract's bindings and the
//!   alloy adapter behind [`ports::ChannelPort`].
//! - [`config`] — settings, their defaults and their validation.
//! - [`wire`] — the codecs: OER, ILPv4, BTP/2.0, BTP-NIPs.
//! - [`session`] — real BTP sessions over WebSocket: mutual Nostr-key authentication,
//!   PING/PONG, ILDCP; the node's [`ports::SessionConnector`] and its inbound endpoint.
//! - [`discovery`] — Nostr: the node's key, its kind 32001 announcement, the resolver and
//!   the follow-list monitor.
//! - [`events`] — the event flow of connected peers: the initial REQ, verifying and
//!   publishing received events, serving the peers' REQs from the operator's relay.
//! - [`node`] — the node as one thing: [`node::NodeBuilder`] assembles every part the
//!   settings enable (the binary, the tests and the benchmark all use it), and
//!   [`node::Node`] is the cheap-clone handle whose methods are the node's operations.
//! - [`untrusted`] — remote text shown in logs and errors: bounded and escaped.
//! - [`key_file`] — files holding a secret key are read only if private to their owner.
//! - [`devnet`] — `btp-nips-node devnet`: a whole network on one machine (embedded relays,
//!   an anvil child, N nodes), printed as it changes.
//! - [`signals`] — SIGINT and SIGTERM for the long-running commands.
//! - [`setup`] — `init` (a key and a short configuration) and `config check` (everything
//!   the node depends on, every problem at once).

pub mod actors;
pub mod admin;
pub mod chain;
pub mod config;
#[cfg(feature = "devnet")]
pub mod devnet;
pub mod discovery;
pub mod events;
pub mod key_file;
pub mod lifecycle;
pub mod node;
pub mod ports;
pub mod session;
pub mod setup;
pub mod signals;
pub mod storage;
pub mod untrusted;
pub mod wire;
