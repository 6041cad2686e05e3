//! `btp-nips-node devnet` as a user runs it: the binary as a child process of the test,
//! anvil as its child. Every node's admin API reports its two peers connected (over a
//! channel with a chain), the notes seeded on one operator relay reach the others, SIGINT
//! stops everything (the anvil process is gone), and a second devnet on the same DIR
//! resumes with the same keys and channels, opening none.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp_nips_node::discovery::relays::RelaySet;
use nostr_relay_builder::prelude::{Filter, Keys, Kind};
use serde_json::Value;
use support::admin::Api;
use support::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");
/// Start to every link connected takes a few seconds (with a chain: a deploy, funding and
/// two confirmations at a block a second); generous for a loaded machine.
const UP: Duration = Duration::from_secs(90);
const STOP: Duration = Duration::from_secs(30);

/// One `devnet` process and the lines it printed.
struct DevnetProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl DevnetProcess {
    fn start(dir: &Path, chain: &str) -> DevnetProcess {
        let mut child = Command::new(BIN)
            .args(["devnet", "--nodes", "3", "--chain", chain, "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        DevnetProcess {
            child,
            lines,
            dir: dir.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// `DIR/devnet.json` once this run (its pid) has written it, every node started.
    async fn state(&self) -> Value {
        let path = self.dir.join("devnet.json");
        let pid = self.child.id();
        eventually(UP, "devnet.json of this run", || {
            let text = std::fs::read_to_string(&path).ok();
            async move {
                let state: Value = serde_json::from_str(&text?).ok()?;
                (state["pid"] == pid).then_some(state)
            }
        })
        .await
    }

    /// SIGINT, then waits for a clean exit.
    async fn interrupt(&mut self) {
        // SAFETY: a signal to our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) },
            0
        );
        let child = &mut self.child;
        let status = eventually(STOP, "devnet exits after SIGINT", || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await;
        assert!(
            status.success(),
            "devnet exited with {status}:\n{}",
            self.output()
        );
    }
}

impl Drop for DevnetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each node's API, by name.
fn apis(dir: &Path, state: &Value) -> BTreeMap<String, Api> {
    state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap().to_string();
            let base = format!("http://127.0.0.1:{}", n["admin_port"]);
            let api = Api::at(&base, &dir.join(&name));
            (name, api)
        })
        .collect()
}

/// Waits until every node reports both other nodes connected (each with a channel if
/// `channels`, without one otherwise); returns each link's channel id.
async fn all_connected(
    apis: &BTreeMap<String, Api>,
    state: &Value,
    channels: bool,
) -> BTreeMap<(String, String), Option<String>> {
    let names: BTreeMap<String, String> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let key = n["pubkey"].as_str().unwrap().to_string();
            (key, n["name"].as_str().unwrap().to_string())
        })
        .collect();
    let mut links = BTreeMap::new();
    for (name, api) in apis {
        let peers = eventually(UP, &format!("{name}: 2 peers connected"), || async {
            let (status, body) = api.get("/v1/peers").await;
            let peers = body["peers"].as_array()?.clone();
            let ready = status == 200
                && peers.len() == 2
                && peers.iter().all(|p| {
                    p["state"] == "connected" && (p["channel_id"].is_string() == channels)
                });
            ready.then_some(peers)
        })
        .await;
        for p in peers {
            let peer = names[p["nostr_pubkey"].as_str().unwrap()].clone();
            assert_ne!(&peer, name);
            links.insert(
                (name.clone(), peer),
                p["channel_id"].as_str().map(String::from),
            );
        }
    }
    assert_eq!(links.len(), 6);
    links
}

/// The notes seeded on each node's operator relay reach the other two: every relay ends
/// up holding the three nodes' notes.
async fn notes_spread(state: &Value) {
    let nodes = state["nodes"].as_array().unwrap();
    let authors: Vec<String> = nodes
        .iter()
        .map(|n| n["pubkey"].as_str().unwrap().to_string())
        .collect();
    for n in nodes {
        let url = format!("ws://127.0.0.1:{}", n["relay_port"]);
        let relay = RelaySet::connect(
            Keys::generate(),
            std::slice::from_ref(&url),
            support::relays::tuning(),
        )
        .await
        .unwrap();
        relay.wait_connected(Duration::from_secs(5)).await;
        eventually(UP, &format!("every node's notes on {url}"), || async {
            let answers = relay.query(Filter::new().kind(Kind::TextNote)).await;
            let events = &answers.first()?.events;
            let complete = authors.iter().all(|a| {
                events.iter().filter(|e| &e.pubkey.to_hex() == a).count()
                    >= btp_nips_node::devnet::nodes::SEEDED_NOTES
            });
            complete.then_some(())
        })
        .await;
        relay.shutdown().await;
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn devnet_on_anvil_connects_every_node_over_channels_and_resumes_without_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = DevnetProcess::start(dir.path(), "anvil");
    let state = first.state().await;
    let anvil_pid = state["chain"]["anvil_pid"].as_u64().expect("an anvil pid") as u32;
    assert!(process_alive(anvil_pid), "anvil runs while the devnet does");
    let apis = apis(dir.path(), &state);
    let channels = all_connected(&apis, &state, true).await;
    notes_spread(&state).await;
    // The node keys are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("alice/node.nsec"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    first.interrupt().await;
    assert!(
        !process_alive(anvil_pid),
        "anvil (pid {anvil_pid}) is still running after the devnet stopped"
    );
    assert!(first.output().contains("all 6 links connected"));

    // Resumed: same keys, same channels, no channel opened.
    let mut second = DevnetProcess::start(dir.path(), "anvil");
    let resumed = second.state().await;
    for (a, b) in state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(resumed["nodes"].as_array().unwrap())
    {
        assert_eq!(a["pubkey"], b["pubkey"], "same key for {}", a["name"]);
    }
    let again = all_connected(&apis, &resumed, true).await;
    assert_eq!(
        again, channels,
        "every link over the channel of the first run"
    );
    let output = second.output();
    assert!(output.contains("resumed"), "{output}");
    assert!(
        !output.contains("-> channel_opening"),
        "a channel was opened:\n{output}"
    );
    assert!(
        !output.contains("deploying"),
        "the contract was deployed again:\n{output}"
    );
    let second_anvil = resumed["chain"]["anvil_pid"].as_u64().unwrap() as u32;
    second.interrupt().await;
    assert!(!process_alive(second_anvil));
}

#[tokio::test(flavor = "multi_thread")]
async fn devnet_without_a_chain_connects_every_node_without_channels() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = DevnetProcess::start(dir.path(), "off");
    let state = devnet.state().await;
    assert!(state["chain"].is_null(), "no chain: {state}");
    let apis = apis(dir.path(), &state);
    let links = all_connected(&apis, &state, false).await;
    assert!(links.values().all(Option::is_none));
    notes_spread(&state).await;
    devnet.interrupt().await;
    assert!(devnet.output().contains("chain: off (--chain off)"));
}
