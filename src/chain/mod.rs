//! Payment channels on the EVM chain: the contract's bindings ([`contract`]) and the
//! [`ChannelPort`](crate::ports::ChannelPort) adapter over alloy ([`EvmChannels`]).
//!
//! What the adapter guarantees the core:
//! - `find_channel` reports only a channel from our address to the peer's announced
//!   `base_address` that is open, holds `chain.min_balance_wei` unclaimed and has
//!   `chain.min_time_left_seconds` before expiry, read at one block.
//! - Opening is sign → (the core persists the hash durably) → broadcast: the adapter never
//!   sends a transaction whose hash the core has not been handed first, and the core never
//!   asks to broadcast before the hash is on disk. A hash the chain never saw (crash before
//!   the broadcast, or a reorg that dropped it) is reported `Dropped`, but only once the
//!   endpoint has not known it for `chain.dropped_grace_seconds` (one empty answer may be a
//!   lagging node behind a load balancer) and only when it can no longer land beside a new
//!   open: its nonce is spent by another transaction, or the new open reuses its nonce (so
//!   one replaces the other). Two opens can never both land.
//! - The auto-open total cap is checked and the deposit reserved before any RPC, each check
//!   counting the others' reservations, so followed peers asking together cannot all pass
//!   it.
//! - Opens asked together read their expiry, gas and fees side by side; only the nonce and
//!   the signature are taken under the signing lock, one open at a time.
//! - Counts of refusals and tolerated misses: [`EvmChannels::stats`].
//! - Nonces: an open keeps its nonce from signing until the chain's pending count covers
//!   it (also while it is being sent and the pool does not have it yet); the lowest nonce
//!   no open holds is taken, so an abandoned open's nonce is reused and no gap is left.
//!   Every signed open ends logged at INFO with its hash: broadcast, abandoned (with the
//!   reason), or found on chain. One signed here and never sent is sent with the same
//!   bytes when its status is asked.
//! - `channel_status` counts confirmations from the receipt's block to the head; at
//!   `chain.confirmations` it re-reads the channel at the confirmed block and checks it
//!   before reporting `Confirmed`. RPC trouble is a transient fault.

pub mod adapter;
pub mod anvil;
pub mod contract;
pub mod operator;

pub use adapter::{ChainError, ChainStats, ChannelPolicy, EvmChannels, OpenPlan};

/// The common name of an EVM chain id, for the operator's eyes; `None` for one not known
/// here.
pub fn chain_name(chain_id: u64) -> Option<&'static str> {
    Some(match chain_id {
        1 => "Ethereum",
        11155111 => "Sepolia",
        8453 => "Base",
        84532 => "Base Sepolia",
        anvil::ANVIL_CHAIN_ID => "anvil (local)",
        _ => return None,
    })
}

/// A deposit the operator typed (CLI, admin API): a whole number of wei, more than 0.
pub fn parse_deposit_wei(text: &str) -> Result<u128, String> {
    match text.trim().parse::<u128>() {
        Ok(0) => Err("the deposit must be more than 0 wei".into()),
        Ok(wei) => Ok(wei),
        Err(_) => Err(format!("`{text}` is not a whole number of wei")),
    }
}
