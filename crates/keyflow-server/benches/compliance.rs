//! `GET /compliance` on a SQLite keystore with 1,000 key versions (10 purposes × 100
//! rotations) and 1,000,000 audit records (PRODUCT.md §10: < 200 ms). The records are
//! bulk-inserted with one SQL statement (they are never verified here): the report reads
//! only the chain head and the latest record of a few operations and of each token,
//! through the indexes, so its cost must not depend on their number.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a bench fails by panicking

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use keyflow_kms::access::Role;
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::{EncryptionService, Purpose, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, AuditPolicy, AuditTrail, HttpSettings, Limits};
use tower::ServiceExt;

/// Audit records to insert: 1M, or `KEYFLOW_BENCH_AUDIT_RECORDS` (to compare counts).
fn records() -> i64 {
    std::env::var("KEYFLOW_BENCH_AUDIT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

struct Fixture {
    _env: keyflow_testkit::Env,
    app: axum::Router,
    auditor: String,
}

async fn fixture() -> Fixture {
    let env = keyflow_testkit::Env::sqlite();
    let (store, audit_store) = env.stores().await;
    let kek = env.init(&*store).await;
    let sealer = keyflow_kms::audit::AuditSealer::new(&kek).unwrap();
    let service = Arc::new(EncryptionService::new(
        store.clone(),
        kek,
        ServiceConfig::default(),
    ));
    for p in 0..10 {
        let purpose = Purpose::new(&format!("purpose{p}")).unwrap();
        service.keys().generate(&purpose).await.unwrap();
        for _ in 1..100 {
            service.keys().rotate(&purpose).await.unwrap();
        }
    }
    let mut ids = Vec::new();
    let mut auditor = String::new();
    for role in [
        Role::Admin,
        Role::Service,
        Role::Auditor,
        Role::Service,
        Role::Admin,
    ] {
        let purposes: &[&str] = if role == Role::Service {
            &["purpose1"]
        } else {
            &[]
        };
        let (token, id) = keyflow_testkit::env::token(&*store, role, purposes, None).await;
        if role == Role::Auditor {
            auditor = token;
        }
        ids.push(id);
    }
    // One statement: 1M records from the tokens above, mostly data operations, with a
    // backup, a backup verification and a rotation every so often.
    let db = env.dir.path().join("keyflow.db");
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
    let now = SystemClock.now_millis();
    let records = records();
    let actor = format!(
        "CASE x % 5 WHEN 0 THEN '{}' WHEN 1 THEN '{}' WHEN 2 THEN '{}' WHEN 3 THEN '{}' ELSE '{}' END",
        ids[0], ids[1], ids[2], ids[3], ids[4]
    );
    let sql = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {records})
         INSERT INTO keyflow_audit (seq, kek_id, time, actor, operation, result, purposes, body, mac)
         SELECT x, 'bench', {now} - ({records} - x) * 60,
                {actor},
                CASE WHEN x % 100000 = 0 THEN 'keys.backup'
                     WHEN x % 100000 = 1 THEN 'backup.verify'
                     WHEN x % 50000 = 2 THEN 'keys.rotate'
                     WHEN x % 3 = 0 THEN 'decrypt' ELSE 'encrypt' END,
                'ok', ',purpose1,',
                CASE WHEN x % 100000 = 1
                     THEN '{{\"detail\":{{\"backupCreatedAt\":' || ({now} - 3600000) || ',\"versions\":1000}}}}'
                     ELSE '{{}}' END,
                printf('%064x', x)
         FROM c"
    );
    sqlx::query(&sql).execute(&mut conn).await.unwrap();
    let head =
        format!("UPDATE keyflow_audit_head SET seq = {records}, mac = printf('%064x', {records})");
    sqlx::query(&head).execute(&mut conn).await.unwrap();
    drop(conn);
    let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
    tokens.refresh().await.unwrap();
    let trail = AuditTrail::start(
        audit_store,
        sealer,
        service.ring().clock().clone(),
        AuditPolicy::PRODUCTION,
    );
    let state = AppState::with_audit(service, tokens, Limits::default(), trail);
    state.set_kek_path(env.dir.path().join("kek.json"));
    let app = keyflow_server::app(state, &HttpSettings::default());
    Fixture {
        _env: env,
        app,
        auditor,
    }
}

async fn get(f: &Fixture, query: &str) -> usize {
    let req = Request::get(format!("/api/encryption/compliance{query}"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", f.auditor))
        .body(Body::empty())
        .unwrap();
    let res = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let f = rt.block_on(fixture());
    eprintln!(
        "fixture: 1,000 versions and {} audit records in {:?}",
        records(),
        started.elapsed()
    );
    eprintln!(
        "json {} bytes, html {} bytes",
        rt.block_on(get(&f, "")),
        rt.block_on(get(&f, "?format=html"))
    );
    let mut g = c.benchmark_group(format!(
        "compliance 1000 versions, {} audit records",
        records()
    ));
    g.sample_size(20);
    g.bench_function("GET /compliance (json)", |b| {
        b.iter(|| rt.block_on(get(&f, "")))
    });
    g.bench_function("GET /compliance?format=html", |b| {
        b.iter(|| rt.block_on(get(&f, "?format=html")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
