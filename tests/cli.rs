//! The binary as an operator runs it: `run` on the embedded SQLite store until SIGTERM,
//! with every change flushed; `peers` reading the database; bad configuration refused.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::storage::Database;

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

#[test]
fn a_bad_environment_value_is_refused_naming_its_key() {
    let out = Command::new(BIN)
        .arg("peers")
        .env(
            "BTP_NIPS_NODE__BTP_NIPS__PEER_CONNECTIONS__MAX_ACTIVE_CONNECTIONS",
            "0",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("btp_nips.peer_connections.max_active_connections"),
        "{stderr}"
    );
}

#[test]
fn run_recovers_peers_and_flushes_everything_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("node.db");
    let url = format!("sqlite://{}", db_path.display());
    {
        let db = Database::open(&url, 1).unwrap();
        db.upsert_batch(&[support::node::stored(1, PeerState::Discovering, true, None)])
            .unwrap();
    }
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "database:\n  url: \"{url}\"\nsession:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"\"\n"
        ),
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .args(["run", "--ephemeral", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info,btp_nips_node::lifecycle=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Wait until the node says it runs and the peer has been tried once.
    let mut log = Vec::new();
    let (mut running, mut tried) = (false, false);
    for line in lines.by_ref() {
        let line = line.unwrap();
        running |= line.contains("running on");
        tried |= line.contains("discovering -> disconnected");
        log.push(line);
        if running && tried {
            break;
        }
    }
    assert!(
        log.iter().any(|l| l.contains("loaded 1 stored peers")),
        "{log:?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    log.extend(lines.map(|l| l.unwrap()));
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("every change is on disk")),
        "{log:?}"
    );

    // The peer was driven: no relays are configured, which is this node's own lack, so
    // the peer waits and is retried without spending an attempt.
    let db = Database::open(&url, 1).unwrap();
    let peer = db.load(&support::node::pubkey(1)).unwrap().unwrap();
    assert_eq!(peer.state, PeerState::Disconnected, "{peer:?}");
    assert_eq!(peer.reconnect_attempts, 0);
    assert!(peer.next_attempt_at.is_some());
    let reason = peer.failure_reason.unwrap();
    assert!(
        reason.starts_with("waiting for this node: ") && reason.contains("not configured"),
        "{reason}"
    );

    let out = Command::new(BIN)
        .args(["peers", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("disconnected") && table.contains("\n1 peer\n"),
        "{table}"
    );
}
