//! Shared test setup: a fresh SQLite keystore and KEK in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(dead_code, missing_docs, clippy::new_without_default)]

use std::path::PathBuf;
use std::sync::Arc;

use keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_core::OsRng;
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::{EncryptionService, Keystore, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;

pub const FAST_KDF: KdfParams = KdfParams {
    iterations: MIN_PBKDF2_ITERATIONS,
};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub kek_path: PathBuf,
    pub db_path: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            kek_path: dir.path().join("kek.json"),
            db_path: dir.path().join("keyflow.db"),
            dir,
        }
    }

    pub fn password(&self) -> KekPassword {
        KekPassword::new("correct horse battery staple".into(), false).unwrap()
    }

    pub async fn store(&self) -> Arc<dyn Keystore> {
        Arc::new(SqliteKeystore::open(&self.db_path).await.unwrap())
    }

    /// `init` + a service.
    pub async fn service(&self, config: ServiceConfig) -> EncryptionService {
        let store = self.store().await;
        let (_, kek) =
            kek_provider::init(&self.kek_path, &self.password(), FAST_KDF, &*store, &OsRng)
                .await
                .unwrap();
        EncryptionService::new(store, kek, config)
    }
}
