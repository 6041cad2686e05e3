//! `btp-nips-bench <scenario> [--peers N]`: figures for the core, printed as one JSON
//! object per scenario. Run it in release: `cargo run --release --bin btp-nips-bench -- all`.
//!
//! - `lifecycle`: N followed peers through the whole lifecycle to connected, with in-memory
//!   adapters and the real SQLite persistence: wall time, RSS per peer.
//! - `heartbeat`: N connected peers, PING/PONG every interval: CPU time per interval.
//! - `resolve`, `follow-diff`: discovery on a local Nostr relay (see `bench_discovery`).
//! - `persist`: N state changes into SQLite and PostgreSQL, batched by the persistence
//!   actor, against one transaction per change, measured in the same run.
//!
//! - `sessions`: N real BTP sessions on loopback (see `bench/sessions.rs`).
//! - `events --events N`: events from B's relay into A's through two nodes, against
//!   publishing them straight to a relay (see `bench/events.rs`).
//! - `admin`: the admin API of a node with N peers: `/v1/peers?limit=1000`, and the event
//!   stream under N state changes (see `bench/admin.rs`).
//! - `hostile`: the node under attack, one attack at a time, while a followed peer
//!   heartbeats: what was sent, what the node did, RSS growth, missed PONGs (see
//!   `bench/hostile.rs`).
//! - `network`: the whole node in its own process, following N peers announced on a local
//!   relay and served by a peer farm (another process): time to the first and to all N
//!   connected, CPU, RSS per peer, one heartbeat interval's CPU, then kill -9 and a restart
//!   on the same database (see `bench/network.rs`). `--chain anvil`: over a payment
//!   channel to each peer, opened on a local anvil (see `bench/network_chain.rs`). `all`
//!   runs it with `--chain` as given (off unless told).
//!
//! The floor the node must beat: 100 peers connected in under 10 s; a heartbeat check of
//! 100 peers in under 50 ms. Each figure is reported with its ratio to that floor.

#[path = "bench_discovery/mod.rs"]
mod bench_discovery;

#[path = "bench/allocations.rs"]
mod allocations;

#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting(mimalloc::MiMalloc);

use std::time::{Duration, Instant};

use actix::prelude::*;
use btp_nips_node::actors::persistence::{Flush, GetStats, PersistenceActor, SaveRecord};
use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::{Node, NodeBuilder};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::storage::scratch::ScratchPostgres;
use btp_nips_node::storage::Database;
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[path = "bench/sessions.rs"]
mod bench_sessions;

#[path = "bench/events.rs"]
mod bench_events;

#[path = "bench/admin.rs"]
mod bench_admin;

#[path = "bench/hostile.rs"]
mod bench_hostile;

#[path = "bench/farm.rs"]
mod bench_farm;

#[path = "bench/network.rs"]
mod bench_network;

#[path = "bench/heartbeat_floor.rs"]
mod bench_heartbeat_floor;

#[path = "bench/network_chain.rs"]
mod bench_network_chain;

#[derive(Parser)]
#[command(name = "btp-nips-bench")]
struct Args {
    scenario: Scenario,
    /// Number of peers (or of state changes, for `persist`).
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// PostgreSQL server for `persist` (a scratch database is created and dropped).
    #[arg(
        long,
        env = "BTP_NIPS_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// Number of events for `events`.
    #[arg(long, default_value_t = 2_000)]
    events: usize,
    /// For `network`: the node's `btp_nips.peer_connections.startup_dial_batch` (default:
    /// the node's own default).
    #[arg(long)]
    dial_batch: Option<usize>,
    /// For `network` (and `all`): where the node under test keeps its payment channels.
    #[arg(long, value_enum, default_value_t = bench_network::ChainChoice::Off)]
    chain: bench_network::ChainChoice,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Scenario {
    Lifecycle,
    Heartbeat,
    Persist,
    /// Real BTP sessions: authenticated connects and PING/PONG against a bare-WebSocket floor.
    Sessions,
    /// Internal: the server side of `sessions`, run as a child process.
    #[value(hide = true)]
    SessionServer,
    Resolve,
    FollowDiff,
    /// Events from B's relay into A's through two nodes, against publishing straight to A's.
    Events,
    /// The admin API: a page of 1000 peers out of N, and the event stream under N changes.
    Admin,
    /// The node under attack: floods of sockets, strangers, PINGs and REQs, one at a time,
    /// while a followed peer heartbeats.
    Hostile,
    /// Internal: the node under attack of `hostile`, run as a child process.
    #[value(hide = true)]
    HostileNode,
    /// The whole node against N real peers in another process: connect, heartbeat, kill -9,
    /// restart.
    Network,
    /// Internal: the peers of `network`, run as a child process.
    #[value(hide = true)]
    NetworkFarm,
    /// Internal: the node under test of `network`, run as a child process.
    #[value(hide = true)]
    NetworkNode,
    All,
}

fn main() {
    let args = Args::parse();
    let run = |s: Scenario| args.scenario == s || args.scenario == Scenario::All;
    if run(Scenario::Lifecycle) {
        print(lifecycle(args.peers));
    }
    if run(Scenario::Heartbeat) {
        print(heartbeat(args.peers));
    }
    if run(Scenario::Persist) {
        print(persist(args.peers, &args.pg_url));
    }
    if run(Scenario::Sessions) {
        print(bench_sessions::sessions(args.peers.max(1)));
    }
    if args.scenario == Scenario::SessionServer {
        bench_sessions::session_server();
    }
    if run(Scenario::Resolve) {
        print(bench_discovery::resolve(args.peers));
    }
    if run(Scenario::FollowDiff) {
        print(bench_discovery::follow_diff(args.peers));
    }
    if run(Scenario::Events) {
        print(bench_events::events(args.events.max(1)));
    }
    if run(Scenario::Admin) {
        print(bench_admin::admin(args.peers.max(1)));
    }
    if run(Scenario::Hostile) {
        print(bench_hostile::hostile(args.peers.max(1)));
    }
    if args.scenario == Scenario::HostileNode {
        bench_hostile::hostile_node();
    }
    if run(Scenario::Network) {
        let result = bench_network::network(bench_network::NetworkOptions {
            peers: args.peers,
            dial_batch: args.dial_batch,
            chain: args.chain,
        });
        let ok = result["ok"] == true;
        print(result);
        if !ok {
            eprintln!("network: a figure was not reached in time, or rows were lost");
            std::process::exit(1);
        }
    }
    if args.scenario == Scenario::NetworkFarm {
        bench_farm::network_farm();
    }
    if args.scenario == Scenario::NetworkNode {
        bench_network::network_node();
    }
}

fn print(v: Value) {
    println!("{v}");
}

fn pubkey(i: usize) -> String {
    format!("{:0>64x}", 0xbe4c_0000_0000u64 + i as u64)
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn node_settings(dir: &tempfile::TempDir, yaml: &str) -> Settings {
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    Settings::from_yaml_overrides(&format!("database: {{url: \"{url}\"}}\n{yaml}"))
        .expect("bench settings")
}

/// A node on the in-memory world, without a BTP listener.
async fn start_node(settings: Settings, world: &MemoryWorld) -> Node {
    NodeBuilder::new(settings)
        .without_admin()
        .ephemeral()
        .ports(world.ports())
        .without_listener()
        .start()
        .await
        .expect("node")
}

/// Follows `n` ready peers and waits until all are connected; returns the elapsed time.
async fn connect_all(node: &Node, world: &MemoryWorld, n: usize) -> Duration {
    for i in 0..n {
        world.add_ready_peer(&pubkey(i));
    }
    let start = Instant::now();
    // As the follow-list monitor does: told, not asked.
    let directory = node.directory();
    for i in 0..n {
        directory.follow(&pubkey(i));
    }
    // Each look at the stats walks every running peer: looked at less often the more
    // there are, so the benchmark's own polling stays a small part of the CPU it reports.
    let poll = Duration::from_millis(2) + Duration::from_micros(5 * n as u64);
    loop {
        let stats = node.stats().await.unwrap();
        if stats.connected == n {
            return start.elapsed();
        }
        actix::clock::sleep(poll).await;
    }
}

fn lifecycle(n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let settings = node_settings(
        &dir,
        &format!(
            "btp_nips: {{peer_connections: {{max_active_connections: {}}}}}",
            n.max(1)
        ),
    );
    System::new().block_on(async move {
        let world = MemoryWorld::new();
        let node = start_node(settings, &world).await;
        let rss_before = rss_bytes();
        let cpu_before = cpu_time();
        let elapsed = connect_all(&node, &world, n).await;
        let cpu = cpu_time() - cpu_before;
        let rss_per_peer = rss_bytes().saturating_sub(rss_before) / n.max(1) as u64;
        node.shutdown().await.unwrap();
        let stored = node.db().load_all().unwrap();
        let connected_rows = stored
            .iter()
            .filter(|p| p.state == PeerState::Connected)
            .count();
        // Floor: 100 peers in 10 s = 100 ms per peer.
        let per_peer_us = elapsed.as_secs_f64() * 1e6 / n as f64;
        json!({
            "scenario": "lifecycle",
            "peers": n,
            "wall_ms": elapsed.as_secs_f64() * 1e3,
            "cpu_ms": cpu.as_secs_f64() * 1e3,
            "per_peer_us": per_peer_us,
            "rss_per_peer_bytes": rss_per_peer,
            "connected_rows_in_db": connected_rows,
            "floor": "100 peers connected in < 10 s (100 ms per peer)",
            "times_faster_than_floor": 100_000.0 / per_peer_us,
        })
    })
}

fn heartbeat(n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let interval_s = 2u64;
    let settings = node_settings(
        &dir,
        &format!(
            "btp_nips: {{peer_connections: {{max_active_connections: {}, heartbeat_interval_seconds: {interval_s}, heartbeat_timeout_seconds: 1}}}}",
            n.max(1)
        ),
    );
    System::new().block_on(async move {
        let world = MemoryWorld::new();
        let node = start_node(settings, &world).await;
        connect_all(&node, &world, n).await;
        let intervals = 3u32;
        let pings_before = world.pings_answered();
        let cpu_before = cpu_time();
        actix::clock::sleep(Duration::from_secs(interval_s) * intervals).await;
        let cpu = (cpu_time() - cpu_before) / intervals;
        let pings = (world.pings_answered() - pings_before) as f64 / intervals as f64;
        let stats = node.stats().await.unwrap();
        let persisted = node.persistence_stats().await.unwrap();
        node.shutdown().await.unwrap();
        // Floor: a heartbeat check of 100 peers in < 50 ms = 500 µs per peer.
        let per_peer_us = cpu.as_secs_f64() * 1e6 / n as f64;
        json!({
            "scenario": "heartbeat",
            "peers": n,
            "interval_s": interval_s,
            "cpu_ms_per_interval": cpu.as_secs_f64() * 1e3,
            "pings_answered_per_interval": pings,
            "still_connected": stats.connected,
            "cpu_per_peer_us": per_peer_us,
            "db_transactions_total": persisted.transactions,
            "floor": "heartbeat of 100 peers in < 50 ms (500 us per peer)",
            "times_faster_than_floor": 500.0 / per_peer_us,
        })
    })
}

fn persist(n: usize, pg_url: &str) -> Value {
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!(
        "sqlite://{}",
        sqlite_dir.path().join("persist.db").display()
    );
    let sqlite = persist_on(&sqlite_url, n);
    let pg = match ScratchPostgres::create(pg_url, "btp_bench") {
        Ok(scratch) => persist_on(scratch.url(), n),
        Err(e) => json!({ "error": e }),
    };
    json!({ "scenario": "persist", "changes": n, "sqlite": sqlite, "postgresql": pg })
}

/// Changes per second through the persistence actor, and with one transaction per change.
fn persist_on(url: &str, n: usize) -> Value {
    let peers = n.clamp(1, 1000);
    let changes: Vec<PeerRecord> = (0..n)
        .map(|i| {
            let mut r = PeerRecord::new(pubkey(i % peers), true, Timestamp(1_700_000_000_000));
            r.reconnect_attempts = (i / peers) as u32;
            r.state = if i % 2 == 0 {
                PeerState::Connecting
            } else {
                PeerState::Connected
            };
            r
        })
        .collect();
    let settings = Settings::defaults().unwrap().persistence;
    let batched_db = Database::open(url, 4).unwrap();
    let baseline_db = batched_db.clone();
    let batched = System::new().block_on({
        let changes = changes.clone();
        async move {
            let actor = PersistenceActor::new(batched_db.clone(), settings).start();
            let start = Instant::now();
            for change in changes {
                actor.do_send(SaveRecord::unversioned(change));
            }
            actor.send(Flush).await.unwrap().unwrap();
            let elapsed = start.elapsed();
            let stats = actor.send(GetStats).await.unwrap();
            (elapsed, stats.transactions)
        }
    });
    let start = Instant::now();
    for change in &changes {
        baseline_db
            .upsert_batch(std::slice::from_ref(change))
            .unwrap();
    }
    let one_per_change = start.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    json!({
        "batched_changes_per_s": rate(batched.0),
        "batched_transactions": batched.1,
        "one_tx_per_change_changes_per_s": rate(one_per_change),
        "speedup": rate(batched.0) / rate(one_per_change),
    })
}
