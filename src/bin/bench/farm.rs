//! The peer farm of `btp-nips-bench network`: N peers in one child process (this binary,
//! `network-farm`), behind a few BTP listeners.
//!
//! Every peer is its own Nostr key. Each listener holds all N keys and proves the one a
//! client's token is bound to ([`SessionServer::start_with_identities`]), so the node
//! under test authenticates each peer for real, one session per peer. Peer `i` announces
//! the endpoint of listener `i % listeners` in a kind 32001 announcement, signed with its
//! own key and written to a file the benchmark puts on its relay, with the base address
//! `first + i + 1` (so no two peers of several farms pay to one address: on a chain, each
//! is a channel of its own).
//!
//! What the peers answer: PING with PONG and `peer.config` with ILDCP (the node's own
//! service), a REQ with an empty Fulfill and then, as a request of their own, the EOSE of
//! that subscription (they hold no events), a CLOSE with an empty Fulfill.
//!
//! Protocol with the parent: the first line of stdin is the configuration (JSON: `peers`,
//! `listeners`, `first`, `announcements`, the file to write); the farm answers one JSON line once it
//! listens and the file is written, then `stats` with its counters, until `quit` or the end
//! of stdin.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use btp_nips_node::discovery::announcement::AnnouncementFields;
use btp_nips_node::events::messages::NostrMessage;
use btp_nips_node::session::connection::Link;
use btp_nips_node::session::service::send_btp_nips;
use btp_nips_node::session::{
    own_address, unix_now, IlpHandler, NodeService, PeerIdentity, SessionContext, SessionServer,
};
use btp_nips_node::wire::btp_nips::{self, MessageType};
use btp_nips_node::wire::ilp::{self, Fulfill};
use nostr::{JsonUtil, Keys, Timestamp};
use serde_json::{json, Value};

use crate::bench_sessions::{raise_fd_limit, rss_of};

/// What the farm answered, for the benchmark's figures.
#[derive(Default)]
struct FarmCounters {
    pings: AtomicU64,
    reqs: AtomicU64,
    eose_delivered: AtomicU64,
    eose_failed: AtomicU64,
}

/// Every peer's answers (see the module documentation).
struct FarmService {
    node: NodeService,
    sender: String,
    request_timeout: std::time::Duration,
    counters: Arc<FarmCounters>,
}

#[async_trait]
impl IlpHandler for FarmService {
    async fn handle_prepare(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        prepare: ilp::Prepare,
    ) -> ilp::Packet {
        let packet = (prepare.destination.as_str() == btp_nips::DESTINATION)
            .then(|| btp_nips::Packet::decode(&prepare.data).ok())
            .flatten();
        let Some(packet) = packet else {
            return self.node.handle_prepare(from, link, prepare).await;
        };
        match packet.message_type {
            MessageType::Ping => {
                self.counters.pings.fetch_add(1, Ordering::Relaxed);
                self.node.handle_prepare(from, link, prepare).await
            }
            MessageType::Req => {
                if let Ok(NostrMessage::Req { id, .. }) = NostrMessage::read(&packet) {
                    self.counters.reqs.fetch_add(1, Ordering::Relaxed);
                    let eose = NostrMessage::Eose { id }.to_packet(&self.sender, unix_now());
                    let (link, timeout, counters) =
                        (link.clone(), self.request_timeout, self.counters.clone());
                    tokio::spawn(async move {
                        let counter = match send_btp_nips(&link, &eose, timeout).await {
                            Ok(_) => &counters.eose_delivered,
                            Err(_) => &counters.eose_failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    });
                }
                ilp::Packet::Fulfill(Fulfill::peer_control(Vec::new()))
            }
            MessageType::Close => ilp::Packet::Fulfill(Fulfill::peer_control(Vec::new())),
            _ => self.node.handle_prepare(from, link, prepare).await,
        }
    }
}

/// The child process (see the module documentation).
pub fn network_farm() {
    raise_fd_limit();
    let config = read_config("the farm");
    let peers = config["peers"].as_u64().expect("peers") as usize;
    let listeners = config["listeners"].as_u64().unwrap_or(1).max(1) as usize;
    let first = config["first"].as_u64().unwrap_or(0) as usize;
    let file = config["announcements"]
        .as_str()
        .expect("announcements")
        .to_string();
    let keys: Vec<Keys> = (0..peers).map(|_| Keys::generate()).collect();

    actix::System::new().block_on(async move {
        let mut settings = crate::bench_sessions::settings();
        // The node under test dials from one address, as many at once as its dial budget.
        settings.max_unauthenticated = settings.max_unauthenticated.max(8192);
        settings.max_unauthenticated_per_ip = settings.max_unauthenticated_per_ip.max(8192);
        let farm_keys = Keys::generate();
        let counters = Arc::new(FarmCounters::default());
        let address = own_address("farm", &farm_keys.public_key());
        let handler = Arc::new(FarmService {
            node: NodeService::new(
                address.clone(),
                settings.asset_code.clone(),
                settings.asset_scale,
            ),
            sender: address.as_str().to_string(),
            request_timeout: settings.request_timeout,
            counters: counters.clone(),
        });
        let ctx = SessionContext::with_handler(farm_keys, address, settings, handler);
        let servers: Vec<SessionServer> = (0..listeners)
            .map(|_| {
                SessionServer::start_with_identities(
                    ctx.clone(),
                    "127.0.0.1:0",
                    None,
                    keys.iter().cloned(),
                )
                .expect("bind a farm listener")
            })
            .collect();
        let ports: Vec<u16> = servers.iter().map(|s| s.local_addr.port()).collect();

        let now = Timestamp::now();
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&file).expect("create the announcements file"),
        );
        for (i, k) in keys.iter().enumerate() {
            let fields = AnnouncementFields {
                node_id: "farm".into(),
                endpoint: format!("ws://127.0.0.1:{}/btp", ports[i % ports.len()]),
                base_address: format!("0x{:040x}", first + i + 1),
                supported_tokens: vec!["eth".into()],
                features: vec!["subscriptions".into()],
                metadata: None,
            };
            writeln!(out, "{}", fields.sign(k, now).as_json()).expect("write an announcement");
        }
        out.flush().expect("write the announcements");
        drop(keys);
        say(json!({ "event": "listening", "ports": ports }));

        let mut commands = stdin_commands();
        while let Some(command) = commands.recv().await {
            match command.trim() {
                "stats" => {
                    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    say(json!({
                        "event": "stats",
                        "live_sessions": servers.iter().map(SessionServer::live_sessions).sum::<usize>(),
                        "pings": get(&counters.pings),
                        "reqs": get(&counters.reqs),
                        "eose_delivered": get(&counters.eose_delivered),
                        "eose_failed": get(&counters.eose_failed),
                        "rss_bytes": rss_of(std::process::id()),
                    }));
                }
                "quit" => break,
                _ => {}
            }
        }
        for server in &servers {
            server.stop().await;
        }
    });
}

/// A child's configuration: the first line of its stdin, JSON.
pub fn read_config(who: &str) -> Value {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{who}: reading the configuration: {e}"));
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{who}: the configuration {line:?} is not JSON: {e}"))
}

/// The parent's commands, the lines after the configuration, read on a thread of their
/// own; the channel ends with stdin (the parent is gone).
pub fn stdin_commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    commands
}

/// One JSON line to the parent.
pub fn say(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
