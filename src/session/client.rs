//! Dialing out: [`BtpConnector`] opens an authenticated BTP session over WebSocket
//! (tokio-tungstenite; `ws://` on loopback when allowed, `wss://` through rustls otherwise),
//! proves our Nostr key (or a shared secret for plain ILP peers), checks the server's proof,
//! and hands the lifecycle a [`BtpSession`]: PING/PONG over ILP, ILDCP, any ILP Prepare.

use super::threads::SessionThreads;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use nostr::PublicKey;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::auth::{self, PROTOCOL_AUTH_PROOF};
use super::connection::{
    error_text, is_temporary_error, Link, LinkError, LinkLimits, MAX_MESSAGE_LEN,
};
use super::ildcp::{self, IldcpInfo};
use super::service::{send_btp_nips, send_prepare};
use super::transport;
use super::{unix_now, PeerIdentity, SessionContext};
use crate::lifecycle::Fault;
use crate::ports::{PeerTarget, Session, SessionConnector};
use crate::untrusted::untrusted;
use crate::wire::btp::{self, Packet};
use crate::wire::btp_nips::{self, MessageType};
use crate::wire::ilp::{self, Timestamp};

/// Read buffer of a dialled session's WebSocket, bytes.
pub const DIAL_READ_BUFFER: usize = 4 * 1024;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Prove our Nostr key to the node holding `server`, and make it prove its own.
    Nostr { server: PublicKey },
    /// A plain ILP peer: `auth_username` and the shared secret as `auth_token`.
    SharedSecret { username: String, secret: String },
}

/// Shuts a link that never became a session, whichever way the dial ended.
struct ShutOnDrop(Option<Arc<Link>>);

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            link.shut("dial abandoned before the session was up");
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Worth retrying: unreachable, timed out, dropped.
    #[error("{0}")]
    Transient(String),
    /// Needs a person: refused authentication, a server that cannot prove its key, an
    /// endpoint we must not dial.
    #[error("{0}")]
    Permanent(String),
    /// The server accepted who we are but not now, by its policy (its connection limit,
    /// its operator, its cap on strangers): retried, never a reason to give up alone.
    #[error("{0}")]
    Refused(String),
}

impl From<ConnectError> for Fault {
    fn from(e: ConnectError) -> Fault {
        match e {
            ConnectError::Transient(r) => Fault::Transient(r),
            ConnectError::Permanent(r) => Fault::Permanent(r),
            ConnectError::Refused(r) => Fault::Refused(r),
        }
    }
}

/// Checks that we may dial `endpoint`: `wss://` anywhere, `ws://` only to a loopback host
/// and only when `allow_ws_loopback`.
pub fn check_endpoint(endpoint: &str, allow_ws_loopback: bool) -> Result<(), String> {
    // Endpoints come from announcements: shown bounded and escaped.
    let shown = untrusted(endpoint);
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("endpoint `{shown}`: no scheme"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(format!("endpoint `{shown}`: no host"));
    }
    match scheme {
        "wss" => Ok(()),
        "ws" => {
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                Err(format!(
                    "endpoint `{shown}`: ws:// is allowed only for loopback; use wss://"
                ))
            } else if !allow_ws_loopback {
                Err(format!(
                    "endpoint `{shown}`: ws:// is disabled (session.allow_ws_loopback)"
                ))
            } else {
                Ok(())
            }
        }
        other => Err(format!(
            "endpoint `{shown}`: scheme `{}` is not ws or wss",
            untrusted(other)
        )),
    }
}

/// One open, authenticated session we dialed.
pub struct BtpSession {
    link: Arc<Link>,
    ctx: Arc<SessionContext>,
    /// The peer we reached (as authenticated).
    pub peer: PeerIdentity,
}

impl BtpSession {
    /// Dials `endpoint` and authenticates as `auth` says.
    pub async fn connect(
        ctx: Arc<SessionContext>,
        endpoint: &str,
        auth: ClientAuth,
    ) -> Result<BtpSession, ConnectError> {
        check_endpoint(endpoint, ctx.settings.allow_ws_loopback)
            .map_err(ConnectError::Permanent)?;
        let shown = untrusted(endpoint);
        // A 4 KiB read buffer instead of tungstenite's 128 KiB: a session is mostly idle, a
        // node holds thousands of them, and tungstenite zero-fills the free part of the buffer
        // before every read, so each byte of it is written (and its page touched) per read.
        // A BTP message is a few hundred bytes; a larger one (up to MAX_MESSAGE_LEN) is
        // reserved whole from its frame header and read in 4 KiB steps.
        let config = WebSocketConfig::default()
            .read_buffer_size(DIAL_READ_BUFFER)
            .max_message_size(Some(MAX_MESSAGE_LEN))
            .max_frame_size(Some(MAX_MESSAGE_LEN));
        let dial = tokio_tungstenite::connect_async_with_config(endpoint, Some(config), true);
        let (ws, _) = match tokio::time::timeout(ctx.timings.connect_timeout, dial).await {
            Err(_) => {
                return Err(ConnectError::Transient(format!(
                    "connect to {shown}: no answer within {:?}",
                    ctx.timings.connect_timeout
                )))
            }
            Ok(Err(e)) => {
                return Err(ConnectError::Transient(format!(
                    "connect to {shown}: {}",
                    untrusted(&e.to_string())
                )))
            }
            Ok(Ok(ws)) => ws,
        };
        let (link, out) = Link::bounded(
            ctx.timings.request_timeout,
            LinkLimits {
                max_queued: ctx.settings.max_queued_messages,
                max_in_flight: ctx.settings.max_requests_in_flight,
            },
            ctx.stats.clone(),
        );
        // Nothing the server asks is answered before it proved its key.
        link.hold_requests();
        let (sink, stream) = ws.split();
        let peer = match &auth {
            ClientAuth::Nostr { server } => PeerIdentity::Nostr(*server),
            ClientAuth::SharedSecret { username, .. } => {
                PeerIdentity::SharedSecret(username.clone())
            }
        };
        tokio::spawn(transport::write_loop(
            sink,
            out,
            link.clone(),
            ctx.timings.ws_ping_interval,
            ctx.settings.write_timeout,
        ));
        let (reader_link, reader_ctx, reader_peer) = (link.clone(), ctx.clone(), peer.clone());
        tokio::spawn(async move {
            let ended = transport::read_loop(
                stream,
                &reader_link,
                &reader_ctx,
                &reader_peer,
                &reader_peer,
                None,
            )
            .await;
            // The link's Close goes out through the writer; waiting requests fail now.
            if let Some(reason) = ended {
                reader_link.shut(reason);
            }
        });

        // Until the session is handed over, dropping this future (the peer was evicted,
        // unfollowed, its actor restarted) closes the socket: the remote sees it end.
        let mut unfinished = ShutOnDrop(Some(link.clone()));
        let (username, token, our_token) = match &auth {
            ClientAuth::Nostr { server } => {
                let token =
                    auth::sign_token(&ctx.keys, endpoint, server, unix_now(), fastrand::u64(..))
                        .map_err(|e| ConnectError::Permanent(e.to_string()))?;
                (
                    ctx.public_key().to_hex(),
                    auth::token_text(&token),
                    Some(token),
                )
            }
            ClientAuth::SharedSecret { username, secret } => {
                (username.clone(), secret.clone(), None)
            }
        };
        let request = link.request(Packet::auth(0, &username, &token));
        let answer = match tokio::time::timeout(ctx.timings.auth_timeout, request).await {
            Err(_) | Ok(Err(LinkError::Timeout(_))) => {
                link.shut("authentication timed out");
                return Err(ConnectError::Transient(format!(
                    "{shown}: no answer to auth within {:?}",
                    ctx.timings.auth_timeout
                )));
            }
            Ok(Err(e)) => {
                link.shut(e.to_string());
                return Err(ConnectError::Transient(format!(
                    "{shown}: auth: {}",
                    untrusted(&e.to_string())
                )));
            }
            Ok(Ok(answer)) => answer,
        };
        if let Some(text) = error_text(&answer) {
            let text = untrusted(&text).to_string();
            link.shut("authentication refused");
            // A temporary error (T..) is the server's policy, not a verdict on our key.
            return Err(if is_temporary_error(&answer) {
                ConnectError::Refused(format!("{shown} refused us for now: {text}"))
            } else {
                ConnectError::Permanent(format!("authentication refused by {shown}: {text}"))
            });
        }
        if let (ClientAuth::Nostr { server }, Some(token)) = (&auth, &our_token) {
            let proof = answer
                .entry(PROTOCOL_AUTH_PROOF)
                .and_then(|e| std::str::from_utf8(&e.data).ok());
            let checked = match proof {
                None => Err("auth_proof: missing from the server's Response".to_string()),
                Some(proof) => auth::verify_proof(proof, token, server).map_err(|e| e.to_string()),
            };
            if let Err(reason) = checked {
                let reason = untrusted(&reason).to_string();
                link.shut("server failed to prove its key");
                return Err(ConnectError::Permanent(format!(
                    "{shown} did not prove key {}: {reason}",
                    server.to_hex()
                )));
            }
        }
        log::info!("session to {shown} ({peer}) authenticated");
        link.start_serving();
        unfinished.0 = None;
        Ok(BtpSession { link, ctx, peer })
    }

    /// Sends an ILP Prepare; resolves with the Fulfill or Reject.
    pub async fn send_prepare(&self, prepare: &ilp::Prepare) -> Result<ilp::Packet, String> {
        send_prepare(&self.link, prepare).await
    }

    /// Asks the peer's `peer.config` (ILDCP) for our address and the asset.
    pub async fn fetch_ildcp(&self) -> Result<IldcpInfo, String> {
        match self.send_prepare(&ildcp::request(self.expiry())).await? {
            ilp::Packet::Fulfill(f) => ildcp::parse_response(&f.data).map_err(|e| e.to_string()),
            ilp::Packet::Reject(r) => Err(format!(
                "ILDCP rejected: {} {}",
                r.code_str(),
                String::from_utf8_lossy(&r.message)
            )),
            ilp::Packet::Prepare(_) => Err("ILDCP answer is a Prepare".into()),
        }
    }

    fn expiry(&self) -> Timestamp {
        std::time::SystemTime::now()
            .checked_add(self.ctx.timings.request_timeout)
            .and_then(Timestamp::from_system_time)
            .unwrap_or_else(Timestamp::now)
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

#[async_trait]
impl Session for BtpSession {
    async fn ping(&self, nonce: u64) -> Result<u64, Fault> {
        // Written and read without building packets: every peer's PING, every interval.
        // No request timeout: the lifecycle's PONG deadline drops this future when it
        // passes (a timer per PING fewer).
        let sender = self.ctx.own_address.as_str();
        let (timestamp, expires_at) = (unix_now(), self.expiry());
        // A closed link, an answer without a Fulfill or Reject, one unreadable: never an
        // error the lifecycle would misread; its PONG deadline or the close watcher decides.
        let unanswered = || futures::future::pending::<Result<u64, Fault>>();
        let Ok(answer) = self
            .link
            .request_raw(
                |id| {
                    btp_nips::ping_message(id, sender, timestamp, nonce, expires_at)
                        .map_err(|e| e.to_string())
                },
                None,
            )
            .await
        else {
            return unanswered().await;
        };
        let ilp_packet = match btp::read_response_ilp(&answer) {
            Ok(Some(ilp_packet)) => ilp_packet,
            // A BTP Error, or a Response without an ILP packet.
            Ok(None) => return unanswered().await,
            Err(e) => {
                self.link.unreadable_answer(e);
                return unanswered().await;
            }
        };
        if let Ok((_, data)) = ilp::Fulfill::read(ilp_packet) {
            let (message_type, echoed) = btp_nips::decode_nonce(data)
                .map_err(|e| Fault::Transient(format!("PONG unreadable: {e}")))?;
            if message_type != MessageType::Pong {
                return Err(Fault::Transient(format!(
                    "PING answered with {message_type}"
                )));
            }
            return echoed
                .and_then(|n| u64::from_str_radix(&n, 16).ok())
                .ok_or_else(|| Fault::Transient("PONG nonce is not 16 hex digits".into()));
        }
        match ilp::Packet::decode(ilp_packet) {
            Ok(ilp::Packet::Reject(r)) => Err(Fault::Transient(format!(
                "PING rejected: {} {}",
                r.code_str(),
                String::from_utf8_lossy(&r.message)
            ))),
            Ok(ilp::Packet::Prepare(_)) => {
                Err(Fault::Transient("PING answered by a Prepare".into()))
            }
            // Not ILP (a Fulfill was read above).
            Ok(ilp::Packet::Fulfill(_)) | Err(_) => unanswered().await,
        }
    }

    async fn send(&self, packet: btp_nips::Packet) -> Result<Option<btp_nips::Packet>, Fault> {
        send_btp_nips(&self.link, &packet, self.ctx.timings.request_timeout)
            .await
            .map_err(|e| Fault::Transient(format!("{}: {e}", packet.message_type)))
    }

    fn closed(&self) -> BoxFuture<'static, String> {
        self.link.closed()
    }

    async fn close(&self) {
        self.link.shut("closed by us");
    }
}

impl Drop for BtpSession {
    fn drop(&mut self) {
        self.link.shut("session dropped");
    }
}

/// Opens sessions for the lifecycle: Nostr mode against the peer's pubkey, or shared-secret
/// mode when the endpoint belongs to a configured plain ILP peer.
pub struct BtpConnector {
    ctx: Arc<SessionContext>,
    /// Where the sessions run (`None`: on the caller's thread).
    threads: Option<SessionThreads>,
}

impl BtpConnector {
    /// Sessions on the caller's thread.
    pub fn new(ctx: Arc<SessionContext>) -> Self {
        BtpConnector { ctx, threads: None }
    }

    /// Sessions spread over `threads` threads of their own (inside an actix system).
    pub fn with_threads(ctx: Arc<SessionContext>, threads: usize) -> Self {
        BtpConnector {
            ctx,
            threads: Some(SessionThreads::new(threads)),
        }
    }
}

#[async_trait]
impl SessionConnector for BtpConnector {
    async fn open(&self, peer: &PeerTarget) -> Result<Arc<dyn Session>, Fault> {
        let endpoint = peer
            .endpoint
            .as_deref()
            .ok_or_else(|| Fault::Permanent("no BTP endpoint known".into()))?;
        let auth = match self.ctx.shared_secret_for_endpoint(endpoint) {
            Some(p) => ClientAuth::SharedSecret {
                username: p.username.clone(),
                secret: p.secret.clone(),
            },
            None => ClientAuth::Nostr {
                server: auth::parse_pubkey(&peer.nostr_pubkey)
                    .map_err(|e| Fault::Permanent(e.to_string()))?,
            },
        };
        let session = match &self.threads {
            Some(threads) => {
                let (ctx, endpoint) = (self.ctx.clone(), endpoint.to_owned());
                threads
                    .run(move || async move { BtpSession::connect(ctx, &endpoint, auth).await })
                    .await
                    .ok_or_else(|| Fault::Transient("the session threads are stopping".into()))??
            }
            None => BtpSession::connect(self.ctx.clone(), endpoint, auth).await?,
        };
        Ok(Arc::new(session))
    }
}
