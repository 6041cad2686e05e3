//! The operator's commands against a running binary: `status`, `peers`, `peer`, `retry`,
//! `disconnect`, `watch` through the admin API; bad input refused with exit status 2;
//! `peers` read from the database, marked "node not running", once the node is down.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::storage::Database;
use serde_json::Value;
use support::binary::*;

const LIMIT: Duration = Duration::from_secs(10);

#[actix_rt::test]
async fn the_commands_reach_the_running_node_and_peers_falls_back_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig::new(dir.path(), "clinode").admin_api().write();
    let failed = support::node::stored(1, PeerState::Failed, true, None);
    let pubkey = failed.nostr_pubkey.clone();
    // A second failed peer (…10 against …01: 63 characters still name one), so a short
    // prefix names two peers.
    let other = support::node::stored(16, PeerState::Failed, true, None);
    Database::open(&config.db_url, 1)
        .unwrap()
        .upsert_batch(&[failed, other])
        .unwrap();
    let config_file = &config.path;

    // Before the node runs: the database, marked so.
    let out = cli(config_file, &["peers"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).starts_with("node not running"),
        "{}",
        both(&out)
    );

    // The default filter is what `log-level` is checked against below.
    let mut node = NodeProcess::start(&config, None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = cli(config_file, &["status"]);
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "{}", both(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.starts_with("node clinode (btp-nips-node"),
        "{status}"
    );
    assert!(status.contains("failed 2"), "{status}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(config.admin_token_file())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = cli(config_file, &["status", "--json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["node_id"], "clinode");
    assert_eq!(info["peers"]["by_state"]["failed"], 2);

    let out = cli(config_file, &["peers"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        !stdout(&out).contains("node not running") && stdout(&out).contains("2 peers"),
        "{}",
        both(&out)
    );
    // Short ids by default, full pubkeys with --wide; the columns line up.
    let table = stdout(&out);
    assert!(
        table.contains(&pubkey[..16]) && !table.contains(&pubkey),
        "{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].find("state"),
        lines[1].find("failed"),
        "aligned: {table}"
    );
    let out = cli(config_file, &["peers", "--wide"]);
    assert!(stdout(&out).contains(&pubkey), "{}", both(&out));

    // The running binary's log filter: dependencies' chatter off by default, changed live.
    let out = cli(config_file, &["log-level"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("alloy=warn") && stdout(&out).contains("hyper=warn"),
        "{}",
        both(&out)
    );
    let out = cli(
        config_file,
        &["log-level", "info,btp_nips_node=debug", "--json"],
    );
    assert!(out.status.success(), "{}", both(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["filter"], "info,btp_nips_node=debug");
    let out = cli(config_file, &["log-level"]);
    assert!(
        stdout(&out).contains("`info,btp_nips_node=debug`"),
        "{}",
        both(&out)
    );

    // A watcher sees what the commands below do.
    let mut watch = Running(
        Command::new(BIN)
            .args(["watch", "--json", "--config", config_file.to_str().unwrap()])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut watched = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    // It only gets what happens once it is subscribed.
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = cli(config_file, &["status", "--json"]);
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        if info["admin"]["event_clients"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never subscribed: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // retry (by a prefix): the failed peer goes back to trying (discovery is not
    // configured here, so it then waits on this node, not failed).
    let out = cli(config_file, &["retry", &pubkey[..63]]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).starts_with("retry of "), "{}", both(&out));
    let peer = wait_peer(config_file, &pubkey, LIMIT, |p| p["state"] != "failed").await;
    assert_ne!(peer["state"], "failed");
    let first: Value = serde_json::from_str(&watched.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "peer_state");
    assert_eq!(first["data"]["from"], "failed");
    assert_eq!(first["data"]["to"], "discovering");

    let out = cli(
        config_file,
        &["disconnect", &pubkey, "--reason", "bye for now"],
    );
    assert!(out.status.success(), "{}", both(&out));
    wait_peer(config_file, &pubkey, LIMIT, |p| {
        p["stopped_by_operator"] == true
    })
    .await;
    let said_bye = watched
        .by_ref()
        .take(10)
        .map(|l| l.unwrap())
        .any(|l| l.contains("bye for now"));
    assert!(said_bye, "the watcher saw the disconnect");
    drop(watch);

    // Refusals: exit status 2, naming what was wrong.
    let unknown = "ab".repeat(32);
    for (args, says) in [
        (vec!["retry", unknown.as_str()], "no known peer"),
        (vec!["peer", &pubkey[..10]], "is ambiguous: 2 peers"),
        (vec!["peer", "not-an-id"], "is not a peer id"),
        (vec!["approve-channel", pubkey.as_str()], "channel_needed"),
        (vec!["connect", "nope"], "is not a pubkey"),
        (
            vec!["peers", "--state", "active"],
            "state `active` is unknown",
        ),
        (vec!["log-level", "verbose"], "`verbose` is neither a level"),
    ] {
        let out = cli(config_file, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", both(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            both(&out)
        );
    }
    let bogus = dir.path().join("bogus-token");
    std::fs::write(&bogus, "not-the-token\n").unwrap();
    let out = cli(
        config_file,
        &["status", "--token-file", bogus.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));

    // The node stops; `peers` reads the database, marked so; the others say no node
    // answers.
    node.stop().await;
    let out = cli(config_file, &["peers"]);
    assert!(out.status.success(), "{}", both(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("node not running") && table.contains("(stop)"),
        "{table}"
    );
    let out = cli(config_file, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no admin API answers"));
}
