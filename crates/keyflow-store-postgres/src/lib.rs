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
//!   [`PostgresBackend::listen`] (and
//!   [`Coordination::change_notifier`](keyflow_kms::Coordination::change_notifier)) turn
//!   those notifications into a [`tokio::sync::Notify`] signal, so every instance's key
//!   cache revalidates at once instead of at its next poll.
//! - **Leases** (`try_lease`) for the one-scheduler-leader rule: a row with a holder and
//!   an expiry, taken with `INSERT … ON CONFLICT … DO UPDATE … WHERE`.
//!
//! The statements, transactions and row decoding are `keyflow-store-sql`'s, shared
//! with SQLite; this crate connects, migrates, listens and supplies PostgreSQL's
//! dialect ([`PostgresBackend`], in `backend.rs`): row locks with `FOR UPDATE`, the
//! NOTIFY with every generation bump, a `VACUUM` after a destroy, one-statement audit
//! batches (`UNNEST`). Every query binds its values; nothing a caller passes is
//! formatted into SQL.
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

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use keyflow_kms::keystore::StoreError;
use keyflow_store_sql::{Embedded, SqlKeystore, UrlBackend};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;

mod backend;
mod link;
mod listen;

#[doc(no_inline)]
pub use keyflow_kms::Keystore;
pub use link::{link_security, LinkSecurity};
pub use listen::{ChangeListener, KeyChange, CHANNEL};

/// The PostgreSQL keystore: the shared SQL keystore on [`PostgresBackend`]. Cheap to
/// clone (clones share the pool and the listener).
pub type PostgresKeystore = SqlKeystore<PostgresBackend>;

/// The migrations, compiled in.
const MIGRATIONS: Embedded = keyflow_store_sql::keystore_migrations!("../migrations");

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

/// PostgreSQL under the shared SQL keystore: the pool, the connect options (for the
/// listener's own connection) and the change signal.
#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    options: PgConnectOptions,
    shared: Arc<Shared>,
}

/// State shared by clones: the change signal and the background listener, which stops
/// when the last clone is dropped.
struct Shared {
    changed: Arc<Notify>,
    listener: Mutex<Option<ChangeListener>>,
}

impl fmt::Debug for PostgresBackend {
    // Connect options hold the password: print only where the keystore is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
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

#[async_trait]
impl UrlBackend for PostgresBackend {
    type Settings = PoolSettings;
    type Options = PgConnectOptions;

    /// Connects to `url` (`postgres://` or `postgresql://`; TLS with `sslmode=…` in the
    /// URL) and brings the schema up to date.
    async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        // The URL parser's messages never quote the URL (which may hold a password).
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options, settings).await
    }

    async fn connect_with(
        options: PgConnectOptions,
        settings: &PoolSettings,
    ) -> Result<Self, StoreError> {
        let options = options.application_name("keyflow");
        let target = describe(&options);
        let conn = PgConnection::connect_with(&options).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL keystore {target}: {e}"
            ))
        })?;
        migrate(conn).await.map_err(|e| {
            StoreError::Backend(format!("migrating PostgreSQL keystore {target}: {e}"))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open PostgreSQL keystore {target}: {e}"))
            })?;
        Ok(Self {
            pool,
            options,
            shared: Arc::new(Shared {
                changed: Arc::new(Notify::new()),
                listener: Mutex::new(None),
            }),
        })
    }
}

impl PostgresBackend {
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

    /// `VACUUM FULL key_versions`: rewrites the table, leaving out dead row versions —
    /// among them those that still held the wrapped key of a destroyed version (a
    /// destroy's own plain `VACUUM` only marks their space reusable). Takes an
    /// exclusive lock on the table for its (short) duration and needs its owner.
    /// PostgreSQL's WAL, replicas and base backups are out of its reach.
    pub async fn vacuum_key_versions(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("VACUUM FULL key_versions")
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(format!("VACUUM FULL key_versions failed: {e}")))?;
        Ok(())
    }

    /// Starts the background listener on first call (needs a tokio runtime; `None`
    /// without one) and returns its signal. See [`Self::listen`].
    fn notifier(&self) -> Option<Arc<Notify>> {
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
    let mut migrator = Migrator::new(MIGRATIONS).await?;
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
