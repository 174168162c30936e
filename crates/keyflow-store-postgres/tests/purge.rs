//! `VACUUM FULL key_versions` after a destroy (`keyflow keys purge` on PostgreSQL): the
//! rewritten table holds no dead row version with the destroyed wrapped key. Needs
//! `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use keyflow_kms::keystore::{KekBinding, KeyVersions};
use std::sync::Arc;

use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, StatusChange, StatusOutcome};
use keyflow_kms::row_mac::RowSealer;
use keyflow_kms::{KeyVersion, Purpose};
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_full_leaves_no_dead_copy_of_a_destroyed_key() {
    common::with_database("purge_vacuum_full", |db, _| async move {
        let options = db.fresh_schema("purge").await;
        let store = PostgresKeystore::connect_with(options, &PoolSettings::with_max_connections(2))
            .await
            .unwrap();
        store.init_meta("kek_id", "kek-1").await.unwrap();
        store.install_row_sealer(Arc::new(
            RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap(),
        ));
        let p = Purpose::new("userData").unwrap();
        let material = vec![0x5A; 60];
        let rec = |v: u32, status| KeyVersionRecord {
            purpose: p.clone(),
            version: KeyVersion::new(v).unwrap(),
            status,
            algorithm: "AES-256".into(),
            wrapped_key: Some(if v == 1 {
                material.clone()
            } else {
                vec![1; 60]
            }),
            kek_id: "kek-1".into(),
            created_at: 1,
            status_changed_at: 1,
            encryptions: 0,
            revoked_reason: (status == KeyStatus::Revoked).then(|| "x".into()),
        };
        store
            .insert_versions(&[rec(1, KeyStatus::Revoked), rec(2, KeyStatus::Active)])
            .await
            .unwrap();
        let destroy = StatusChange {
            purpose: p.clone(),
            version: KeyVersion::FIRST,
            from: vec![KeyStatus::Revoked],
            to: KeyStatus::Destroyed,
            reason: None,
            now: 5,
        };
        // A reader whose snapshot predates the destroy (a long report, a replica's
        // feedback, a backup in progress): the destroy's own VACUUM must keep the old
        // row version for it.
        let mut reader = store.pool().begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *reader)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_versions")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            store.set_status(&destroy).await.unwrap(),
            StatusOutcome::Changed
        );
        // The table's file as the disk holds it (the test role is a superuser: it may
        // checkpoint and read server files; without that the test cannot look).
        let file = || async {
            sqlx::query("CHECKPOINT")
                .execute(store.pool())
                .await
                .unwrap();
            let bytes: Vec<u8> = sqlx::query_scalar(
                "SELECT pg_read_binary_file(pg_relation_filepath('key_versions'))",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            bytes
        };
        let holds = |bytes: &[u8]| bytes.windows(material.len()).any(|w| w == material);
        // The attack a destroy alone leaves open: the dead row version (a plain VACUUM
        // marks its space free but does not zero it) still holds the wrapped key.
        let live = vec![1u8; 60];
        let before = file().await;
        assert!(
            before.windows(60).any(|w| w == live),
            "control: the live row is found"
        );
        assert!(holds(&before), "the dead row version is still in the file");
        reader.rollback().await.unwrap();
        store.vacuum_key_versions().await.unwrap();
        let after = file().await;
        assert!(
            after.windows(60).any(|w| w == live),
            "control: the live row is found"
        );
        assert!(!holds(&after), "the rewritten table holds no copy");
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_versions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 2, "no row lost");
        let v1 = store
            .get_version(&p, KeyVersion::FIRST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((v1.status, v1.wrapped_key), (KeyStatus::Destroyed, None));
    })
    .await;
}
