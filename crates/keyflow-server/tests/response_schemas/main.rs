//! Every route's real answers against the OpenAPI document (`/openapi.json`): each
//! operation is called until it succeeds (and a few fail), and every answer must have
//! a documented status, a documented content type and, for JSON, a body that conforms
//! to the documented schema — strictly: an undocumented member is drift too. The hot
//! routes write their JSON by hand; this keeps their schemas honest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

#[path = "../common/mod.rs"]
mod common;
mod validate;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{oneshot, request, Harness, Resp, OWN};
use keyflow_transport::TransportConfig;
use serde_json::{json, Value};

/// Calls routes and checks each answer against the document.
struct Checker {
    app: Router,
    doc: Value,
    admin: String,
    failures: Vec<String>,
    /// `METHOD path` of the operations answered with a 2xx.
    succeeded: BTreeSet<String>,
}

impl Checker {
    async fn call(&mut self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let req = request(method, uri, Some(&self.admin))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let resp = oneshot(&self.app, req).await;
        self.check(method, uri, &resp);
        resp
    }

    async fn post(&mut self, path: &str, body: Value) -> Value {
        let r = self
            .call(
                "POST",
                path,
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    async fn get(&mut self, uri: &str) -> Resp {
        self.call("GET", uri, "application/json", Vec::new()).await
    }

    fn check(&mut self, method: &str, uri: &str, resp: &Resp) {
        let path = uri.split('?').next().unwrap();
        let label = format!("{method} {uri} → {}", resp.status.as_u16());
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let status = resp.status.as_u16().to_string();
        let Some(documented) = op["responses"].get(&status) else {
            self.failures
                .push(format!("{label}: status not documented"));
            return;
        };
        if resp.status.is_success() {
            self.succeeded.insert(format!("{method} {path}"));
        }
        let content_type = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap().trim();
        let content = documented["content"].as_object();
        let schema = content.and_then(|c| c.get(media).or_else(|| c.get("*/*")));
        let Some(schema) = schema else {
            self.failures.push(format!(
                "{label}: content type {content_type:?} not documented"
            ));
            return;
        };
        if media == "application/json" {
            let body: Value = match serde_json::from_slice(&resp.body) {
                Ok(v) => v,
                Err(e) => {
                    self.failures.push(format!("{label}: not JSON: {e}"));
                    return;
                }
            };
            for e in validate::check(&self.doc, &schema["schema"], &body) {
                self.failures.push(format!("{label}: {e}"));
            }
        }
    }
}

const PASSWORD: &str = "a backup password, long enough";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_conforms_to_the_document() {
    let h = Harness::new().await;
    let mut c = Checker {
        app: h.app(TransportConfig::default()),
        doc: keyflow_server::openapi::document(),
        admin: h.admin.clone(),
        failures: Vec::new(),
        succeeded: BTreeSet::new(),
    };
    const API: &str = "/api/encryption";
    let at = |p: &str| format!("{API}{p}");

    // Data routes, with each kind of value and a failing item in each batch.
    let ctx = json!({ "recordId": "r-1" });
    let text = c
        .post(
            &at("/encrypt"),
            json!({ "data": "4532123456789012", "purpose": OWN, "context": ctx }),
        )
        .await;
    let number = c
        .post(
            &at("/encrypt"),
            json!({ "data": 42.5, "purpose": OWN, "returnObject": true }),
        )
        .await;
    let bytes = c
        .post(
            &at("/encrypt"),
            json!({ "data": "AAEC/w==", "encoding": "base64", "purpose": OWN }),
        )
        .await;
    c.post(
        &at("/encrypt"),
        json!({ "data": {"a": [1, null]}, "purpose": OWN, "deterministic": true }),
    )
    .await;
    c.post(
        &at("/decrypt"),
        json!({ "encryptedData": text["encryptedData"], "context": ctx }),
    )
    .await;
    c.post(
        &at("/decrypt"),
        json!({ "encryptedData": number["encryptedData"] }),
    )
    .await;
    c.post(
        &at("/decrypt"),
        json!({ "encryptedData": bytes["encryptedData"] }),
    )
    .await;
    c.post(&at("/decrypt"), json!({ "encryptedData": "kf1:AAAA" }))
        .await;
    let batch = c
        .post(
            &at("/batch/encrypt"),
            json!({ "items": ["a", 1, true, null, {"k": "v"}], "purpose": OWN }),
        )
        .await;
    let sealed = batch["results"][0]["encryptedData"].clone();
    c.post(
        &at("/batch/decrypt"),
        json!({ "items": [sealed, "kf1:AAAA", 7, bytes["encryptedData"]] }),
    )
    .await;
    c.post(
        &at("/blind-index"),
        json!({ "data": "a@b.c", "purpose": OWN, "field": "email" }),
    )
    .await;
    c.post(
        &at("/blind-index"),
        json!({ "data": 5, "purpose": OWN, "path": "user.email", "bits": 16, "allVersions": true }),
    )
    .await;
    for kind in [
        "card",
        "bankAccount",
        "ssn",
        "phone",
        "email",
        "iban",
        "default",
    ] {
        c.post(
            &at("/mask"),
            json!({ "data": "user@example.com", "type": kind }),
        )
        .await;
    }
    c.post(&at("/mask"), json!({ "data": 4532123456789012_u64 }))
        .await;

    // Field routes.
    let doc = json!({ "user": { "email": "a@b.c", "ssn": "123-45-6789", "cvv": "123" },
                      "cards": [{ "cardNumber": "4532123456789012" }] });
    let enc = c
        .post(&at("/encrypt-fields"), json!({ "data": doc, "purpose": OWN, "autoDetect": true,
              "fields": ["cards[*].cardNumber", { "path": "user.email", "mode": "blindIndex", "bits": 16 }],
              "documentId": "d-1" }))
        .await;
    c.post(
        &at("/decrypt-fields"),
        json!({ "data": enc["data"], "documentId": "d-1" }),
    )
    .await;

    // File routes: JSON and streamed.
    let file = c
        .post(
            &at("/encrypt-file"),
            json!({ "data": STANDARD.encode(b"hello file"), "purpose": OWN,
              "fileName": "a.txt", "mimeType": "text/plain" }),
        )
        .await;
    c.post(
        &at("/decrypt-file"),
        json!({ "encryptedData": file["encryptedData"] }),
    )
    .await;
    c.post(
        &at("/decrypt-file"),
        json!({ "encryptedData": STANDARD.encode(b"x") }),
    )
    .await;
    let streamed = c
        .call(
            "POST",
            &at(&format!(
                "/files/encrypt?purpose={OWN}&name=b.pdf&mime=application/pdf"
            )),
            "application/octet-stream",
            b"%PDF streamed".to_vec(),
        )
        .await;
    c.call(
        "POST",
        &at("/files/decrypt"),
        "application/vnd.keyflow.file",
        streamed.body.to_vec(),
    )
    .await;

    // Keys and their lifecycle.
    c.post(
        &at("/keys/generate"),
        json!({ "purpose": "schemaCheck", "keyType": "aes-256" }),
    )
    .await;
    c.post(&at("/keys/generate"), json!({ "purpose": "schemaCheck" }))
        .await;
    let rotated = c
        .post(&at("/keys/rotate"), json!({ "purpose": "schemaCheck" }))
        .await;
    let old = rotated["oldVersion"].clone();
    c.post(&at("/keys/rotate"), json!({ "purpose": "schemaCheck" }))
        .await;
    c.get(&at("/keys")).await;
    c.get(&at("/keys?purpose=schemaCheck&status=active")).await;
    c.get(&at("/keys/policy?purpose=schemaCheck")).await;
    c.post(
        &at("/keys/policy"),
        json!({ "purpose": "schemaCheck", "rotationDays": 30, "warnDays": 3 }),
    )
    .await;
    c.post(
        &at("/keys/rotate-due"),
        json!({ "dryRun": true, "at": "2099-01-01T00:00:00Z" }),
    )
    .await;
    c.post(&at("/keys/rotate-due"), json!({})).await;
    c.post(
        &at("/keys/revoke"),
        json!({ "purpose": "schemaCheck", "version": old, "reason": "test" }),
    )
    .await;
    c.post(
        &at("/keys/reinstate"),
        json!({ "purpose": "schemaCheck", "version": old }),
    )
    .await;
    c.post(
        &at("/keys/revoke"),
        json!({ "purpose": "schemaCheck", "version": old, "reason": "again" }),
    )
    .await;
    c.post(
        &at("/keys/destroy"),
        json!({ "purpose": "schemaCheck", "version": old, "confirm": true }),
    )
    .await;
    c.get(&at("/keys?status=destroyed")).await;
    let old_ct = text["encryptedData"].clone();
    c.post(&at("/keys/rotate"), json!({ "purpose": OWN })).await;
    c.post(
        &at("/rewrap"),
        json!({ "encryptedData": old_ct, "context": ctx }),
    )
    .await;
    c.post(
        &at("/rewrap"),
        json!({ "items": [number["encryptedData"], "kf1:AAAA"] }),
    )
    .await;
    let backup = c
        .call(
            "POST",
            &at("/keys/backup"),
            "application/json",
            serde_json::to_vec(&json!({ "password": PASSWORD })).unwrap(),
        )
        .await;
    c.post(
        &at("/keys/restore"),
        json!({ "password": PASSWORD, "backup": STANDARD.encode(&backup.body), "dryRun": true }),
    )
    .await;

    // Health, status, metrics, audit, compliance.
    c.get(&at("/health")).await;
    c.get(&at("/status")).await;
    c.get(&at("/status?shape=legacy")).await;
    c.get("/metrics").await;
    c.get(&at("/audit?limit=3")).await;
    c.get(&at("/audit?since=2020-01-01T00:00:00Z&operation=encrypt"))
        .await;
    for format in ["json", "markdown", "html"] {
        c.get(&at(&format!("/compliance?format={format}"))).await;
    }

    // Every operation of the document answered with a success at least once.
    let mut never = Vec::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let op = format!("{} {path}", method.to_uppercase());
            if !c.succeeded.contains(&op) {
                never.push(op);
            }
        }
    }
    assert!(never.is_empty(), "never answered with a success: {never:?}");
    assert!(
        c.failures.is_empty(),
        "{} answers do not conform:\n{}",
        c.failures.len(),
        c.failures.join("\n")
    );
}

/// The check itself: drift of each kind is caught.
#[test]
fn the_check_catches_drift() {
    let doc = keyflow_server::openapi::document();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let good = json!({ "keyId": "p:v1", "purpose": "p", "version": 1, "status": "active",
        "algorithm": "AES-256", "createdAt": "2026-01-01T00:00:00Z",
        "statusChangedAt": "2026-01-01T00:00:00.123Z", "encryptions": 0 });
    assert_eq!(
        validate::check(&doc, &schema("KeyMetadata"), &good),
        Vec::<String>::new()
    );
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("keyId");
    let mut extra = good.clone();
    extra["material"] = json!("AAAA");
    let mut wrong_type = good.clone();
    wrong_type["version"] = json!("1");
    let mut wrong_enum = good.clone();
    wrong_enum["status"] = json!("lost");
    let mut wrong_time = good.clone();
    wrong_time["createdAt"] = json!("yesterday");
    for bad in [missing, extra, wrong_type, wrong_enum, wrong_time] {
        assert!(
            !validate::check(&doc, &schema("KeyMetadata"), &bad).is_empty(),
            "{bad}"
        );
    }
    // oneOf: a batch item is a success or an error, never neither.
    let item = |v: Value| validate::check(&doc, &schema("BatchEncryptResult"), &v);
    assert!(item(json!({ "success": true, "encryptedData": "kf1:AAAA" })).is_empty());
    assert!(item(json!({ "success": false, "error": "x", "message": "y" })).is_empty());
    assert!(!item(json!({ "success": true, "encryptedData": "plain" })).is_empty());
    assert!(!item(json!({ "success": true })).is_empty());
}
