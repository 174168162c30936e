//! Discovery on SQLite tables that page differently: a composite `WITHOUT ROWID` key, a
//! column that shadows `rowid`, text and integer values in an untyped column.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::str::FromStr;

use keyflow_discovery::{Error, NoProgress, ScanOptions, Target};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[tokio::test]
async fn sqlite_tables_page_by_rowid_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE lines (order_id INTEGER, line TEXT, memo TEXT, PRIMARY KEY (order_id, line)) WITHOUT ROWID;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299)
         INSERT INTO lines SELECT i / 10, 'L' || (i % 10),
                CASE WHEN i % 50 = 0 THEN 'refund to 5555 5555 5555 4444' ELSE 'ok' END FROM n;
         CREATE TABLE shadow (rowid TEXT, anything);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99)
         INSERT INTO shadow SELECT 'r' || i,
                CASE WHEN i % 2 = 0 THEN 4532015112830366 ELSE 'ada@example.com' END FROM n;
         CREATE TABLE numbers (id INTEGER PRIMARY KEY, n INTEGER, r REAL);
         INSERT INTO numbers VALUES (1, 4532015112830366, 1.5);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let target = Target::connect(&url).await.unwrap();
    let plan = target
        .plan(&ScanOptions {
            tables: vec![],
            page_size: 7,
        })
        .await
        .unwrap();
    let report = target.scan(&plan, &NoProgress).await.unwrap();
    assert_eq!(
        report.rows(),
        300 + 100,
        "a table without text columns is not read"
    );
    let findings: Vec<(String, String, String, u64)> = report
        .findings()
        .into_iter()
        .map(|f| (f.table, f.column, f.detector, f.count))
        .collect();
    let want = [
        ("lines", "memo", "pan", 6),
        ("shadow", "anything", "pan", 50),
        ("shadow", "anything", "email", 50),
    ];
    assert_eq!(
        findings,
        want.map(|(t, c, d, n)| (t.to_owned(), c.to_owned(), d.to_owned(), n))
    );
    assert!(matches!(
        target
            .plan(&ScanOptions {
                tables: vec!["LINES".into()],
                page_size: 7
            })
            .await,
        Err(Error::NoSuchTable(_))
    ));
}

#[tokio::test]
async fn a_missing_file_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let err = Target::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(!path.exists());
    let err = Target::connect("mysql://x").await.unwrap_err();
    assert!(err.is_usage(), "{err}");
}
