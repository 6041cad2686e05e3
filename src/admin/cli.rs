//! The operator's commands that reach the running node through the admin API: `status`,
//! `peers`, `peer`, `retry`, `disconnect`, `approve-channel`, `connect`, `watch`,
//! `log-level`. Each
//! takes `--admin URL` (default: `admin.listen`), the token from `admin.token_file`
//! (`--token-file` to use another), and `--json`.
//!
//! Exit status: 0 done; 2 the node refused the input (unknown or ambiguous peer, a state
//! the operation does not apply to, a wrong token); 1 anything else (no node answering,
//! a failure of the node).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{AdminClient, ClientError, StreamEvent};
use crate::config::Settings;
use crate::lifecycle::{PeerIntent, PeerRecord, PeerState, Timestamp};
use crate::storage::Database;

/// Where the admin API is and how to show its answers.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin API (default: http://<admin.listen>).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// The token file (default: admin.token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// The running node: identity, uptime, peers per state, supervisor and persistence.
    Status(#[command(flatten)] AdminArgs),
    /// Every known peer, offline ones included (read from the database, marked "node not
    /// running", when no node answers).
    Peers {
        /// Only peers in this state.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only peers the operator follows.
        #[arg(long)]
        followed: bool,
        /// Full pubkeys instead of their first 16 characters.
        #[arg(long)]
        wide: bool,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// One peer (a pubkey, an npub or a unique hex prefix).
    Peer {
        id: String,
        /// Its state changes, newest first (kept across restarts).
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Retry a failed or disconnected peer now.
    Retry {
        id: String,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Disconnect a peer; it stays disconnected, across restarts too, until retried (or,
    /// with --pause, until the pause ends).
    Disconnect {
        id: String,
        /// Recorded as the peer's failure reason.
        #[arg(long)]
        reason: Option<String>,
        /// Retry it by itself after this long (`90`, `90s`, `15m`, `2h`, `1d`).
        #[arg(long, value_name = "DURATION", value_parser = parse_pause)]
        pause: Option<u64>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Approve opening a payment channel to a peer waiting in channel_needed.
    ApproveChannel {
        id: String,
        /// Open with this deposit instead of the configured `chain.deposit_wei`.
        #[arg(long, value_name = "WEI", value_parser = crate::chain::parse_deposit_wei)]
        deposit: Option<u128>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Follow and connect a peer (64 hex or an npub).
    Connect {
        pubkey: String,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Follow what the node does as it happens, one line per event: peer state changes,
    /// channel confirmations, follows, heartbeats (at most one per peer every
    /// admin.heartbeat_event_interval_seconds).
    Watch {
        /// Only this peer's changes (a pubkey, an npub or a hex prefix).
        #[arg(long, value_name = "ID")]
        peer: Option<String>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Change the running node's log filter (written as RUST_LOG is, such as
    /// `info,btp_nips_node=debug`); without a filter, show the one in force.
    LogLevel {
        filter: Option<String>,
        #[command(flatten)]
        args: AdminArgs,
    },
}

/// A command's failure and the exit status it gets.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        let code = match e {
            ClientError::Refused { .. } => 2,
            _ => 1,
        };
        let message = match &e {
            ClientError::Unreachable { .. } => {
                format!("{e} (is the node running, with admin.listen set?)")
            }
            _ => e.to_string(),
        };
        CliError { code, message }
    }
}

impl AdminCommand {
    fn args(&self) -> &AdminArgs {
        match self {
            AdminCommand::Status(args) => args,
            AdminCommand::Peers { args, .. }
            | AdminCommand::Peer { args, .. }
            | AdminCommand::Retry { args, .. }
            | AdminCommand::Disconnect { args, .. }
            | AdminCommand::ApproveChannel { args, .. }
            | AdminCommand::Connect { args, .. }
            | AdminCommand::Watch { args, .. }
            | AdminCommand::LogLevel { args, .. } => args,
        }
    }
}

/// Runs `command`; the error carries the exit status.
pub fn run(command: AdminCommand, settings: &Settings) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError {
            code: 1,
            message: e.to_string(),
        })?;
    runtime.block_on(run_async(command, settings))
}

fn bad_input(message: impl Into<String>) -> CliError {
    CliError {
        code: 2,
        message: message.into(),
    }
}

/// A path segment of an operator's id, checked before it goes into a URL.
fn peer_id(id: &str) -> Result<&str, CliError> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad_input(format!(
            "`{id}` is not a peer id: give a pubkey (64 hex characters), an npub, or a unique \
             hex prefix"
        )));
    }
    Ok(id)
}

fn client(args: &AdminArgs, settings: &Settings) -> Result<AdminClient, CliError> {
    let base = match &args.admin {
        Some(url) => url.clone(),
        None if settings.admin.enabled() => format!("http://{}", settings.admin.listen.trim()),
        None => {
            return Err(bad_input(
                "admin.listen is empty in the configuration: give the node's --admin URL",
            ))
        }
    };
    let path = args
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(&settings.admin.token_file));
    let token = super::tokens::read(&path).map_err(|e| CliError {
        code: 1,
        message: format!(
            "cannot read the admin token ({e}); it is written when the node first starts with \
             admin.listen set, or give --token-file"
        ),
    })?;
    Ok(AdminClient::new(&base, &token))
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

async fn run_async(command: AdminCommand, settings: &Settings) -> Result<(), CliError> {
    let json = command.args().json;
    if let AdminCommand::Peers {
        state,
        followed,
        wide,
        args,
    } = &command
    {
        return peers(settings, args, state.as_deref(), *followed, *wide).await;
    }
    let client = client(command.args(), settings)?;
    match &command {
        AdminCommand::Status(_) => {
            let info = client.get("/v1/info").await?;
            if json {
                print_json(&info);
            } else {
                print!("{}", status_text(&info));
            }
        }
        AdminCommand::Peer {
            id, history: true, ..
        } => {
            let history = client
                .get(&format!("/v1/peers/{}/history", peer_id(id)?))
                .await?;
            if json {
                print_json(&history);
            } else {
                print!("{}", history_text(&history));
            }
        }
        AdminCommand::Peer { id, .. } => {
            let peer = client.get(&format!("/v1/peers/{}", peer_id(id)?)).await?;
            if json {
                print_json(&peer);
            } else {
                print!("{}", peer_text(&peer));
            }
        }
        AdminCommand::Retry { id, .. } => {
            let answer = client
                .post(&format!("/v1/peers/{}/retry", peer_id(id)?), &json!({}))
                .await?;
            report(&answer, json);
        }
        AdminCommand::Disconnect {
            id, reason, pause, ..
        } => {
            let answer = client
                .post(
                    &format!("/v1/peers/{}/disconnect", peer_id(id)?),
                    &json!({ "reason": reason, "pause_seconds": pause }),
                )
                .await?;
            report(&answer, json);
        }
        AdminCommand::ApproveChannel { id, deposit, .. } => {
            let body = match deposit {
                Some(wei) => json!({ "deposit_wei": wei.to_string() }),
                None => json!({}),
            };
            let answer = client
                .post(
                    &format!("/v1/peers/{}/approve-channel", peer_id(id)?),
                    &body,
                )
                .await?;
            report(&answer, json);
        }
        AdminCommand::Connect { pubkey, .. } => {
            let answer = client
                .post("/v1/peers", &json!({ "pubkey": pubkey.trim() }))
                .await?;
            report(&answer, json);
        }
        AdminCommand::Watch { peer, .. } => watch(&client, peer.as_deref(), json).await?,
        AdminCommand::LogLevel { filter, .. } => {
            let answer = match filter {
                Some(filter) => {
                    // Refused here, before the node is asked, naming what is wrong.
                    super::logger::check_filter(filter).map_err(|e| bad_input(e.to_string()))?;
                    client
                        .post("/v1/log-level", &json!({ "filter": filter.trim() }))
                        .await?
                }
                None => client.get("/v1/log-level").await?,
            };
            if json {
                print_json(&answer);
            } else {
                match (answer["filter"].as_str(), answer["previous"].as_str()) {
                    (Some(now), Some(before)) => {
                        println!("log filter now `{now}` (was `{before}`)")
                    }
                    (Some(now), None) => println!("log filter `{now}`"),
                    _ => println!("the node's log filter cannot be read"),
                }
            }
        }
        AdminCommand::Peers { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn report(answer: &Value, json: bool) {
    if json {
        print_json(answer);
        return;
    }
    let pubkey = answer["pubkey"].as_str().unwrap_or("?");
    println!(
        "{} of {} accepted (now {})",
        answer["action"].as_str().unwrap_or("operation"),
        short(pubkey),
        answer["state"].as_str().unwrap_or("unknown")
    );
}

fn short(pubkey: &str) -> &str {
    &pubkey[..pubkey.len().min(16)]
}

fn status_text(info: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    out.push_str(&format!(
        "node {} (btp-nips-node {}), up {}s\n",
        s(&info["node_id"]),
        s(&info["version"]),
        s(&info["uptime_seconds"])
    ));
    out.push_str(&format!("  pubkey       {}\n", s(&info["pubkey"])));
    out.push_str(&format!("  npub         {}\n", s(&info["npub"])));
    out.push_str(&format!("  ilp address  {}\n", s(&info["ilp_address"])));
    out.push_str(&format!(
        "  listening    btp {}, admin {}\n",
        s(&info["btp_listen"]),
        s(&info["admin_listen"])
    ));
    let operator = &info["operator"];
    out.push_str(&format!(
        "  operator     {}\n",
        if operator.is_null() {
            "- (no follow list is read)".to_string()
        } else {
            s(&operator["npub"])
        }
    ));
    out.push_str(&format!(
        "  announced    {}\n",
        match &info["public_endpoint"] {
            Value::Null => "- (node.public_endpoint is empty)".to_string(),
            endpoint => s(endpoint),
        }
    ));
    out.push_str(&chain_text(&info["chain"], &s));
    let relays: Vec<String> = info["relays"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let up = if r["connected"] == true { "up" } else { "down" };
            format!("{} ({}, {up})", s(&r["url"]), s(&r["role"]))
        })
        .collect();
    out.push_str(&format!(
        "  relays       {}\n",
        if relays.is_empty() {
            "-".to_string()
        } else {
            relays.join(", ")
        }
    ));
    let states: Vec<String> = PeerState::ALL
        .iter()
        .map(|st| format!("{} {}", st, s(&info["peers"]["by_state"][st.as_str()])))
        .collect();
    out.push_str(&format!(
        "  peers        {} ({})\n",
        s(&info["peers"]["total"]),
        states.join(", ")
    ));
    let sup = &info["supervisor"];
    out.push_str(&format!(
        "  supervisor   running {}, connected {}, waiting for a slot {}, idle {}, recovering {}\n",
        s(&sup["running"]),
        s(&sup["connected"]),
        s(&sup["waiting_slot"]),
        s(&sup["idle"]),
        s(&sup["recovering"])
    ));
    let p = &info["persistence"];
    out.push_str(&format!(
        "  persistence  {} changes, {} rows in {} transactions, {} failed attempts, {} pending\n",
        s(&p["changes_received"]),
        s(&p["records_written"]),
        s(&p["transactions"]),
        s(&p["failed_attempts"]),
        s(&p["pending"])
    ));
    let a = &info["admin"];
    out.push_str(&format!(
        "  admin api    {} event-stream clients ({} refused), {} refused credentials, {} NIP-98 \
         authorizations\n",
        s(&a["event_clients"]),
        s(&a["event_clients_refused"]),
        s(&a["auth_refused"]),
        s(&a["nip98_accepted"])
    ));
    out
}

/// The chain and channel-policy lines of `status` (one line when the chain is off).
fn chain_text(chain: &Value, s: &dyn Fn(&Value) -> String) -> String {
    if chain.is_null() {
        return "  chain        off\n".to_string();
    }
    let mut out = format!(
        "  chain        {} (chain id {}), contract {}, payer {}\n",
        s(&chain["name"]),
        s(&chain["chain_id"]),
        s(&chain["contract"]),
        s(&chain["payer"])
    );
    let p = &chain["channel_policy"];
    if p.is_null() {
        return out;
    }
    let auto_open = if p["auto_open"] != true {
        "auto-open off".to_string()
    } else if p["total_cap_left_wei"].is_null() {
        format!(
            "auto-open caps {} per channel, {} in all, left unknown: {}",
            s(&p["per_channel_cap_wei"]),
            s(&p["total_cap_wei"]),
            s(&p["unknown_reason"])
        )
    } else {
        format!(
            "auto-open caps {} per channel, {} in all, {} left",
            s(&p["per_channel_cap_wei"]),
            s(&p["total_cap_wei"]),
            s(&p["total_cap_left_wei"])
        )
    };
    out.push_str(&format!(
        "  channels     deposit {} wei, {auto_open} (wei)\n",
        s(&p["deposit_wei"])
    ));
    out
}

/// One `key value` line per field; an object's fields (the channel) as `key.field`.
fn peer_text(peer: &Value) -> String {
    let Some(fields) = peer.as_object() else {
        return format!("{peer}\n");
    };
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let mut out = String::new();
    for (key, value) in fields {
        match value.as_object() {
            Some(inner) => {
                for (field, value) in inner {
                    let key = format!("{key}.{field}");
                    out.push_str(&format!("{key:<24} {}\n", text(value)));
                }
            }
            None => out.push_str(&format!("{key:<24} {}\n", text(value))),
        }
    }
    out
}

/// A pause as whole seconds: a number with an optional unit `s`, `m`, `h` or `d`.
fn parse_pause(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}`: use s, m, h or d (e.g. 15m)"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 90, 90s, 15m, 2h)"))?;
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("`{text}` must be at least 1s")),
        Some(seconds) => Ok(seconds),
    }
}

/// `peer --history`: one line per transition, newest first.
fn history_text(history: &Value) -> String {
    let mut out = String::new();
    for t in history["transitions"].as_array().into_iter().flatten() {
        let at = t["at"]
            .as_u64()
            .map_or_else(|| "-".to_string(), format_millis);
        let from = t["from"].as_str().unwrap_or("(new)");
        let to = t["to"].as_str().unwrap_or("?");
        let reason = t["reason"]
            .as_str()
            .map(|r| format!("  {r}"))
            .unwrap_or_default();
        let line = format!("{at}  {from:>15} -> {to:<15}{reason}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no transitions recorded\n");
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
fn format_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `peers`: from the running node, else from the database.
async fn peers(
    settings: &Settings,
    args: &AdminArgs,
    state: Option<&str>,
    followed: bool,
    wide: bool,
) -> Result<(), CliError> {
    if let Some(s) = state {
        if PeerState::parse(s).is_none() {
            let all: Vec<_> = PeerState::ALL.iter().map(|s| s.as_str()).collect();
            return Err(bad_input(format!(
                "state `{s}` is unknown: one of {}",
                all.join(", ")
            )));
        }
    }
    let from_node = match client(args, settings) {
        Ok(client) => Some(all_peers(&client, state, followed).await),
        // No token and no node listening: the database is all there is.
        Err(_) if args.admin.is_none() => None,
        Err(e) => return Err(e),
    };
    let (records, running) = match from_node {
        Some(Ok(records)) => (records, true),
        Some(Err(ClientError::Unreachable { .. })) | None => {
            let db = Database::open(&settings.database.url, 1).map_err(|e| CliError {
                code: 1,
                message: e.to_string(),
            })?;
            let mut records = db.load_all().map_err(|e| CliError {
                code: 1,
                message: e.to_string(),
            })?;
            records.retain(|r| {
                state.is_none_or(|s| r.state.as_str() == s) && (!followed || r.followed)
            });
            (records, false)
        }
        Some(Err(e)) => return Err(e.into()),
    };
    if args.json {
        print_json(&json!({ "node_running": running, "peers": records }));
        return Ok(());
    }
    if !running {
        println!("node not running: the peers as stored in the database");
    }
    print!("{}", peer_table(&records, Timestamp::now_system(), wide));
    Ok(())
}

/// Every page of `GET /v1/peers`.
async fn all_peers(
    client: &AdminClient,
    state: Option<&str>,
    followed: bool,
) -> Result<Vec<PeerRecord>, ClientError> {
    let mut records = Vec::new();
    let mut after = String::new();
    loop {
        let mut path = format!("/v1/peers?limit=1000&after={after}");
        if let Some(s) = state {
            path.push_str(&format!("&state={s}"));
        }
        if followed {
            path.push_str("&followed=true");
        }
        let page = client.get(&path).await?;
        let peers: Vec<PeerRecord> = serde_json::from_value(page["peers"].clone())
            .map_err(|e| ClientError::Failed(format!("unreadable peer list: {e}")))?;
        records.extend(peers);
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => return Ok(records),
        }
    }
}

/// The peers as a table, columns aligned to their widest cell: pubkey (its first 16
/// characters unless `wide`), state, priority, attempts, next attempt, last heartbeat,
/// round trip, reason.
pub fn peer_table(peers: &[PeerRecord], now: Timestamp, wide: bool) -> String {
    const HEAD: [&str; 8] = [
        "pubkey",
        "state",
        "pri",
        "attempts",
        "next attempt",
        "heartbeat",
        "rtt",
        "reason",
    ];
    // Numbers are right-aligned, text left-aligned; the reason, last, is not padded.
    const RIGHT: [bool; 8] = [false, false, true, true, false, false, true, false];
    let rows: Vec<[String; 8]> = peers.iter().map(|p| peer_cells(p, now, wide)).collect();
    let mut widths = HEAD.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 8]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 7 {
                out.push_str(cell);
            } else if RIGHT[i] {
                out.push_str(&format!("{cell:>w$}  ", w = widths[i]));
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(HEAD);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    let n = peers.len();
    out.push_str(&format!("{n} peer{}\n", if n == 1 { "" } else { "s" }));
    out
}

/// A round trip as the table shows it: milliseconds, to the microsecond below 10 ms.
fn rtt_cell(rtt_us: Option<u32>) -> String {
    rtt_us.map_or_else(
        || "-".into(),
        |us| crate::lifecycle::record::Millis(us).to_string(),
    )
}

fn peer_cells(p: &PeerRecord, now: Timestamp, wide: bool) -> [String; 8] {
    let ago = |t: Option<Timestamp>| match t {
        None => "-".to_string(),
        Some(t) if t >= now => format!("in {}s", (t - now).as_secs()),
        Some(t) => format!("{}s ago", (now - t).as_secs()),
    };
    let state = if p.desired == PeerIntent::Disconnect {
        format!("{} (stop)", p.state)
    } else {
        p.state.to_string()
    };
    let pubkey = if wide {
        p.nostr_pubkey.clone()
    } else {
        short(&p.nostr_pubkey).to_string()
    };
    [
        pubkey,
        state,
        p.priority.to_string(),
        p.reconnect_attempts.to_string(),
        ago(p.next_attempt_at),
        ago(p.last_heartbeat),
        rtt_cell(p.rtt_us),
        crate::untrusted::untrusted(p.failure_reason.as_deref().unwrap_or("")).to_string(),
    ]
}

/// `watch`: one line per event until the node stops; reconnects from the last id seen
/// while the node still answers.
async fn watch(client: &AdminClient, peer: Option<&str>, json: bool) -> Result<(), CliError> {
    let path = match peer {
        Some(p) => format!("/v1/events?peer={}", peer_id(p)?),
        None => "/v1/events".to_string(),
    };
    let mut last: Option<u64> = None;
    loop {
        let from = last;
        let print = |event: StreamEvent| {
            if let Some(id) = event.id {
                last = Some(id);
            }
            println!("{}", watch_line(&event, json));
            true
        };
        match client.stream(&path, from, print).await {
            // The stream ended (the node stopping, a proxy): pick it up where it was.
            Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            Err(ClientError::Unreachable { .. }) if last.is_some() => {
                eprintln!("the node stopped answering");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn watch_line(event: &StreamEvent, json: bool) -> String {
    if json {
        return json!({ "id": event.id, "event": event.event, "data": event.data }).to_string();
    }
    let d = &event.data;
    let head = |what: &str| {
        format!(
            "{:>6} {} {what}",
            event.id.map_or("-".into(), |i| i.to_string()),
            short(d["pubkey"].as_str().unwrap_or("?")),
        )
    };
    // What the node relays from others (reasons) is escaped to one line.
    let untrusted = |v: &Value| crate::untrusted::untrusted(v.as_str().unwrap_or("")).to_string();
    match event.event.as_str() {
        "peer_state" => {
            let mut line = head(&format!(
                "{} -> {}",
                d["from"].as_str().unwrap_or("new"),
                d["to"].as_str().unwrap_or("?")
            ));
            if d["reason"].is_string() {
                line.push_str(&format!(": {}", untrusted(&d["reason"])));
            }
            line
        }
        "channel" => {
            let counted = format!("{}/{} confirmations", d["confirmations"], d["required"]);
            let tx = d["tx_hash"].as_str().unwrap_or("?");
            match d["channel_id"].as_str() {
                Some(id) => head(&format!(
                    "channel {} open ({tx}, {counted})",
                    untrusted(&json!(id))
                )),
                None => head(&format!("channel tx {tx}: {counted}")),
            }
        }
        "follow" => {
            let by = match d["by"].as_str() {
                Some("operator") => "by the operator",
                Some("follow_list") => "by the follow list",
                _ => "",
            };
            let what = if d["followed"] == true {
                "followed"
            } else {
                "unfollowed"
            };
            head(format!("{what} {by}").trim_end())
        }
        "heartbeat" => head(&format!(
            "heartbeat rtt {}",
            rtt_cell(d["rtt_us"].as_u64().and_then(|us| u32::try_from(us).ok()))
        )),
        "missed" => format!(
            "     - missed {} events ({})",
            d["missed"],
            d["reason"].as_str().unwrap_or("")
        ),
        other => format!("     - {other}: {d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_operator_the_endpoint_the_chain_and_each_relay() {
        let info = serde_json::json!({
            "operator": {"pubkey": "ab", "npub": "npub1op"},
            "public_endpoint": "wss://btp.example.com/btp",
            "chain": {
                "chain_id": 84532, "name": "Base Sepolia", "contract": "0xC0", "payer": "0xFA",
                "channel_policy": {
                    "deposit_wei": "10", "auto_open": true, "per_channel_cap_wei": "10",
                    "total_cap_wei": "100", "total_cap_used_wei": "30",
                    "total_cap_left_wei": "70", "unknown_reason": null,
                },
            },
            "relays": [
                {"url": "wss://a", "role": "discovery", "connected": true},
                {"url": "wss://op", "role": "operator", "connected": false},
            ],
        });
        let text = status_text(&info);
        for line in [
            "  operator     npub1op\n",
            "  announced    wss://btp.example.com/btp\n",
            "  chain        Base Sepolia (chain id 84532), contract 0xC0, payer 0xFA\n",
            "  channels     deposit 10 wei, auto-open caps 10 per channel, 100 in all, 70 left (wei)\n",
            "  relays       wss://a (discovery, up), wss://op (operator, down)\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
        let off = status_text(
            &serde_json::json!({"operator": null, "public_endpoint": null,
            "chain": null, "relays": []}),
        );
        for line in [
            "  operator     - (no follow list is read)\n",
            "  announced    - (node.public_endpoint is empty)\n",
            "  chain        off\n",
            "  relays       -\n",
        ] {
            assert!(off.contains(line), "{line:?} in:\n{off}");
        }
    }

    #[test]
    fn a_peers_channel_is_shown_field_by_field() {
        let peer = serde_json::json!({
            "channel": {"deposit_wei": "5", "expiry": 17},
            "state": "connected",
        });
        assert_eq!(
            peer_text(&peer),
            "channel.deposit_wei      5\nchannel.expiry           17\nstate                    connected\n"
        );
    }

    #[test]
    fn pauses_are_read_with_units() {
        assert_eq!(parse_pause("90"), Ok(90));
        assert_eq!(parse_pause("2s"), Ok(2));
        assert_eq!(parse_pause("15m"), Ok(900));
        assert_eq!(parse_pause("2h"), Ok(7200));
        assert_eq!(parse_pause("1d"), Ok(86_400));
        assert!(parse_pause("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_pause("5w").unwrap_err().contains("unknown unit `w`"));
        assert!(parse_pause("soon").is_err());
    }

    #[test]
    fn millis_are_shown_as_utc_dates() {
        assert_eq!(format_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_millis(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(format_millis(1_700_000_000_000), "2023-11-14 22:13:20.000");
        assert_eq!(format_millis(4_102_444_799_999), "2099-12-31 23:59:59.999");
    }

    fn record(i: u8, state: PeerState, rtt_us: Option<u32>, reason: Option<&str>) -> PeerRecord {
        let mut r = PeerRecord::new(format!("{i:02x}").repeat(32), true, Timestamp(1));
        r.state = state;
        r.rtt_us = rtt_us;
        r.failure_reason = reason.map(str::to_string);
        r
    }

    #[test]
    fn the_table_aligns_its_columns_and_shows_full_keys_only_when_wide() {
        let mut stopped = record(2, PeerState::ChannelOpening, None, Some("line\nbreak"));
        stopped.desired = PeerIntent::Disconnect;
        let peers = [
            record(1, PeerState::Connected, Some(420), None),
            stopped,
            record(3, PeerState::Connected, Some(1_234_000), None),
        ];
        let table = peer_table(&peers, Timestamp(1000), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        // Text starts where its heading starts; numbers end where theirs ends.
        let byte = |row: &str, at: usize| row.as_bytes().get(at).copied().unwrap_or(b' ');
        for row in &lines[1..4] {
            let state = lines[0].find("state").unwrap();
            assert!(
                byte(row, state - 1) == b' ' && byte(row, state) != b' ',
                "{table}"
            );
            for heading in ["pri", "rtt"] {
                let end = lines[0].find(heading).unwrap() + heading.len();
                assert!(
                    byte(row, end - 1) != b' ' && byte(row, end) == b' ',
                    "{heading} in {row:?}\n{table}"
                );
            }
        }
        assert!(
            lines[1].starts_with(&format!("{} ", "01".repeat(8))),
            "{table}"
        );
        assert!(!table.contains(&"01".repeat(32)));
        assert!(
            lines[1].contains("0.420 ms"),
            "under a millisecond: {table}"
        );
        assert!(lines[3].contains("1234 ms"), "{table}");
        assert!(lines[2].contains("channel_opening (stop)"));
        assert!(
            lines[2].ends_with("line\\nbreak"),
            "one line per peer: {table}"
        );
        assert_eq!(lines[4], "3 peers");
        assert!(peer_table(&peers[..1], Timestamp(1000), false).ends_with("\n1 peer\n"));
        let wide = peer_table(&peers, Timestamp(1000), true);
        assert!(wide.contains(&"03".repeat(32)), "{wide}");
    }

    #[test]
    fn watch_prints_one_line_per_event_of_each_kind() {
        let pubkey = "ab".repeat(32);
        let event = |id: u64, kind: &str, data: Value| StreamEvent {
            id: Some(id),
            event: kind.into(),
            data,
        };
        let lines = [
            event(
                1,
                "follow",
                json!({"pubkey": pubkey, "followed": true, "by": "operator", "at": 1}),
            ),
            event(
                2,
                "peer_state",
                json!({"pubkey": pubkey, "from": "connecting", "to": "failed", "reason": "bad\nkey"}),
            ),
            event(
                3,
                "channel",
                json!({"pubkey": pubkey, "tx_hash": "0x12", "confirmations": 1, "required": 3,
                       "channel_id": null, "at": 1}),
            ),
            event(
                4,
                "channel",
                json!({"pubkey": pubkey, "tx_hash": "0x12", "confirmations": 3, "required": 3,
                       "channel_id": "0xc4", "at": 1}),
            ),
            event(
                5,
                "heartbeat",
                json!({"pubkey": pubkey, "rtt_us": 420, "at": 1}),
            ),
            event(
                6,
                "follow",
                json!({"pubkey": pubkey, "followed": false, "by": "follow_list", "at": 1}),
            ),
        ]
        .map(|e| watch_line(&e, false));
        let short = "ab".repeat(8);
        assert_eq!(
            lines,
            [
                format!("     1 {short} followed by the operator"),
                format!("     2 {short} connecting -> failed: bad\\nkey"),
                format!("     3 {short} channel tx 0x12: 1/3 confirmations"),
                format!("     4 {short} channel 0xc4 open (0x12, 3/3 confirmations)"),
                format!("     5 {short} heartbeat rtt 0.420 ms"),
                format!("     6 {short} unfollowed by the follow list"),
            ]
        );
        assert!(lines.iter().all(|l| !l.contains('\n')));
        let json_line = watch_line(&event(7, "heartbeat", json!({"rtt_us": 1})), true);
        let parsed: Value = serde_json::from_str(&json_line).unwrap();
        assert_eq!(
            (parsed["id"].as_u64(), parsed["event"].as_str()),
            (Some(7), Some("heartbeat"))
        );
    }
}
