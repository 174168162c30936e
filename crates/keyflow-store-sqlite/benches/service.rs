//! The EncryptionService hot path with keys cached, over the SQLite keystore (PRODUCT.md
//! §10 targets):
//! a 64 B field encrypt/decrypt, envelope and text form included; a batch of 100;
//! 1 MiB; encrypt speed with 1 vs 1,000 versions in the ring; rotation latency.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark harness

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyflow_core::{Context, PayloadKind, Purpose};
use keyflow_kms::{Encrypt, EncryptMode, EncryptionService, Input, ServiceConfig};
use serde_json::{json, Value};
use std::hint::black_box;

fn setup(rt: &tokio::runtime::Runtime, env: &keyflow_testkit::Env) -> EncryptionService {
    rt.block_on(env.service(ServiceConfig {
        background_usage_flush: true,
        ..ServiceConfig::default()
    }))
}

/// Runs `f` `iters` times inside one `block_on`, so the runtime's entry cost is not
/// counted per operation.
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

fn bench(c: &mut Criterion) {
    // Multi-threaded like the server, so usage flushes run off the measured path.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let env = keyflow_testkit::Env::sqlite();
    let s = setup(&rt, &env);
    let p = Purpose::new("userData").unwrap();
    let ctx = Context::from_pairs([("recordId", "r-1"), ("field", "ssn")]).unwrap();
    let field = json!("x".repeat(64));
    let ct = rt.block_on(s.encrypt_value(&field, &p, &ctx)).unwrap();

    let mut g = c.benchmark_group("service");
    g.bench_function("encrypt_64B_field", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(s.encrypt_value(black_box(&field), &p, &ctx).await.unwrap());
            })
        })
    });
    g.bench_function("decrypt_64B_field", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(s.decrypt(black_box(&ct), &ctx).await.unwrap());
            })
        })
    });
    g.bench_function("encrypt_64B_field_deterministic", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    s.encrypt(
                        Encrypt::new(&p, &ctx, Input::Json(black_box(&field)))
                            .mode(EncryptMode::Deterministic),
                    )
                    .await
                    .unwrap()
                    .ciphertext,
                );
            })
        })
    });
    let items: Vec<Value> = (0..100).map(|i| json!(format!("{i:064}"))).collect();
    let cts: Vec<String> = rt
        .block_on(s.encrypt_batch(&items, &p, &ctx))
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    g.throughput(Throughput::Elements(100));
    g.bench_function("encrypt_batch_100x64B", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(s.encrypt_batch(black_box(&items), &p, &ctx).await.unwrap());
            })
        })
    });
    g.bench_function("decrypt_batch_100x64B", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(s.decrypt_batch(black_box(&cts), &ctx).await);
            })
        })
    });
    let mib = vec![0xA5u8; 1 << 20];
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("encrypt_bytes_1MiB", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    s.encrypt(Encrypt::new(
                        &p,
                        &ctx,
                        Input::Payload(PayloadKind::Bytes, black_box(&mib)),
                    ))
                    .await
                    .unwrap()
                    .ciphertext,
                );
            })
        })
    });
    g.finish();

    // Encrypt cost must not depend on how many versions the ring holds.
    let many = Purpose::new("rotatedOften").unwrap();
    rt.block_on(s.keys().generate(&many)).unwrap();
    let mut g = c.benchmark_group("rotation");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("rotate_purpose", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(s.keys().rotate(&many).await.unwrap());
            })
        })
    });
    // Rotation must cost the same whatever the ring's size: a purpose with 1,000
    // versions, and fresh purposes with one version each. The cache is dropped after
    // each measured rotation (outside the timing) so the thousands of fresh purposes a
    // run creates do not accumulate in it.
    let thousand = Purpose::new("thousandVersions").unwrap();
    rt.block_on(async {
        s.keys().generate(&thousand).await.unwrap();
        for _ in 1..1000 {
            s.keys().rotate(&thousand).await.unwrap();
        }
    });
    let next_fresh = std::sync::atomic::AtomicU64::new(0);
    let timed_rotation = |n: u64, fresh: bool| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let p = if fresh {
                    let i = next_fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let p = Purpose::new(&format!("fresh{i}")).unwrap();
                    s.keys().generate(&p).await.unwrap();
                    p
                } else {
                    thousand.clone()
                };
                let t = Instant::now();
                black_box(s.keys().rotate(&p).await.unwrap());
                total += t.elapsed();
                s.ring().revalidate().await.unwrap();
            }
            total
        })
    };
    g.bench_function("rotate_ring_of_1000", |b| {
        b.iter_custom(|n| timed_rotation(n, false))
    });
    g.bench_function("rotate_ring_of_1", |b| {
        b.iter_custom(|n| timed_rotation(n, true))
    });
    g.finish();
    let versions = rt
        .block_on(s.keys().list(&keyflow_kms::VersionFilter {
            purpose: Some(many.clone()),
            status: None,
        }))
        .unwrap()
        .len();
    let mut g = c.benchmark_group(format!("service/ring_of_{versions}_versions"));
    g.bench_function("encrypt_64B_field", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    s.encrypt_value(black_box(&field), &many, &ctx)
                        .await
                        .unwrap(),
                );
            })
        })
    });
    g.finish();
    rt.block_on(s.ring().flush_usage()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
