//! `events --events N`: events per second from B's relay into A's relay through two nodes
//! (B serves A's REQ from its relay, A checks each event and publishes it to its own),
//! against publishing the same N events straight to a relay like A's, in the same run.
//! The relays (nostr-relay-builder, on loopback) and the two nodes each run on a thread of
//! their own, as they are processes of their own in a deployment; the direct publisher
//! sends one event at a time with its OK awaited, so the ratio is the node path's rate over
//! a plain client's.
//!
//! The CPU time of each phase (this whole process: relays, nodes and client) is reported
//! per event too. The direct phase is one round trip at a time and leaves most of the
//! machine idle; the path through the nodes keeps every thread busy and does more work per
//! event (B reads it, both nodes pass it over BTP, A checks its signature before its relay
//! checks it again). So on an idle machine the ratio measures latency against throughput,
//! and on a machine whose cores are busy with other work it tends to the ratio of the two
//! CPU costs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btp_nips_node::config::Settings;
use btp_nips_node::events::EventFlow;
use btp_nips_node::lifecycle::Announcement;
use btp_nips_node::node::{NodeBuilder, NodeThread};
use btp_nips_node::ports::memory::MemoryWorld;
use nostr_relay_builder::prelude::{EventBuilder, Keys, Timestamp};
use serde_json::{json, Value};

use crate::bench_discovery::relay_thread;

struct BenchNode {
    node: NodeThread,
    flow: Arc<EventFlow>,
    world: MemoryWorld,
}

fn start_node(name: &str, keys: Keys, dir: &std::path::Path, relay: &str, n: usize) -> BenchNode {
    let yaml = format!(
        "node:\n  id: \"{name}\"\ndatabase:\n  url: \"sqlite://{}\"\n\
         nostr:\n  allow_ws_loopback: true\n\
         session:\n  listen: \"127.0.0.1:0\"\n\
         events:\n  operator_relay: \"{relay}\"\n  max_stored_events: {}\n",
        dir.join(format!("{name}.db")).display(),
        n.max(1)
    );
    let settings = Settings::from_yaml_overrides(&yaml).expect("bench settings");
    // Discovery and channels from the in-memory world; sessions and events are real.
    let world = MemoryWorld::new();
    let ports = world.ports();
    let node = NodeThread::start(move || {
        NodeBuilder::new(settings)
            .without_admin()
            .keys(keys)
            .resolver(ports.resolver)
            .channels(ports.channels)
    });
    let flow = node.event_flow().expect("an operator relay").clone();
    BenchNode { node, flow, world }
}

pub fn events(n: usize) -> Value {
    actix::System::new().block_on(async move {
        let keys_b = Keys::generate();
        let start = Timestamp::now().as_secs() - n as u64 - 10;
        let events: Vec<_> = (0..n)
            .map(|i| {
                EventBuilder::text_note(format!("event {i}"))
                    .custom_created_at(Timestamp::from(start + i as u64))
                    .sign_with_keys(&keys_b)
                    .expect("sign")
            })
            .collect();

        // Baseline: the same events published straight to a relay like A's.
        let (_, direct_url, _direct_relay) = relay_thread();
        let client = nostr_sdk::Client::default();
        client.add_relay(&direct_url).await.expect("relay");
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;
        let t = Instant::now();
        let cpu = crate::cpu_time();
        for e in &events {
            client.send_event(e).await.expect("direct publish");
        }
        let direct = t.elapsed();
        let direct_cpu = crate::cpu_time() - cpu;
        client.shutdown().await;

        // Through the nodes: B's relay holds the events, A follows B.
        let (db_b, url_b, _relay_b) = relay_thread();
        for e in &events {
            db_b.save_event(e).await.expect("fill B's relay");
        }
        let (_, url_a, _relay_a) = relay_thread();
        let dir = tempfile::tempdir().expect("tempdir");
        let b = start_node("beta", keys_b.clone(), dir.path(), &url_b, n);
        let a = start_node("alpha", Keys::generate(), dir.path(), &url_a, n);
        let pubkey = keys_b.public_key().to_hex();
        a.world.announce(
            &pubkey,
            Announcement {
                ilp_address: format!("g.btp-nips.beta.{}", &pubkey[..16]),
                endpoint: b.node.loopback_endpoint().expect("B listens"),
                base_address: format!("0x{:0>40}", &pubkey[..16]),
                subscribers: None,
            },
        );
        a.world.add_channel(&pubkey);
        let t = Instant::now();
        let cpu = crate::cpu_time();
        a.node.follow(&pubkey).await.expect("follow");
        let limit = Duration::from_secs(60) + direct * 50;
        let mut first = None;
        while a.flow.stats.published.load(Ordering::Relaxed) < n as u64 {
            if first.is_none() && a.flow.stats.published.load(Ordering::Relaxed) > 0 {
                first = Some(t.elapsed());
            }
            if t.elapsed() > limit {
                return json!({ "scenario": "events", "error": format!(
                    "only {} of {n} events arrived within {limit:?}",
                    a.flow.stats.published.load(Ordering::Relaxed)) });
            }
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        let through = t.elapsed();
        let through_cpu = crate::cpu_time() - cpu;
        let sent = b.flow.serve_stats().events_sent.load(Ordering::Relaxed);
        for mut node in [a, b] {
            node.node.kill();
        }
        let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        let us_per_event = |d: Duration| (d.as_secs_f64() * 1e6 / n as f64 * 10.0).round() / 10.0;
        json!({
            "scenario": "events",
            "events": n,
            "direct_publish_events_per_s": rate(direct).round(),
            "through_nodes_events_per_s": rate(through).round(),
            "through_nodes_over_direct": (rate(through) / rate(direct) * 1000.0).round() / 1000.0,
            "through_nodes_seconds_incl_connect": through.as_secs_f64(),
            "first_event_after_follow_ms": first.unwrap_or(through).as_secs_f64() * 1e3,
            "through_nodes_events_per_s_after_first":
                ((n - 1) as f64 / (through - first.unwrap_or_default()).as_secs_f64().max(1e-9)).round(),
            "events_sent_by_b": sent,
            "direct_cpu_us_per_event": us_per_event(direct_cpu),
            "through_nodes_cpu_us_per_event": us_per_event(through_cpu),
        })
    })
}
