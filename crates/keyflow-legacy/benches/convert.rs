//! Legacy package conversion throughput (PRODUCT.md §10: ≥ 50,000 packages/s on one
//! core): parse the package, open it (16-byte-IV AES-GCM under the imported legacy
//! DEK), restore the value's type and encrypt it under the purpose's active KeyFlow
//! version. Also the two halves alone, to show where the time goes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark harness

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{Context, ServiceConfig};
use keyflow_legacy::keys::parse_key_documents;
use keyflow_legacy::{convert, import, write, LegacyKek, LegacyKeyring, Package};

const PACKAGES: usize = 1024;

fn bench(c: &mut Criterion) {
    // One worker thread: the conversion runs on one core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let env = keyflow_testkit::Env::new();
    let svc = rt.block_on(env.service(ServiceConfig {
        background_usage_flush: true,
        ..ServiceConfig::default()
    }));
    let kek = LegacyKek::from_bytes(&[7u8; 32]).unwrap();
    let deks = [[1u8; 32], [2u8; 32]];
    let docs: Vec<String> = deks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = i as u32 + 1;
            let wrapped = write::wrap_key(&kek, d, &OsRng).unwrap();
            write::key_document(
                &format!("userData-17724-{v}"),
                "userData",
                v,
                "active",
                &wrapped,
            )
        })
        .collect();
    let entries = parse_key_documents(&docs.join("\n"), "bench");
    rt.block_on(import::import(&svc, &kek, vec![entries], false))
        .unwrap();
    let ring = rt.block_on(LegacyKeyring::load(&svc)).unwrap();
    // Small values as the old `/encrypt` stored them: SSNs, e-mails, JSON objects.
    let plaintexts: [&[u8]; 3] = [
        b"123-45-6789",
        b"jane.doe@example.com",
        br#"{"iban":"DE89370400440532013000"}"#,
    ];
    let packages: Vec<String> = (0..PACKAGES)
        .map(|i| {
            let v = i % 2;
            write::package(
                &deks[v],
                &format!("userData-17724-{}", v + 1),
                v as u32 + 1,
                plaintexts[i % 3],
                None,
                &OsRng,
            )
            .unwrap()
        })
        .collect();
    let ctx = Context::new();

    let mut g = c.benchmark_group("legacy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("convert_package", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let p = &packages[i as usize % PACKAGES];
                    black_box(
                        convert::convert_package(&svc, &ring, p, &ctx)
                            .await
                            .unwrap(),
                    );
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("parse_and_open_package", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % PACKAGES;
            let p = Package::parse(black_box(&packages[i])).unwrap();
            black_box(ring.open_package(&p).unwrap());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
