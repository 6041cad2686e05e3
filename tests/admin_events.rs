//! The admin event stream's kinds beside `peer_state`, from a running node: `follow` (by
//! the follow list or the operator), `channel` (the open's confirmations, n of N, then the
//! channel's id) and `heartbeat` (at most one per peer every
//! `admin.heartbeat_event_interval_seconds`, judged on the node's clock). All are numbered
//! in one sequence: a client resuming with `Last-Event-ID`, or following one peer, gets
//! every kind without a gap.

mod support;

use std::time::Duration;

use btp_nips_node::admin::client::{AdminClient, StreamEvent};
use btp_nips_node::admin::metrics::Snapshot;
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::ports::memory::MemoryWorld;
use serde_json::{json, Value};
use support::admin::*;
use support::node::*;
use support::wait::eventually;

const LIMIT: Duration = Duration::from_secs(20);

/// Reads `path`'s events after `last` (None: live ones only) until `done` holds for the
/// events read so far.
async fn read_until(
    api: &Api,
    path: &str,
    last: Option<u64>,
    done: impl Fn(&[StreamEvent]) -> bool,
) -> Vec<StreamEvent> {
    let client = AdminClient::new(&api.base, &api.read_token);
    let mut events = Vec::new();
    let read = client.stream(path, last, |event| {
        events.push(event);
        !done(&events)
    });
    tokio::time::timeout(LIMIT, read)
        .await
        .unwrap_or_else(|_| panic!("the events did not come: {events:#?}"))
        .unwrap();
    events
}

fn of_kind<'a>(events: &'a [StreamEvent], kind: &str, pubkey: &str) -> Vec<&'a StreamEvent> {
    events
        .iter()
        .filter(|e| e.event == kind && e.data["pubkey"] == pubkey)
        .collect()
}

#[actix_rt::test]
async fn each_kind_arrives_and_a_resumed_stream_misses_nothing_across_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    // One the operator connects (its channel exists), one the follow list names (its
    // channel must be opened: three status checks, the third confirms).
    let (picked, listed) = (pubkey(1), pubkey(2));
    world.add_ready_peer(&picked);
    world.announce(&listed, MemoryWorld::announcement_for(&listed));
    world.set_confirmations_needed(2);
    let (node, api) = admin_node(
        &world,
        &dir,
        "btp_nips: {peer_connections: {heartbeat_interval_seconds: 2, \
         heartbeat_timeout_seconds: 1, channel_poll_interval_seconds: 1}}",
        "",
        &[],
    )
    .await;

    let unfollowed = |events: &[StreamEvent]| {
        events
            .iter()
            .any(|e| e.event == "follow" && e.data["followed"] == false)
    };
    let live = tokio::spawn({
        let api = api.clone();
        async move { read_until(&api, "/v1/events", None, unfollowed).await }
    });
    eventually(LIMIT, "the reader subscribed", || async {
        (node.admin_parts().stats.snapshot().event_clients == 1).then_some(())
    })
    .await;

    let (status, body) = api.post("/v1/peers", json!({ "pubkey": picked })).await;
    assert_eq!(status, 202, "{body}");
    node.follow(&listed).await.unwrap();
    wait_record(&node, &listed, LIMIT, "channel_needed", |r| {
        r.state == PeerState::ChannelNeeded
    })
    .await;
    let (status, body) = api
        .post(&format!("/v1/peers/{listed}/approve-channel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    wait_record(&node, &listed, LIMIT, "connected", |r| {
        r.state == PeerState::Connected
    })
    .await;
    wait_record(&node, &picked, LIMIT, "a PONG", |r| {
        r.last_heartbeat.is_some()
    })
    .await;
    node.unfollow(&picked).await.unwrap();
    let seen = live.await.unwrap();

    // follow: who followed, and the unfollow.
    let follows: Vec<(&str, Value, Value)> = seen
        .iter()
        .filter(|e| e.event == "follow")
        .map(|e| {
            (
                e.data["pubkey"].as_str().unwrap(),
                e.data["followed"].clone(),
                e.data["by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        follows,
        [
            (picked.as_str(), json!(true), json!("operator")),
            (listed.as_str(), json!(true), json!("follow_list")),
            (picked.as_str(), json!(false), json!("follow_list")),
        ]
    );
    // channel: the confirmations as they came, n of N, then the channel's id.
    let channel = of_kind(&seen, "channel", &listed);
    let progress: Vec<(u64, u64, Value)> = channel
        .iter()
        .map(|e| {
            (
                e.data["confirmations"].as_u64().unwrap(),
                e.data["required"].as_u64().unwrap(),
                e.data["channel_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [
            (1, 3, Value::Null),
            (2, 3, Value::Null),
            (3, 3, json!(format!("0xchan-{listed}"))),
        ]
    );
    let tx = &channel[0].data["tx_hash"];
    assert!(tx.is_string() && channel.iter().all(|e| &e.data["tx_hash"] == tx));
    // In the order it happened: opening, its confirmations, connected.
    let id_of = |kind: &str, to: &str| {
        seen.iter()
            .find(|e| e.event == kind && e.data["pubkey"] == listed && e.data["to"] == to)
            .and_then(|e| e.id)
            .unwrap()
    };
    let (opening, connected) = (
        id_of("peer_state", "channel_opening"),
        id_of("peer_state", "connected"),
    );
    assert!(channel
        .iter()
        .all(|e| opening < e.id.unwrap() && e.id.unwrap() < connected));
    // heartbeat: the PONG's round trip, when it came.
    let beat = of_kind(&seen, "heartbeat", &picked);
    assert!(!beat.is_empty(), "{seen:#?}");
    assert!(beat[0].data["rtt_us"].is_u64() && beat[0].data["at"].is_u64());
    // One sequence, no gaps.
    let ids: Vec<u64> = seen.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    // Back from after the second follow: every kind after it, the same, in order.
    let last = seen
        .iter()
        .find(|e| e.event == "follow" && e.data["pubkey"] == listed)
        .and_then(|e| e.id)
        .unwrap();
    let end = *ids.last().unwrap();
    let resumed = read_until(&api, "/v1/events", Some(last), |events| {
        events.iter().any(|e| e.id == Some(end))
    })
    .await;
    let expected: Vec<(Option<u64>, &str, &Value)> = seen
        .iter()
        .filter(|e| e.id.unwrap() > last)
        .map(|e| (e.id, e.event.as_str(), &e.data))
        .collect();
    let got: Vec<(Option<u64>, &str, &Value)> = resumed
        .iter()
        .map(|e| (e.id, e.event.as_str(), &e.data))
        .collect();
    assert_eq!(got, expected);
    let kinds: std::collections::BTreeSet<&str> = got.iter().map(|e| e.1).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["channel", "follow", "heartbeat", "peer_state"]
    );

    // One peer: its follow, states and channel, nobody else's.
    let only = read_until(
        &api,
        &format!("/v1/events?peer={listed}"),
        Some(0),
        |events| {
            events
                .iter()
                .any(|e| e.event == "channel" && e.data["channel_id"].is_string())
        },
    )
    .await;
    assert!(only.iter().all(|e| e.data["pubkey"] == listed), "{only:#?}");
    assert_eq!(only[0].event, "follow");
    assert_eq!(of_kind(&only, "channel", &listed).len(), 3);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn heartbeat_events_are_throttled_per_peer_on_the_nodes_clock_and_every_pong_is_counted() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let peers = [pubkey(1), pubkey(2)];
    for p in &peers {
        world.add_ready_peer(p);
    }
    let node = start_node(
        &world,
        &dir,
        "btp_nips: {peer_connections: {heartbeat_interval_seconds: 2, heartbeat_timeout_seconds: 1}}\n\
         admin: {heartbeat_event_interval_seconds: 20}",
        &[],
    )
    .await;
    for p in &peers {
        node.follow(p).await.unwrap();
    }
    // 200 s of simulated time: a PONG from each every 2 s.
    wait_until(&node, Duration::from_secs(300), "200 PONGs", |_| {
        world.pings_answered() >= 200
    })
    .await;

    let events = node.admin_parts().events.subscribe(Some(0)).backlog;
    let mut shown = 0;
    for p in &peers {
        let at: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == "heartbeat" && *e.pubkey == **p)
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                data["at"].as_u64().unwrap()
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[1] - w[0] >= 20_000),
            "at most one per 20 s: {at:?}"
        );
        let span = at.last().unwrap() - at[0];
        assert!(
            at.len() >= 5 && at.len() as u64 <= span / 20_000 + 1,
            "about one per 20 s over {span} ms: {at:?}"
        );
        shown += at.len();
    }
    // Every PONG still counts in the round-trip histogram.
    let samples = parse_metrics(&node.admin_parts().metrics.encode(&Snapshot::default()));
    let pongs = samples
        .iter()
        .find(|s| s.name == "btp_nips_heartbeat_rtt_seconds_count")
        .unwrap()
        .value;
    assert!(
        pongs >= 5.0 * shown as f64,
        "{pongs} PONGs counted, {shown} shown"
    );
    node.shutdown().await.unwrap();
}
