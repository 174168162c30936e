//! `#[derive(Encrypt)]`: round trips, auto-detection, modes, binding, re-encryption,
//! and interoperability with the JSON document API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(missing_docs)]

mod common;

use common::{env, purpose};
use keyflow_fields::blind::search_terms;
use keyflow_fields::{decrypt_fields, Binding, Encrypt, FieldsError};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encrypt)]
#[keyflow(purpose = "userData", auto_detect)]
pub struct User {
    pub id: String,
    /// Auto-detected (pii).
    pub ssn: String,
    #[encrypted(blind_index, bits = 16)]
    pub email: String,
    #[encrypted(deterministic, purpose = "financialData")]
    pub bank_account_number: String,
    #[encrypted]
    pub age: u32,
    #[encrypted(purpose = "healthData")]
    pub allergies: Vec<String>,
    #[keyflow(plain)]
    pub full_name: String,
    pub nickname: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encrypt)]
#[serde(rename_all = "camelCase")]
#[keyflow(purpose = "financialData")]
pub struct Payout {
    pub payout_id: u64,
    #[encrypted(blind_index, distinct = 1000000)]
    pub iban: String,
    #[encrypted]
    #[serde(rename = "amountCents")]
    pub amount: i64,
    pub approved: bool,
}

fn ada() -> User {
    User {
        id: "u-1".into(),
        ssn: "123-45-6789".into(),
        email: "ada@example.com".into(),
        bank_account_number: "000123456789".into(),
        age: 36,
        allergies: vec!["penicillin".into()],
        full_name: "Ada Lovelace".into(),
        nickname: None,
    }
}

#[tokio::test]
async fn derive_round_trip_and_field_choices() {
    let e = env().await;
    let b = Binding::doc("u-1");
    let user = ada();
    let enc: EncryptedUser = user.encrypt(&e.service, &b).await.unwrap();
    // Types say what is encrypted: these are Encrypted<T>, the rest is plain.
    let key = |s: keyflow_fields::Encrypted<String>| s.summary().unwrap().key_id;
    assert_eq!(key(enc.ssn.clone()), "userData:v1");
    assert_eq!(key(enc.email.clone()), "userData:v1");
    assert_eq!(key(enc.bank_account_number.clone()), "financialData:v1");
    assert!(enc.bank_account_number.summary().unwrap().deterministic);
    assert_eq!(enc.allergies.summary().unwrap().purpose, "healthData");
    assert_eq!(enc.full_name, "Ada Lovelace");
    assert_eq!(enc.email_bidx.as_str().len(), 4);
    assert!(!format!("{enc:?}").contains("123-45-6789"));

    let back: User = enc.decrypt(&e.service, &b).await.unwrap();
    assert_eq!(back, user);

    // Bound to the record id.
    let err = enc
        .decrypt(&e.service, &Binding::doc("u-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FieldsError::Decrypt { ref path, .. } if path == "ssn"),
        "{err}"
    );

    // Deterministic field: equal value, equal ciphertext (same record binding).
    let again = user.encrypt(&e.service, &b).await.unwrap();
    assert_eq!(again.bank_account_number, enc.bank_account_number);
    assert_ne!(again.ssn, enc.ssn);
    assert_eq!(again.email_bidx, enc.email_bidx);
}

#[tokio::test]
async fn derived_records_interoperate_with_the_json_api() {
    let e = env().await;
    let b = Binding::doc("u-1");
    let enc = ada().encrypt(&e.service, &b).await.unwrap();
    let stored = serde_json::to_value(&enc).unwrap();
    // The JSON API decrypts a derived record (same AAD labels) and drops the index.
    let (plain, report) = decrypt_fields(&e.service, stored.clone(), None, &b)
        .await
        .unwrap();
    assert_eq!(report.decrypted.len(), 5);
    assert_eq!(plain, serde_json::to_value(ada()).unwrap());
    // And a stored JSON document deserializes into the twin type.
    let parsed: EncryptedUser = serde_json::from_value(stored).unwrap();
    assert_eq!(parsed.decrypt(&e.service, &b).await.unwrap(), ada());
    // A plaintext cannot pose as the twin.
    let mut bad = serde_json::to_value(&enc).unwrap();
    bad["ssn"] = json!("123-45-6789");
    assert!(serde_json::from_value::<EncryptedUser>(bad).is_err());
}

#[tokio::test]
async fn reencrypt_moves_to_the_active_version_and_keeps_search_working() {
    let e = env().await;
    let b = Binding::doc("u-1");
    let enc = ada().encrypt(&e.service, &b).await.unwrap();
    // Nothing to do yet.
    let same = enc.reencrypt(&e.service, &b).await.unwrap();
    assert_eq!(same.ssn, enc.ssn);
    assert_eq!(same.email_bidx, enc.email_bidx);

    e.service.keys().rotate(&purpose("userData")).await.unwrap();
    let moved = enc.reencrypt(&e.service, &b).await.unwrap();
    assert_eq!(moved.ssn.summary().unwrap().key_version, 2);
    assert_eq!(moved.email.summary().unwrap().key_version, 2);
    assert_eq!(
        moved.bank_account_number, enc.bank_account_number,
        "financialData did not rotate"
    );
    assert_ne!(
        moved.email_bidx, enc.email_bidx,
        "index recomputed under v2"
    );
    assert_eq!(moved.decrypt(&e.service, &b).await.unwrap(), ada());

    // A search finds both the old and the re-indexed record.
    let terms = search_terms(
        &e.service,
        &purpose("userData"),
        "email",
        &json!("ada@example.com"),
        16,
    )
    .await
    .unwrap();
    assert!(terms.contains(&enc.email_bidx.as_str().to_owned()));
    assert!(terms.contains(&moved.email_bidx.as_str().to_owned()));
}

#[tokio::test]
async fn serde_attributes_carry_over_and_distinct_sets_the_bits() {
    let e = env().await;
    let p = Payout {
        payout_id: 7,
        iban: "DE89370400440532013000".into(),
        amount: 12_345,
        approved: true,
    };
    let b = Binding::doc("7");
    let enc = p.encrypt(&e.service, &b).await.unwrap();
    let v = serde_json::to_value(&enc).unwrap();
    assert_eq!(v["payoutId"], 7);
    assert!(v["amountCents"].as_str().unwrap().starts_with("kf1:"));
    // distinct = 1,000,000 → 18 bits → 3 bytes → 6 hex digits (trailing bits zero).
    assert_eq!(v["ibanBidx"].as_str().unwrap().len(), 6);
    assert_eq!(enc.decrypt(&e.service, &b).await.unwrap(), p);
}
