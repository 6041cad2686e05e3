//! A record no row can hold never stops the node's writes: the batch is written without
//! it, the peer is written (and driven) to `failed` with the reason, every other peer's
//! change still lands and every durable flush still completes — on SQLite and PostgreSQL.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;

use btp_nips_node::actors::persistence::{Flush, GetStats, PersistenceActor, SaveRecord};
use btp_nips_node::config::PersistenceSettings;
use btp_nips_node::lifecycle::peer::Event;
use btp_nips_node::lifecycle::record::{EventCursor, PeerRecord};
use btp_nips_node::lifecycle::state::PeerState;
use btp_nips_node::lifecycle::time::Timestamp;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::{Admission, PeerDirectory};
use btp_nips_node::storage::scratch::ScratchPostgres;
use btp_nips_node::storage::Database;
use support::node::*;

/// A cursor at `created_at = 2^63` seconds: valid Nostr, but past what a row holds.
const BEYOND_I64: u64 = 1 << 63;

fn record(i: usize, cursor_at: u64) -> PeerRecord {
    let mut record = PeerRecord::new(pubkey(i), true, Timestamp(1_000));
    record.state = PeerState::Connected;
    record.event_cursor = Some(EventCursor {
        created_at: cursor_at,
        ids: vec!["ab".repeat(32)],
    });
    record
}

/// Records what the persistence actor tells the node about peers.
#[derive(Default)]
struct Observed(Mutex<Vec<(String, Event)>>);

#[async_trait]
impl PeerDirectory for Observed {
    async fn admit(&self, _: &str) -> Admission {
        Admission::Refused {
            reason: "not used".into(),
        }
    }
    fn observe(&self, nostr_pubkey: &str, event: Event) {
        self.0
            .lock()
            .unwrap()
            .push((nostr_pubkey.to_owned(), event));
    }
    fn follow(&self, _: &str) {}
    fn unfollow(&self, _: &str) {}
    fn reconcile(&self, _: Vec<String>) {}
}

fn check_batch_isolates_the_bad_record(db: &Database) {
    let mut batch: Vec<PeerRecord> = (0..20).map(|i| record(i, 1_700_000_000)).collect();
    batch.push(record(99, BEYOND_I64));
    let outcome = db.upsert_batch(&batch).unwrap();
    assert_eq!(outcome.written, 20);
    assert_eq!(outcome.unwritable.len(), 1);
    assert_eq!(outcome.unwritable[0].nostr_pubkey, pubkey(99));
    let error = outcome.unwritable[0].error.to_string();
    assert!(
        error.contains("last_event_at") && error.contains(&BEYOND_I64.to_string()),
        "the refusal names the column and the value: {error}"
    );
    let stored = db.load_all().unwrap();
    assert_eq!(stored.len(), 20, "every other record is written");
    assert!(db.load(&pubkey(99)).unwrap().is_none());
}

async fn check_actor_keeps_writing(db: Database) {
    let observed = Arc::new(Observed::default());
    let settings = PersistenceSettings {
        flush_interval: Duration::from_millis(5),
        max_batch: 100,
        retry_initial_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        ..PersistenceSettings::default()
    };
    let actor = PersistenceActor::new(db.clone(), settings)
        .with_directory(observed.clone())
        .start();
    actor.do_send(SaveRecord::unversioned(record(99, BEYOND_I64)));
    for i in 0..10 {
        actor.do_send(SaveRecord::unversioned(record(i, 1_700_000_000)));
    }
    let flushed = tokio::time::timeout(Duration::from_secs(30), actor.send(Flush))
        .await
        .expect("a flush completes although one record cannot be stored");
    flushed.unwrap().unwrap();

    // The peer whose record cannot be stored is written as failed, naming why.
    let bad = db
        .load(&pubkey(99))
        .unwrap()
        .expect("the bad peer has a row");
    assert_eq!(bad.state, PeerState::Failed);
    let reason = bad.failure_reason.unwrap();
    assert!(reason.contains("cannot be stored") && reason.contains("last_event_at"));
    assert_eq!(
        bad.event_cursor, None,
        "the value no row holds is taken out"
    );
    // Its actor is told to give up with the same reason.
    let told = observed.0.lock().unwrap().clone();
    assert!(
        matches!(&told[..], [(pk, Event::GiveUp { reason: r })] if *pk == pubkey(99) && *r == reason),
        "{told:?}"
    );

    // Later writes of everyone, including a good snapshot of the bad peer, go on.
    for i in 0..10 {
        actor.do_send(SaveRecord::unversioned(record(i, 1_700_000_100)));
    }
    let mut fixed = record(99, 1_700_000_100);
    fixed.state = PeerState::Failed;
    actor.do_send(SaveRecord::unversioned(fixed));
    tokio::time::timeout(Duration::from_secs(30), actor.send(Flush))
        .await
        .expect("later flushes complete")
        .unwrap()
        .unwrap();
    let stored = db.load_all().unwrap();
    assert_eq!(stored.len(), 11);
    assert!(stored
        .iter()
        .all(|r| r.event_cursor.as_ref().unwrap().created_at == 1_700_000_100));
    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!(stats.records_unwritable, 1);
    assert_eq!(stats.pending, 0);
}

#[test]
fn sqlite_batch_isolates_a_record_no_row_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap();
    check_batch_isolates_the_bad_record(&db);
}

#[test]
fn pg_batch_isolates_a_record_no_row_can_hold() {
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    let db = Database::open(pg.url(), 2).unwrap();
    check_batch_isolates_the_bad_record(&db);
}

#[actix_rt::test]
async fn sqlite_actor_writes_the_others_and_fails_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap();
    check_actor_keeps_writing(db).await;
}

#[actix_rt::test]
async fn pg_actor_writes_the_others_and_fails_the_peer() {
    let pg = ScratchPostgres::create(&pg_admin_url(), "btp_test").unwrap();
    let db = Database::open(pg.url(), 2).unwrap();
    check_actor_keeps_writing(db).await;
}

/// Through a whole node: a connected peer's cursor is moved past what a row holds (as an
/// event dated 2^63 did before the inbox refused such events); the peer ends `failed` with
/// the reason, the other peer stays connected, and the node's flush and shutdown complete.
#[actix_rt::test]
async fn a_node_fails_only_the_peer_whose_record_cannot_be_stored() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    let (bad, good) = (pubkey(1), pubkey(2));
    for peer in [&bad, &good] {
        world.add_ready_peer(peer);
    }
    let node = start_node(&world, &dir, "", &[]).await;
    for peer in [&bad, &good] {
        node.follow(peer).await.unwrap();
    }
    wait_until(&node, Duration::from_secs(10), "both connected", |p| {
        count_in(p, PeerState::Connected) == 2
    })
    .await;
    node.directory().observe(
        &bad,
        Event::EventReceived {
            created_at: BEYOND_I64,
            id: "cd".repeat(32),
        },
    );
    wait_until(&node, Duration::from_secs(10), "the bad peer failed", |p| {
        state_of(p, &bad) == Some(PeerState::Failed)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), node.flush())
        .await
        .expect("the node's flush completes")
        .unwrap();
    let stored = node.db().load(&bad).unwrap().unwrap();
    assert_eq!(stored.state, PeerState::Failed);
    assert!(stored
        .failure_reason
        .as_deref()
        .unwrap()
        .contains("cannot be stored"));
    let other = node.db().load(&good).unwrap().unwrap();
    assert_eq!(other.state, PeerState::Connected);
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("shutdown completes")
        .unwrap();
}
