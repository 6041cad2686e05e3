//! The admin API's endpoints: authorization, the JSON views, and the mapping of the node's
//! answers to HTTP statuses.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use nostr::nips::nip19::ToBech32;
use nostr::PublicKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::events::Subscription;
use super::metrics::{PeerFigures, Snapshot, CONTENT_TYPE};
use super::stats::EventSlot;
use super::{Access, AdminState};
use crate::lifecycle::{PeerRecord, PeerState, Timestamp};
use crate::node::{Node, NodeError, SupervisorError};

/// The most peers one page of `GET /v1/peers` holds.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// A comment line this often keeps an idle event stream (and any proxy) open, and finds
/// clients that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The longest reason `disconnect` records.
const MAX_REASON: usize = 200;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(super::dashboard::page))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/v1/info", web::get().to(info))
        .route("/v1/events", web::get().to(events))
        .route("/v1/log-level", web::get().to(log_level))
        .route("/v1/log-level", web::post().to(set_log_level))
        .route("/v1/peers", web::get().to(list_peers))
        .route("/v1/peers", web::post().to(connect))
        .route("/v1/peers/{id}", web::get().to(show_peer))
        .route("/v1/peers/{id}/history", web::get().to(history))
        .route("/v1/peers/{id}/retry", web::post().to(retry))
        .route("/v1/peers/{id}/disconnect", web::post().to(disconnect))
        .route(
            "/v1/peers/{id}/approve-channel",
            web::post().to(approve_channel),
        )
        .default_service(web::to(|req: HttpRequest| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no endpoint {} {}", req.method(), req.path()),
            )
            .error_response()
        }));
}

/// A refusal: its status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn from_node(pubkey: &str, e: NodeError) -> ApiError {
        match e {
            NodeError::Peer(SupervisorError::UnknownPeer(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no peer {pubkey}"))
            }
            NodeError::Peer(e @ SupervisorError::NotApplicable { .. }) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            NodeError::Mailbox(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            response.append_header((header::WWW_AUTHENTICATE, super::nip98::SCHEME));
        }
        response.json(json!({ "error": self.message }))
    }
}

type Answer = Result<HttpResponse, ApiError>;

/// Checks the request's credentials against what the endpoint needs: a bearer token, or a
/// NIP-98 event of the operator for this request (`body`: the request's body, if any).
/// Refusals are counted in the admin stats.
fn authorize(
    req: &HttpRequest,
    state: &AdminState,
    needs: Access,
    body: Option<&[u8]>,
) -> Result<(), ApiError> {
    let stats = &state.node.admin_parts().stats;
    let result = credentials(req, state, needs, body);
    if result
        .as_ref()
        .is_err_and(|e| e.status == StatusCode::UNAUTHORIZED)
    {
        stats.auth_refused.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// The full URL the client asked for, as a NIP-98 `u` tag names it (the host and scheme a
/// proxy forwarded, if it says so).
fn request_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_string(), |p| p.as_str().to_string());
    format!("{}://{}{path}", info.scheme(), info.host())
}

fn credentials(
    req: &HttpRequest,
    state: &AdminState,
    needs: Access,
    body: Option<&[u8]>,
) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing Authorization header: send `Authorization: Bearer <token>` with the token \
             from admin.token_file (or admin.read_token_file to read), or a NIP-98 \
             `Authorization: Nostr <event>` signed by nostr.operator_pubkey",
        ));
    };
    let value = value.to_str().unwrap_or("");
    if super::nip98::is_nostr(value) {
        let stats = &state.node.admin_parts().stats;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let url = request_url(req);
        let request = super::nip98::Request {
            url: &url,
            method: req.method().as_str(),
            body,
            now,
        };
        return match super::nip98::verify(value, request, &state.nip98, &state.nip98_replays) {
            // The operator may do everything.
            Ok(_) => {
                stats.nip98_accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(refusal) => {
                stats.nip98_refused.fetch_add(1, Ordering::Relaxed);
                Err(unauthorized(&refusal.to_string()))
            }
        };
    }
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            "the Authorization header is not a bearer token (`Bearer <token>`) nor a NIP-98 \
             event (`Nostr <base64 event>`)",
        ));
    };
    match (state.tokens.access(token.trim()), needs) {
        (None, _) => Err(unauthorized(
            "wrong token: it is neither admin.token_file's nor admin.read_token_file's",
        )),
        (Some(Access::ReadOnly), Access::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the read-only token may only read (GET); this needs the token of admin.token_file",
        )),
        (Some(_), _) => Ok(()),
    }
}

async fn healthz(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok" })))
}

async fn readyz(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let reasons = state.node.not_ready_reasons().await;
    if reasons.is_empty() {
        Ok(HttpResponse::Ok().json(json!({ "ready": true })))
    } else {
        Ok(HttpResponse::ServiceUnavailable().json(json!({ "ready": false, "reasons": reasons })))
    }
}

fn npub(hex: &str) -> Option<String> {
    PublicKey::from_hex(hex).ok()?.to_bech32().ok()
}

/// Known peers per state, every state named (zeros included).
fn count_states(peers: &[PeerRecord]) -> Vec<(PeerState, usize)> {
    PeerState::ALL
        .into_iter()
        .map(|s| (s, peers.iter().filter(|p| p.state == s).count()))
        .collect()
}

async fn info(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let node = &state.node;
    let fail = |e: NodeError| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let peers = node.peers().await.map_err(fail)?;
    let stats = node.stats().await.map_err(fail)?;
    let persistence = node.persistence_stats().await.map_err(fail)?;
    let by_state: serde_json::Map<String, serde_json::Value> = count_states(&peers)
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n.into()))
        .collect();
    let pubkey = node.public_key();
    let relays: Vec<serde_json::Value> = node
        .relays()
        .await
        .into_iter()
        .map(|r| json!({ "url": r.url, "role": r.role, "connected": r.connected }))
        .collect();
    let operator = node
        .operator()
        .map(|key| json!({ "pubkey": key.to_hex(), "npub": key.to_bech32().ok() }));
    Ok(HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": node.node_id(),
        "ilp_address": node.own_address().to_string(),
        "pubkey": pubkey.to_hex(),
        "npub": pubkey.to_bech32().ok(),
        "uptime_seconds": node.uptime().as_secs(),
        "btp_listen": node.local_addr().map(|a| a.to_string()),
        "admin_listen": node.admin_addr().map(|a| a.to_string()),
        "operator": operator,
        "public_endpoint": node.public_endpoint(),
        "chain": chain_view(node).await,
        "relays": relays,
        "peers": { "total": peers.len(), "by_state": by_state },
        "supervisor": {
            "running": stats.running,
            "connected": stats.connected,
            "waiting_slot": stats.waiting,
            "idle": stats.idle,
            "recovering": stats.recovering,
        },
        "persistence": {
            "changes_received": persistence.changes_received,
            "records_written": persistence.records_written,
            "transactions": persistence.transactions,
            "failed_attempts": persistence.failed_attempts,
            "pending": persistence.pending,
        },
        "inbound_sessions": node.inbound_sessions(),
        "admin": node.admin_parts().stats.snapshot(),
    })))
}

/// Wei as the API writes it: a decimal string (a JSON number may not hold it exactly).
fn wei(value: impl std::fmt::Display) -> serde_json::Value {
    value.to_string().into()
}

/// The chain the node pays on and its channel policy: `null` when the node has neither an
/// EVM chain nor a channel port with a policy. The policy's figures of now take one chain
/// read; when it fails they are `null` and `unknown_reason` says why.
async fn chain_view(node: &Node) -> serde_json::Value {
    let policy = node.channel_policy().await.map(|p| {
        json!({
            "deposit_wei": wei(p.deposit_wei),
            "auto_open": p.auto_open,
            "per_channel_cap_wei": p.per_channel_cap_wei.map(wei),
            "total_cap_wei": p.total_cap_wei.map(wei),
            "total_cap_used_wei": p.total_cap_used_wei.map(wei),
            "total_cap_left_wei": p.total_cap_left_wei.map(wei),
            "unknown_reason": p.unknown_reason,
        })
    });
    match (node.chain(), policy) {
        (None, None) => serde_json::Value::Null,
        (chain, policy) => json!({
            "chain_id": chain.map(|c| c.chain_id()),
            "name": chain.and_then(|c| crate::chain::chain_name(c.chain_id())),
            "contract": chain.map(|c| c.contract().to_string()),
            "payer": chain.map(|c| c.address().to_string()),
            "channel_policy": policy,
        }),
    }
}

/// The peer's channel as the contract stores it now: `null` without a channel id or a
/// chain; `{"error": ...}` when it cannot be read (the rest of the answer stands).
async fn channel_view(node: &Node, channel_id: Option<&str>) -> serde_json::Value {
    let (Some(chain), Some(id)) = (node.chain(), channel_id) else {
        return serde_json::Value::Null;
    };
    match chain.channel(id).await {
        Ok(Some(c)) => json!({
            "id": id,
            "payer": c.payer.to_string(),
            "payee": c.payee.to_string(),
            "deposit_wei": wei(c.deposit),
            "claimed_wei": wei(c.claimed),
            "expiry": c.expiry,
            "closed": c.closed,
        }),
        Ok(None) => json!({
            "id": id,
            "error": format!("the contract {} has no channel {id}", chain.contract()),
        }),
        Err(fault) => json!({
            "id": id,
            "error": format!("reading channel {id}: {}", fault.reason()),
        }),
    }
}

/// A peer as the API shows it: its record and what follows from it now.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerView {
    #[serde(flatten)]
    pub record: PeerRecord,
    pub npub: Option<String>,
    /// Seconds until the next connection attempt (0: due now; null: none planned).
    pub next_attempt_in_seconds: Option<u64>,
    /// Whether the operator stopped the peer (it is not reconnected until retried).
    pub stopped_by_operator: bool,
}

impl PeerView {
    fn of(record: PeerRecord, now: Timestamp) -> PeerView {
        PeerView {
            npub: npub(&record.nostr_pubkey),
            next_attempt_in_seconds: record
                .next_attempt_at
                .map(|at| at.saturating_since(now).as_secs_f64().ceil() as u64),
            stopped_by_operator: record.desired == crate::lifecycle::PeerIntent::Disconnect,
            record,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PeersQuery {
    state: Option<String>,
    followed: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list_peers(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<PeersQuery>,
) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let wanted_state = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(PeerState::parse(s).ok_or_else(|| {
            let all: Vec<_> = PeerState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("state `{s}` is unknown: one of {}", all.join(", ")))
        })?),
    };
    let followed = match query.followed.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "followed `{f}` must be true or false"
            )))
        }
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit `{l}` must be a whole number from 1 to {MAX_PAGE}"
                )))
            }
        },
    };
    let after = query.after.clone().unwrap_or_default();
    let node = &state.node;
    let mut peers = node
        .peers()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    peers.retain(|p| {
        wanted_state.is_none_or(|s| p.state == s)
            && followed.is_none_or(|f| p.followed == f)
            && p.nostr_pubkey.as_str() > after.as_str()
    });
    // Paged by pubkey: stable across pages while states change.
    peers.sort_by(|a, b| a.nostr_pubkey.cmp(&b.nostr_pubkey));
    let more = peers.len() > limit;
    peers.truncate(limit);
    let next_after = more.then(|| peers.last().map(|p| p.nostr_pubkey.clone()));
    let now = node.now();
    let views: Vec<PeerView> = peers.into_iter().map(|p| PeerView::of(p, now)).collect();
    Ok(HttpResponse::Ok().json(json!({ "peers": views, "next_after": next_after.flatten() })))
}

/// The pubkey (64 lowercase hex) an operator's `id` names: a pubkey, an npub, or a hex
/// prefix that only one known peer's pubkey starts with.
async fn resolve(node: &Node, id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    let wanted = if id.starts_with("npub1") {
        PublicKey::parse(id)
            .map_err(|e| ApiError::bad_request(format!("`{id}` is not a valid npub: {e}")))?
            .to_hex()
    } else if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        id.to_ascii_lowercase()
    } else {
        return Err(ApiError::bad_request(format!(
            "`{id}` is not a peer id: give a pubkey (64 hex characters), an npub, or a unique \
             hex prefix"
        )));
    };
    let peers = node
        .peers()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let matching: Vec<&PeerRecord> = peers
        .iter()
        .filter(|p| p.nostr_pubkey.starts_with(&wanted))
        .collect();
    match matching.as_slice() {
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no known peer matches `{id}`"),
        )),
        [one] => Ok(one.nostr_pubkey.clone()),
        many => Err(ApiError::bad_request(format!(
            "`{id}` is ambiguous: {} peers start with it; give more of the pubkey",
            many.len()
        ))),
    }
}

async fn show_peer(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let pubkey = resolve(&state.node, &id).await?;
    let record = state
        .node
        .peer(&pubkey)
        .await
        .map_err(|e| ApiError::from_node(&pubkey, e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no peer {pubkey}")))?;
    let channel = channel_view(&state.node, record.channel_id.as_deref()).await;
    let mut view = serde_json::to_value(PeerView::of(record, state.node.now()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    view["channel"] = channel;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<String>,
}

/// Most transitions one history answer holds.
const HISTORY_LIMIT_MAX: usize = 10_000;

/// `GET /v1/peers/{id}/history?limit=`: the peer's state changes, newest first, from the
/// database (so they survive restarts).
async fn history(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=HISTORY_LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit `{text}` is not a number from 1 to {HISTORY_LIMIT_MAX}"),
                )
            })?,
    };
    let pubkey = resolve(&state.node, &id).await?;
    // What the node just did is part of the history asked for.
    let _ = state.node.flush().await;
    let transitions = state
        .node
        .history(&pubkey, limit)
        .await
        .map_err(|e| ApiError::from_node(&pubkey, e))?;
    Ok(HttpResponse::Ok().json(json!({
        "pubkey": pubkey,
        "transitions": transitions.iter().map(|t| json!({
            "from": t.from.map(|s| s.as_str()),
            "to": t.to.as_str(),
            "reason": t.reason,
            "at": t.at.as_millis(),
        })).collect::<Vec<_>>(),
    })))
}

/// The answer to an operation the supervisor took on.
async fn accepted(node: &Node, pubkey: &str, action: &str) -> Answer {
    let state = node.peer(pubkey).await.ok().flatten().map(|r| r.state);
    Ok(HttpResponse::Accepted().json(json!({
        "pubkey": pubkey,
        "action": action,
        "state": state.map(|s| s.as_str()),
    })))
}

async fn retry(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
    authorize(&req, &state, Access::Admin, Some(&body))?;
    let pubkey = resolve(&state.node, &id).await?;
    state
        .node
        .retry(&pubkey)
        .await
        .map_err(|e| ApiError::from_node(&pubkey, e))?;
    accepted(&state.node, &pubkey, "retry").await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    reason: Option<String>,
    /// Retried by itself after this many seconds; absent, held until retried.
    pause_seconds: Option<u64>,
}

/// A JSON body that may be left out (empty or blank: every field absent); a bad one is a
/// 400 showing the expected `shape`.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: &Bytes,
    shape: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be {shape}: {e}")))
}

/// The longest pause a disconnect may ask for (30 days).
const MAX_PAUSE_SECONDS: u64 = 30 * 24 * 3600;

async fn disconnect(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
    authorize(&req, &state, Access::Admin, Some(&body))?;
    let body: DisconnectBody = optional_body(&body, r#"{"reason": "...", "pause_seconds": N}"#)?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "disconnected by the operator".to_string());
    if reason.len() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "the reason is {} bytes; at most {MAX_REASON}",
            reason.len()
        )));
    }
    let pause = match body.pause_seconds {
        None => None,
        Some(s) if (1..=MAX_PAUSE_SECONDS).contains(&s) => Some(std::time::Duration::from_secs(s)),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "pause_seconds {s} is out of range: 1 to {MAX_PAUSE_SECONDS} (30 days)"
            )))
        }
    };
    let pubkey = resolve(&state.node, &id).await?;
    state
        .node
        .pause(&pubkey, &reason, pause)
        .await
        .map_err(|e| ApiError::from_node(&pubkey, e))?;
    accepted(&state.node, &pubkey, "disconnect").await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Decimal wei as a string (a deposit may not fit a JSON number exactly).
    deposit_wei: Option<String>,
}

async fn approve_channel(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
    authorize(&req, &state, Access::Admin, Some(&body))?;
    let body: ApproveBody = optional_body(&body, r#"{} or {"deposit_wei": "<decimal wei>"}"#)?;
    let deposit = body
        .deposit_wei
        .as_deref()
        .map(crate::chain::parse_deposit_wei)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("deposit_wei: {e}")))?;
    let pubkey = resolve(&state.node, &id).await?;
    match state.node.approve_channel_with(&pubkey, deposit).await {
        Ok(()) => accepted(&state.node, &pubkey, "approve-channel").await,
        // Known but with no running actor (failed, stopped, waiting for a slot): not in
        // channel_needed either.
        Err(NodeError::Peer(SupervisorError::UnknownPeer(_))) => {
            let now = state.node.peer(&pubkey).await.ok().flatten();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "peer {pubkey} is {}; a channel can only be approved in channel_needed",
                    now.map_or("not running".to_string(), |r| r.state.to_string())
                ),
            ))
        }
        Err(e) => Err(ApiError::from_node(&pubkey, e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    pubkey: String,
}

async fn connect(req: HttpRequest, state: web::Data<AdminState>, body: Bytes) -> Answer {
    authorize(&req, &state, Access::Admin, Some(&body))?;
    let body: ConnectBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"pubkey\": \"<64 hex or npub>\"}}: {e}"
        ))
    })?;
    let given = body.pubkey.trim();
    let valid_hex = given.len() == 64 && given.chars().all(|c| c.is_ascii_hexdigit());
    let pubkey = if valid_hex || given.starts_with("npub1") {
        PublicKey::parse(given).ok()
    } else {
        None
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{given}` is not a pubkey: give 64 hex characters or an npub"
        ))
    })?
    .to_hex();
    if pubkey == state.node.public_key().to_hex() {
        return Err(ApiError::bad_request("that is this node's own key"));
    }
    state
        .node
        .connect(&pubkey)
        .await
        .map_err(|e| ApiError::from_node(&pubkey, e))?;
    accepted(&state.node, &pubkey, "connect").await
}

async fn metrics(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let node = &state.node;
    let fail = |e: NodeError| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let peers = node.peers().await.map_err(fail)?;
    let supervisor = node.stats().await.map_err(fail)?;
    let persistence = node.persistence_stats().await.map_err(fail)?;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let mut snapshot = Snapshot {
        peers: count_states(&peers),
        waiting_slot: supervisor.waiting,
        persistence_pending: persistence.pending,
        persistence_write_failures: persistence.failed_attempts,
        records_unwritable: persistence.records_unwritable,
        actor_restarts: supervisor.actor_restarts,
        evictions: supervisor.evictions,
        outage: supervisor.outage,
        sessions_inbound: node.inbound_sessions(),
        sessions_outbound: supervisor.connected,
        ..Snapshot::default()
    };
    let admin = node.admin_parts().stats.snapshot();
    snapshot.admin_refused = vec![
        ("token", admin.auth_refused),
        ("nip98", admin.nip98_refused),
        ("admin.max_event_clients", admin.event_clients_refused),
    ];
    snapshot.admin_event_clients = admin.event_clients;
    if let Some(s) = node.session_stats() {
        snapshot.inbound_refused = vec![
            ("session.max_unauthenticated", s.refused_unauthenticated),
            (
                "session.max_unauthenticated_per_ip",
                s.refused_unauthenticated_per_ip,
            ),
            ("auth_timeout", s.auth_timeouts),
            ("auth_refused", s.auth_refused),
            ("session.max_replay_entries", s.refused_replay_guard_full),
        ];
        snapshot.sessions_closed = vec![
            ("session.write_timeout_ms", s.closed_write_deadline),
            ("session.unknown_idle_timeout_ms", s.closed_idle_stranger),
        ];
        snapshot.requests_refused_in_flight = s.requests_refused_in_flight;
    }
    if let Some(flow) = node.event_flow() {
        let f = &flow.stats;
        snapshot.events_received = vec![
            ("published", load(&f.published)),
            ("already_received", load(&f.already_received)),
            ("refused", load(&f.refused)),
            ("future_dated", load(&f.future_dated)),
        ];
        let r = flow.serve_stats();
        snapshot.reqs_refused = vec![
            (
                "events.max_filters_per_req",
                load(&r.refused_filters_per_req),
            ),
            (
                "events.max_subscriptions_per_peer",
                load(&r.refused_subscriptions_per_peer),
            ),
            (
                "events.max_live_reqs_per_peer",
                load(&r.refused_live_reqs_per_peer),
            ),
            ("events.max_live_reqs", load(&r.refused_live_reqs)),
            (
                "events.live_reqs_reserved_for_followed",
                load(&r.refused_live_reqs_strangers),
            ),
        ];
    }
    if let Some(discovery) = node.discovery() {
        let lookups = discovery.resolver.stats();
        let relays = discovery.relays.stats();
        snapshot.discovery_lookups = vec![
            ("req", load(&lookups.reqs)),
            ("cache_hit", load(&lookups.cache_hits)),
            ("endpoint_refused", lookups.endpoints_refused.total()),
            ("event_ignored", relays.ignored.total()),
            ("answer_cut", relays.cuts()),
        ];
    }
    snapshot.relays_up = node
        .relays()
        .await
        .into_iter()
        .filter(|r| r.role == "discovery")
        .map(|r| (r.url, r.connected))
        .collect();
    snapshot.chain_locked_wei = match node.chain() {
        None => Some(0.0),
        // The chain's own RPC timeout bounds the scrape; on trouble the last figure stays.
        Some(chain) => match chain.locked_wei().await {
            Ok(wei) => wei.to_string().parse::<f64>().ok(),
            Err(fault) => {
                log::debug!(
                    "metrics: the locked wei could not be read: {}",
                    fault.reason()
                );
                None
            }
        },
    };
    let metrics = &node.admin_parts().metrics;
    if metrics.per_peer() {
        snapshot.peer_figures = peers
            .into_iter()
            .map(|p| PeerFigures {
                pubkey: p.nostr_pubkey,
                state: p.state,
                rtt_us: p.rtt_us,
            })
            .collect();
    }
    let text = metrics.encode(&snapshot);
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    peer: Option<String>,
}

async fn events(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<EventsQuery>,
) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    let after = match req.headers().get("Last-Event-ID") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be the id of an event (a number)")
                })?,
        ),
    };
    let filter = match query.peer.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) if p.starts_with("npub1") => Some(
            PublicKey::parse(p)
                .map_err(|e| ApiError::bad_request(format!("`{p}` is not a valid npub: {e}")))?
                .to_hex(),
        ),
        Some(p) if p.len() <= 64 && p.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(p.to_ascii_lowercase())
        }
        Some(p) => {
            return Err(ApiError::bad_request(format!(
                "peer `{p}` is not a pubkey, an npub or a hex prefix"
            )))
        }
    };
    let parts = state.node.admin_parts();
    let slot = parts
        .stats
        .take_event_slot(state.max_event_clients)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many event-stream clients: admin.max_event_clients = {} are connected; \
                     try again when one goes away",
                    state.max_event_clients
                ),
            )
        })?;
    let subscription = parts.events.subscribe(after);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, actix_web::Error>>(64);
    actix_web::rt::spawn(feed(subscription, filter, tx, slot));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

fn missed_event(missed: u64, why: &str) -> Bytes {
    let data = json!({ "missed": missed, "reason": why });
    Bytes::from(format!("event: missed\ndata: {data}\n\n"))
}

/// Writes one client's event stream until it goes away or the node stops; the client's
/// slot is given back then.
async fn feed(
    mut subscription: Subscription,
    filter: Option<String>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, actix_web::Error>>,
    _slot: EventSlot,
) {
    use tokio::sync::broadcast::error::RecvError;
    let wanted = |pubkey: &str| filter.as_deref().is_none_or(|f| pubkey.starts_with(f));
    let frame = |e: &super::events::NumberedEvent| {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            e.id, e.kind, e.data
        ))
    };
    // The first bytes go out at once, so the client sees the stream open.
    if tx
        .send(Ok(Bytes::from_static(
            b": peer_state, channel, follow and heartbeat events\n\n",
        )))
        .await
        .is_err()
    {
        return;
    }
    if subscription.missed > 0 {
        let why = "older than the admin.event_buffer events the node keeps";
        if tx
            .send(Ok(missed_event(subscription.missed, why)))
            .await
            .is_err()
        {
            return;
        }
    }
    for event in std::mem::take(&mut subscription.backlog) {
        if wanted(&event.pubkey) && tx.send(Ok(frame(&event))).await.is_err() {
            return;
        }
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let bytes = tokio::select! {
            received = subscription.live.recv() => match received {
                Ok(event) if wanted(&event.pubkey) => frame(&event),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => missed_event(n, "this client fell behind the node"),
                Err(RecvError::Closed) => return,
            },
            _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
            // The client went away: its slot is free at once, not at the next keepalive.
            _ = tx.closed() => return,
        };
        if tx.send(Ok(bytes)).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelBody {
    filter: String,
}

async fn log_level(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorize(&req, &state, Access::ReadOnly, None)?;
    Ok(HttpResponse::Ok().json(json!({ "filter": super::logger::current_filter() })))
}

async fn set_log_level(req: HttpRequest, state: web::Data<AdminState>, body: Bytes) -> Answer {
    use super::logger::FilterError;
    authorize(&req, &state, Access::Admin, Some(&body))?;
    let body: LogLevelBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"filter\": \"info,btp_nips_node=debug\"}}: {e}"
        ))
    })?;
    match super::logger::set_filter(&body.filter) {
        Ok(old) => {
            let stats = &state.node.admin_parts().stats;
            stats.log_filter_changes.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "log filter changed by the operator from `{old}` to `{}`",
                body.filter.trim()
            );
            Ok(HttpResponse::Ok().json(json!({ "filter": body.filter.trim(), "previous": old })))
        }
        Err(e @ FilterError::Invalid { .. }) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ FilterError::NotInstalled) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}
