//! The devnet's nodes: each one's keys (made at the first start, kept under DIR), its
//! configuration (written to `DIR/<name>/node.yaml`, so the CLI reaches it with
//! `--config`), its follow list and seeded notes, and the node itself, built with
//! [`NodeBuilder`] like any other.

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;
use nostr::nips::nip19::ToBech32;
use nostr::{EventBuilder, Keys, Kind, Tag, Timestamp};

use super::layout::{write_private, Layout, NodeEntry};
use super::DevnetError;
use crate::chain::adapter::parse_key;
use crate::config::Settings;
use crate::discovery::identity;
use crate::node::{Node, NodeBuilder};

/// Notes each operator relay is seeded with at the first start.
pub const SEEDED_NOTES: usize = 3;

/// The chain a node is configured for.
pub struct ChainConfig {
    pub rpc_url: String,
    pub contract: String,
}

/// One devnet node: what it is and, while it runs, the node.
pub struct DevNode {
    pub entry: NodeEntry,
    pub keys: Keys,
    pub evm: PrivateKeySigner,
    pub dir: PathBuf,
    pub settings: Settings,
    /// `None` while stopped (the churn scenario restarts nodes).
    pub node: Option<Node>,
}

impl DevNode {
    /// The node's keys (made if absent) and configuration (rewritten each start, since the
    /// chain may differ); `discovery` is the discovery relay's URL.
    pub fn prepare(
        layout: &Layout,
        mut entry: NodeEntry,
        discovery: &str,
        chain: Option<&ChainConfig>,
        peers: usize,
    ) -> Result<DevNode, DevnetError> {
        let dir = layout.node_dir(&entry.name)?;
        let key_file = dir.join("node.nsec");
        let keys = if key_file.exists() {
            identity::load_file(&key_file)
        } else {
            identity::keygen(&key_file)
        }
        .map_err(|e| DevnetError::Keys(e.to_string()))?;
        let evm = evm_key(&dir.join("evm.key"))?;
        entry.pubkey = keys.public_key().to_hex();
        entry.npub = keys.public_key().to_bech32().unwrap_or_default();
        entry.evm_address = evm.address().to_string();

        let yaml = node_yaml(&entry, &dir, discovery, chain, peers);
        let config_file = dir.join("node.yaml");
        std::fs::write(&config_file, &yaml)
            .map_err(|e| DevnetError::io(format!("writing {}", config_file.display()), e))?;
        let settings = Settings::load(Some(&config_file))
            .map_err(|e| DevnetError::Config(format!("{}: {e}", config_file.display())))?;
        Ok(DevNode {
            entry,
            keys,
            evm,
            dir,
            settings,
            node: None,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("node.yaml")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("admin-token")
    }

    pub fn read_token_file(&self) -> PathBuf {
        self.dir.join("read-token")
    }

    /// Starts the node (its listeners on its fixed ports).
    pub async fn start(&mut self) -> Result<Node, DevnetError> {
        let node = NodeBuilder::new(self.settings.clone())
            .keys(self.keys.clone())
            .start()
            .await
            .map_err(|e| DevnetError::Node(self.entry.name.clone(), e.to_string()))?;
        self.node = Some(node.clone());
        Ok(node)
    }

    /// Stops the node, if it runs (every change on disk when it returns).
    pub async fn stop(&mut self) -> Result<(), DevnetError> {
        if let Some(node) = self.node.take() {
            node.shutdown()
                .await
                .map_err(|e| DevnetError::Node(self.entry.name.clone(), e.to_string()))?;
        }
        Ok(())
    }

    /// The node's follow list (its operator is its own key): `follows`, at `at`.
    pub fn follow_list(&self, follows: &[&Keys], at: Timestamp) -> nostr::Event {
        EventBuilder::new(Kind::ContactList, "")
            .tags(follows.iter().map(|k| Tag::public_key(k.public_key())))
            .custom_created_at(at)
            .sign_with_keys(&self.keys)
            .expect("a follow list signs")
    }

    /// The notes its operator relay starts with: its own, which the peers' REQs ask for.
    pub fn seed_notes(&self) -> Vec<nostr::Event> {
        (1..=SEEDED_NOTES)
            .map(|i| {
                EventBuilder::text_note(format!(
                    "note {i} of {SEEDED_NOTES} from {} on the btp-nips devnet",
                    self.entry.name
                ))
                .sign_with_keys(&self.keys)
                .expect("a note signs")
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The EVM key held in `path` (hex, mode 0600), made there first if the file is absent.
pub fn evm_key(path: &Path) -> Result<PrivateKeySigner, DevnetError> {
    if !path.exists() {
        let key = PrivateKeySigner::random();
        write_private(path, &format!("0x{}\n", hex(&key.to_bytes()[..])))?;
    }
    let text = crate::key_file::read_private(path).map_err(|e| DevnetError::Keys(e.to_string()))?;
    parse_key("an EVM key file", &text)
        .map_err(|e| DevnetError::Keys(format!("{}: {e}", path.display())))
}

/// What a devnet channel deposits: 0.01 ETH.
pub const DEPOSIT_WEI: u128 = 10_000_000_000_000_000;

/// A node's `chain` section: off without a chain; with one, paying from the key in
/// `key_file`, `chain::CONFIRMATIONS` confirmations, and channels of `deposit` wei opened
/// on their own to every followed peer, the caps sized for `peers` of them.
pub fn chain_yaml(
    chain: Option<&ChainConfig>,
    key_file: &Path,
    deposit: u128,
    peers: usize,
) -> String {
    match chain {
        None => "chain:\n  enabled: false\n".to_string(),
        Some(c) => format!(
            "chain:\n  enabled: true\n  rpc_url: \"{rpc}\"\n  chain_id: {id}\n  \
             contract_address: \"{contract}\"\n  key_file: \"{key}\"\n  confirmations: {conf}\n  \
             deposit_wei: \"{deposit}\"\n  min_balance_wei: \"{min}\"\n  auto_open:\n    \
             enabled: true\n    per_channel_cap_wei: \"{deposit}\"\n    total_cap_wei: \"{total}\"\n",
            rpc = c.rpc_url,
            id = crate::chain::anvil::ANVIL_CHAIN_ID,
            contract = c.contract,
            key = key_file.display(),
            conf = super::chain::CONFIRMATIONS,
            min = deposit / 10,
            // Room for a second channel to every peer (one may be replaced when spent).
            total = deposit * 2 * peers.max(1) as u128,
        ),
    }
}

/// A devnet node's configuration: loopback everything, paths under its directory, short
/// timings so a change shows within seconds, and with a chain, channels opened on their own
/// to every followed peer (caps sized for `peers`).
fn node_yaml(
    entry: &NodeEntry,
    dir: &Path,
    discovery: &str,
    chain: Option<&ChainConfig>,
    peers: usize,
) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let chain_yaml = chain_yaml(chain, &dir.join("evm.key"), DEPOSIT_WEI, peers);
    format!(
        r#"# Written by `btp-nips-node devnet` at each start (edits are overwritten).
node:
  id: "{name}"
  key_file: "{nsec}"
  public_endpoint: "{endpoint}"
database:
  url: "sqlite://{db}"
session:
  listen: "127.0.0.1:{btp}"
admin:
  listen: "127.0.0.1:{admin}"
  token_file: "{token}"
  read_token_file: "{read_token}"
nostr:
  relays: ["{discovery}"]
  allow_ws_loopback: true
  connect_timeout_ms: 1000
  retry_interval_ms: 1000
  not_found_cache_seconds: 2
  announce:
    base_address: "{evm}"
    operator_name: "{name}"
    description: "a btp-nips-node devnet node"
events:
  operator_relay: "{relay}"
btp_nips:
  peer_connections:
    heartbeat_interval_seconds: 5
    heartbeat_timeout_seconds: 2
    reconnect_initial_delay_ms: 250
    reconnect_max_delay_ms: 5000
    discovery_retry_seconds: 2
    channel_poll_interval_seconds: 1
    channel_recheck_seconds: 5
    startup_dial_interval_ms: 20
{chain_yaml}"#,
        name = entry.name,
        nsec = path("node.nsec"),
        endpoint = entry.btp_endpoint(),
        db = path("node.db"),
        btp = entry.btp_port,
        admin = entry.admin_port,
        token = path("admin-token"),
        read_token = path("read-token"),
        evm = entry.evm_address,
        relay = entry.relay_url(),
    )
}
