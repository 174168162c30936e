//! What the row MACs (issue 15) cost on the lookups that pay them: a key-version read
//! (a cache miss of the service) and the token table read (the server's refresh, every
//! second). The full SQLite lookup is measured with the check included — it cannot be
//! switched off — and the check alone beside it, so its share is visible.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark harness

use keyflow_kms::keystore::{KekBinding, KeyVersions, Tokens};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyflow_kms::access::{self, Role};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::row_mac::RowSealer;
use keyflow_kms::{KeyStatus, KeyVersion, KeyVersionRecord, Purpose};
use keyflow_store_sqlite::SqliteKeystore;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteKeystore::open(&dir.path().join("keyflow.db")))
        .unwrap();
    let sealer = Arc::new(RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap());
    store.install_row_sealer(sealer.clone());
    rt.block_on(store.init_meta("kek_id", "kek-1")).unwrap();
    let p = Purpose::new("userData").unwrap();
    let record = KeyVersionRecord {
        purpose: p.clone(),
        version: KeyVersion::FIRST,
        status: KeyStatus::Active,
        algorithm: "AES-256".into(),
        wrapped_key: Some(vec![7; 60]),
        kek_id: "kek-1".into(),
        created_at: 1_700_000_000_000,
        status_changed_at: 1_700_000_000_000,
        encryptions: 0,
        revoked_reason: None,
    };
    rt.block_on(store.create_first(&record)).unwrap();
    let tokens: Vec<_> = (0..10)
        .map(|i| {
            access::generate(
                Role::Service,
                vec![p.clone()],
                format!("svc {i}"),
                i,
                None,
                &OsRng,
            )
            .unwrap()
            .record
        })
        .collect();
    for t in &tokens {
        rt.block_on(store.insert_token(t)).unwrap();
    }
    let version_mac = sealer.version_mac(&record);
    let token_mac = sealer.token_mac(&tokens[0]);

    let mut g = c.benchmark_group("row_macs");
    g.bench_function("get_version_sqlite_with_check", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(store.get_version(&p, KeyVersion::FIRST))
                    .unwrap(),
            )
        })
    });
    g.bench_function("version_check_only", |b| {
        b.iter(|| {
            sealer
                .check_version(black_box(&record), Some(&version_mac))
                .unwrap()
        })
    });
    g.bench_function("list_10_tokens_sqlite_with_checks", |b| {
        b.iter(|| black_box(rt.block_on(store.list_tokens()).unwrap()))
    });
    g.bench_function("token_check_only", |b| {
        b.iter(|| {
            sealer
                .check_token(black_box(&tokens[0]), Some(&token_mac))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
