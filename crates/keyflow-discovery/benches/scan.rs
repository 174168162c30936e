//! Discovery scan throughput on SQLite: a generated table of 500,000 rows with three
//! text columns (free text with near misses, a JSON document, a short name; one row in
//! 1,000 holds a clear card number), scanned three times with the default page size.
//! Prints rows/s; the target (issue 14) is at least 50,000 rows/s.
//!
//! `cargo bench -p keyflow-discovery --bench scan` (`DISCOVERY_BENCH_ROWS` to change the
//! row count).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark

use std::str::FromStr;
use std::time::Instant;

use keyflow_discovery::{NoProgress, ScanOptions, Target};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

async fn generate(url: &str, rows: i64) {
    let opts = SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, notes TEXT, profile JSON)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..rows {
        let notes = if i % 1000 == 0 {
            format!("customer {i} paid with 4111 1111 1111 1111 on 2024-01-15")
        } else {
            format!(
                "order ORD-{i} shipped {} via 1Z999AA1{i:010}, total $1,{:03}.50, ref #{}",
                1_700_000_000_000 + i,
                i % 1000,
                i * 7
            )
        };
        let profile = format!(
            r#"{{"tier": "gold", "visits": {}, "tags": ["a", "b"], "note": "since 2019-0{}-01"}}"#,
            i % 97,
            1 + i % 9
        );
        sqlx::query("INSERT INTO customers (id, name, notes, profile) VALUES (?1, ?2, ?3, ?4)")
            .bind(i)
            .bind(format!("Customer {i}"))
            .bind(notes)
            .bind(profile)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

fn main() {
    let rows: i64 = std::env::var("DISCOVERY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Instant::now();
        generate(&url, rows).await;
        println!(
            "generated {rows} rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let target = Target::connect(&url).await.unwrap();
        let plan = target.plan(&ScanOptions::default()).await.unwrap();
        for run in 1..=3 {
            let t = Instant::now();
            let report = target.scan(&plan, &NoProgress).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(report.rows(), rows as u64);
            assert_eq!(report.clear_values(), (rows as u64).div_ceil(1000));
            println!(
                "run {run}: {} rows, 3 text columns, {:.2} s, {:.0} rows/s",
                report.rows(),
                secs,
                report.rows() as f64 / secs
            );
        }
    });
}
