//! Discovery scenarios of `btp-nips-bench`, against nostr-relay-builder's relay
//! on 127.0.0.1 in this process:
//! - `resolve`: N peers' kind 32001 announcements resolved through the real resolver:
//!   once with `resolve_many` (chunked REQs), once as N concurrent `resolve` calls (what
//!   N peer actors do; gathered into batches), and once more from the cache.
//! - `follow-diff`: the operator's follow list grows by N pubkeys, then is replaced by N
//!   others (N unfollowed, N followed): time from publishing until the supervisor has
//!   applied every change.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use btp_nips_node::discovery::announcement::AnnouncementFields;
use btp_nips_node::discovery::relays::{RelaySet, RelayTuning};
use btp_nips_node::discovery::resolver::{system_clock, NostrResolver, ResolverSettings};
use btp_nips_node::lifecycle::PeerIntent;
use btp_nips_node::node::NodeBuilder;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::{AddressResolver, Resolution};
use nostr_relay_builder::prelude::{
    EventBuilder, Keys, Kind, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
    PublicKey, RateLimit, RelayBuilder, Tag, Timestamp as NostrTimestamp,
};
use serde_json::{json, Value};

fn tuning() -> RelayTuning {
    RelayTuning {
        query_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        retry_interval: Duration::from_secs(1),
        notification_capacity: RelayTuning::capacity_for(4, 500),
    }
}

/// A relay on 127.0.0.1 whose storage the benchmark can fill directly.
pub async fn local_relay() -> (LocalRelay, Arc<dyn NostrDatabase>, String) {
    let db: Arc<dyn NostrDatabase> = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    }));
    let builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().unwrap())
        .database(db.clone())
        .default_filter_limit(100_000)
        .rate_limit(RateLimit {
            max_reqs: 10_000,
            notes_per_minute: u32::MAX,
        });
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("local relay");
    let url = relay.url().await.to_string();
    (relay, db, url)
}

/// A local relay in a thread and runtime of its own, as a relay is its own process beside a
/// node: its database, its URL, and the sender that stops it (dropping it does too).
pub fn relay_thread() -> (
    Arc<dyn NostrDatabase>,
    String,
    tokio::sync::oneshot::Sender<()>,
) {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let (relay, db, url) = local_relay().await;
                ready_tx.send((db, url)).expect("the caller waits");
                let _ = stopped.await;
                relay.shutdown();
            });
    });
    let (db, url) = ready.recv().expect("relay started");
    (db, url, stop)
}

pub fn resolve(n: usize) -> Value {
    System::new().block_on(async move {
        let (_relay, db, url) = local_relay().await;
        let now = NostrTimestamp::now();
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let k = Keys::generate();
            let fields = AnnouncementFields {
                node_id: "bench".into(),
                endpoint: format!("wss://peer{i}.example/btp"),
                base_address: format!("0x{:040x}", i),
                supported_tokens: vec!["eth".into()],
                features: vec!["subscriptions".into()],
                metadata: None,
            };
            db.save_event(&fields.sign(&k, now)).await.unwrap();
            keys.push(k.public_key());
        }
        let relays = RelaySet::connect(Keys::generate(), &[url], tuning())
            .await
            .unwrap();
        relays.wait_connected(Duration::from_secs(5)).await;
        let settings = btp_nips_node::config::Settings::defaults().unwrap().nostr;
        let resolver = NostrResolver::new(
            relays.clone(),
            ResolverSettings {
                allow_ws_loopback: false,
                found_ttl: settings.found_cache,
                not_found_ttl: settings.not_found_cache,
                max_authors_per_req: settings.max_authors_per_req,
                batch_window: settings.batch_window,
                parallel_reqs: settings.parallel_reqs,
            },
            system_clock(),
        );
        let found = |answers: &[Resolution]| {
            answers
                .iter()
                .filter(|a| matches!(a, Resolution::Found(_)))
                .count()
        };

        let start = Instant::now();
        let many = resolver.resolve_many(&keys).await;
        let many_time = start.elapsed();
        let many: Vec<Resolution> = many.into_values().collect();
        let many_found = found(&many);
        let mut misses: std::collections::BTreeMap<String, usize> = Default::default();
        for a in &many {
            if !matches!(a, Resolution::Found(_)) {
                *misses.entry(format!("{a:?}")).or_default() += 1;
            }
        }
        if !misses.is_empty() {
            eprintln!("resolve_many misses: {misses:?}");
        }
        let reqs_many = resolver
            .stats()
            .reqs
            .load(std::sync::atomic::Ordering::SeqCst);

        resolver.clear_cache();
        let hex: Vec<String> = keys.iter().map(PublicKey::to_hex).collect();
        let start = Instant::now();
        let each = futures::future::join_all(hex.iter().map(|pk| resolver.resolve(pk))).await;
        let each_time = start.elapsed();
        let reqs_each = resolver
            .stats()
            .reqs
            .load(std::sync::atomic::Ordering::SeqCst)
            - reqs_many;

        let start = Instant::now();
        let cached = futures::future::join_all(hex.iter().map(|pk| resolver.resolve(pk))).await;
        let cached_time = start.elapsed();
        relays.shutdown().await;
        json!({
            "scenario": "resolve",
            "peers": n,
            "max_authors_per_req": settings.max_authors_per_req,
            "resolve_many_ms": many_time.as_secs_f64() * 1e3,
            "resolve_many_found": many_found,
            "resolve_many_reqs": reqs_many,
            "concurrent_resolve_ms": each_time.as_secs_f64() * 1e3,
            "concurrent_resolve_found": found(&each),
            "concurrent_resolve_reqs": reqs_each,
            "per_peer_us": each_time.as_secs_f64() * 1e6 / n.max(1) as f64,
            "cached_resolve_ms": cached_time.as_secs_f64() * 1e3,
            "cached_found": found(&cached),
        })
    })
}

pub fn follow_diff(n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("follow.db").display());
    System::new().block_on(async move {
        let (_relay, _db, relay_url) = local_relay().await;
        let operator = Keys::generate();
        let settings = btp_nips_node::config::Settings::from_yaml_overrides(&format!(
            "database: {{url: \"{url}\"}}\n\
             btp_nips: {{peer_connections: {{max_active_connections: {}}}}}\n\
             nostr: {{relays: [\"{relay_url}\"], operator_pubkey: \"{}\", allow_ws_loopback: true}}\n",
            (2 * n).max(1),
            operator.public_key().to_hex()
        ))
        .unwrap();
        let first: Vec<PublicKey> = (0..n).map(|_| Keys::generate().public_key()).collect();
        let second: Vec<PublicKey> = (0..n).map(|_| Keys::generate().public_key()).collect();
        let list = |follows: &[PublicKey], at: u64| {
            EventBuilder::new(Kind::ContactList, "")
                .tags(follows.iter().map(|pk| Tag::public_key(*pk)))
                .custom_created_at(NostrTimestamp::from(at))
                .sign_with_keys(&operator)
                .unwrap()
        };
        let t = NostrTimestamp::now().as_secs() - 100;
        let publisher =
            RelaySet::connect(Keys::generate(), std::slice::from_ref(&relay_url), tuning())
                .await
                .unwrap();
        publisher.wait_connected(Duration::from_secs(5)).await;
        publisher.publish(&list(&[], t)).await;

        // The node follows the operator's list on the relay with its own monitor. Peers are
        // unknown to the in-memory world: they stay in discovery, so the figures are the
        // follow-list work, not connection set-up.
        let world = MemoryWorld::new();
        let node = NodeBuilder::new(settings)
            .without_admin()
            .keys(Keys::generate())
            .ports(world.ports())
            .without_listener()
            .start()
            .await
            .unwrap();
        // The startup reconcile of the empty list.
        actix::clock::sleep(Duration::from_millis(200)).await;

        let wait = |want_followed: HashSet<String>, want_unfollowed: HashSet<String>| {
            let node = node.clone();
            async move {
                loop {
                    let peers = node.peers().await.unwrap();
                    let followed = peers
                        .iter()
                        .filter(|p| p.followed && want_followed.contains(&p.nostr_pubkey))
                        .count();
                    let unfollowed = peers
                        .iter()
                        .filter(|p| {
                            p.desired == PeerIntent::Disconnect
                                && want_unfollowed.contains(&p.nostr_pubkey)
                        })
                        .count();
                    if followed == want_followed.len() && unfollowed == want_unfollowed.len() {
                        return;
                    }
                    actix::clock::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let hexes = |v: &[PublicKey]| v.iter().map(PublicKey::to_hex).collect::<HashSet<_>>();

        let start = Instant::now();
        publisher.publish(&list(&first, t + 10)).await;
        wait(hexes(&first), HashSet::new()).await;
        let follow_time = start.elapsed();

        let start = Instant::now();
        publisher.publish(&list(&second, t + 20)).await;
        wait(hexes(&second), hexes(&first)).await;
        let replace_time = start.elapsed();

        publisher.shutdown().await;
        node.shutdown().await.unwrap();
        json!({
            "scenario": "follow-diff",
            "entries": n,
            "follow_n_ms": follow_time.as_secs_f64() * 1e3,
            "replace_n_with_n_others_ms": replace_time.as_secs_f64() * 1e3,
            "per_entry_us": replace_time.as_secs_f64() * 1e6 / (2 * n).max(1) as f64,
        })
    })
}
