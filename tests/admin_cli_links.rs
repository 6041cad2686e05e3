//! The operator's commands against two running binaries that find each other through a
//! real relay (node A follows node B): `disconnect --pause` stops the connected peer and
//! it comes back by itself when the pause ends; on a local chain (anvil), `approve-channel`
//! takes the peer from channel_needed through channel_opening to connected while `watch`
//! shows the open's confirmations, and `/metrics` shows the wei the channel locks.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use btp_nips_node::discovery::announcement::announcement_kind;
use btp_nips_node::discovery::relays::RelaySet;
use nostr_relay_builder::prelude::{EventBuilder, Filter, Keys, Kind, Tag};
use serde_json::Value;
use support::admin::parse_metrics;
use support::binary::*;
use support::chain::ChainFixture;
use support::relays::{tuning, Impl, TestRelay};

/// Finding each other through the relay, dialling and the channel's few blocks.
const LINK: Duration = Duration::from_secs(60);

/// Short waits everywhere, so a lost link is redialled at once.
const PEER_CONNECTIONS: &str =
    "btp_nips:\n  peer_connections:\n    heartbeat_interval_seconds: 2\n    \
     heartbeat_timeout_seconds: 1\n    reconnect_initial_delay_ms: 20\n    \
     reconnect_max_delay_ms: 200\n    discovery_retry_seconds: 1\n    \
     channel_poll_interval_seconds: 1\n";

/// Node A, with its admin API, following node B through a relay.
struct Link {
    _relay: TestRelay,
    client: RelaySet,
    dir: tempfile::TempDir,
    a: NodeProcess,
    a_config: NodeConfig,
    b: NodeProcess,
    /// B's pubkey, as A knows the peer.
    b_pubkey: String,
}

impl Link {
    /// A (with `a_sections` besides the short waits) follows B (chain off, announcing a
    /// fresh settlement address).
    async fn start(a_sections: &[String]) -> Link {
        let relay = TestRelay::start(Impl::Builder).await;
        let client = RelaySet::connect(Keys::generate(), &[relay.url()], tuning())
            .await
            .unwrap();
        client.wait_connected(Duration::from_secs(5)).await;
        let (key_a, key_b) = (Keys::generate(), Keys::generate());
        let (op_a, op_b) = (Keys::generate(), Keys::generate());
        let list = EventBuilder::new(Kind::ContactList, "")
            .tags([Tag::public_key(key_b.public_key())])
            .sign_with_keys(&op_a)
            .unwrap();
        assert_eq!(client.publish(&list).await.0.len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let payee = PrivateKeySigner::random().address().to_string();
        let b_config = NodeConfig::new(dir.path(), "beta")
            .btp_listener()
            .discovery(&relay.url(), &op_b, &payee)
            .section(PEER_CONNECTIONS)
            .write();
        let mut a_config = NodeConfig::new(dir.path(), "alpha")
            .admin_api()
            .discovery(&relay.url(), &op_a, &payee)
            .section(PEER_CONNECTIONS);
        for section in a_sections {
            a_config = a_config.section(section);
        }
        let a_config = a_config.write();
        let mut b = NodeProcess::start(&b_config, Some(&key_b), Some("info"));
        // A looks B up as soon as it starts: B's announcement is there first.
        let announced = Filter::new()
            .kind(announcement_kind())
            .author(key_b.public_key());
        let deadline = std::time::Instant::now() + LINK;
        while client
            .query(announced.clone())
            .await
            .iter()
            .all(|answer| answer.events.is_empty())
        {
            b.drain();
            assert!(
                std::time::Instant::now() < deadline,
                "B never announced itself: {:#?}",
                b.log
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = NodeProcess::start(&a_config, Some(&key_a), Some("info"));
        Link {
            _relay: relay,
            client,
            dir,
            a,
            a_config,
            b,
            b_pubkey: key_b.public_key().to_hex(),
        }
    }

    /// B's state as A's admin API shows it, once `done` holds.
    async fn peer_once(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        let peer = wait_peer(&self.a_config.path, &self.b_pubkey, LINK, &done).await;
        self.a.drain();
        self.b.drain();
        peer
    }

    /// B's transitions as A recorded them, oldest first.
    async fn history(&self) -> Vec<Value> {
        let out = cli_async(
            &self.a_config.path,
            &["peer", &self.b_pubkey, "--history", "--json"],
        )
        .await;
        assert!(out.status.success(), "{}", both(&out));
        let history: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut transitions = history["transitions"].as_array().unwrap().clone();
        transitions.reverse();
        transitions
    }

    async fn stop(mut self) {
        self.a.stop().await;
        self.b.stop().await;
        self.client.shutdown().await;
    }
}

/// `(from, to)` of each transition.
fn steps(transitions: &[Value]) -> Vec<(String, String)> {
    transitions
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap_or("new").to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn disconnect_with_a_pause_stops_a_connected_peer_and_it_comes_back_by_itself() {
    let mut link = Link::start(&[]).await;
    link.peer_once(|p| p["state"] == "connected").await;

    let config = link.a_config.path.clone();
    let prefix = link.b_pubkey[..12].to_string();
    let out = cli_async(
        &config,
        &[
            "disconnect",
            &prefix,
            "--pause",
            "2s",
            "--reason",
            "maintenance window",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).starts_with("disconnect of "), "{}", both(&out));

    // Nobody retries it: once the pause is over the node brings it back on its own.
    let back = link
        .peer_once(|p| {
            p["state"] == "connected"
                && p["stopped_by_operator"] == false
                && p["reconnect_attempts"] == 0
                && p["last_heartbeat"].is_u64()
        })
        .await;
    assert_eq!(back["followed"], true);
    let transitions = link.history().await;
    let stopped = transitions
        .iter()
        .position(|t| t["reason"] == "maintenance window")
        .unwrap_or_else(|| panic!("the operator's stop is in the history: {transitions:#?}"));
    let after: Vec<(String, String)> = steps(&transitions[stopped..]);
    assert_eq!(
        after.first().map(|(f, t)| (f.as_str(), t.as_str())),
        Some(("connected", "disconnected")),
        "{transitions:#?}"
    );
    assert_eq!(
        after.last().map(|(_, t)| t.as_str()),
        Some("connected"),
        "{transitions:#?}"
    );
    // It stayed down for the whole pause, by the node's own clock.
    let resumed = &transitions[stopped + 1];
    assert_eq!(resumed["from"], "disconnected", "{transitions:#?}");
    let paused_ms = resumed["at"].as_u64().unwrap() - transitions[stopped]["at"].as_u64().unwrap();
    assert!(
        (2_000..10_000).contains(&paused_ms),
        "paused {paused_ms} ms: {transitions:#?}"
    );
    link.a.drain();
    assert!(
        !link.a.has("-> failed"),
        "nothing failed on the way: {:#?}",
        link.a.log
    );
    link.stop().await;
}

#[actix_rt::test]
async fn approve_channel_on_anvil_opens_the_channel_and_the_peer_connects() {
    const DEPOSIT: u128 = 3_000_000_000_000_000;
    let chain = ChainFixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("evm.key");
    chain.write_key_file(&key_file);
    let mut link = Link::start(&[chain.chain_section(&key_file, 2, DEPOSIT)]).await;
    let config = link.a_config.path.clone();

    let waiting = link.peer_once(|p| p["state"] == "channel_needed").await;
    assert_eq!(
        waiting["failure_reason"], "waiting for the operator to open a channel",
        "{waiting}"
    );
    let metrics = scrape(&link.a_config).await;
    assert_eq!(locked_wei(&metrics), 0.0, "nothing locked yet");

    // A watcher sees what the approval leads to.
    let mut watch = Running(
        Command::new(BIN)
            .args(["watch", "--json", "--config", config.to_str().unwrap()])
            .current_dir(link.dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, watched) = std::sync::mpsc::channel::<Value>();
    let stdout_of_watch = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout_of_watch).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });

    // It only gets what happens once it is subscribed.
    let deadline = std::time::Instant::now() + LINK;
    while gauge(
        &scrape(&link.a_config).await,
        "btp_nips_admin_event_clients",
    ) != 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = cli_async(&config, &["approve-channel", &link.b_pubkey[..12]]).await;
    assert!(out.status.success(), "{}", both(&out));
    // Blocks come only when mined: one every 200 ms until the peer is connected.
    let mining = async {
        loop {
            chain.anvil.mine(1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let connected = tokio::select! {
        peer = link.peer_once(|p| p["state"] == "connected") => peer,
        never = mining => never,
    };
    let channel_id = connected["channel_id"].as_str().unwrap().to_string();
    let tx_hash = connected["channel_tx_hash"].as_str().map(str::to_string);

    let transitions = link.history().await;
    let path: Vec<(String, String)> = steps(&transitions);
    let needed = path
        .iter()
        .position(|(_, to)| to == "channel_needed")
        .unwrap_or_else(|| panic!("{path:?}"));
    assert_eq!(
        path[needed..]
            .iter()
            .map(|(f, t)| format!("{f} -> {t}"))
            .collect::<Vec<_>>(),
        [
            "connecting -> channel_needed",
            "channel_needed -> channel_opening",
            "channel_opening -> connected"
        ],
        "{path:?}"
    );

    // The watcher: the state changes and the open's confirmations, one line each, in
    // order, ending with the channel's id.
    let mut seen: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + LINK;
    while !seen
        .iter()
        .any(|e| e["event"] == "peer_state" && e["data"]["to"] == "connected")
    {
        assert!(std::time::Instant::now() < deadline, "{seen:#?}");
        match watched.try_recv() {
            Ok(event) => seen.push(event),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    drop(watch);
    let channel: Vec<&Value> = seen
        .iter()
        .filter(|e| e["event"] == "channel")
        .map(|e| &e["data"])
        .collect();
    assert!(
        channel.iter().all(|c| c["pubkey"] == link.b_pubkey.as_str()
            && c["required"] == 2
            && c["tx_hash"].is_string()),
        "{channel:#?}"
    );
    let counts: Vec<u64> = channel
        .iter()
        .map(|c| c["confirmations"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]) && counts.last() == Some(&2),
        "confirmations only go up, to 2 of 2: {counts:?}"
    );
    assert_eq!(
        channel.last().unwrap()["channel_id"].as_str(),
        Some(channel_id.as_str()),
        "the last channel event names the open channel"
    );
    assert!(channel[..channel.len() - 1]
        .iter()
        .all(|c| c["channel_id"].is_null()));
    if let Some(tx) = tx_hash {
        assert!(channel.iter().all(|c| c["tx_hash"] == tx.as_str()));
    }
    let position = |pred: &dyn Fn(&Value) -> bool| {
        seen.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{seen:#?}"))
    };
    let opening = position(&|e| e["event"] == "peer_state" && e["data"]["to"] == "channel_opening");
    let first_channel = position(&|e| e["event"] == "channel");
    let open = position(&|e| e["event"] == "peer_state" && e["data"]["to"] == "connected");
    assert!(
        opening < first_channel && first_channel < open,
        "in the order it happened: {seen:#?}"
    );

    // The deposit is locked, as the node and the contract both say.
    assert_eq!(chain.locked_wei().await, U256::from(DEPOSIT));
    let metrics = scrape(&link.a_config).await;
    assert_eq!(locked_wei(&metrics), DEPOSIT as f64);
    link.stop().await;
}

/// `/metrics` of the node `config` describes, parsed.
async fn scrape(config: &NodeConfig) -> Vec<support::admin::Sample> {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", config.admin_url()))
        .bearer_auth(config.read_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    parse_metrics(&response.text().await.unwrap())
}

fn gauge(samples: &[support::admin::Sample], name: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("{name} is exported"))
}

fn locked_wei(samples: &[support::admin::Sample]) -> f64 {
    gauge(samples, "btp_nips_chain_locked_wei")
}
