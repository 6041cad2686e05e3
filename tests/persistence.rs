//! The storage layer and the persistence actor, against real databases: SQLite in a
//! temporary directory, and PostgreSQL at `postgres://postgres@127.0.0.1:5432/test`
//! (override with `BTP_NIPS_TEST_PG_URL`). Every PostgreSQL test creates its own database
//! (`btp_test_<random>`) and drops it at the end, so the tests run in parallel.

mod support;

use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::{PgConnection, SqliteConnection};

use btp_nips_node::actors::persistence::{
    Flush, GetStats, PersistenceActor, PersistenceError, SaveRecord,
};
use btp_nips_node::config::PersistenceSettings;
use btp_nips_node::lifecycle::record::{EventCursor, PeerRecord};
use btp_nips_node::lifecycle::state::{PeerIntent, PeerState};
use btp_nips_node::lifecycle::time::Timestamp;
use btp_nips_node::storage::scratch::ScratchPostgres;
use btp_nips_node::storage::{Backend, Database, StorageError};
use support::wait::holds_within_wall_clock;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A fresh PostgreSQL database for one test, dropped (with its connections) at the end.
struct PgTestDb(ScratchPostgres);

#[derive(QueryableByName)]
struct Terminated {
    #[diesel(sql_type = Bool)]
    terminated: bool,
}

impl PgTestDb {
    fn create() -> PgTestDb {
        PgTestDb(
            ScratchPostgres::create(&support::node::pg_admin_url(), "btp_test").unwrap_or_else(
                |e| panic!("{e}; start PostgreSQL or point BTP_NIPS_TEST_PG_URL at one"),
            ),
        )
    }

    fn url(&self) -> String {
        self.0.url().to_string()
    }

    /// Terminates every backend connected to the test database, waiting until each is gone;
    /// returns how many there were.
    fn terminate_backends(&self) -> usize {
        let killed: Vec<Terminated> = diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid, 5000) AS terminated FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.0.name()
        ))
        .load(&mut self.0.admin())
        .expect("terminate backends");
        killed.iter().filter(|k| k.terminated).count()
    }

    fn allow_connections(&self, allow: bool) {
        self.0
            .admin()
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
                self.0.name()
            ))
            .expect("alter database");
    }
}

/// A temporary SQLite database URL (in a directory that does not exist yet).
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("data/node.db").display())
}

/// Runs raw SQL on its own connection, outside the pool.
fn exec_raw(url: &str, sql: &str) {
    match Backend::from_url(url) {
        (Backend::Postgresql, url) => PgConnection::establish(&url)
            .expect("raw connection")
            .batch_execute(sql)
            .expect("raw SQL"),
        (Backend::Sqlite, path) => {
            let mut conn = SqliteConnection::establish(&path).expect("raw connection");
            conn.batch_execute("PRAGMA busy_timeout = 5000;")
                .expect("busy timeout");
            conn.batch_execute(sql).expect("raw SQL")
        }
    }
}

fn pubkey(n: usize) -> String {
    format!("{n:064x}")
}

/// A record with every optional field set, at the edges of each column's range.
fn full_record(pk: &str) -> PeerRecord {
    PeerRecord {
        nostr_pubkey: pk.to_owned(),
        ilp_address: Some(format!("g.btp-nips.node.{}", &pk[..8])),
        endpoint: Some("wss://peer.example:7768/btp".into()),
        base_address: Some("0x00000000000000000000000000000000deadbeef".into()),
        state: PeerState::ChannelOpening,
        desired: PeerIntent::Disconnect,
        followed: true,
        subscribers: Some(u32::MAX),
        priority: 2,
        channel_id: Some("0xc0ffee".into()),
        channel_tx_hash: Some("0xabc123".into()),
        channel_opening_since: Some(Timestamp(1_700_000_000_123)),
        last_heartbeat: Some(Timestamp(i64::MAX as u64)),
        rtt_us: Some(u32::MAX),
        reconnect_attempts: u32::MAX,
        next_attempt_at: Some(Timestamp(1_700_000_300_000)),
        failure_reason: Some("timeout: 'quoted' \"double\" ünïcødé".into()),
        subscription_ids: vec!["sub-1".into(), "sub \"2\"".into(), String::new()],
        event_cursor: Some(EventCursor {
            created_at: i64::MAX as u64,
            ids: vec!["ab".repeat(32), "cd".repeat(32)],
        }),
        created_at: Timestamp(1_600_000_000_000),
        updated_at: Timestamp(1_700_000_000_999),
    }
}

/// A record with every optional field empty.
fn bare_record(pk: &str) -> PeerRecord {
    PeerRecord::new(pk, false, Timestamp(0))
}

/// Peer `peer`'s snapshot number `round`: every mutable field differs between rounds.
fn snapshot(peer: usize, round: u32) -> PeerRecord {
    let mut record = PeerRecord::new(pubkey(peer), peer.is_multiple_of(2), Timestamp(1_000));
    record.state = PeerState::ALL[round as usize % PeerState::ALL.len()];
    record.reconnect_attempts = round;
    record.rtt_us = Some(round * 3);
    record.last_heartbeat = Some(Timestamp(10_000 + u64::from(round)));
    record.subscription_ids = vec![format!("round-{round}")];
    record.priority = (peer % 10) as u8 + 1;
    record.updated_at = Timestamp(1_000 + u64::from(round));
    record
}

fn settings(flush_interval_ms: u64, max_batch: usize) -> PersistenceSettings {
    PersistenceSettings {
        flush_interval: Duration::from_millis(flush_interval_ms),
        max_batch,
        retry_initial_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        ..PersistenceSettings::default()
    }
}

/// `records` in `load_all` order.
fn sorted(mut records: Vec<PeerRecord>) -> Vec<PeerRecord> {
    records.sort_by(|a, b| (a.priority, &a.nostr_pubkey).cmp(&(b.priority, &b.nostr_pubkey)));
    records
}

/// Sends `Flush` and waits for its answer, failing the test (instead of hanging it) if the
/// answer does not come within a minute.
async fn flush(actor: &Addr<PersistenceActor>) -> Result<(), PersistenceError> {
    tokio::time::timeout(Duration::from_secs(60), actor.send(Flush))
        .await
        .expect("Flush was not answered within 60 s")
        .expect("the actor is alive")
}

// ---------------------------------------------------------------------------------------
// Storage, on both backends
// ---------------------------------------------------------------------------------------

fn check_round_trip(url: &str) {
    let db = Database::open(url, 2).expect("open");
    let full = full_record(&pubkey(1));
    let bare = bare_record(&pubkey(2));
    db.upsert_batch(&[full.clone(), bare.clone()])
        .expect("upsert");
    assert_eq!(db.write_transactions(), 1);
    assert_eq!(db.load(&full.nostr_pubkey).unwrap(), Some(full.clone()));
    assert_eq!(db.load(&bare.nostr_pubkey).unwrap(), Some(bare.clone()));
    assert_eq!(db.load(&pubkey(3)).unwrap(), None);
    assert_eq!(db.load_all().unwrap(), sorted(vec![full, bare]));
}

fn check_reupsert_overwrites(url: &str) {
    let db = Database::open(url, 2).expect("open");
    let pk = pubkey(7);
    let first = full_record(&pk);
    db.upsert_batch(std::slice::from_ref(&first)).unwrap();

    // Every column changes, Some becomes None, and created_at is (wrongly) different.
    let mut second = bare_record(&pk);
    second.state = PeerState::Failed;
    second.followed = false;
    second.priority = 9;
    second.reconnect_attempts = 4;
    second.created_at = Timestamp(42);
    second.updated_at = Timestamp(1_800_000_000_000);
    db.upsert_batch(std::slice::from_ref(&second)).unwrap();

    let stored = db.load(&pk).unwrap().expect("row still there");
    let expected = PeerRecord {
        created_at: first.created_at,
        ..second
    };
    assert_eq!(
        stored, expected,
        "every column but created_at is overwritten"
    );
    assert_eq!(db.load_all().unwrap().len(), 1, "no second row");
    assert_eq!(db.write_transactions(), 2);
}

fn check_load_all_order(url: &str) {
    let db = Database::open(url, 2).expect("open");
    let mut records = Vec::new();
    for (n, priority) in [(5, 3u8), (1, 10), (4, 1), (2, 1), (3, 3), (6, 10)] {
        let mut r = bare_record(&pubkey(n));
        r.priority = priority;
        records.push(r);
    }
    db.upsert_batch(&records).unwrap();
    let order: Vec<(u8, String)> = db
        .load_all()
        .unwrap()
        .into_iter()
        .map(|r| (r.priority, r.nostr_pubkey))
        .collect();
    assert_eq!(
        order,
        vec![
            (1, pubkey(2)),
            (1, pubkey(4)),
            (3, pubkey(3)),
            (3, pubkey(5)),
            (10, pubkey(1)),
            (10, pubkey(6)),
        ]
    );
}

fn check_large_batch_is_one_transaction(url: &str) {
    let db = Database::open(url, 2).expect("open");
    // More rows than one statement carries, and a peer named twice (its last record wins).
    let mut records: Vec<PeerRecord> = (0..1_234).map(|n| snapshot(n, 1)).collect();
    records.push(snapshot(17, 2));
    db.upsert_batch(&records).unwrap();
    assert_eq!(db.write_transactions(), 1);
    let stored = db.load_all().unwrap();
    assert_eq!(stored.len(), 1_234);
    assert_eq!(db.load(&pubkey(17)).unwrap(), Some(snapshot(17, 2)));
    assert_eq!(db.load(&pubkey(1_233)).unwrap(), Some(snapshot(1_233, 1)));
}

fn check_corrupt_rows(url: &str) {
    let db = Database::open(url, 2).expect("open");
    let insert = |pk: &str, column: &str, value: &str| {
        let mut values: Vec<(&str, String)> = vec![
            ("nostr_pubkey", format!("'{pk}'")),
            ("state", "'connected'".to_owned()),
            ("desired", "'connect'".to_owned()),
            ("followed", "TRUE".to_owned()),
            ("priority", "3".to_owned()),
            ("reconnect_attempts", "0".to_owned()),
            ("subscription_ids", "'[\"a\"]'".to_owned()),
            ("created_at", "1".to_owned()),
            ("updated_at", "2".to_owned()),
        ];
        match values.iter_mut().find(|(c, _)| *c == column) {
            Some(slot) => slot.1 = value.to_owned(),
            None => values.push((column, value.to_owned())),
        }
        let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let literals: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
        exec_raw(
            url,
            &format!(
                "INSERT INTO peer_connections ({}) VALUES ({})",
                columns.join(", "),
                literals.join(", ")
            ),
        );
    };

    // The template itself is valid: a control row loads.
    insert(&pubkey(100), "state", "'connected'");
    let control = db.load(&pubkey(100)).unwrap().expect("control row");
    assert_eq!(control.state, PeerState::Connected);
    assert_eq!(control.subscription_ids, vec!["a".to_owned()]);

    let cases = [
        ("state", "'active'"),
        ("desired", "'maybe'"),
        ("priority", "0"),
        ("priority", "11"),
        ("reconnect_attempts", "-1"),
        ("subscribers", "-7"),
        ("rtt_us", "4294967296"),
        ("last_heartbeat", "-5"),
        ("created_at", "-1"),
        ("subscription_ids", "'not json'"),
        ("subscription_ids", "'[1, 2]'"),
    ];
    for (n, (column, value)) in cases.into_iter().enumerate() {
        let pk = pubkey(200 + n);
        insert(&pk, column, value);
        match db.load(&pk) {
            Err(StorageError::Corrupt {
                pubkey: bad_pk,
                field,
                ..
            }) => {
                assert_eq!(bad_pk, pk, "{column} = {value}");
                assert_eq!(field, column, "{column} = {value}");
            }
            other => panic!("{column} = {value}: expected Corrupt, got {other:?}"),
        }
        exec_raw(
            url,
            &format!("DELETE FROM peer_connections WHERE nostr_pubkey = '{pk}'"),
        );
    }

    // load_all reports a corrupt row too, naming it, rather than skipping or panicking.
    let bad = pubkey(300);
    insert(&bad, "state", "'active'");
    let error = db.load_all().expect_err("corrupt row");
    let message = error.to_string();
    assert!(
        matches!(&error, StorageError::Corrupt { field: "state", pubkey, .. } if *pubkey == bad),
        "{error:?}"
    );
    assert!(
        message.contains("state") && message.contains("active"),
        "{message}"
    );
}

#[test]
fn sqlite_open_creates_the_file_and_runs_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let db = Database::open(&url, 2).expect("open");
    assert_eq!(db.backend(), Backend::Sqlite);
    assert!(dir.path().join("data/node.db").exists());
    assert_eq!(
        db.load_all().unwrap(),
        vec![],
        "the table exists and is empty"
    );

    // The pool's connections switched the file to WAL (journal_mode is stored in the file).
    #[derive(QueryableByName)]
    struct JournalMode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let path = dir.path().join("data/node.db");
    let mode: JournalMode = diesel::sql_query("PRAGMA journal_mode")
        .get_result(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(mode.journal_mode, "wal");

    // Reopening keeps the data and does not re-run the migrations (they would fail).
    db.upsert_batch(&[full_record(&pubkey(1))]).unwrap();
    drop(db);
    let bare_path = path.to_str().unwrap().to_owned();
    let reopened = Database::open(&bare_path, 1).expect("reopen by bare path");
    assert_eq!(
        reopened.load(&pubkey(1)).unwrap(),
        Some(full_record(&pubkey(1)))
    );
}

#[test]
fn sqlite_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    check_round_trip(&sqlite_url(&dir));
}

#[test]
fn sqlite_reupsert_overwrites_all_but_created_at() {
    let dir = tempfile::tempdir().unwrap();
    check_reupsert_overwrites(&sqlite_url(&dir));
}

#[test]
fn sqlite_load_all_orders_by_priority_then_pubkey() {
    let dir = tempfile::tempdir().unwrap();
    check_load_all_order(&sqlite_url(&dir));
}

#[test]
fn sqlite_large_batch_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    check_large_batch_is_one_transaction(&sqlite_url(&dir));
}

#[test]
fn sqlite_corrupt_rows_are_errors_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    check_corrupt_rows(&sqlite_url(&dir));
}

#[test]
fn pg_open_runs_migrations() {
    let pg = PgTestDb::create();
    let db = Database::open(&pg.url(), 2).expect("open");
    assert_eq!(db.backend(), Backend::Postgresql);
    assert_eq!(db.load_all().unwrap(), vec![]);
    drop(db);
    // A second open finds the migrations applied.
    let db = Database::open(&pg.url(), 2).expect("reopen");
    assert_eq!(db.load_all().unwrap(), vec![]);
}

#[test]
fn pg_unreachable_database_is_a_connect_error() {
    let pg = PgTestDb::create();
    pg.allow_connections(false);
    let error = Database::open_with_timeout(&pg.url(), 1, Duration::from_millis(500))
        .expect_err("connections are refused");
    assert!(
        matches!(
            error,
            StorageError::Connect {
                backend: Backend::Postgresql,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(pg.0.name()), "{error}");
}

#[test]
fn pg_round_trip() {
    let pg = PgTestDb::create();
    check_round_trip(&pg.url());
}

#[test]
fn pg_reupsert_overwrites_all_but_created_at() {
    let pg = PgTestDb::create();
    check_reupsert_overwrites(&pg.url());
}

#[test]
fn pg_load_all_orders_by_priority_then_pubkey() {
    let pg = PgTestDb::create();
    check_load_all_order(&pg.url());
}

#[test]
fn pg_large_batch_is_one_transaction() {
    let pg = PgTestDb::create();
    check_large_batch_is_one_transaction(&pg.url());
}

#[test]
fn pg_corrupt_rows_are_errors_naming_the_column() {
    let pg = PgTestDb::create();
    check_corrupt_rows(&pg.url());
}

#[test]
fn pg_pool_replaces_terminated_connections() {
    let pg = PgTestDb::create();
    let db = Database::open(&pg.url(), 3).expect("open");
    db.upsert_batch(&[full_record(&pubkey(1))]).unwrap();
    assert!(pg.terminate_backends() > 0, "the pool held connections");
    // The next checkout finds its connection dead and opens a new one.
    db.upsert_batch(&[bare_record(&pubkey(2))]).unwrap();
    assert_eq!(db.load_all().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------
// The persistence actor
// ---------------------------------------------------------------------------------------

const PEERS: usize = 200;
const CHANGES: usize = 10_000;

/// 10 000 changes over 200 peers, then Flush: the rows are exactly every peer's last
/// snapshot, written in far fewer transactions than changes.
async fn check_batching(db: Database) {
    let actor = PersistenceActor::new(db.clone(), settings(5, 100)).start();
    let rounds = (CHANGES / PEERS) as u32;
    for round in 1..=rounds {
        for peer in 0..PEERS {
            actor.do_send(SaveRecord::unversioned(snapshot(peer, round)));
        }
        // Let the actor take the round in, as a busy node would between bursts.
        tokio::task::yield_now().await;
    }
    flush(&actor).await.expect("flush");

    let expected = sorted((0..PEERS).map(|peer| snapshot(peer, rounds)).collect());
    assert_eq!(db.load_all().unwrap(), expected);

    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!(stats.changes_received, CHANGES as u64);
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.failed_attempts, 0);
    assert_eq!(stats.transactions, db.write_transactions());
    assert!(
        stats.transactions >= 2,
        "a full batch (100 of 200 peers) is cut off: {stats:?}"
    );
    assert!(
        stats.transactions < 200,
        "{} transactions for {CHANGES} changes",
        stats.transactions
    );
    assert!(stats.records_written < CHANGES as u64, "{stats:?}");
    assert!(stats.records_written >= PEERS as u64, "{stats:?}");

    eprintln!("batching: {stats:?}");
    // A Flush with nothing new answers at once and writes nothing.
    flush(&actor).await.expect("flush");
    assert_eq!(db.write_transactions(), stats.transactions);
}

#[actix_rt::test]
async fn sqlite_actor_batches_and_coalesces() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&sqlite_url(&dir), 2).unwrap();
    check_batching(db).await;
}

#[actix_rt::test]
async fn pg_actor_batches_and_coalesces() {
    let pg = PgTestDb::create();
    let db = Database::open(&pg.url(), 2).unwrap();
    check_batching(db).await;
}

#[actix_rt::test]
async fn actor_writes_after_the_flush_interval_without_a_flush() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&sqlite_url(&dir), 2).unwrap();
    let actor = PersistenceActor::new(db.clone(), settings(60_000, 512)).start();
    actor.do_send(SaveRecord::unversioned(full_record(&pubkey(1))));
    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!(stats.pending, 1);

    // Before the interval, nothing is written however long the actor runs.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(db.write_transactions(), 0);

    tokio::time::advance(Duration::from_millis(60_001)).await;
    assert!(
        holds_within_wall_clock(Duration::from_secs(10), || db.write_transactions() == 1).await,
        "the interval elapsed but nothing was written"
    );
    assert_eq!(db.load(&pubkey(1)).unwrap(), Some(full_record(&pubkey(1))));
}

#[actix_rt::test]
async fn actor_writes_a_full_batch_without_waiting_for_the_interval() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&sqlite_url(&dir), 2).unwrap();
    let actor = PersistenceActor::new(db.clone(), settings(60_000, 10)).start();
    // Nine changes of one peer, then nine peers: below max_batch, nothing is written.
    for round in 0..9 {
        actor.do_send(SaveRecord::unversioned(snapshot(0, round)));
    }
    for peer in 1..9 {
        actor.do_send(SaveRecord::unversioned(snapshot(peer, 0)));
    }
    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!((stats.changes_received, stats.pending), (17, 9));
    assert!(
        !holds_within_wall_clock(Duration::from_millis(100), || db.write_transactions() > 0).await,
        "wrote before max_batch peers were pending"
    );

    // The tenth peer makes a full batch: written at once, long before the 60 s interval
    // (time is paused and never advanced here).
    actor.do_send(SaveRecord::unversioned(snapshot(9, 0)));
    assert!(
        holds_within_wall_clock(Duration::from_secs(10), || db.write_transactions() == 1).await,
        "a full batch was not written"
    );
    assert_eq!(db.load_all().unwrap().len(), 10);
    assert_eq!(db.load(&pubkey(0)).unwrap(), Some(snapshot(0, 8)));
}

#[test]
fn actor_writes_what_it_holds_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&sqlite_url(&dir), 2).unwrap();
    let system = actix::System::new();
    system.block_on(async {
        // A 60 s interval and a large batch: only the stop can write these.
        let actor = PersistenceActor::new(db.clone(), settings(60_000, 1_000)).start();
        for peer in 0..50 {
            actor.do_send(SaveRecord::unversioned(snapshot(peer, 1)));
            actor.do_send(SaveRecord::unversioned(snapshot(peer, 2)));
        }
        let stats = actor.send(GetStats).await.unwrap();
        assert_eq!(stats.pending, 50);
        assert_eq!(stats.transactions, 0);
    });
    assert_eq!(db.write_transactions(), 0);
    // Dropping the system stops the actor, which writes synchronously.
    drop(system);
    assert_eq!(db.write_transactions(), 1);
    let expected = sorted((0..50).map(|peer| snapshot(peer, 2)).collect());
    assert_eq!(db.load_all().unwrap(), expected);
}

#[actix_rt::test]
async fn pg_actor_loses_nothing_when_connections_are_killed() {
    let pg = PgTestDb::create();
    let db = Database::open(&pg.url(), 4).unwrap();
    let actor = PersistenceActor::new(db.clone(), settings(2, 50)).start();
    let rounds = 30u32;
    let mut kills = 0;
    for round in 1..=rounds {
        for peer in 0..PEERS {
            actor.do_send(SaveRecord::unversioned(snapshot(peer, round)));
            if peer == PEERS / 2 && round % 6 == 0 {
                // Kill while changes are flowing (a write may be in flight right now).
                kills += pg.terminate_backends();
            }
        }
        tokio::task::yield_now().await;
        if round % 10 == 0 {
            // Kill, then save and flush at once: the next write checks out a dead
            // connection, which the pool must replace (or the write must be retried).
            kills += pg.terminate_backends();
            actor.do_send(SaveRecord::unversioned(snapshot(0, round)));
            flush(&actor).await.expect("flush after a kill");
            assert_eq!(db.load(&pubkey(0)).unwrap(), Some(snapshot(0, round)));
        }
    }
    flush(&actor).await.expect("final flush");
    assert!(kills > 0, "no connection was ever terminated");

    let expected = sorted((0..PEERS).map(|peer| snapshot(peer, rounds)).collect());
    assert_eq!(db.load_all().unwrap(), expected, "a change was lost");
    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!(stats.changes_received, (PEERS * rounds as usize + 3) as u64);
    assert_eq!(stats.pending, 0);
    // Each failed attempt was retried until it committed.
    assert_eq!(stats.transactions, db.write_transactions());
    eprintln!("killed {kills} connections; {stats:?}");
}

#[actix_rt::test]
async fn pg_actor_retries_until_the_database_is_back() {
    let pg = PgTestDb::create();
    let db = Database::open_with_timeout(&pg.url(), 2, Duration::from_millis(300)).unwrap();
    // Retries 1 ms apart: a failing write is in flight nearly all the time (each attempt
    // waits 300 ms for a connection), so the newer snapshots below arrive while the batch
    // they supersede is being tried.
    let retry_fast = PersistenceSettings {
        retry_initial_delay: Duration::from_millis(1),
        retry_max_delay: Duration::from_millis(1),
        ..settings(5, 100)
    };
    let actor = PersistenceActor::new(db.clone(), retry_fast).start();
    for peer in 0..20 {
        actor.do_send(SaveRecord::unversioned(snapshot(peer, 1)));
    }
    flush(&actor).await.expect("flush while up");
    assert_eq!(db.write_transactions(), 1);

    // The database goes away.
    pg.allow_connections(false);
    pg.terminate_backends();
    for peer in 0..20 {
        actor.do_send(SaveRecord::unversioned(snapshot(peer, 2)));
    }
    let waiting = tokio::time::timeout(Duration::from_millis(1_500), actor.send(Flush)).await;
    assert!(
        waiting.is_err(),
        "Flush completed while the database was unreachable"
    );
    let start = Instant::now();
    let mut stats = actor.send(GetStats).await.unwrap();
    while stats.failed_attempts < 2 && start.elapsed() < Duration::from_secs(10) {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        stats = actor.send(GetStats).await.unwrap();
    }
    assert!(stats.failed_attempts >= 2, "{stats:?}");
    assert_eq!(stats.pending, 20, "the failed batch is kept");

    // Newer snapshots of half the peers arrive during the outage: they must win over the
    // failed batch that is put back.
    for peer in 0..10 {
        actor.do_send(SaveRecord::unversioned(snapshot(peer, 3)));
    }

    // The database comes back; the retry commits everything.
    pg.allow_connections(true);
    let flushed = tokio::time::timeout(Duration::from_secs(30), actor.send(Flush))
        .await
        .expect("Flush completes once the database is back");
    assert_eq!(flushed.unwrap(), Ok::<(), PersistenceError>(()));

    let expected = sorted(
        (0..20)
            .map(|peer| snapshot(peer, if peer < 10 { 3 } else { 2 }))
            .collect(),
    );
    assert_eq!(db.load_all().unwrap(), expected);
    let after = actor.send(GetStats).await.unwrap();
    assert_eq!(after.pending, 0);
    assert!(after.failed_attempts >= stats.failed_attempts);
    assert_eq!(after.changes_received, 50);
}

/// A snapshot from an older generation (an actor told to stop that still had work in
/// flight) never overwrites the decision of a newer one; unversioned snapshots are kept.
#[actix_rt::test]
async fn a_snapshot_of_an_older_generation_never_overwrites_a_newer_decision() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&sqlite_url(&dir), 2).unwrap();
    let actor = PersistenceActor::new(db.clone(), settings(60_000, 100)).start();
    let decided = snapshot(1, 7);
    actor.do_send(SaveRecord {
        record: snapshot(1, 1),
        generation: 4,
    });
    actor.do_send(SaveRecord {
        record: decided.clone(),
        generation: 5,
    });
    // Late: the stopped actor's last write arrives after the newer decision.
    actor.do_send(SaveRecord {
        record: snapshot(1, 3),
        generation: 4,
    });
    flush(&actor).await.unwrap();
    assert_eq!(db.load(&pubkey(1)).unwrap(), Some(decided));
    // Written already: a still later stale snapshot is dropped too.
    actor.do_send(SaveRecord {
        record: snapshot(1, 9),
        generation: 3,
    });
    actor.do_send(SaveRecord::unversioned(snapshot(2, 1)));
    flush(&actor).await.unwrap();
    assert_eq!(db.load(&pubkey(1)).unwrap(), Some(snapshot(1, 7)));
    assert_eq!(db.load(&pubkey(2)).unwrap(), Some(snapshot(2, 1)));
    let stats = actor.send(GetStats).await.unwrap();
    assert_eq!(stats.stale_saves_dropped, 2);
}
