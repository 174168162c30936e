//! Row MACs on PostgreSQL, attacked through SQL by someone who can write the database
//! but does not hold the KEK (the SQLite tests cover every column; these show the same
//! refusals with PostgreSQL's statements). Needs `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use keyflow_kms::keystore::{KekBinding, KeyVersions, Policies, Tokens};
use std::sync::Arc;

use keyflow_kms::access::{self, Role};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, Policy, StatusChange, VersionFilter};
use keyflow_kms::row_mac::RowSealer;
use keyflow_kms::{KeyVersion, Purpose};
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn rec(version: u32, status: KeyStatus) -> KeyVersionRecord {
    KeyVersionRecord {
        purpose: p("userData"),
        version: KeyVersion::new(version).unwrap(),
        status,
        algorithm: "AES-256".into(),
        wrapped_key: Some(vec![version as u8; 60]),
        kek_id: "kek-1".into(),
        created_at: 1,
        status_changed_at: 1,
        encryptions: 0,
        revoked_reason: (status == KeyStatus::Revoked).then(|| "leaked".into()),
    }
}

async fn open(db: &common::TestDb, schema: &str) -> (PostgresKeystore, PgPool, Arc<RowSealer>) {
    let options = db.fresh_schema(schema).await;
    let store =
        PostgresKeystore::connect_with(options.clone(), &PoolSettings::with_max_connections(2))
            .await
            .unwrap();
    store.init_meta("kek_id", "kek-1").await.unwrap();
    let sealer = Arc::new(RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap());
    store.install_row_sealer(sealer.clone());
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    (store, raw, sealer)
}

async fn sql(raw: &PgPool, sql: &str) -> u64 {
    sqlx::query(sql).execute(raw).await.unwrap().rows_affected()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_flipped_versions_are_refused() {
    common::with_database("row_macs_forged", |db, _| async move {
        let (store, raw, sealer) = open(&db, "forged").await;
        store
            .insert_versions(&[rec(1, KeyStatus::Revoked), rec(2, KeyStatus::Active)])
            .await
            .unwrap();
        let real = access::generate(Role::Auditor, vec![], "aud".into(), 1, None, &OsRng)
            .unwrap();
        store.insert_token(&real.record).await.unwrap();
        sql(
            &raw,
            "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at, row_mac) \
             SELECT '00000000000000f1', decode(repeat('ab', 32), 'hex'), 'admin', '', 'root', 2, row_mac \
             FROM api_tokens",
        )
        .await;
        sql(&raw, "UPDATE api_tokens SET role = 'admin' WHERE name = 'aud'").await;
        assert!(store.list_tokens().await.unwrap().is_empty(), "both refused");
        sql(&raw, "UPDATE key_versions SET status = 'deprecated' WHERE version = 1").await;
        assert!(store.get_version(&p("userData"), KeyVersion::new(1).unwrap()).await.is_err());
        assert_eq!(store.list_versions(&VersionFilter::default()).await.unwrap().len(), 1);
        let reinstate = StatusChange {
            purpose: p("userData"),
            version: KeyVersion::new(1).unwrap(),
            from: vec![KeyStatus::Deprecated],
            to: KeyStatus::Revoked,
            reason: Some("x".into()),
            now: 5,
        };
        assert!(store.set_status(&reinstate).await.is_err(), "never re-sealed");
        store.set_policy(&p("userData"), &Policy::default()).await.unwrap();
        sql(&raw, "UPDATE key_policies SET max_encryptions = 4294967296").await;
        assert!(store.get_policy(&p("userData")).await.is_err());
        assert_eq!(sealer.refused(), 2 + 3 + 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_rows_are_sealed_once_and_a_reset_marker_is_refused() {
    common::with_database("row_macs_legacy", |db, _| async move {
        let (store, raw, _) = open(&db, "legacy").await;
        assert_eq!(
            store.get_meta("row_macs").await.unwrap(),
            None,
            "fresh: nothing pending"
        );
        store
            .insert_versions(&[rec(1, KeyStatus::Active)])
            .await
            .unwrap();
        let t = access::generate(Role::Admin, vec![], "ops".into(), 1, None, &OsRng).unwrap();
        store.insert_token(&t.record).await.unwrap();
        // What migration 0007 leaves on a keystore that had rows.
        sql(&raw, "UPDATE key_versions SET row_mac = NULL").await;
        sql(&raw, "UPDATE api_tokens SET row_mac = NULL").await;
        sql(
            &raw,
            "INSERT INTO keyflow_meta (key, value) VALUES ('row_macs', 'pending')",
        )
        .await;
        assert!(
            store.list_tokens().await.unwrap().is_empty(),
            "unsealed: refused"
        );
        assert_eq!(store.seal_legacy_rows().await.unwrap(), 2);
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        assert_eq!(
            store
                .list_versions(&VersionFilter::default())
                .await
                .unwrap()
                .len(),
            1
        );
        sql(
            &raw,
            "UPDATE keyflow_meta SET value = 'pending' WHERE key = 'row_macs'",
        )
        .await;
        sql(
            &raw,
            "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at) \
             VALUES ('00000000000000f2', decode(repeat('cd', 32), 'hex'), 'admin', '', 'x', 3)",
        )
        .await;
        assert!(store.seal_legacy_rows().await.is_err());
        assert_eq!(
            store.list_tokens().await.unwrap().len(),
            1,
            "the forged one stays out"
        );
    })
    .await;
}
