//! The inbound endpoint: an actix-web server whose every path upgrades to a BTP WebSocket
//! (actix-ws). A connection must authenticate with its first packet within
//! `auth_timeout`: a Nostr token (see [`super::auth`]) or a configured shared secret.
//! A Nostr peer is then admitted or refused by the node's [`PeerDirectory`] (followed
//! peers always, others while there is room). Refusals are BTP Errors, then the socket
//! closes. An admitted peer is served (PING → PONG, ILDCP) until it leaves, goes quiet, or
//! sends garbage — disconnected with the reason logged.
//!
//! Strangers are budgeted: sockets not yet authenticated are capped in total and per IP
//! (`session.max_unauthenticated`, `session.max_unauthenticated_per_ip`; more get an HTTP
//! 503 naming the limit), the whole authentication (admission included) must finish within
//! `auth_timeout`, and a peer the node does not follow loses its session once it sent
//! nothing for `session.unknown_idle_timeout_ms`.
//!
//! A node's server proves the node's one key. A server started with
//! [`SessionServer::start_with_identities`] holds several (a benchmark's farm of peers behind
//! one listener) and proves the one each client's token is bound to (its `p` tag).

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use nostr::{Keys, PublicKey};

use super::auth::{self, TokenPolicy, PROTOCOL_AUTH_PROOF};
use super::connection::{error_packet, Link, LinkLimits, MAX_MESSAGE_LEN};
use super::stats::{SessionStats, SessionStatsSnapshot};
use super::transport::{self, ActixSink, ActixSource, Frame, FrameSource, SocketHandle};
use super::{unix_now, PeerIdentity, SessionContext};
use crate::ports::{Admission, PeerDirectory};
use crate::untrusted::untrusted;
use crate::wire::btp::{self, Packet, ProtocolEntry};

/// A running inbound endpoint.
pub struct SessionServer {
    /// Where it listens (the port is known even when 0 was asked).
    pub local_addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    state: web::Data<ServerState>,
}

impl SessionServer {
    /// Binds `listen` and serves. `admission` is the node's peer directory (None: admit
    /// every authenticated peer, for tools and tests of the transport alone). With it,
    /// peers the node does not know hold at most `session.max_unknown_inbound` sessions.
    pub fn start(
        ctx: Arc<SessionContext>,
        listen: &str,
        admission: Option<Arc<dyn PeerDirectory>>,
    ) -> std::io::Result<SessionServer> {
        let own = ctx.keys.clone();
        Self::serve(ctx, listen, admission, [own])
    }

    /// As [`SessionServer::start`], answering as each of `identities` instead of the
    /// context's key: a client's token names the key it means to reach, and the server
    /// proves that one (a token bound to any other key is refused as bound elsewhere).
    pub fn start_with_identities(
        ctx: Arc<SessionContext>,
        listen: &str,
        admission: Option<Arc<dyn PeerDirectory>>,
        identities: impl IntoIterator<Item = Keys>,
    ) -> std::io::Result<SessionServer> {
        Self::serve(ctx, listen, admission, identities)
    }

    fn serve(
        ctx: Arc<SessionContext>,
        listen: &str,
        admission: Option<Arc<dyn PeerDirectory>>,
        identities: impl IntoIterator<Item = Keys>,
    ) -> std::io::Result<SessionServer> {
        let identities = identities
            .into_iter()
            .map(|keys| (keys.public_key(), keys))
            .collect();
        let auth_timeout = ctx.timings.auth_timeout;
        let state = web::Data::new(ServerState {
            ctx,
            identities,
            admission,
            policy: std::sync::OnceLock::new(),
            live: std::sync::Mutex::new(std::collections::HashMap::new()),
            unauthenticated: std::sync::Mutex::new(HashMap::new()),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(upgrade))
        })
        .workers(state.ctx.settings.io_thread_count())
        .disable_signals()
        // A socket that never sends its upgrade request is dropped at the auth deadline too.
        .client_request_timeout(auth_timeout)
        .on_connect(keep_socket)
        // A burst of peers dialing at once (a restart) must not overflow the accept queue.
        .backlog(2048)
        .bind(listen)?;
        let local_addr = *server
            .addrs()
            .first()
            .ok_or_else(|| std::io::Error::other("bound to no address"))?;
        let endpoints = match state.ctx.settings.public_endpoint.trim() {
            // Unset: the loopback forms of the address actually bound (tests, local nodes).
            "" => {
                let port = local_addr.port();
                let mut forms = Vec::new();
                for host in [local_addr.ip().to_string(), "localhost".into()] {
                    for path in ["/", "/btp", ""] {
                        forms.push(format!("ws://{host}:{port}{path}"));
                    }
                }
                forms
            }
            configured => vec![configured.to_string()],
        };
        state
            .policy
            .set(TokenPolicy {
                endpoints,
                max_age_secs: state.ctx.settings.token_max_age.as_secs(),
                max_skew_secs: state.ctx.settings.token_max_skew.as_secs(),
            })
            .expect("the token policy is set once, before serving");
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        log::info!("BTP sessions accepted on ws://{local_addr}/");
        Ok(SessionServer {
            local_addr,
            handle,
            state,
        })
    }

    /// How many peers have a live inbound session (one each at most, per key of ours).
    pub fn live_sessions(&self) -> usize {
        self.state.live_sessions()
    }

    /// The session layer's counters (shared with the client of the same context).
    pub fn stats(&self) -> SessionStatsSnapshot {
        self.state.ctx.stats.snapshot()
    }

    /// Stops accepting and closes the connections.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Who reached which of our keys: the peer, and our key its session proved.
type Reached = (PeerIdentity, PublicKey);

struct ServerState {
    ctx: Arc<SessionContext>,
    /// The keys this server answers as, by pubkey (a node's: its one key).
    identities: HashMap<PublicKey, Keys>,
    admission: Option<Arc<dyn PeerDirectory>>,
    /// What tokens are checked against, made once when bound: the endpoints a token may be
    /// bound to (`node.public_endpoint`, or the loopback forms of the bound address when
    /// none is configured) and the token lifetime.
    policy: std::sync::OnceLock<TokenPolicy>,
    /// The live inbound session of each peer with each of our keys (a node has one): one
    /// per pair, the newest wins (a peer that reconnects after a network drop replaces its
    /// half-open session, as ilp-plugin-btp does, and no key holds more than one slot).
    /// `true` marks a peer the node did not know (counted against
    /// `session.max_unknown_inbound`).
    live: std::sync::Mutex<std::collections::HashMap<Reached, (Arc<Link>, bool)>>,
    /// Sockets not yet authenticated, by IP (their total is the stats' gauge).
    unauthenticated: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// A socket's place among those not yet authenticated; dropping it gives the place back.
struct Unauthenticated {
    state: Arc<ServerState>,
    ip: IpAddr,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut waiting = self
            .state
            .unauthenticated
            .lock()
            .expect("unauthenticated lock");
        if let Some(n) = waiting.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.ip);
            }
        }
        self.state
            .ctx
            .stats
            .unauthenticated
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerState {
    /// A place for one more socket from `ip` waiting to authenticate, or the refusal naming
    /// the limit that is reached.
    fn admit_socket(self: &Arc<Self>, ip: IpAddr) -> Result<Unauthenticated, String> {
        let settings = &self.ctx.settings;
        let stats = &self.ctx.stats;
        let mut waiting = self.unauthenticated.lock().expect("unauthenticated lock");
        let total = stats.unauthenticated.load(Ordering::Relaxed);
        if total >= settings.max_unauthenticated {
            SessionStats::count(&stats.refused_unauthenticated);
            return Err(format!(
                "{total} connections are waiting to authenticate (session.max_unauthenticated)"
            ));
        }
        let from_ip = waiting.entry(ip).or_insert(0);
        if *from_ip >= settings.max_unauthenticated_per_ip {
            SessionStats::count(&stats.refused_unauthenticated_per_ip);
            return Err(format!(
                "{from_ip} connections from your address are waiting to authenticate \
                 (session.max_unauthenticated_per_ip)"
            ));
        }
        *from_ip += 1;
        stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Ok(Unauthenticated {
            state: self.clone(),
            ip,
        })
    }
}

/// A handle on an accepted TCP socket, so a session whose peer stopped reading can be ended
/// even while actix still tries to flush to it (the connection and the session's tasks run
/// on the same worker thread, as [`SocketHandle`] requires).
#[derive(Clone, Copy)]
struct ConnSocket(SocketHandle);

fn keep_socket(connection: &dyn Any, extensions: &mut Extensions) {
    let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    match SocketHandle::of(tcp.as_fd()) {
        Ok(handle) => {
            extensions.insert(ConnSocket(handle));
        }
        Err(e) => log::warn!("cannot keep a handle on an accepted socket: {e}"),
    }
}

impl ServerState {
    /// Records `peer`'s session, replacing its previous one; refused if `unknown` and the
    /// unknown peers already hold `max_unknown` sessions (checked and taken under one lock).
    fn register(
        &self,
        reached: &Reached,
        link: &Arc<Link>,
        unknown: bool,
        max_unknown: usize,
    ) -> Result<(), String> {
        let mut live = self.live.lock().expect("live sessions lock");
        if unknown && !live.contains_key(reached) {
            let open = live.values().filter(|(_, u)| *u).count();
            if open >= max_unknown {
                return Err(format!(
                    "not admitted: {open} sessions of peers this node does not know are open \
                     (session.max_unknown_inbound)"
                ));
            }
        }
        if let Some((old, _)) = live.insert(reached.clone(), (link.clone(), unknown)) {
            log::info!(
                "{} opened a new session; closing its previous one",
                reached.0
            );
            old.shut("replaced by a newer session of the same peer");
        }
        Ok(())
    }

    /// Forgets `peer`'s session `link`; `true` when it was the peer's live one (a session
    /// already replaced by a newer one leaves the newer in place).
    fn unregister(&self, reached: &Reached, link: &Arc<Link>) -> bool {
        let mut live = self.live.lock().expect("live sessions lock");
        let current = live.get(reached).is_some_and(|(l, _)| Arc::ptr_eq(l, link));
        if current {
            live.remove(reached);
        }
        current
    }

    fn live_sessions(&self) -> usize {
        self.live.lock().expect("live sessions lock").len()
    }

    /// The key that answers a token bound to `bound` (the pubkey in its `p` tag).
    fn identity(&self, bound: &str) -> Result<&Keys, auth::AuthRefusal> {
        PublicKey::from_hex(bound)
            .ok()
            .and_then(|pk| self.identities.get(&pk))
            .ok_or_else(|| auth::AuthRefusal::WrongServer {
                found: bound.to_string(),
                expected: match self.identities.keys().next() {
                    Some(only) if self.identities.len() == 1 => only.to_hex(),
                    _ => format!(
                        "one of the {} keys this server holds",
                        self.identities.len()
                    ),
                },
            })
    }
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ServerState>,
) -> Result<HttpResponse, actix_web::Error> {
    let state = state.into_inner();
    let ip = req
        .peer_addr()
        .map_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |a| a.ip());
    let place = match state.admit_socket(ip) {
        Ok(place) => place,
        Err(reason) => {
            log::debug!("{ip}: connection refused: {reason}");
            return Ok(HttpResponse::ServiceUnavailable().body(reason));
        }
    };
    let socket = req.conn_data::<ConnSocket>().map(|s| s.0);
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_LEN)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_LEN);
    let from = PeerAddr(req.peer_addr());
    actix_web::rt::spawn(async move {
        serve(state, session, socket, stream, from, place).await;
    });
    Ok(response)
}

/// The remote address of a connection, in logs (`?` when unknown); formatted only when a
/// log line is written.
#[derive(Clone, Copy)]
struct PeerAddr(Option<SocketAddr>);

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("?"),
        }
    }
}

/// An authenticated peer and where it connects from, in logs: `<peer> (<address>)`.
struct Who<'a> {
    peer: &'a PeerIdentity,
    from: PeerAddr,
}

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.peer, self.from)
    }
}

/// What the first packet led to.
enum AuthOutcome {
    /// The peer and our key it reached, the answer, and whether the node does not know
    /// the peer.
    Accepted(Reached, Packet, bool),
    Refused(Packet, String),
}

async fn serve(
    state: Arc<ServerState>,
    session: actix_ws::Session,
    socket: Option<SocketHandle>,
    stream: actix_ws::AggregatedMessageStream,
    from: PeerAddr,
    place: Unauthenticated,
) {
    let ctx = state.ctx.clone();
    let (link, out) = Link::bounded(
        ctx.timings.request_timeout,
        LinkLimits {
            max_queued: ctx.settings.max_queued_messages,
            max_in_flight: ctx.settings.max_requests_in_flight,
        },
        ctx.stats.clone(),
    );
    actix_web::rt::spawn(transport::write_loop(
        ActixSink {
            session: session.clone(),
            socket,
        },
        out,
        link.clone(),
        ctx.timings.ws_ping_interval,
        ctx.settings.write_timeout,
    ));
    let mut source = ActixSource {
        stream,
        session,
        write_timeout: ctx.settings.write_timeout,
        stats: ctx.stats.clone(),
    };

    // Authentication, admission included, within auth_timeout: the first binary message,
    // then its checks. WebSocket pings before it (ilp-plugin-btp sends one at once) are
    // answered by the source.
    let authenticated = tokio::time::timeout(ctx.timings.auth_timeout, async {
        let bytes = loop {
            match source.next_frame().await {
                Some(Ok(Frame::Binary(bytes))) => break bytes,
                Some(Ok(Frame::Control)) => {}
                Some(Ok(Frame::Text)) => return Err("text frame before auth".to_string()),
                Some(Ok(Frame::Close(_))) | None => {
                    return Err("closed before authenticating".to_string())
                }
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
            }
        };
        match Packet::decode(&bytes) {
            // Never answer an unreadable packet.
            Err(e) => Err(format!("unreadable packet: {e}")),
            Ok(packet) => Ok(authenticate(&state, &packet).await),
        }
    })
    .await;
    drop(place);
    let outcome = match authenticated {
        Err(_) => {
            SessionStats::count(&ctx.stats.auth_timeouts);
            log::info!(
                "{from}: not authenticated within {:?}; disconnected",
                ctx.timings.auth_timeout
            );
            link.shut("authentication timed out (session.auth_timeout_ms)");
            return;
        }
        Ok(Err(reason)) => {
            log::info!("{from}: {}; disconnected", untrusted(&reason));
            link.shut(reason);
            return;
        }
        Ok(Ok(outcome)) => outcome,
    };
    let (reached, unknown) = match outcome {
        AuthOutcome::Refused(answer, reason) => {
            SessionStats::count(&ctx.stats.auth_refused);
            log::warn!("{from}: authentication refused: {}", untrusted(&reason));
            link.answer(&answer).await;
            link.shut(format!("authentication refused: {reason}"));
            return;
        }
        AuthOutcome::Accepted(reached, answer, unknown) => {
            if let Err(reason) =
                state.register(&reached, &link, unknown, ctx.settings.max_unknown_inbound)
            {
                SessionStats::count(&ctx.stats.auth_refused);
                log::warn!("{from}: {} refused: {reason}", reached.0);
                link.answer(&not_admitted(answer.request_id, &reason)).await;
                link.shut(reason);
                // Admitted by the directory, refused here: the session it was admitted for
                // ends before it began.
                if let (PeerIdentity::Nostr(key), Some(directory)) = (&reached.0, &state.admission)
                {
                    directory.inbound_ended(&key.to_hex());
                }
                return;
            }
            link.answer(&answer).await;
            (reached, unknown)
        }
    };
    let peer = &reached.0;
    log::info!("{from}: session with {peer} authenticated");

    let who = Who { peer, from };
    // A stranger holds its session only while it sends something.
    let idle_limit = unknown.then_some(ctx.settings.unknown_idle_timeout);
    let ended = transport::read_loop(source, &link, &ctx, peer, &who, idle_limit).await;
    if state.unregister(&reached, &link) {
        if let (PeerIdentity::Nostr(key), Some(directory)) = (peer, &state.admission) {
            directory.inbound_ended(&key.to_hex());
        }
    }
    match ended {
        Some(reason) => {
            log::info!("session with {who} ended: {}", untrusted(&reason));
            link.shut(reason);
        }
        None => log::info!(
            "session with {who} closed: {}",
            untrusted(&link.close_reason().unwrap_or_default())
        ),
    }
}

/// A refusal by this node's policy (its connection limit, its operator, its cap on
/// strangers), not a judgement of the caller's credentials: a temporary BTP Error (T02,
/// "peer busy"), which the caller retries with backoff instead of giving up.
fn not_admitted(request_id: u32, reason: &str) -> Packet {
    error_packet(request_id, *b"T02", "NotAdmittedError", reason)
}

/// Checks the first packet: shared secret of a configured peer, or a Nostr token, then
/// admission. Returns the answer to send.
async fn authenticate(state: &ServerState, packet: &Packet) -> AuthOutcome {
    let ctx = &state.ctx;
    let id = packet.request_id;
    let refuse = |reason: String| {
        AuthOutcome::Refused(
            error_packet(id, *b"F00", "NotAcceptedError", &reason),
            reason,
        )
    };
    let credentials = match btp::parse_auth(packet) {
        Ok(c) => c,
        Err(e) => return refuse(e.to_string()),
    };
    if let Some(username) = credentials.username.as_deref() {
        match ctx.shared_secret_peer(username) {
            Some(configured) => {
                return if auth::secrets_match(&credentials.token, &configured.secret) {
                    AuthOutcome::Accepted(
                        (
                            PeerIdentity::SharedSecret(username.to_string()),
                            ctx.public_key(),
                        ),
                        Packet::response(id, Vec::new()),
                        false,
                    )
                } else {
                    refuse(auth::AuthRefusal::BadSecret.to_string())
                };
            }
            // Not a configured username and not a Nostr pubkey: refused exactly like a wrong
            // secret (same text, same comparison), so usernames cannot be probed.
            None if !auth::is_hex_pubkey(username) => {
                let _ = auth::secrets_match(&credentials.token, username);
                return refuse(auth::AuthRefusal::BadSecret.to_string());
            }
            None => {}
        }
    }
    let Some(policy) = state.policy.get() else {
        return refuse("this server is not bound yet".to_string());
    };
    let now = unix_now();
    // The signature is checked without a lock; only the replay guard's O(log n) step is
    // taken under it.
    let verified = auth::check_token_for(
        credentials.username.as_deref(),
        &credentials.token,
        policy,
        now,
        |bound| state.identity(bound),
    )
    .and_then(|(token, keys)| {
        let mut replay = ctx.replay.lock().expect("replay guard lock");
        auth::spend_token(&token, policy, now, &mut replay)?;
        Ok((token, keys))
    });
    if matches!(verified, Err(auth::AuthRefusal::ReplayGuardFull)) {
        SessionStats::count(&ctx.stats.refused_replay_guard_full);
    }
    let (token, keys) = match verified {
        Ok(token) => token,
        Err(e) => return refuse(e.to_string()),
    };
    let mut unknown = false;
    if let Some(directory) = &state.admission {
        match directory.admit(&token.pubkey.to_hex()).await {
            Admission::Admitted { known } => unknown = !known,
            Admission::Refused { reason } => {
                let reason = format!("not admitted: {reason}");
                return AuthOutcome::Refused(not_admitted(id, &reason), reason);
            }
        }
    }
    match auth::sign_proof(keys, &token, now) {
        Ok(proof) => AuthOutcome::Accepted(
            (PeerIdentity::Nostr(token.pubkey), keys.public_key()),
            Packet::response(
                id,
                vec![ProtocolEntry::json(
                    PROTOCOL_AUTH_PROOF,
                    auth::token_text(&proof).into_bytes(),
                )],
            ),
            unknown,
        ),
        Err(e) => refuse(format!("cannot prove our key: {e}")),
    }
}
