//! Evaluation and rendering of a report over 1,000 key versions (the pure part of
//! `/compliance`; the server's gathering is measured by
//! `keyflow-server/benches/compliance.rs`).
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use keyflow_compliance::{evaluate, html, markdown, KeyFact, Snapshot, DAY_MS};

fn snapshot() -> Snapshot {
    let now = 1_796_342_400_000;
    let keys = (0..1000u32)
        .map(|i| KeyFact {
            purpose: format!("purpose{}", i / 100),
            version: i % 100 + 1,
            algorithm: "AES-256".into(),
            status: if i % 100 == 99 {
                "active"
            } else {
                "deprecated"
            }
            .into(),
            created_at: now - i64::from(1000 - i) * DAY_MS,
            status_changed_at: now - i64::from(1000 - i) * DAY_MS,
            encryptions: u64::from(i) * 1000,
            kek_id: "kek".into(),
            has_material: true,
            legacy: false,
        })
        .collect();
    Snapshot {
        generated_at: now,
        at: now,
        keys,
        ..Snapshot::default()
    }
}

fn bench(c: &mut Criterion) {
    let s = snapshot();
    c.bench_function("evaluate 1000 versions", |b| b.iter(|| evaluate(&s)));
    let r = evaluate(&s);
    c.bench_function("json 1000 versions", |b| b.iter(|| serde_json::to_vec(&r)));
    c.bench_function("markdown 1000 versions", |b| {
        b.iter(|| markdown::render(&r))
    });
    c.bench_function("html 1000 versions", |b| b.iter(|| html::render(&r)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
