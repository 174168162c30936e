//! Keystore failures arrive as the [`StoreError`] variant that says what the caller can
//! do: the server answers 503, 409 or 500 by it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use keyflow_kms::{Coordination, KekBinding, StoreError};
use keyflow_store_sql::Backend;
use keyflow_store_sqlite::SqliteKeystore;

async fn fresh(dir: &tempfile::TempDir) -> SqliteKeystore {
    SqliteKeystore::open(&dir.path().join("keyflow.db"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_closed_database_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh(&dir).await;
    store.close().await;
    let e = store.get_meta("kek_id").await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_damaged_generation_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh(&dir).await;
    sqlx::query("UPDATE keyflow_meta SET value = 'x' WHERE key = 'generation'")
        .execute(store.pool())
        .await
        .unwrap();
    let e = store.generation().await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert_eq!(e.to_string(), "corrupt generation counter");
}

#[tokio::test]
async fn a_duplicate_row_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh(&dir).await;
    let insert = "INSERT INTO keyflow_leases (name, holder, expires_at) VALUES ('l', 'a', 1)";
    sqlx::query(insert).execute(store.pool()).await.unwrap();
    let e =
        keyflow_store_sql::db_error(sqlx::query(insert).execute(store.pool()).await.unwrap_err());
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
}
