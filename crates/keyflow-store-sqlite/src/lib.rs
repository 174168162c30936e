//! # keyflow-store-sqlite
//!
//! The embedded default [`Keystore`]: one SQLite file in WAL mode, `synchronous=FULL`
//! (a committed key version survives power loss), a busy timeout so several processes
//! can share the file, and embedded migrations run at open.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyflow_kms::StoreError> {
//! let store = keyflow_store_sqlite::SqliteKeystore::open("keyflow-data/keyflow.db".as_ref()).await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use keyflow_kms::access::TokenRecord;
use keyflow_kms::keystore::{CreateOutcome, Keystore, RotateOutcome, StoreError, WriteOutcome};
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
use keyflow_kms::row_mac::{RowSealer, SealerSlot};
use keyflow_kms::rows::{self, Columns};
use keyflow_kms::{KeyVersion, Purpose};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

mod audit;
mod legacy;
mod lifecycle;
use lifecycle::{bump, check_kek};

/// The migrations, embedded in the binary so the tool needs no files beside it.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send>>
    {
        Box::pin(async {
            let m = |version, description, sql| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            };
            Ok(vec![
                m(
                    1,
                    "key versions",
                    include_str!("../migrations/0001_key_versions.sql"),
                ),
                m(
                    2,
                    "api tokens",
                    include_str!("../migrations/0002_api_tokens.sql"),
                ),
                m(
                    3,
                    "lifecycle",
                    include_str!("../migrations/0003_lifecycle.sql"),
                ),
                m(4, "audit", include_str!("../migrations/0004_audit.sql")),
                m(
                    5,
                    "audit anchor",
                    include_str!("../migrations/0005_audit_anchor.sql"),
                ),
                m(
                    6,
                    "audit journal",
                    include_str!("../migrations/0006_audit_journal.sql"),
                ),
                m(
                    7,
                    "trust boundaries",
                    include_str!("../migrations/0007_trust_boundaries.sql"),
                ),
                m(
                    8,
                    "legacy keys",
                    include_str!("../migrations/0008_legacy_keys.sql"),
                ),
            ])
        })
    }
}

/// The SQLite keystore.
#[derive(Debug, Clone)]
pub struct SqliteKeystore {
    pool: SqlitePool,
    /// Authenticates key-version, token and policy rows (installed at unlock).
    rows: SealerSlot,
}

pub(crate) const COLUMNS: &str =
    "purpose, version, status, algorithm, wrapped_key, kek_id, created_at, \
     status_changed_at, encryptions, revoked_reason, row_mac";

/// Bumps the change generation; called inside every transaction that changes a key.
const BUMP_GENERATION: &str =
    "UPDATE keyflow_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Reads a row's columns for the shared decoders in [`keyflow_kms::rows`].
pub(crate) struct Cols<'a>(pub(crate) &'a SqliteRow);

impl Columns for Cols<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.0.try_get(column).map_err(StoreError::backend)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.0.try_get(column).map_err(StoreError::backend)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.0.try_get(column).map_err(StoreError::backend)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.0.try_get(column).map_err(StoreError::backend)
    }
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.try_get(column).map_err(StoreError::backend)
    }
}

pub(crate) fn record(row: &SqliteRow, sealer: &RowSealer) -> Result<KeyVersionRecord, StoreError> {
    rows::verified_version(&Cols(row), sealer)
}

pub(crate) const TOKEN_COLUMNS: &str =
    "id, secret_hash, role, purposes, name, created_at, expires_at, revoked_at, row_mac";

impl SqliteKeystore {
    /// Opens (creating if needed) the keystore file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The data directory holds the keystore and usually the KEK file: owner only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
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
            .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(StoreError::backend)?
            .map_err(|e| StoreError(format!("cannot lock {}: {e}", lock_path.display())))?;
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
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError(format!(
                    "cannot open SQLite keystore {}: {e}",
                    path.display()
                ))
            })?;
        let migrated = async { Migrator::new(Embedded).await?.run(&pool).await }.await;
        drop(lock);
        migrated.map_err(|e| {
            StoreError(format!("migrating SQLite keystore {}: {e}", path.display()))
        })?;
        Ok(Self {
            pool,
            rows: SealerSlot::default(),
        })
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The installed row sealer (an error before the KEK is unlocked).
    pub(crate) fn sealer(&self) -> Result<std::sync::Arc<RowSealer>, StoreError> {
        self.rows.get()
    }

    async fn insert(
        &self,
        conn: &mut sqlx::SqliteConnection,
        r: &KeyVersionRecord,
        only_if_new_purpose: bool,
        sealer: &RowSealer,
    ) -> Result<u64, sqlx::Error> {
        let guard = if only_if_new_purpose {
            " WHERE NOT EXISTS (SELECT 1 FROM key_versions WHERE purpose = ?1)"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO key_versions ({COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11{guard}"
        );
        let done = sqlx::query(&sql)
            .bind(r.purpose.as_str())
            .bind(i64::from(r.version.get()))
            .bind(r.status.as_str())
            .bind(&r.algorithm)
            .bind(r.wrapped_key.as_deref())
            .bind(&r.kek_id)
            .bind(r.created_at)
            .bind(r.status_changed_at)
            .bind(rows::count_column(r.encryptions))
            .bind(r.revoked_reason.as_deref())
            .bind(&sealer.version_mac(r)[..])
            .execute(conn)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Keystore for SqliteKeystore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM keyflow_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO keyflow_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError("metadata vanished after insert".into()))
    }

    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM key_versions WHERE (?1 IS NULL OR purpose = ?1) \
             AND (?2 IS NULL OR status = ?2) ORDER BY purpose, version"
        );
        let sealer = self.sealer()?;
        let rows = sqlx::query(&sql)
            .bind(filter.purpose.as_ref().map(|p| p.as_str()))
            .bind(filter.status.map(|s| s.as_str()))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        rows::trusted_versions(rows.iter().map(Cols), &sealer)
    }

    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM key_versions WHERE purpose = ?1 AND version = ?2");
        let sealer = self.sealer()?;
        let row = sqlx::query(&sql)
            .bind(purpose.as_str())
            .bind(i64::from(version.get()))
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        row.as_ref().map(|r| record(r, &sealer)).transpose()
    }

    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM key_versions WHERE purpose = ?1 AND status = 'active'");
        let sealer = self.sealer()?;
        let row = sqlx::query(&sql)
            .bind(purpose.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        row.as_ref().map(|r| record(r, &sealer)).transpose()
    }

    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        if first.version != KeyVersion::FIRST || first.status != KeyStatus::Active {
            return Err(StoreError("create_first takes version 1, active".into()));
        }
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // Writing first takes SQLite's write lock at once (no lock upgrade deadlock).
        bump(&mut tx).await?;
        check_kek(&mut tx, std::slice::from_ref(first)).await?;
        let outcome = match self.insert(&mut tx, first, true, &sealer).await {
            Ok(1) => CreateOutcome::Created,
            Ok(_) => CreateOutcome::AlreadyExists,
            Err(e) if is_unique_violation(&e) => CreateOutcome::AlreadyExists,
            Err(e) => return Err(StoreError::backend(e)),
        };
        if outcome == CreateOutcome::Created {
            tx.commit().await.map_err(StoreError::backend)?;
        } else {
            tx.rollback().await.map_err(StoreError::backend)?;
        }
        Ok(outcome)
    }

    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        let Some(prev) = next.version.get().checked_sub(1).filter(|v| *v >= 1) else {
            return Ok(RotateOutcome::Conflict);
        };
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // The first statement writes, so SQLite takes the write lock at once: no
        // read-then-upgrade deadlock between concurrent rotations.
        bump(&mut tx).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM key_versions WHERE purpose = ?1 AND version = ?2 AND status = 'active'"
        );
        let current = sqlx::query(&sql)
            .bind(next.purpose.as_str())
            .bind(i64::from(prev))
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let Some(current) = current else {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(RotateOutcome::Conflict);
        };
        // A forged "active" row is never demoted into a sealed "rotating" one.
        let mut demoted = record(&current, &sealer)?;
        demoted.status = KeyStatus::Rotating;
        demoted.status_changed_at = now;
        sqlx::query(
            "UPDATE key_versions SET status = 'rotating', status_changed_at = ?1, row_mac = ?2 \
             WHERE purpose = ?3 AND version = ?4 AND status = 'active'",
        )
        .bind(now)
        .bind(&sealer.version_mac(&demoted)[..])
        .bind(next.purpose.as_str())
        .bind(i64::from(prev))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        check_kek(&mut tx, std::slice::from_ref(next)).await?;
        match self.insert(&mut tx, next, false, &sealer).await {
            Ok(1) => {}
            Ok(_) => {
                tx.rollback().await.map_err(StoreError::backend)?;
                return Ok(RotateOutcome::Conflict);
            }
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await.map_err(StoreError::backend)?;
                return Ok(RotateOutcome::Conflict);
            }
            Err(e) => return Err(StoreError::backend(e)),
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(RotateOutcome::Rotated)
    }

    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE key_versions SET encryptions = encryptions + ?1 WHERE purpose = ?2 AND version = ?3")
            .bind(rows::count_column(count))
            .bind(purpose.as_str())
            .bind(i64::from(version.get()))
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn adjust_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        delta: i64,
    ) -> Result<Option<u64>, StoreError> {
        let total: Option<i64> = sqlx::query_scalar(
            "UPDATE key_versions SET encryptions = MAX(encryptions + ?1, 0) \
             WHERE purpose = ?2 AND version = ?3 RETURNING encryptions",
        )
        .bind(delta)
        .bind(purpose.as_str())
        .bind(i64::from(version.get()))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(total.map(|n| u64::try_from(n).unwrap_or(0)))
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let sealer = self.sealer()?;
        sqlx::query(&format!(
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))
        .bind(&t.id)
        .bind(&t.secret_hash[..])
        .bind(t.role.as_str())
        .bind(rows::purposes_column(&t.purposes))
        .bind(&t.name)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(&sealer.token_mac(t)[..])
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sealer = self.sealer()?;
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        rows::trusted_tokens(rows.iter().map(Cols), &sealer)
    }

    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // Writing first takes the write lock before the read (no upgrade deadlock).
        sqlx::query("UPDATE api_tokens SET revoked_at = revoked_at WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1 AND revoked_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(false);
        };
        // Revoking re-seals the row, so a forged row is refused rather than laundered
        // (a forged token is already unusable: listing leaves it out).
        let mut revoked = rows::verified_token(&Cols(&row), &sealer)?;
        revoked.revoked_at = Some(now);
        sqlx::query("UPDATE api_tokens SET revoked_at = ?1, row_mac = ?2 WHERE id = ?3")
            .bind(now)
            .bind(&sealer.token_mac(&revoked)[..])
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(true)
    }

    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        self.policy(purpose).await
    }

    async fn set_policy(&self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError> {
        self.put_policy(purpose, policy).await
    }

    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        self.policies().await
    }

    async fn set_status(&self, change: &StatusChange) -> Result<StatusOutcome, StoreError> {
        self.change_status(change).await
    }

    async fn insert_versions(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.insert_all(records).await
    }

    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError> {
        self.rewrap(meta_key, old_kek, new_kek, keys, new_rows)
            .await
    }

    async fn remember_nonce(
        &self,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM keyflow_nonces WHERE expires_at < ?1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        // The primary key decides between instances racing with one nonce.
        let done = sqlx::query(
            "INSERT INTO keyflow_nonces (nonce, expires_at) VALUES (?1, ?2) \
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(done.rows_affected() == 1)
    }

    fn install_row_sealer(&self, sealer: std::sync::Arc<RowSealer>) {
        self.rows.install(sealer);
    }

    fn row_sealer(&self) -> Option<std::sync::Arc<RowSealer>> {
        self.rows.current()
    }

    async fn seal_legacy_rows(&self) -> Result<u64, StoreError> {
        self.seal_legacy().await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        self.lease(name, holder, now, ttl_ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.unlease(name, holder).await
    }

    async fn generation(&self) -> Result<i64, StoreError> {
        self.current_generation().await
    }

    async fn legacy_keys(&self) -> Result<Vec<keyflow_kms::legacy::LegacyKeyRecord>, StoreError> {
        self.legacy_list().await
    }

    async fn import_legacy(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[keyflow_kms::legacy::LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.legacy_import(versions, keys).await
    }
}
