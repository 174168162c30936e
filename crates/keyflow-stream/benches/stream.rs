//! Streaming throughput against raw AES-256-GCM (PRODUCT.md §10: file encryption on
//! one core ≥ 80 % of raw AES-256-GCM), at the same sizes. Run on one core:
//! `taskset -c 1 cargo bench -p keyflow-stream --bench stream`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyflow_core::{DataKey, KeyVersion, OsRng, Purpose, SecretKey, SecureRandom};
use keyflow_stream::{
    decrypt, decrypt_slice, encrypt, encrypt_slice, read_header, Metadata, Sealer,
};

const MIB: usize = 1 << 20;

fn key() -> DataKey {
    DataKey::derive(
        Purpose::new("documents").unwrap(),
        KeyVersion::FIRST,
        &SecretKey::generate(&OsRng).unwrap(),
    )
    .unwrap()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill(&mut v).unwrap();
    v
}

/// Plaintext sizes of the end-to-end rows: 1 MiB stays in this machine's L2 (1 MiB per
/// core) and L3, 16 MiB in L3 (32 MiB) only, 64 MiB in none (memory bandwidth).
const SIZES: [usize; 3] = [MIB, 16 * MIB, 64 * MIB];

/// Criterion settings per size: the 64 MiB rows take ~10 ms an iteration.
fn group<'a>(c: &'a mut Criterion, size: usize) -> criterion::BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Bytes(size as u64));
    if size > 16 * MIB {
        g.sample_size(10);
    }
    g
}

/// The reference: one aws-lc-rs AES-256-GCM seal of the whole buffer in place, at each
/// size the library is measured at (no copy, no segments, no per-file work).
fn raw_gcm(c: &mut Criterion) {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &random(32)).unwrap());
    for size in SIZES {
        let mut g = group(c, size);
        let mut buf = random(size);
        g.bench_function(format!("raw_aes256gcm_seal_{}mib", size / MIB), |b| {
            b.iter(|| {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([7; 12]),
                        Aad::empty(),
                        black_box(&mut buf[..]),
                    )
                    .unwrap();
                let _ = black_box(tag);
            })
        });
        g.finish();
    }
    let mut g = group(c, MIB);
    let buf = random(MIB);
    let mut sealed = buf.clone();
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([8; 12]),
            Aad::empty(),
            &mut sealed,
        )
        .unwrap();
    sealed.extend_from_slice(tag.as_ref());
    let mut work = sealed.clone();
    g.bench_function("copy_then_open_1mib", |b| {
        b.iter(|| {
            work.copy_from_slice(&sealed);
            let n = k
                .open_in_place(
                    Nonce::assume_unique_for_key([8; 12]),
                    Aad::empty(),
                    black_box(&mut work[..]),
                )
                .unwrap()
                .len();
            black_box(n);
        })
    });
    // The floor for any `Read`-based encryptor: copy each 64 KiB piece out of the
    // source (as read(2) from the page cache does) and seal it in place.
    let src = random(MIB);
    let mut seg = vec![0u8; 64 * 1024];
    g.bench_function("copy_then_seal_64k_pieces_1mib", |b| {
        b.iter(|| {
            for piece in src.chunks(64 * 1024) {
                seg.copy_from_slice(piece);
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([9; 12]),
                        Aad::empty(),
                        &mut seg,
                    )
                    .unwrap();
                let _ = black_box(tag);
            }
        })
    });
    g.finish();
}

/// The per-file work, alone: salt and prefix, HKDF, header, metadata seal, header hash
/// (encrypt); header parse, HKDF, metadata open, header hash (decrypt).
fn per_file(c: &mut Criterion) {
    let dk = key();
    let mut g = c.benchmark_group("stream");
    g.bench_function("per_file_sealer_new", |b| {
        b.iter(|| Sealer::new(&dk, &Metadata::default(), &OsRng).unwrap())
    });
    let header = Sealer::new(&dk, &Metadata::default(), &OsRng)
        .unwrap()
        .header()
        .to_vec();
    g.bench_function("per_file_header_open", |b| {
        b.iter(|| read_header(&mut &header[..]).unwrap().open(&dk).unwrap())
    });
    g.finish();
}

/// The library end to end from a memory reader into a sink: header, HKDF per file,
/// 64 KiB segments read into the segment buffer (the same copy a read(2) from the page
/// cache makes), sealed in place.
fn stream(c: &mut Criterion) {
    let dk = key();
    for size in SIZES {
        let plain = random(size);
        let mut g = group(c, size);
        g.bench_function(format!("encrypt_{}mib", size / MIB), |b| {
            b.iter(|| {
                let sealer = Sealer::new(&dk, &Metadata::default(), &OsRng).unwrap();
                encrypt(&mut &plain[..], &mut std::io::sink(), sealer).unwrap()
            })
        });
        let mut file = Vec::new();
        encrypt(
            &mut &plain[..],
            &mut file,
            Sealer::new(&dk, &Metadata::default(), &OsRng).unwrap(),
        )
        .unwrap();
        // The in-memory entry point: segments sealed out of place, straight from `plain`.
        g.bench_function(format!("encrypt_slice_{}mib", size / MIB), |b| {
            b.iter(|| {
                let sealer = Sealer::new(&dk, &Metadata::default(), &OsRng).unwrap();
                encrypt_slice(black_box(&plain), &mut std::io::sink(), sealer).unwrap()
            })
        });
        drop(plain);
        g.bench_function(format!("decrypt_{}mib", size / MIB), |b| {
            b.iter(|| {
                let mut input = &file[..];
                let h = read_header(&mut input).unwrap();
                decrypt(input, &mut std::io::sink(), h.open(&dk).unwrap()).unwrap()
            })
        });
        g.bench_function(format!("decrypt_slice_{}mib", size / MIB), |b| {
            b.iter(|| {
                let mut input = &file[..];
                let h = read_header(&mut input).unwrap();
                decrypt_slice(black_box(input), &mut std::io::sink(), h.open(&dk).unwrap()).unwrap()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = raw_gcm, per_file, stream
}
criterion_main!(benches);
