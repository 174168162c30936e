//! The EncryptionService facade over a real SQLite keystore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;

use common::Env;
use keyflow_core::PayloadKind;
use keyflow_core::{Context, KeyVersion, Purpose};
use keyflow_kms::{
    Decrypted, Encrypt, EncryptMode, EncryptionService, Input, KeyStatus, KmsError, ServiceConfig,
    VersionFilter,
};
use serde_json::{json, Value};

fn purpose(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn ctx(pairs: &[(&str, &str)]) -> Context {
    Context::from_pairs(pairs.iter().copied()).unwrap()
}

async fn round_trip(s: &EncryptionService, v: &Value) -> Value {
    let ct = s
        .encrypt_value(v, &purpose("userData"), &Context::new())
        .await
        .unwrap();
    match s.decrypt(&ct, &Context::new()).await.unwrap() {
        Decrypted::Json(v) => v,
        Decrypted::Bytes(_) => panic!("came back as bytes"),
    }
}

#[tokio::test]
async fn types_survive_a_round_trip() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    for v in [
        json!(42),
        json!(-1.5),
        json!(true),
        json!(null),
        json!("plain text"),
        json!("42"),
        json!("{\"looks\":\"like json\"}"),
        json!({"nested": {"a": [1, "two", false]}}),
        json!([1, 2, 3]),
        json!(""),
    ] {
        assert_eq!(round_trip(&s, &v).await, v, "{v}");
    }
    // Numbers as a client sends them, as text: 17+ significant digits must come back
    // to the same bit (serde_json's `float_roundtrip`; found by the `fields` fuzzer).
    for text in [
        "1111111111111111111111.1",
        "0.30000000000000004",
        "2.2250738585072011e-308",
        "1.7976931348623157e308",
        "123456789.12345678901",
        "-9007199254740993.5",
    ] {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(round_trip(&s, &v).await, v, "{text}");
    }
    let ct = s
        .encrypt(Encrypt::new(
            &purpose("documents"),
            &Context::new(),
            Input::Payload(PayloadKind::Bytes, &[0, 159, 255]),
        ))
        .await
        .unwrap()
        .ciphertext;
    match s.decrypt(&ct, &Context::new()).await.unwrap() {
        Decrypted::Bytes(b) => assert_eq!(&b[..], &[0, 159, 255]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn first_encryption_creates_version_1_and_rotation_keeps_old_data_readable() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("financialData");
    assert!(
        s.keys()
            .list(&VersionFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "init creates no DEKs"
    );
    let c = ctx(&[("recordId", "r-1")]);
    let old = s
        .encrypt_value(&json!("4532123456789012"), &p, &c)
        .await
        .unwrap();
    assert_eq!(EncryptionService::summary(&old).unwrap().key_version, 1);

    let r = s.keys().rotate(&p).await.unwrap();
    assert_eq!((r.old_version.get(), r.new_version.get()), (1, 2));
    let new = s
        .encrypt_value(&json!("4532123456789012"), &p, &c)
        .await
        .unwrap();
    assert_eq!(EncryptionService::summary(&new).unwrap().key_version, 2);
    assert_eq!(
        EncryptionService::summary(&new).unwrap().key_id,
        "financialData:v2"
    );

    // A second service (cold cache, as after a restart) reads both.
    let s2 = env.service(ServiceConfig::default()).await;
    for ct in [&old, &new] {
        assert!(
            matches!(s2.decrypt(ct, &c).await.unwrap(), Decrypted::Json(v) if v == "4532123456789012")
        );
    }
    let ring = s
        .keys()
        .list(&VersionFilter {
            purpose: Some(p.clone()),
            status: None,
        })
        .await
        .unwrap();
    let states: Vec<_> = ring.iter().map(|r| (r.version.get(), r.status)).collect();
    assert_eq!(
        states,
        vec![(1, KeyStatus::Rotating), (2, KeyStatus::Active)]
    );
}

#[tokio::test]
async fn rotation_is_fast_path_independent_of_version_count() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("userData");
    s.keys().generate(&p).await.unwrap();
    for _ in 0..30 {
        s.keys().rotate(&p).await.unwrap();
    }
    let ring = s
        .keys()
        .list(&VersionFilter {
            purpose: Some(p.clone()),
            status: Some(KeyStatus::Active),
        })
        .await
        .unwrap();
    assert_eq!(ring.len(), 1);
    assert_eq!(ring[0].version.get(), 31);
}

#[tokio::test]
async fn wrong_context_tampering_and_unknown_keys_are_one_opaque_error() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let c = ctx(&[("recordId", "r-1"), ("field", "ssn")]);
    let ct = s
        .encrypt_value(&json!("123-45-6789"), &purpose("userData"), &c)
        .await
        .unwrap();
    let same_reordered = ctx(&[("field", "ssn"), ("recordId", "r-1")]);
    assert!(
        s.decrypt(&ct, &same_reordered).await.is_ok(),
        "context order does not matter"
    );

    let wrong = ctx(&[("recordId", "r-2"), ("field", "ssn")]);
    let mut tampered = ct.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases: Vec<(String, Context)> = vec![
        (ct.clone(), wrong),
        (ct.clone(), Context::new()),
        (tampered, c.clone()),
        ("kf1:not-base64!".into(), c.clone()),
        ("hello".into(), c.clone()),
        (ct.replace("kf1:", "kf1:A"), c.clone()),
    ];
    for (text, cx) in cases {
        let e = s.decrypt(&text, &cx).await.unwrap_err();
        assert!(matches!(e, KmsError::DecryptionFailed), "{text}: {e:?}");
        assert_eq!(e.to_string(), "decryption failed");
    }
}

#[tokio::test]
async fn deterministic_equality_and_inequality() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("userData");
    let email = ctx(&[("field", "email")]);
    let a = s
        .encrypt(
            Encrypt::new(&p, &email, Input::Json(&json!("a@b.c"))).mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    let b = s
        .encrypt(
            Encrypt::new(&p, &email, Input::Json(&json!("a@b.c"))).mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    let other_value = s
        .encrypt(
            Encrypt::new(&p, &email, Input::Json(&json!("a@b.cc")))
                .mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    let other_ctx = s
        .encrypt(
            Encrypt::new(
                &p,
                &ctx(&[("field", "backupEmail")]),
                Input::Json(&json!("a@b.c")),
            )
            .mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    assert_eq!(a, b);
    assert_ne!(a, other_value);
    assert_ne!(a, other_ctx);
    assert!(EncryptionService::summary(&a).unwrap().deterministic);
    assert!(matches!(s.decrypt(&a, &email).await.unwrap(), Decrypted::Json(v) if v == "a@b.c"));
    // Randomized encryption of the same value differs every time.
    let r1 = s.encrypt_value(&json!("a@b.c"), &p, &email).await.unwrap();
    let r2 = s.encrypt_value(&json!("a@b.c"), &p, &email).await.unwrap();
    assert_ne!(r1, r2);
}

#[tokio::test]
async fn strict_mode_requires_an_explicit_generate() {
    let env = Env::new();
    let s = env
        .service(ServiceConfig {
            strict_mode: true,
            ..Default::default()
        })
        .await;
    let p = purpose("healthData");
    let e = s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::StrictModeNoKey(_)), "{e:?}");
    assert!(
        s.keys()
            .list(&VersionFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing created"
    );
    s.keys().generate(&p).await.unwrap();
    assert!(s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .is_ok());
    assert!(matches!(
        s.keys().generate(&p).await.unwrap_err(),
        KmsError::PurposeExists(_)
    ));
    assert!(matches!(
        s.keys().rotate(&purpose("nobody")).await.unwrap_err(),
        KmsError::UnknownPurpose(_)
    ));
}

#[tokio::test]
async fn batches_report_each_item() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("userData");
    let items = vec![json!("a"), json!(1), json!({"k": "v"})];
    let cts: Vec<String> = s
        .encrypt_batch(&items, &p, &Context::new())
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut to_decrypt = cts.clone();
    to_decrypt.insert(1, "kf1:garbage".into());
    let results = s.decrypt_batch(&to_decrypt, &Context::new()).await;
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[1], Err(KmsError::DecryptionFailed)));
    for (r, want) in [&results[0], &results[2], &results[3]]
        .into_iter()
        .zip(&items)
    {
        assert!(matches!(r, Ok(Decrypted::Json(v)) if v == want));
    }
    let bad = s
        .encrypt_batch(&items, &purpose("x"), &Context::new())
        .await;
    assert!(bad.is_ok(), "a new purpose is created on first use");
}

#[tokio::test]
async fn usage_is_reserved_in_blocks_and_given_back() {
    let env = Env::new();
    let s = env
        .service(ServiceConfig {
            usage_flush_every: 4,
            ..Default::default()
        })
        .await;
    let p = purpose("userData");
    for _ in 0..10 {
        s.encrypt_value(&json!("x"), &p, &Context::new())
            .await
            .unwrap();
    }
    let stored = |s: &EncryptionService| {
        let store = s.ring().keystore().clone();
        let p = p.clone();
        async move {
            store
                .get_version(&p, KeyVersion::FIRST)
                .await
                .unwrap()
                .unwrap()
                .encryptions
        }
    };
    assert_eq!(
        stored(&s).await,
        12,
        "three blocks of 4 reserved before use: the count is never behind"
    );
    s.ring().flush_usage().await.unwrap();
    assert_eq!(stored(&s).await, 10, "the unused 2 given back");
    s.encrypt_batch(&[json!(1), json!(2), json!(3)], &p, &Context::new())
        .await
        .unwrap();
    assert_eq!(stored(&s).await, 14);
    s.ring().flush_usage().await.unwrap();
    assert_eq!(stored(&s).await, 13);
}

#[tokio::test]
async fn the_hot_path_is_served_from_the_cache() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("userData");
    let ct = s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    let before = s.ring().cache_stats();
    for _ in 0..100 {
        s.encrypt_value(&json!("x"), &p, &Context::new())
            .await
            .unwrap();
        s.decrypt(&ct, &Context::new()).await.unwrap();
    }
    let after = s.ring().cache_stats();
    assert_eq!(
        after.misses, before.misses,
        "no keystore lookups once cached"
    );
    assert_eq!(after.hits - before.hits, 200);
    assert!(after.hit_rate() > 0.9);
}

#[tokio::test]
async fn cache_ttl_expiry_reloads_from_the_keystore() {
    let env = Env::new();
    let s = env
        .service(ServiceConfig {
            cache_ttl: std::time::Duration::ZERO,
            ..Default::default()
        })
        .await;
    let p = purpose("userData");
    let ct = s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    s.decrypt(&ct, &Context::new()).await.unwrap();
    s.decrypt(&ct, &Context::new()).await.unwrap();
    assert!(s.ring().cache_stats().misses >= 3);
}

#[tokio::test]
async fn blind_index_and_mask() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let p = purpose("userData");
    let a = s.blind_index(&p, "email", b"a@b.c", 32).await.unwrap();
    let b = s.blind_index(&p, "email", b"a@b.c", 32).await.unwrap();
    let c = s.blind_index(&p, "email", b"a@b.cc", 32).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a.hex, c.hex);
    assert_eq!(a.hex.len(), 8);
    assert!(s.blind_index(&p, "email", b"a", 4).await.is_err());
    assert_eq!(s.mask("123456789", "ssn".parse().unwrap()), "***-**-6789");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_keystore_rotate_without_gaps() {
    let env = Env::new();
    let a = Arc::new(env.service(ServiceConfig::default()).await);
    let b = Arc::new(env.service(ServiceConfig::default()).await);
    let p = purpose("documents");
    a.keys().generate(&p).await.unwrap();
    let mut tasks = Vec::new();
    for s in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                s.keys().rotate(&p).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ring = a
        .keys()
        .list(&VersionFilter {
            purpose: Some(p.clone()),
            status: None,
        })
        .await
        .unwrap();
    assert_eq!(
        ring.iter().map(|r| r.version.get()).collect::<Vec<_>>(),
        (1..=13).collect::<Vec<_>>()
    );
    assert_eq!(
        ring.iter()
            .filter(|r| r.status == KeyStatus::Active)
            .count(),
        1
    );
}

#[tokio::test]
async fn debug_output_shows_no_key_material() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    s.encrypt_value(&json!("x"), &purpose("userData"), &Context::new())
        .await
        .unwrap();
    let ct = s
        .encrypt_value(
            &json!("4532123456789012"),
            &purpose("userData"),
            &Context::new(),
        )
        .await
        .unwrap();
    let plain = s.decrypt(&ct, &Context::new()).await.unwrap();
    assert_eq!(format!("{plain:?}"), "Decrypted::Json(<redacted>)");
    let raw = s.decrypt_raw(&ct, &Context::new()).await.unwrap();
    assert!(!format!("{raw:?}").contains("4532"), "{raw:?}");
    let d = format!("{s:?}");
    assert!(d.starts_with("EncryptionService { kek: Kek { id: "), "{d}");
    let rec = &s.keys().list(&VersionFilter::default()).await.unwrap()[0];
    let wrapped = rec.wrapped_key.clone().unwrap();
    let r = format!("{rec:?}");
    assert!(!r.contains(&format!("{:?}", &wrapped[..4])), "{r}");
}

#[tokio::test]
async fn summary_reads_the_header_only() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let ct = s
        .encrypt_value(&json!(1), &purpose("healthData"), &Context::new())
        .await
        .unwrap();
    let sum = EncryptionService::summary(&format!("  {ct}\n")).unwrap();
    assert_eq!(sum.purpose, "healthData");
    assert_eq!(sum.algorithm, "AES-256-GCM");
    assert!(matches!(
        EncryptionService::summary("nope"),
        Err(KmsError::InvalidCiphertext)
    ));
}
