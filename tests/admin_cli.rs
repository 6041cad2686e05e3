//! The operator's commands against a running binary: `status`, `peers`, `peer`, `retry`,
//! `disconnect`, `watch` through the admin API; bad input refused with exit status 2;
//! `peers` read from the database, marked "node not running", once the node is down.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::storage::Database;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .current_dir(config.parent().unwrap())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `peer <id> --json` until `done` holds (at most 10 s).
fn wait_peer(config: &Path, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(config, &["peer", id, "--json"]);
        assert!(out.status.success(), "{}", both(&out));
        let peer: Value = serde_json::from_slice(&out.stdout).unwrap();
        if done(&peer) {
            return peer;
        }
        assert!(Instant::now() < deadline, "timed out: {peer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_commands_reach_the_running_node_and_peers_falls_back_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("node.db").display());
    let failed = support::node::stored(1, PeerState::Failed, true, None);
    let pubkey = failed.nostr_pubkey.clone();
    // A second failed peer (…10 against …01: 63 characters still name one), so a short
    // prefix names two peers.
    let other = support::node::stored(16, PeerState::Failed, true, None);
    Database::open(&url, 1)
        .unwrap()
        .upsert_batch(&[failed, other])
        .unwrap();
    let port = support::free_port();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {{id: \"clinode\"}}\ndatabase: {{url: \"{url}\"}}\nsession: {{listen: \"\"}}\n\
             admin: {{listen: \"127.0.0.1:{port}\", token_file: \"{}\", read_token_file: \"{}\"}}\n",
            dir.path().join("admin-token").display(),
            dir.path().join("read-token").display()
        ),
    )
    .unwrap();

    // Before the node runs: the database, marked so.
    let out = cli(&config, &["peers"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).starts_with("node not running"),
        "{}",
        both(&out)
    );

    let mut node = Running(
        Command::new(BIN)
            .args(["run", "--ephemeral", "--config", config.to_str().unwrap()])
            // The default filter is what `log-level` is checked against below.
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = cli(&config, &["status"]);
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
        &std::fs::metadata(dir.path().join("admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = cli(&config, &["status", "--json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["node_id"], "clinode");
    assert_eq!(info["peers"]["by_state"]["failed"], 2);

    let out = cli(&config, &["peers"]);
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
    let out = cli(&config, &["peers", "--wide"]);
    assert!(stdout(&out).contains(&pubkey), "{}", both(&out));

    // The running binary's log filter: dependencies' chatter off by default, changed live.
    let out = cli(&config, &["log-level"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("alloy=warn") && stdout(&out).contains("hyper=warn"),
        "{}",
        both(&out)
    );
    let out = cli(
        &config,
        &["log-level", "info,btp_nips_node=debug", "--json"],
    );
    assert!(out.status.success(), "{}", both(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["filter"], "info,btp_nips_node=debug");
    let out = cli(&config, &["log-level"]);
    assert!(
        stdout(&out).contains("`info,btp_nips_node=debug`"),
        "{}",
        both(&out)
    );

    // A watcher sees what the commands below do.
    let mut watch = Running(
        Command::new(BIN)
            .args(["watch", "--json", "--config", config.to_str().unwrap()])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut watched = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(300));

    // retry (by a prefix): the failed peer goes back to trying (discovery is not
    // configured here, so it then waits on this node, not failed).
    let out = cli(&config, &["retry", &pubkey[..63]]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).starts_with("retry of "), "{}", both(&out));
    let peer = wait_peer(&config, &pubkey, |p| p["state"] != "failed");
    assert_ne!(peer["state"], "failed");
    let first: Value = serde_json::from_str(&watched.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "peer_state");
    assert_eq!(first["data"]["from"], "failed");
    assert_eq!(first["data"]["to"], "discovering");

    let out = cli(&config, &["disconnect", &pubkey, "--reason", "bye for now"]);
    assert!(out.status.success(), "{}", both(&out));
    wait_peer(&config, &pubkey, |p| p["stopped_by_operator"] == true);
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
        let out = cli(&config, &args);
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
        &config,
        &["status", "--token-file", bogus.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));

    // The node stops; `peers` reads the database, marked so; the others say no node
    // answers.
    let pid = node.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(node.0.wait().unwrap().success());
    let out = cli(&config, &["peers"]);
    assert!(out.status.success(), "{}", both(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("node not running") && table.contains("(stop)"),
        "{table}"
    );
    let out = cli(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no admin API answers"));
}
