//! What a devnet keeps under DIR, and `DIR/devnet.json`, the file that ties it together.
//!
//! ```text
//! DIR/devnet.json            ports, names, the contract; what is running (rewritten each start)
//! DIR/discovery-relay.jsonl  the discovery relay's events
//! DIR/anvil-state.json       the chain (anvil --state)
//! DIR/<name>/node.nsec       the node's Nostr key (0600)
//! DIR/<name>/evm.key         the node's EVM key (0600)
//! DIR/<name>/node.yaml       its configuration (`btp-nips-node --config DIR/<name>/node.yaml status`)
//! DIR/<name>/node.db         its SQLite database
//! DIR/<name>/admin-token, read-token   its admin API tokens (0600)
//! DIR/<name>/relay.jsonl     its operator relay's events
//! ```
//!
//! The ports are chosen once, at the first start, and kept: the peers' stored endpoints and
//! the relays' URLs in the nodes' databases stay right when the devnet is resumed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DevnetError;

pub const STATE_FILE: &str = "devnet.json";

/// The names nodes get, in order (then `node11`, `node12`, …).
const NAMES: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];

/// `DIR/devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetFile {
    /// The process id of the devnet running on DIR (0: none runs).
    #[serde(default)]
    pub pid: u32,
    pub discovery_relay_port: u16,
    pub nodes: Vec<NodeEntry>,
    /// The chain of the last start that had one.
    pub chain: Option<ChainEntry>,
}

/// One node: its ports (fixed) and what it is (rewritten each start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub btp_port: u16,
    pub admin_port: u16,
    pub relay_port: u16,
    #[serde(default)]
    pub pubkey: String,
    #[serde(default)]
    pub npub: String,
    #[serde(default)]
    pub evm_address: String,
}

impl NodeEntry {
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
    pub fn btp_endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}/btp", self.btp_port)
    }
    pub fn relay_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.relay_port)
    }
}

/// The chain: anvil's port, the contract on it, and the anvil process of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainEntry {
    pub anvil_port: u16,
    pub contract: Option<String>,
    /// The running anvil's process id (0 when none runs).
    #[serde(default)]
    pub anvil_pid: u32,
}

/// A devnet's directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Creates `dir` if needed (mode 0700: it holds keys).
    pub fn open(dir: &Path) -> Result<Layout, DevnetError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DevnetError::io(format!("creating {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| DevnetError::io(dir.display().to_string(), e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DevnetError::io(format!("chmod 0700 {}", dir.display()), e))?;
        Ok(Layout { dir })
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn discovery_relay_file(&self) -> PathBuf {
        self.dir.join("discovery-relay.jsonl")
    }

    pub fn anvil_state(&self) -> PathBuf {
        self.dir.join("anvil-state.json")
    }

    /// A node's directory (created, 0700).
    pub fn node_dir(&self, name: &str) -> Result<PathBuf, DevnetError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DevnetError::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// The stored file, if an earlier devnet left one.
    pub fn load(&self) -> Result<Option<DevnetFile>, DevnetError> {
        let path = self.state_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                DevnetError::Usage(format!(
                    "{} is not a devnet state file ({e}); use another --dir",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DevnetError::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn save(&self, file: &DevnetFile) -> Result<(), DevnetError> {
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(file).expect("the state serializes");
        std::fs::write(&tmp, text + "\n")
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| DevnetError::io(format!("writing {}", path.display()), e))
    }

    /// The plan for `nodes` nodes: the stored one, grown with new nodes if more are asked
    /// for; a new one (fresh ports) when there is none. Fewer nodes than stored is refused.
    pub fn plan(&self, nodes: Option<usize>) -> Result<(DevnetFile, bool), DevnetError> {
        let stored = self.load()?;
        let resumed = stored.is_some();
        let wanted = nodes.unwrap_or_else(|| stored.as_ref().map_or(3, |s| s.nodes.len()));
        let mut file = match stored {
            Some(file) => file,
            None => DevnetFile {
                pid: 0,
                discovery_relay_port: free_ports(1)?[0],
                nodes: Vec::new(),
                chain: None,
            },
        };
        if wanted < file.nodes.len() {
            return Err(DevnetError::Usage(format!(
                "{} holds a devnet of {} nodes; --nodes {wanted} would leave some out: give \
                 --nodes {} (or none) or use another --dir",
                self.dir.display(),
                file.nodes.len(),
                file.nodes.len()
            )));
        }
        let new = wanted - file.nodes.len();
        let mut ports = free_ports(new * 3)?.into_iter();
        for i in file.nodes.len()..wanted {
            let mut port = || ports.next().expect("three ports per node");
            file.nodes.push(NodeEntry {
                name: node_name(i),
                btp_port: port(),
                admin_port: port(),
                relay_port: port(),
                pubkey: String::new(),
                npub: String::new(),
                evm_address: String::new(),
            });
        }
        Ok((file, resumed))
    }
}

/// The name of the `i`th node (from 0).
pub fn node_name(i: usize) -> String {
    NAMES
        .get(i)
        .map_or_else(|| format!("node{}", i + 1), |n| n.to_string())
}

/// `n` distinct loopback ports nothing listened on when asked (all held at once, so none
/// repeats).
pub fn free_ports(n: usize) -> Result<Vec<u16>, DevnetError> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| DevnetError::io("finding free loopback ports".to_string(), e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| DevnetError::io("finding free loopback ports".to_string(), e))
}

/// Writes `text` to a new file `path` with mode 0600 (never overwriting).
pub fn write_private(path: &Path, text: &str) -> Result<(), DevnetError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|e| DevnetError::io(format!("writing {}", path.display()), e))
}
