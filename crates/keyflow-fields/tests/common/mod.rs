//! A real EncryptionService over SQLite in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{EncryptionService, Keystore, Purpose, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub service: EncryptionService,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Keystore> = Arc::new(
        SqliteKeystore::open(&dir.path().join("keyflow.db"))
            .await
            .unwrap(),
    );
    let password = KekPassword::new("correct horse battery staple".into(), false).unwrap();
    let (_, kek) = kek_provider::init(
        &dir.path().join("kek.json"),
        &password,
        KdfParams {
            iterations: MIN_PBKDF2_ITERATIONS,
        },
        &*store,
        &OsRng,
    )
    .await
    .unwrap();
    let service = EncryptionService::new(store, kek, ServiceConfig::default());
    Env { dir, service }
}

pub fn purpose(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}
