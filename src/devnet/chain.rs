//! The devnet's chain: anvil as a child process (a block a second, its state kept in DIR),
//! the PaymentChannels contract deployed once from anvil's first dev account, and each
//! node's EVM key funded from that account by a plain transfer. The network benchmark
//! (`btp-nips-bench network --chain anvil`) runs its node under test on the same chain.

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use super::DevnetError;
use crate::chain::adapter::{http_provider, parse_address, parse_key};
use crate::chain::anvil::{AnvilChild, AnvilOptions};
use crate::chain::operator::{self, ReceiptWait};

/// Seconds between anvil's blocks (and so, with [`CONFIRMATIONS`], how long a channel takes).
pub const BLOCK_TIME_SECONDS: u64 = 1;
/// Confirmations a devnet channel waits for.
pub const CONFIRMATIONS: u64 = 2;
/// How often anvil writes its state file besides at its stop.
const STATE_INTERVAL_SECONDS: u64 = 10;
/// A node holding less than this is topped up to [`FUNDING_WEI`].
const MIN_BALANCE_WEI: u128 = 10 * ETH;
const FUNDING_WEI: u128 = 100 * ETH;
const ETH: u128 = 1_000_000_000_000_000_000;
/// Waiting for the devnet's own transactions (a block a second).
const WAIT: ReceiptWait = ReceiptWait {
    poll: Duration::from_millis(200),
    timeout: Duration::from_secs(60),
};

/// A running devnet chain.
pub struct DevChain {
    anvil: AnvilChild,
    pub url: String,
    pub contract: Address,
    provider: DynProvider,
    dev: PrivateKeySigner,
}

impl DevChain {
    /// Starts anvil from `bin` on `port` (0: any free one) with the state file `state`
    /// (none: the chain lives as long as anvil), and makes sure the contract is there: the
    /// one at `stored` if the state still holds it, else a new one. What it does is told
    /// to `narrate` a line at a time. Must be called on the thread that lives as long as
    /// the chain is used: anvil is told to end with the thread that started it.
    pub async fn start(
        bin: &Path,
        port: u16,
        state: Option<&Path>,
        stored: Option<&str>,
        narrate: &dyn Fn(String),
    ) -> Result<DevChain, DevnetError> {
        let options = AnvilOptions {
            port,
            block_time: Some(BLOCK_TIME_SECONDS),
            state: state.map(|s| (s.to_path_buf(), STATE_INTERVAL_SECONDS)),
            accounts: 1,
        };
        let anvil = AnvilChild::start(bin, &options).map_err(DevnetError::Chain)?;
        let chain = |e: crate::chain::ChainError| DevnetError::Chain(e.to_string());
        let provider = http_provider(&anvil.url).map_err(chain)?;
        let dev = parse_key("anvil's dev account", &anvil.dev_key).map_err(chain)?;
        let boxed = |e: Box<dyn std::error::Error>| DevnetError::Chain(e.to_string());
        let stored = match stored {
            Some(text) => {
                Some(parse_address("the stored contract", text).map_err(DevnetError::Chain)?)
            }
            None => None,
        };
        let kept = match stored {
            Some(address) => {
                let code = provider
                    .get_code_at(address)
                    .await
                    .map_err(|e| DevnetError::Chain(format!("anvil at {}: {e}", anvil.url)))?;
                if code.is_empty() {
                    let holder = state.map_or("anvil".into(), |s| s.display().to_string());
                    narrate(format!(
                        "chain: {holder} holds no contract at {address} (its state was lost); deploying a new one"
                    ));
                    None
                } else {
                    Some(address)
                }
            }
            None => None,
        };
        let contract = match kept {
            Some(address) => address,
            None => operator::deploy(&provider, &dev, WAIT, |hash| {
                narrate(format!(
                    "chain: deploying PaymentChannels (transaction {hash:#x})"
                ))
            })
            .await
            .map_err(boxed)?,
        };
        Ok(DevChain {
            url: anvil.url.clone(),
            anvil,
            contract,
            provider,
            dev,
        })
    }

    /// anvil's process id.
    pub fn pid(&self) -> u32 {
        self.anvil.pid()
    }

    /// Tops up every address in `to` holding less than 10 ETH to 100 ETH from the dev
    /// account; returns how many were funded.
    pub async fn fund(&self, to: &[Address]) -> Result<usize, DevnetError> {
        let boxed = |e: Box<dyn std::error::Error>| DevnetError::Chain(e.to_string());
        let rpc = |e: alloy::transports::TransportError| DevnetError::Chain(e.to_string());
        let mut sent = Vec::new();
        for address in to {
            let balance = self.provider.get_balance(*address).await.map_err(rpc)?;
            if balance < U256::from(MIN_BALANCE_WEI) {
                let wei = U256::from(FUNDING_WEI) - balance;
                sent.push(
                    operator::transfer(&self.provider, &self.dev, *address, wei)
                        .await
                        .map_err(boxed)?,
                );
            }
        }
        for hash in &sent {
            operator::wait_for_receipt(&self.provider, *hash, WAIT, "funding")
                .await
                .map_err(boxed)?;
        }
        Ok(sent.len())
    }

    /// Stops anvil (it writes its state first); waits for it to exit.
    pub async fn stop(mut self) -> Result<(), DevnetError> {
        let pid = self.anvil.pid();
        // A blocking wait of at most a few seconds, off the runtime's thread.
        let status = tokio::task::spawn_blocking(move || self.anvil.stop(Duration::from_secs(10)))
            .await
            .map_err(|e| DevnetError::Chain(format!("stopping anvil: {e}")))?
            .map_err(|e| DevnetError::io(format!("stopping anvil (pid {pid})"), e))?;
        log::info!("anvil (pid {pid}) stopped: {status}");
        Ok(())
    }
}
