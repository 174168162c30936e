//! [`Env`]: what most tests start from — a temporary directory with a KEK file, a
//! keystore, and a service over both — plus the token setup servers need.
//!
//! The KEK is sealed with the cheapest PBKDF2 cost the format accepts ([`FAST_KDF`]):
//! the production cost (600,000 iterations) would make every test spend ~0.3 s on it.

use std::path::PathBuf;
use std::sync::Arc;

use keyflow_core::clock::{Clock, SystemClock};
use keyflow_core::kek::{KdfParams, Kek, MIN_PBKDF2_ITERATIONS};
use keyflow_core::OsRng;
use keyflow_kms::access::{self, Role};
use keyflow_kms::audit::AuditStore;
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::{EncryptionService, Keystore, Purpose, ServiceConfig};

use crate::memory::MemoryKeystore;

/// The KDF cost of test KEK files: the minimum the format accepts.
pub const FAST_KDF: KdfParams = KdfParams {
    iterations: MIN_PBKDF2_ITERATIONS,
};

/// The KEK password of test KEK files.
pub const PASSWORD: &str = "correct horse battery staple";

enum Backend {
    /// One store, shared by every [`Env::store`] call.
    Memory(Arc<MemoryKeystore>),
    /// A SQLite file, opened anew by every [`Env::store`] call (as another process
    /// would).
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// A temporary directory holding `kek.json` (and `keyflow.db` for SQLite), removed when
/// the value is dropped.
pub struct Env {
    /// The directory; tests may put their own files in it.
    pub dir: tempfile::TempDir,
    /// Where the KEK file is (created by [`Env::init`]).
    pub kek_path: PathBuf,
    /// Where the SQLite keystore is (used only by [`Env::sqlite`]).
    pub db_path: PathBuf,
    backend: Backend,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// An environment over an in-memory keystore: no files but the KEK.
    pub fn new() -> Self {
        Self::with_backend(Backend::Memory(Arc::new(MemoryKeystore::new())))
    }

    /// An environment over a SQLite keystore file in the directory.
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Self {
        Self::with_backend(Backend::Sqlite)
    }

    fn with_backend(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            kek_path: dir.path().join("kek.json"),
            db_path: dir.path().join("keyflow.db"),
            dir,
            backend,
        }
    }

    /// The KEK password ([`PASSWORD`]).
    pub fn password(&self) -> KekPassword {
        KekPassword::new(PASSWORD.into(), false).unwrap()
    }

    /// The keystore: the same in-memory store every time, or the SQLite file opened
    /// again (a second handle, like another process's).
    pub async fn store(&self) -> Arc<dyn Keystore> {
        match &self.backend {
            Backend::Memory(store) => store.clone(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Arc::new(
                keyflow_store_sqlite::SqliteKeystore::open(&self.db_path)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The in-memory keystore, as its concrete type (`None` on a SQLite `Env`).
    pub fn memory_store(&self) -> Option<Arc<MemoryKeystore>> {
        match &self.backend {
            Backend::Memory(store) => Some(store.clone()),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => None,
        }
    }

    /// The SQLite keystore file opened again, as its concrete type: one handle that is
    /// both the keystore and the audit store (`Arc<SqliteKeystore>` coerces to
    /// `Arc<dyn Keystore>` and to `Arc<dyn AuditStore>`). Panics on an in-memory `Env`.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite_store(&self) -> Arc<keyflow_store_sqlite::SqliteKeystore> {
        assert!(
            matches!(self.backend, Backend::Sqlite),
            "sqlite_store() needs Env::sqlite()"
        );
        Arc::new(
            keyflow_store_sqlite::SqliteKeystore::open(&self.db_path)
                .await
                .unwrap(),
        )
    }

    /// One handle of the keystore as both the keystore and the audit store (the
    /// in-memory store, or the SQLite file opened again).
    pub async fn stores(&self) -> (Arc<dyn Keystore>, Arc<dyn AuditStore>) {
        match &self.backend {
            Backend::Memory(store) => (store.clone(), store.clone()),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let store = self.sqlite_store().await;
                (store.clone(), store)
            }
        }
    }

    /// `keyflow init`: creates the KEK file and binds `store` to it.
    pub async fn init(&self, store: &dyn Keystore) -> Kek {
        let (_, kek) =
            kek_provider::init(&self.kek_path, &self.password(), FAST_KDF, store, &OsRng)
                .await
                .unwrap();
        kek
    }

    /// `init` + a service over a new handle of the keystore.
    pub async fn service(&self, config: ServiceConfig) -> EncryptionService {
        let store = self.store().await;
        let kek = self.init(&*store).await;
        EncryptionService::new(store, kek, config)
    }
}

/// `name` as a purpose.
pub fn purpose(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

/// Creates an API token in `store` (created a minute ago, expiring at `expires_at`),
/// as `keyflow tokens create` does: `(bearer token, token id)`.
pub async fn token(
    store: &dyn Keystore,
    role: Role,
    purposes: &[&str],
    expires_at: Option<i64>,
) -> (String, String) {
    let new = access::generate(
        role,
        purposes.iter().map(|p| purpose(p)).collect(),
        format!("test {role}"),
        SystemClock.now_millis() - 60_000,
        expires_at,
        &OsRng,
    )
    .unwrap();
    store.insert_token(&new.record).await.unwrap();
    (new.token.to_string(), new.record.id.clone())
}
