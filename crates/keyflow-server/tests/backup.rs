//! `POST /keys/backup` and `POST /keys/restore`: admin only, the file's bytes out, a
//! report back, stable error codes, and a restore into another KeyFlow with another KEK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{oneshot, request, Harness, Resp, OWN};
use serde_json::{json, Value};

const PASSWORD: &str = "a backup password, long enough";

async fn post(app: &Router, path: &str, token: &str, body: &Value) -> Resp {
    let req = request("POST", path, Some(token))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    oneshot(app, req).await
}

async fn backup(h: &Harness, app: &Router) -> Vec<u8> {
    let r = post(
        app,
        "/api/encryption/keys/backup",
        &h.admin,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(&r.body[..8], b"KFBACKUP");
    r.body.to_vec()
}

#[tokio::test]
async fn backup_and_restore_are_admin_only() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    for token in [&h.service_token, &h.auditor] {
        let r = post(
            &app,
            "/api/encryption/keys/backup",
            token,
            &json!({ "password": PASSWORD }),
        )
        .await;
        assert_eq!(r.status.as_u16(), 403, "{r:?}");
        assert_eq!(r.json()["error"], "forbidden");
        let r = post(
            &app,
            "/api/encryption/keys/restore",
            token,
            &json!({ "password": PASSWORD, "backup": "S0ZCQUNLVVA=", "dryRun": true }),
        )
        .await;
        assert_eq!(r.status.as_u16(), 403, "{r:?}");
    }
    let r = oneshot(
        &app,
        request("POST", "/api/encryption/keys/backup", None)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"password":"x"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status.as_u16(), 401, "{r:?}");
}

#[tokio::test]
async fn conflicting_keys_are_refused_with_409_and_new_ones_reported() {
    let a = Harness::new().await;
    let app_a = a.app(keyflow_transport::TransportConfig::default());
    a.service
        .keys()
        .generate(&keyflow_kms::Purpose::new("healthData").unwrap())
        .await
        .unwrap();
    let b64 = STANDARD.encode(backup(&a, &app_a).await);

    // B has its own KEK and its own userData/financialData v1: those conflict.
    let b = Harness::new().await;
    let app_b = b.app(keyflow_transport::TransportConfig::default());
    let gen = b.store.generation().await.unwrap();
    let r = post(
        &app_b,
        "/api/encryption/keys/restore",
        &b.admin,
        &json!({ "password": PASSWORD, "backup": b64, "dryRun": true }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    let report = r.json();
    assert_eq!(report["dryRun"], true);
    assert_eq!(
        (
            report["total"].as_u64(),
            report["inserted"].as_u64(),
            report["refused"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{report}"
    );
    let actions: Vec<(&str, &str)> = report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["keyId"].as_str().unwrap(), v["action"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("healthData:v1", "insert")), "{report}");
    assert!(actions.contains(&("userData:v1", "refuse")), "{report}");

    let r = post(
        &app_b,
        "/api/encryption/keys/restore",
        &b.admin,
        &json!({ "password": PASSWORD, "backup": b64 }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 409, "{r:?}");
    assert_eq!(r.json()["error"], "restore_conflict");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("different key material"));
    assert_eq!(b.store.generation().await.unwrap(), gen, "nothing written");
}

#[tokio::test]
async fn a_restore_over_http_decrypts_old_data_and_merges() {
    let a = Harness::new().await;
    let app_a = a.app(keyflow_transport::TransportConfig::default());
    let ct = a
        .ciphertext(&json!("4111111111111111"), OWN, &[("recordId", "r-1")])
        .await;
    let file = backup(&a, &app_a).await;

    // Restoring into the same server: everything identical, skipped.
    let r = post(
        &app_a,
        "/api/encryption/keys/restore",
        &a.admin,
        &json!({ "password": PASSWORD, "backup": STANDARD.encode(&file) }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    let report = r.json();
    assert_eq!(
        (
            report["dryRun"].as_bool(),
            report["inserted"].as_u64(),
            report["skipped"].as_u64()
        ),
        (Some(false), Some(0), Some(2)),
        "{report}"
    );

    // A keystore with another KEK and no keys: the library-level restore path is the
    // same code; here the HTTP one, on a fresh service over an empty keystore.
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn keyflow_kms::Keystore> = std::sync::Arc::new(
        keyflow_store_sqlite::SqliteKeystore::open(&dir.path().join("k.db"))
            .await
            .unwrap(),
    );
    let (_, kek) = keyflow_kms::kek_provider::init(
        &dir.path().join("kek.json"),
        &keyflow_kms::kek_provider::KekPassword::new("another KEK password".into(), false).unwrap(),
        keyflow_kms::keyflow_core::kek::KdfParams {
            iterations: keyflow_kms::keyflow_core::kek::MIN_PBKDF2_ITERATIONS,
        },
        &*store,
        &keyflow_kms::keyflow_core::OsRng,
    )
    .await
    .unwrap();
    let fresh = std::sync::Arc::new(keyflow_kms::EncryptionService::new(
        store.clone(),
        kek,
        keyflow_kms::ServiceConfig::default(),
    ));
    let tokens = keyflow_server::auth::TokenCache::new(
        store.clone(),
        std::sync::Arc::new(keyflow_kms::clock::SystemClock),
    );
    let new = keyflow_kms::access::generate(
        keyflow_kms::access::Role::Admin,
        vec![],
        "admin".into(),
        common::now_millis() - 60_000,
        None,
        &keyflow_kms::keyflow_core::OsRng,
    )
    .unwrap();
    store.insert_token(&new.record).await.unwrap();
    tokens.refresh().await.unwrap();
    let state = keyflow_server::AppState::new(fresh, tokens, keyflow_server::Limits::default());
    let app = keyflow_server::app(state, &keyflow_server::HttpSettings::default());
    let admin = new.token.to_string();

    let r = post(
        &app,
        "/api/encryption/keys/restore",
        &admin,
        &json!({ "password": PASSWORD, "backup": STANDARD.encode(&file) }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(r.json()["inserted"], 2);
    let r = post(
        &app,
        "/api/encryption/decrypt",
        &admin,
        &json!({ "encryptedData": ct, "context": {"recordId": "r-1"} }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(r.json()["data"], "4111111111111111");
}

#[tokio::test]
async fn bad_passwords_and_damaged_backups_are_4xx_and_change_nothing() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let r = post(
        &app,
        "/api/encryption/keys/backup",
        &h.admin,
        &json!({ "password": "too short" }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("16 characters"));

    let file = backup(&h, &app).await;
    let gen = h.store.generation().await.unwrap();
    let restore = |body: Value| {
        let app = app.clone();
        let admin = h.admin.clone();
        async move { post(&app, "/api/encryption/keys/restore", &admin, &body).await }
    };
    let r = restore(
        json!({ "password": "the wrong password, long", "backup": STANDARD.encode(&file) }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_backup");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("wrong password"));

    let r = restore(
        json!({ "password": PASSWORD, "backup": STANDARD.encode(&file[..file.len() - 3]) }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "{r:?}");
    let mut flipped = file.clone();
    let at = flipped.len() - 30;
    flipped[at] ^= 1;
    let r = restore(json!({ "password": PASSWORD, "backup": STANDARD.encode(&flipped) })).await;
    assert_eq!(r.status.as_u16(), 422, "{r:?}");
    let r = restore(json!({ "password": PASSWORD, "backup": "%%%" })).await;
    assert_eq!(r.status.as_u16(), 400, "{r:?}");
    let body = r.text();
    assert!(!body.contains(PASSWORD), "{body}");
    assert_eq!(h.store.generation().await.unwrap(), gen, "nothing written");
}
