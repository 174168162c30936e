//! # keyflow-store-sql
//!
//! The SQL [`Keystore`] and [`AuditStore`], written once for KeyFlow's SQLite and
//! PostgreSQL backends: every statement, transaction and compare-and-set, the row
//! MAC checks and the row decoding ([`rows`]). A backend crate supplies a [`Backend`]:
//! it connects, migrates, runs a [`Stmt`] and states its dialect — the row locks
//! (`FOR UPDATE` or writing first), the change generation's bump (PostgreSQL adds a
//! NOTIFY), the clean-up after a destroy and its change notifier.
//!
//! Statements use `$1`, `$2`, … placeholders, which both databases read (sqlx's
//! SQLite driver binds `$N` by number), and portable SQL (`CAST(… AS TEXT)`,
//! `CASE`) where the dialects' shorthands differ.
//!
//! ```no_run
//! # async fn demo<B: keyflow_store_sql::FileBackend>() -> Result<(), keyflow_kms::StoreError> {
//! use keyflow_kms::Coordination;
//! let store = keyflow_store_sql::SqlKeystore::<B>::open("keyflow-data/keyflow.db".as_ref()).await?;
//! let generation = store.generation().await?;
//! # let _ = generation; Ok(()) }
//! ```
//!
//! [`AuditStore`]: keyflow_kms::audit::AuditStore

use std::borrow::Cow;
use std::future::Future;
use std::ops::Deref;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use keyflow_kms::keystore::{StoreError, WriteOutcome};
use keyflow_kms::row_mac::{RowSealer, SealerSlot};
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

mod access;
mod audit;
mod backend;
mod coordination;
mod driver;
mod error;
mod kek;
mod keys;
mod legacy;
pub mod rows;
mod stmt;

pub use backend::{Backend, FileBackend, Tx, UrlBackend};
pub use driver::Driver;
pub use error::db_error;
pub use stmt::{bind_all, Arg, Stmt};

#[doc(no_inline)]
pub use keyflow_kms::Keystore;

/// A keystore on SQL backend `B`. Cheap to clone when `B` is (clones share the pool
/// and the row sealer). Dereferences to the backend, for what only it offers
/// (PostgreSQL's `listen`, SQLite's `erase_wal`, `close`).
#[derive(Debug, Clone)]
pub struct SqlKeystore<B> {
    backend: B,
    /// Authenticates key-version, token and policy rows (installed at unlock).
    rows: SealerSlot,
}

impl<B> Deref for SqlKeystore<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> SqlKeystore<B> {
    /// A keystore on a connected, migrated backend.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            rows: SealerSlot::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The installed row sealer (an error before the KEK is unlocked).
    pub(crate) fn sealer(&self) -> Result<Arc<RowSealer>, StoreError> {
        self.rows.get()
    }

    /// Runs `stmt` on the pool; the number of rows it changed.
    pub(crate) async fn exec(&self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
        let done = B::Db::execute_stmt(self.backend.pool(), None, &stmt)
            .await
            .map_err(db_error)?;
        Ok(B::rows_affected(&done))
    }

    /// Runs `stmt` on the pool; its first row.
    pub(crate) async fn one(&self, stmt: Stmt<'_>) -> Result<Option<B::Row>, StoreError> {
        let row = B::Db::fetch_optional_stmt(self.backend.pool(), None, &stmt)
            .await
            .map_err(db_error)?;
        Ok(row.map(B::Row::from))
    }

    /// Runs `stmt` on the pool; every row.
    pub(crate) async fn all(&self, stmt: Stmt<'_>) -> Result<Vec<B::Row>, StoreError> {
        let rows = B::Db::fetch_all_stmt(self.backend.pool(), None, &stmt)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(B::Row::from).collect())
    }

    /// Begins a transaction.
    pub(crate) async fn begin(&self) -> Result<Txn<'_, B>, StoreError> {
        let tx = self.backend.pool().begin().await.map_err(db_error)?;
        Ok(Txn {
            backend: &self.backend,
            tx,
        })
    }

    /// Begins an audit append or prune (see [`Backend::begin_audit`]).
    pub(crate) async fn begin_audit(&self) -> Result<Txn<'_, B>, StoreError> {
        let tx = self.backend.begin_audit().await.map_err(db_error)?;
        Ok(Txn {
            backend: &self.backend,
            tx,
        })
    }
}

impl<B: FileBackend> SqlKeystore<B> {
    /// Opens (creating if needed) the keystore file at `path` and brings its schema up
    /// to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        B::open(path).await.map(Self::new)
    }
}

impl<B: UrlBackend> SqlKeystore<B> {
    /// Connects to the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str, settings: &B::Settings) -> Result<Self, StoreError> {
        B::connect(url, settings).await.map(Self::new)
    }

    /// Like [`Self::connect`], from prepared options (e.g. with a `search_path`).
    pub async fn connect_with(
        options: B::Options,
        settings: &B::Settings,
    ) -> Result<Self, StoreError> {
        B::connect_with(options, settings).await.map(Self::new)
    }
}

/// An open transaction; dropped unfinished, it rolls back.
pub(crate) struct Txn<'b, B: Backend> {
    backend: &'b B,
    tx: Tx<B>,
}

impl<B: Backend> Txn<'_, B> {
    /// Runs `stmt`; the number of rows it changed.
    pub(crate) async fn exec(&mut self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
        self.try_exec(stmt).await.map_err(db_error)
    }

    /// Runs `stmt`, keeping the driver's error (to tell a constraint violation).
    pub(crate) async fn try_exec(&mut self, stmt: Stmt<'_>) -> Result<u64, sqlx::Error> {
        let done = B::Db::execute_stmt(self.backend.pool(), Some(&mut self.tx), &stmt).await?;
        Ok(B::rows_affected(&done))
    }

    /// Runs `stmt`; its first row.
    pub(crate) async fn one(&mut self, stmt: Stmt<'_>) -> Result<Option<B::Row>, StoreError> {
        let row = B::Db::fetch_optional_stmt(self.backend.pool(), Some(&mut self.tx), &stmt)
            .await
            .map_err(db_error)?;
        Ok(row.map(B::Row::from))
    }

    /// Runs `stmt`; every row.
    pub(crate) async fn all(&mut self, stmt: Stmt<'_>) -> Result<Vec<B::Row>, StoreError> {
        let rows = B::Db::fetch_all_stmt(self.backend.pool(), Some(&mut self.tx), &stmt)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(B::Row::from).collect())
    }

    /// Bumps the change generation (see [`Backend::BUMP_GENERATION`]).
    pub(crate) async fn bump(&mut self) -> Result<(), StoreError> {
        self.exec(Stmt::new(B::BUMP_GENERATION)).await.map(drop)
    }

    /// The driver's transaction (for [`Backend::insert_audit`]).
    pub(crate) fn raw(&mut self) -> &mut Tx<B> {
        &mut self.tx
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_error)
    }

    /// Rolls back.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(db_error)
    }
}

/// Rolls `tx` back: a precondition did not hold, nothing is written.
pub(crate) async fn conflict<B: Backend>(tx: Txn<'_, B>) -> Result<WriteOutcome, StoreError> {
    tx.rollback().await?;
    Ok(WriteOutcome::Conflict)
}

/// The keystore's migrations from a backend's `migrations/` directory, compiled in
/// ([`Embedded`]): one schema history, the same versions and descriptions on every
/// backend, each in its own SQL. `$dir` is relative to the file invoking the macro.
#[macro_export]
macro_rules! keystore_migrations {
    ($dir:literal) => {
        $crate::Embedded(&[
            (
                1,
                "key versions",
                include_str!(concat!($dir, "/0001_key_versions.sql")),
            ),
            (
                2,
                "api tokens",
                include_str!(concat!($dir, "/0002_api_tokens.sql")),
            ),
            (
                3,
                "lifecycle",
                include_str!(concat!($dir, "/0003_lifecycle.sql")),
            ),
            (4, "audit", include_str!(concat!($dir, "/0004_audit.sql"))),
            (
                5,
                "audit anchor",
                include_str!(concat!($dir, "/0005_audit_anchor.sql")),
            ),
            (
                6,
                "audit journal",
                include_str!(concat!($dir, "/0006_audit_journal.sql")),
            ),
            (
                7,
                "trust boundaries",
                include_str!(concat!($dir, "/0007_trust_boundaries.sql")),
            ),
            (
                8,
                "legacy keys",
                include_str!(concat!($dir, "/0008_legacy_keys.sql")),
            ),
        ])
    };
}

/// Embedded migrations, as `(version, description, sql)`: a backend compiles its
/// migration files in ([`keystore_migrations!`]) so the tool needs no files beside it.
#[derive(Debug, Clone, Copy)]
pub struct Embedded(pub &'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send>>
    {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
