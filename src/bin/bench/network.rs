//! `btp-nips-bench network --peers N [--chain off|anvil]`: the whole node against N real
//! peers, killed and restarted; with `--chain anvil`, over payment channels opened on a
//! local chain.
//!
//! Three processes, so each figure is the node's alone and the node can be killed:
//! - this one: a local Nostr relay (nostr-relay-builder, on its own thread) holding the N
//!   peers' kind 32001 announcements and the operator's follow list of the N, and the
//!   orchestration; it reads the node's SQLite database itself around the kill;
//! - the peer farm (`network-farm`, see `farm.rs`): N identities behind a few listeners,
//!   in as many processes as the open-files limit needs (a served session holds two
//!   descriptors: its socket and the handle that can end it while a write is stuck);
//! - the node under test (`network-node`): a node built with `NodeBuilder` from settings
//!   (discovery and its operator relay on the local relay, SQLite, its BTP listener on
//!   loopback, chain off or on anvil), reporting over stdout lines what happened and what
//!   it cost;
//! - with `--chain anvil`, anvil (see `network_chain.rs`): the node pays from a funded key
//!   of its own and opens a channel to each followed peer on its own (auto-open), so each
//!   goes channel_needed → channel_opening → connected, connected only once its channel
//!   has its confirmations.
//!
//! Times are taken in this process when the node's line arrives, from the moment the node
//! process was spawned. Figures:
//! - from start: the first followed peer connected, all N connected, the node's CPU
//!   seconds by then, its RSS growth per connected peer (from the node started to all N
//!   connected);
//! - steady heartbeat intervals (set short for the run, with heartbeat writes and the
//!   event stream's heartbeat throttle at the defaults' ratios to it) with N real sessions, after a first one in which every peer's
//!   latency became known: the node's CPU over exactly each interval (the figure is the
//!   median of three), the allocations it made per peer (counted by the benchmark's
//!   allocator: exact where CPU time is noisy), and the PINGs the farm answered meanwhile
//!   (the first interval's CPU is shown too);
//! - the heartbeat's floor in the same run, while no node runs (between the kill and the
//!   restart, see `heartbeat_floor.rs`): N bare WebSocket round trips of a PING's bytes
//!   per interval, in the node's rounds; the node's CPU per peer is given as a ratio to it
//!   (the machine is shared: its speed changes from run to run, the ratio much less);
//! - kill -9 of the node (after its changes are flushed), then a restart on the same
//!   database: the rows read before the kill and after it (lost: must be 0), and from the
//!   new start the first followed peer connected and all N connected;
//! - with the chain: the channels the node opened and its transactions (read on chain),
//!   when the peers entered channel_needed, channel_opening and connected (read from the
//!   node's history), which blocks the opens landed in; after the restart, the
//!   transactions and channels that are new (must be 0: each channel is found on chain).
//!
//! Every wait has a deadline; a figure not reached in time is reported as such (and the
//! run fails), never a hang.
//!
//! To profile the steady heartbeat interval alone: `mkfifo CTL; perf record -D -1
//! --control fifo:CTL -g -- btp-nips-bench network --peers N` with
//! `BTP_NIPS_BENCH_PERF_CTL=CTL BTP_NIPS_BENCH_PERF_PHASE=heartbeat` (or `first_heartbeat`):
//! the node enables sampling for exactly those intervals (the farm's samples are there too;
//! keep the node's by its command, `network-node`).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::node::{NodeBuilder, Notification};
use btp_nips_node::storage::Database;
use nostr::{Event, EventBuilder, JsonUtil, Keys, Kind, Tag};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::bench_farm::{read_config, say, stdin_commands};
use crate::bench_heartbeat_floor::heartbeat_floor;
use crate::bench_network_chain::{channel_path, BenchChain, Onchain, DEPOSIT_WEI};
use crate::bench_sessions::{perf_control, raise_fd_limit};

/// BTP listeners of each farm process (one worker thread each).
const FARM_LISTENERS: usize = 2;
/// Descriptors a farm process keeps for everything but its sessions.
const FARM_SPARE_FDS: u64 = 512;
/// The node's heartbeat interval for the run (its timeout is one second less).
const HEARTBEAT_SECONDS: u64 = 5;
/// Steady heartbeat intervals measured; the figure is their median (the machine is shared,
/// and one interval's CPU varies by a tenth from run to run).
const STEADY_INTERVALS: usize = 3;
/// Heartbeat writes every this many intervals: the defaults' ratio (300 s to 60 s), so an
/// interval writes the share of peers a node in production writes.
const HEARTBEATS_PER_WRITE: u64 = 5;
/// The admin event stream's heartbeat throttle at the defaults' ratio too (30 s to 60 s:
/// a node in production shows every PONG as an event), so every PONG of the run is one.
const HEARTBEAT_EVENT_SECONDS: u64 = HEARTBEAT_SECONDS / 2;

/// Seconds the chain may add to a phase: the blocks the opens take and their
/// confirmations, at a block a second.
const CHAIN_PHASE_SECONDS: u64 = 60;

/// Where the node under test keeps its payment channels.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChainChoice {
    /// No chain: peers connect without channels.
    Off,
    /// A local anvil (`ANVIL_BIN`, or `contracts/node_modules/...`): a channel per peer.
    Anvil,
}

/// How the node under test is configured, beyond the node's defaults.
#[derive(Clone)]
pub struct NetworkOptions {
    pub peers: usize,
    /// `btp_nips.peer_connections.startup_dial_batch` (None: the node's default).
    pub dial_batch: Option<usize>,
    pub chain: ChainChoice,
}

/// The node's settings: discovery and operator relay on `relay`, following `operator`'s
/// list, N connections allowed, the short heartbeat; with a chain, its `chain_yaml` and
/// the channel polled every second (a block a second).
fn node_yaml(config: &Value) -> String {
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    let peers = config["peers"].as_u64().unwrap_or(1).max(1);
    let dial = match config["dial_batch"].as_u64() {
        Some(b) => format!("    startup_dial_batch: {b}\n"),
        None => String::new(),
    };
    let chain = match config["chain_yaml"].as_str() {
        Some(chain) => {
            format!("    channel_poll_interval_seconds: 1\n    channel_recheck_seconds: 5\n{chain}")
        }
        None => String::new(),
    };
    format!(
        "node:\n  id: \"bench\"\n\
         database:\n  url: \"{db}\"\n\
         nostr:\n  relays: [\"{relay}\"]\n  operator_pubkey: \"{operator}\"\n  allow_ws_loopback: true\n\
         events:\n  operator_relay: \"{relay}\"\n\
         admin:\n  heartbeat_event_interval_seconds: {HEARTBEAT_EVENT_SECONDS}\n\
         btp_nips:\n  peer_connections:\n    max_active_connections: {peers}\n\
         \x20   heartbeat_interval_seconds: {HEARTBEAT_SECONDS}\n\
         \x20   heartbeat_timeout_seconds: {timeout}\n\
         \x20   heartbeat_write_interval_seconds: {writes}\n{dial}{chain}",
        db = text("db"),
        relay = text("relay"),
        operator = text("operator"),
        timeout = HEARTBEAT_SECONDS - 1,
        writes = HEARTBEAT_SECONDS * HEARTBEATS_PER_WRITE,
    )
}

/// The node under test, as a child process (see the module documentation). The first
/// line of stdin is its configuration; then `heartbeat`, `flush`, `stats`, `quit`.
pub fn network_node() {
    raise_fd_limit();
    let config = read_config("the node under test");
    let settings = Settings::from_yaml_overrides(&node_yaml(&config)).expect("node settings");
    let keys = Keys::parse(config["nsec"].as_str().expect("nsec")).expect("the node's key");
    let peers = config["peers"].as_u64().expect("peers") as usize;
    let interval = settings.btp_nips.peer_connections.heartbeat_interval;
    let cost =
        || json!({ "cpu_s": crate::cpu_time().as_secs_f64(), "rss_bytes": crate::rss_bytes() });

    actix::System::new().block_on(async move {
        let node = NodeBuilder::new(settings)
            .without_admin()
            .keys(keys)
            .listen("127.0.0.1:0")
            .start()
            .await
            .expect("the node under test starts");
        // Subscribed before anything can connect: the first Connected is never missed.
        let mut changes = node.notifications();
        say(json!({ "event": "started", "cost": cost() }));
        let watcher = node.clone();
        actix::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Notification::State(change))
                        if change.record.state == PeerState::Connected =>
                    {
                        break
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if watcher.stats().await.is_ok_and(|s| s.connected > 0) {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
            say(json!({ "event": "first_connected", "cost": cost() }));
        });
        let watcher = node.clone();
        actix::spawn(async move {
            loop {
                match watcher.stats().await {
                    Ok(s) if s.connected >= peers => {
                        say(json!({ "event": "all_connected", "connected": s.connected, "cost": cost() }));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                actix::clock::sleep(Duration::from_millis(20)).await;
            }
        });

        let mut commands = stdin_commands();
        let mut heartbeats = 0;
        while let Some(command) = commands.recv().await {
            match command.trim() {
                "heartbeat" => {
                    // The first interval writes every peer's first latency; the later
                    // ones are the steady state a profile wants.
                    heartbeats += 1;
                    let phase = if heartbeats == 1 { "first_heartbeat" } else { "heartbeat" };
                    perf_control(phase, "enable");
                    let before = crate::cpu_time();
                    let allocations_before = crate::allocations::allocations();
                    actix::clock::sleep(interval).await;
                    let cpu = crate::cpu_time() - before;
                    let allocations = crate::allocations::allocations() - allocations_before;
                    perf_control(phase, "disable");
                    let connected = node.stats().await.map_or(0, |s| s.connected);
                    say(json!({
                        "event": "heartbeat",
                        "interval_s": interval.as_secs_f64(),
                        "cpu_s": cpu.as_secs_f64(),
                        "allocations": allocations,
                        "connected": connected,
                    }));
                }
                "flush" => {
                    let flushed = node.flush().await;
                    say(json!({ "event": "flushed", "error": flushed.err().map(|e| e.to_string()) }));
                }
                "stats" => {
                    let s = node.stats().await;
                    say(json!({
                        "event": "stats",
                        "stats": s.map(|s| format!("{s:?}")).unwrap_or_else(|e| e.to_string()),
                    }));
                }
                "quit" => break,
                _ => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await;
    });
}

/// A child process of this benchmark: its JSON lines, each with the time it arrived.
struct Proc {
    name: &'static str,
    child: Child,
    spawned: Instant,
    /// The spawn on the system clock, unix ms (the node's history is dated by it).
    spawned_unix_ms: u64,
    lines: Receiver<(Instant, Value)>,
    /// Lines read while waiting for another one.
    seen: Vec<(Instant, Value)>,
}

impl Proc {
    /// Starts this binary as `scenario` and hands it `config` as its first line.
    fn spawn(name: &'static str, scenario: &str, config: &Value) -> Proc {
        let spawned = Instant::now();
        let spawned_unix_ms = btp_nips_node::lifecycle::Timestamp::now_system().0;
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((Instant::now(), v)).is_err() {
                        break;
                    }
                }
            }
        });
        let mut proc = Proc {
            name,
            child,
            spawned,
            spawned_unix_ms,
            lines,
            seen: Vec::new(),
        };
        proc.send(&config.to_string());
        proc
    }

    fn send(&mut self, line: &str) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// The next line whose `event` is `event`, by `deadline`; `None` if it did not come
    /// (or the process ended).
    fn wait_for(&mut self, event: &str, deadline: Instant) -> Option<(Instant, Value)> {
        if let Some(i) = self.seen.iter().position(|(_, v)| v["event"] == event) {
            return Some(self.seen.remove(i));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, v)) if v["event"] == event => return Some((at, v)),
                Ok(other) => self.seen.push(other),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    eprintln!("network: the {} sent no `{event}` in time", self.name);
                    return None;
                }
            }
        }
    }

    /// Sends `command` and waits for its answer `event` for at most `limit`.
    fn ask(&mut self, command: &str, event: &str, limit: Duration) -> Option<Value> {
        self.send(command);
        self.wait_for(event, Instant::now() + limit).map(|(_, v)| v)
    }

    /// Milliseconds from the spawn to `at`.
    fn ms(&self, at: Instant) -> f64 {
        at.duration_since(self.spawned).as_secs_f64() * 1e3
    }

    /// SIGKILL, as an operator's `kill -9`.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to quit; killed if it has not within 30 s.
    fn quit(mut self) {
        self.send("quit");
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    /// A child never outlives the benchmark (a panic here included).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// The local relay on its own thread and runtime, so it answers while this thread blocks.
struct RelayThread {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayThread {
    /// A relay holding `events`.
    fn start(events: Vec<Event>) -> RelayThread {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let (relay, db, url) = crate::bench_discovery::local_relay().await;
                for event in &events {
                    db.save_event(event)
                        .await
                        .expect("store an event on the relay");
                }
                let _ = url_tx.send(url);
                let _ = stopped.await;
                relay.shutdown();
            });
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the local relay starts");
        RelayThread {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The farms' counters, summed (`null` where a farm did not answer).
fn farm_stats(farms: &mut [Proc]) -> Value {
    let mut total = serde_json::Map::new();
    for farm in farms {
        let Some(Value::Object(stats)) = farm.ask("stats", "stats", Duration::from_secs(10)) else {
            return Value::Null;
        };
        for (k, v) in stats {
            if let Some(v) = v.as_u64() {
                let sum = total.get(&k).and_then(Value::as_u64).unwrap_or(0) + v;
                total.insert(k, json!(sum));
            }
        }
    }
    Value::Object(total)
}

/// Every stored peer's pubkey and state, read through a connection of our own.
fn stored_rows(url: &str) -> Result<Vec<(String, PeerState)>, String> {
    let db = Database::open(url, 1).map_err(|e| e.to_string())?;
    let rows = db.load_all().map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|r| (r.nostr_pubkey, r.state))
        .collect())
}

/// Start to first and to all connected, as the node reported them; `None` where a figure
/// was not reached by `deadline`.
struct Startup {
    started: Option<Value>,
    first_ms: Option<f64>,
    all_ms: Option<f64>,
    all: Option<Value>,
    /// The node's counts when not all N connected in time.
    stats_if_incomplete: Option<Value>,
}

fn startup(node: &mut Proc, deadline: Instant) -> Startup {
    let started = node.wait_for("started", deadline).map(|(_, v)| v);
    let first_ms = node
        .wait_for("first_connected", deadline)
        .map(|(at, _)| node.ms(at));
    let all = node.wait_for("all_connected", deadline);
    let stats_if_incomplete = all
        .is_none()
        .then(|| node.ask("stats", "stats", Duration::from_secs(10)))
        .flatten();
    Startup {
        started,
        first_ms,
        all_ms: all.as_ref().map(|(at, _)| node.ms(*at)),
        all: all.map(|(_, v)| v),
        stats_if_incomplete,
    }
}

pub fn network(options: NetworkOptions) -> Value {
    let n = options.peers.max(1);
    let fd_limit = raise_fd_limit();
    let dir = tempfile::tempdir().expect("a scratch directory");
    // Seconds every phase may take at most: generous, growing with N, never unbounded.
    let mut phase = Duration::from_secs(30) + Duration::from_millis(10 * n as u64);
    let chain = match options.chain {
        ChainChoice::Off => None,
        ChainChoice::Anvil => match BenchChain::start(dir.path(), n) {
            Ok(chain) => Some(chain),
            Err(e) => {
                return json!({
                    "scenario": "network", "peers": n, "ok": false, "chain": "anvil",
                    "error": format!("the chain did not start: {e}"),
                })
            }
        },
    };
    if chain.is_some() {
        phase += Duration::from_secs(CHAIN_PHASE_SECONDS) + Duration::from_millis(20 * n as u64);
    }

    // Two descriptors per served session: as many farm processes as that takes.
    let per_farm = (fd_limit.saturating_sub(FARM_SPARE_FDS) / 2).max(1) as usize;
    let farm_count = n.div_ceil(per_farm);
    let mut farms = Vec::new();
    let mut events: Vec<Event> = Vec::with_capacity(n + 1);
    let mut farm_ports = Vec::new();
    let mut first = 0;
    for f in 0..farm_count {
        let peers = n / farm_count + usize::from(f < n % farm_count);
        let announcements = dir.path().join(format!("announcements{f}.jsonl"));
        let mut farm = Proc::spawn(
            "peer farm",
            "network-farm",
            &json!({
                "peers": peers,
                "listeners": FARM_LISTENERS,
                "first": first,
                "announcements": announcements.display().to_string(),
            }),
        );
        first += peers;
        let Some((_, listening)) = farm.wait_for("listening", Instant::now() + phase) else {
            return json!({ "scenario": "network", "peers": n, "ok": false, "error": "a peer farm did not start" });
        };
        farm_ports.push(listening["ports"].clone());
        events.extend(
            std::fs::read_to_string(&announcements)
                .expect("the farm's announcements")
                .lines()
                .map(|l| Event::from_json(l).expect("an announcement")),
        );
        farms.push(farm);
    }
    let operator = Keys::generate();
    let follow_list = EventBuilder::new(Kind::ContactList, "")
        .tags(events.iter().map(|e| Tag::public_key(e.pubkey)))
        .sign_with_keys(&operator)
        .expect("sign the follow list");
    let followed: HashSet<String> = events.iter().map(|e| e.pubkey.to_hex()).collect();
    events.push(follow_list);
    let relay = RelayThread::start(events);

    let db_url = format!("sqlite://{}", dir.path().join("network.db").display());
    let config = json!({
        "peers": n,
        "db": db_url,
        "relay": relay.url,
        "operator": operator.public_key().to_hex(),
        "nsec": Keys::generate().secret_key().to_secret_hex(),
        "dial_batch": options.dial_batch,
        "chain_yaml": chain.as_ref().map(|c| c.yaml.clone()),
    });

    // From start to all N connected.
    let mut node = Proc::spawn("node under test", "network-node", &config);
    let first_run = startup(&mut node, Instant::now() + phase);
    let cost = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v["cost"][k].as_f64());
    let connected = first_run
        .all
        .as_ref()
        .and_then(|v| v["connected"].as_u64())
        .unwrap_or(0);
    let rss_per_peer = match (
        cost(&first_run.started, "rss_bytes"),
        cost(&first_run.all, "rss_bytes"),
    ) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(((after - before).max(0.0) / connected as f64).round())
        }
        _ => None,
    };

    // Heartbeat intervals with N real sessions: in the first, each peer's first PONG makes
    // its latency known (a new priority, written at once); the next ones are the steady
    // state, the figure.
    let first_heartbeat = node.ask(
        "heartbeat",
        "heartbeat",
        Duration::from_secs(HEARTBEAT_SECONDS + 30),
    );
    let first_heartbeat_cpu_s = first_heartbeat.as_ref().and_then(|v| v["cpu_s"].as_f64());
    let pings_before = farm_stats(&mut farms)["pings"].as_u64();
    let steady: Vec<Option<Value>> = (0..STEADY_INTERVALS)
        .map(|_| {
            node.ask(
                "heartbeat",
                "heartbeat",
                Duration::from_secs(HEARTBEAT_SECONDS + 30),
            )
        })
        .collect();
    let pings_after = farm_stats(&mut farms)["pings"].as_u64();
    let steady_cpu_s: Vec<f64> = steady
        .iter()
        .filter_map(|v| v.as_ref()?["cpu_s"].as_f64())
        .collect();
    let heartbeat = steady.iter().flatten().last().cloned();
    let heartbeat_cpu_s = median(&steady_cpu_s);
    let steady_allocations: Vec<f64> = steady
        .iter()
        .filter_map(|v| v.as_ref()?["allocations"].as_f64())
        .collect();
    let heartbeat_allocations = median(&steady_allocations);

    // kill -9 once every change is committed; the rows before and after, read here.
    let flushed = node.ask("flush", "flushed", phase);
    let rows_before = stored_rows(&db_url);
    node.kill9();
    let onchain_before = chain.as_ref().map(BenchChain::read);
    let path_before = chain
        .as_ref()
        .map(|_| channel_path(&db_url, &followed, node.spawned_unix_ms));
    let rows_after = stored_rows(&db_url);
    let (rows_lost, rows_before_n, rows_after_n, connected_rows_before) =
        match (&rows_before, &rows_after) {
            (Ok(before), Ok(after)) => {
                let kept: HashSet<&String> = after.iter().map(|(pk, _)| pk).collect();
                let lost = before.iter().filter(|(pk, _)| !kept.contains(pk)).count();
                let connected_before = before
                    .iter()
                    .filter(|(pk, s)| *s == PeerState::Connected && followed.contains(pk))
                    .count();
                (Some(lost), before.len(), after.len(), connected_before)
            }
            _ => (None, 0, 0, 0),
        };

    // The heartbeat's floor, while no node runs: N bare round trips per interval.
    let floor = heartbeat_floor(
        n,
        Duration::from_secs(HEARTBEAT_SECONDS),
        STEADY_INTERVALS,
        Settings::defaults().map_or(1, |s| s.session.io_thread_count()),
    );
    let floor_cpu_us = floor["cpu_per_connection_us"].as_f64();

    // The restart on the same database.
    let mut node = Proc::spawn("restarted node", "network-node", &config);
    let second_run = startup(&mut node, Instant::now() + phase);
    let farm_end = farm_stats(&mut farms);
    let restarted_at = node.spawned_unix_ms;
    node.quit();
    for farm in farms {
        farm.quit();
    }
    drop(relay);
    let channels = chain.map(|chain| {
        let onchain_after = chain.read();
        let path_after = channel_path(&db_url, &followed, restarted_at);
        let figures = channel_figures(
            &chain,
            n,
            onchain_before.expect("read when the chain is on"),
            onchain_after,
            path_before.expect("read when the chain is on"),
            path_after,
            stored_channels(&db_url, &followed),
        );
        chain.stop();
        figures
    });

    let ok = first_run.all_ms.is_some()
        && second_run.all_ms.is_some()
        && heartbeat.is_some()
        && rows_lost == Some(0)
        && rows_before_n >= n
        && channels.as_ref().is_none_or(|c| c["ok"] == true);
    let ms = |d: Option<f64>| d.map(|d| (d * 10.0).round() / 10.0);
    json!({
        "scenario": "network",
        "peers": n,
        "ok": ok,
        "chain": if channels.is_some() { "anvil" } else { "off" },
        "farm_processes": farm_count,
        "farm_listeners": farm_ports,
        "fd_limit": fd_limit,
        "startup_dial_batch": options.dial_batch.map_or_else(
            || json!(Settings::defaults().map_or(0, |s| s.btp_nips.peer_connections.startup_dial_batch)),
            |b| json!(b),
        ),
        "start": {
            "first_connected_ms": ms(first_run.first_ms),
            "all_connected_ms": ms(first_run.all_ms),
            "connected": connected,
            "cpu_s_at_all_connected": cost(&first_run.all, "cpu_s"),
            "rss_per_connected_peer_bytes": rss_per_peer,
            "node_stats_if_not_all_connected": first_run.stats_if_incomplete,
        },
        "heartbeat": {
            "interval_s": HEARTBEAT_SECONDS,
            "steady_intervals": STEADY_INTERVALS,
            "cpu_ms": heartbeat_cpu_s.map(|c| c * 1e3),
            "cpu_per_peer_us": heartbeat_cpu_s.map(|c| c * 1e6 / n as f64),
            "cpu_per_peer_us_each": steady_cpu_s.iter().map(|c| c * 1e6 / n as f64).collect::<Vec<_>>(),
            "first_interval_cpu_per_peer_us": first_heartbeat_cpu_s.map(|c| c * 1e6 / n as f64),
            // Exact where CPU time is noisy: what a change to the PING path removed.
            "allocations_per_peer": heartbeat_allocations.map(|a| a / n as f64),
            "pings_answered_by_the_farm_per_interval": pings_after
                .zip(pings_before)
                .map(|(a, b)| (a - b) / STEADY_INTERVALS as u64),
            "connected": heartbeat.as_ref().map(|v| v["connected"].clone()),
            "floor": floor,
            "ratio_to_floor": heartbeat_cpu_s.zip(floor_cpu_us).map(|(node, floor)| node * 1e6 / n as f64 / floor),
        },
        "kill_9": {
            "flushed_before": flushed.as_ref().is_some_and(|v| v["error"].is_null()),
            "rows_before": rows_before_n,
            "connected_rows_before": connected_rows_before,
            "rows_after": rows_after_n,
            "rows_lost": rows_lost,
            "read_error": rows_before.err().or(rows_after.err()),
        },
        "restart": {
            "first_connected_ms": ms(second_run.first_ms),
            "all_connected_ms": ms(second_run.all_ms),
            "cpu_s_at_all_connected": cost(&second_run.all, "cpu_s"),
            "node_stats_if_not_all_connected": second_run.stats_if_incomplete,
        },
        "channels": channels,
        "farm": farm_end,
        "targets": {
            "all_connected_ms": "1,000 peers <= 2000; 10,000 <= 15000",
            "restart_first_connected_ms": "<= 250 (10,000 stored peers)",
            "rows_lost": 0,
            "rss_per_connected_peer_bytes": "<= 65536",
            "heartbeat_cpu_per_peer_us": "<= 20",
        },
    })
}

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// How many followed peers' stored records name a channel, and how many distinct ones.
fn stored_channels(url: &str, followed: &HashSet<String>) -> Value {
    let read = || -> Result<Value, String> {
        let db = Database::open(url, 1).map_err(|e| e.to_string())?;
        let rows = db.load_all().map_err(|e| e.to_string())?;
        let ids: Vec<&String> = rows
            .iter()
            .filter(|r| followed.contains(&r.nostr_pubkey))
            .filter_map(|r| r.channel_id.as_ref())
            .collect();
        let distinct: HashSet<&&String> = ids.iter().collect();
        Ok(json!({ "with_channel": ids.len(), "distinct": distinct.len() }))
    };
    read().unwrap_or_else(|e| json!({ "error": e }))
}

/// The chain's figures (see the module documentation), `ok` when every peer went through
/// channel_opening to a channel of its own, the node sent one transaction a channel, and
/// the restart opened nothing.
fn channel_figures(
    chain: &BenchChain,
    n: usize,
    before: Result<Onchain, String>,
    after: Result<Onchain, String>,
    path_before: Value,
    path_after: Value,
    stored: Value,
) -> Value {
    let (before, after) = match (before, after) {
        (Ok(before), Ok(after)) => (before, after),
        (Err(e), _) | (_, Err(e)) => return json!({ "ok": false, "error": e }),
    };
    let payees: HashSet<_> = before.channels.iter().map(|(_, payee, _)| payee).collect();
    let new_transactions = after.pending.saturating_sub(before.pending);
    let new_channels = after.channels.len().saturating_sub(before.channels.len());
    let through = path_before["through_channel_opening"].as_u64();
    let ok = before.channels.len() == n
        && payees.len() == n
        && before.mined == n as u64
        && before.pending == before.mined
        && through == Some(n as u64)
        && stored["with_channel"] == json!(n)
        && stored["distinct"] == json!(n)
        && new_transactions == 0
        && new_channels == 0;
    json!({
        "ok": ok,
        "deposit_wei": DEPOSIT_WEI.to_string(),
        "opened": before.channels.len(),
        "distinct_payees": payees.len(),
        "transactions_sent": before.mined,
        "transactions_pending": before.pending - before.mined,
        "stored_channel_ids": stored,
        "path_ms_after_start": path_before,
        "chain": chain.blocks(&before),
        "restart": {
            "new_transactions": new_transactions,
            "new_channels": new_channels,
            "path_ms_after_restart": path_after,
        },
    })
}
