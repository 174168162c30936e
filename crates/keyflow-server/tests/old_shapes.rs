//! Old shapes and old names (issue 14): `keyType` aliases of `/keys/generate`,
//! `serviceCode` auto-detected under `financialData`, and `ENCRYPTION_STRICT_MODE`
//! failing closed on read in `/decrypt-fields`. (`/status?shape=legacy` is in
//! `tests/alerts.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use common::{oneshot, request, Harness, Resp, OTHER, OWN};
use keyflow_kms::access::Role;
use keyflow_kms::clock::SystemClock;
use keyflow_kms::{EncryptionService, Purpose, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, HttpSettings, Limits};
use serde_json::{json, Value};

async fn post(app: &Router, path: &str, token: &str, body: &Value) -> Resp {
    oneshot(
        app,
        request("POST", &format!("/api/encryption{path}"), Some(token))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn generate_accepts_the_old_key_type_names() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    for (i, key_type) in ["data", "DATA", "aes-256-gcm", "aes-256", "aes256"]
        .iter()
        .enumerate()
    {
        let purpose = format!("old{i}");
        let r = post(
            &app,
            "/keys/generate",
            &h.admin,
            &json!({ "purpose": purpose, "keyType": key_type }),
        )
        .await;
        assert_eq!(r.status, 201, "{key_type}: {r:?}");
        assert_eq!(r.json()["purpose"], purpose);
        assert_eq!(r.json()["algorithm"], "AES-256");
    }
    // The old body exactly as old clients send it.
    let r = post(
        &app,
        "/keys/generate",
        &h.admin,
        &json!({ "purpose": "documents", "keyType": "data" }),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    for bad in ["master", "rsa", ""] {
        let r = post(
            &app,
            "/keys/generate",
            &h.admin,
            &json!({ "purpose": "never", "keyType": bad }),
        )
        .await;
        r.assert_error(
            400,
            "invalid_request",
            "keyType: only aes-256 is supported (also accepted: aes256, data, aes-256-gcm)",
        );
    }
    // An alias is still key management: admin only.
    let r = post(
        &app,
        "/keys/generate",
        &h.service_token,
        &json!({ "purpose": "svc", "keyType": "data" }),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn the_service_code_is_encrypted_under_financial_data() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let doc = json!({
        "payment": { "cardNumber": "4111111111111111", "serviceCode": "101", "amount": 12 },
        "service_code": 201,
    });
    let r = post(
        &app,
        "/encrypt-fields",
        &h.admin,
        &json!({ "data": doc, "purpose": OTHER, "autoDetect": true }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let fields = body["encryptedFields"].as_array().unwrap();
    for path in ["payment.serviceCode", "service_code", "payment.cardNumber"] {
        assert!(fields.iter().any(|f| f == path), "{path} not in {fields:?}");
    }
    assert!(body["data"]["payment"]["serviceCode"]
        .as_str()
        .unwrap()
        .starts_with("kf1:"));
    assert_eq!(body["data"]["payment"]["amount"], 12, "not on the lists");
    // Under userData it is not sensitive.
    let r = post(
        &app,
        "/encrypt-fields",
        &h.admin,
        &json!({ "data": { "serviceCode": "101" }, "purpose": OWN, "autoDetect": true }),
    )
    .await;
    assert_eq!(r.json()["encryptedFields"], json!([]), "{r:?}");
}

/// A server whose service runs with `strict_mode` (ENCRYPTION_STRICT_MODE=true).
async fn strict_server() -> (keyflow_testkit::Env, Router, String, String) {
    let env = keyflow_testkit::Env::sqlite();
    let (store, _) = env.stores().await;
    let kek = env.init(&*store).await;
    let service = Arc::new(EncryptionService::new(
        store.clone(),
        kek,
        ServiceConfig {
            strict_mode: true,
            ..ServiceConfig::default()
        },
    ));
    service
        .keys()
        .generate(&Purpose::new(OWN).unwrap())
        .await
        .unwrap();
    let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
    let (admin, _) = keyflow_testkit::env::token(&*store, Role::Admin, &[], None).await;
    tokens.refresh().await.unwrap();
    let state = AppState::new(service, tokens, Limits::default());
    let app = keyflow_server::app(state, &HttpSettings::default());
    (env, app, admin, OWN.to_owned())
}

#[tokio::test]
async fn strict_mode_refuses_plaintext_where_a_ciphertext_is_required() {
    let (_env, app, admin, purpose) = strict_server().await;
    let enc = post(
        &app,
        "/encrypt-fields",
        &admin,
        &json!({ "data": { "ssn": "123-45-6789", "note": "hello" }, "purpose": purpose, "fields": ["note"], "autoDetect": true }),
    )
    .await;
    assert_eq!(enc.status, 200, "{enc:?}");
    let stored = enc.json()["data"].clone();

    // Ciphertexts everywhere one is required: decrypted as usual.
    let r = post(&app, "/decrypt-fields", &admin, &json!({ "data": stored })).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["ssn"], "123-45-6789");

    // A sensitive member in clear (no fields listed: the sensitive-name lists decide).
    let mut leaked = stored.clone();
    leaked["ssn"] = json!("123-45-6789");
    let r = post(&app, "/decrypt-fields", &admin, &json!({ "data": leaked })).await;
    r.assert_error(
        422,
        "plaintext_refused",
        "ENCRYPTION_STRICT_MODE: plaintext where a ciphertext is required: ssn",
    );
    assert!(!r.text().contains("6789"), "never the value: {r:?}");

    // A listed field in clear, a number included; null is allowed.
    let r = post(
        &app,
        "/decrypt-fields",
        &admin,
        &json!({ "data": { "note": 42, "ssn": null, "other": "x" }, "fields": ["note", "ssn"] }),
    )
    .await;
    r.assert_error(
        422,
        "plaintext_refused",
        "ENCRYPTION_STRICT_MODE: plaintext where a ciphertext is required: note",
    );
    let r = post(
        &app,
        "/decrypt-fields",
        &admin,
        &json!({ "data": { "ssn": null, "nickname": "ada" } }),
    )
    .await;
    assert_eq!(r.status, 200, "null and non-sensitive members pass: {r:?}");
}

#[tokio::test]
async fn without_strict_mode_plaintext_is_still_passed_through() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let r = post(
        &app,
        "/decrypt-fields",
        &h.admin,
        &json!({ "data": { "ssn": "123-45-6789" }, "fields": ["ssn"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["ssn"], "123-45-6789");
}
