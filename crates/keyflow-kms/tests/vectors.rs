//! The committed envelope vectors through the whole service: every invalid vector is
//! the one opaque `DecryptionFailed`, every valid one decrypts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::Env;
use keyflow_core::{Context, KeyVersion, Purpose, SecretKey};
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, DEK_ALGORITHM};
use keyflow_kms::{
    kek_provider, CreateOutcome, Decrypted, EncryptionService, KmsError, RotateOutcome,
    ServiceConfig,
};
use serde_json::Value;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../keyflow-core/tests/vectors/envelope-v1.json"
);

fn context(v: &Value) -> Context {
    Context::from_pairs(
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
    )
    .unwrap()
}

#[tokio::test]
async fn vectors_through_the_service() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let env = Env::new();
    let store = env.store().await;
    let (_, kek) = kek_provider::init(
        &env.kek_path,
        &env.password(),
        common::FAST_KDF,
        &*store,
        &keyflow_core::OsRng,
    )
    .await
    .unwrap();
    // Load the vector DEKs into the keystore, wrapped under this KEK. Versions of one
    // purpose must be contiguous from 1: fill gaps with throwaway keys.
    let mut keys: Vec<(String, u32, Vec<u8>)> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["purpose"].as_str().unwrap().to_owned(),
                k["version"].as_u64().unwrap() as u32,
                hex::decode(k["dek"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    keys.sort();
    let mut by_purpose: std::collections::BTreeMap<String, Vec<(u32, Vec<u8>)>> =
        Default::default();
    for (p, v, d) in keys {
        by_purpose.entry(p).or_default().push((v, d));
    }
    for (p, versions) in by_purpose {
        let purpose = Purpose::new(&p).unwrap();
        let max = versions.iter().map(|(v, _)| *v).max().unwrap();
        for n in 1..=max {
            let dek = match versions.iter().find(|(v, _)| *v == n) {
                Some((_, d)) => SecretKey::from_slice(d).unwrap(),
                None => SecretKey::generate(&keyflow_core::OsRng).unwrap(),
            };
            let version = KeyVersion::new(n).unwrap();
            let rec = KeyVersionRecord {
                purpose: purpose.clone(),
                version,
                status: KeyStatus::Active,
                algorithm: DEK_ALGORITHM.into(),
                wrapped_key: Some(
                    kek.wrap_dek(&purpose, version, &dek, &keyflow_core::OsRng)
                        .unwrap(),
                ),
                kek_id: kek.id().into(),
                created_at: 0,
                status_changed_at: 0,
                encryptions: 0,
                revoked_reason: None,
            };
            if n == 1 {
                assert_eq!(
                    store.create_first(&rec).await.unwrap(),
                    CreateOutcome::Created
                );
            } else {
                assert_eq!(store.rotate(&rec, 0).await.unwrap(), RotateOutcome::Rotated);
            }
        }
    }
    let service = EncryptionService::new(store, kek, ServiceConfig::default());
    for v in doc["valid"].as_array().unwrap() {
        let got = service
            .decrypt_raw(v["envelope"].as_str().unwrap(), &context(&v["context"]))
            .await
            .unwrap();
        assert_eq!(
            hex::encode(got.as_bytes()),
            v["plaintext"].as_str().unwrap(),
            "{}",
            v["name"]
        );
    }
    for v in doc["invalid"].as_array().unwrap() {
        let e = service
            .decrypt(v["envelope"].as_str().unwrap(), &context(&v["context"]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, KmsError::DecryptionFailed),
            "{}: {e:?}",
            v["name"]
        );
    }
    // And a valid JSON-kind vector keeps its type.
    let num = doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["payloadKind"] == "json")
        .unwrap();
    let d = service
        .decrypt(num["envelope"].as_str().unwrap(), &Context::new())
        .await
        .unwrap();
    assert!(matches!(d, Decrypted::Json(Value::Number(_))));
}
