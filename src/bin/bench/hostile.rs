//! `btp-nips-bench hostile --peers N`: the node under attack, attack by attack.
//!
//! The node runs in a child process (this binary, `hostile-node`): a whole node built with
//! `NodeBuilder`, listening on loopback, with its operator relay (nostr-relay-builder, in the
//! child) and the in-memory world for discovery and channels. It follows one peer, the
//! "friend", whose session this process opens and which sends a PING every 50 ms on its own
//! thread for the whole run: a missed PONG (none within 5 s) is what an attack costs a
//! followed peer.
//!
//! Each attack goes through real sockets; for each the benchmark prints what was sent, what
//! the node did (read from its counters), the peak growth of the child's RSS while it ran,
//! and the friend's PONGs answered and missed meanwhile:
//! - `unauthenticated_sockets`: N sockets that never authenticate;
//! - `stranger_sessions`: N authenticated sessions of keys nobody follows, then silence;
//! - `ping_flood`: 200,000 BTP PINGs from one session that never reads;
//! - `websocket_ping_flood`: 200,000 WebSocket pings from one session that never reads;
//! - `wide_reqs`: a 600-filter REQ, then REQs of 16 filters until refused, from strangers;
//! - `replay_guard` (in this process): 2 × `session.max_replay_entries` logins' token ids.
//!
//! Every wait has a deadline: an attack the node does not answer in time is reported as
//! such, never a hang.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btp_nips_node::config::Settings;
use btp_nips_node::events::messages::NostrMessage;
use btp_nips_node::node::NodeBuilder;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::Session;
use btp_nips_node::session::auth::{sign_token, token_text, ReplayGuard};
use btp_nips_node::session::client::{BtpSession, ClientAuth};
use btp_nips_node::session::{unix_now, SessionContext};
use btp_nips_node::wire::btp::{Body, Packet};
use btp_nips_node::wire::btp_nips;
use btp_nips_node::wire::ilp::Timestamp;
use futures::{SinkExt, StreamExt};
use nostr::{Filter, Keys, PublicKey, SecretKey};
use nostr_relay_builder::prelude::{LocalRelay, RateLimit, RelayBuilder};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bench_farm::{say, stdin_commands};
use crate::bench_sessions::{raise_fd_limit, rss_of};

/// Messages of each flood.
const FLOOD: u32 = 200_000;
/// Filters in the one wide REQ.
const WIDE_FILTERS: usize = 600;
/// How long any one step may take before the attack is reported as unanswered.
const STEP: Duration = Duration::from_secs(10);

/// The node's settings for the run: the defaults, with the deadlines that end an attack
/// shortened so the run takes seconds (the bounds themselves are the defaults).
fn node_yaml(db: &str, relay: &str) -> String {
    format!(
        "database:\n  url: \"{db}\"\n\
         nostr:\n  allow_ws_loopback: true\n\
         session:\n  listen: \"127.0.0.1:0\"\n  auth_timeout_ms: 2000\n\
         \x20 unknown_idle_timeout_ms: 3000\n  write_timeout_ms: 2000\n\
         \x20 ws_ping_interval_ms: 20000\n\
         events:\n  operator_relay: \"{relay}\"\n",
    )
}

/// The child process: the node under attack, until `quit` (or the end of stdin). Answers
/// `stats` with one JSON line of its counters.
pub fn hostile_node() {
    raise_fd_limit();
    actix::System::new().block_on(async move {
        let relay = LocalRelay::new(
            RelayBuilder::default()
                .addr("127.0.0.1".parse().unwrap())
                .rate_limit(RateLimit {
                    max_reqs: 1_000,
                    notes_per_minute: 1_000_000,
                }),
        );
        relay.run().await.expect("operator relay");
        let relay_url = relay.url().await.to_string();
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("hostile.db").display());
        let settings =
            Settings::from_yaml_overrides(&node_yaml(&db, &relay_url)).expect("settings");
        let keys = Keys::generate();
        let friend = Keys::generate();
        let world = MemoryWorld::new();
        world.add_ready_peer(&friend.public_key().to_hex());
        let ports = world.ports();
        let node = NodeBuilder::new(settings)
            .without_admin()
            .keys(keys.clone())
            .resolver(ports.resolver)
            .sessions(ports.sessions)
            .channels(ports.channels)
            .start()
            .await
            .expect("node");
        node.follow(&friend.public_key().to_hex())
            .await
            .expect("follow the friend");
        say(json!({
            "endpoint": node.loopback_endpoint().expect("listening"),
            "pubkey": keys.public_key().to_hex(),
            "friend_secret": friend.secret_key().to_secret_hex(),
        }));

        let mut commands = stdin_commands();
        while let Some(command) = commands.recv().await {
            match command.trim() {
                "stats" => {
                    let s = node.session_stats().unwrap_or_default();
                    let serve = node.event_flow().map(|f| f.serve_stats().clone());
                    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    let running = node.stats().await.map(|s| s.running).unwrap_or(0);
                    say(json!({
                        "inbound_sessions": node.inbound_sessions(),
                        "peer_actors": running,
                        "refused_unauthenticated": s.refused_unauthenticated,
                        "refused_unauthenticated_per_ip": s.refused_unauthenticated_per_ip,
                        "unauthenticated": s.unauthenticated,
                        "auth_timeouts": s.auth_timeouts,
                        "auth_refused": s.auth_refused,
                        "closed_write_deadline": s.closed_write_deadline,
                        "closed_idle_stranger": s.closed_idle_stranger,
                        "requests_refused_in_flight": s.requests_refused_in_flight,
                        "queue_high_water": s.queue_high_water,
                        "in_flight_high_water": s.in_flight_high_water,
                        "refused_filters_per_req": serve.as_ref().map_or(0, |x| get(&x.refused_filters_per_req)),
                        "refused_live_reqs_per_peer": serve.as_ref().map_or(0, |x| get(&x.refused_live_reqs_per_peer)),
                        "refused_live_reqs_strangers": serve.as_ref().map_or(0, |x| get(&x.refused_live_reqs_strangers)),
                        "refused_live_reqs": serve.as_ref().map_or(0, |x| get(&x.refused_live_reqs)),
                        "refused_subscriptions_per_peer": serve.as_ref().map_or(0, |x| get(&x.refused_subscriptions_per_peer)),
                        "served_live_reqs": node.event_flow().map_or(0, |f| f.served_live_reqs()),
                    }));
                }
                "quit" => break,
                _ => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await;
        relay.shutdown();
    });
}

/// The parent's handle on the child: its commands, answers and RSS.
struct Target {
    child: Child,
    answers: BufReader<std::process::ChildStdout>,
    endpoint: String,
    server: PublicKey,
    friend: Keys,
}

impl Target {
    fn start() -> Target {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("hostile-node")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the node under attack");
        let mut answers = BufReader::new(child.stdout.take().unwrap());
        let hello = read_json(&mut answers);
        let text = |k: &str| hello[k].as_str().expect(k).to_string();
        Target {
            endpoint: text("endpoint"),
            server: PublicKey::parse(&text("pubkey")).unwrap(),
            friend: Keys::new(SecretKey::parse(&text("friend_secret")).unwrap()),
            child,
            answers,
        }
    }

    fn stats(&mut self) -> Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "stats").unwrap();
        stdin.flush().unwrap();
        read_json(&mut self.answers)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "quit");
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn read_json(from: &mut impl BufRead) -> Value {
    let mut line = String::new();
    from.read_line(&mut line).expect("the node answers");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("node said {line:?}: {e}"))
}

/// The friend's heartbeat on its own thread and runtime, so the attacker's load in this
/// process never delays it: PONGs answered and missed, and the slowest round trip.
struct Heartbeat {
    answered: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    slowest_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeat {
    fn start(target: &Target) -> Heartbeat {
        let (answered, missed, slowest_us): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, m, s, halt) = (
            Arc::clone(&answered),
            Arc::clone(&missed),
            Arc::clone(&slowest_us),
            Arc::clone(&stop),
        );
        let (endpoint, server, friend) = (
            target.endpoint.clone(),
            target.server,
            target.friend.clone(),
        );
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let ctx = SessionContext::new(friend, "friend", crate::bench_sessions::settings());
                let session = BtpSession::connect(ctx, &endpoint, ClientAuth::Nostr { server })
                    .await
                    .expect("the friend's session");
                ready_tx.send(()).unwrap();
                let mut nonce = 0u64;
                while !halt.load(Ordering::Relaxed) {
                    nonce += 1;
                    let sent = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), session.ping(nonce)).await {
                        Ok(Ok(n)) if n == nonce => {
                            a.fetch_add(1, Ordering::Relaxed);
                            s.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            m.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    actix::clock::sleep(Duration::from_millis(50)).await;
                }
                session.close().await;
            });
        });
        ready.recv().expect("the friend connected");
        Heartbeat {
            answered,
            missed,
            slowest_us,
            stop,
            thread,
        }
    }

    /// Answered and missed PONGs so far, and the slowest round trip; resets the slowest.
    fn read(&self) -> (u64, u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.missed.load(Ordering::Relaxed),
            self.slowest_us.swap(0, Ordering::Relaxed),
        )
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// The child's RSS sampled every 10 ms on a thread while an attack runs: the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssPeak {
    fn watch(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(rss_of(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, halt) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                p.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssPeak { peak, stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare connect; `Err` with the HTTP status when the upgrade is refused.
async fn raw_connect(endpoint: &str) -> Result<RawWs, String> {
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(endpoint)).await {
        Err(_) => Err("no answer".into()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            Err(format!("HTTP {}", r.status().as_u16()))
        }
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// A raw session authenticated with a fresh key nobody follows; `Err` says what refused it.
async fn stranger(endpoint: &str, server: &PublicKey) -> Result<RawWs, String> {
    let keys = Keys::generate();
    let mut ws = raw_connect(endpoint).await?;
    let token = sign_token(&keys, endpoint, server, unix_now(), fastrand::u64(..))
        .map_err(|e| e.to_string())?;
    let auth = Packet::auth(1, &keys.public_key().to_hex(), &token_text(&token));
    ws.send(Message::Binary(auth.encode().unwrap().into()))
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    return Packet::decode(&b).map_err(|e| e.to_string())
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or("closed".into(), |f| f.reason.to_string()))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            }
        }
    })
    .await
    .map_err(|_| "no answer to AUTH".to_string())??;
    if matches!(answer.body, Body::Response(_)) {
        Ok(ws)
    } else {
        Err(format!("refused: {:?}", answer.body))
    }
}

/// One BTP message carrying a BTP-NIPs PING under `request_id`.
fn ping_message(request_id: u32) -> Vec<u8> {
    let ping = btp_nips::Packet::ping("g.btp-nips.x.0011223344556677", 1, "00000000000000ff");
    let expiry = Timestamp::now().checked_add_millis(600_000).unwrap();
    let prepare = ping.to_prepare(expiry).unwrap().encode().unwrap();
    Packet::ilp_message(request_id, prepare).encode().unwrap()
}

/// The answer to a REQ: the NOTICE (or failure) when refused, `None` when served.
async fn ask(session: &BtpSession, req: btp_nips::Packet) -> Option<String> {
    match tokio::time::timeout(STEP, session.send(req)).await {
        Ok(Ok(Some(answer))) => Some(answer.payload.nostr.to_string()),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(format!("{e:?}")),
        Err(_) => Some("no answer".into()),
    }
}

/// Polls the node's counters until `done` holds or `limit` passes; the last counters and
/// whether `done` held.
fn settle(target: &mut Target, limit: Duration, done: impl Fn(&Value) -> bool) -> (Value, bool) {
    let deadline = Instant::now() + limit;
    loop {
        let stats = target.stats();
        if done(&stats) {
            return (stats, true);
        }
        if Instant::now() >= deadline {
            return (stats, false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delta(after: &Value, before: &Value, key: &str) -> u64 {
    after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0)
}

/// How many sockets this process may hold at once (both ends are not here: the node's ends
/// are in the child), leaving room for everything else.
fn socket_budget(wanted: usize) -> usize {
    let limit = raise_fd_limit() as usize;
    wanted.min(limit.saturating_sub(256)).max(1)
}

pub fn hostile(peers: usize) -> Value {
    let n = socket_budget(peers);
    let mut target = Target::start();
    let heartbeat = Heartbeat::start(&target);
    let system = actix::System::new();
    let mut attacks = Vec::new();
    let mut run =
        |name: &str,
         target: &mut Target,
         attack: &mut dyn FnMut(&mut Target, &actix::SystemRunner) -> (Value, Value)| {
            let before = target.stats();
            let rss_before = rss_of(target.pid());
            let (answered_before, missed_before, _) = heartbeat.read();
            let rss = RssPeak::watch(target.pid());
            let started = Instant::now();
            let (sent, done) = attack(target, &system);
            let elapsed = started.elapsed();
            let peak = rss.finish();
            let (answered, missed, slowest_us) = heartbeat.read();
            let after = target.stats();
            let row = json!({
                "attack": name,
                "sent": sent,
                "node": done,
                "seconds": elapsed.as_secs_f64(),
                "rss_peak_growth_bytes": peak.saturating_sub(rss_before),
                "friend_pongs": answered - answered_before,
                "friend_missed_pongs": missed - missed_before,
                "friend_slowest_rtt_ms": slowest_us as f64 / 1e3,
                "counters_before": before,
                "counters_after": after,
            });
            eprintln!(
                "{name}: {} | {} | RSS peak +{} KiB | friend missed {}",
                row["sent"],
                row["node"],
                row["rss_peak_growth_bytes"].as_u64().unwrap() / 1024,
                row["friend_missed_pongs"]
            );
            attacks.push(row);
        };

    run(
        "unauthenticated_sockets",
        &mut target,
        &mut |target, system| {
            let before = target.stats();
            let endpoint = target.endpoint.clone();
            let (held, refused) = system.block_on(async {
                let results: Vec<Result<RawWs, String>> = futures::stream::iter(0..n)
                    .map(|_| raw_connect(&endpoint))
                    .buffer_unordered(64)
                    .collect()
                    .await;
                let refused = results.iter().filter(|r| r.is_err()).count();
                (results.into_iter().flatten().collect::<Vec<_>>(), refused)
            });
            let opened = held.len();
            let (after, settled) = settle(target, Duration::from_secs(30), |s| {
                s["unauthenticated"].as_u64() == Some(0)
            });
            drop(held);
            (
                json!(format!("{n} WebSocket upgrades that never authenticate")),
                json!({
                    "opened": opened,
                    "refused": refused,
                    "refused_max_unauthenticated": delta(&after, &before, "refused_unauthenticated"),
                    "refused_max_unauthenticated_per_ip": delta(&after, &before, "refused_unauthenticated_per_ip"),
                    "closed_at_auth_deadline": delta(&after, &before, "auth_timeouts"),
                    "all_closed": settled,
                }),
            )
        },
    );

    run("stranger_sessions", &mut target, &mut |target, system| {
        let before = target.stats();
        let (endpoint, server) = (target.endpoint.clone(), target.server);
        let (held, refused, most_open) = system.block_on(async {
            // 8 at once: every stranger here is one IP, whose sockets waiting to
            // authenticate are capped (`session.max_unauthenticated_per_ip`); what is
            // measured here is what admitted strangers cost.
            let results: Vec<Result<RawWs, String>> = futures::stream::iter(0..n)
                .map(|_| stranger(&endpoint, &server))
                .buffer_unordered(8)
                .collect()
                .await;
            let refused = results.iter().filter(|r| r.is_err()).count();
            let held: Vec<RawWs> = results.into_iter().flatten().collect();
            let open = held.len();
            (held, refused, open)
        });
        // Closed when idle, and their slots given back: only the friend's remain.
        let (after, settled) = settle(target, Duration::from_secs(60), |s| {
            s["inbound_sessions"].as_u64() == Some(1) && s["peer_actors"].as_u64() == Some(1)
        });
        drop(held);
        (
            json!(format!(
                "{n} authenticated sessions of unknown keys, then silence"
            )),
            json!({
                "admitted": most_open,
                "refused": refused,
                "closed_idle": delta(&after, &before, "closed_idle_stranger"),
                "inbound_sessions_after": after["inbound_sessions"],
                "peer_actors_after": after["peer_actors"],
                "all_closed": settled,
            }),
        )
    });

    run("ping_flood", &mut target, &mut |target, system| {
        let before = target.stats();
        let (endpoint, server) = (target.endpoint.clone(), target.server);
        let sent = system.block_on(async {
            let Ok(mut ws) = stranger(&endpoint, &server).await else {
                return 0;
            };
            let template = ping_message(0);
            let flood = async {
                for i in 0..FLOOD {
                    let mut bytes = template.clone();
                    bytes[1..5].copy_from_slice(&i.to_be_bytes());
                    if ws.feed(Message::Binary(bytes.into())).await.is_err() {
                        return i;
                    }
                    if i % 64 == 63 && ws.flush().await.is_err() {
                        return i;
                    }
                }
                FLOOD
            };
            tokio::time::timeout(Duration::from_secs(60), flood)
                .await
                .unwrap_or(FLOOD)
        });
        let (after, settled) = settle(target, STEP, |s| {
            s["closed_write_deadline"].as_u64() > before["closed_write_deadline"].as_u64()
        });
        (
            json!(format!("{FLOOD} PINGs without reading one answer")),
            json!({
                "pings_written_before_the_node_stopped_reading": sent,
                "closed_at_write_deadline": settled,
                "requests_refused_in_flight": delta(&after, &before, "requests_refused_in_flight"),
                "queue_high_water": after["queue_high_water"],
                "in_flight_high_water": after["in_flight_high_water"],
            }),
        )
    });

    run(
        "websocket_ping_flood",
        &mut target,
        &mut |target, system| {
            let before = target.stats();
            let (endpoint, server) = (target.endpoint.clone(), target.server);
            let sent = system.block_on(async {
                let Ok(mut ws) = stranger(&endpoint, &server).await else {
                    return 0;
                };
                let flood = async {
                    for i in 0..FLOOD {
                        if ws.feed(Message::Ping(vec![7u8; 125].into())).await.is_err() {
                            return i;
                        }
                        if i % 64 == 63 && ws.flush().await.is_err() {
                            return i;
                        }
                    }
                    FLOOD
                };
                tokio::time::timeout(Duration::from_secs(60), flood)
                    .await
                    .unwrap_or(FLOOD)
            });
            let (after, settled) = settle(target, STEP, |s| {
                s["closed_write_deadline"].as_u64() > before["closed_write_deadline"].as_u64()
            });
            let _ = after;
            (
                json!(format!(
                    "{FLOOD} WebSocket pings of 125 bytes without reading a pong"
                )),
                json!({
                    "pings_written_before_the_node_stopped_reading": sent,
                    "closed_at_write_deadline": settled,
                }),
            )
        },
    );

    run("wide_reqs", &mut target, &mut |target, system| {
        let before = target.stats();
        let (endpoint, server) = (target.endpoint.clone(), target.server);
        let (wide, accepted, refused, sent) = system.block_on(async {
            let open = |i: u32| {
                let ctx = SessionContext::new(
                    Keys::generate(),
                    &format!("stranger{i}"),
                    crate::bench_sessions::settings(),
                );
                let endpoint = endpoint.clone();
                async move {
                    tokio::time::timeout(
                        STEP,
                        BtpSession::connect(ctx, &endpoint, ClientAuth::Nostr { server }),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                }
            };
            let req = |id: String, filters: usize| {
                NostrMessage::Req {
                    id,
                    filters: vec![Filter::new(); filters],
                }
                .to_packet("g.x", 1)
            };
            let (mut accepted, mut refused, mut sent) = (0, 0, 1);
            let Some(first) = open(0).await else {
                return (Some("no session".to_string()), 0, 0, 0);
            };
            let wide = ask(&first, req("wide".into(), WIDE_FILTERS)).await;
            let mut sessions = vec![first];
            // Strangers, one after another, each sending REQs of 16 filters until refused,
            // until two in a row are refused at once (the strangers' share is full).
            let mut refused_at_once = 0;
            for i in 1..64u32 {
                let Some(s) = open(i).await else { break };
                let mut served_here = 0;
                for r in 0..64 {
                    sent += 1;
                    match ask(&s, req(format!("r{r}"), 16)).await {
                        None => {
                            accepted += 1;
                            served_here += 1;
                        }
                        Some(_) => {
                            refused += 1;
                            break;
                        }
                    }
                }
                sessions.push(s);
                refused_at_once = if served_here == 0 {
                    refused_at_once + 1
                } else {
                    0
                };
                if refused_at_once == 2 {
                    break;
                }
            }
            for s in &sessions {
                s.close().await;
            }
            (wide, accepted, refused, sent)
        });
        let after = target.stats();
        (
            json!(format!(
                "one REQ of {WIDE_FILTERS} filters, then {} REQs of 16 filters from strangers",
                sent - 1
            )),
            json!({
                "wide_req_answer": wide,
                "reqs_served": accepted,
                "reqs_refused": refused,
                "refused_max_filters_per_req": delta(&after, &before, "refused_filters_per_req"),
                "refused_max_live_reqs_per_peer": delta(&after, &before, "refused_live_reqs_per_peer"),
                "refused_strangers_share": delta(&after, &before, "refused_live_reqs_strangers"),
                "refused_max_live_reqs": delta(&after, &before, "refused_live_reqs"),
                "live_reqs_served_at_the_end": after["served_live_reqs"],
            }),
        )
    });

    heartbeat.stop();
    target.stop();
    attacks.push(replay_guard());
    let missed: u64 = attacks
        .iter()
        .map(|a| a["friend_missed_pongs"].as_u64().unwrap_or(0))
        .sum();
    json!({
        "scenario": "hostile",
        "peers": peers,
        "sockets_per_attack": n,
        "friend_missed_pongs_total": missed,
        "attacks": attacks,
    })
}

/// The replay guard on its own, in this process: 2 × its bound of distinct token ids, the
/// cost of a login at the start and at the end, and the most ids it ever held.
fn replay_guard() -> Value {
    let bound = Settings::defaults()
        .map(|s| s.session.max_replay_entries)
        .unwrap_or(100_000);
    let mut guard = ReplayGuard::new(bound);
    let now = unix_now();
    let logins = 2 * bound;
    let window = (bound / 10).max(1);
    let (mut first, mut last) = (Duration::ZERO, Duration::ZERO);
    let mut refused = 0u64;
    let mut held_max = 0;
    for i in 0..logins {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        id[8..16].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        let start = Instant::now();
        if guard.admit(id, now + 60 + (i as u64 / 1000), now).is_err() {
            refused += 1;
        }
        let took = start.elapsed();
        if i < window {
            first += took;
        } else if i >= logins - window {
            last += took;
        }
        held_max = held_max.max(guard.len());
    }
    let per = |d: Duration| d.as_nanos() as f64 / window as f64;
    json!({
        "attack": "replay_guard",
        "sent": format!("{logins} distinct token ids (2 × session.max_replay_entries), in this process"),
        "node": {
            "bound": bound,
            "most_held": held_max,
            "refused": refused,
            "ns_per_login_first_tenth": per(first),
            "ns_per_login_last_tenth": per(last),
            "ratio_last_to_first": per(last) / per(first).max(1.0),
        },
    })
}
