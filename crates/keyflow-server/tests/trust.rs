//! Trust boundaries (issue 15) through the HTTP API: a token minted or a key state
//! flipped by someone who can write the database is refused (and raised in `/status`);
//! KeyFlow's reserved `kf.` context keys are refused on the generic routes; `/rewrap`
//! and `/blind-index` check their input before they could create a purpose's version 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use axum::Router;
use common::{oneshot, request, Harness, Resp, OWN};
use keyflow_kms::access::{self, Role};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{KeyVersion, Purpose, ServiceConfig, VersionFilter};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

async fn post(app: &Router, path: &str, token: Option<&str>, body: &Value) -> Resp {
    oneshot(
        app,
        request("POST", &format!("/api/encryption{path}"), token)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    )
    .await
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> Resp {
    oneshot(
        app,
        request("GET", &format!("/api/encryption{path}"), token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

fn app(h: &Harness) -> Router {
    h.app(keyflow_transport::TransportConfig::default())
}

/// Runs `sql` on the keystore file directly, as a database writer without the KEK.
async fn sql(h: &Harness, sql: &str) -> u64 {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&h.env.db_path))
        .await
        .unwrap();
    let n = sqlx::query(sql)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_token_minted_in_the_database_is_refused_and_raised() {
    let h = Harness::new().await;
    let app = app(&h);
    let status = get(&app, "/status", Some(&h.admin)).await;
    assert_eq!(status.json()["refusedRows"], 0);
    // The attacker's own secret, stored as an admin row beside the real ones (with a
    // MAC copied from one of them, and with none).
    let forged = access::generate(Role::Admin, vec![], "root".into(), 1, None, &OsRng).unwrap();
    let hash: String = forged
        .record
        .secret_hash
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = &forged.record.id;
    sql(
        &h,
        &format!(
            "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at, row_mac) \
             SELECT '{id}', X'{hash}', 'admin', '', 'root', 1, row_mac FROM api_tokens LIMIT 1"
        ),
    )
    .await;
    h.state.tokens.refresh().await.unwrap();
    let token = forged.token.to_string();
    let r = get(&app, "/keys", Some(&token)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post(
        &app,
        "/keys/rotate",
        Some(&token),
        &json!({ "purpose": OWN }),
    )
    .await;
    assert_eq!(r.status, 401);
    // The real tokens keep working, and the refusal is an alert.
    let status = get(&app, "/status", Some(&h.admin)).await;
    assert_eq!(status.status, 200);
    let body = status.json();
    assert!(body["refusedRows"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(body["healthStatus"], "critical");
    assert!(
        body["alerts"].to_string().contains("integrity check"),
        "{}",
        body["alerts"]
    );
}

#[tokio::test]
async fn a_revoked_key_flipped_back_in_the_database_stays_unusable() {
    let h = Harness::new().await;
    let app = app(&h);
    let p = Purpose::new(OWN).unwrap();
    let ct = h.ciphertext(&json!("secret-value"), OWN, &[]).await;
    h.service.keys().rotate(&p).await.unwrap();
    h.service
        .keys()
        .revoke(&p, KeyVersion::FIRST, "laptop stolen")
        .await
        .unwrap();
    let r = post(
        &app,
        "/decrypt",
        Some(&h.admin),
        &json!({ "encryptedData": ct }),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        sql(&h, "UPDATE key_versions SET status = 'rotating', revoked_reason = NULL WHERE purpose = 'userData' AND version = 1").await,
        1
    );
    h.service.ring().revalidate().await.unwrap();
    let r = post(
        &app,
        "/decrypt",
        Some(&h.admin),
        &json!({ "encryptedData": ct }),
    )
    .await;
    assert_ne!(r.status, 200);
    assert!(!r.text().contains("secret-value"));
    // Listings leave the forged row out; /status says why.
    let listed = h
        .service
        .keys()
        .list(&VersionFilter {
            purpose: Some(p.clone()),
            status: None,
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.version.get()).collect::<Vec<_>>(),
        [2]
    );
    let status = get(&app, "/status", Some(&h.admin)).await.json();
    assert!(status["refusedRows"].as_u64().unwrap() >= 1, "{status}");
}

#[tokio::test]
async fn reserved_context_keys_are_refused_on_the_generic_routes() {
    let h = Harness::new().await;
    let app = app(&h);
    let ct = h.ciphertext(&json!("x"), OWN, &[]).await;
    let ctx = json!({ "kf.field": "ssn", "kf.doc": "someone-else" });
    for (path, body) in [
        (
            "/encrypt",
            json!({ "data": "forged", "purpose": OWN, "context": ctx }),
        ),
        ("/decrypt", json!({ "encryptedData": ct, "context": ctx })),
        (
            "/batch/encrypt",
            json!({ "items": ["a"], "purpose": OWN, "context": ctx }),
        ),
        ("/batch/decrypt", json!({ "items": [ct], "context": ctx })),
        ("/rewrap", json!({ "encryptedData": ct, "context": ctx })),
    ] {
        let r = post(&app, path, Some(&h.service_token), &body).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains("reserved"), "{path}: {}", r.text());
    }
    // Other keys still work (the control case).
    let r = post(
        &app,
        "/encrypt",
        Some(&h.service_token),
        &json!({ "data": "ok", "purpose": OWN, "context": { "recordId": "r-1", "kfield": "x" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn bad_rewrap_and_blind_index_requests_create_no_key() {
    let h = Harness::new().await;
    let app = app(&h);
    // A well-formed ciphertext of a purpose this keystore has never seen (made by
    // another keystore): it cannot authenticate here.
    let other = keyflow_testkit::Env::new();
    let foreign = other.service(ServiceConfig::default()).await;
    let ghost = Purpose::new("ghostData").unwrap();
    let ct = foreign
        .encrypt_value(&json!(1), &ghost, &Default::default())
        .await
        .unwrap();
    let r = post(
        &app,
        "/rewrap",
        Some(&h.admin),
        &json!({ "encryptedData": ct }),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = post(
        &app,
        "/blind-index",
        Some(&h.admin),
        &json!({ "data": "a@b.c", "purpose": "ghostIndex", "field": "email", "bits": 4 }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    for p in ["ghostData", "ghostIndex"] {
        let filter = VersionFilter {
            purpose: Some(Purpose::new(p).unwrap()),
            status: None,
        };
        assert!(
            h.store.list_versions(&filter).await.unwrap().is_empty(),
            "{p}"
        );
    }
    // A valid blind-index request still creates the purpose on first use, as before.
    let r = post(
        &app,
        "/blind-index",
        Some(&h.admin),
        &json!({ "data": "a@b.c", "purpose": "ghostIndex", "field": "email", "bits": 16 }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `/status` lists the old KEK files beside the KEK file: each still unlocks dumps of
/// the keystore from its time until `keyflow kek retire --yes` removes it.
#[tokio::test]
async fn status_lists_retired_kek_files() {
    let h = Harness::new().await;
    let app = app(&h);
    let body = get(&app, "/status", Some(&h.auditor)).await.json();
    assert_eq!(
        body["retiredKekFiles"],
        json!([]),
        "unknown KEK path: nothing listed"
    );
    h.state.set_kek_path(h.env.kek_path.clone());
    assert_eq!(
        get(&app, "/status", Some(&h.auditor)).await.json()["retiredKekFiles"],
        json!([])
    );
    let kek_id = h.store.get_meta("kek_id").await.unwrap().unwrap();
    let retired = h
        .env
        .kek_path
        .with_file_name(format!("kek.json.retired-{kek_id}"));
    std::fs::copy(&h.env.kek_path, &retired).unwrap();
    let listed = get(&app, "/status", Some(&h.auditor)).await.json()["retiredKekFiles"].clone();
    assert_eq!(
        listed,
        json!([{ "path": retired.display().to_string(), "kekId": kek_id, "kind": "retired" }])
    );
}

/// Two instances on one keystore (two transport stacks, two keystore handles — as two
/// processes behind a load balancer): a signed key-management request accepted by one
/// is a replay on the other, because seen nonces live in the keystore. Also format 2:
/// the signature covers `Host` and the `Authorization` header.
#[tokio::test]
async fn signed_requests_replay_on_no_instance() {
    use keyflow_server::nonces::KeystoreNonces;
    use keyflow_transport::{IntegritySecret, SignedExtras, TransportConfig};
    use std::sync::Arc;
    const SECRET: &str = "an integrity secret of at least 32 bytes";
    let h = Harness::new().await;
    let instance = |store: Arc<dyn keyflow_kms::Keystore>| {
        h.app(TransportConfig {
            integrity_secret: Some(IntegritySecret::new(SECRET).unwrap()),
            integrity_required_prefixes: vec!["/api/encryption/keys".into()],
            nonce_store: Some(Arc::new(KeystoreNonces::new(store))),
            ..TransportConfig::default()
        })
    };
    let a = instance(h.store.clone());
    let b = instance(h.env.store().await);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = "/api/encryption/keys";
    let auth = format!("Bearer {}", h.admin);
    let req = |nonce: &str, sent_auth: &str| {
        let sig = keyflow_transport::sign_request_v2(
            &IntegritySecret::new(SECRET).unwrap(),
            "GET",
            path,
            now,
            nonce,
            SignedExtras {
                host: "kms.example.com",
                authorization: auth.as_bytes(),
            },
            b"",
        );
        axum::http::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "kms.example.com")
            .header("authorization", sent_auth)
            .header("x-keyflow-timestamp", now.to_string())
            .header("x-keyflow-nonce", nonce)
            .header("x-keyflow-signature", sig)
            .header("x-keyflow-signature-version", "2")
            .body(Body::empty())
            .unwrap()
    };
    let n = "shared-nonce-0000000001";
    let r = oneshot(&a, req(n, &auth)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for app in [&b, &a] {
        let r = oneshot(app, req(n, &auth)).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "integrity_replayed");
    }
    // The same signature presented with another token does not verify.
    let other = format!("Bearer {}", h.auditor);
    let r = oneshot(&b, req("shared-nonce-0000000002", &other)).await;
    assert_eq!(r.json()["error"], "integrity_invalid", "{}", r.text());
}
