//! `Encrypted<T>` and `BlindIndexValue` as TEXT columns through sqlx: SQLite always,
//! PostgreSQL in a throwaway database when `TEST_DATABASE_URL` is set (skipped with a
//! notice otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{env, purpose};
use keyflow_fields::{BlindIndexValue, Encrypted};
use keyflow_kms::Context;
use keyflow_testkit::postgres::with_database;
use sqlx::Row;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Account {
    iban: String,
    balance_cents: i64,
}

#[tokio::test]
async fn sqlite_round_trip() {
    let e = env().await;
    let ctx = Context::from_pairs([("table", "accounts"), ("row", "1")]).unwrap();
    let value = Account {
        iban: "DE89370400440532013000".into(),
        balance_cents: -12,
    };
    let ct = Encrypted::encrypt(&e.service, &value, &purpose("financialData"), &ctx, false)
        .await
        .unwrap();
    let number = Encrypted::encrypt(&e.service, &7u32, &purpose("financialData"), &ctx, false)
        .await
        .unwrap();
    let bidx = BlindIndexValue::new("00ff").unwrap();

    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlx::query(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, account TEXT, n TEXT, bidx TEXT, plain TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO t (id, account, n, bidx, plain) VALUES (1, ?, ?, ?, 'not a ciphertext')",
    )
    .bind(&ct)
    .bind(&number)
    .bind(&bidx)
    .execute(&pool)
    .await
    .unwrap();
    let row = sqlx::query("SELECT account, n, bidx, plain FROM t WHERE bidx = ?")
        .bind(&bidx)
        .fetch_one(&pool)
        .await
        .unwrap();
    let back: Encrypted<Account> = row.try_get("account").unwrap();
    assert_eq!(back, ct);
    assert_eq!(back.decrypt(&e.service, &ctx).await.unwrap(), value);
    let n: Encrypted<u32> = row.try_get("n").unwrap();
    assert_eq!(n.decrypt(&e.service, &ctx).await.unwrap(), 7);
    assert_eq!(row.try_get::<BlindIndexValue, _>("bidx").unwrap(), bidx);
    // A plaintext column does not decode as ciphertext.
    assert!(row.try_get::<Encrypted<String>, _>("plain").is_err());
    // Wrong context: refused.
    assert!(back.decrypt(&e.service, &Context::new()).await.is_err());
}

#[tokio::test]
async fn postgres_round_trip() {
    // A throwaway database, dropped afterwards; a visible notice without TEST_DATABASE_URL.
    with_database("postgres_round_trip", |_db, url| async move {
        let e = env().await;
        let ctx = Context::from_pairs([("row", "1")]).unwrap();
        let ct = Encrypted::encrypt(
            &e.service,
            &"123-45-6789".to_owned(),
            &purpose("userData"),
            &ctx,
            false,
        )
        .await
        .unwrap();
        let det = Encrypted::encrypt(
            &e.service,
            &"a@example.com".to_owned(),
            &purpose("userData"),
            &ctx,
            true,
        )
        .await
        .unwrap();
        let bidx = BlindIndexValue::new("abcdef").unwrap();

        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE accounts (id INT PRIMARY KEY, ssn TEXT NOT NULL, email TEXT NOT NULL, bidx TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO accounts (id, ssn, email, bidx) VALUES (1, $1, $2, $3)")
            .bind(&ct)
            .bind(&det)
            .bind(&bidx)
            .execute(&pool)
            .await
            .unwrap();
        // Deterministic ciphertexts are searchable by equality.
        let row = sqlx::query("SELECT ssn, email, bidx FROM accounts WHERE email = $1 AND bidx = $2")
            .bind(&det)
            .bind(&bidx)
            .fetch_one(&pool)
            .await
            .unwrap();
        let ssn: Encrypted<String> = row.try_get("ssn").unwrap();
        assert_eq!(ssn.decrypt(&e.service, &ctx).await.unwrap(), "123-45-6789");
        let email: Encrypted<String> = row.try_get("email").unwrap();
        assert_eq!(email, det);
        assert_eq!(row.try_get::<BlindIndexValue, _>("bidx").unwrap(), bidx);
        pool.close().await;
    })
    .await;
}
