//! `btp-nips-node`: the node process and its operator commands.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use btp_nips_node::admin::cli::AdminCommand;
use btp_nips_node::chain::operator::{deploy_contract, open_channel};
use btp_nips_node::config::Settings;
use btp_nips_node::discovery::identity;
use btp_nips_node::node::NodeBuilder;
use btp_nips_node::setup::{self, Network};
use btp_nips_node::signals::Signals;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "btp-nips-node", version, about)]
struct Cli {
    /// Configuration file overriding config/default.yaml (environment variables
    /// BTP_NIPS_NODE__SECTION__KEY override both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// Run with a new throwaway identity instead of node.key_file (local trials:
        /// peers will not recognise the node after a restart).
        #[arg(long)]
        ephemeral: bool,
    },
    /// Write a node key (mode 0600) and a short btp-nips-node.yaml holding what an operator
    /// must decide; never overwrites.
    Init {
        /// Where to write them (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The chain whose id (and contract, where known) to write.
        #[arg(long, default_value = "base-sepolia", value_parser = Network::parse)]
        network: Network,
    },
    /// A whole network on this machine: embedded Nostr relays, anvil (if found), N nodes
    /// following each other; prints a table, then every state change, until Ctrl-C. A
    /// second run on the same --dir resumes it.
    #[cfg(feature = "devnet")]
    Devnet {
        /// How many nodes (2 to 50; default: as many as --dir holds, 3 for a new one).
        #[arg(long)]
        nodes: Option<usize>,
        /// auto: anvil if found (ANVIL_BIN, PATH, contracts/node_modules), else none;
        /// anvil: anvil or an error; off: no chain, peers connect without channels.
        #[arg(long, default_value = "auto", value_parser = btp_nips_node::devnet::ChainMode::parse)]
        chain: btp_nips_node::devnet::ChainMode,
        /// Where keys, databases, relays' events and the chain's state are kept.
        #[arg(long, default_value = "btp-nips-devnet")]
        dir: PathBuf,
        /// `churn`: restart a node or flip a follow every --churn-period, to watch recovery.
        #[arg(long, value_parser = ["churn"])]
        scenario: Option<String>,
        /// Seconds between the churn scenario's disruptions.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86400))]
        churn_period: u64,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Open a payment channel to a peer waiting in channel_needed, and wait for its
    /// confirmations; a running node picks it up at its next re-check of the chain.
    OpenChannel {
        /// The peer's Nostr pubkey (64 hex), as `peers` lists it.
        peer: String,
        /// Deposit in wei (default: chain.deposit_wei).
        #[arg(long, value_name = "WEI", value_parser = btp_nips_node::chain::parse_deposit_wei)]
        deposit: Option<u128>,
        /// Send even though an earlier transaction of ours is still pending.
        #[arg(long)]
        force: bool,
    },
    /// Deploy the PaymentChannels contract with the node's key; prints its address (works
    /// before chain.enabled is set: it needs chain.rpc_url, chain_id and the key).
    DeployContract,
    /// Write a new Nostr secret key for the node (mode 0600; never overwrites).
    Keygen {
        /// Where to write it (default: the configured node.key_file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The commands that reach the running node through its admin API.
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and check everything (key, relays, RPC, contract, operator relay, endpoint);
    /// print the effective configuration and each value's source; name every problem.
    Check,
}

fn main() -> ExitCode {
    // The node's own INFO lines (one per state change) without its dependencies' chatter
    // (alloy logs every RPC request at INFO); RUST_LOG overrides it all. The filter can be
    // changed while the node runs (`log-level`).
    btp_nips_node::admin::logger::install(btp_nips_node::admin::logger::DEFAULT_FILTER);
    let cli = Cli::parse();
    // These two report on the configuration rather than stop at its first problem.
    match &cli.command {
        Command::Init { dir, network } => return init(dir, *network),
        // The devnet writes each node's configuration itself.
        #[cfg(feature = "devnet")]
        Command::Devnet {
            nodes,
            chain,
            dir,
            scenario,
            churn_period,
        } => {
            let options = btp_nips_node::devnet::DevnetOptions {
                nodes: *nodes,
                chain: *chain,
                dir: dir.clone(),
                churn: scenario
                    .as_ref()
                    .map(|_| std::time::Duration::from_secs(*churn_period)),
            };
            return devnet(options);
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => return config_check(cli.config.as_deref()),
        _ => {}
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("btp-nips-node: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run { ephemeral } => run(settings, ephemeral),
        Command::Init { .. } | Command::Config { .. } => unreachable!("handled above"),
        #[cfg(feature = "devnet")]
        Command::Devnet { .. } => unreachable!("handled above"),
        Command::OpenChannel {
            peer,
            deposit,
            force,
        } => chain_command(open_channel(&settings, &peer, deposit, force)),
        Command::DeployContract => {
            chain_command(async { deploy_contract(&settings).await.map(|_| ()) })
        }
        Command::Keygen { out } => keygen(&settings, out),
        Command::Admin(command) => {
            return match btp_nips_node::admin::cli::run(command, &settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("btp-nips-node: {}", e.message);
                    ExitCode::from(e.code)
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btp-nips-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chain_command(
    command: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

fn run(settings: Settings, ephemeral: bool) -> Result<(), Box<dyn std::error::Error>> {
    let system = actix::System::new();
    system.block_on(async move {
        let node_id = settings.node.id.clone();
        let database = redact(&settings.database.url);
        let mut builder = NodeBuilder::new(settings);
        if ephemeral {
            builder = builder.ephemeral();
        }
        let node = builder.start().await?;
        let mut signals = Signals::install()?;
        log::info!("btp-nips-node {node_id} running on {database}");
        signals.wait().await;
        log::info!("shutting down: stopping peers and flushing pending changes");
        node.shutdown().await?;
        log::info!("every change is on disk; bye");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[cfg(feature = "devnet")]
fn devnet(options: btp_nips_node::devnet::DevnetOptions) -> ExitCode {
    // The devnet prints every state change itself: the nodes' own INFO lines would repeat
    // them, and at Ctrl-C every node stopping at once resets its peers' sockets and the
    // relays close under their clients, which the sessions and the relay clients would
    // report one by one (RUST_LOG still wins).
    if std::env::var_os("RUST_LOG").is_none() {
        let _ = btp_nips_node::admin::logger::set_filter(
            "warn,btp_nips_node::session=error,nostr_relay_pool=off",
        );
    }
    match btp_nips_node::devnet::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ btp_nips_node::devnet::DevnetError::Usage(_)) => {
            eprintln!("btp-nips-node devnet: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("btp-nips-node devnet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(settings: &Settings, out: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let path = out.unwrap_or_else(|| PathBuf::from(&settings.node.key_file));
    let keys = identity::keygen(&path)?;
    println!("{}", keys.public_key());
    eprintln!("wrote a new node key to {} (mode 0600)", path.display());
    Ok(())
}

fn init(dir: &Path, network: Network) -> ExitCode {
    match setup::init(dir, network) {
        Ok(done) => {
            println!(
                "wrote {} (mode 0600): this node is {}",
                done.key_file.display(),
                done.keys.public_key().to_hex()
            );
            println!("wrote {}", done.config_file.display());
            println!("next:");
            for command in done.next_commands() {
                println!("  {command}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("btp-nips-node init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(file: Option<&Path>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("btp-nips-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(setup::check(file));
    if !report.effective.is_empty() {
        println!("effective configuration (source: default, file or env):");
        for v in &report.effective {
            println!("  {} = {}  ({})", v.key, v.value, v.source);
        }
    }
    for passed in &report.passed {
        println!("ok: {passed}");
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    if report.problems.is_empty() {
        println!("configuration OK");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "btp-nips-node config check: {} problems:{}",
            report.problems.len(),
            report
                .problems
                .iter()
                .map(|p| format!("\n  - {p}"))
                .collect::<String>()
        );
        ExitCode::FAILURE
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}
