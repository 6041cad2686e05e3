//! The operator's control plane: an HTTP API on its own listener (`admin.listen`), apart
//! from the BTP listener, that reaches the running node through its [`Node`] handle.
//!
//! Every request carries `Authorization: Bearer <token>`: the admin token may do
//! everything, the read-only token only GETs (and `/metrics`). A NIP-98 event signed by the
//! operator's key (`Authorization: Nostr <base64 event>`, see [`nip98`]) may do everything
//! too. Answers are JSON, refusals
//! `{"error": "..."}` naming what was wrong: 401 for missing or wrong credentials, 403 for
//! the read-only token on a POST, 400 for bad input, 404 for an unknown peer, 409 when the
//! supervisor refuses an operation in the peer's state.
//!
//! - `GET /`: the dashboard (module `dashboard`), a page that needs no credentials to load and
//!   drives everything else with the token the operator enters
//! - `GET /healthz`, `GET /readyz` (503 with reasons until startup recovery is done)
//! - `GET /v1/info`, `GET /v1/peers`, `GET /v1/peers/{id}`
//! - `POST /v1/peers` (follow and connect), `POST /v1/peers/{id}/retry`,
//!   `/disconnect`, `/approve-channel`
//! - `GET /v1/events`: Server-Sent Events (`peer_state`, `channel`, `follow`, throttled
//!   `heartbeat`), resumable; at most `admin.max_event_clients` at once
//! - `GET /v1/log-level`, `POST /v1/log-level {"filter": ...}`: the running log filter
//! - `GET /metrics`: Prometheus text
//!
//! The CLI's client of this API is [`cli`].

pub mod cli;
pub mod client;
mod dashboard;
pub mod events;
pub mod logger;
pub mod metrics;
pub mod nip98;
mod routes;
pub mod stats;
pub mod tokens;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::config::Settings;
use crate::node::Node;
use nostr::PublicKey;
pub use tokens::{Access, Tokens};

/// A running admin API.
pub struct AdminServer {
    /// Where it listens (the port is known even when 0 was asked).
    pub local_addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

/// The admin listener, bound before the node starts (so a taken port stops the node before
/// any actor runs), with the tokens read or created.
pub struct AdminBinding {
    listener: TcpListener,
    tokens: Tokens,
    nip98: nip98::Policy,
    max_event_clients: usize,
    nip98_remembered_events: usize,
}

impl AdminBinding {
    /// Reads (or creates) the token files of `settings.admin` and binds `listen`.
    pub fn bind(listen: &str, settings: &Settings) -> std::io::Result<Self> {
        let admin = &settings.admin;
        let tokens = Tokens::load_or_create(&admin.token_file, &admin.read_token_file)?;
        // Checked with the configuration; an empty one accepts no NIP-98 authorization.
        let operator = match settings.nostr.operator_pubkey.trim() {
            "" => None,
            key => Some(PublicKey::parse(key).map_err(|e| {
                std::io::Error::other(format!("nostr.operator_pubkey `{key}`: {e}"))
            })?),
        };
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        Ok(AdminBinding {
            listener,
            tokens,
            nip98: nip98::Policy {
                operator,
                max_age_seconds: admin.nip98_max_age_seconds,
            },
            max_event_clients: admin.max_event_clients,
            nip98_remembered_events: admin.nip98_remembered_events,
        })
    }
}

/// What every handler reaches.
pub(crate) struct AdminState {
    pub node: Node,
    pub tokens: Tokens,
    pub nip98: nip98::Policy,
    pub nip98_replays: nip98::Replays,
    pub max_event_clients: usize,
}

impl AdminServer {
    /// Serves the admin API for `node` on the bound listener.
    pub fn start(binding: AdminBinding, node: Node) -> std::io::Result<AdminServer> {
        let local_addr = binding.listener.local_addr()?;
        let state = web::Data::new(AdminState {
            node,
            tokens: binding.tokens,
            nip98: binding.nip98,
            nip98_replays: nip98::Replays::new(binding.nip98_remembered_events),
            max_event_clients: binding.max_event_clients,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .workers(1)
        // A client that closes its side is gone: its event stream (and the stream's slot
        // under admin.max_event_clients) ends at once, not at a write that fails later.
        .h1_allow_half_closed(false)
        .disable_signals()
        // An event-stream client that went away is dropped at shutdown without waiting.
        .shutdown_timeout(1)
        .listen(binding.listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        log::info!("admin API on http://{local_addr}/");
        Ok(AdminServer { local_addr, handle })
    }

    /// Stops accepting and closes the connections (event streams included).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// The per-node parts the admin API reads that exist whether or not it listens: the event
/// ring and the metrics, fed from the node's notifications from its start, and the API's
/// own counters.
pub struct AdminParts {
    pub events: Arc<events::EventLog>,
    pub metrics: Arc<metrics::Metrics>,
    pub stats: Arc<stats::AdminStats>,
}

impl AdminParts {
    /// Starts the recorder on `notifications` (subscribed before any peer can change).
    pub fn start(
        settings: &crate::config::AdminSettings,
        notifications: tokio::sync::broadcast::Receiver<crate::node::Notification>,
    ) -> AdminParts {
        let events = events::EventLog::with_heartbeat_interval(
            settings.event_buffer,
            std::time::Duration::from_secs(settings.heartbeat_event_interval_seconds),
        );
        let metrics = Arc::new(metrics::Metrics::new(settings.metrics_per_peer));
        actix_web::rt::spawn(events::run_recorder(
            notifications,
            events.clone(),
            metrics.clone(),
        ));
        AdminParts {
            events,
            metrics,
            stats: Arc::default(),
        }
    }
}
