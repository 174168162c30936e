//! # keyflow-store-postgres
//!
//! The PostgreSQL [`Keystore`]: several stateless `keyflow serve` instances share one
//! database. Same schema shape and semantics as the SQLite keystore (the shared
//! contract suite, `keyflow-keystore-contract`, runs against both), plus what many
//! instances need:
//!
//! - **Migrations under `pg_advisory_lock`**, on a dedicated connection, so instances
//!   starting together against an empty database do not race to create the schema.
//! - **A change generation with NOTIFY**: every transaction that changes a key version
//!   bumps `generation` and runs `pg_notify('keyflow_keys', <new generation>)`, which
//!   PostgreSQL delivers only if (and when) the transaction commits.
//!   [`PostgresKeystore::listen`] (and [`Keystore::change_notifier`]) turn those
//!   notifications into a [`tokio::sync::Notify`] signal, so every instance's key cache
//!   revalidates at once instead of at its next poll.
//! - **Leases** (`try_lease`) for the one-scheduler-leader rule: a row with a holder and
//!   an expiry, taken with `INSERT … ON CONFLICT … DO UPDATE … WHERE`.
//!
//! Every query binds its values; nothing a caller passes is formatted into SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyflow_kms::StoreError> {
//! use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
//! let store = PostgresKeystore::connect(
//!     "postgres://keyflow@db.internal:5432/keyflow",
//!     &PoolSettings::default(),
//! )
//! .await?;
//! let changed = store.listen().await?; // a Notify raised on every committed key change
//! changed.notified().await;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

mod audit;
mod legacy;
mod lifecycle;
mod link;
mod listen;

use lifecycle::check_kek;

pub use link::{link_security, LinkSecurity};
pub use listen::{ChangeListener, KeyChange, CHANNEL};

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

/// Key of the session advisory lock held while migrating ("kfmigrat" in ASCII). One
/// key per database: instances migrating different schemas of one database simply
/// take turns, which costs nothing at this size.
const MIGRATION_LOCK: i64 = 0x6b66_6d69_6772_6174;

/// Connection-pool settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Most connections open at once (per instance). The hot path never touches the
    /// database (keys are cached), so a handful is plenty.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl PoolSettings {
    /// Default settings with `max_connections` connections.
    pub fn with_max_connections(max_connections: u32) -> Self {
        Self {
            max_connections: max_connections.max(1),
            ..Self::default()
        }
    }
}

/// The PostgreSQL keystore. Cheap to clone (clones share the pool and the listener).
#[derive(Clone)]
pub struct PostgresKeystore {
    pool: PgPool,
    options: PgConnectOptions,
    shared: Arc<Shared>,
    /// Authenticates key-version, token and policy rows (installed at unlock).
    rows: SealerSlot,
}

/// State shared by clones: the change signal and the background listener, which stops
/// when the last clone is dropped.
struct Shared {
    changed: Arc<Notify>,
    listener: Mutex<Option<ChangeListener>>,
}

impl fmt::Debug for PostgresKeystore {
    // Connect options hold the password: print only where the keystore is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKeystore")
            .field("target", &describe(&self.options))
            .finish_non_exhaustive()
    }
}

/// `postgres://user@host:port/database`, never the password.
fn describe(o: &PgConnectOptions) -> String {
    let host = match o.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!(
        "postgres://{}@{host}/{}",
        o.get_username(),
        o.get_database().unwrap_or_default()
    )
}

pub(crate) const COLUMNS: &str = "purpose, version, status, algorithm, wrapped_key, kek_id, \
     created_at, status_changed_at, encryptions, revoked_reason, row_mac";

pub(crate) const TOKEN_COLUMNS: &str =
    "id, secret_hash, role, purposes, name, created_at, expires_at, revoked_at, row_mac";

/// Bumps the change generation and announces the new value on [`CHANNEL`]. Run inside
/// every transaction that changes a key version: the NOTIFY is delivered on commit
/// and discarded on rollback, so a listener never hears of a change that did not
/// happen. The row lock it takes also serializes key-version writers, so every such
/// transaction takes its locks in one order (generation first): no deadlocks.
const BUMP_GENERATION: &str = "WITH g AS (\
       UPDATE keyflow_meta SET value = (CAST(value AS BIGINT) + 1)::text \
       WHERE key = 'generation' RETURNING value) \
     SELECT pg_notify('keyflow_keys', value) FROM g";

/// Bumps the change generation inside `tx` (see [`BUMP_GENERATION`]).
pub(crate) async fn bump(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query(BUMP_GENERATION)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Reads a row's columns for the shared decoders in [`keyflow_kms::rows`].
pub(crate) struct Cols<'a>(pub(crate) &'a PgRow);

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

pub(crate) fn record(row: &PgRow, sealer: &RowSealer) -> Result<KeyVersionRecord, StoreError> {
    rows::verified_version(&Cols(row), sealer)
}

pub(crate) fn is_check_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_check_violation())
}

impl PostgresKeystore {
    /// Connects to `url` (`postgres://` or `postgresql://`; TLS with `sslmode=…` in the
    /// URL) and brings the schema up to date.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        // The URL parser's messages never quote the URL (which may hold a password).
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options, settings).await
    }

    /// Like [`Self::connect`], from prepared options (e.g. with a `search_path`).
    pub async fn connect_with(
        options: PgConnectOptions,
        settings: &PoolSettings,
    ) -> Result<Self, StoreError> {
        let options = options.application_name("keyflow");
        let target = describe(&options);
        let conn = PgConnection::connect_with(&options).await.map_err(|e| {
            StoreError(format!(
                "cannot connect to PostgreSQL keystore {target}: {e}"
            ))
        })?;
        migrate(conn)
            .await
            .map_err(|e| StoreError(format!("migrating PostgreSQL keystore {target}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError(format!("cannot open PostgreSQL keystore {target}: {e}")))?;
        Ok(Self {
            pool,
            options,
            shared: Arc::new(Shared {
                changed: Arc::new(Notify::new()),
                listener: Mutex::new(None),
            }),
            rows: SealerSlot::default(),
        })
    }

    /// Where the keystore is: `postgres://user@host:port/database` (no password).
    pub fn target(&self) -> String {
        describe(&self.options)
    }

    /// The connection pool (for diagnostics and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool (waits for connections to finish) and stops the listener.
    pub async fn close(&self) {
        self.stop_listening();
        self.pool.close().await;
    }

    /// Subscribes to key-change notifications ([`CHANNEL`]) and returns the signal
    /// raised on each: every committed key change by any instance, and every
    /// reconnection of the listener (notifications sent while it was disconnected are
    /// lost, so the owner should re-check the generation). Idempotent; the listener
    /// runs on its own connection (not one of the pool's) until the last clone of the
    /// keystore is dropped, reconnecting with backoff on failure. Returns once the
    /// first `LISTEN` is in place.
    pub async fn listen(&self) -> Result<Arc<Notify>, StoreError> {
        if self.listening() {
            return Ok(self.shared.changed.clone());
        }
        let changed = self.shared.changed.clone();
        let started = self
            .listen_with(move |_| {
                changed.notify_waiters();
                changed.notify_one();
            })
            .await?;
        self.keep_listener(started);
        Ok(self.shared.changed.clone())
    }

    /// Subscribes to [`CHANNEL`] and calls `on_change` (from a background task; keep
    /// it cheap) for every notification and reconnection. The subscription lasts
    /// until the returned [`ChangeListener`] is dropped. Returns once the first
    /// `LISTEN` is in place.
    pub async fn listen_with<F>(&self, on_change: F) -> Result<ChangeListener, StoreError>
    where
        F: Fn(KeyChange) + Send + Sync + 'static,
    {
        listen::start(&self.options, on_change).await
    }

    fn listening(&self) -> bool {
        self.shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn keep_listener(&self, listener: ChangeListener) {
        let mut slot = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A concurrent `listen` may have won; keeping one listener is enough (the
        // other is dropped, which stops it).
        if slot.is_none() {
            *slot = Some(listener);
        }
    }

    fn stop_listening(&self) {
        self.shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The installed row sealer (an error before the KEK is unlocked).
    pub(crate) fn sealer(&self) -> Result<Arc<RowSealer>, StoreError> {
        self.rows.get()
    }

    async fn insert(
        conn: &mut PgConnection,
        r: &KeyVersionRecord,
        only_if_new_purpose: bool,
        sealer: &RowSealer,
    ) -> Result<u64, sqlx::Error> {
        let guard = if only_if_new_purpose {
            " WHERE NOT EXISTS (SELECT 1 FROM key_versions WHERE purpose = $1)"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO key_versions ({COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11{guard}"
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

/// Runs the embedded migrations on `conn`, a dedicated connection holding a session advisory
/// lock, so concurrent first starts are serialized (the losers find the schema in
/// place). If this future is dropped half-way, the connection closes and PostgreSQL
/// releases the lock with the session.
async fn migrate(mut conn: PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut conn)
        .await?;
    let mut migrator = Migrator::new(Embedded).await?;
    // sqlx would take its own advisory lock; ours already serializes.
    migrator.set_locking(false);
    // `run_direct` is `run` for one connection; `run(&mut conn)` trips the compiler's
    // "Acquire is not general enough" when this future must be `Send` (sqlx's own
    // workaround, public though undocumented).
    let migrated = migrator.run_direct(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut conn)
        .await;
    // Closing ends the session, which releases the lock even if the unlock failed.
    let closed = conn.close().await;
    migrated?;
    unlocked?;
    closed
}

#[async_trait]
impl Keystore for PostgresKeystore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM keyflow_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO keyflow_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
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
            "SELECT {COLUMNS} FROM key_versions WHERE ($1::text IS NULL OR purpose = $1) \
             AND ($2::text IS NULL OR status = $2) ORDER BY purpose, version"
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
        let sql = format!("SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND version = $2");
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
            format!("SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND status = 'active'");
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
        // Generation first: concurrent creators queue on its row lock, and the later
        // ones see the committed version 1 and insert nothing.
        bump(&mut tx).await?;
        check_kek(&mut tx, std::slice::from_ref(first)).await?;
        let outcome = match Self::insert(&mut tx, first, true, &sealer).await {
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
        bump(&mut tx).await?;
        // Compare-and-set: the generation row lock serializes key writers, so the
        // row read here is the one the update below changes; a rotation that waited
        // for another finds it no longer active and changes nothing.
        let sql = format!(
            "SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND version = $2 \
             AND status = 'active' FOR UPDATE"
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
            "UPDATE key_versions SET status = 'rotating', status_changed_at = $1, row_mac = $2 \
             WHERE purpose = $3 AND version = $4 AND status = 'active'",
        )
        .bind(now)
        .bind(&sealer.version_mac(&demoted)[..])
        .bind(next.purpose.as_str())
        .bind(i64::from(prev))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        check_kek(&mut tx, std::slice::from_ref(next)).await?;
        match Self::insert(&mut tx, next, false, &sealer).await {
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
        // A single-row atomic increment; usage is not a key change, so no generation.
        sqlx::query(
            "UPDATE key_versions SET encryptions = encryptions + $1 \
             WHERE purpose = $2 AND version = $3",
        )
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
        // A single-row atomic change; usage is not a key change, so no generation.
        let total: Option<i64> = sqlx::query_scalar(
            "UPDATE key_versions SET encryptions = GREATEST(encryptions + $1, 0) \
             WHERE purpose = $2 AND version = $3 RETURNING encryptions",
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
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1 AND revoked_at IS NULL FOR UPDATE"
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
        sqlx::query("UPDATE api_tokens SET revoked_at = $1, row_mac = $2 WHERE id = $3")
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
        sqlx::query("DELETE FROM keyflow_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        // The primary key decides between instances racing with one nonce.
        let done = sqlx::query(
            "INSERT INTO keyflow_nonces (nonce, expires_at) VALUES ($1, $2) \
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(done.rows_affected() == 1)
    }

    fn install_row_sealer(&self, sealer: Arc<RowSealer>) {
        self.rows.install(sealer);
    }

    fn row_sealer(&self) -> Option<Arc<RowSealer>> {
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

    /// Starts the background listener on first call (needs a tokio runtime; `None`
    /// without one) and returns its signal. See [`PostgresKeystore::listen`].
    fn change_notifier(&self) -> Option<Arc<Notify>> {
        if !self.listening() {
            let changed = self.shared.changed.clone();
            let listener = listen::spawn(self.options.clone(), move |_| {
                changed.notify_waiters();
                changed.notify_one();
            })?;
            self.keep_listener(listener);
        }
        Some(self.shared.changed.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_and_debug_never_show_the_password() {
        let o = PgConnectOptions::from_str("postgres://kf:s3cr3t-pw@db.example:6543/keys").unwrap();
        let d = describe(&o);
        assert_eq!(d, "postgres://kf@db.example:6543/keys");
        assert!(!d.contains("s3cr3t"));
    }

    #[test]
    fn invalid_urls_are_refused_without_echoing_them() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt
            .block_on(PostgresKeystore::connect(
                "postgres://u:hunter2@host:notaport/db",
                &PoolSettings::default(),
            ))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
