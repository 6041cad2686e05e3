//! `admin --peers N`: the admin API of a node that knows N peers (stored as failed, so none
//! is dialled): how long `GET /v1/peers?limit=1000` takes (median of several), and how many
//! `peer_state` events per second one event-stream client receives while N state changes
//! are recorded as fast as one thread can, and whether it missed any.
//!
//! The node runs in an actix system of its own thread, as in the binary; the changes are
//! recorded into the node's event log from another thread (what the node's recorder does
//! with each change the supervisor reports), so the figure is the event stream's own
//! capacity, not the supervisor's; the client reads from a third.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use btp_nips_node::admin::client::AdminClient;
use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::{NodeBuilder, PeerChange};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::storage::Database;
use serde_json::{json, Value};

/// Runs of `GET /v1/peers?limit=1000` whose median is reported.
const PAGE_RUNS: usize = 11;

struct Running {
    base: String,
    read_token: String,
    events: std::sync::Arc<btp_nips_node::admin::events::EventLog>,
    stats: std::sync::Arc<btp_nips_node::admin::stats::AdminStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(dir: &tempfile::TempDir, n: usize) -> Running {
    let db_path = dir.path().join("admin-bench.db");
    let db = Database::open(db_path.to_str().unwrap(), 4).expect("bench database");
    let stored: Vec<PeerRecord> = (0..n)
        .map(|i| {
            let mut r = PeerRecord::new(super::pubkey(i), true, Timestamp(1_700_000_000_000));
            r.state = PeerState::Failed;
            r.failure_reason = Some("no valid announcement".into());
            r
        })
        .collect();
    for chunk in stored.chunks(1000) {
        db.upsert_batch(chunk).expect("stored peers");
    }
    let yaml = format!(
        "database: {{url: \"sqlite://{}\"}}\n\
         admin:\n  token_file: \"{}\"\n  read_token_file: \"{}\"\n",
        db_path.display(),
        dir.path().join("admin-token").display(),
        dir.path().join("read-token").display(),
    );
    let settings = Settings::from_yaml_overrides(&yaml).expect("bench settings");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let world = MemoryWorld::new();
            let node = NodeBuilder::new(settings)
                .ephemeral()
                .database(db)
                .ports(world.ports())
                .without_listener()
                .admin_listen("127.0.0.1:0")
                .start()
                .await
                .expect("node");
            let parts = node.admin_parts();
            ready_tx
                .send((
                    node.admin_addr().expect("admin API on"),
                    parts.events.clone(),
                    parts.stats.clone(),
                ))
                .unwrap();
            let _ = stop_rx.await;
            node.shutdown().await.expect("shutdown");
        })
    });
    let (addr, events, stats) = ready_rx.recv().expect("the node starts");
    let read_token = std::fs::read_to_string(dir.path().join("read-token"))
        .unwrap()
        .trim()
        .to_string();
    Running {
        base: format!("http://{addr}"),
        read_token,
        events,
        stats,
        stop,
        thread,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn admin(n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, n);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = AdminClient::new(&node.base, &node.read_token);

    // The page: the first run warms the connection up and is not counted.
    let page = runtime.block_on(async {
        let mut times = Vec::new();
        let mut listed = 0;
        for run in 0..=PAGE_RUNS {
            let start = Instant::now();
            let page = client.get("/v1/peers?limit=1000").await.expect("a page");
            let elapsed = start.elapsed();
            listed = page["peers"].as_array().map_or(0, Vec::len);
            if run > 0 {
                times.push(elapsed.as_secs_f64() * 1e3);
            }
        }
        json!({
            "median_ms": median(times.clone()),
            "min_ms": times.iter().cloned().fold(f64::MAX, f64::min),
            "max_ms": times.iter().cloned().fold(0.0, f64::max),
            "runs": PAGE_RUNS,
            "peers_in_page": listed,
        })
    });

    // The stream: one client, N changes recorded as fast as one thread can.
    let changes: Vec<PeerChange> = (0..n)
        .map(|i| {
            let mut record = PeerRecord::new(super::pubkey(i), true, Timestamp(1_700_000_000_000));
            record.state = PeerState::Discovering;
            PeerChange {
                from: Some(PeerState::Failed),
                record,
            }
        })
        .collect();
    let stream = runtime.block_on(async {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Instant>();
        let reader = async {
            let mut received = 0usize;
            let mut missed = 0u64;
            let mut last_at = Instant::now();
            let read = client.stream("/v1/events", None, |event| {
                match event.event.as_str() {
                    "peer_state" => received += 1,
                    "missed" => missed += event.data["missed"].as_u64().unwrap_or(0),
                    _ => {}
                }
                last_at = Instant::now();
                received as u64 + missed < n as u64
            });
            let outcome = tokio::time::timeout(Duration::from_secs(120), read).await;
            (received, missed, last_at, outcome.is_ok())
        };
        let writer = async {
            // Subscribed before the first change, so it can receive every one.
            while node.stats.snapshot().event_clients == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let events = node.events.clone();
            let generator = std::thread::spawn(move || {
                let start = Instant::now();
                let _ = first_tx.send(start);
                for change in &changes {
                    events.record(change);
                }
                start.elapsed()
            });
            let started = first_rx.await.expect("the generator starts");
            (started, generator)
        };
        let ((received, missed, last_at, finished), (started, generator)) =
            tokio::join!(reader, writer);
        let generate_time = generator.join().expect("the generator");
        let elapsed = last_at.saturating_duration_since(started).as_secs_f64();
        json!({
            "changes": n,
            "generated_per_s": n as f64 / generate_time.as_secs_f64(),
            "received": received,
            "missed": missed,
            "received_all": received == n,
            "finished_in_time": finished,
            "received_per_s": received as f64 / elapsed.max(1e-9),
        })
    });

    let _ = node.stop.send(());
    node.thread.join().expect("the node thread");
    json!({
        "scenario": "admin",
        "peers": n,
        "peers_page_limit_1000": page,
        "event_stream": stream,
        "floor": "/v1/peers?limit=1000 answered for 10,000 peers; the stream keeps up with 10,000 changes/s",
    })
}
