//! The SQLite keystore against the shared contract suite, plus SQLite specifics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use keyflow_kms::keystore::KekBinding;
use std::sync::Arc;

use keyflow_kms::audit::AuditStore;
use keyflow_kms::Keystore;
use keyflow_store_sqlite::SqliteKeystore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_keystore_contract() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    keyflow_keystore_contract::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("ks-{n}.db"));
        async move { Arc::new(SqliteKeystore::open(&path).await.unwrap()) as Arc<dyn Keystore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_audit_contract() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    keyflow_keystore_contract::audit::run_audit(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("audit-{n}.db"));
        async move { Arc::new(SqliteKeystore::open(&path).await.unwrap()) as Arc<dyn AuditStore> }
    })
    .await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/keyflow.db");
    let a = SqliteKeystore::open(&path).await.unwrap();
    a.init_meta("kek_id", "x").await.unwrap();
    a.close().await;
    let b = SqliteKeystore::open(&path).await.unwrap();
    assert_eq!(b.get_meta("kek_id").await.unwrap().as_deref(), Some("x"));
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyflow.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = SqliteKeystore::open(&path).await.unwrap_err().to_string();
    assert!(
        err.contains("keyflow.db") || err.contains("database"),
        "{err}"
    );
}

/// Several processes opening a keystore file that does not exist yet all succeed and
/// share one schema. Each thread has its own runtime and pool, as a process would; the
/// race is repeated because it was intermittent ("database is locked" from the switch
/// to WAL, one run in ten before the open was serialized).
#[test]
fn concurrent_opens_of_a_new_file_all_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyflow.db");
        let opened: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(async {
                            let store = SqliteKeystore::open(&path)
                                .await
                                .map_err(|e| e.to_string())?;
                            // The schema is usable from every opener.
                            store.get_meta("kek_id").await.map_err(|e| e.to_string())?;
                            store.close().await;
                            Ok(())
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in opened {
            assert_eq!(result, Ok(()), "round {round}");
        }
    }
}
