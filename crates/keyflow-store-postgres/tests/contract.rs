//! The PostgreSQL keystore against the shared contract suite, plus PostgreSQL
//! specifics (migrations, concurrent first starts). Needs `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use keyflow_kms::keystore::{Coordination, KekBinding};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keyflow_kms::audit::AuditStore;
use keyflow_kms::Keystore;
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_keystore_contract() {
    common::with_database(
        "postgres_passes_the_keystore_contract",
        |db, _| async move {
            let counter = AtomicUsize::new(0);
            keyflow_keystore_contract::run_all(|| {
                // Every check needs an empty keystore: a new schema each time.
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let db = db.clone();
                async move {
                    Arc::new(db.keystore(&format!("contract_{n}"), 4).await) as Arc<dyn Keystore>
                }
            })
            .await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_audit_contract() {
    common::with_database("postgres_passes_the_audit_contract", |db, _| async move {
        let counter = AtomicUsize::new(0);
        keyflow_keystore_contract::audit::run_audit(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let db = db.clone();
            async move {
                Arc::new(db.keystore(&format!("audit_{n}"), 4).await) as Arc<dyn AuditStore>
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    common::with_database("reopening_keeps_data", |_, url| async move {
        let a = PostgresKeystore::connect(&url, &PoolSettings::default())
            .await
            .unwrap();
        a.init_meta("kek_id", "x").await.unwrap();
        assert!(!format!("{a:?}").contains("password"));
        a.close().await;
        let b = PostgresKeystore::connect(&url, &PoolSettings::default())
            .await
            .unwrap();
        assert_eq!(b.get_meta("kek_id").await.unwrap().as_deref(), Some("x"));
        assert_eq!(b.generation().await.unwrap(), 0);
        let migrations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(b.pool())
                .await
                .unwrap();
        assert_eq!(migrations, 8, "every migration (0001–0008) ran once");
    })
    .await;
}

/// Instances starting together against an empty database: the advisory lock makes
/// one migrate while the others wait, and every one of them opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_starts_migrate_once() {
    common::with_database(
        "concurrent_first_starts_migrate_once",
        |_, url| async move {
            let mut starts = Vec::new();
            for _ in 0..6 {
                let url = url.clone();
                starts.push(tokio::spawn(async move {
                    PostgresKeystore::connect(&url, &PoolSettings::with_max_connections(2)).await
                }));
            }
            let mut stores = Vec::new();
            for s in starts {
                stores.push(
                    s.await
                        .unwrap()
                        .expect("every concurrent first start opens"),
                );
            }
            stores[0].init_meta("kek_id", "k").await.unwrap();
            for s in &stores {
                assert_eq!(s.get_meta("kek_id").await.unwrap().as_deref(), Some("k"));
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // Port 1 on loopback: nothing listens there. Needs no PostgreSQL at all.
    let err = PostgresKeystore::connect(
        "postgres://kf:topsecret@127.0.0.1:1/keyflow",
        &PoolSettings::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("topsecret"), "{err}");
}
