//! # keyflow-store-sqlite
//!
//! The embedded default [`Keystore`]: one SQLite file in WAL mode, `synchronous=FULL`
//! (a committed key version survives power loss), a busy timeout so several processes
//! can share the file, and embedded migrations run at open.
//!
//! The statements, transactions and row decoding are `keyflow-store-sql`'s, shared
//! with PostgreSQL; this crate opens and migrates the file and supplies SQLite's
//! dialect ([`SqliteBackend`]): a transaction takes the database's write lock by
//! writing first, and a destroy is followed by a WAL checkpoint that erases the old
//! page ([`SqliteBackend::erase_wal`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyflow_kms::StoreError> {
//! let store = keyflow_store_sqlite::SqliteKeystore::open("keyflow-data/keyflow.db".as_ref()).await?;
//! # Ok(()) }
//! ```

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keyflow_kms::audit::StoredAudit;
use keyflow_kms::keyflow_core::to_hex;
use keyflow_kms::keystore::StoreError;
use keyflow_store_sql::rows::audit::{purposes_column, seq_column, COLUMNS as AUDIT_COLUMNS};
use keyflow_store_sql::rows::SqlRow;
use keyflow_store_sql::{db_error, Backend, Embedded, FileBackend, SqlKeystore, Tx};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};

#[doc(no_inline)]
pub use keyflow_kms::Keystore;

/// The SQLite keystore: the shared SQL keystore on [`SqliteBackend`].
pub type SqliteKeystore = SqlKeystore<SqliteBackend>;

/// The migrations, compiled in.
const MIGRATIONS: Embedded = keyflow_store_sql::keystore_migrations!("../migrations");

/// How often a destroy retries the WAL checkpoint that erases the old page, and how
/// long each try waits for readers (SQLite's busy handler) before giving up.
const CHECKPOINT_TRIES: u32 = 3;
const CHECKPOINT_BUSY_MS: u32 = 1_000;

/// Rows per audit `INSERT` statement, largest first: one statement per chunk instead
/// of one per record (each statement is a round trip to sqlx's SQLite worker thread),
/// and only five distinct statement texts for sqlx's statement cache. A journal drain
/// of ~2,000 records takes ~8 statements. 512 rows bind 4,608 values, well under
/// SQLite's limit of 32,766.
const INSERT_CHUNKS: [usize; 5] = [512, 128, 32, 8, 1];

/// SQLite under the shared SQL keystore: the pool on one database file.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// After a destroy: copies of the page holding the old material may sit in the WAL
    /// until a checkpoint; write them back (secure_delete zeroes the freed bytes) and
    /// truncate the log so the material is gone from every file. A reader that still
    /// needs the old frames makes SQLite report the checkpoint busy (the command itself
    /// succeeds): that is checked, retried a few times, and reported as an error rather
    /// than a success that did not erase.
    pub async fn erase_wal(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        sqlx::query(&format!("PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}"))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let mut erased = false;
        for _ in 0..CHECKPOINT_TRIES {
            // Columns: busy (1 when the checkpoint could not finish), WAL frames,
            // frames checkpointed.
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
            let busy: i64 = row.try_get(0).map_err(db_error)?;
            if busy == 0 {
                erased = true;
                break;
            }
        }
        sqlx::query("PRAGMA busy_timeout = 10000")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        if erased {
            Ok(())
        } else {
            tracing::error!(
                "destroy committed, but a reader kept the old page in the WAL: material not yet erased from disk"
            );
            Err(StoreError::Unavailable(format!(
                "the version is destroyed, but its old material is still in the database's WAL file: another connection kept reading it through {CHECKPOINT_TRIES} checkpoint attempts; run the destroy again once readers are done (it retries the erasure)"
            )))
        }
    }
}

#[async_trait]
impl FileBackend for SqliteBackend {
    async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The data directory holds the keystore and usually the KEK file: owner only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
                })?;
        }
        // Opening a new keystore is serialized across processes by an OS file lock
        // beside the database, held over connecting and migrating:
        // - switching a fresh file to WAL needs an exclusive lock, and SQLite answers
        //   "database is locked" at once (no busy wait) when two connections race it;
        // - sqlx does not lock SQLite during migrations, so both would create the schema.
        // The loser then finds the file in WAL mode and the schema in place.
        let lock_path = path.with_extension("db.migrate-lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Backend(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(StoreError::backend)?
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot lock {}: {e}", lock_path.display()))
            })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Freed content is overwritten with zeros, so destroyed key material does
            // not linger in free pages (crypto-shredding must really erase).
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection to a local file has nothing to lose between uses; the ping
            // sqlx would send before each checkout is a round trip to the connection's
            // worker thread (two context switches) on every transaction.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open SQLite keystore {}: {e}",
                    path.display()
                ))
            })?;
        let migrated = async { Migrator::new(MIGRATIONS).await?.run(&pool).await }.await;
        drop(lock);
        migrated.map_err(|e| {
            StoreError::Backend(format!("migrating SQLite keystore {}: {e}", path.display()))
        })?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    type Db = Sqlite;
    type Row = SqlRow<SqliteRow>;

    // SQLite locks the whole database; a transaction's first write takes the lock.
    const FOR_UPDATE: &'static str = "";
    const LOCKS_BY_WRITING: bool = true;
    const BUMP_GENERATION: &'static str =
        "UPDATE keyflow_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'";
    const POSITION_FN: &'static str = "instr";

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// `BEGIN IMMEDIATE`: the write lock before the head is read, so appenders from
    /// every process on the file queue (busy timeout) instead of sealing after the
    /// same head.
    async fn begin_audit(&self) -> Result<Tx<Self>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// In chunks of at most 128 rows per statement (`INSERT_CHUNKS`).
    async fn insert_audit(
        &self,
        tx: &mut Tx<Self>,
        mut records: &[StoredAudit],
    ) -> Result<(), StoreError> {
        while !records.is_empty() {
            let n = INSERT_CHUNKS
                .into_iter()
                .find(|n| *n <= records.len())
                .unwrap_or(1);
            let (chunk, rest) = records.split_at(n);
            records = rest;
            let mut sql = format!("INSERT INTO keyflow_audit ({AUDIT_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?)");
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(seq_column(r.seq))
                    .bind(&r.kek_id)
                    .bind(r.time)
                    .bind(&r.actor)
                    .bind(&r.operation)
                    .bind(&r.result)
                    .bind(purposes_column(&r.purposes))
                    .bind(&r.body)
                    .bind(to_hex(&r.mac));
            }
            q.execute(&mut **tx).await.map_err(db_error)?;
        }
        Ok(())
    }

    /// Erases the old page from the WAL ([`Self::erase_wal`]), also when a destroy is
    /// retried: that retries an erasure a busy reader held up.
    async fn after_destroy(&self, _again: bool) -> Result<(), StoreError> {
        self.erase_wal().await
    }
}
