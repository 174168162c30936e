//! Core crypto costs with no key management around them: the envelope's overhead
//! over raw AES-256-GCM, at 64 B and 1 MiB.
#![allow(missing_docs, clippy::unwrap_used)] // a benchmark harness

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use keyflow_core::envelope::read;
use keyflow_core::{Context, DataKey, KeyVersion, OsRng, PayloadKind, Purpose, SecretKey};
use std::hint::black_box;

fn key() -> DataKey {
    DataKey::derive(
        Purpose::new("userData").unwrap(),
        KeyVersion::FIRST,
        &SecretKey::generate(&OsRng).unwrap(),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dk = key();
    let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
    let raw = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &[7u8; 32]).unwrap());

    for size in [64usize, 1 << 20] {
        let data = vec![0x5Au8; size];
        let mut g = c.benchmark_group(format!("core/{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("raw_aes_gcm_seal", size), |b| {
            b.iter_batched_ref(
                || data.clone(),
                |buf| {
                    raw.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([1; 12]),
                        Aad::empty(),
                        &mut buf[..],
                    )
                    .unwrap()
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function(BenchmarkId::new("envelope_encrypt", size), |b| {
            b.iter(|| {
                dk.encrypt(PayloadKind::Bytes, black_box(&data), &ctx, &OsRng)
                    .unwrap()
            })
        });
        g.bench_function(
            BenchmarkId::new("envelope_encrypt_deterministic", size),
            |b| {
                b.iter(|| {
                    dk.encrypt_deterministic(PayloadKind::Bytes, black_box(&data), &ctx)
                        .unwrap()
                })
            },
        );
        let env = dk.encrypt(PayloadKind::Bytes, &data, &ctx, &OsRng).unwrap();
        g.bench_function(BenchmarkId::new("envelope_decrypt", size), |b| {
            b.iter(|| {
                dk.decrypt(&read::parse(black_box(&env)).unwrap(), &ctx)
                    .unwrap()
            })
        });
        g.finish();
    }
    // Issue 15, item 8: a nonce from the per-thread pool (16 per getrandom, mixed with
    // the wall clock) against one getrandom call per nonce (the row below).
    c.bench_function("core/pooled_nonce", |b| {
        b.iter(|| black_box(keyflow_core::SecureRandom::nonce(&OsRng).unwrap()))
    });
    c.bench_function("core/os_rng_12_bytes", |b| {
        let mut n = [0u8; 12];
        b.iter(|| keyflow_core::SecureRandom::fill(&OsRng, black_box(&mut n)).unwrap())
    });
    c.bench_function("core/blind_index_32_bits", |b| {
        b.iter(|| {
            dk.blind_index("email", black_box(b"user@example.com"), 32)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
