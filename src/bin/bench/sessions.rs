//! `btp-nips-bench sessions --peers N`: real BTP sessions on loopback.
//!
//! The server side runs in a child process (this binary, `session-server`), so each process
//! holds N sockets. In the same run, the client measures:
//! - the floor: N bare WebSocket connects to a bare echo endpoint of the same actix-web
//!   stack, plus one binary round trip each;
//! - N sessions opened with mutual Nostr-key authentication (N distinct client keys), each
//!   answering one PING with its PONG — and the ratio to the floor;
//! - the four-signature floor (N × the signature operations of a session, one thread), and
//!   the lower bound it sets on the ratio: a session costing a bare connection plus those
//!   four operations and nothing else;
//! - PING/PONG round trips per second over the open sessions;
//! - RSS per session, client and server process separately (growth from before the floor's
//!   connections to N sessions open).
//!
//! Both phases dial at most `CONCURRENCY` at once.
//!
//! Each phase also reports the CPU time both processes spent in it (all their threads), so a
//! change is seen as work removed and not only as time.
//!
//! To profile one phase alone (both processes), start the benchmark under
//! `perf record -D -1 --control fifo:CTL` and give it the same FIFO in
//! `BTP_NIPS_BENCH_PERF_CTL=CTL`: it writes `enable` before the N sessions and `disable`
//! after them (before and after the floor instead with `BTP_NIPS_BENCH_PERF_PHASE=floor`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use btp_nips_node::config::Settings;
use btp_nips_node::ports::Session;
use btp_nips_node::session::client::{BtpSession, ClientAuth};
use btp_nips_node::session::{SessionContext, SessionServer};
use futures::{SinkExt, StreamExt};
use nostr::{Keys, PublicKey};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CONCURRENCY: usize = 256;

/// Raises the open-files limit to its hard maximum (N sockets per process).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

pub fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

pub fn settings() -> btp_nips_node::config::SessionSettings {
    let mut s = Settings::defaults().expect("defaults").session;
    s.listen = "127.0.0.1:0".into();
    // Every client of this benchmark is one IP dialling CONCURRENCY at once: the per-IP and
    // total caps on sockets not yet authenticated are set to let that through (what is
    // measured is the cost of a session, not the strangers' budget).
    s.max_unauthenticated = s.max_unauthenticated.max(2 * CONCURRENCY);
    s.max_unauthenticated_per_ip = s.max_unauthenticated_per_ip.max(2 * CONCURRENCY);
    s
}

async fn echo(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(async move {
        while let Some(Ok(msg)) = stream.recv().await {
            let keep = match msg {
                actix_ws::Message::Binary(b) => session.binary(b).await.is_ok(),
                actix_ws::Message::Ping(p) => session.pong(&p).await.is_ok(),
                actix_ws::Message::Close(_) => false,
                _ => true,
            };
            if !keep {
                break;
            }
        }
    });
    Ok(response)
}

/// The child process: a BTP session server and a bare echo endpoint, until stdin closes.
pub fn session_server() {
    raise_fd_limit();
    actix::System::new().block_on(async {
        let keys = Keys::generate();
        let ctx = SessionContext::new(keys.clone(), "benchserver", settings());
        let server = SessionServer::start(ctx, "127.0.0.1:0", None).expect("bind");
        // The same actix-web stack, worker threads and accept queue as the session server.
        let floor = HttpServer::new(|| App::new().default_service(web::to(echo)))
            .workers(settings().io_thread_count())
            .disable_signals()
            .backlog(2048)
            .bind("127.0.0.1:0")
            .expect("bind");
        let floor_port = floor.addrs()[0].port();
        let floor = floor.run();
        actix_web::rt::spawn(floor);
        println!(
            "{floor_port} {} {}",
            server.local_addr.port(),
            keys.public_key().to_hex()
        );
        std::io::stdout().flush().unwrap();
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
    });
}

/// The `session-server` child process: its bare echo port, its BTP port and key. It runs
/// until its stdin closes.
pub struct ServerChild {
    pub child: std::process::Child,
    pub floor_port: u16,
    pub btp_port: u16,
    pub server_pk: PublicKey,
}

impl ServerChild {
    pub fn spawn() -> ServerChild {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("session-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the session server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the session server's ports and key");
        let mut parts = line.split_whitespace();
        let mut port = || -> u16 {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a port of the session server")
        };
        let (floor_port, btp_port) = (port(), port());
        let server_pk = parts
            .next()
            .and_then(|pk| PublicKey::parse(pk).ok())
            .expect("the session server's key");
        ServerChild {
            child,
            floor_port,
            btp_port,
            server_pk,
        }
    }

    /// Closes its stdin and waits for it to end.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One bare connect + round trip, with the same WebSocket settings as our client; the
/// connection is closed at once, so the floor holds no memory the sessions could reuse.
async fn floor_round_trip(url: String) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(btp_nips_node::session::client::DIAL_READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
            .await
            .expect("floor connect");
    ws.send(Message::Binary(vec![0u8; 64].into()))
        .await
        .expect("floor send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => break,
            Some(Ok(_)) => {}
            other => panic!("floor: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
}

/// One session of `keys` (made before the clock starts, with the settings parsed once: a
/// node has its key and settings already when it dials).
async fn open_session(
    endpoint: String,
    server: PublicKey,
    i: u64,
    keys: Keys,
    settings: btp_nips_node::config::SessionSettings,
) -> BtpSession {
    let ctx = SessionContext::new(keys, "benchclient", settings);
    let session = BtpSession::connect(ctx, &endpoint, ClientAuth::Nostr { server })
        .await
        .unwrap_or_else(|e| panic!("session {i}: {e}"));
    assert_eq!(session.ping(i).await, Ok(i), "PONG echoes the nonce");
    session
}

pub fn sessions(n: usize) -> Value {
    let fd_limit = raise_fd_limit();
    // Each process holds a descriptor per open session, besides the floor's dials and its
    // own few: fail now, naming the limit, rather than at session N with a timeout.
    let needed = n + 2 * CONCURRENCY + 64;
    assert!(
        fd_limit >= needed as u64,
        "{n} sessions need about {needed} open files per process; the hard limit is \
         {fd_limit} (ulimit -Hn)"
    );
    let server = ServerChild::spawn();
    let (floor_port, btp_port, server_pk) = (server.floor_port, server.btp_port, server.server_pk);
    let server_pid = server.child.id();

    let result = actix::System::new().block_on(async move {
        // Warm both servers up (threads, allocators) so neither phase pays for it.
        let url = format!("ws://127.0.0.1:{floor_port}/");
        let endpoint = format!("ws://127.0.0.1:{btp_port}/btp");
        futures::stream::iter(0..CONCURRENCY.min(n))
            .map(|_| floor_round_trip(url.clone()))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        let session_settings = settings();
        let warm: Vec<_> = futures::stream::iter(0..16)
            .map(|i| {
                open_session(
                    endpoint.clone(),
                    server_pk,
                    i,
                    Keys::generate(),
                    session_settings.clone(),
                )
            })
            .buffer_unordered(16)
            .collect()
            .await;
        drop(warm);

        // RSS from here (before any of the N connections) to N sessions open: memory the
        // floor's connections freed is reused by the sessions, so a later baseline would
        // undercount.
        let (rss_client_before, rss_server_before) =
            (rss_of(std::process::id()), rss_of(server_pid));

        // Floor: bare WebSocket connect + one round trip, N times.
        perf_control("floor", "enable");
        let cpu = (cpu_ns(std::process::id()), cpu_ns(server_pid));
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|_| floor_round_trip(url.clone()))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        let floor = start.elapsed();
        let floor_cpu = (
            cpu_ns(std::process::id()) - cpu.0,
            cpu_ns(server_pid) - cpu.1,
        );
        perf_control("floor", "disable");
        actix::clock::sleep(Duration::from_millis(500)).await;

        let client_keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
        perf_control("sessions", "enable");
        let cpu = (cpu_ns(std::process::id()), cpu_ns(server_pid));
        let start = Instant::now();
        let sessions: Vec<Arc<BtpSession>> = futures::stream::iter(client_keys.into_iter().enumerate())
            .map(|(i, keys)| {
                open_session(
                    endpoint.clone(),
                    server_pk,
                    i as u64,
                    keys,
                    session_settings.clone(),
                )
            })
            .buffer_unordered(CONCURRENCY)
            .map(Arc::new)
            .collect()
            .await;
        let authed = start.elapsed();
        let sessions_cpu = (
            cpu_ns(std::process::id()) - cpu.0,
            cpu_ns(server_pid) - cpu.1,
        );
        perf_control("sessions", "disable");
        let rss_client = rss_of(std::process::id()).saturating_sub(rss_client_before);
        let rss_server = rss_of(server_pid).saturating_sub(rss_server_before);

        // PING/PONG rate over the open sessions.
        let pings = (2 * n).max(20_000);
        let start = Instant::now();
        let answered = futures::stream::iter(0..pings)
            .map(|i| {
                let s = sessions[i % n].clone();
                async move { s.ping(i as u64).await == Ok(i as u64) }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        let ping_time = start.elapsed();
        assert_eq!(answered, pings, "every PING got its PONG");
        for s in &sessions {
            s.close().await;
        }
        let auth_floor = auth_floor(n);
        // Both phases keep the cores about as busy (their CPU figures show it), so their
        // times stand as their CPU does: a session that cost a bare connection plus its four
        // signature operations, and nothing else, would still be this many times the floor.
        let floor_cpu_s = (floor_cpu.0 + floor_cpu.1) as f64 / 1e9;
        let ratio_lower_bound = (floor_cpu_s + auth_floor.as_secs_f64()) / floor_cpu_s;
        json!({
            "scenario": "sessions",
            "peers": n,
            "concurrency": CONCURRENCY,
            "floor_ms": floor.as_secs_f64() * 1e3,
            "floor": "N bare WebSocket connects + one binary round trip each",
            "sessions_ms": authed.as_secs_f64() * 1e3,
            "sessions": "N sessions: connect, mutual Nostr auth (sign + verify both ways), one PING/PONG",
            "ratio_to_floor": authed.as_secs_f64() / floor.as_secs_f64(),
            "floor_cpu_us_per_connection": {
                "client": floor_cpu.0 as f64 / 1e3 / n as f64,
                "server": floor_cpu.1 as f64 / 1e3 / n as f64,
            },
            "sessions_cpu_us_per_session": {
                "client": sessions_cpu.0 as f64 / 1e3 / n as f64,
                "server": sessions_cpu.1 as f64 / 1e3 / n as f64,
            },
            "auth_floor_ms": auth_floor.as_secs_f64() * 1e3,
            "auth_floor": "N × the four signature operations of a session (sign and check the token, sign and check the proof), one thread",
            "ratio_to_auth_floor": authed.as_secs_f64() / auth_floor.as_secs_f64(),
            "ratio_lower_bound": ratio_lower_bound,
            "ratio_lower_bound_is": "(floor CPU of both processes + the four-signature floor) / floor CPU",
            "per_session_us": authed.as_secs_f64() * 1e6 / n as f64,
            "ping_pong_round_trips": pings,
            "ping_pong_per_second": pings as f64 / ping_time.as_secs_f64(),
            "rss_per_session_client_bytes": rss_client / n as u64,
            "rss_per_session_server_bytes": rss_server / n as u64,
            "fd_limit": fd_limit,
        })
    });
    server.stop();
    result
}

/// CPU time (nanoseconds, user and system) of every live thread of process `pid`, from
/// `/proc/PID/task/*/schedstat`.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Tells a `perf record --control` FIFO named in `BTP_NIPS_BENCH_PERF_CTL` to start or stop
/// sampling, when `phase` is the one to profile (`BTP_NIPS_BENCH_PERF_PHASE`, `sessions`
/// unless set); without the variable, nothing.
pub fn perf_control(phase: &str, command: &str) {
    let profiled = std::env::var("BTP_NIPS_BENCH_PERF_PHASE").unwrap_or_else(|_| "sessions".into());
    if phase != profiled {
        return;
    }
    if let Some(path) = std::env::var_os("BTP_NIPS_BENCH_PERF_CTL") {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut fifo| fifo.write_all(format!("{command}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("perf control {path:?}: {e}");
        }
    }
}

/// N × what authentication must cost at least: the client signs its token, the server
/// checks it, signs its proof, and the client checks that — on one thread, no IO.
fn auth_floor(n: usize) -> Duration {
    use btp_nips_node::session::auth;
    let server = Keys::generate();
    let clients: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
    let endpoint = "ws://127.0.0.1:1/btp";
    let policy = auth::TokenPolicy {
        endpoints: vec![endpoint.to_string()],
        max_age_secs: 60,
        max_skew_secs: 60,
    };
    let now = btp_nips_node::session::unix_now();
    let start = Instant::now();
    for (i, client) in clients.iter().enumerate() {
        let token =
            auth::sign_token(client, endpoint, &server.public_key(), now, i as u64).expect("sign");
        let text = auth::token_text(&token);
        let checked =
            auth::check_token(None, &text, &server.public_key(), &policy, now).expect("check");
        let proof = auth::sign_proof(&server, &checked, now).expect("proof");
        auth::verify_proof(&auth::token_text(&proof), &token, &server.public_key())
            .expect("verify");
    }
    start.elapsed()
}
