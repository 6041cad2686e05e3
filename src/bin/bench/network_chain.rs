//! The chain of `btp-nips-bench network --chain anvil`, and what the benchmark reads back
//! of it.
//!
//! The chain is the devnet's ([`DevChain`]): anvil as a child process of this one, a block
//! a second, the PaymentChannels contract deployed from anvil's dev account. The node
//! under test gets an EVM key of its own (a 0600 file in the scratch directory), funded
//! from the dev account, and the devnet's `chain` section ([`chain_yaml`]): auto-open on,
//! [`DEPOSIT_WEI`] a channel, the caps sized for the N peers.
//!
//! Read back: the node's transactions (its account's nonce, mined and pending) and the
//! channels it opened (the contract's `ChannelOpened` logs with the node as payer), and
//! from the node's database, when each followed peer entered `channel_needed`,
//! `channel_opening` and `connected`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use btp_nips_node::chain::adapter::http_provider;
use btp_nips_node::chain::anvil::find_anvil;
use btp_nips_node::chain::contract::PaymentChannels;
use btp_nips_node::devnet::chain::{DevChain, BLOCK_TIME_SECONDS, CONFIRMATIONS};
use btp_nips_node::devnet::nodes::{chain_yaml, evm_key, ChainConfig};
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::storage::Database;
use serde_json::{json, Value};

/// What each channel deposits: 0.001 ETH, so even 10,000 channels stay well within the
/// 100 ETH the devnet funds a node with.
pub const DEPOSIT_WEI: u128 = 1_000_000_000_000_000;

/// The running chain (anvil is stopped when this is dropped).
pub struct BenchChain {
    /// The chain's RPC calls run here, on this thread (which started anvil, so anvil lives
    /// as long as it does).
    runtime: tokio::runtime::Runtime,
    chain: DevChain,
    provider: DynProvider,
    /// The node under test's EVM address: the payer of every channel it opens.
    payer: Address,
    /// The `chain` section of the node's configuration.
    pub yaml: String,
    /// anvil's head when the chain was ready (the node has sent nothing before it).
    pub start_block: u64,
}

/// What the chain shows of the node at one moment.
pub struct Onchain {
    /// The node's transactions in blocks (its account's confirmed nonce).
    pub mined: u64,
    /// Its transactions, pending ones included.
    pub pending: u64,
    /// Every channel the node opened: its id, payee and block.
    pub channels: Vec<(B256, Address, u64)>,
    /// A transaction that opened one of them, for its gas.
    pub an_open: Option<B256>,
}

impl BenchChain {
    /// Starts anvil, deploys the contract and funds the node's new key (written under
    /// `dir`); the node's configuration is sized for `peers` channels.
    pub fn start(dir: &Path, peers: usize) -> Result<BenchChain, String> {
        let bin = find_anvil()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the chain: {e}"))?;
        let key_file = dir.join("evm.key");
        let key = evm_key(&key_file).map_err(|e| e.to_string())?;
        let chain = runtime
            .block_on(DevChain::start(&bin, 0, None, None, &|line| {
                eprintln!("network: {line}")
            }))
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(chain.fund(&[key.address()]))
            .map_err(|e| e.to_string())?;
        let provider = http_provider(&chain.url).map_err(|e| e.to_string())?;
        let start_block = runtime
            .block_on(provider.get_block_number())
            .map_err(|e| format!("anvil's head: {e}"))?;
        let config = ChainConfig {
            rpc_url: chain.url.clone(),
            contract: chain.contract.to_string(),
        };
        Ok(BenchChain {
            yaml: chain_yaml(Some(&config), &key_file, DEPOSIT_WEI, peers),
            runtime,
            chain,
            provider,
            payer: key.address(),
            start_block,
        })
    }

    /// The node's transactions and channels now.
    pub fn read(&self) -> Result<Onchain, String> {
        let rpc = |e: alloy::transports::TransportError| format!("anvil: {e}");
        self.runtime.block_on(async {
            let count = self.provider.get_transaction_count(self.payer);
            let mined = count.latest().await.map_err(rpc)?;
            let pending = self
                .provider
                .get_transaction_count(self.payer)
                .pending()
                .await
                .map_err(rpc)?;
            let opened = Filter::new()
                .address(self.chain.contract)
                .event_signature(PaymentChannels::ChannelOpened::SIGNATURE_HASH)
                .topic2(self.payer.into_word())
                .from_block(0u64);
            let logs = self.provider.get_logs(&opened).await.map_err(rpc)?;
            let an_open = logs.first().and_then(|l| l.transaction_hash);
            let channels = logs
                .iter()
                .filter_map(|log| {
                    let block = log.block_number?;
                    let event = PaymentChannels::ChannelOpened::decode_log(&log.inner).ok()?;
                    Some((event.channelId, event.payee, block))
                })
                .collect();
            Ok(Onchain {
                mined,
                pending,
                channels,
                an_open,
            })
        })
    }

    /// Where the chain set the pace: the blocks the opens landed in, the most in one, and
    /// how many one block can hold (its gas limit over one open's gas).
    pub fn blocks(&self, onchain: &Onchain) -> Value {
        let mut per_block: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, _, block) in &onchain.channels {
            *per_block.entry(*block).or_default() += 1;
        }
        let gas = self.runtime.block_on(async {
            let receipt = match onchain.an_open {
                Some(tx) => self.provider.get_transaction_receipt(tx).await.ok()?,
                None => None,
            }?;
            let block = self
                .provider
                .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                .await
                .ok()??;
            Some((receipt.gas_used, block.header.gas_limit))
        });
        json!({
            "block_time_s": BLOCK_TIME_SECONDS,
            "confirmations": CONFIRMATIONS,
            "chain_ready_at_block": self.start_block,
            "first_open_block": per_block.keys().next(),
            "last_open_block": per_block.keys().next_back(),
            "blocks_with_opens": per_block.len(),
            "most_opens_in_one_block": per_block.values().max(),
            "gas_per_open": gas.map(|g| g.0),
            "block_gas_limit": gas.map(|g| g.1),
            "opens_one_block_holds": gas.and_then(|(used, limit)| limit.checked_div(used)),
        })
    }

    /// Stops anvil.
    pub fn stop(self) {
        let BenchChain { runtime, chain, .. } = self;
        if let Err(e) = runtime.block_on(chain.stop()) {
            eprintln!("network: stopping anvil: {e}");
        }
    }
}

/// The first time each followed peer entered `channel_needed`, `channel_opening` and
/// `connected` at or after `since_ms` (unix ms), from the node's history in the database
/// at `url`; the times are reported in ms after `since_ms`: the first peer's, the median
/// and the last. `through_channel_opening` counts the peers that went channel_needed →
/// channel_opening → connected in that order.
pub fn channel_path(url: &str, followed: &HashSet<String>, since_ms: u64) -> Value {
    let read = || -> Result<Value, String> {
        let db = Database::open(url, 1).map_err(|e| e.to_string())?;
        let stages = [
            PeerState::ChannelNeeded,
            PeerState::ChannelOpening,
            PeerState::Connected,
        ];
        let mut times: [Vec<u64>; 3] = Default::default();
        let mut through = 0;
        for pubkey in followed {
            let history = db.history(pubkey, 100).map_err(|e| e.to_string())?;
            // Newest first: the oldest entry into each stage since `since_ms`.
            let first = |stage: PeerState| {
                history
                    .iter()
                    .rev()
                    .find(|t| t.at.0 >= since_ms && t.to == stage)
                    .map(|t| t.at.0 - since_ms)
            };
            let at = stages.map(first);
            if let [Some(needed), Some(opening), Some(connected)] = at {
                if needed <= opening && opening <= connected {
                    through += 1;
                }
            }
            for (list, at) in times.iter_mut().zip(at) {
                list.extend(at);
            }
        }
        let spread = |list: &mut Vec<u64>| {
            list.sort_unstable();
            json!({
                "peers": list.len(),
                "first_ms": list.first(),
                "median_ms": list.get(list.len() / 2),
                "last_ms": list.last(),
            })
        };
        let [needed, opening, connected] = &mut times;
        Ok(json!({
            "through_channel_opening": through,
            "channel_needed": spread(needed),
            "channel_opening": spread(opening),
            "connected": spread(connected),
        }))
    };
    read().unwrap_or_else(|e| json!({ "error": e }))
}
