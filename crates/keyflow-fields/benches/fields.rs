//! Field-level encryption of JSON documents (docs/benchmarks.md, "Field-level
//! encryption"): a 20-field document with 6 sensitive fields, one document and 10,000
//! documents, encrypt and decrypt; plus the baselines that say where the time goes
//! (6 bare `encrypt_json` calls; the 6 seals with one key resolution per document).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark harness

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyflow_core::envelope::write;
use keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_core::{OsRng, PayloadKind, Purpose};
use keyflow_fields::document::Binding;
use keyflow_fields::{decrypt_fields, encrypt_fields, EncryptOptions, Selection};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::{Encrypt, EncryptionService, Input, Keystore, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;
use serde_json::{json, Value};

fn setup(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> EncryptionService {
    rt.block_on(async {
        let store: Arc<dyn Keystore> =
            Arc::new(SqliteKeystore::open(&dir.join("k.db")).await.unwrap());
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
    })
}

/// 20 leaf values, 6 of them sensitive under `documents` (financial + pii): ssn,
/// dateOfBirth, bankAccountNumber, and contact.{email, phoneNumber, address} one level
/// down; an array and two more nested objects.
fn document(i: usize) -> Value {
    json!({
        "id": format!("user-{i:06}"),
        "createdAt": "2026-01-15T10:00:00Z",
        "status": "active",
        "plan": "pro",
        "locale": "en-GB",
        "loginCount": 42,
        "verified": true,
        "ssn": "123-45-6789",
        "dateOfBirth": "1990-04-01",
        "bankAccountNumber": "000123456789",
        "contact": {
            "email": format!("user{i}@example.com"),
            "phoneNumber": "+14155552671",
            "address": "1 Main Street, Springfield 12345"
        },
        "preferences": {"theme": "dark", "newsletter": false, "timezone": "Europe/London"},
        "stats": {"orders": 17, "lastOrderAt": "2026-01-10T09:00:00Z"},
        "tags": ["a", "b"]
    })
}

const SELECTION: &str =
    "ssn,dateOfBirth,bankAccountNumber,contact.email,contact.phoneNumber,contact.address";

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&rt, dir.path());
    let p = Purpose::new("documents").unwrap();
    let sel = Selection::parse_list(SELECTION).unwrap();
    let auto = Selection::auto_detect();
    let opts = EncryptOptions {
        binding: Binding::doc("user-000001"),
        ..EncryptOptions::default()
    };
    let doc = document(1);
    let (enc, report) = rt
        .block_on(encrypt_fields(&s, doc.clone(), &sel, &p, &opts))
        .unwrap();
    assert_eq!(report.encrypted.len(), 6);
    let (auto_enc, auto_report) = rt
        .block_on(encrypt_fields(&s, doc.clone(), &auto, &p, &opts))
        .unwrap();
    assert_eq!(
        auto_report.encrypted.len(),
        6,
        "{:?}",
        auto_report.encrypted
    );
    drop(auto_enc);

    let mut g = c.benchmark_group("fields");
    g.throughput(Throughput::Elements(1));
    g.bench_function("clone_doc_20f", |b| b.iter(|| black_box(doc.clone())));
    g.bench_function("encrypt_doc_20f_6s_listed", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    encrypt_fields(&s, black_box(doc.clone()), &sel, &p, &opts)
                        .await
                        .unwrap(),
                );
            })
        })
    });
    g.bench_function("encrypt_doc_20f_6s_auto_detect", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    encrypt_fields(&s, black_box(doc.clone()), &auto, &p, &opts)
                        .await
                        .unwrap(),
                );
            })
        })
    });
    g.bench_function("decrypt_doc_20f_6s", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                black_box(
                    decrypt_fields(&s, black_box(enc.clone()), None, &opts.binding)
                        .await
                        .unwrap(),
                );
            })
        })
    });

    // Baselines: the same six values through `encrypt_json` (one key lookup each), and
    // through one `with_active_key` per document (one lookup, seals straight on the key).
    let values: Vec<(Value, keyflow_core::Context)> = [
        ("ssn", &doc["ssn"]),
        ("dateofbirth", &doc["dateOfBirth"]),
        ("bankaccountnumber", &doc["bankAccountNumber"]),
        ("contact.email", &doc["contact"]["email"]),
        ("contact.phonenumber", &doc["contact"]["phoneNumber"]),
        ("contact.address", &doc["contact"]["address"]),
    ]
    .iter()
    .map(|(label, v)| ((*v).clone(), opts.binding.context_for(label).unwrap()))
    .collect();
    g.bench_function("baseline_6x_encrypt_json", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                for (v, ctx) in &values {
                    black_box(
                        s.encrypt(Encrypt::new(&p, ctx, Input::Json(v)))
                            .await
                            .unwrap(),
                    );
                }
            })
        })
    });
    g.bench_function("baseline_6x_seal_one_key_resolution", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                let out = s
                    .ring()
                    .with_active_key(&p, |key| {
                        values
                            .iter()
                            .map(|(v, ctx)| {
                                let text = v.as_str().unwrap_or_default();
                                let env = key
                                    .encrypt(PayloadKind::Text, text.as_bytes(), ctx, &OsRng)
                                    .unwrap();
                                write::to_text(&env)
                            })
                            .collect::<Vec<_>>()
                    })
                    .await
                    .unwrap();
                black_box(out);
            })
        })
    });
    let cts: Vec<(String, keyflow_core::Context)> = rt.block_on(async {
        let mut out = Vec::new();
        for (v, ctx) in &values {
            out.push((
                s.encrypt(Encrypt::new(&p, ctx, Input::Json(v)))
                    .await
                    .unwrap()
                    .ciphertext,
                ctx.clone(),
            ));
        }
        out
    });
    g.bench_function("baseline_6x_decrypt", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                for (ct, ctx) in &cts {
                    black_box(s.decrypt(ct, ctx).await.unwrap());
                }
            })
        })
    });
    g.finish();

    // 10,000 documents, each with its own id.
    let docs: Vec<(Value, EncryptOptions)> = (0..10_000)
        .map(|i| {
            (
                document(i),
                EncryptOptions {
                    binding: Binding::doc(format!("user-{i:06}")),
                    ..EncryptOptions::default()
                },
            )
        })
        .collect();
    let encrypted: Vec<Value> = rt.block_on(async {
        let mut out = Vec::with_capacity(docs.len());
        for (d, o) in &docs {
            out.push(encrypt_fields(&s, d.clone(), &sel, &p, o).await.unwrap().0);
        }
        out
    });
    let mut g = c.benchmark_group("fields_10k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("encrypt_10k_docs_20f_6s", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                for (d, o) in &docs {
                    black_box(encrypt_fields(&s, d.clone(), &sel, &p, o).await.unwrap());
                }
            })
        })
    });
    g.bench_function("decrypt_10k_docs_20f_6s", |b| {
        b.iter_custom(|n| {
            timed(&rt, n, || async {
                for (d, (_, o)) in encrypted.iter().zip(&docs) {
                    black_box(
                        decrypt_fields(&s, d.clone(), None, &o.binding)
                            .await
                            .unwrap(),
                    );
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
