//! Peer history: every state change is kept in `peer_transitions` (trimmed to the newest
//! `persistence.history_per_peer` per peer), written with the records' batches, served by
//! `GET /v1/peers/{id}/history` newest first, and still there after a restart — on SQLite
//! and on PostgreSQL.

mod support;

use std::time::Duration;

use serde_json::{json, Value};

use btp_nips_node::actors::clock::NodeClock;
use btp_nips_node::lifecycle::record::PeerTransition;
use btp_nips_node::lifecycle::{PeerRecord, PeerState, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::storage::scratch::ScratchPostgres;
use btp_nips_node::storage::Database;
use support::admin::{admin_yaml, Api};
use support::node::*;

const LIMIT: Duration = Duration::from_secs(20);

fn transition(pk: &str, from: Option<PeerState>, to: PeerState, at: u64) -> PeerTransition {
    PeerTransition {
        nostr_pubkey: pk.to_owned(),
        from,
        to,
        reason: Some(format!("step {at}")),
        at: Timestamp(at),
    }
}

fn check_history_is_kept_newest_first_and_trimmed(db: &Database) {
    let (a, b) = (pubkey(1), pubkey(2));
    let record = PeerRecord::new(&a, true, Timestamp(0));
    let first: Vec<PeerTransition> = (0..5)
        .map(|i| transition(&a, Some(PeerState::Connecting), PeerState::Connected, i))
        .chain([transition(&b, None, PeerState::Discovering, 100)])
        .collect();
    db.write_batch(std::slice::from_ref(&record), &first, 3)
        .unwrap();
    let history = db.history(&a, 10).unwrap();
    let ats: Vec<u64> = history.iter().map(|t| t.at.0).collect();
    assert_eq!(ats, [4, 3, 2], "newest first, only the newest 3 kept");
    assert_eq!(history[0].reason.as_deref(), Some("step 4"));
    assert_eq!(db.history(&b, 10).unwrap(), [first[5].clone()]);

    // A later batch trims again; other peers' histories are untouched.
    db.write_batch(&[], &[transition(&a, None, PeerState::Failed, 9)], 3)
        .unwrap();
    let ats: Vec<u64> = db.history(&a, 10).unwrap().iter().map(|t| t.at.0).collect();
    assert_eq!(ats, [9, 4, 3]);
    assert_eq!(db.history(&a, 1).unwrap()[0].from, None);
    assert_eq!(db.history(&b, 10).unwrap().len(), 1);
    assert!(db.history(&pubkey(3), 10).unwrap().is_empty());
}

#[test]
fn sqlite_history_is_kept_newest_first_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap();
    check_history_is_kept_newest_first_and_trimmed(&db);
}

#[test]
fn pg_history_is_kept_newest_first_and_trimmed() {
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    let db = Database::open(pg.url(), 2).unwrap();
    check_history_is_kept_newest_first_and_trimmed(&db);
}

/// A node on `db` with its admin API, token files in `dir`.
async fn node_on(db: Database, world: &MemoryWorld, dir: &tempfile::TempDir) -> (Node, Api) {
    let node = memory_node(settings(&admin_yaml(dir, "")), world)
        .database(db)
        .clock(NodeClock::anchored_at(Timestamp::now_system()))
        .admin_listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let api = Api::of(&node, dir);
    (node, api)
}

fn steps(body: &Value) -> Vec<(Option<String>, String)> {
    body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().map(str::to_owned),
                t["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn check_history_over_the_api(open: impl Fn() -> Database) {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peer = pubkey(1);
    world.add_ready_peer(&peer);
    let (node, api) = node_on(open(), &world, &dir).await;
    node.follow(&peer).await.unwrap();
    wait_record(&node, &peer, LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;
    api.post(
        &format!("/v1/peers/{peer}/disconnect"),
        json!({"reason": "maintenance"}),
    )
    .await;
    wait_record(&node, &peer, LIMIT, "disconnected", |r| {
        r.state == PeerState::Disconnected
    })
    .await;

    let (status, body) = api.get(&format!("/v1/peers/{peer}/history")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pubkey"], peer);
    let seen = steps(&body);
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(seen[0], (s("connected"), "disconnected".to_owned()));
    assert_eq!(
        body["transitions"][0]["reason"], "maintenance",
        "the reason recorded with the change"
    );
    assert!(
        seen.contains(&(s("connecting"), "connected".to_owned())),
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap(), &(None, "discovering".to_owned()));
    let ats: Vec<u64> = body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["at"].as_u64().unwrap())
        .collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );

    let (status, body) = api.get(&format!("/v1/peers/{peer}/history?limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(steps(&body).len(), 1);
    let (status, body) = api.get(&format!("/v1/peers/{peer}/history?limit=0")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("limit `0`"),
        "{body}"
    );
    let (status, _) = api.get(&format!("/v1/peers/{}/history", pubkey(9))).await;
    assert_eq!(status, 404);
    node.shutdown().await.unwrap();

    // A restarted node on the same database serves the same history.
    let (node, api) = node_on(open(), &world, &dir).await;
    let (status, after) = api.get(&format!("/v1/peers/{peer}/history")).await;
    assert_eq!(status, 200);
    assert_eq!(
        steps(&after)[..seen.len()],
        seen[..],
        "kept across the restart"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn sqlite_history_is_served_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    check_history_over_the_api(|| Database::open(path.to_str().unwrap(), 2).unwrap()).await;
}

#[actix_rt::test]
async fn pg_history_is_served_and_survives_a_restart() {
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    check_history_over_the_api(|| Database::open(pg.url(), 2).unwrap()).await;
}
