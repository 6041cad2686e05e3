//! Setting a node up: `init` writes a key and a short configuration holding only what an
//! operator must decide, and `config check` loads it and checks everything the node will
//! depend on (its key, relays, RPC endpoint, contract, operator relay), reporting every
//! problem at once with the effective configuration and where each value came from.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::{Filter, Keys, ToBech32};

use alloy::signers::local::PrivateKeySigner;

use crate::chain::adapter::{http_provider, load_key, parse_address};
use crate::chain::{ChannelPolicy, EvmChannels};
use crate::config::{ConfigError, EffectiveValue, Settings};
use crate::discovery::announcement::check_endpoint;
use crate::discovery::identity;
use crate::discovery::relays::{RelaySet, RelayTuning};

/// The key file and configuration file `init` writes.
pub const KEY_FILE_NAME: &str = "btp-nips-node.nsec";
pub const CONFIG_FILE_NAME: &str = "btp-nips-node.yaml";

/// How long `config check` waits for each relay and the RPC endpoint.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The chains `init` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Base,
    BaseSepolia,
    Local,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        match text {
            "base" => Ok(Network::Base),
            "base-sepolia" => Ok(Network::BaseSepolia),
            "local" => Ok(Network::Local),
            other => Err(format!(
                "`{other}` is not a network: base, base-sepolia or local"
            )),
        }
    }

    fn chain_id(self) -> u64 {
        match self {
            Network::Base => 8453,
            Network::BaseSepolia => 84532,
            Network::Local => 31337,
        }
    }

    fn rpc_url(self) -> &'static str {
        match self {
            Network::Base => "https://mainnet.base.org",
            Network::BaseSepolia => "https://sepolia.base.org",
            Network::Local => "http://127.0.0.1:8545",
        }
    }

    /// The deployed PaymentChannels contract, where one is known (none is yet: the
    /// operator deploys it with `deploy-contract`).
    fn contract_address(self) -> Option<&'static str> {
        None
    }
}

/// What `init` wrote.
#[derive(Debug)]
pub struct Initialized {
    pub key_file: PathBuf,
    pub config_file: PathBuf,
    pub keys: Keys,
}

impl Initialized {
    /// What to run next: edit, check, run.
    pub fn next_commands(&self) -> [String; 3] {
        let config = self.config_file.display();
        [
            format!("${{EDITOR:-vi}} {config}"),
            format!("btp-nips-node config check --config {config}"),
            format!("btp-nips-node run --config {config}"),
        ]
    }
}

/// Writes a new node key (mode 0600) and a configuration naming it into `dir`; refuses,
/// writing nothing, if either file exists.
pub fn init(dir: &Path, network: Network) -> Result<Initialized, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let key_file = dir.join(KEY_FILE_NAME);
    let config_file = dir.join(CONFIG_FILE_NAME);
    for path in [&key_file, &config_file] {
        if path.exists() {
            return Err(format!(
                "{} already exists; init never overwrites (move it away to start over)",
                path.display()
            ));
        }
    }
    let keys = identity::keygen(&key_file).map_err(|e| e.to_string())?;
    let text = config_text(&key_file, network);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&config_file)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        return Err(format!("{}: {e}", config_file.display()));
    }
    Ok(Initialized {
        key_file,
        config_file,
        keys,
    })
}

/// The configuration `init` writes: only what an operator must decide, commented; every
/// other key keeps its default (config/default.yaml).
fn config_text(key_file: &Path, network: Network) -> String {
    let contract = network.contract_address().unwrap_or("");
    let contract_note = match network.contract_address() {
        Some(_) => "the PaymentChannels contract deployed on this chain",
        None => {
            "no deployment is known here: `btp-nips-node deploy-contract --config THIS_FILE` \
             prints one"
        }
    };
    let local = network == Network::Local;
    format!(
        r#"# btp-nips-node: what this operator decides. Every other key keeps its default
# (config/default.yaml); `btp-nips-node config check --config THIS_FILE` shows them all.

node:
  # The node's identity (written by init, mode 0600). BTP_NIPS_NODE_NSEC overrides it.
  key_file: "{key_file}"
  # The endpoint peers dial, wss://… (a TLS proxy in front of session.listen). Announced
  # on Nostr and bound into the peers' auth tokens. Empty: local use only, not announced.
  public_endpoint: ""

session:
  # Where the BTP server listens; the proxy behind public_endpoint forwards here.
  listen: "127.0.0.1:7700"

nostr:
  # Relays to find peers on (wss://…). Empty: discovery is off; this node finds no one.
  relays: []
  # Whose follow list (kind 3) to connect to: your npub. Empty: this node's own key.
  operator_pubkey: ""
  # ws:// relays and endpoints on this machine (a local test setup).
  allow_ws_loopback: {local}
  announce:
    # This node's EVM settlement address (0x + 40 hex), announced with public_endpoint.
    base_address: ""

events:
  # Your own relay, ws(s)://…: where events from peers are published and served from.
  operator_relay: ""

chain:
  # Payment channels on chain {chain_id}. Off: peers are connected without channels.
  enabled: false
  rpc_url: "{rpc_url}"
  chain_id: {chain_id}
  # {contract_note}.
  contract_address: "{contract}"
  # The node's EVM key: a file holding it (hex, mode 0600) or the variable holding it.
  key_file: ""
  key_env: ""
"#,
        key_file = key_file.display(),
        chain_id = network.chain_id(),
        rpc_url = network.rpc_url(),
    )
}

/// What `config check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The effective configuration (secrets redacted), with each value's source.
    pub effective: Vec<EffectiveValue>,
    /// What was checked and found right.
    pub passed: Vec<String>,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// Loads `file` (and the environment) and checks everything: every rule, the node's key
/// and its permissions, the relays and the operator's relay answering a REQ, the RPC
/// endpoint serving the configured chain and the contract deployed there.
pub async fn check(file: Option<&Path>) -> CheckReport {
    let mut report = CheckReport::default();
    let settings = match Settings::load_unvalidated(file) {
        Ok(settings) => settings,
        Err(e) => {
            report.problems.extend(problems(&e));
            return report;
        }
    };
    match Settings::effective(file) {
        Ok(effective) => report.effective = effective,
        Err(e) => report.problems.extend(problems(&e)),
    }
    if let Err(e) = settings.validate() {
        report.problems.extend(problems(&e));
    }

    match identity::load_node_key(&settings) {
        Ok((keys, source)) => report.passed.push(format!(
            "node key: {} ({}) from {source}",
            keys.public_key().to_bech32().unwrap_or_default(),
            keys.public_key().to_hex()
        )),
        Err(e) => report.problems.push(e.to_string()),
    }

    // Relays whose URL broke a rule are already reported; the others are asked.
    let allow_ws = settings.nostr.allow_ws_loopback;
    let relays: Vec<(&'static str, String)> = settings
        .nostr
        .relays
        .iter()
        .map(|url| ("nostr.relays", url.clone()))
        .chain(
            Some(settings.events.operator_relay.trim())
                .filter(|url| !url.is_empty())
                .map(|url| ("events.operator_relay", url.to_string())),
        )
        .filter(|(_, url)| check_endpoint(url, allow_ws).is_ok())
        .collect();
    if !relays.is_empty() {
        check_relays(&relays, &mut report).await;
    }

    if settings.chain.enabled {
        check_chain(&settings, &mut report).await;
    }
    report
}

fn problems(e: &ConfigError) -> Vec<String> {
    e.problems().iter().map(|p| p.to_string()).collect()
}

/// Each relay must answer a REQ (EOSE) within [`CHECK_TIMEOUT`].
async fn check_relays(relays: &[(&'static str, String)], report: &mut CheckReport) {
    let tuning = RelayTuning {
        query_timeout: CHECK_TIMEOUT,
        // Connecting was already waited for, once for all relays.
        connect_timeout: Duration::from_millis(500),
        retry_interval: Duration::from_secs(1),
        notification_capacity: 1024,
    };
    let urls: Vec<String> = relays.iter().map(|(_, url)| url.clone()).collect();
    let set = match RelaySet::connect(Keys::generate(), &urls, tuning).await {
        Ok(set) => set,
        Err(e) => {
            report.problems.push(format!("relays: {e}"));
            return;
        }
    };
    set.wait_connected(CHECK_TIMEOUT).await;
    let answers = set.query(Filter::new().limit(1)).await;
    for (key, url) in relays {
        let answer = answers
            .iter()
            .find(|a| a.url.as_str().trim_end_matches('/') == url.trim_end_matches('/'));
        match answer {
            Some(a) if a.answered => report.passed.push(format!("{key}: {url} answers")),
            Some(a) => report.problems.push(format!(
                "{key}: {url} does not answer: {}",
                a.problem.as_deref().unwrap_or("no EOSE")
            )),
            None => report
                .problems
                .push(format!("{key}: {url} does not answer")),
        }
    }
    set.shutdown().await;
}

/// The EVM key readable (a key file only by its owner), the RPC endpoint serving the
/// configured chain, and PaymentChannels deployed at the configured address.
async fn check_chain(settings: &Settings, report: &mut CheckReport) {
    let chain = &settings.chain;
    // A missing key, or a key file others can read, is one problem; the endpoint and
    // contract are still checked.
    let signer = match load_key(chain) {
        Ok(signer) => {
            report
                .passed
                .push(format!("chain key: pays from {}", signer.address()));
            signer
        }
        Err(e) => {
            report.problems.push(format!("chain: {e}"));
            PrivateKeySigner::random()
        }
    };
    // An address that broke its rule is already reported.
    let Ok(contract) = parse_address("chain.contract_address", &chain.contract_address) else {
        return;
    };
    let provider = match http_provider(&chain.rpc_url) {
        Ok(provider) => provider,
        Err(e) => {
            report.problems.push(format!("chain: {e}"));
            return;
        }
    };
    let adapter = EvmChannels::new(
        provider,
        signer,
        chain.chain_id,
        contract,
        chain.confirmations,
        chain.rpc_timeout.min(CHECK_TIMEOUT),
        ChannelPolicy::from_settings(chain),
    );
    match tokio::time::timeout(CHECK_TIMEOUT * 2, adapter.check_endpoint(&chain.rpc_url)).await {
        Ok(Ok(())) => report.passed.push(format!(
            "chain: {} serves chain {} with PaymentChannels at {contract}",
            chain.rpc_url, chain.chain_id
        )),
        Ok(Err(e)) => report.problems.push(format!("chain: {e}")),
        Err(_) => report.problems.push(format!(
            "chain: {} did not answer within {:?}",
            chain.rpc_url,
            CHECK_TIMEOUT * 2
        )),
    }
}
