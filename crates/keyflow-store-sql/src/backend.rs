//! What a SQL backend supplies: its driver and pool (statements run through
//! [`Driver`], written once for both), and the few places where its SQL differs (the
//! dialect).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use keyflow_kms::audit::StoredAudit;
use keyflow_kms::keystore::StoreError;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::Notify;

use crate::driver::Driver;
use crate::rows::Columns;

/// A transaction of backend `B`.
pub type Tx<B> = Transaction<'static, <B as Backend>::Db>;

/// A SQL database the keystore runs on. The statements, the transactions and the row
/// decoding live in this crate, written once; a backend connects, migrates, names its
/// driver ([`Driver`] runs the statements) and says where its SQL differs.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The sqlx driver (every driver that binds [`Stmt`](crate::Stmt)'s values is a
    /// [`Driver`]).
    type Db: Driver;
    /// A fetched row.
    type Row: Columns + Send + Sync + From<<Self::Db as Database>::Row>;

    /// The connection pool.
    fn pool(&self) -> &Pool<Self::Db>;

    /// How many rows a statement changed (sqlx's drivers each have their own result
    /// type, with no common accessor).
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    // --- The dialect ---

    /// Appended to a `SELECT` whose rows the transaction goes on to change: `" FOR
    /// UPDATE"` where rows are locked one by one (PostgreSQL), `""` where the whole
    /// database is (SQLite).
    const FOR_UPDATE: &'static str;

    /// Whether a transaction takes its lock by writing (SQLite: a read-then-write
    /// transaction must write first, or two of them deadlock upgrading their read locks).
    /// Where this is `false`, reads that matter lock their rows with [`Self::FOR_UPDATE`].
    const LOCKS_BY_WRITING: bool;

    /// Bumps the change generation; run inside every transaction that changes a key
    /// version (and, where the backend has one, announces the new generation to
    /// other processes on commit).
    const BUMP_GENERATION: &'static str;

    /// The SQL function `f(haystack, needle)` giving the 1-based position of `needle`
    /// in `haystack` (0 when absent): an exact, case-sensitive substring test without
    /// `LIKE`'s wildcards.
    const POSITION_FN: &'static str;

    /// Begins the transaction of an audit append or prune. Appends and prunes queue on
    /// the chain head: by the database lock taken at once where locks are per database
    /// (SQLite `BEGIN IMMEDIATE`), by the head row's lock ([`Self::FOR_UPDATE`]) where
    /// they are per row.
    async fn begin_audit(&self) -> Result<Tx<Self>, sqlx::Error> {
        self.pool().begin().await
    }

    /// Inserts sealed audit records inside `tx`, in as few statements as the backend can.
    async fn insert_audit(
        &self,
        tx: &mut Tx<Self>,
        records: &[StoredAudit],
    ) -> Result<(), StoreError>;

    /// Runs after a key version was destroyed (committed), to get the old material out
    /// of the database files where the backend can. `again`: the version had been
    /// destroyed already (a destroy retried, e.g. after an erasure a reader held up).
    async fn after_destroy(&self, again: bool) -> Result<(), StoreError>;

    /// A signal raised when another process may have changed a key (see
    /// [`keyflow_kms::Coordination::change_notifier`]). `None`: caches poll the generation.
    fn change_notifier(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// A backend opened from a file path (SQLite).
#[async_trait]
pub trait FileBackend: Backend + Sized {
    /// Opens (creating if needed) the database at `path` and migrates it.
    async fn open(path: &Path) -> Result<Self, StoreError>;
}

/// A backend reached over a connection URL (PostgreSQL).
#[async_trait]
pub trait UrlBackend: Backend + Sized {
    /// Pool settings.
    type Settings: Sync;
    /// Prepared connect options (the alternative to a URL).
    type Options: Send;

    /// Connects to `url` and migrates the database.
    async fn connect(url: &str, settings: &Self::Settings) -> Result<Self, StoreError>;

    /// Connects with prepared `options` and migrates the database.
    async fn connect_with(
        options: Self::Options,
        settings: &Self::Settings,
    ) -> Result<Self, StoreError>;
}
