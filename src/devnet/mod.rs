//! `btp-nips-node devnet`: a whole network on one machine, in one process.
//!
//! An embedded Nostr relay for discovery and one per node as its operator relay
//! ([`relays`]); anvil as a child process with the contract deployed and every node funded
//! ([`chain`]); N nodes built with [`crate::node::NodeBuilder`], each with its own keys,
//! SQLite file, BTP and admin listeners on fixed loopback ports, following every other
//! node, its operator relay seeded with a few notes ([`nodes`]). It prints a table and then
//! one line per state change across the network ([`output`]) until SIGINT or SIGTERM,
//! which stops every node (`Node::shutdown`), the relays (their events written to DIR) and
//! anvil (its state written to DIR). A second `devnet` on the same DIR resumes it: the same
//! keys, databases, relays' events and chain, so no channel is opened again
//! ([`layout`] describes DIR). `--scenario churn` restarts nodes and flips follows on a
//! timer ([`churn`]).

pub mod chain;
pub mod churn;
pub mod layout;
pub mod nodes;
pub mod output;
pub mod relays;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nostr::{Keys, Timestamp};

use crate::signals::Signals;
use chain::DevChain;
use layout::{ChainEntry, Layout};
use nodes::{ChainConfig, DevNode};
use relays::EmbeddedRelay;

/// Fewest and most nodes a devnet runs.
pub const MIN_NODES: usize = 2;
pub const MAX_NODES: usize = 50;

/// Which chain the devnet runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainMode {
    /// anvil if it is found, else none (said which at the start).
    Auto,
    /// anvil, or an error naming where it was looked for.
    Anvil,
    /// No chain: peers connect without payment channels.
    Off,
}

impl ChainMode {
    pub fn parse(text: &str) -> Result<ChainMode, String> {
        match text {
            "auto" => Ok(ChainMode::Auto),
            "anvil" => Ok(ChainMode::Anvil),
            "off" => Ok(ChainMode::Off),
            other => Err(format!("`{other}` is not a chain mode: auto, anvil or off")),
        }
    }
}

/// What `devnet` is asked to do.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// `None`: as many as DIR holds (3 for a new one).
    pub nodes: Option<usize>,
    pub chain: ChainMode,
    pub dir: PathBuf,
    /// `Some(period)`: the churn scenario, one disruption every period.
    pub churn: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("relay: {0}")]
    Relay(String),
    #[error("chain: {0}")]
    Chain(String),
    #[error("keys: {0}")]
    Keys(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("node {0}: {1}")]
    Node(String, String),
}

impl DevnetError {
    pub fn io(what: String, source: std::io::Error) -> DevnetError {
        DevnetError::Io { what, source }
    }
}

/// Runs a devnet until SIGINT or SIGTERM (in an actix system of its own, on this thread:
/// anvil ends with the thread that started it).
pub fn run(options: DevnetOptions) -> Result<(), DevnetError> {
    if let Some(n) = options.nodes {
        if !(MIN_NODES..=MAX_NODES).contains(&n) {
            return Err(DevnetError::Usage(format!(
                "--nodes {n}: a devnet has {MIN_NODES} to {MAX_NODES} nodes"
            )));
        }
    }
    let system = actix::System::new();
    system.block_on(async move {
        let mut signals = Signals::install()
            .map_err(|e| DevnetError::io("installing the signal handlers".into(), e))?;
        let started = Instant::now();
        let mut devnet = Devnet::start(&options, started).await?;
        match options.churn {
            None => {
                signals.wait().await;
            }
            Some(period) => {
                tokio::select! {
                    _ = signals.wait() => {}
                    result = churn::run(&mut devnet, period) => result?,
                }
            }
        }
        println!("stopping: the nodes (every change flushed), the relays, the chain");
        devnet.stop().await
    })
}

/// A running devnet.
pub struct Devnet {
    layout: Layout,
    file: layout::DevnetFile,
    pub nodes: Vec<DevNode>,
    pub discovery: EmbeddedRelay,
    pub relays: Vec<EmbeddedRelay>,
    pub chain: Option<DevChain>,
    /// Where the nodes' state changes go to be printed.
    printer: tokio::sync::mpsc::UnboundedSender<output::Change>,
    /// The created_at of the newest follow list published (each new one is later).
    last_follow_list: Timestamp,
}

impl Devnet {
    async fn start(options: &DevnetOptions, started: Instant) -> Result<Devnet, DevnetError> {
        let layout = Layout::open(&options.dir)?;
        let (mut file, resumed) = layout.plan(options.nodes)?;
        println!(
            "devnet: {} nodes in {} ({})",
            file.nodes.len(),
            layout.dir.display(),
            if resumed {
                "resumed: same keys, databases, relays and chain"
            } else {
                "new"
            }
        );

        let chain = start_chain(options.chain, &layout, &mut file).await?;
        let discovery = EmbeddedRelay::start(
            "discovery",
            file.discovery_relay_port,
            &layout.discovery_relay_file(),
        )
        .await?;
        let chain_config = chain.as_ref().map(|c| ChainConfig {
            rpc_url: c.url.clone(),
            contract: c.contract.to_string(),
        });
        let peers = file.nodes.len() - 1;
        let mut nodes = Vec::new();
        for entry in file.nodes.clone() {
            nodes.push(DevNode::prepare(
                &layout,
                entry,
                &discovery.url(),
                chain_config.as_ref(),
                peers,
            )?);
        }
        file.nodes = nodes.iter().map(|n| n.entry.clone()).collect();
        file.pid = std::process::id();
        if let Some(chain) = &chain {
            let addresses: Vec<_> = nodes.iter().map(|n| n.evm.address()).collect();
            let funded = chain.fund(&addresses).await?;
            if funded > 0 {
                println!("chain: funded {funded} node(s) with 100 ETH from anvil's dev account");
            }
        }

        // Operator relays, seeded with each node's notes the first time.
        let mut relays = Vec::new();
        for node in &nodes {
            let file = node.dir.join("relay.jsonl");
            let relay =
                EmbeddedRelay::start(&node.entry.name, node.entry.relay_port, &file).await?;
            if !relay.resumed {
                for note in node.seed_notes() {
                    relay.publish(note).await?;
                }
            }
            relays.push(relay);
        }

        let (printer, changes) = tokio::sync::mpsc::unbounded_channel();
        let names: HashMap<String, String> = nodes
            .iter()
            .map(|n| (n.entry.pubkey.clone(), n.entry.name.clone()))
            .collect();
        let links = nodes.len() * (nodes.len() - 1);
        let channels = chain.is_some();
        let mut devnet = Devnet {
            layout,
            file,
            nodes,
            discovery,
            relays,
            chain,
            printer,
            last_follow_list: Timestamp::from(0),
        };
        // Every node follows every other (published before the nodes start, so each finds
        // its list at its first look).
        for i in 0..devnet.nodes.len() {
            let all: Vec<usize> = (0..devnet.nodes.len()).filter(|&j| j != i).collect();
            devnet.publish_follows(i, &all).await?;
        }
        for i in 0..devnet.nodes.len() {
            devnet.start_node(i).await?;
        }
        devnet.save()?;
        output::print_table(&devnet.nodes, &devnet.layout.dir);
        // The changes so far waited in the channel: they are printed under the table.
        actix::spawn(output::print_changes(
            changes, names, links, channels, started,
        ));
        Ok(devnet)
    }

    /// Starts node `i` and prints its changes.
    pub async fn start_node(&mut self, i: usize) -> Result<(), DevnetError> {
        let node = self.nodes[i].start().await?;
        output::forward(
            self.nodes[i].entry.name.clone(),
            &node,
            self.printer.clone(),
        );
        Ok(())
    }

    /// Publishes node `i`'s follow list naming the nodes `follows`.
    pub async fn publish_follows(
        &mut self,
        i: usize,
        follows: &[usize],
    ) -> Result<(), DevnetError> {
        // Replaceable events are told apart by created_at (whole seconds): each list is
        // dated after the one before, so the newest always wins.
        let at = Timestamp::now().max(self.last_follow_list + 1u64);
        self.last_follow_list = at;
        let keys: Vec<&Keys> = follows.iter().map(|&j| &self.nodes[j].keys).collect();
        let list = self.nodes[i].follow_list(&keys, at);
        self.discovery.publish(list).await
    }

    fn save(&self) -> Result<(), DevnetError> {
        self.layout.save(&self.file)
    }

    /// Stops every node, then the relays and the chain; reports the first error after
    /// trying them all.
    async fn stop(mut self) -> Result<(), DevnetError> {
        let mut first_error = None;
        let relay_count = self.relays.len() + 1;
        let stops = futures::future::join_all(self.nodes.iter_mut().map(|n| n.stop())).await;
        for result in stops {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        let mut stored = 0;
        for relay in std::iter::once(self.discovery).chain(self.relays) {
            match relay.stop().await {
                Ok(n) => stored += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let chain_line = match self.chain.take() {
            Some(chain) => {
                let pid = chain.pid();
                match chain.stop().await {
                    Ok(()) => format!(", anvil (pid {pid}) stopped with its state saved"),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        String::new()
                    }
                }
            }
            None => String::new(),
        };
        self.file.pid = 0;
        if let Some(chain) = &mut self.file.chain {
            chain.anvil_pid = 0;
        }
        if let Err(e) = self.layout.save(&self.file) {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                println!(
                    "stopped: {} nodes, {} relays ({stored} events kept){chain_line}; \
                     `devnet --dir {}` resumes it",
                    self.nodes.len(),
                    relay_count,
                    self.layout.dir.display()
                );
                Ok(())
            }
        }
    }
}

/// Starts the chain the mode asks for (recording it in `file`), or none.
async fn start_chain(
    mode: ChainMode,
    layout: &Layout,
    file: &mut layout::DevnetFile,
) -> Result<Option<DevChain>, DevnetError> {
    let bin = match (mode, crate::chain::anvil::find_anvil()) {
        (ChainMode::Off, _) => {
            println!("chain: off (--chain off): peers connect without payment channels");
            return Ok(None);
        }
        (ChainMode::Auto, Err(why)) => {
            println!("chain: off ({why}): peers connect without payment channels");
            return Ok(None);
        }
        (ChainMode::Anvil, Err(why)) => return Err(DevnetError::Chain(why)),
        (_, Ok(bin)) => bin,
    };
    let (port, stored) = match &file.chain {
        Some(c) => (c.anvil_port, c.contract.clone()),
        None => (layout::free_ports(1)?[0], None),
    };
    let chain = DevChain::start(
        &bin,
        port,
        Some(&layout.anvil_state()),
        stored.as_deref(),
        &|line| println!("{line}"),
    )
    .await?;
    println!(
        "chain: anvil {} (pid {}, {}), PaymentChannels at {}, a block every {}s, {} confirmations",
        chain.url,
        chain.pid(),
        bin.display(),
        chain.contract,
        chain::BLOCK_TIME_SECONDS,
        chain::CONFIRMATIONS
    );
    file.chain = Some(ChainEntry {
        anvil_port: port,
        contract: Some(chain.contract.to_string()),
        anvil_pid: chain.pid(),
    });
    Ok(Some(chain))
}
