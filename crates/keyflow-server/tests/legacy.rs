//! Transition reads of legacy data (issue 17): off by default; when on, `/decrypt`,
//! `/batch/decrypt`, `/decrypt-fields` read legacy packages and field documents of
//! imported keys (authorized by the key's purpose, answers marked `legacy: true`),
//! `/rewrap` turns a package into a KeyFlow ciphertext, and `/status` counts the reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use axum::Router;
use common::{oneshot, request, Harness, Resp};
use keyflow_kms::access::Role;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_legacy::keys::parse_key_documents;
use keyflow_legacy::{import, write, LegacyKek};
use serde_json::{json, Value};

const PURPOSE: &str = "legacyData";
const DEK1: [u8; 32] = [0x31; 32];
const DEK2: [u8; 32] = [0x32; 32];

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

async fn status(app: &Router, h: &Harness) -> Value {
    oneshot(
        app,
        request("GET", "/api/encryption/status", Some(&h.admin))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .json()["legacy"]
        .clone()
}

/// Imports two legacy versions of `legacyData`; returns a service token granted it.
async fn setup(h: &Harness) -> String {
    let kek = LegacyKek::from_bytes(&[0x77; 32]).unwrap();
    let docs = [(1, &DEK1, "rotating"), (2, &DEK2, "active")]
        .map(|(v, dek, status)| {
            let wrapped = write::wrap_key(&kek, dek, &OsRng).unwrap();
            write::key_document(&format!("legacyData-{v}"), PURPOSE, v, status, &wrapped)
        })
        .join("\n");
    let census = import::import(
        &h.service,
        &kek,
        vec![parse_key_documents(&docs, "keys")],
        false,
    )
    .await
    .unwrap();
    assert_eq!(census.imported, 2);
    h.token(Role::Service, &[PURPOSE], None).await.0
}

fn package(text: &[u8]) -> String {
    write::package(&DEK2, "legacyData-2", 2, text, None, &OsRng).unwrap()
}

#[tokio::test]
async fn off_by_default() {
    let h = Harness::new().await;
    let token = setup(&h).await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let r = post(
        &app,
        "/decrypt",
        &token,
        &json!({ "encryptedData": package(b"x") }),
    )
    .await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(status(&app, &h).await, json!({ "enabled": false }));
}

#[tokio::test]
async fn transition_reads_decrypt_rewrap_and_count() {
    let h = Harness::new().await;
    let token = setup(&h).await;
    h.state.enable_legacy_reads();
    let app = h.app(keyflow_transport::TransportConfig::default());

    let r = post(
        &app,
        "/decrypt",
        &token,
        &json!({ "encryptedData": package(br#"{"iban":"DE89"}"#) }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({ "data": { "iban": "DE89" }, "legacy": true })
    );

    // Authorized by the purpose the key was imported under.
    let r = post(
        &app,
        "/decrypt",
        &h.service_token,
        &json!({ "encryptedData": package(b"x") }),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // A tampered package, a truncated tag, an unknown key.
    let mut p: Value = serde_json::from_slice(&b64d(&package(b"secret"))).unwrap();
    p["ciphertext"] = json!("AAAAAAA=");
    let r = post(
        &app,
        "/decrypt",
        &token,
        &json!({ "encryptedData": b64e(&p) }),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (422, json!("decryption_failed"))
    );
    assert!(!r.text().contains("secret"));
    let mut p: Value = serde_json::from_slice(&b64d(&package(b"x"))).unwrap();
    p["authTag"] = json!("AAAAAA==");
    let r = post(
        &app,
        "/decrypt",
        &token,
        &json!({ "encryptedData": b64e(&p) }),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (422, json!("invalid_ciphertext"))
    );
    p["keyId"] = json!("legacyData-9");
    p["authTag"] = json!("AAAAAAAAAAAAAAAAAAAAAA==");
    assert_eq!(
        post(
            &app,
            "/decrypt",
            &token,
            &json!({ "encryptedData": b64e(&p) })
        )
        .await
        .status,
        422
    );

    // A batch mixing a KeyFlow ciphertext and legacy packages.
    let kf = h
        .service
        .encrypt_value(
            &json!(7),
            &keyflow_kms::Purpose::new(PURPOSE).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let r = post(
        &app,
        "/batch/decrypt",
        &token,
        &json!({ "items": [kf, package(b"a"), "eyJub3QiOiJ2YWxpZCJ9"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(
        (b["total"].clone(), b["successful"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(b["results"][0], json!({ "success": true, "data": 7 }));
    assert_eq!(
        b["results"][1],
        json!({ "success": true, "data": "a", "legacy": true })
    );
    assert_eq!(b["results"][2]["success"], false);

    // A legacy field document.
    let (iv, tag, ct) = write::seal(&DEK1, b"123-45-6789", b"", &OsRng).unwrap();
    let doc = json!({"_id": "u1", "name": "Ann", "ssn": ct,
        "_encrypted": {"ssn": {"keyId": "legacyData-1", "keyVersion": 1, "iv": iv, "authTag": tag, "algorithm": "aes-256-gcm"}},
        "_encryptionVersion": "1.0"});
    let r = post(&app, "/decrypt-fields", &token, &json!({ "data": doc })).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["data"],
        json!({"_id": "u1", "name": "Ann", "ssn": "123-45-6789"})
    );
    assert_eq!(r.json()["legacy"], true);

    // Rewrap: a KeyFlow ciphertext under the purpose's active version comes back.
    let r = post(
        &app,
        "/rewrap",
        &token,
        &json!({ "encryptedData": package(b"hello") }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("kf1:") && r.json()["legacy"] == true);
    let r = post(&app, "/decrypt", &token, &json!({ "encryptedData": ct })).await;
    assert_eq!(r.json(), json!({ "data": "hello" }));

    let s = status(&app, &h).await;
    assert_eq!(s["enabled"], true);
    // Read: one /decrypt, one batch item, one field, one rewrap. Failed: the refused
    // purpose, the tampered package, the short tag, the unknown key, the bad batch item.
    assert_eq!(s["valuesRead"], 4, "{s}");
    assert_eq!(s["rewrapped"], 1);
    assert_eq!(s["failures"], 5);
    assert!(s["lastReadAt"].is_string());
}

fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn b64e(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}
