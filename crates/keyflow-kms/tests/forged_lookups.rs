//! Ciphertexts naming keys that do not exist cost (almost) no keystore reads: misses are
//! remembered briefly, with the purpose's highest version, and concurrent loads of one
//! key share a read (issue 16; ARCHITECTURE decision 72).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;

use base64::Engine;
use common::Env;
use keyflow_core::{Context, Purpose};
use keyflow_kms::{Decrypted, EncryptionService, KmsError, ServiceConfig};
use serde_json::json;

/// A well-formed envelope (random ciphertext) naming `purpose`/`version`.
fn forged(purpose: &str, version: u32) -> String {
    let mut b = vec![1u8, 1, purpose.len() as u8];
    b.extend_from_slice(purpose.as_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&[7u8; 12 + 17]);
    format!(
        "kf1:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

fn json_of(d: Decrypted) -> serde_json::Value {
    match d {
        Decrypted::Json(v) => v,
        Decrypted::Bytes(_) => panic!("came back as bytes"),
    }
}

async fn setup() -> (Env, Arc<EncryptionService>) {
    let env = Env::new();
    let s = Arc::new(env.service(ServiceConfig::default()).await);
    (env, s)
}

#[tokio::test]
async fn a_batch_of_forged_versions_costs_two_reads_not_a_thousand() {
    let (env, s) = setup().await;
    let p = Purpose::new("userData").unwrap();
    let real = s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    let mem = env.memory_store().unwrap();
    let before = mem.version_reads();
    let items: Vec<String> = (2..1002).map(|v| forged("userData", v)).collect();
    let out = s.decrypt_batch(&items, &Context::new()).await;
    assert_eq!(out.len(), 1000);
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(KmsError::DecryptionFailed))));
    // One miss (get_version) and its ceiling (list_versions); the other 999 are known.
    assert_eq!(mem.version_reads() - before, 2);
    // The real key still decrypts, and a real version is never reported absent.
    s.decrypt(&real, &Context::new()).await.unwrap();
}

#[tokio::test]
async fn forged_purposes_are_remembered_too() {
    let (env, s) = setup().await;
    let mem = env.memory_store().unwrap();
    let before = mem.version_reads();
    for v in 1..=50 {
        let r = s
            .decrypt(&forged("noSuchPurpose", v), &Context::new())
            .await;
        assert!(matches!(r, Err(KmsError::DecryptionFailed)), "{r:?}");
    }
    assert_eq!(mem.version_reads() - before, 2);
}

#[tokio::test]
async fn a_version_created_here_after_a_miss_is_found_at_once() {
    let (_env, s) = setup().await;
    let p = Purpose::new("userData").unwrap();
    s.encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    // Version 2 is looked up (and missed) before it exists...
    let r = s.decrypt(&forged("userData", 2), &Context::new()).await;
    assert!(matches!(r, Err(KmsError::DecryptionFailed)));
    // ...then created by a rotation here: the miss must not hide it.
    s.keys().rotate(&p).await.unwrap();
    let ct = s
        .encrypt_value(&json!("y"), &p, &Context::new())
        .await
        .unwrap();
    assert_eq!(
        json_of(s.decrypt(&ct, &Context::new()).await.unwrap()),
        json!("y")
    );
}

#[tokio::test]
async fn a_version_created_elsewhere_is_found_after_revalidation() {
    let (env, s) = setup().await;
    let p = Purpose::new("userData").unwrap();
    s.encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    s.ring().revalidate().await.unwrap();
    let r = s.decrypt(&forged("userData", 2), &Context::new()).await;
    assert!(matches!(r, Err(KmsError::DecryptionFailed)));
    // Another process (a second service over the same keystore) rotates.
    let other = EncryptionService::new(
        env.store().await,
        keyflow_kms::kek_provider::unlock(&env.kek_path, &env.password(), &*env.store().await)
            .await
            .unwrap(),
        ServiceConfig::default(),
    );
    other.keys().rotate(&p).await.unwrap();
    let ct = other
        .encrypt_value(&json!("y"), &p, &Context::new())
        .await
        .unwrap();
    // The server's generation poll drops the negative knowledge with the cache.
    s.ring().revalidate().await.unwrap();
    assert_eq!(
        json_of(s.decrypt(&ct, &Context::new()).await.unwrap()),
        json!("y")
    );
}

#[tokio::test]
async fn concurrent_first_uses_share_one_read() {
    let (env, s) = setup().await;
    let p = Purpose::new("userData").unwrap();
    let ct = s
        .encrypt_value(&json!("x"), &p, &Context::new())
        .await
        .unwrap();
    // A fresh service over the same keystore: empty cache.
    let cold = Arc::new(EncryptionService::new(
        env.store().await,
        keyflow_kms::kek_provider::unlock(&env.kek_path, &env.password(), &*env.store().await)
            .await
            .unwrap(),
        ServiceConfig::default(),
    ));
    let mem = env.memory_store().unwrap();
    let before = mem.version_reads();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (cold, ct) = (cold.clone(), ct.clone());
            tokio::spawn(async move { cold.decrypt(&ct, &Context::new()).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(json_of(t.await.unwrap()), json!("x"));
    }
    assert_eq!(
        mem.version_reads() - before,
        1,
        "one load for 32 concurrent decrypts"
    );
}
