//! NIP-98 authorization of the admin API against a running node: the operator's event for
//! the request is an admin credential; every broken rule (kind, url, method, age, signer,
//! signature, payload, replay) is refused 401 naming it, changes nothing, and is counted.

mod support;

use std::time::Duration;

use btp_nips_node::admin::nip98;
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::ports::memory::MemoryWorld;
use nostr::{JsonUtil, Keys, Kind};
use serde_json::{json, Value};
use support::admin::*;
use support::node::*;

const LIMIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `method path` with `authorization` as the header and `body`.
async fn call(
    api: &Api,
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", api.base))
        .header("Authorization", authorization)
        .timeout(LIMIT);
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A node whose operator is `operator` (None: no operator configured), with peer 1 failed.
async fn node_with_operator(
    world: &MemoryWorld,
    dir: &tempfile::TempDir,
    operator: Option<&Keys>,
) -> (btp_nips_node::node::Node, Api) {
    let yaml = match operator {
        Some(keys) => format!(
            "nostr: {{operator_pubkey: \"{}\"}}",
            keys.public_key().to_hex()
        ),
        None => "{}".to_string(),
    };
    let stored_peers = [stored(1, PeerState::Failed, true, None)];
    admin_node(world, dir, &yaml, "", &stored_peers).await
}

#[actix_rt::test]
async fn the_operators_nip98_event_reads_and_operates() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let operator = Keys::generate();
    let (node, api) = node_with_operator(&world, &dir, Some(&operator)).await;

    let url = format!("{}/v1/info", api.base);
    let event = nip98::sign(&operator, &url, "GET", None, now()).unwrap();
    let (status, info) = call(&api, "GET", "/v1/info", &nip98::header(&event), None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["pubkey"], node.public_key().to_hex());
    // The same event again: a replay.
    let (status, answer) = call(&api, "GET", "/v1/info", &nip98::header(&event), None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("replayed"));

    // A POST with its body's hash: the admin operation runs.
    world.add_ready_peer(&pubkey(1));
    let path = format!("/v1/peers/{}/retry", pubkey(1));
    let body = "{}";
    let event = nip98::sign(
        &operator,
        &format!("{}{path}", api.base),
        "POST",
        Some(body.as_bytes()),
        now(),
    )
    .unwrap();
    let (status, answer) = call(&api, "POST", &path, &nip98::header(&event), Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    wait_record(&node, &pubkey(1), LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;
    let stats = node.admin_parts().stats.snapshot();
    assert_eq!((stats.nip98_accepted, stats.nip98_refused), (2, 1));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn each_broken_nip98_rule_is_refused_naming_it_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    world.add_ready_peer(&pubkey(1));
    let operator = Keys::generate();
    let (node, api) = node_with_operator(&world, &dir, Some(&operator)).await;
    let path = format!("/v1/peers/{}/retry", pubkey(1));
    let url = format!("{}{path}", api.base);
    let body = "{}";
    let hashed = Some(body.as_bytes());
    let t = now();

    let tampered = {
        let event = nip98::sign(&operator, &url, "POST", hashed, t).unwrap();
        let mut json: Value = serde_json::from_str(&event.as_json()).unwrap();
        json["content"] = "let me in".into();
        use base64::Engine;
        format!(
            "Nostr {}",
            base64::engine::general_purpose::STANDARD.encode(json.to_string())
        )
    };
    let header = |e: nostr::Event| nip98::header(&e);
    let cases = [
        (
            header(nip98::sign_kind(&operator, Kind::TextNote, &url, "POST", hashed, t).unwrap()),
            "wrong kind 1",
        ),
        (
            header(
                nip98::sign(
                    &operator,
                    &format!("{}/v1/info", api.base),
                    "POST",
                    hashed,
                    t,
                )
                .unwrap(),
            ),
            "url mismatch",
        ),
        (
            header(nip98::sign(&operator, &url, "GET", hashed, t).unwrap()),
            "method mismatch",
        ),
        (
            header(nip98::sign(&operator, &url, "POST", hashed, t - 600).unwrap()),
            "stale: created_at is",
        ),
        (
            header(nip98::sign(&Keys::generate(), &url, "POST", hashed, t).unwrap()),
            "not the operator",
        ),
        (tampered, "bad signature"),
        (
            header(nip98::sign(&operator, &url, "POST", Some(b"{\"x\":1}"), t).unwrap()),
            "payload mismatch",
        ),
        (
            header(nip98::sign(&operator, &url, "POST", None, t).unwrap()),
            "missing `payload` tag",
        ),
        ("Nostr not-base64!".to_string(), "not base64"),
    ];
    for (authorization, says) in &cases {
        let (status, answer) = call(&api, "POST", &path, authorization, Some(body)).await;
        assert_eq!(status, 401, "{says}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{says}: {error}");
        assert!(error.starts_with("NIP-98"), "{error}");
    }
    // The stale refusal names the setting that bounds it.
    let (_, answer) = call(&api, "POST", &path, &cases[3].0, Some(body)).await;
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("admin.nip98_max_age_seconds = 60"));

    // Nothing changed: the failed peer was not retried.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        node.peer(&pubkey(1)).await.unwrap().unwrap().state,
        PeerState::Failed
    );
    let stats = node.admin_parts().stats.snapshot();
    let refused = cases.len() as u64 + 1;
    assert_eq!(stats.nip98_refused, refused);
    assert_eq!(stats.auth_refused, refused);
    assert_eq!(stats.nip98_accepted, 0);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn without_an_operator_no_nip98_event_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (node, api) = node_with_operator(&world, &dir, None).await;
    let keys = Keys::generate();
    let event = nip98::sign(&keys, &format!("{}/v1/info", api.base), "GET", None, now()).unwrap();
    let (status, answer) = call(&api, "GET", "/v1/info", &nip98::header(&event), None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("nostr.operator_pubkey is empty"));
    // Bearer tokens work as before.
    assert_eq!(api.get("/healthz").await, (200, json!({"status": "ok"})));
    node.shutdown().await.unwrap();
}
