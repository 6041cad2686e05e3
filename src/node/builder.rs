//! [`NodeBuilder`]: the one place the node is assembled.

use std::sync::Arc;

use actix::prelude::*;
use nostr::Keys;
use tokio::sync::{broadcast, watch, Mutex};

use super::{Inner, Node, NodeError};
use crate::actors::clock::NodeClock;
use crate::actors::directory::SupervisorDirectory;
use crate::actors::persistence::PersistenceActor;
use crate::actors::supervisor::PeerSupervisor;
use crate::chain::EvmChannels;
use crate::config::Settings;
use crate::discovery::{identity, Discovery};
use crate::events::EventFlow;
use crate::ports::unwired::Unwired;
use crate::ports::{
    AddressResolver, ChannelPort, PeerDirectory, Ports, SessionConnector, Subscriptions,
};
use crate::session::{self, BtpConnector, IlpHandler, NodeService, SessionContext, SessionServer};
use crate::storage::Database;

/// How many notifications a slow `notifications()` receiver may fall behind.
const NOTIFICATION_CAPACITY: usize = 4096;

/// Wraps the node's answer to ILP Prepares (tests make a peer go silent with it).
type HandlerLayer = Box<dyn FnOnce(Arc<dyn IlpHandler>) -> Arc<dyn IlpHandler>>;

/// Builds a [`Node`] from its [`Settings`]. Every port the settings enable is the real
/// adapter; the others report a transient fault naming what is not configured. A test or
/// the benchmark may replace any port, the listen address, the database and the clock.
pub struct NodeBuilder {
    settings: Settings,
    keys: Option<Keys>,
    ephemeral: bool,
    database: Option<Database>,
    clock: Option<NodeClock>,
    listen: Option<String>,
    admin_listen: Option<String>,
    resolver: Option<Arc<dyn AddressResolver>>,
    sessions: Option<Arc<dyn SessionConnector>>,
    channels: Option<Arc<dyn ChannelPort>>,
    subscriptions: Option<Arc<dyn Subscriptions>>,
    handler_layer: Option<HandlerLayer>,
}

impl NodeBuilder {
    pub fn new(settings: Settings) -> Self {
        NodeBuilder {
            settings,
            keys: None,
            ephemeral: false,
            database: None,
            clock: None,
            listen: None,
            admin_listen: None,
            resolver: None,
            sessions: None,
            channels: None,
            subscriptions: None,
            handler_layer: None,
        }
    }

    /// The node's Nostr key (default: `BTP_NIPS_NODE_NSEC`, else `node.key_file`; a node
    /// without either does not start).
    pub fn keys(mut self, keys: Keys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// A new key for this run only, instead of the configured one (`run --ephemeral`).
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// An already opened database (default: `database.url`).
    pub fn database(mut self, db: Database) -> Self {
        self.database = Some(db);
        self
    }

    /// The clock the peers' deadlines are taken from (default: the system's).
    pub fn clock(mut self, clock: NodeClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where the BTP server listens (default `session.listen`; empty: no server).
    pub fn listen(mut self, listen: impl Into<String>) -> Self {
        self.listen = Some(listen.into());
        self
    }

    /// No BTP server (a node that only dials out, or runs on in-memory ports).
    pub fn without_listener(self) -> Self {
        self.listen("")
    }

    /// Where the admin API listens (default `admin.listen`; empty: no admin API).
    pub fn admin_listen(mut self, listen: impl Into<String>) -> Self {
        self.admin_listen = Some(listen.into());
        self
    }

    /// No admin API (tests and benchmarks that do not drive the node over HTTP).
    pub fn without_admin(self) -> Self {
        self.admin_listen("")
    }

    pub fn resolver(mut self, resolver: Arc<dyn AddressResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn sessions(mut self, sessions: Arc<dyn SessionConnector>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    pub fn channels(mut self, channels: Arc<dyn ChannelPort>) -> Self {
        self.channels = Some(channels);
        self
    }

    pub fn subscriptions(mut self, subscriptions: Arc<dyn Subscriptions>) -> Self {
        self.subscriptions = Some(subscriptions);
        self
    }

    /// Replaces all four peer ports at once (the in-memory world of the core's tests).
    pub fn ports(self, ports: Ports) -> Self {
        self.resolver(ports.resolver)
            .sessions(ports.sessions)
            .channels(ports.channels)
            .subscriptions(ports.subscriptions)
    }

    /// Wraps the node's own answer to peers' ILP Prepares.
    pub fn wrap_handler(
        mut self,
        layer: impl FnOnce(Arc<dyn IlpHandler>) -> Arc<dyn IlpHandler> + 'static,
    ) -> Self {
        self.handler_layer = Some(Box::new(layer));
        self
    }

    /// Opens the database, builds the adapters and starts every actor.
    pub async fn start(self) -> Result<Node, NodeError> {
        let settings = self.settings;
        // One identity for every part: sessions, discovery and the event flow.
        let (keys, key_source) = match (self.keys, self.ephemeral) {
            (Some(keys), _) => (keys, "given to the node builder".to_string()),
            (None, true) => (
                Keys::generate(),
                "ephemeral (run --ephemeral): a new identity every run, which peers will not \
                 recognise after a restart"
                    .to_string(),
            ),
            (None, false) => {
                let (keys, source) = identity::load_node_key(&settings)
                    .map_err(|e| NodeError::Keys(e.to_string()))?;
                (keys, format!("from {source}"))
            }
        };
        log::info!("identity: {} {key_source}", keys.public_key().to_hex());
        let own_address = session::own_address(&settings.node.id, &keys.public_key());
        let db = match self.database {
            Some(db) => db,
            None => Database::open(&settings.database.url, settings.database.pool_size)?,
        };
        let stored = db.load_all()?;
        log::info!("loaded {} stored peers", stored.len());
        // The admin listener is bound before any actor starts: a taken port stops the node
        // with nothing running.
        let admin_listen = self
            .admin_listen
            .unwrap_or_else(|| settings.admin.listen.clone());
        let admin_binding = match admin_listen.trim() {
            "" => None,
            listen => Some(crate::admin::AdminBinding::bind(listen, &settings).map_err(
                |source| NodeError::AdminListen {
                    listen: listen.to_owned(),
                    source,
                },
            )?),
        };
        let clock = self.clock.unwrap_or_else(NodeClock::system);

        // The supervisor's address exists before the supervisor: the adapters that report
        // to it (event flow, session server, follow monitor) are built with it, and the
        // supervisor is then built with the ports they make up.
        let supervisor_ctx = Context::<PeerSupervisor>::new();
        let directory: Arc<dyn PeerDirectory> =
            Arc::new(SupervisorDirectory::new(supervisor_ctx.address()));

        let discovery = Discovery::connect(&settings, keys.clone()).await?;
        let subscriptions_given = self.subscriptions.is_some();
        let events = match self.subscriptions {
            Some(_) => None,
            None => {
                EventFlow::from_settings(&settings, own_address.clone(), directory.clone()).await?
            }
        };
        let mut service = NodeService::new(
            own_address.clone(),
            settings.session.asset_code.clone(),
            settings.session.asset_scale,
        );
        if let Some(flow) = &events {
            service = service.with_nostr(flow.clone());
        }
        let mut handler: Arc<dyn IlpHandler> = Arc::new(service);
        if let Some(layer) = self.handler_layer {
            handler = layer(handler);
        }
        // Tokens are bound to the one public endpoint, the one announced.
        let mut session_settings = settings.session.clone();
        session_settings.public_endpoint = settings.node.public_endpoint.trim().to_string();
        let sessions_ctx = SessionContext::with_handler(
            keys.clone(),
            own_address.clone(),
            session_settings,
            handler,
        );

        let unwired = Unwired::ports();
        let resolver_given = self.resolver.is_some();
        let resolver = match (self.resolver, &discovery) {
            (Some(resolver), _) => resolver,
            (None, Some(d)) => Arc::new(d.resolver.clone()),
            (None, None) => unwired.resolver,
        };
        // A node on a chain requires channels; a node given a channel port (a test's) uses
        // it; otherwise every authenticated session is connected as it is.
        let channels_required = settings.chain.enabled || self.channels.is_some();
        let mut chain_line = None;
        let mut chain = None;
        let channels = match self.channels {
            Some(channels) => channels,
            None if settings.chain.enabled => {
                let channels = Arc::new(EvmChannels::connect(&settings.chain).await?);
                chain_line = Some(format!(
                    "on (chain {}, contract {}, paying from {})",
                    settings.chain.chain_id,
                    channels.contract(),
                    channels.address()
                ));
                chain = Some(channels.clone());
                channels
            }
            None => unwired.channels,
        };
        let subscriptions: Arc<dyn Subscriptions> = match (self.subscriptions, &events) {
            (Some(subscriptions), _) => subscriptions,
            (None, Some(flow)) => flow.clone(),
            (None, None) => unwired.subscriptions,
        };
        let sessions = self.sessions.unwrap_or_else(|| {
            Arc::new(BtpConnector::with_threads(
                sessions_ctx.clone(),
                settings.session.io_thread_count(),
            ))
        });
        let ports = Ports {
            resolver,
            sessions,
            channels: channels.clone(),
            subscriptions,
        };

        let (changes, _) = broadcast::channel(NOTIFICATION_CAPACITY);
        // Subscribed before the supervisor starts: the event ring and the metrics see every
        // change from the first.
        let admin_parts = crate::admin::AdminParts::start(&settings.admin, changes.subscribe());
        let persistence = PersistenceActor::new(db.clone(), settings.persistence.clone())
            .with_directory(directory.clone())
            .start();
        let supervisor = supervisor_ctx.run(PeerSupervisor::new(
            settings.btp_nips.peer_connections.clone(),
            ports,
            persistence.clone(),
            clock,
            stored,
            changes.clone(),
            channels_required,
        ));

        let listen = self
            .listen
            .unwrap_or_else(|| settings.session.listen.clone());
        let listen_configured = !listen.is_empty();
        let server = match listen.as_str() {
            "" => None,
            listen => Some(
                SessionServer::start(sessions_ctx, listen, Some(directory.clone())).map_err(
                    |source| NodeError::Listen {
                        listen: listen.to_owned(),
                        source,
                    },
                )?,
            ),
        };
        log_parts(&PartsOn {
            settings: &settings,
            discovery: discovery.as_ref(),
            resolver_given,
            events: events.is_some(),
            subscriptions_given,
            chain: chain_line,
            channels_required,
            server: server.as_ref(),
        });
        let operator = match &discovery {
            Some(d) => Some(d.operator),
            None => nostr::PublicKey::parse(settings.nostr.operator_pubkey.trim()).ok(),
        };
        let public_endpoint = Some(settings.node.public_endpoint.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        let discovery = discovery.map(|d| {
            let actors = d.start_actors(&settings, directory.clone());
            (d, actors)
        });
        let node = Node {
            inner: Arc::new(Inner {
                keys,
                own_address,
                db,
                persistence,
                supervisor,
                directory,
                changes,
                server,
                events,
                chain,
                discovery,
                channels,
                operator,
                public_endpoint,
                clock,
                started: std::time::Instant::now(),
                node_id: settings.node.id.clone(),
                listen_configured,
                admin_parts,
                admin: std::sync::OnceLock::new(),
                stopping: Mutex::new(false),
                stopped: watch::channel(false).0,
            }),
        };
        if let Some(binding) = admin_binding {
            let server =
                crate::admin::AdminServer::start(binding, node.clone()).map_err(|source| {
                    NodeError::AdminListen {
                        listen: admin_listen.clone(),
                        source,
                    }
                })?;
            let _ = node.inner.admin.set(server);
        }
        Ok(node)
    }
}

/// What [`log_parts`] reports on.
struct PartsOn<'a> {
    settings: &'a Settings,
    discovery: Option<&'a Discovery>,
    resolver_given: bool,
    events: bool,
    subscriptions_given: bool,
    /// The chain adapter's own line, when it was connected.
    chain: Option<String>,
    channels_required: bool,
    server: Option<&'a SessionServer>,
}

/// One INFO line per part of the node: on or off, and why, so a node that will find no
/// one, or that no one can reach, says so when it starts.
fn log_parts(p: &PartsOn) {
    let s = p.settings;
    let endpoint = s.node.public_endpoint.trim();
    match (p.discovery, p.resolver_given) {
        (_, true) => log::info!("discovery: on (a resolver given to the node builder)"),
        (Some(d), false) => log::info!(
            "discovery: on ({} relays, following {}'s list)",
            d.relays.urls().len(),
            d.operator.to_hex()
        ),
        (None, false) => {
            log::info!("discovery: off (nostr.relays is empty) — this node will not find peers")
        }
    }
    match (p.discovery, endpoint) {
        (None, _) => {
            log::info!("announcement: off (nostr.relays is empty) — peers will not find this node")
        }
        (Some(_), "") => log::info!(
            "announcement: off (node.public_endpoint is empty) — peers will not find this node"
        ),
        (Some(_), endpoint) => log::info!("announcement: on ({endpoint})"),
    }
    match p.server {
        Some(server) => {
            let bound = match endpoint {
                "" => format!("its loopback forms ws://{}/", server.local_addr),
                endpoint => endpoint.to_string(),
            };
            log::info!(
                "sessions: inbound on (ws://{}/, tokens bound to {bound})",
                server.local_addr
            )
        }
        None => log::info!(
            "sessions: inbound off (session.listen is empty) — peers cannot dial this node"
        ),
    }
    match (p.events, p.subscriptions_given) {
        (_, true) => log::info!("event flow: on (subscriptions given to the node builder)"),
        (true, false) => log::info!("event flow: on ({})", s.events.operator_relay.trim()),
        (false, false) => log::info!(
            "event flow: off (events.operator_relay is empty) — peers connect, but no events move"
        ),
    }
    match (&p.chain, p.channels_required) {
        (Some(line), _) => log::info!("chain: {line}"),
        (None, true) => log::info!("chain: on (a channel port given to the node builder)"),
        (None, false) => log::info!(
            "chain: off (chain.enabled is false) — peers are connected without payment channels"
        ),
    }
}
