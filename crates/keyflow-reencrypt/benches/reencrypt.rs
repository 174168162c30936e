//! Re-encryption throughput (PRODUCT.md §10: ≥ 20,000 rows/s on SQLite and PostgreSQL).
//!
//! A timing run rather than criterion: one run rewrites a whole table, which is the
//! quantity the target names. `cargo bench -p keyflow-reencrypt [-- ROWS]`; PostgreSQL
//! too (a throwaway database) when `TEST_DATABASE_URL` is set. Each table: ROWS
//! (default 100,000) 11-byte values encrypted under v1, then a rotation, then timed
//! runs (batch 1000).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Db, Env};
use keyflow_kms::{Context, Purpose};
use keyflow_reencrypt::{
    backend, engine, ContextSpec, EncryptPlaintext, NoProgress, Operation, Rewrap, RunOptions,
    TableSpec,
};
use keyflow_testkit::postgres::with_database;

async fn bench(env: &Env, db: &Db, rows: i64) {
    db.drop_table().await;
    db.create().await;
    let plain: Vec<(i64, Option<String>)> = (1..=rows)
        .map(|i| (i, Some(format!("123-45-{i:05}"))))
        .collect();
    db.insert(&plain).await;
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let purpose = Purpose::new("userData").unwrap();
    let name = target.name();

    let t = Instant::now();
    let mut migrate =
        EncryptPlaintext::new(&env.service, purpose.clone(), ContextSpec::default(), false);
    let r = engine::run(
        &*target,
        &mut migrate,
        &RunOptions::new(Operation::Migrate),
        &NoProgress,
    )
    .await
    .unwrap();
    report(name, "migrate (encrypt plaintext)", r.census.rewritten, t);

    env.service.keys().rotate(&purpose).await.unwrap();
    let t = Instant::now();
    let mut rewrap = Rewrap::new(&env.service, ContextSpec::default());
    let r = engine::run(
        &*target,
        &mut rewrap,
        &RunOptions::new(Operation::Reencrypt),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(r.census.rewritten as i64, rows);
    report(name, "re-encrypt after rotation", r.census.rewritten, t);

    let t = Instant::now();
    let mut rewrap = Rewrap::new(&env.service, ContextSpec::default());
    let r = engine::run(
        &*target,
        &mut rewrap,
        &RunOptions::new(Operation::Reencrypt),
        &NoProgress,
    )
    .await
    .unwrap();
    report(name, "second run (no-op, read only)", r.census.unchanged, t);

    // Decrypt one row as a sanity check.
    let (_, ct) = db.all().await.into_iter().next().unwrap();
    assert_eq!(
        env.decrypt(&ct.unwrap(), &Context::new()).await,
        "123-45-00001"
    );
    db.drop_table().await;
}

fn report(db: &str, what: &str, rows: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{db:<8} {what:<32} {rows:>8} rows in {secs:>6.2} s = {:>8.0} rows/s",
        rows as f64 / secs
    );
}

fn main() {
    let rows: i64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = Env::new().await;
        let db = Db::sqlite(env.dir.path()).await;
        bench(&env, &db, rows).await;
        with_database("bench", |_, url| async move {
            let db = Db::postgres(&url).await;
            bench(&env, &db, rows).await;
        })
        .await;
    });
}
