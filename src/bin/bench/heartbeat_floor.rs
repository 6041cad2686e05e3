//! The heartbeat's floor in the network benchmark's own run: what N round trips of a PING's
//! size cost a process that does nothing else.
//!
//! N bare WebSocket connections (tokio-tungstenite, the read buffer of the node's dialled
//! sessions) to the bare echo endpoint of the sessions benchmark's server (actix-web and
//! actix-ws, in a child process), spread over as many single-threaded runtimes as the node
//! has session threads (as its dialled sessions are). Each
//! sends the bytes of a real PING once per interval and reads the echo, spread over the
//! interval in the node's rounds (a 60th of it each). The CPU of this process over whole
//! intervals, per connection, is the floor the node's heartbeat CPU per peer is set
//! against: the node's figure is that floor plus its own work (the lifecycle's timers, the
//! peer actors, the BTP, ILP and BTP-NIPs codecs, the records and metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bench_sessions::ServerChild;

/// Connections dialled at once.
const CONCURRENCY: usize = 256;
/// The node's heartbeat rounds per interval.
const ROUNDS: u32 = 60;

/// The bytes of one PING as the node sends it.
fn ping_bytes() -> Vec<u8> {
    let expires = btp_nips_node::wire::ilp::Timestamp::from_unix_millis(1_800_000_000_000)
        .expect("a valid date");
    btp_nips_node::wire::btp_nips::ping_message(
        7,
        "g.btp-nips.benchnode.0123456789abcdef",
        1_800_000_000,
        42,
        expires,
    )
    .expect("a PING encodes")
}

/// Measures `intervals` whole intervals of `interval` (after a first one, as for the
/// node) over `n` connections; `threads` is the node's session-thread count.
pub fn heartbeat_floor(n: usize, interval: Duration, intervals: usize, threads: usize) -> Value {
    let server = ServerChild::spawn();
    let port = server.floor_port;
    let url = format!("ws://127.0.0.1:{port}/");
    let threads = threads.max(1);
    let answered = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    // Every thread connected, then the start of the rounds set for all of them.
    let ready = Arc::new(Barrier::new(threads + 1));
    let start_at: Arc<OnceLock<std::time::Instant>> = Arc::new(OnceLock::new());
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let (url, answered, connected, ready, start_at) = (
            url.clone(),
            answered.clone(),
            connected.clone(),
            ready.clone(),
            start_at.clone(),
        );
        // This thread's share: connections t, t + threads, ... (their round is their index).
        let mine: Vec<usize> = (t..n).step_by(threads).collect();
        handles.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(btp_nips_node::session::client::DIAL_READ_BUFFER);
                let sockets: Vec<_> = futures::stream::iter(mine)
                    .map(|i| {
                        let url = url.clone();
                        async move {
                            // Every wait has a deadline: a connection not made in time is
                            // left out (and the count of connections says so).
                            let ws = tokio::time::timeout(
                                Duration::from_secs(30),
                                tokio_tungstenite::connect_async_with_config(
                                    url.as_str(),
                                    Some(config),
                                    true,
                                ),
                            )
                            .await;
                            (
                                i,
                                ws.map_err(|_| ())
                                    .and_then(|ws| ws.map(|(ws, _)| ws).map_err(|_| ())),
                            )
                        }
                    })
                    .buffer_unordered(CONCURRENCY / threads)
                    .collect()
                    .await;
                ready.wait();
                ready.wait();
                let start = tokio::time::Instant::from_std(*start_at.get().expect("set"));
                let ping = ping_bytes();
                for (i, ws) in sockets {
                    let Ok(mut ws) = ws else { continue };
                    connected.fetch_add(1, Ordering::Relaxed);
                    let (ping, answered) = (ping.clone(), answered.clone());
                    let round = i as u32 % ROUNDS;
                    tokio::task::spawn_local(async move {
                        let mut ticker =
                            tokio::time::interval_at(start + interval * round / ROUNDS, interval);
                        loop {
                            ticker.tick().await;
                            if ws.send(Message::Binary(ping.clone().into())).await.is_err() {
                                return;
                            }
                            loop {
                                match ws.next().await {
                                    Some(Ok(Message::Binary(_))) => break,
                                    Some(Ok(_)) => {}
                                    _ => return,
                                }
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                let _ = stopped.await;
            });
        }));
    }
    ready.wait();
    let start = std::time::Instant::now() + Duration::from_millis(100);
    start_at.set(start).expect("set once");
    ready.wait();
    // A first interval as for the node, then the measured ones, whole intervals each.
    std::thread::sleep((start + interval).saturating_duration_since(std::time::Instant::now()));
    let mut cpu_s = Vec::new();
    let mut round_trips = Vec::new();
    for k in 0..intervals {
        let (cpu, done) = (crate::cpu_time(), answered.load(Ordering::Relaxed));
        let end = start + interval * (k as u32 + 2);
        std::thread::sleep(end.saturating_duration_since(std::time::Instant::now()));
        cpu_s.push((crate::cpu_time() - cpu).as_secs_f64());
        round_trips.push(answered.load(Ordering::Relaxed) - done);
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for handle in handles {
        let _ = handle.join();
    }
    let connected = connected.load(Ordering::Relaxed);
    server.stop();
    let per_connection: Vec<f64> = cpu_s.iter().map(|c| c * 1e6 / n as f64).collect();
    json!({
        "connections": connected,
        "cpu_per_connection_us": crate::bench_network::median(&per_connection),
        "cpu_per_connection_us_each": per_connection,
        "round_trips_per_interval": round_trips,
    })
}
