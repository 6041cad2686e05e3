//! The inbound endpoint: an actix-web server whose every path upgrades to a BTP WebSocket
//! (actix-ws). A connection must authenticate with its first packet within
//! `auth_timeout`: a Nostr token (see [`super::auth`]) or a configured shared secret.
//! A Nostr peer is then admitted or refused by the node's [`PeerDirectory`] (followed
//! peers always, others while there is room). Refusals are BTP Errors, then the socket
//! closes. An admitted peer is served (PING → PONG, ILDCP) until it leaves, goes quiet, or
//! sends garbage — disconnected with the reason logged.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use super::auth::{self, TokenPolicy, PROTOCOL_AUTH_PROOF};
use super::connection::{error_packet, Link, MAX_MESSAGE_LEN};
use super::transport::{self, ActixSource, Frame, FrameSource};
use super::{unix_now, PeerIdentity, SessionContext};
use crate::ports::{Admission, PeerDirectory};
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
        let state = web::Data::new(ServerState {
            ctx,
            admission,
            endpoints: std::sync::OnceLock::new(),
            live: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(upgrade))
        })
        .workers(1)
        .disable_signals()
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
            .endpoints
            .set(endpoints)
            .expect("endpoints are set once, before serving");
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

    /// How many peers have a live inbound session (one each at most).
    pub fn live_sessions(&self) -> usize {
        self.state.live_sessions()
    }

    /// Stops accepting and closes the connections.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

struct ServerState {
    ctx: Arc<SessionContext>,
    admission: Option<Arc<dyn PeerDirectory>>,
    /// The endpoints a token may be bound to: `node.public_endpoint`, or the loopback
    /// forms of the bound address when none is configured (known once bound).
    endpoints: std::sync::OnceLock<Vec<String>>,
    /// The live inbound session of each peer: one per peer, the newest wins (a peer that
    /// reconnects after a network drop replaces its half-open session, as ilp-plugin-btp
    /// does, and no key holds more than one slot).
    /// `true` marks a peer the node did not know (counted against
    /// `session.max_unknown_inbound`).
    live: std::sync::Mutex<std::collections::HashMap<PeerIdentity, (Arc<Link>, bool)>>,
}

impl ServerState {
    /// Records `peer`'s session, replacing its previous one; refused if `unknown` and the
    /// unknown peers already hold `max_unknown` sessions (checked and taken under one lock).
    fn register(
        &self,
        peer: &PeerIdentity,
        link: &Arc<Link>,
        unknown: bool,
        max_unknown: usize,
    ) -> Result<(), String> {
        let mut live = self.live.lock().expect("live sessions lock");
        if unknown && !live.contains_key(peer) {
            let open = live.values().filter(|(_, u)| *u).count();
            if open >= max_unknown {
                return Err(format!(
                    "not admitted: {open} sessions of peers this node does not know are open \
                     (session.max_unknown_inbound)"
                ));
            }
        }
        if let Some((old, _)) = live.insert(peer.clone(), (link.clone(), unknown)) {
            log::info!("{peer} opened a new session; closing its previous one");
            old.shut("replaced by a newer session of the same peer");
        }
        Ok(())
    }

    fn unregister(&self, peer: &PeerIdentity, link: &Arc<Link>) {
        let mut live = self.live.lock().expect("live sessions lock");
        if live.get(peer).is_some_and(|(l, _)| Arc::ptr_eq(l, link)) {
            live.remove(peer);
        }
    }

    fn live_sessions(&self) -> usize {
        self.live.lock().expect("live sessions lock").len()
    }
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ServerState>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_LEN)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_LEN);
    let from = req
        .peer_addr()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        serve(state, session, stream, from).await;
    });
    Ok(response)
}

/// What the first packet led to.
enum AuthOutcome {
    /// The peer, the answer, and whether the node does not know the peer.
    Accepted(PeerIdentity, Packet, bool),
    Refused(Packet, String),
}

async fn serve(
    state: Arc<ServerState>,
    session: actix_ws::Session,
    stream: actix_ws::AggregatedMessageStream,
    from: String,
) {
    let ctx = state.ctx.clone();
    let (link, out) = Link::new(ctx.timings.request_timeout);
    actix_web::rt::spawn(transport::write_loop(
        session.clone(),
        out,
        ctx.timings.ws_ping_interval,
    ));
    let mut source = ActixSource { stream, session };

    // Authentication: the first binary message, within auth_timeout. WebSocket pings
    // before it (ilp-plugin-btp sends one at once) are answered by the source.
    let first = tokio::time::timeout(ctx.timings.auth_timeout, async {
        loop {
            match source.next_frame().await {
                Some(Ok(Frame::Binary(bytes))) => return Ok(bytes),
                Some(Ok(Frame::Control)) => {}
                Some(Ok(Frame::Text)) => return Err("text frame before auth".to_string()),
                Some(Ok(Frame::Close(_))) | None => {
                    return Err("closed before authenticating".to_string())
                }
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
            }
        }
    })
    .await;
    let bytes = match first {
        Err(_) => {
            log::info!(
                "{from}: no auth within {:?}; disconnected",
                ctx.timings.auth_timeout
            );
            link.shut("authentication timed out");
            return;
        }
        Ok(Err(reason)) => {
            log::info!("{from}: {reason}; disconnected");
            link.shut(reason);
            return;
        }
        Ok(Ok(bytes)) => bytes,
    };
    let outcome = match Packet::decode(&bytes) {
        // Never answer an unreadable packet.
        Err(e) => {
            log::warn!("{from}: unreadable first packet: {e}; disconnected");
            link.shut(format!("unreadable packet: {e}"));
            return;
        }
        Ok(packet) => authenticate(&state, &packet).await,
    };
    let peer = match outcome {
        AuthOutcome::Refused(answer, reason) => {
            log::warn!("{from}: authentication refused: {reason}");
            link.answer(&answer);
            link.shut(format!("authentication refused: {reason}"));
            return;
        }
        AuthOutcome::Accepted(peer, answer, unknown) => {
            if let Err(reason) =
                state.register(&peer, &link, unknown, ctx.settings.max_unknown_inbound)
            {
                log::warn!("{from}: {peer} refused: {reason}");
                link.answer(&not_admitted(answer.request_id, &reason));
                link.shut(reason);
                return;
            }
            link.answer(&answer);
            peer
        }
    };
    log::info!("{from}: session with {peer} authenticated");

    let who = format!("{peer} ({from})");
    let ended = transport::read_loop(source, &link, &ctx, &peer, &who).await;
    state.unregister(&peer, &link);
    if let Some(reason) = ended {
        log::info!("session with {who} ended: {reason}");
        link.shut(reason);
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
        if let Some(configured) = ctx.shared_secret_peer(username) {
            return if auth::secrets_match(&credentials.token, &configured.secret) {
                AuthOutcome::Accepted(
                    PeerIdentity::SharedSecret(username.to_string()),
                    Packet::response(id, Vec::new()),
                    false,
                )
            } else {
                refuse(auth::AuthRefusal::WrongSecret(username.to_string()).to_string())
            };
        }
    }
    let policy = TokenPolicy {
        endpoints: state.endpoints.get().cloned().unwrap_or_default(),
        max_age_secs: ctx.settings.token_max_age.as_secs(),
        max_skew_secs: ctx.settings.token_max_skew.as_secs(),
    };
    let now = unix_now();
    let verified = {
        let mut replay = ctx.replay.lock().expect("replay guard lock");
        auth::verify_token(
            credentials.username.as_deref(),
            &credentials.token,
            &ctx.public_key(),
            &policy,
            now,
            &mut replay,
        )
    };
    let token = match verified {
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
    match auth::sign_proof(&ctx.keys, &token, now) {
        Ok(proof) => AuthOutcome::Accepted(
            PeerIdentity::Nostr(token.pubkey),
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
