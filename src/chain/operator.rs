//! The operator's chain commands: `open-channel` (open a channel to a peer waiting in
//! `channel_needed`, and wait for its confirmations) and `deploy-contract`, and the
//! transactions they (and `devnet`) are made of: deploy, transfer, wait for a receipt. They run as
//! their own process beside the node: the node picks up a channel opened here at its next
//! re-check of the chain (`btp_nips.peer_connections.channel_recheck_seconds`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;

use super::adapter::{http_provider, load_key, parse_address, ChainError, EvmChannels};
use super::contract;
use crate::config::Settings;
use crate::lifecycle::PeerState;
use crate::ports::{ChannelStatus, Fault};
use crate::storage::Database;

fn enabled(settings: &Settings) -> Result<(), ChainError> {
    if settings.chain.enabled {
        Ok(())
    } else {
        Err(ChainError::Config {
            key: "chain.enabled",
            reason: "is false: configure the chain section (rpc_url, chain_id, contract_address, key_file or key_env) and set it to true".into(),
        })
    }
}

/// Opens a channel to the stored peer `pubkey` with `deposit` wei (default
/// `chain.deposit_wei`) and waits for `chain.confirmations`. Refuses while an earlier
/// transaction of ours is still pending (it may be an open), unless `force`.
pub async fn open_channel(
    settings: &Settings,
    pubkey: &str,
    deposit: Option<u128>,
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    enabled(settings)?;
    let db = Database::open(&settings.database.url, 1)?;
    let record = db
        .load_all()?
        .into_iter()
        .find(|r| r.nostr_pubkey == pubkey)
        .ok_or_else(|| format!("no peer with pubkey {pubkey} in the database"))?;
    let base = record.base_address.clone().ok_or_else(|| {
        format!(
            "peer {pubkey} has announced no base-address yet (state {})",
            record.state
        )
    })?;
    let payee = parse_address("the peer's base-address", &base)?;
    let deposit = U256::from(deposit.unwrap_or_else(|| settings.chain.deposit()));
    if deposit.is_zero() {
        return Err("--deposit must be more than 0 wei".into());
    }
    let min_balance = U256::from(settings.chain.min_balance());
    if deposit < min_balance {
        return Err(format!(
            "--deposit {deposit} is below chain.min_balance_wei ({min_balance}): the node would never use such a channel"
        )
        .into());
    }
    if record.state == PeerState::ChannelOpening {
        return Err(format!(
            "peer {pubkey} is channel_opening: the node is already waiting for its open transaction {}",
            record.channel_tx_hash.as_deref().unwrap_or("?")
        )
        .into());
    }
    let adapter = EvmChannels::connect(&settings.chain).await?;
    if let Some(existing) = adapter
        .usable_channel(payee)
        .await
        .map_err(ChainError::from)?
    {
        println!(
            "a usable channel to {payee} exists already: {:#x} ({} wei deposited, {} claimed); nothing sent",
            existing.id, existing.deposit, existing.claimed
        );
        return Ok(());
    }
    let provider = http_provider(&settings.chain.rpc_url)?;
    let latest = provider.get_transaction_count(adapter.address()).await?;
    let pending = provider
        .get_transaction_count(adapter.address())
        .pending()
        .await?;
    if pending > latest && !force {
        return Err(format!(
            "{} transaction(s) from {} are still pending (one may be an earlier open); wait for them, or pass --force",
            pending - latest,
            adapter.address()
        )
        .into());
    }
    let plan = adapter
        .sign_open(payee, deposit, false)
        .await
        .map_err(ChainError::from)?;
    println!(
        "sending open transaction {:#x}: {} wei from {} to {payee} (peer {pubkey}), expiry {}, nonce {}",
        plan.tx_hash,
        plan.deposit,
        adapter.address(),
        plan.expiry,
        plan.nonce
    );
    adapter
        .broadcast(plan.tx_hash)
        .await
        .map_err(ChainError::from)?;
    let poll = settings.btp_nips.peer_connections.channel_poll_interval;
    let timeout = settings.btp_nips.peer_connections.channel_opening_timeout;
    let started = Instant::now();
    let mut progress = ConfirmationProgress::new(
        std::io::stdout().is_terminal(),
        settings.chain.confirmations,
    );
    loop {
        match adapter.status(plan.tx_hash).await {
            Ok(ChannelStatus::Confirmed { channel_id }) => {
                show(progress.finish());
                println!(
                    "channel {channel_id} confirmed ({} confirmations); a running node picks it up within {}s",
                    settings.chain.confirmations,
                    settings
                        .btp_nips
                        .peer_connections
                        .channel_recheck_interval
                        .as_secs()
                );
                return Ok(());
            }
            Ok(ChannelStatus::Pending { confirmations }) => {
                show(progress.confirmations(confirmations, started.elapsed()));
            }
            // Only after chain.dropped_grace_seconds without it: one empty answer from the
            // endpoint is waited out above, as Pending.
            Ok(ChannelStatus::Dropped) => {
                show(progress.finish());
                return Err(format!(
                    "the open transaction {:#x} (nonce {}) has been on no chain and in no pool for chain.dropped_grace_seconds ({}s): dropped (reorg or evicted). If nonce {} is not spent yet it could still land: run open-channel again, which refuses while a transaction of ours is pending",
                    plan.tx_hash,
                    plan.nonce,
                    settings.chain.dropped_grace.as_secs(),
                    plan.nonce
                )
                .into());
            }
            Err(Fault::Transient(reason) | Fault::Local(reason) | Fault::Refused(reason)) => {
                show(progress.finish());
                eprintln!("checking {:#x}: {reason}", plan.tx_hash)
            }
            Err(Fault::Permanent(reason)) => {
                show(progress.finish());
                return Err(format!("checking {:#x}: {reason}", plan.tx_hash).into());
            }
        }
        if started.elapsed() >= timeout {
            show(progress.finish());
            return Err(format!(
                "not confirmed within {}s; {:#x} may still land: check it before opening again",
                timeout.as_secs(),
                plan.tx_hash
            )
            .into());
        }
        // Until the next poll the spinner turns (on a terminal), so a slow chain is seen
        // to be waited on.
        let next_poll = Instant::now() + poll;
        while progress.terminal {
            let left = next_poll.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(SPINNER_FRAME)).await;
            show(progress.tick(started.elapsed()));
        }
        tokio::time::sleep(next_poll.saturating_duration_since(Instant::now())).await;
    }
}

/// How often the spinner moves on a terminal.
const SPINNER_FRAME: Duration = Duration::from_millis(120);

/// Writes `text` (if any) to stdout at once (a spinner line has no newline to flush it).
fn show(text: Option<String>) {
    if let Some(text) = text {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// How `open-channel` shows its transaction's confirmations as they come. On a terminal:
/// one line, redrawn in place, with a spinner and the time waited. Otherwise (a pipe, a
/// log file): a plain line each time the count changes, nothing in between.
#[derive(Debug)]
pub struct ConfirmationProgress {
    /// Whether stdout is a terminal (the spinner) or not (plain lines).
    pub terminal: bool,
    required: u64,
    /// The count last seen (None: none yet).
    seen: Option<u64>,
    frame: usize,
    /// Whether a spinner line is on screen (cleared before anything else is written).
    drawn: bool,
}

const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

impl ConfirmationProgress {
    pub fn new(terminal: bool, required: u64) -> Self {
        ConfirmationProgress {
            terminal,
            required,
            seen: None,
            frame: 0,
            drawn: false,
        }
    }

    /// A status poll found `confirmations`, `waited` after the broadcast: what to write.
    pub fn confirmations(&mut self, confirmations: u64, waited: Duration) -> Option<String> {
        let changed = self.seen != Some(confirmations);
        self.seen = Some(confirmations);
        if self.terminal {
            Some(self.spinner_line(waited))
        } else {
            changed.then(|| format!("{confirmations}/{} confirmations\n", self.required))
        }
    }

    /// Between polls: the spinner's next frame (nothing when not on a terminal).
    pub fn tick(&mut self, waited: Duration) -> Option<String> {
        (self.terminal && self.seen.is_some()).then(|| self.spinner_line(waited))
    }

    /// Before a final line: the spinner's line cleared, if one is drawn.
    pub fn finish(&mut self) -> Option<String> {
        std::mem::take(&mut self.drawn).then(|| "\r\x1b[K".to_string())
    }

    fn spinner_line(&mut self, waited: Duration) -> String {
        self.frame = (self.frame + 1) % SPINNER.len();
        self.drawn = true;
        format!(
            "\r\x1b[K{} {}/{} confirmations ({}s)",
            SPINNER[self.frame],
            self.seen.unwrap_or(0),
            self.required,
            waited.as_secs()
        )
    }
}

/// Deploys the contract from the compiled-in artifact with the node's key; prints its
/// address (to put in `chain.contract_address`).
pub async fn deploy_contract(settings: &Settings) -> Result<Address, Box<dyn std::error::Error>> {
    let signer = load_key(&settings.chain)?;
    let provider = http_provider(&settings.chain.rpc_url)?;
    let chain_id = provider.get_chain_id().await?;
    if chain_id != settings.chain.chain_id {
        return Err(ChainError::Config {
            key: "chain.chain_id",
            reason: format!(
                "configured {} but {} serves chain {chain_id}",
                settings.chain.chain_id, settings.chain.rpc_url
            ),
        }
        .into());
    }
    let wait = ReceiptWait {
        poll: settings
            .btp_nips
            .peer_connections
            .channel_poll_interval
            .min(Duration::from_secs(2)),
        timeout: settings.btp_nips.peer_connections.channel_opening_timeout,
    };
    let address = deploy(&provider, &signer, wait, |hash| {
        println!("deploying PaymentChannels: transaction {hash:#x}")
    })
    .await?;
    println!("PaymentChannels deployed at {address} (set chain.contract_address)");
    Ok(address)
}

/// How a transaction's receipt is waited for.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptWait {
    pub poll: Duration,
    pub timeout: Duration,
}

/// Deploys PaymentChannels from the compiled-in artifact, signed by `signer`, and waits
/// until it is mined; `sent` is told the transaction's hash first.
pub async fn deploy(
    provider: &DynProvider,
    signer: &PrivateKeySigner,
    wait: ReceiptWait,
    sent: impl FnOnce(B256),
) -> Result<Address, Box<dyn std::error::Error>> {
    let tx = TransactionRequest::default().with_deploy_code(contract::creation_bytecode()?);
    let hash = sign_and_send(provider, signer, tx).await?;
    sent(hash);
    let receipt = wait_for_receipt(provider, hash, wait, "the deployment").await?;
    Ok(receipt
        .contract_address
        .ok_or("the deployment receipt names no contract address")?)
}

/// Sends `wei` from `signer` to `to` (not waited for: see [`wait_for_receipt`]).
pub async fn transfer(
    provider: &DynProvider,
    signer: &PrivateKeySigner,
    to: Address,
    wei: U256,
) -> Result<B256, Box<dyn std::error::Error>> {
    let tx = TransactionRequest::default().with_to(to).with_value(wei);
    sign_and_send(provider, signer, tx).await
}

/// Fills in `tx`'s sender, next nonce (pending ones counted), chain id, gas and fees,
/// signs it with `signer` and sends it; returns its hash.
pub async fn sign_and_send(
    provider: &DynProvider,
    signer: &PrivateKeySigner,
    mut tx: TransactionRequest,
) -> Result<B256, Box<dyn std::error::Error>> {
    let chain_id = provider.get_chain_id().await?;
    let nonce = provider
        .get_transaction_count(signer.address())
        .pending()
        .await?;
    tx.set_from(signer.address());
    tx.set_nonce(nonce);
    tx.set_chain_id(chain_id);
    let gas = provider.estimate_gas(tx.clone()).await?;
    let fees = provider.estimate_eip1559_fees().await?;
    tx.set_gas_limit(gas + gas / 5);
    tx.set_max_fee_per_gas(fees.max_fee_per_gas);
    tx.set_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
    let envelope = tx.build(&EthereumWallet::from(signer.clone())).await?;
    Ok(*provider
        .send_raw_transaction(&envelope.encoded_2718())
        .await?
        .tx_hash())
}

/// Waits until `hash` is mined and succeeded (`what` names it in the errors).
pub async fn wait_for_receipt(
    provider: &DynProvider,
    hash: B256,
    wait: ReceiptWait,
    what: &str,
) -> Result<TransactionReceipt, Box<dyn std::error::Error>> {
    let started = Instant::now();
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(hash).await? {
            if !receipt.status() {
                return Err(format!("{what} {hash:#x} reverted").into());
            }
            return Ok(receipt);
        }
        if started.elapsed() >= wait.timeout {
            return Err(format!(
                "{what} {hash:#x} not mined within {}s",
                wait.timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(wait.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_each_new_count_is_one_plain_line() {
        let mut p = ConfirmationProgress::new(false, 3);
        let s = Duration::from_secs;
        assert_eq!(
            p.confirmations(0, s(0)).as_deref(),
            Some("0/3 confirmations\n")
        );
        assert_eq!(p.confirmations(0, s(2)), None, "the same count: nothing");
        assert_eq!(p.tick(s(3)), None, "no spinner");
        assert_eq!(
            p.confirmations(2, s(4)).as_deref(),
            Some("2/3 confirmations\n")
        );
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn on_a_terminal_one_line_is_redrawn_with_a_turning_spinner() {
        let mut p = ConfirmationProgress::new(true, 3);
        let s = Duration::from_secs;
        assert_eq!(p.tick(s(0)), None, "nothing to show before the first poll");
        let first = p.confirmations(1, s(1)).unwrap();
        let next = p.tick(s(2)).unwrap();
        let again = p.confirmations(1, s(3)).unwrap();
        for line in [&first, &next, &again] {
            assert!(
                line.starts_with("\r\x1b[K") && !line.contains('\n'),
                "{line:?}"
            );
            assert!(line.contains("1/3 confirmations"), "{line:?}");
        }
        assert_ne!(
            first.chars().nth(4),
            next.chars().nth(4),
            "the spinner turns"
        );
        assert!(again.ends_with("(3s)"), "{again:?}");
        assert_eq!(
            p.finish().as_deref(),
            Some("\r\x1b[K"),
            "cleared before the result"
        );
        assert_eq!(p.finish(), None);
    }
}
