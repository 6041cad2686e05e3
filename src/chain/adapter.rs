//! `EvmChannels`: the [`ChannelPort`] over alloy. It reads channels from the
//! `PaymentChannels` contract, signs open transactions with the node's key, sends them only
//! when the core asks (after the hash is durable), and follows them to their confirmations.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;

use super::contract::{self, PaymentChannels};
use crate::config::ChainSettings;
use crate::key_file::KeyFileError;
use crate::ports::{
    ChannelPolicyStatus, ChannelPort, ChannelRequest, ChannelStatus, Fault, PeerTarget,
};

/// A signed open transaction nobody asked to broadcast within this long is forgotten (it
/// was never sent, so its nonce is free again).
const SIGNED_TTL: Duration = Duration::from_secs(120);

/// How long a sent open may stay unknown to the endpoint (no receipt, not in the pool)
/// before it is reported dropped, unless set otherwise (`chain.dropped_grace_seconds`).
pub const DEFAULT_DROPPED_GRACE: Duration = Duration::from_secs(120);

/// What the adapter refused or tolerated since it started, for the admin metrics (see
/// [`EvmChannels::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainStats {
    /// Automatic opens refused because their deposit would pass
    /// `chain.auto_open.total_cap_wei`.
    pub auto_open_refused_total_cap: u64,
    /// Automatic opens refused because the deposit exceeds
    /// `chain.auto_open.per_channel_cap_wei`.
    pub auto_open_refused_per_channel_cap: u64,
    /// Status checks that found a sent open unknown to the endpoint and kept waiting on it
    /// rather than report it dropped (within `chain.dropped_grace_seconds`, or while an
    /// open whose nonce is unknown may still be pending).
    pub receipts_missed: u64,
    /// Opens reported dropped.
    pub opens_dropped: u64,
    /// Opens signed with the nonce of a dropped open that might still land, so that at
    /// most one of the two can.
    pub dropped_nonces_reused: u64,
}

#[derive(Default)]
struct Counters {
    auto_open_refused_total_cap: AtomicU64,
    auto_open_refused_per_channel_cap: AtomicU64,
    receipts_missed: AtomicU64,
    opens_dropped: AtomicU64,
    dropped_nonces_reused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Why the adapter could not be set up (startup, CLI). Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("configuration key `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("RPC endpoint {url}: {reason}")]
    Rpc { url: String, reason: String },
    #[error("contract {address}: {reason}")]
    Contract { address: Address, reason: String },
    #[error("{0}")]
    Fault(String),
}

impl From<Fault> for ChainError {
    fn from(f: Fault) -> Self {
        ChainError::Fault(f.reason().to_string())
    }
}

/// Deposits, lifetimes and the auto-open policy (from `chain.*`).
#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    pub deposit: U256,
    pub duration: Duration,
    pub min_balance: U256,
    pub min_time_left: Duration,
    /// `Some((per_channel_cap, total_cap))` when auto-open is on.
    pub auto_open: Option<(U256, U256)>,
}

impl ChannelPolicy {
    pub fn from_settings(s: &ChainSettings) -> ChannelPolicy {
        ChannelPolicy {
            deposit: U256::from(s.deposit()),
            duration: s.channel_duration,
            min_balance: U256::from(s.min_balance()),
            min_time_left: s.min_time_left,
            auto_open: s
                .auto_open
                .enabled
                .then(|| (U256::from(s.per_channel_cap()), U256::from(s.total_cap()))),
        }
    }
}

/// What an open will do, told to the operator before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPlan {
    pub tx_hash: B256,
    pub payee: Address,
    pub deposit: U256,
    pub expiry: u64,
    pub nonce: u64,
}

/// An open transaction before its nonce and signature (see [`EvmChannels::prepare_open`]).
struct UnsignedOpen {
    /// Everything but the nonce: sender, contract, deposit, input, chain id, gas, fees.
    tx: TransactionRequest,
    payee: Address,
    deposit: U256,
    expiry: u64,
}

/// Where a signed open stands in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Signed and not (as far as we know) sent: held until the core asks to broadcast it,
    /// or until it is abandoned.
    Unsent,
    /// Handed to the endpoint now, or accepted by it: its nonce stays taken until the
    /// chain's own pending count covers it, even before the pool has it.
    Sent,
}

/// A signed open transaction and its nonce.
struct Signed {
    raw: Bytes,
    nonce: u64,
    signed_at: Instant,
    stage: Stage,
    /// Counted against the auto-open total cap until it is seen mined or abandoned.
    auto_deposit: Option<U256>,
}

#[derive(Default)]
struct Held {
    /// Every open signed by this process whose nonce the chain does not count yet.
    signed: HashMap<B256, Signed>,
    /// Auto-opened deposits broadcast but not yet seen in a block.
    auto_in_flight: HashMap<B256, U256>,
    /// Opens whose ending (broadcast, abandoned, found on chain) has been logged.
    ended: HashSet<B256>,
    /// Deposits of automatic opens between their cap check and their signing, by
    /// reservation number: they count against the total cap like signed ones.
    reserved: HashMap<u64, U256>,
    next_reservation: u64,
    /// The nonce of every open signed by this process until it is seen mined, dropped or
    /// abandoned (a sent open leaves `signed` once the pending count covers it).
    nonces: HashMap<B256, u64>,
    /// When the endpoint first answered that it knows nothing of a sent open.
    missing_since: HashMap<B256, Instant>,
    /// Nonces of opens reported dropped that the chain has not spent: one of them may still
    /// land, so the next open takes that nonce and at most one of the two can.
    reuse: BTreeSet<u64>,
}

impl Held {
    /// Deposits of automatic opens this process has reserved, signed or sent and not yet
    /// seen in a block.
    fn auto_committed(&self) -> U256 {
        self.auto_in_flight.values().copied().sum::<U256>()
            + self
                .signed
                .iter()
                .filter(|(hash, _)| !self.auto_in_flight.contains_key(*hash))
                .filter_map(|(_, s)| s.auto_deposit)
                .sum::<U256>()
            + self.reserved.values().copied().sum::<U256>()
    }

    /// Forgets everything held about `tx_hash` once it is mined or dropped.
    fn settle(&mut self, tx_hash: B256) {
        self.auto_in_flight.remove(&tx_hash);
        self.signed.remove(&tx_hash);
        self.nonces.remove(&tx_hash);
        self.missing_since.remove(&tx_hash);
    }

    /// Forgets the unsent open `tx_hash` (its nonce is free for the next open) and logs why.
    fn abandon(&mut self, tx_hash: B256, reason: &str) -> bool {
        match self.signed.get(&tx_hash) {
            Some(s) if s.stage == Stage::Unsent => {
                let nonce = s.nonce;
                self.signed.remove(&tx_hash);
                self.nonces.remove(&tx_hash);
                self.ended.insert(tx_hash);
                log::info!(
                    "abandoned channel open {tx_hash:#x} (nonce {nonce}, never sent): {reason}; the next open takes its nonce"
                );
                true
            }
            _ => false,
        }
    }
}

/// An automatic open's deposit counted against the total cap from its check until it is
/// signed; released when dropped uncommitted (a refusal, a failed RPC or signing, or the
/// request given up half-way).
struct Reservation<'a> {
    held: &'a Mutex<Held>,
    id: u64,
    committed: bool,
}

impl Reservation<'_> {
    /// The signed open now counts the deposit itself (called under the held lock, in the
    /// same step that records the signed open).
    fn commit(mut self, held: &mut Held) {
        held.reserved.remove(&self.id);
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.held
                .lock()
                .expect("held lock")
                .reserved
                .remove(&self.id);
        }
    }
}

/// What the auto-open policy did with one request.
enum AutoOpen {
    Signed(OpenPlan),
    /// The policy said no (the reason names the setting).
    Refused(String),
    /// The policy allowed it and signing failed (e.g. not enough funds).
    Failed(Fault),
}

/// One channel as the contract stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub id: B256,
    pub payer: Address,
    pub payee: Address,
    pub deposit: U256,
    pub claimed: U256,
    pub expiry: u64,
    pub closed: bool,
}

pub struct EvmChannels {
    provider: DynProvider,
    signer: PrivateKeySigner,
    wallet: EthereumWallet,
    chain_id: u64,
    contract: Address,
    confirmations: u64,
    rpc_timeout: Duration,
    policy: ChannelPolicy,
    /// Serialises nonce choice and signing, so two opens never take the same nonce (and
    /// nothing else: what does not depend on the nonce is read before it is taken).
    sign_lock: tokio::sync::Mutex<()>,
    held: Mutex<Held>,
    /// A sent open unknown to the endpoint for this long may be reported dropped.
    dropped_grace: Duration,
    counters: Counters,
    /// Why the newest automatic open was refused (shown to the operator).
    last_refusal: Mutex<Option<String>>,
}

/// Parses a `0x…` EVM address named by `what`.
pub fn parse_address(what: &str, text: &str) -> Result<Address, String> {
    let t = text.trim();
    if !(t.len() == 42 && t.starts_with("0x") && t[2..].chars().all(|c| c.is_ascii_hexdigit())) {
        return Err(format!("{what} `{t}` is not 0x followed by 40 hex digits"));
    }
    t.parse::<Address>()
        .map_err(|e| format!("{what} `{t}` is not an EVM address: {e}"))
}

/// Parses a hex private key (with or without 0x) without ever echoing it.
pub fn parse_key(key: &'static str, text: &str) -> Result<PrivateKeySigner, ChainError> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").unwrap_or(t);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ChainError::Config {
            key,
            reason: "the EVM key must be 64 hex digits (optionally 0x-prefixed)".into(),
        });
    }
    hex.parse::<PrivateKeySigner>()
        .map_err(|_| ChainError::Config {
            key,
            reason: "the EVM key is not a valid secp256k1 private key".into(),
        })
}

/// The node's EVM key from `chain.key_file` (refused if others can read it) or
/// `chain.key_env`.
pub fn load_key(settings: &ChainSettings) -> Result<PrivateKeySigner, ChainError> {
    if !settings.key_file.trim().is_empty() {
        let path = settings.key_file.trim();
        // Only its owner may read the file (as for the node's Nostr key).
        let text = crate::key_file::read_private(std::path::Path::new(path)).map_err(|e| {
            ChainError::Config {
                key: "chain.key_file",
                reason: match e {
                    KeyFileError::Io { source, .. } => format!("cannot read {path}: {source}"),
                    too_open => too_open.to_string(),
                },
            }
        })?;
        return parse_key("chain.key_file", &text);
    }
    let var = settings.key_env.trim();
    if var.is_empty() {
        return Err(ChainError::Config {
            key: "chain.key_file",
            reason: "set chain.key_file or chain.key_env".into(),
        });
    }
    let text = std::env::var(var).map_err(|_| ChainError::Config {
        key: "chain.key_env",
        reason: format!("the environment variable {var} is not set"),
    })?;
    parse_key("chain.key_env", &text)
}

/// An HTTP provider without fillers: the adapter fills and signs its transactions itself.
pub fn http_provider(rpc_url: &str) -> Result<DynProvider, ChainError> {
    let url = rpc_url.parse().map_err(|e| ChainError::Config {
        key: "chain.rpc_url",
        reason: format!("`{rpc_url}` is not a URL: {e}"),
    })?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(url)
        .erased())
}

/// An RPC call failed: the node's own endpoint, not the peer's doing.
fn transient(what: &str, e: impl Display) -> Fault {
    Fault::Local(format!("{what}: {e}"))
}

fn hex_id(id: B256) -> String {
    format!("{id:#x}")
}

impl EvmChannels {
    /// Builds the adapter from `chain.*` and checks the endpoint: its chain id must be
    /// `chain.chain_id`, and the contract must answer with this chain's EIP-712 domain.
    pub async fn connect(settings: &ChainSettings) -> Result<EvmChannels, ChainError> {
        let signer = load_key(settings)?;
        let contract = parse_address("chain.contract_address", &settings.contract_address)
            .map_err(|reason| ChainError::Config {
                key: "chain.contract_address",
                reason,
            })?;
        let adapter = EvmChannels::new(
            http_provider(&settings.rpc_url)?,
            signer,
            settings.chain_id,
            contract,
            settings.confirmations,
            settings.rpc_timeout,
            ChannelPolicy::from_settings(settings),
        )
        .with_dropped_grace(settings.dropped_grace);
        adapter.check_endpoint(&settings.rpc_url).await?;
        Ok(adapter)
    }

    pub fn new(
        provider: DynProvider,
        signer: PrivateKeySigner,
        chain_id: u64,
        contract: Address,
        confirmations: u64,
        rpc_timeout: Duration,
        policy: ChannelPolicy,
    ) -> EvmChannels {
        EvmChannels {
            provider,
            wallet: EthereumWallet::from(signer.clone()),
            signer,
            chain_id,
            contract,
            confirmations: confirmations.max(1),
            rpc_timeout,
            policy,
            sign_lock: tokio::sync::Mutex::new(()),
            held: Mutex::new(Held::default()),
            dropped_grace: DEFAULT_DROPPED_GRACE,
            counters: Counters::default(),
            last_refusal: Mutex::new(None),
        }
    }

    /// How long a sent open may be unknown to the endpoint before it can be reported
    /// dropped (`chain.dropped_grace_seconds`; [`DEFAULT_DROPPED_GRACE`] unless set).
    pub fn with_dropped_grace(mut self, grace: Duration) -> EvmChannels {
        self.dropped_grace = grace;
        self
    }

    /// The counts since this adapter started.
    pub fn stats(&self) -> ChainStats {
        let c = &self.counters;
        ChainStats {
            auto_open_refused_total_cap: c.auto_open_refused_total_cap.load(Ordering::Relaxed),
            auto_open_refused_per_channel_cap: c
                .auto_open_refused_per_channel_cap
                .load(Ordering::Relaxed),
            receipts_missed: c.receipts_missed.load(Ordering::Relaxed),
            opens_dropped: c.opens_dropped.load(Ordering::Relaxed),
            dropped_nonces_reused: c.dropped_nonces_reused.load(Ordering::Relaxed),
        }
    }

    /// Why the newest automatic open was refused, naming the setting that refused it.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().expect("refusal lock").clone()
    }

    /// The node's EVM address (the payer of its channels).
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    pub fn contract(&self) -> Address {
        self.contract
    }

    /// `chain.chain_id`, which the endpoint was checked to serve.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The channel policy with what the auto-open total cap has left now: the cap less
    /// the wei locked at the head and the automatic opens this process holds, counted as
    /// [`EvmChannels::auto_open`] counts them before it signs.
    pub async fn policy_status(&self) -> ChannelPolicyStatus {
        let wei = |v: U256| u128::try_from(v).unwrap_or(u128::MAX);
        let mut status = ChannelPolicyStatus {
            deposit_wei: wei(self.policy.deposit),
            auto_open: self.policy.auto_open.is_some(),
            per_channel_cap_wei: None,
            total_cap_wei: None,
            total_cap_used_wei: None,
            total_cap_left_wei: None,
            unknown_reason: None,
        };
        let Some((per_channel, total)) = self.policy.auto_open else {
            return status;
        };
        status.per_channel_cap_wei = Some(wei(per_channel));
        status.total_cap_wei = Some(wei(total));
        match self.locked_wei().await {
            Ok(locked) => {
                let held = self.held.lock().expect("held lock").auto_committed();
                let used = locked.saturating_add(held);
                status.total_cap_used_wei = Some(wei(used));
                status.total_cap_left_wei = Some(wei(total.saturating_sub(used)));
            }
            Err(fault) => {
                status.unknown_reason = Some(format!(
                    "the locked wei could not be read: {}",
                    fault.reason()
                ))
            }
        }
        status
    }

    /// The channel `id` (`0x` + 64 hex) as stored at the head; `None` when the contract
    /// has no such channel.
    pub async fn channel(&self, id: &str) -> Result<Option<ChannelState>, Fault> {
        let id = id
            .trim()
            .parse::<B256>()
            .map_err(|e| Fault::Permanent(format!("`{id}` is not a channel id: {e}")))?;
        let c = self.channel_at(id, BlockId::latest()).await?;
        // An id the contract never assigned reads as all zeros.
        Ok((c.payer != Address::ZERO).then_some(c))
    }

    /// Chain id and contract checks (see [`EvmChannels::connect`]).
    pub async fn check_endpoint(&self, url: &str) -> Result<(), ChainError> {
        let rpc = |reason: String| ChainError::Rpc {
            url: url.to_string(),
            reason,
        };
        let chain_id = self
            .rpc("eth_chainId", self.provider.get_chain_id())
            .await
            .map_err(|f| rpc(f.reason().to_string()))?;
        if chain_id != self.chain_id {
            return Err(ChainError::Config {
                key: "chain.chain_id",
                reason: format!(
                    "configured {} but {url} serves chain {chain_id}",
                    self.chain_id
                ),
            });
        }
        let code = self
            .rpc("eth_getCode", self.provider.get_code_at(self.contract))
            .await
            .map_err(|f| rpc(f.reason().to_string()))?;
        if code.is_empty() {
            return Err(ChainError::Contract {
                address: self.contract,
                reason: format!("no contract is deployed there on chain {chain_id}"),
            });
        }
        let separator = self
            .view(PaymentChannels::domainSeparatorCall {}, BlockId::latest())
            .await
            .map_err(|f| ChainError::Contract {
                address: self.contract,
                reason: format!("does not answer as PaymentChannels: {}", f.reason()),
            })?;
        let expected = contract::domain(self.chain_id, self.contract).separator();
        if separator != expected {
            return Err(ChainError::Contract {
                address: self.contract,
                reason: "its EIP-712 domain is not PaymentChannels on this chain".into(),
            });
        }
        Ok(())
    }

    /// Runs one RPC call with the configured timeout; every failure is transient.
    async fn rpc<T, E: Display>(
        &self,
        what: &str,
        call: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, Fault> {
        match tokio::time::timeout(self.rpc_timeout, call.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(transient(what, e)),
            Err(_) => Err(Fault::Local(format!(
                "{what}: no answer within {}s",
                self.rpc_timeout.as_secs()
            ))),
        }
    }

    /// Calls a view function of the contract at `block`.
    async fn view<C: SolCall>(&self, call: C, block: BlockId) -> Result<C::Return, Fault> {
        let tx = TransactionRequest::default()
            .with_to(self.contract)
            .with_input(call.abi_encode());
        let out = self
            .rpc(C::SIGNATURE, self.provider.call(tx).block(block))
            .await?;
        C::abi_decode_returns(&out).map_err(|e| {
            Fault::Permanent(format!(
                "contract {} answered {} with something undecodable: {e}",
                self.contract,
                C::SIGNATURE
            ))
        })
    }

    /// The head block's number and timestamp.
    async fn head(&self) -> Result<(u64, u64), Fault> {
        let block = self
            .rpc(
                "eth_getBlockByNumber",
                self.provider.get_block_by_number(BlockNumberOrTag::Latest),
            )
            .await?
            .ok_or_else(|| Fault::Local("the endpoint has no latest block".into()))?;
        Ok((block.header.number, block.header.timestamp))
    }

    async fn timestamp_at(&self, number: u64) -> Result<u64, Fault> {
        let block = self
            .rpc(
                "eth_getBlockByNumber",
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Number(number)),
            )
            .await?
            .ok_or_else(|| Fault::Local(format!("block {number} is not available")))?;
        Ok(block.header.timestamp)
    }

    /// Wei this node's key has locked in channels not yet closed: deposits less what was
    /// paid out or refunded (the contract's own `lockedBy` figure), at the head.
    pub async fn locked_wei(&self) -> Result<U256, Fault> {
        self.view(
            PaymentChannels::lockedByCall {
                payer: self.address(),
            },
            BlockId::latest(),
        )
        .await
    }

    /// One channel as stored at `block`.
    pub async fn channel_at(&self, id: B256, block: BlockId) -> Result<ChannelState, Fault> {
        let c = self
            .view(PaymentChannels::channelsCall { channelId: id }, block)
            .await?;
        Ok(ChannelState {
            id,
            payer: c.payer,
            payee: c.payee,
            deposit: c.deposit,
            claimed: c.claimed,
            expiry: c.expiry,
            closed: c.closed,
        })
    }

    /// Why `c` is not usable for paying `payee` at chain time `now`, or `None` if it is.
    fn unusable(&self, c: &ChannelState, payee: Address, now: u64) -> Option<String> {
        if c.payer != self.address() {
            return Some(format!(
                "its payer is {}, not us ({})",
                c.payer,
                self.address()
            ));
        }
        if c.payee != payee {
            return Some(format!("its payee is {}, not {payee}", c.payee));
        }
        if c.closed {
            return Some("it is closed".into());
        }
        let balance = c.deposit.saturating_sub(c.claimed);
        if balance < self.policy.min_balance {
            return Some(format!(
                "{balance} wei unclaimed is less than the minimum {}",
                self.policy.min_balance
            ));
        }
        let left = c.expiry.saturating_sub(now);
        if left < self.policy.min_time_left.as_secs() {
            return Some(format!(
                "{left}s to expiry is less than the minimum {}s",
                self.policy.min_time_left.as_secs()
            ));
        }
        None
    }

    fn payee_of(peer: &PeerTarget) -> Result<Address, Fault> {
        let text = peer.base_address.as_deref().ok_or_else(|| {
            Fault::Permanent("the peer announced no base-address (EVM) to pay".into())
        })?;
        parse_address("announced base-address", text).map_err(Fault::Permanent)
    }

    /// Our newest usable channel to `payee`, read at one block.
    pub async fn usable_channel(&self, payee: Address) -> Result<Option<ChannelState>, Fault> {
        let (number, now) = self.head().await?;
        let block = BlockId::number(number);
        let ids = self
            .view(
                PaymentChannels::channelsBetweenCall {
                    payer: self.address(),
                    payee,
                },
                block,
            )
            .await?;
        for id in ids.into_iter().rev() {
            let c = self.channel_at(id, block).await?;
            match self.unusable(&c, payee, now) {
                None => return Ok(Some(c)),
                Some(why) => log::debug!("channel {} to {payee} not usable: {why}", hex_id(id)),
            }
        }
        Ok(None)
    }

    /// Signs an open of a channel to `payee` holding `deposit`; nothing is sent. The
    /// transaction is held until [`ChannelPort::broadcast_open`] is called with its hash.
    /// `auto`: its deposit counts against the auto-open total cap (it is not checked here).
    pub async fn sign_open(
        &self,
        payee: Address,
        deposit: U256,
        auto: bool,
    ) -> Result<OpenPlan, Fault> {
        let unsigned = self.prepare_open(payee, deposit).await?;
        let locked = self.sign_lock.lock().await;
        let pending_nonce = self.pending_nonce().await?;
        self.sign_locked(&locked, unsigned, pending_nonce, auto, None)
            .await
    }

    /// An open to `payee` holding `deposit` as far as it does not depend on its nonce: its
    /// expiry (from the chain's clock), gas and fees. Prepared before the signing lock is
    /// taken, so opens asked together make these reads side by side; only the nonce and
    /// the signature are one open at a time (on a remote endpoint every read under the
    /// lock is a round trip more for each open queued behind it).
    async fn prepare_open(&self, payee: Address, deposit: U256) -> Result<UnsignedOpen, Fault> {
        if payee == self.address() {
            return Err(Fault::Permanent(format!(
                "the peer's base-address {payee} is our own address"
            )));
        }
        let (head, fees) = tokio::join!(
            self.head(),
            self.rpc("fee estimate", self.provider.estimate_eip1559_fees())
        );
        let (_, now) = head?;
        let fees = fees?;
        let expiry = now + self.policy.duration.as_secs();
        let input = PaymentChannels::openCall { payee, expiry }.abi_encode();
        let mut tx = TransactionRequest::default()
            .with_from(self.address())
            .with_to(self.contract)
            .with_value(deposit)
            .with_input(input)
            .with_chain_id(self.chain_id);
        // The estimate does not depend on the nonce (the open's code path is the same).
        let gas = self
            .rpc("eth_estimateGas", self.provider.estimate_gas(tx.clone()))
            .await?;
        // A margin over the estimate: the channel list of a busy payer may grow meanwhile.
        tx.set_gas_limit(gas + gas / 5);
        tx.set_max_fee_per_gas(fees.max_fee_per_gas);
        tx.set_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        Ok(UnsignedOpen {
            tx,
            payee,
            deposit,
            expiry,
        })
    }

    /// The account's transaction count with its pending transactions: the lowest nonce the
    /// chain has not seen used.
    async fn pending_nonce(&self) -> Result<u64, Fault> {
        self.rpc(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(self.address())
                .pending(),
        )
        .await
    }

    /// Signs `open` with the signing lock held, taking its nonce from `pending_nonce` (read
    /// under the lock) and what this process holds; `reservation` (an automatic open's) is
    /// committed in the step that records the signed open, and released by being dropped
    /// on every way out that signs nothing.
    async fn sign_locked(
        &self,
        _locked: &tokio::sync::MutexGuard<'_, ()>,
        open: UnsignedOpen,
        pending_nonce: u64,
        auto: bool,
        reservation: Option<Reservation<'_>>,
    ) -> Result<OpenPlan, Fault> {
        let UnsignedOpen {
            mut tx,
            payee,
            deposit,
            expiry,
        } = open;
        // A dropped open's nonce is reused only while the chain has not spent it.
        let reuse_from = if self.held.lock().expect("held lock").reuse.is_empty() {
            None
        } else {
            Some(self.confirmed_nonce().await?)
        };
        let (nonce, reused) = {
            let mut held = self.held.lock().expect("held lock");
            if let Some(confirmed) = reuse_from {
                held.reuse.retain(|n| *n >= confirmed);
            }
            // A sent open whose nonce the chain's pending count covers needs no accounting
            // here any more (it is in the pool or mined).
            held.signed
                .retain(|_, s| s.stage == Stage::Unsent || s.nonce >= pending_nonce);
            let expired: Vec<B256> = held
                .signed
                .iter()
                .filter(|(_, s)| s.stage == Stage::Unsent && s.signed_at.elapsed() >= SIGNED_TTL)
                .map(|(hash, _)| *hash)
                .collect();
            for hash in expired {
                held.abandon(
                    hash,
                    &format!(
                        "nobody asked to broadcast it within {}s",
                        SIGNED_TTL.as_secs()
                    ),
                );
            }
            // The nonce of a dropped open that may still land comes first: the two then
            // replace each other. Otherwise the lowest nonce no open of ours holds: one
            // being sent right now is not in the chain's pending count yet but keeps its
            // nonce, and the nonce of an abandoned open is reused, so no gap is left that
            // would hold later opens back.
            let taken: HashSet<u64> = held.signed.values().map(|s| s.nonce).collect();
            match held.reuse.iter().copied().find(|n| !taken.contains(n)) {
                Some(n) => (n, true),
                None => (
                    (pending_nonce..)
                        .find(|n| !taken.contains(n))
                        .expect("fewer opens than nonces"),
                    false,
                ),
            }
        };
        tx.set_nonce(nonce);
        let envelope = tx
            .build(&self.wallet)
            .await
            .map_err(|e| Fault::Permanent(format!("cannot sign the open transaction: {e}")))?;
        let tx_hash = *envelope.tx_hash();
        let raw = Bytes::from(envelope.encoded_2718());
        {
            let mut held = self.held.lock().expect("held lock");
            held.signed.insert(
                tx_hash,
                Signed {
                    raw,
                    nonce,
                    signed_at: Instant::now(),
                    stage: Stage::Unsent,
                    auto_deposit: (auto || reservation.is_some()).then_some(deposit),
                },
            );
            held.nonces.insert(tx_hash, nonce);
            if let Some(reservation) = reservation {
                reservation.commit(&mut held);
            }
        }
        if reused {
            bump(&self.counters.dropped_nonces_reused);
            log::info!(
                "signed channel open {tx_hash:#x}: {deposit} wei to {payee}, expiry {expiry}, nonce {nonce} (the nonce of a dropped open that may still land: at most one of the two can)"
            );
        } else {
            log::info!(
                "signed channel open {tx_hash:#x}: {deposit} wei to {payee}, expiry {expiry}, nonce {nonce}"
            );
        }
        Ok(OpenPlan {
            tx_hash,
            payee,
            deposit,
            expiry,
            nonce,
        })
    }

    /// Sends the signed transaction `tx_hash`.
    pub async fn broadcast(&self, tx_hash: B256) -> Result<(), Fault> {
        let raw = {
            let mut held = self.held.lock().expect("held lock");
            match held.signed.get_mut(&tx_hash) {
                Some(s) if s.stage == Stage::Unsent => {
                    s.stage = Stage::Sent;
                    s.raw.clone()
                }
                Some(_) => {
                    log::debug!("channel open {tx_hash:#x} is already sent");
                    return Ok(());
                }
                None => {
                    return Err(Fault::Transient(format!(
                        "no signed transaction {tx_hash:#x} is held (signed by an earlier run, or abandoned); it was never sent"
                    )))
                }
            }
        };
        self.send_raw(tx_hash, raw, "broadcast").await
    }

    /// Hands `raw` (the open `tx_hash`, marked sent) to the endpoint and logs how it ended.
    /// A refusal abandons it; a transient fault leaves it unsent as far as we know, so the
    /// status check sends the same bytes again if the chain never saw them.
    async fn send_raw(&self, tx_hash: B256, raw: Bytes, what: &str) -> Result<(), Fault> {
        let sent =
            tokio::time::timeout(self.rpc_timeout, self.provider.send_raw_transaction(&raw)).await;
        let outcome = match sent {
            Ok(Ok(_)) => Ok(""),
            Ok(Err(e)) if e.to_string().contains("already known") => {
                Ok(" (the endpoint already had it)")
            }
            // The node answered and refused it (funds, nonce, gas): it will never land.
            Ok(Err(e)) if e.as_error_resp().is_some() => {
                Err(Fault::Permanent(format!("open transaction refused: {e}")))
            }
            Ok(Err(e)) => Err(transient("eth_sendRawTransaction", e)),
            Err(_) => Err(Fault::Local(format!(
                "eth_sendRawTransaction: no answer within {}s",
                self.rpc_timeout.as_secs()
            ))),
        };
        let mut held = self.held.lock().expect("held lock");
        match outcome {
            Ok(note) => {
                let signed = held.signed.get(&tx_hash);
                let nonce = signed.map(|s| s.nonce);
                if let Some(deposit) = signed.and_then(|s| s.auto_deposit) {
                    held.auto_in_flight.insert(tx_hash, deposit);
                }
                if let Some(nonce) = nonce {
                    // The open that took a dropped open's nonce is out: that nonce is no
                    // longer free for another.
                    held.reuse.remove(&nonce);
                }
                held.ended.insert(tx_hash);
                match nonce {
                    Some(nonce) => {
                        log::info!("{what} channel open {tx_hash:#x} (nonce {nonce}){note}")
                    }
                    None => log::info!("{what} channel open {tx_hash:#x}{note}"),
                }
                Ok(())
            }
            Err(fault) => {
                if let Some(s) = held.signed.get_mut(&tx_hash) {
                    s.stage = Stage::Unsent;
                }
                if let Fault::Permanent(reason) = &fault {
                    held.abandon(tx_hash, reason);
                }
                Err(fault)
            }
        }
    }

    /// Logs, once, that the open `tx_hash` signed by an earlier run (or whose broadcast
    /// was never confirmed) is on chain or in the pool after all.
    fn found(&self, tx_hash: B256, place: &str) {
        if self.held.lock().expect("held lock").ended.insert(tx_hash) {
            log::info!("channel open {tx_hash:#x} found {place}");
        }
    }

    /// The core will never broadcast the open `tx_hash` (the peer moved on before it could
    /// be sent): it is forgotten, and its nonce goes to the next open.
    pub fn abandon(&self, tx_hash: B256, reason: &str) {
        let mut held = self.held.lock().expect("held lock");
        if !held.abandon(tx_hash, reason) {
            log::debug!("channel open {tx_hash:#x} is not held unsent; nothing to abandon");
        }
    }

    /// Where the open transaction `tx_hash` stands (see [`ChannelPort::channel_status`]).
    pub async fn status(&self, tx_hash: B256) -> Result<ChannelStatus, Fault> {
        self.status_at(tx_hash, Instant::now()).await
    }

    /// [`EvmChannels::status`] as of `now` (the grace before a drop counts in it).
    pub async fn status_at(&self, tx_hash: B256, now: Instant) -> Result<ChannelStatus, Fault> {
        let receipt = self
            .rpc(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(tx_hash),
            )
            .await?;
        let Some(receipt) = receipt else {
            let known = self
                .rpc(
                    "eth_getTransactionByHash",
                    self.provider.get_transaction_by_hash(tx_hash),
                )
                .await?;
            if known.is_some() {
                self.held
                    .lock()
                    .expect("held lock")
                    .missing_since
                    .remove(&tx_hash);
                self.found(tx_hash, "in the pool");
                return Ok(ChannelStatus::Pending { confirmations: 0 });
            }
            let unsent = {
                let mut held = self.held.lock().expect("held lock");
                match held.signed.get_mut(&tx_hash) {
                    Some(s) if s.stage == Stage::Unsent => {
                        s.stage = Stage::Sent;
                        Some(s.raw.clone())
                    }
                    _ => None,
                }
            };
            if let Some(raw) = unsent {
                // Signed here and never sent (its broadcast was lost or failed on the way):
                // the same bytes go out now, so the open keeps its hash and its nonce.
                return match self.send_raw(tx_hash, raw, "re-broadcast").await {
                    Ok(()) => Ok(ChannelStatus::Pending { confirmations: 0 }),
                    // Refused, so abandoned (logged): the peer asks for a new open.
                    Err(Fault::Permanent(_)) => {
                        bump(&self.counters.opens_dropped);
                        Ok(ChannelStatus::Dropped)
                    }
                    Err(fault) => Err(fault),
                };
            }
            return self.unseen(tx_hash, now).await;
        };
        {
            // Mined: the chain counts its nonce and its deposit from now on.
            self.held.lock().expect("held lock").settle(tx_hash);
        }
        self.found(
            tx_hash,
            &format!(
                "on chain in block {}",
                receipt.block_number.unwrap_or_default()
            ),
        );
        if !receipt.status() {
            return Err(Fault::Permanent(format!(
                "the open transaction {tx_hash:#x} reverted"
            )));
        }
        let mined_in = receipt
            .block_number
            .ok_or_else(|| Fault::Transient("the receipt names no block".into()))?;
        let (head, _) = self.head().await?;
        let confirmations = (head + 1).saturating_sub(mined_in);
        if confirmations < self.confirmations {
            return Ok(ChannelStatus::Pending { confirmations });
        }
        let opened = receipt
            .logs()
            .iter()
            .filter(|log| log.address() == self.contract)
            .find_map(|log| PaymentChannels::ChannelOpened::decode_log(&log.inner).ok())
            .ok_or_else(|| {
                Fault::Permanent(format!(
                    "the transaction {tx_hash:#x} opened no channel in {}",
                    self.contract
                ))
            })?;
        // Re-read the channel at the block that completed the confirmations.
        let confirmed_at = mined_in + self.confirmations - 1;
        let channel = self
            .channel_at(opened.channelId, BlockId::number(confirmed_at))
            .await?;
        let now = self.timestamp_at(confirmed_at).await?;
        if let Some(why) = self.unusable(&channel, opened.payee, now) {
            return Err(Fault::Permanent(format!(
                "channel {} does not check out at block {confirmed_at}: {why}",
                hex_id(channel.id)
            )));
        }
        log::info!(
            "channel {} confirmed ({confirmations} confirmations): {} wei to {}",
            hex_id(channel.id),
            channel.deposit,
            channel.payee
        );
        Ok(ChannelStatus::Confirmed {
            channel_id: hex_id(channel.id),
        })
    }

    /// The endpoint knows nothing of the sent open `tx_hash` (no receipt, not in its pool).
    /// One such answer proves little: a load-balanced endpoint may ask a node that has not
    /// seen it yet, and a reorg may drop it before the pool takes it back. It is reported
    /// dropped only once it has been unseen for `dropped_grace` and then only if it can
    /// no longer land beside a new open: its nonce is spent by another transaction, or the
    /// next open takes its nonce (so one of the two replaces the other).
    async fn unseen(&self, tx_hash: B256, now: Instant) -> Result<ChannelStatus, Fault> {
        let (since, nonce) = {
            let mut held = self.held.lock().expect("held lock");
            let since = *held.missing_since.entry(tx_hash).or_insert(now);
            (since, held.nonces.get(&tx_hash).copied())
        };
        let unseen_for = now.saturating_duration_since(since);
        if unseen_for < self.dropped_grace {
            bump(&self.counters.receipts_missed);
            // Told once per episode at INFO; every later check of it at DEBUG.
            let level = if since == now {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "channel open {tx_hash:#x} is unknown to the endpoint (no receipt, not in its pool) for {}s; not dropped before chain.dropped_grace_seconds ({}s)",
                unseen_for.as_secs(),
                self.dropped_grace.as_secs()
            );
            return Ok(ChannelStatus::Pending { confirmations: 0 });
        }
        let confirmed = self.confirmed_nonce().await?;
        let how = match nonce {
            Some(nonce) if confirmed > nonce => format!(
                "its nonce {nonce} is spent by another transaction (the account's confirmed count is {confirmed}), so it can never land"
            ),
            Some(nonce) => {
                self.held.lock().expect("held lock").reuse.insert(nonce);
                format!(
                    "the next open takes its nonce {nonce}, so at most one of the two can land"
                )
            }
            None => {
                // Not signed by this process (it restarted): its nonce is unknown, so it
                // may be any open of ours still pending.
                let pending = self.pending_nonce().await?;
                if pending > confirmed {
                    bump(&self.counters.receipts_missed);
                    log::debug!(
                        "channel open {tx_hash:#x} (signed by an earlier run) is unknown to the endpoint for {}s, but {} transaction(s) of ours are still pending and it may be one of them; not dropped",
                        unseen_for.as_secs(),
                        pending - confirmed
                    );
                    return Ok(ChannelStatus::Pending { confirmations: 0 });
                }
                format!(
                    "it was signed by an earlier run, nothing of ours is pending, and the next open takes nonce {confirmed}"
                )
            }
        };
        let mut held = self.held.lock().expect("held lock");
        held.settle(tx_hash);
        held.ended.insert(tx_hash);
        drop(held);
        bump(&self.counters.opens_dropped);
        log::info!(
            "channel open {tx_hash:#x} dropped: on no chain and in no pool for {}s (chain.dropped_grace_seconds {}s); {how}",
            unseen_for.as_secs(),
            self.dropped_grace.as_secs()
        );
        Ok(ChannelStatus::Dropped)
    }

    /// The account's confirmed transaction count: the lowest nonce not in a block.
    async fn confirmed_nonce(&self) -> Result<u64, Fault> {
        self.rpc(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(self.address()).latest(),
        )
        .await
    }

    /// Opens a channel to `payee` with `deposit` if the auto-open policy allows it. The
    /// total cap is checked and the deposit reserved before the first RPC, and each
    /// request's check counts every other request's reservation until that one is signed
    /// (then its signed open counts instead), so requests arriving together can never all
    /// pass the check; the reservation is released on every way out that signs nothing.
    /// The cap's reading of the chain and the open's preparation run side by side, outside
    /// the signing lock. An RPC fault in the check is returned; one in preparing or signing
    /// is `Failed`.
    async fn auto_open(&self, payee: Address, deposit: U256) -> Result<AutoOpen, Fault> {
        let Some((per_channel, total)) = self.policy.auto_open else {
            return Ok(AutoOpen::Refused(
                "auto-open is off (chain.auto_open.enabled)".into(),
            ));
        };
        if deposit > per_channel {
            bump(&self.counters.auto_open_refused_per_channel_cap);
            return Ok(AutoOpen::Refused(format!(
                "{deposit} wei exceeds the per-channel cap {per_channel} (chain.auto_open.per_channel_cap_wei)"
            )));
        }
        let reservation = {
            let mut held = self.held.lock().expect("held lock");
            let committed = held.auto_committed();
            if committed + deposit > total {
                drop(held);
                bump(&self.counters.auto_open_refused_total_cap);
                return Ok(AutoOpen::Refused(format!(
                    "opening {committed} + {deposit} wei would exceed the total cap {total} (chain.auto_open.total_cap_wei)"
                )));
            }
            let id = held.next_reservation;
            held.next_reservation += 1;
            held.reserved.insert(id, deposit);
            Reservation {
                held: &self.held,
                id,
                committed: false,
            }
        };
        let (locked, unsigned) = tokio::join!(
            self.view(
                PaymentChannels::lockedByCall {
                    payer: self.address(),
                },
                BlockId::latest(),
            ),
            self.prepare_open(payee, deposit)
        );
        let locked = locked?;
        let others = self
            .held
            .lock()
            .expect("held lock")
            .auto_committed()
            .saturating_sub(deposit);
        if locked + others + deposit > total {
            drop(reservation);
            bump(&self.counters.auto_open_refused_total_cap);
            return Ok(AutoOpen::Refused(format!(
                "locked {locked} + opening {others} + {deposit} wei would exceed the total cap {total} (chain.auto_open.total_cap_wei)"
            )));
        }
        let signed = async {
            let unsigned = unsigned?;
            let signing = self.sign_lock.lock().await;
            let pending_nonce = self.pending_nonce().await?;
            self.sign_locked(&signing, unsigned, pending_nonce, true, Some(reservation))
                .await
        };
        Ok(match signed.await {
            Ok(plan) => AutoOpen::Signed(plan),
            Err(fault) => AutoOpen::Failed(fault),
        })
    }

    fn parse_hash(tx_hash: &str) -> Result<B256, Fault> {
        tx_hash
            .parse::<B256>()
            .map_err(|e| Fault::Permanent(format!("`{tx_hash}` is not a transaction hash: {e}")))
    }
}

#[async_trait]
impl ChannelPort for EvmChannels {
    async fn find_channel(&self, peer: &PeerTarget) -> Result<Option<String>, Fault> {
        let payee = Self::payee_of(peer)?;
        Ok(self.usable_channel(payee).await?.map(|c| hex_id(c.id)))
    }

    async fn request_channel(&self, peer: &PeerTarget) -> Result<ChannelRequest, Fault> {
        let payee = Self::payee_of(peer)?;
        let deposit = self.policy.deposit;
        let outcome = if peer.followed {
            self.auto_open(payee, deposit).await?
        } else {
            AutoOpen::Refused("the peer is not followed".into())
        };
        match outcome {
            AutoOpen::Signed(plan) => {
                log::info!(
                    "auto-open: channel to peer {} ({payee}), {deposit} wei",
                    peer.nostr_pubkey
                );
                Ok(ChannelRequest::Opened {
                    tx_hash: format!("{:#x}", plan.tx_hash),
                })
            }
            // E.g. not enough funds for the deposit: the operator decides; the peer
            // waits in channel_needed and the policy is tried again at the re-check.
            AutoOpen::Failed(fault) => {
                log::warn!(
                    "peer {} needs a payment channel to {payee}; auto-open failed ({}). Open one with: btp-nips-node open-channel {} [--deposit WEI]",
                    peer.nostr_pubkey,
                    fault.reason(),
                    peer.nostr_pubkey
                );
                Ok(ChannelRequest::AwaitingOperator)
            }
            AutoOpen::Refused(why) => {
                log::warn!(
                    "peer {} needs a payment channel to {payee} and none is usable; not opened automatically ({why}). Open one with: btp-nips-node open-channel {} [--deposit WEI]",
                    peer.nostr_pubkey,
                    peer.nostr_pubkey
                );
                *self.last_refusal.lock().expect("refusal lock") = Some(why);
                Ok(ChannelRequest::AwaitingOperator)
            }
        }
    }

    async fn open_channel(
        &self,
        peer: &PeerTarget,
        deposit_wei: Option<u128>,
    ) -> Result<String, Fault> {
        let payee = Self::payee_of(peer)?;
        let deposit = deposit_wei.map_or(self.policy.deposit, U256::from);
        let plan = self.sign_open(payee, deposit, false).await?;
        Ok(format!("{:#x}", plan.tx_hash))
    }

    async fn broadcast_open(&self, tx_hash: &str) -> Result<(), Fault> {
        self.broadcast(Self::parse_hash(tx_hash)?).await
    }

    async fn channel_status(&self, tx_hash: &str) -> Result<ChannelStatus, Fault> {
        self.status(Self::parse_hash(tx_hash)?).await
    }

    fn confirmations_required(&self) -> u64 {
        self.confirmations
    }

    async fn channel_policy(&self) -> Option<ChannelPolicyStatus> {
        Some(self.policy_status().await)
    }

    async fn abandon_open(&self, tx_hash: &str, reason: &str) {
        if let Ok(hash) = Self::parse_hash(tx_hash) {
            self.abandon(hash, reason);
        }
    }
}
