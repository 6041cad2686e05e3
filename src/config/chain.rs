//! `chain`: the EVM chain that holds the payment channels (see `crate::chain`).

use std::time::Duration;

use serde::Deserialize;

use super::check::{Key, Problems};
use super::duration::seconds;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// Off: the node runs without a chain adapter (channel checks report a transient fault).
    pub enabled: bool,
    /// JSON-RPC endpoint, `http://` or `https://`.
    pub rpc_url: String,
    /// The chain the node signs for (Base 8453, Base Sepolia 84532, anvil 31337); checked
    /// against the endpoint at startup.
    pub chain_id: u64,
    /// The deployed `PaymentChannels` contract, `0x` + 40 hex digits.
    pub contract_address: String,
    /// Blocks on top of (and including) the open transaction's before it counts.
    pub confirmations: u64,
    /// Each RPC call gives up after this long (a transient fault).
    #[serde(rename = "rpc_timeout_seconds", deserialize_with = "seconds")]
    pub rpc_timeout: Duration,
    /// A file holding the node's EVM private key (hex); or empty, and `key_env` names it.
    pub key_file: String,
    /// An environment variable holding the node's EVM private key (hex).
    pub key_env: String,
    /// What a new channel deposits, in wei (decimal string; `open-channel --deposit` overrides).
    pub deposit_wei: String,
    /// How long a new channel runs before the payer may reclaim it.
    #[serde(rename = "channel_duration_seconds", deserialize_with = "seconds")]
    pub channel_duration: Duration,
    /// A channel is usable only with at least this much unclaimed deposit (wei) ...
    pub min_balance_wei: String,
    /// ... and at least this much time before its expiry.
    #[serde(rename = "min_time_left_seconds", deserialize_with = "seconds")]
    pub min_time_left: Duration,
    pub auto_open: AutoOpenSettings,
    /// A sent open the endpoint does not know (no receipt, not in its pool) is reported
    /// dropped only after this long; one such answer may be a lagging node.
    #[serde(rename = "dropped_grace_seconds", deserialize_with = "seconds")]
    pub dropped_grace: Duration,
}

/// `chain.auto_open`: open channels to followed peers without asking the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoOpenSettings {
    pub enabled: bool,
    /// No automatic channel deposits more than this (wei).
    pub per_channel_cap_wei: String,
    /// Automatic opens stop once the node's funds locked in open channels would exceed this.
    pub total_cap_wei: String,
}

/// An amount of wei written as a decimal string (it may not fit in a YAML integer).
fn parse_wei(key: Key, value: &str) -> Result<u128, ConfigError> {
    value.trim().parse::<u128>().map_err(|_| {
        key.invalid(format!(
            "`{value}` must be a whole number of wei (decimal digits)"
        ))
    })
}

/// A longer grace keeps a peer whose open really was dropped waiting for nothing.
const MAX_DROPPED_GRACE_SECONDS: u64 = 3600;

const DEPOSIT: Key = Key("chain.deposit_wei");
const MIN_BALANCE: Key = Key("chain.min_balance_wei");
const PER_CHANNEL_CAP: Key = Key("chain.auto_open.per_channel_cap_wei");
const TOTAL_CAP: Key = Key("chain.auto_open.total_cap_wei");

impl ChainSettings {
    /// `deposit_wei` as a number (validated at startup, so 0 only if never validated).
    pub fn deposit(&self) -> u128 {
        parse_wei(DEPOSIT, &self.deposit_wei).unwrap_or_default()
    }
    pub fn min_balance(&self) -> u128 {
        parse_wei(MIN_BALANCE, &self.min_balance_wei).unwrap_or_default()
    }
    pub fn per_channel_cap(&self) -> u128 {
        parse_wei(PER_CHANNEL_CAP, &self.auto_open.per_channel_cap_wei).unwrap_or_default()
    }
    pub fn total_cap(&self) -> u128 {
        parse_wei(TOTAL_CAP, &self.auto_open.total_cap_wei).unwrap_or_default()
    }

    /// Checks every `chain.*` rule; addresses, URL and key source only when enabled.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        let mut wei = |key: Key, value: &str| match parse_wei(key, value) {
            Ok(wei) => Some(wei),
            Err(e) => {
                p.add(Err(e));
                None
            }
        };
        let deposit = wei(DEPOSIT, &self.deposit_wei);
        let min_balance = wei(MIN_BALANCE, &self.min_balance_wei);
        let per_channel = wei(PER_CHANNEL_CAP, &self.auto_open.per_channel_cap_wei);
        let total = wei(TOTAL_CAP, &self.auto_open.total_cap_wei);
        if let Some(deposit) = deposit {
            p.add(DEPOSIT.ensure(deposit > 0, "must be more than 0"));
        }
        if let (Some(deposit), Some(min_balance)) = (deposit, min_balance) {
            p.add(MIN_BALANCE.ensure(
                min_balance <= deposit,
                format!("must not exceed chain.deposit_wei ({deposit})"),
            ));
        }
        if let (Some(per_channel), Some(total)) = (per_channel, total) {
            p.add(PER_CHANNEL_CAP.ensure(
                per_channel <= total,
                format!("must not exceed chain.auto_open.total_cap_wei ({total})"),
            ));
        }
        if let (Some(deposit), Some(per_channel)) = (deposit, per_channel) {
            p.add(DEPOSIT.ensure(
                !self.auto_open.enabled || deposit <= per_channel,
                format!(
                    "{deposit} exceeds chain.auto_open.per_channel_cap_wei ({per_channel}) while auto_open is enabled"
                ),
            ));
        }
        p.add(Key("chain.confirmations").between(self.confirmations, 1, 1000));
        p.add(Key("chain.rpc_timeout_seconds").nonzero(self.rpc_timeout));
        p.add(Key("chain.dropped_grace_seconds").between(
            self.dropped_grace.as_secs(),
            1,
            MAX_DROPPED_GRACE_SECONDS,
        ));
        p.add(Key("chain.channel_duration_seconds").ensure(
            self.channel_duration > self.min_time_left,
            format!(
                "must be longer than chain.min_time_left_seconds ({}), or a new channel is never usable",
                self.min_time_left.as_secs()
            ),
        ));
        if !self.enabled {
            return p.finish();
        }
        p.add(Key("chain.rpc_url").ensure(
            self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://"),
            format!("`{}` must start with http:// or https://", self.rpc_url),
        ));
        p.add(Key("chain.chain_id").ensure(self.chain_id > 0, "must be more than 0"));
        let address = self.contract_address.trim();
        p.add(Key("chain.contract_address").ensure(
            address.len() == 42
                && address.starts_with("0x")
                && address[2..].chars().all(|c| c.is_ascii_hexdigit()),
            format!("`{address}` must be 0x followed by 40 hex digits"),
        ));
        p.add(match (self.key_file.trim().is_empty(), self.key_env.trim().is_empty()) {
            (true, true) => Err(Key("chain.key_file").invalid(
                "the node's EVM key is needed: set chain.key_file (a file holding the hex key) or chain.key_env (the variable holding it)",
            )),
            (false, false) => Err(Key("chain.key_file")
                .invalid("set only one of chain.key_file and chain.key_env")),
            _ => Ok(()),
        });
        p.finish()
    }
}
