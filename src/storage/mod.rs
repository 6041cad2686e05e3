//! Durable storage of peer records through diesel, on PostgreSQL (the production store) or
//! SQLite (the embedded default, so the node runs on a fresh machine).
//!
//! What lives here:
//! - one portable [`schema`] and two migration trees with matching names
//!   (`migrations/postgresql/`, `migrations/sqlite/`), embedded in the binary and run by
//!   [`Database::open`];
//! - [`DbConnection`], a `#[derive(diesel::MultiConnection)]` enum over both connections,
//!   on an r2d2 pool. Queries are written once and run on the concrete connection of each
//!   arm (the `on_backend!` macro, as vaultwarden's `db_run!`): the derived multi-backend
//!   has no `ON CONFLICT` upsert, and each concrete backend does;
//! - [`Database`], the small API the rest of the node uses: upsert a batch of records in one
//!   transaction, load them back. Rows that cannot be mapped back are reported as
//!   [`StorageError::Corrupt`], never a panic.

mod models;
pub mod schema;
#[cfg(feature = "test-support")]
pub mod scratch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{CustomizeConnection, R2D2Connection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use r2d2::{ManageConnection, Pool, PooledConnection};

use crate::lifecycle::record::{PeerRecord, PeerTransition};
pub use models::storable;
use models::{PeerConnectionRow, PeerConnectionWrite, TransitionRow, TransitionWrite};
use schema::{peer_connections, peer_transitions};

/// The PostgreSQL migrations, compiled in.
pub const POSTGRESQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgresql");
/// The SQLite migrations, compiled in; same names as the PostgreSQL ones.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long [`Database::open`] and each write wait for a pooled connection before giving up
/// (r2d2's default is 30 s, too long for a writer that retries with its own backoff).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per `INSERT … ON CONFLICT` statement: 500 rows × 20 bound columns = 10 000
/// parameters, under both SQLite's (32 766) and PostgreSQL's (65 535) limits.
const UPSERT_CHUNK_ROWS: usize = 500;

/// A connection to either backend. The variant is chosen from the URL by
/// [`Backend::from_url`], never by trial (the derived `establish` tries each backend in turn
/// and hides the real error, so the pool uses its own manager).
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs the same diesel code on the concrete connection inside a [`DbConnection`].
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            DbConnection::Postgresql($c) => $body,
            DbConnection::Sqlite($c) => $body,
        }
    };
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgresql,
    Sqlite,
}

impl Backend {
    /// `postgres://…` / `postgresql://…` → PostgreSQL (URL kept whole); `sqlite://PATH` or a
    /// bare path → SQLite, with the path returned without the scheme.
    pub fn from_url(url: &str) -> (Backend, String) {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgresql, url.to_owned())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            (Backend::Sqlite, path.to_owned())
        } else {
            (Backend::Sqlite, url.to_owned())
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgresql => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        })
    }
}

/// What went wrong in the storage layer; each message says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the {backend} database at {url}: {reason}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        backend: Backend,
        reason: String,
    },
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("running the {backend} migrations on {url} failed: {reason}")]
    Migration {
        url: String,
        backend: Backend,
        reason: String,
    },
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database query failed while {action}: {source}")]
    Query {
        action: &'static str,
        source: diesel::result::Error,
    },
    #[error("the stored row of peer {pubkey} is corrupt: column `{field}` holds `{value}`")]
    Corrupt {
        pubkey: String,
        field: &'static str,
        value: String,
    },
    #[error("the database task did not finish: {0}")]
    Task(String),
    #[error("peer {pubkey}: `{field}` = {value} cannot be stored")]
    OutOfRange {
        pubkey: String,
        field: &'static str,
        value: String,
    },
}

/// What one [`Database::upsert_batch`] did.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Rows written (one per distinct peer in the batch).
    pub written: usize,
    /// Records left out because a value cannot be stored; every other record was written.
    pub unwritable: Vec<Unwritable>,
}

/// A record [`Database::upsert_batch`] could not turn into a row.
#[derive(Debug)]
pub struct Unwritable {
    pub nostr_pubkey: String,
    /// Always [`StorageError::OutOfRange`], naming the column and the value.
    pub error: StorageError,
}

/// The pool's connection factory: establishes the backend the URL names, and reports that
/// backend's own error when it cannot.
#[derive(Debug)]
struct DbConnectionManager {
    backend: Backend,
    /// The PostgreSQL URL, or the SQLite file path.
    target: String,
}

impl ManageConnection for DbConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let conn = match self.backend {
            Backend::Postgresql => {
                PgConnection::establish(&self.target).map(DbConnection::Postgresql)
            }
            Backend::Sqlite => SqliteConnection::establish(&self.target).map(DbConnection::Sqlite),
        };
        conn.map_err(diesel::r2d2::Error::ConnectionError)
    }

    /// Run on every checkout (`test_on_check_out`), so a PostgreSQL connection whose server
    /// side was terminated is replaced instead of failing the next write.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Per-connection SQLite settings, applied to every connection the pool opens: WAL so
/// readers do not block the writer, a busy timeout instead of immediate "database is
/// locked", FULL sync (a commit is on disk when it returns, even across a power loss: the
/// channel transaction hash is broadcast only after its commit), foreign keys on. Writes
/// are batched, so the sync costs one fsync per batch, not per change.
#[derive(Debug, Clone, Copy)]
struct SqlitePragmas;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(conn) = conn {
            // busy_timeout first: switching to WAL needs a lock another new connection may hold.
            conn.batch_execute(
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// The node's database: a connection pool plus the backend it talks to. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool<DbConnectionManager>,
    backend: Backend,
    /// Committed `upsert_batch` transactions, shared by every clone (tests and the benchmark
    /// read it to see how well writes were batched).
    write_transactions: Arc<AtomicU64>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("write_transactions", &self.write_transactions())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens `url` with a pool of `pool_size` connections, creating the SQLite file (and its
    /// directory) if missing, and runs the pending migrations.
    pub fn open(url: &str, pool_size: u32) -> Result<Database, StorageError> {
        Self::open_with_timeout(url, pool_size, DEFAULT_CONNECT_TIMEOUT)
    }

    /// As [`Database::open`], waiting at most `connect_timeout` for a connection (at open and
    /// on every later checkout).
    pub fn open_with_timeout(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
    ) -> Result<Database, StorageError> {
        let (backend, target) = Backend::from_url(url);
        let shown_url = redact_url(url);
        if backend == Backend::Sqlite {
            if let Some(dir) = Path::new(&target).parent() {
                if !dir.as_os_str().is_empty() && !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
            }
        }
        let manager = DbConnectionManager { backend, target };
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(1))
            .test_on_check_out(true)
            .connection_timeout(connect_timeout)
            .connection_customizer(Box::new(SqlitePragmas))
            .build(manager)
            .map_err(|e| StorageError::Connect {
                url: shown_url.clone(),
                backend,
                reason: e.to_string(),
            })?;

        let mut conn = pool.get().map_err(|e| StorageError::Connect {
            url: shown_url.clone(),
            backend,
            reason: e.to_string(),
        })?;
        let migrated = match &mut *conn {
            DbConnection::Postgresql(c) => {
                c.run_pending_migrations(POSTGRESQL_MIGRATIONS).map(drop)
            }
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(drop),
        };
        migrated.map_err(|e| StorageError::Migration {
            url: shown_url,
            backend,
            reason: e.to_string(),
        })?;
        drop(conn);

        Ok(Database {
            pool,
            backend,
            write_transactions: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Upserts every record (keyed by `nostr_pubkey`; every column overwritten except `id`
    /// and `created_at`) in ONE transaction: all are written or none. If a peer appears more
    /// than once, its last record wins.
    ///
    /// A record holding a value no row can (a timestamp past `i64`) is left out and
    /// returned in [`BatchWrite::unwritable`], naming the peer and the column: one bad
    /// record never stops every other peer's write.
    pub fn upsert_batch(&self, records: &[PeerRecord]) -> Result<BatchWrite, StorageError> {
        self.write_batch(records, &[], 0)
    }

    /// [`Database::upsert_batch`], with `transitions` appended to the peers' histories in
    /// the same transaction; each peer given a transition keeps only its newest
    /// `keep_per_peer` rows of history.
    pub fn write_batch(
        &self,
        records: &[PeerRecord],
        transitions: &[PeerTransition],
        keep_per_peer: usize,
    ) -> Result<BatchWrite, StorageError> {
        if records.is_empty() && transitions.is_empty() {
            return Ok(BatchWrite::default());
        }
        // One row per peer (PostgreSQL refuses to update a row twice in one statement), in
        // key order so concurrent writers take row locks in the same order.
        let mut latest: BTreeMap<&str, &PeerRecord> = BTreeMap::new();
        for record in records {
            latest.insert(&record.nostr_pubkey, record);
        }
        let mut outcome = BatchWrite::default();
        let mut rows = Vec::with_capacity(latest.len());
        for record in latest.into_values() {
            match PeerConnectionWrite::from_record(record) {
                Ok(row) => rows.push(row),
                Err(error) => outcome.unwritable.push(Unwritable {
                    nostr_pubkey: record.nostr_pubkey.clone(),
                    error,
                }),
            }
        }
        outcome.written = rows.len();
        if rows.is_empty() && transitions.is_empty() {
            return Ok(outcome);
        }
        let history: Vec<TransitionWrite> = transitions.iter().map(TransitionWrite::from).collect();
        let mut trimmed: Vec<&str> = transitions
            .iter()
            .map(|t| t.nostr_pubkey.as_str())
            .collect();
        trimmed.sort_unstable();
        trimmed.dedup();
        let keep = i64::try_from(keep_per_peer).unwrap_or(i64::MAX);

        let mut conn = self.connection()?;
        on_backend!(&mut *conn, c => c.transaction::<_, diesel::result::Error, _>(|c| {
            use diesel::upsert::excluded;
            use schema::peer_connections::dsl::*;
            for chunk in rows.chunks(UPSERT_CHUNK_ROWS) {
                diesel::insert_into(peer_connections)
                    .values(chunk)
                    .on_conflict(nostr_pubkey)
                    .do_update()
                    .set((
                        ilp_address.eq(excluded(ilp_address)),
                        endpoint.eq(excluded(endpoint)),
                        base_address.eq(excluded(base_address)),
                        state.eq(excluded(state)),
                        desired.eq(excluded(desired)),
                        followed.eq(excluded(followed)),
                        subscribers.eq(excluded(subscribers)),
                        priority.eq(excluded(priority)),
                        channel_id.eq(excluded(channel_id)),
                        channel_tx_hash.eq(excluded(channel_tx_hash)),
                        channel_opening_since.eq(excluded(channel_opening_since)),
                        last_heartbeat.eq(excluded(last_heartbeat)),
                        rtt_us.eq(excluded(rtt_us)),
                        reconnect_attempts.eq(excluded(reconnect_attempts)),
                        next_attempt_at.eq(excluded(next_attempt_at)),
                        failure_reason.eq(excluded(failure_reason)),
                        subscription_ids.eq(excluded(subscription_ids)),
                        last_event_at.eq(excluded(last_event_at)),
                        last_event_ids.eq(excluded(last_event_ids)),
                        updated_at.eq(excluded(updated_at)),
                    ))
                    .execute(c)?;
            }
            for chunk in history.chunks(UPSERT_CHUNK_ROWS) {
                diesel::insert_into(peer_transitions::table)
                    .values(chunk)
                    .execute(c)?;
            }
            for pubkey in &trimmed {
                let oldest_kept: Option<i64> = peer_transitions::table
                    .filter(peer_transitions::nostr_pubkey.eq(*pubkey))
                    .order(peer_transitions::id.desc())
                    .select(peer_transitions::id)
                    .offset(keep)
                    .first(c)
                    .optional()?;
                if let Some(cut) = oldest_kept {
                    diesel::delete(
                        peer_transitions::table
                            .filter(peer_transitions::nostr_pubkey.eq(*pubkey))
                            .filter(peer_transitions::id.le(cut)),
                    )
                    .execute(c)?;
                }
            }
            Ok(())
        }))
        .map_err(|source| StorageError::Query {
            action: "upserting a batch of peer records",
            source,
        })?;
        self.write_transactions.fetch_add(1, Ordering::SeqCst);
        Ok(outcome)
    }

    /// Every stored peer, ordered by priority (best first), then by `nostr_pubkey` in byte
    /// order. Sorted here rather than by `ORDER BY`, so the order does not depend on a
    /// PostgreSQL collation.
    pub fn load_all(&self) -> Result<Vec<PeerRecord>, StorageError> {
        let mut conn = self.connection()?;
        let rows: Vec<PeerConnectionRow> = on_backend!(&mut *conn, c => {
            peer_connections::table
                .select(PeerConnectionRow::as_select())
                .load(c)
        })
        .map_err(|source| StorageError::Query {
            action: "loading every peer record",
            source,
        })?;
        drop(conn);
        let mut records = rows
            .into_iter()
            .map(PeerConnectionRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.nostr_pubkey.cmp(&b.nostr_pubkey))
        });
        Ok(records)
    }

    /// The stored record of one peer, if any.
    pub fn load(&self, nostr_pubkey: &str) -> Result<Option<PeerRecord>, StorageError> {
        let mut conn = self.connection()?;
        let row: Option<PeerConnectionRow> = on_backend!(&mut *conn, c => {
            peer_connections::table
                .filter(peer_connections::nostr_pubkey.eq(nostr_pubkey))
                .select(PeerConnectionRow::as_select())
                .first(c)
                .optional()
        })
        .map_err(|source| StorageError::Query {
            action: "loading one peer record",
            source,
        })?;
        row.map(PeerConnectionRow::into_record).transpose()
    }

    /// The newest `limit` transitions of one peer, newest first.
    pub fn history(
        &self,
        nostr_pubkey: &str,
        limit: usize,
    ) -> Result<Vec<PeerTransition>, StorageError> {
        let mut conn = self.connection()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<TransitionRow> = on_backend!(&mut *conn, c => {
            peer_transitions::table
                .filter(peer_transitions::nostr_pubkey.eq(nostr_pubkey))
                .order(peer_transitions::id.desc())
                .limit(limit)
                .select(TransitionRow::as_select())
                .load(c)
        })
        .map_err(|source| StorageError::Query {
            action: "loading a peer's history",
            source,
        })?;
        rows.into_iter()
            .map(TransitionRow::into_transition)
            .collect()
    }

    /// Committed [`Database::upsert_batch`] transactions so far, over every clone.
    pub fn write_transactions(&self) -> u64 {
        self.write_transactions.load(Ordering::SeqCst)
    }

    fn connection(&self) -> Result<PooledConnection<DbConnectionManager>, StorageError> {
        Ok(self.pool.get()?)
    }
}

/// `url` with the password of a `scheme://user:password@host` URL replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let authority_end = url[rest_start..]
        .find('/')
        .map_or(url.len(), |i| rest_start + i);
    let Some(at) = url[rest_start..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let at = rest_start + at;
    match url[rest_start..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..rest_start + colon + 1], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_commits_are_on_disk_when_they_return() {
        #[derive(diesel::QueryableByName)]
        struct Synchronous {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            synchronous: i32,
        }
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("n.db").to_str().unwrap(), 1).unwrap();
        let mut conn = db.pool.get().unwrap();
        let DbConnection::Sqlite(conn) = &mut *conn else {
            panic!("a file path opens SQLite")
        };
        let rows: Vec<Synchronous> = diesel::sql_query("PRAGMA synchronous").load(conn).unwrap();
        // 2 = FULL: the WAL is synced at every commit, not only at checkpoints.
        assert_eq!(rows[0].synchronous, 2);
    }

    #[test]
    fn url_picks_the_backend() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            (Backend::Postgresql, "postgres://u@h/db".into())
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").0,
            Backend::Postgresql
        );
        assert_eq!(
            Backend::from_url("sqlite:///var/lib/n.db"),
            (Backend::Sqlite, "/var/lib/n.db".into())
        );
        assert_eq!(
            Backend::from_url("sqlite://n.db"),
            (Backend::Sqlite, "n.db".into())
        );
        assert_eq!(
            Backend::from_url("data/n.db"),
            (Backend::Sqlite, "data/n.db".into())
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://user:secret@host:5432/db"),
            "postgres://user:***@host:5432/db"
        );
        assert_eq!(
            redact_url("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        assert_eq!(redact_url("/tmp/a:b@c.db"), "/tmp/a:b@c.db");
    }
}
