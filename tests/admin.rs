//! The admin API against a running node: one test per endpoint, every refusal, the event
//! stream resumed with Last-Event-ID, and the metrics (parsed, adding up, per node).

mod support;

use std::time::Duration;

use btp_nips_node::admin::client::{AdminClient, StreamEvent};
use btp_nips_node::lifecycle::{PeerIntent, PeerState};
use btp_nips_node::ports::memory::MemoryWorld;
use nostr::nips::nip19::ToBech32;
use serde_json::{json, Value};
use support::admin::*;
use support::node::*;

const LIMIT: Duration = Duration::from_secs(10);

fn npub_of(hex: &str) -> String {
    nostr::PublicKey::from_hex(hex)
        .unwrap()
        .to_bech32()
        .unwrap()
}

#[actix_rt::test]
async fn healthz_answers_and_readyz_waits_for_startup_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let stored_peers = ready_stored_peers(&world, 3);
    // One stored peer per hour comes back: two stay queued.
    let yaml = ONE_DIAL_PER_HOUR;
    let (node, api) = admin_node(&world, &dir, yaml, "", &stored_peers).await;

    assert_eq!(api.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = api.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("startup recovery: 2 stored peers"),
        "{reasons}"
    );

    // The operator's retries take the queued peers first: recovery is done.
    for i in 2..=3 {
        let (status, body) = api
            .post(&format!("/v1/peers/{}/retry", pubkey(i)), json!({}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = api.get("/readyz").await;
    assert_eq!((status, body), (200, json!({"ready": true})));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn info_names_the_node_and_counts_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    let stored_peers = [
        stored(1, PeerState::Disconnected, true, None),
        stored(2, PeerState::Failed, true, None),
    ];
    let (node, api) = admin_node(&world, &dir, "node: {id: \"alpha\"}", "", &stored_peers).await;
    wait_record(&node, &pubkey(1), LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;

    let (status, info) = api.get("/v1/info").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["node_id"], "alpha");
    assert_eq!(info["ilp_address"], node.own_address().to_string());
    assert_eq!(info["pubkey"], node.public_key().to_hex());
    assert!(info["npub"].as_str().unwrap().starts_with("npub1"));
    assert!(info["uptime_seconds"].is_u64());
    assert_eq!(info["admin_listen"], node.admin_addr().unwrap().to_string());
    let by_state = info["peers"]["by_state"].as_object().unwrap();
    assert_eq!(
        by_state.len(),
        7,
        "every state, zeros included: {by_state:?}"
    );
    assert_eq!(by_state["connected"], 1);
    assert_eq!(by_state["failed"], 1);
    assert_eq!(by_state["channel_opening"], 0);
    assert_eq!(info["peers"]["total"], 2);
    assert_eq!(info["supervisor"]["connected"], 1);
    assert_eq!(info["supervisor"]["recovering"], 0);
    assert!(info["persistence"]["changes_received"].as_u64().unwrap() > 0);
    // Nothing configured: no operator, nothing announced, no chain, no relay.
    assert_eq!(info["operator"], Value::Null, "{info}");
    assert_eq!(info["public_endpoint"], Value::Null, "{info}");
    assert_eq!(info["chain"], Value::Null, "{info}");
    assert_eq!(info["relays"], json!([]), "{info}");
    node.shutdown().await.unwrap();
}

/// A node whose peers are the world's (resolver and sessions) on `db`, its admin API on a
/// free port: the test adds the real adapters or the world's for the rest.
fn world_peers_node(
    world: &MemoryWorld,
    yaml: &str,
    db: btp_nips_node::storage::Database,
) -> btp_nips_node::node::NodeBuilder {
    btp_nips_node::node::NodeBuilder::new(settings(yaml))
        .ephemeral()
        .resolver(std::sync::Arc::new(world.clone()))
        .sessions(std::sync::Arc::new(world.clone()))
        .database(db)
        .without_listener()
        .admin_listen("127.0.0.1:0")
}

#[actix_rt::test]
async fn info_tells_the_operator_the_announced_endpoint_each_relay_and_the_channel_policy() {
    use btp_nips_node::ports::ChannelPolicyStatus;
    use support::relays::{Impl, TestRelay};
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.set_channel_policy(Some(ChannelPolicyStatus {
        deposit_wei: 5_000,
        auto_open: true,
        per_channel_cap_wei: Some(6_000),
        total_cap_wei: Some(u128::MAX),
        total_cap_used_wei: Some(5_000),
        total_cap_left_wei: Some(u128::MAX - 5_000),
        unknown_reason: None,
    }));
    let discovery = TestRelay::start(Impl::Builder).await;
    let operator_relay = TestRelay::start(Impl::Builder).await;
    // A relay nobody runs: configured, never connected.
    let down = format!("ws://127.0.0.1:{}", support::free_port());
    let operator = nostr::Keys::generate().public_key();
    let yaml = format!(
        "node: {{public_endpoint: \"ws://127.0.0.1:7700/btp\"}}\n\
         session: {{allow_ws_loopback: true}}\n\
         nostr: {{relays: [\"{}\", \"{down}\"], allow_ws_loopback: true, \
         operator_pubkey: \"{}\", retry_interval_ms: 200, \
         announce: {{base_address: \"0x{:0>40}\"}}}}\n\
         events: {{operator_relay: \"{}\"}}\n{}",
        discovery.url(),
        operator.to_bech32().unwrap(),
        "ab",
        operator_relay.url(),
        admin_yaml(&dir, "")
    );
    // The real discovery and event flow (their relays are the point), the world's peers
    // and channel port.
    let db =
        btp_nips_node::storage::Database::open(dir.path().join("node.db").to_str().unwrap(), 2)
            .unwrap();
    let node = world_peers_node(&world, &yaml, db)
        .channels(std::sync::Arc::new(world.clone()))
        .start()
        .await
        .unwrap();
    let api = Api::of(&node, &dir);

    let info = support::wait::eventually(LIMIT, "both live relays connected", || async {
        let (status, info) = api.get("/v1/info").await;
        assert_eq!(status, 200, "{info}");
        let relays = info["relays"].as_array().cloned().unwrap_or_default();
        relays
            .iter()
            .filter(|r| r["connected"] == true)
            .count()
            .eq(&2)
            .then_some(info)
    })
    .await;
    assert_eq!(
        info["relays"],
        json!([
            {"url": discovery.url(), "role": "discovery", "connected": true},
            {"url": down, "role": "discovery", "connected": false},
            {"url": operator_relay.url(), "role": "operator", "connected": true},
        ]),
        "{info}"
    );
    // The metric reads the same connections, the discovery relays only.
    let up: Vec<(String, f64)> = parse_metrics(&api.metrics().await)
        .into_iter()
        .filter(|s| s.name == "btp_nips_discovery_relay_up")
        .map(|s| (s.label("relay").unwrap().to_string(), s.value))
        .collect();
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.contains(&(discovery.url(), 1.0)), "{up:?}");
    assert!(up.contains(&(down.clone(), 0.0)), "{up:?}");
    assert_eq!(
        info["operator"],
        json!({"pubkey": operator.to_hex(), "npub": operator.to_bech32().unwrap()})
    );
    assert_eq!(info["public_endpoint"], "ws://127.0.0.1:7700/btp");
    // A channel port that is not an EVM chain: its policy, no chain identity.
    let chain = &info["chain"];
    assert_eq!(chain["chain_id"], Value::Null, "{info}");
    assert_eq!(chain["payer"], Value::Null, "{info}");
    assert_eq!(
        chain["channel_policy"],
        json!({
            "deposit_wei": "5000",
            "auto_open": true,
            "per_channel_cap_wei": "6000",
            "total_cap_wei": u128::MAX.to_string(),
            "total_cap_used_wei": "5000",
            "total_cap_left_wei": (u128::MAX - 5_000).to_string(),
            "unknown_reason": null,
        })
    );
    node.shutdown().await.unwrap();
}

/// A node on a real chain (anvil behind a proxy the test can take down), auto-open on, and
/// a channel the payer already has open to a stored peer.
#[actix_rt::test]
async fn the_chain_its_policy_and_a_peers_channel_are_read_from_the_contract() {
    use alloy::primitives::U256;
    use alloy::sol_types::SolEvent;
    use btp_nips_node::chain::contract::PaymentChannels;
    use support::chain::{ChainFixture, RpcProxy, CHAIN_ID};
    const DEPOSIT: u128 = 7_000;
    const OPENED: u128 = 3_000;
    const TOTAL_CAP: u128 = 10_000;
    let chain = ChainFixture::new().await;
    let proxy = RpcProxy::start(&chain.anvil.url).await;
    let payee = alloy::signers::local::PrivateKeySigner::random().address();
    let (_, now) = chain.anvil.head().await;
    let expiry = now + 30 * 24 * 3600;
    let receipt = chain
        .anvil
        .transact(
            &chain.key,
            chain.contract,
            U256::from(OPENED),
            PaymentChannels::openCall { payee, expiry },
        )
        .await;
    let opened = receipt
        .logs()
        .iter()
        .find_map(|log| PaymentChannels::ChannelOpened::decode_log(&log.inner).ok())
        .expect("the open emits ChannelOpened");
    let channel_id = format!("{:#x}", opened.channelId);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("evm.key");
    chain.write_key_file(&key_file);
    let section = chain
        .chain_section(&key_file, 1, DEPOSIT)
        .replace(&chain.anvil.url, &proxy.url);
    let yaml = format!(
        "{section}  auto_open: {{enabled: true, per_channel_cap_wei: \"{DEPOSIT}\", \
         total_cap_wei: \"{TOTAL_CAP}\"}}\n"
    );
    // Failed peers stay as stored: one with the channel, one without.
    let mut with_channel = stored(1, PeerState::Failed, true, None);
    with_channel.channel_id = Some(channel_id.clone());
    let without = stored(2, PeerState::Failed, true, None);
    let world = MemoryWorld::new();
    let path = dir.path().join("node.db");
    let db = btp_nips_node::storage::Database::open(path.to_str().unwrap(), 2).unwrap();
    db.upsert_batch(&[with_channel, without]).unwrap();
    let node = world_peers_node(&world, &format!("{yaml}{}", admin_yaml(&dir, "")), db)
        .subscriptions(std::sync::Arc::new(world.clone()))
        .start()
        .await
        .unwrap();
    let api = Api::of(&node, &dir);

    let (status, info) = api.get("/v1/info").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["chain"],
        json!({
            "chain_id": CHAIN_ID,
            "name": "anvil (local)",
            "contract": chain.contract.to_string(),
            "payer": chain.key.address().to_string(),
            "channel_policy": {
                "deposit_wei": DEPOSIT.to_string(),
                "auto_open": true,
                "per_channel_cap_wei": DEPOSIT.to_string(),
                "total_cap_wei": TOTAL_CAP.to_string(),
                // The channel already open counts against the cap, as the check counts it.
                "total_cap_used_wei": OPENED.to_string(),
                "total_cap_left_wei": (TOTAL_CAP - OPENED).to_string(),
                "unknown_reason": null,
            },
        })
    );
    let (status, peer) = api.get(&format!("/v1/peers/{}", pubkey(1))).await;
    assert_eq!(status, 200, "{peer}");
    assert_eq!(
        peer["channel"],
        json!({
            "id": channel_id,
            "payer": chain.key.address().to_string(),
            "payee": payee.to_string(),
            "deposit_wei": OPENED.to_string(),
            "claimed_wei": "0",
            "expiry": expiry,
            "closed": false,
        })
    );
    let (status, peer) = api.get(&format!("/v1/peers/{}", pubkey(2))).await;
    assert_eq!((status, &peer["channel"]), (200, &Value::Null), "{peer}");

    // The RPC endpoint goes away: the answers stand, the chain's figures say why they
    // are missing.
    proxy.stop();
    let (status, peer) = api.get(&format!("/v1/peers/{}", pubkey(1))).await;
    assert_eq!(status, 200, "{peer}");
    assert_eq!(peer["state"], "failed");
    assert_eq!(peer["channel"]["id"], channel_id.as_str());
    let error = peer["channel"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{peer}"));
    assert!(
        error.starts_with(&format!("reading channel {channel_id}: ")),
        "{error}"
    );
    let (status, info) = api.get("/v1/info").await;
    assert_eq!(status, 200, "{info}");
    let policy = &info["chain"]["channel_policy"];
    assert_eq!(policy["total_cap_left_wei"], Value::Null, "{info}");
    assert_eq!(policy["deposit_wei"], DEPOSIT.to_string());
    assert!(
        policy["unknown_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("the locked wei could not be read: ")),
        "{info}"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn peers_are_listed_offline_included_paged_by_pubkey_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=3 {
        world.add_ready_peer(&pubkey(i));
    }
    let mut stored_peers: Vec<_> = (1..=3)
        .map(|i| stored(i, PeerState::Disconnected, true, None))
        .collect();
    let mut failed = stored(4, PeerState::Failed, false, None);
    failed.failure_reason = Some("no valid announcement".into());
    stored_peers.push(failed);
    // Waiting out its backoff: the next attempt is an hour away.
    let mut waiting = stored(5, PeerState::Disconnected, true, None);
    waiting.reconnect_attempts = 3;
    waiting.next_attempt_at =
        Some(btp_nips_node::lifecycle::Timestamp::now_system() + Duration::from_secs(3600));
    stored_peers.push(waiting);
    world.refuse_sessions(
        &pubkey(5),
        Some(btp_nips_node::lifecycle::Fault::Transient("down".into())),
    );
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    wait_until(&node, LIMIT, "three connected", |p| {
        count_in(p, PeerState::Connected) == 3
    })
    .await;

    let (status, page) = api.get("/v1/peers?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let keys = |page: &Value| -> Vec<String> {
        page["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nostr_pubkey"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys(&page), [pubkey(1), pubkey(2)]);
    assert_eq!(page["next_after"], pubkey(2));
    let (_, page2) = api
        .get(&format!("/v1/peers?limit=2&after={}", pubkey(2)))
        .await;
    assert_eq!(keys(&page2), [pubkey(3), pubkey(4)]);
    let (_, page3) = api
        .get(&format!("/v1/peers?limit=2&after={}", pubkey(4)))
        .await;
    assert_eq!(keys(&page3), [pubkey(5)]);
    assert_eq!(page3["next_after"], Value::Null, "the last page");

    let (_, failed) = api.get("/v1/peers?state=failed").await;
    assert_eq!(keys(&failed), [pubkey(4)], "offline peers are listed");
    let p = &failed["peers"][0];
    assert_eq!(p["failure_reason"], "no valid announcement");
    assert_eq!(p["npub"], npub_of(&pubkey(4)));
    assert_eq!(p["stopped_by_operator"], false);
    let (_, followed) = api.get("/v1/peers?followed=false").await;
    assert_eq!(keys(&followed), [pubkey(4)]);

    let (_, record) = api.get(&format!("/v1/peers/{}", pubkey(5))).await;
    let seconds = record["next_attempt_in_seconds"].as_u64();
    assert!(
        seconds.is_some_and(|s| s > 60),
        "seconds until the next attempt: {record}"
    );

    for (query, says) in [
        ("state=active", "state `active` is unknown"),
        ("followed=yes", "followed `yes` must be true or false"),
        ("limit=0", "limit `0` must be"),
        ("limit=1001", "limit `1001` must be"),
    ] {
        let (status, body) = api.get(&format!("/v1/peers?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_is_found_by_pubkey_npub_or_unique_prefix_and_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // Pubkeys ...01, ...02 and ...10: the 63-character prefix of the last is its own.
    let stored_peers: Vec<_> = [1, 2, 16]
        .into_iter()
        .map(|i| stored(i, PeerState::Failed, true, None))
        .collect();
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    let target = pubkey(16);
    for id in [
        target.clone(),
        target.to_uppercase(),
        npub_of(&target),
        target[..63].to_string(),
    ] {
        let (status, peer) = api.get(&format!("/v1/peers/{id}")).await;
        assert_eq!(status, 200, "{id}: {peer}");
        assert_eq!(peer["nostr_pubkey"], target);
        assert_eq!(peer["state"], "failed");
    }

    let (status, body) = api.get(&format!("/v1/peers/{}", pubkey(9))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no known peer"));
    let (status, body) = api.get(&format!("/v1/peers/{}", &target[..20])).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ambiguous: 3 peers"),
        "{body}"
    );
    let (status, body) = api.get("/v1/peers/not-a-key").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("is not a peer id"));
    let (status, _) = api.get("/v1/nothing").await;
    assert_eq!(status, 404);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn every_request_needs_a_token_and_the_read_only_token_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let stored_peers = [stored(1, PeerState::Failed, true, None)];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    let retry = format!("/v1/peers/{}/retry", pubkey(1));

    for path in [
        "/healthz",
        "/v1/info",
        "/v1/peers",
        "/metrics",
        "/v1/events",
    ] {
        let (status, body) = api.call("GET", path, None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("missing Authorization header"),
            "{body}"
        );
        let (status, body) = api.call("GET", path, Some("guess"), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("wrong token"));
    }
    let response = reqwest::Client::new()
        .get(format!("{}/v1/info", api.base))
        .header("Authorization", format!("Basic {}", api.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("not a bearer token"));

    let (status, body) = api
        .call(
            "POST",
            &retry,
            Some(&api.read_token.clone()),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("read-only token"));
    let (status, body) = api.call("POST", &retry, None, Some(json!({}))).await;
    assert_eq!(status, 401, "{body}");
    // Nothing changed.
    assert_eq!(
        node.peer(&pubkey(1)).await.unwrap().unwrap().state,
        PeerState::Failed
    );
    // The admin token reads too.
    let (status, _) = api
        .call("GET", "/v1/info", Some(&api.admin_token.clone()), None)
        .await;
    assert_eq!(status, 200);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn retry_brings_a_failed_peer_back_and_is_refused_for_a_connected_one() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    let stored_peers = [stored(1, PeerState::Failed, true, None)];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;

    let (status, body) = api
        .post(&format!("/v1/peers/{}/retry", &pubkey(1)[..63]), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["action"], "retry");
    assert_eq!(body["pubkey"], pubkey(1));
    wait_record(&node, &pubkey(1), LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;

    let (status, body) = api
        .post(&format!("/v1/peers/{}/retry", pubkey(1)), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("is connected") && error.contains("only a failed or disconnected"),
        "{error}"
    );
    let (status, _) = api
        .post(&format!("/v1/peers/{}/retry", pubkey(9)), json!({}))
        .await;
    assert_eq!(status, 404);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn disconnect_stops_a_peer_with_the_operators_reason() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    let stored_peers = [stored(1, PeerState::Disconnected, true, None)];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    wait_record(&node, &pubkey(1), LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;

    let path = format!("/v1/peers/{}/disconnect", npub_of(&pubkey(1)));
    let (status, body) = api.post(&path, json!({"reason": "maintenance"})).await;
    assert_eq!(status, 202, "{body}");
    let record = wait_record(&node, &pubkey(1), LIMIT, "stopped", |r| {
        r.state == PeerState::Disconnected && r.desired == PeerIntent::Disconnect
    })
    .await;
    assert_eq!(record.failure_reason.as_deref(), Some("maintenance"));
    let (_, peer) = api.get(&format!("/v1/peers/{}", pubkey(1))).await;
    assert_eq!(peer["stopped_by_operator"], true);

    let (status, body) = api.post(&path, json!({"why": "typo"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.post(&path, json!({"reason": "x".repeat(201)})).await;
    assert_eq!(status, 400, "{body}");
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn approve_channel_opens_for_a_peer_in_channel_needed_and_is_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let needs = pubkey(1);
    world.announce(&needs, MemoryWorld::announcement_for(&needs));
    world.add_ready_peer(&pubkey(2));
    let stored_peers = [
        stored(1, PeerState::Disconnected, true, None),
        stored(2, PeerState::Disconnected, true, None),
        stored(3, PeerState::Failed, true, None),
    ];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    wait_until(&node, LIMIT, "one waiting, one connected", |p| {
        state_of(p, &needs) == Some(PeerState::ChannelNeeded)
            && state_of(p, &pubkey(2)) == Some(PeerState::Connected)
    })
    .await;

    for (i, state) in [(2, "connected"), (3, "failed")] {
        let (status, body) = api
            .post(
                &format!("/v1/peers/{}/approve-channel", pubkey(i)),
                json!({}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("is {state}")) && error.contains("channel_needed"),
            "{error}"
        );
    }

    let (status, body) = api
        .post(&format!("/v1/peers/{needs}/approve-channel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    wait_record(
        &node,
        &needs,
        LIMIT,
        "connected over the new channel",
        |r| r.state == PeerState::Connected,
    )
    .await;
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn connect_follows_a_new_peer_and_refuses_what_is_not_a_pubkey() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(7));
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;

    let (status, body) = api
        .post("/v1/peers", json!({"pubkey": npub_of(&pubkey(7))}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pubkey"], pubkey(7));
    let record = wait_record(&node, &pubkey(7), LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;
    assert!(record.followed);

    for body in [
        json!({"pubkey": "abc"}),
        json!({"pubkey": "zz".repeat(32)}),
        json!({"key": pubkey(8)}),
        json!({"pubkey": node.public_key().to_hex()}),
    ] {
        let (status, answer) = api.post("/v1/peers", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    assert_eq!(node.peers().await.unwrap().len(), 1, "nothing else added");
    node.shutdown().await.unwrap();
}

/// Reads `path`'s events from after `last` until `n` peer_state events (or `missed` ones)
/// have come.
async fn read_events(api: &Api, path: &str, last: Option<u64>, n: usize) -> Vec<StreamEvent> {
    let client = AdminClient::new(&api.base, &api.read_token);
    let mut events = Vec::new();
    let read = client.stream(path, last, |event| {
        events.push(event);
        events.len() < n
    });
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the events come")
        .unwrap();
    events
}

#[actix_rt::test]
async fn the_event_stream_resumes_from_last_event_id_without_missing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=4 {
        world.add_ready_peer(&pubkey(i));
    }
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;

    // The first peer followed, then each of its changes: new → discovering → connecting
    // → connected.
    let first = tokio::spawn({
        let api = api.clone();
        async move { read_events(&api, "/v1/events", None, 4).await }
    });
    // Subscribed (it only gets what happens from then on) before anything changes.
    let subscribed = wait_for(LIMIT, || async {
        node.admin_parts().stats.snapshot().event_clients == 1
    })
    .await;
    assert!(subscribed);
    node.follow(&pubkey(1)).await.unwrap();
    let seen = first.await.unwrap();
    assert_eq!(seen[0].event, "follow");
    assert_eq!(
        (&seen[0].data["followed"], &seen[0].data["by"]),
        (&json!(true), &json!("follow_list"))
    );
    assert!(seen[1..].iter().all(|e| e.event == "peer_state"));
    assert!(seen.iter().all(|e| e.data["pubkey"] == pubkey(1)));
    assert_eq!(seen[1].data["from"], Value::Null, "new to the node");
    let last = seen.last().unwrap().id.unwrap();

    // Away: more changes happen.
    for i in 2..=4 {
        node.follow(&pubkey(i)).await.unwrap();
    }
    wait_until(&node, LIMIT, "all connected", |p| {
        count_in(p, PeerState::Connected) == 4
    })
    .await;
    let total = node.admin_parts().events.last_id();

    // Back: everything after `last`, in order, no gap, then the stream goes on live.
    let resumed = tokio::spawn({
        let api = api.clone();
        let n = (total - last) as usize + 1;
        async move { read_events(&api, "/v1/events", Some(last), n).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.disconnect(&pubkey(2), "live").await.unwrap();
    let resumed = resumed.await.unwrap();
    let ids: Vec<u64> = resumed.iter().map(|e| e.id.unwrap()).collect();
    let expected: Vec<u64> = (last + 1..=total + 1).collect();
    assert_eq!(ids, expected, "every id after {last}, once, in order");
    let connected = resumed
        .iter()
        .filter(|e| e.data["to"] == "connected")
        .count();
    assert_eq!(connected, 3, "{resumed:?}");
    assert_eq!(resumed.last().unwrap().data["reason"], "live");

    // Filtered to one peer.
    let only = read_events(&api, &format!("/v1/events?peer={}", pubkey(3)), Some(0), 4).await;
    assert!(
        only.iter().all(|e| e.data["pubkey"] == pubkey(3)),
        "{only:?}"
    );
    let (status, _) = api.get("/v1/events?peer=xyz").await;
    assert_eq!(status, 400);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_client_away_longer_than_the_buffer_is_told_how_many_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    world.add_ready_peer(&pubkey(2));
    let (node, api) = admin_node(&world, &dir, "{}", "  event_buffer: 2\n", &[]).await;
    node.follow(&pubkey(1)).await.unwrap();
    node.follow(&pubkey(2)).await.unwrap();
    wait_until(&node, LIMIT, "connected", |p| {
        count_in(p, PeerState::Connected) == 2
    })
    .await;
    let total = node.admin_parts().events.last_id();
    assert!(total >= 6, "{total}");

    let events = read_events(&api, "/v1/events", Some(0), 3).await;
    assert_eq!(events[0].event, "missed");
    assert_eq!(events[0].data["missed"], total - 2);
    assert_eq!(events[1].id, Some(total - 1));
    assert_eq!(events[2].id, Some(total));
    node.shutdown().await.unwrap();
}

fn sum_of(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

#[actix_rt::test]
async fn metrics_parse_and_the_state_gauges_add_up_to_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    world.announce(&pubkey(2), MemoryWorld::announcement_for(&pubkey(2)));
    let stored_peers = [
        stored(1, PeerState::Disconnected, true, None),
        stored(2, PeerState::Disconnected, true, None),
        stored(3, PeerState::Failed, true, None),
    ];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    wait_until(&node, LIMIT, "settled", |p| {
        state_of(p, &pubkey(1)) == Some(PeerState::Connected)
            && state_of(p, &pubkey(2)) == Some(PeerState::ChannelNeeded)
    })
    .await;

    let samples = parse_metrics(&api.metrics().await);
    let peers: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "btp_nips_peers")
        .collect();
    assert_eq!(peers.len(), 7, "one gauge per state: {peers:?}");
    assert_eq!(sum_of(&samples, "btp_nips_peers"), 3.0);
    let state = |name: &str| {
        peers
            .iter()
            .find(|s| s.label("state") == Some(name))
            .unwrap()
            .value
    };
    assert_eq!(state("connected"), 1.0);
    assert_eq!(state("channel_needed"), 1.0);
    assert_eq!(state("failed"), 1.0);
    assert_eq!(state("discovering"), 0.0);
    let build = samples
        .iter()
        .find(|s| s.name == "btp_nips_build_info")
        .unwrap();
    assert_eq!(build.label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(build.value, 1.0);
    let connected = samples
        .iter()
        .find(|s| {
            s.name == "btp_nips_peer_transitions_total"
                && s.label("from") == Some("connecting")
                && s.label("to") == Some("connected")
        })
        .expect("the connection was counted");
    assert_eq!(connected.value, 1.0);
    assert!(samples
        .iter()
        .any(|s| s.name == "btp_nips_peers_waiting_slot"));
    assert!(samples
        .iter()
        .any(|s| s.name == "btp_nips_persistence_pending"));
    assert!(
        samples.iter().all(|s| s.label("pubkey").is_none()),
        "no per-peer label"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn two_nodes_in_one_process_keep_separate_counters() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let world = MemoryWorld::new();
    for i in 1..=3 {
        world.add_ready_peer(&pubkey(i));
    }
    let (a, api_a) = admin_node(&world, &dir_a, "{}", "", &[]).await;
    let (b, api_b) = admin_node(&world, &dir_b, "{}", "", &[]).await;
    for i in 1..=3 {
        a.follow(&pubkey(i)).await.unwrap();
    }
    b.follow(&pubkey(1)).await.unwrap();
    wait_until(&a, LIMIT, "a connected", |p| {
        count_in(p, PeerState::Connected) == 3
    })
    .await;
    wait_until(&b, LIMIT, "b connected", |p| {
        count_in(p, PeerState::Connected) == 1
    })
    .await;

    let count = |samples: &[Sample]| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == "btp_nips_peer_transitions_total" && s.label("to") == Some("connected")
            })
            .map(|s| s.value)
            .sum()
    };
    let (sa, sb) = (
        parse_metrics(&api_a.metrics().await),
        parse_metrics(&api_b.metrics().await),
    );
    assert_eq!(count(&sa), 3.0);
    assert_eq!(count(&sb), 1.0);
    assert_eq!(sum_of(&sa, "btp_nips_peers"), 3.0);
    assert_eq!(sum_of(&sb, "btp_nips_peers"), 1.0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn shutdown_stops_the_admin_api_and_a_taken_port_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;
    let addr = node.admin_addr().unwrap();
    // A second node asked to listen where the first does is refused, naming the key.
    let err = memory_node(settings(&admin_yaml(&dir, "")), &world)
        .admin_listen(addr.to_string())
        .start()
        .await
        .err()
        .expect("the port is taken");
    assert!(err.to_string().starts_with("admin.listen"), "{err}");

    node.shutdown().await.unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", api.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "the admin API is closed: {refused:?}");
}

#[actix_rt::test]
async fn event_stream_clients_are_capped_and_a_slot_frees_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (node, api) = admin_node(&world, &dir, "{}", "  max_event_clients: 2\n", &[]).await;
    let open = || async {
        reqwest::Client::new()
            .get(format!("{}/v1/events", api.base))
            .bearer_auth(&api.read_token)
            .send()
            .await
            .unwrap()
    };
    let first = open().await;
    let second = open().await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await;
    assert_eq!(third.status().as_u16(), 503);
    let error = third.text().await.unwrap();
    assert!(
        error.contains("too many event-stream clients: admin.max_event_clients = 2"),
        "{error}"
    );
    let stats = node.admin_parts().stats.snapshot();
    assert_eq!((stats.event_clients, stats.event_clients_refused), (2, 1));
    let (_, info) = api.get("/v1/info").await;
    assert_eq!(info["admin"]["event_clients_refused"], 1, "{info}");

    // One leaves: its slot is given back without waiting for a keepalive.
    drop(first);
    let freed = wait_for(LIMIT, || async {
        node.admin_parts().stats.snapshot().event_clients == 1
    })
    .await;
    assert!(freed, "the slot came back");
    let again = open().await;
    assert_eq!(again.status().as_u16(), 200);
    drop((second, again));
    node.shutdown().await.unwrap();
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
async fn wait_for<F: std::future::Future<Output = bool>>(
    limit: Duration,
    done: impl Fn() -> F,
) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done().await
}

#[actix_rt::test]
async fn the_log_filter_of_the_running_process_changes_and_a_bad_one_is_refused() {
    use btp_nips_node::admin::logger;
    // The only test of this file that installs a logger: this process's is the node's.
    // Quiet filters: the other tests of this process log through it too.
    assert!(
        logger::install("off"),
        "no other logger in this test process"
    );
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (node, api) = admin_node(&world, &dir, "{}", "", &[]).await;
    let (status, body) = api.get("/v1/log-level").await;
    assert_eq!(status, 200, "{body}");
    let before = body["filter"].as_str().unwrap().to_string();

    let (status, body) = api
        .post(
            "/v1/log-level",
            json!({"filter": "error,btp_nips_node::admin::logger=debug"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous"], before);
    assert_eq!(log::max_level(), log::LevelFilter::Debug);
    assert!(log::log_enabled!(target: "btp_nips_node::admin::logger", log::Level::Debug));
    assert!(!log::log_enabled!(target: "btp_nips_node::lifecycle", log::Level::Debug));
    assert!(!log::log_enabled!(target: "alloy::rpc", log::Level::Warn));
    assert!(log::log_enabled!(target: "alloy::rpc", log::Level::Error));

    for (filter, says) in [
        (
            "info,btp_nips_node=loud",
            "`info,btp_nips_node=loud` is not valid",
        ),
        ("verbose", "`verbose` is neither a level"),
    ] {
        let (status, body) = api.post("/v1/log-level", json!({ "filter": filter })).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    let (status, _) = api.post("/v1/log-level", json!({"level": "info"})).await;
    assert_eq!(status, 400);
    let token = api.read_token.clone();
    let (status, _) = api
        .call(
            "POST",
            "/v1/log-level",
            Some(&token),
            Some(json!({"filter": "trace"})),
        )
        .await;
    assert_eq!(status, 403, "the read-only token may not change it");
    // Nothing the refusals asked for was applied.
    assert_eq!(
        logger::current_filter().as_deref(),
        Some("error,btp_nips_node::admin::logger=debug")
    );
    assert_eq!(node.admin_parts().stats.snapshot().log_filter_changes, 1);
    node.shutdown().await.unwrap();
}
