//! The encrypt hot path with keys cached: a 64 B field through `EncryptionService`,
//! on SQLite and on PostgreSQL, beside one PostgreSQL round trip. Equal encrypt times,
//! both far below a round trip, show the hot path does not touch the database.
//!
//! PostgreSQL parts run when `TEST_DATABASE_URL` (or `KEYFLOW_BENCH_DATABASE_URL`) is
//! set; they use a throwaway database, dropped at the end.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark harness

use keyflow_kms::keystore::Coordination;
use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{Context, EncryptionService, Keystore, Purpose, ServiceConfig};
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
use keyflow_store_sqlite::SqliteKeystore;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

async fn service(store: Arc<dyn Keystore>, dir: &std::path::Path) -> EncryptionService {
    let pw = KekPassword::new("benchmark password".into(), false).unwrap();
    let params = KdfParams {
        iterations: MIN_PBKDF2_ITERATIONS,
    };
    let (_, kek) = kek_provider::init(&dir.join("kek.json"), &pw, params, &*store, &OsRng)
        .await
        .unwrap();
    EncryptionService::new(
        store,
        kek,
        ServiceConfig {
            background_usage_flush: true,
            ..ServiceConfig::default()
        },
    )
}

fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed()
    })
}

fn database_url() -> Option<String> {
    ["KEYFLOW_BENCH_DATABASE_URL", "TEST_DATABASE_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let p = Purpose::new("userData").unwrap();
    let ctx = Context::from_pairs([("recordId", "r-1"), ("field", "ssn")]).unwrap();
    let field = json!("x".repeat(64));
    let mut g = c.benchmark_group("keystore_hot_path");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt.block_on(async {
        let store = Arc::new(
            SqliteKeystore::open(&dir.path().join("k.db"))
                .await
                .unwrap(),
        );
        service(store, dir.path()).await
    });
    rt.block_on(sqlite.encrypt_value(&field, &p, &ctx)).unwrap();
    g.bench_function("encrypt_64B_field/sqlite", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    sqlite
                        .encrypt_value(black_box(&field), &p, &ctx)
                        .await
                        .unwrap(),
                );
            })
        })
    });

    let Some(url) = database_url() else {
        eprintln!("SKIPPED: PostgreSQL parts (set TEST_DATABASE_URL)");
        return;
    };
    let admin = PgConnectOptions::from_str(&url).unwrap();
    let name = format!("keyflow_bench_{}", std::process::id());
    rt.block_on(async {
        let mut a = admin.connect().await.unwrap();
        // Identifiers cannot be bound; the name is made here from digits.
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut a)
            .await
            .unwrap();
    });
    let pg_dir = tempfile::tempdir().unwrap();
    let (pg_store, pg) = rt.block_on(async {
        let store =
            PostgresKeystore::connect_with(admin.clone().database(&name), &PoolSettings::default())
                .await
                .unwrap();
        let svc = service(Arc::new(store.clone()), pg_dir.path()).await;
        (store, svc)
    });
    rt.block_on(pg.encrypt_value(&field, &p, &ctx)).unwrap();
    // Direct evidence: transactions committed in the keystore database during many
    // cached encrypts (only the usage batches, one per 4,096 encryptions, should
    // appear). Backends report their statistics within ~10 s of going idle.
    rt.block_on(async {
        let stats = admin.clone().database(&name);
        let commits = || async {
            let mut c = stats.connect().await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
            n
        };
        tokio::time::sleep(Duration::from_secs(11)).await;
        let before = commits().await;
        const N: u64 = 200_000;
        for _ in 0..N {
            black_box(pg.encrypt_value(&field, &p, &ctx).await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        let after = commits().await;
        eprintln!(
            "postgres: {N} cached encrypts -> {} transactions in the keystore database \
             (usage batches expected: {}; the statistics query itself: ~1)",
            after - before,
            N / 4096
        );
    });
    g.bench_function("encrypt_64B_field/postgres", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(pg.encrypt_value(black_box(&field), &p, &ctx).await.unwrap());
            })
        })
    });
    // What touching the database would cost: the cheapest keystore read.
    g.bench_function("postgres_round_trip/generation", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(pg_store.generation().await.unwrap());
            })
        })
    });
    g.finish();
    rt.block_on(async {
        pg.ring().flush_usage().await.unwrap();
        drop(pg);
        pg_store.close().await;
        let mut a = admin.connect().await.unwrap();
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut a)
            .await
            .unwrap();
        a.close().await.unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
