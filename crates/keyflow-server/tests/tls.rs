//! End-to-end tests over real TLS on an ephemeral loopback port, wired like
//! `keyflow serve`: every route's success, authentication and authorization failures,
//! request errors with their stable codes, security headers on every response, TLS
//! versions, HTTP/2 by ALPN and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::{
    bounded, client_config, http1, now_millis, request, tls_connect, ChannelBody, Harness, Resp,
    OTHER, OWN, UNAUTHORIZED_MESSAGE,
};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyflow_kms::access::Role;
use keyflow_server::Limits;
use rustls::ProtocolVersion;
use serde_json::{json, Value};

const HSTS: &str = "max-age=31536000; includeSubDomains; preload";

fn api(path: &str) -> String {
    format!("/api/encryption{path}")
}

/// The same ciphertext with the last byte (in the GCM tag) flipped.
fn tamper(ct: &str) -> String {
    let mut raw = URL_SAFE_NO_PAD
        .decode(ct.strip_prefix("kf1:").unwrap())
        .unwrap();
    let last = raw.last_mut().unwrap();
    *last ^= 0x01;
    format!("kf1:{}", URL_SAFE_NO_PAD.encode(raw))
}

#[track_caller]
fn assert_security_headers(r: &Resp) {
    assert_eq!(r.header("strict-transport-security"), HSTS, "{r:?}");
    assert_eq!(r.header("x-frame-options"), "DENY", "{r:?}");
    assert_eq!(r.header("x-content-type-options"), "nosniff", "{r:?}");
    assert_eq!(r.header("cache-control"), "no-store", "{r:?}");
    assert_eq!(r.header("referrer-policy"), "no-referrer", "{r:?}");
    assert!(!r.header("permissions-policy").is_empty(), "{r:?}");
    let csp = r.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "CSP {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP {csp}");
    assert!(!csp.contains("unsafe"), "CSP {csp}");
    let id = r.header("x-request-id");
    assert!(
        id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-request-id `{id}`"
    );
}

/// The value of one Prometheus sample line.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_succeeds_over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let admin = Some(h.admin.as_str());
    let svc = Some(h.service_token.as_str());
    let auditor = Some(h.auditor.as_str());
    // Encryptions under userData v1, to check the usage counter in /status.
    let mut own_encryptions = 0u64;

    // Encrypt → decrypt round trip with a context; the order of context keys is irrelevant
    // and the JSON type of the value survives.
    let value = json!({ "card": "4532123456789012", "amount": 12.5, "tags": ["a", 1, null] });
    let r = c
        .post(
            &api("/encrypt"),
            svc,
            &json!({ "data": value, "purpose": OWN, "context": { "recordId": "r-1", "table": "users" } }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    own_encryptions += 1;
    let body = r.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let ct = body["encryptedData"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("kf1:"), "{ct}");
    assert!(!ct.contains("4532"), "{ct}");
    c.post(
        &api("/decrypt"),
        svc,
        &json!({ "encryptedData": ct, "context": { "table": "users", "recordId": "r-1" } }),
    )
    .await
    .assert_json(200, &json!({ "data": value }));
    for v in [json!(42), json!("text"), json!(true)] {
        let r = c
            .post(
                &api("/encrypt"),
                admin,
                &json!({ "data": v, "purpose": OWN }),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        own_encryptions += 1;
        let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
        c.post(&api("/decrypt"), admin, &json!({ "encryptedData": ct }))
            .await
            .assert_json(200, &json!({ "data": v }));
    }

    // Deterministic: equal for equal value and context, different for another context;
    // randomized: never equal.
    let det = |ctx: &str| json!({ "data": "alice@example.com", "purpose": OWN, "deterministic": true, "context": { "field": ctx } });
    let d1 = c.post(&api("/encrypt"), svc, &det("email")).await.json();
    let d2 = c.post(&api("/encrypt"), svc, &det("email")).await.json();
    let d3 = c.post(&api("/encrypt"), svc, &det("login")).await.json();
    own_encryptions += 3;
    assert_eq!(d1["encryptedData"], d2["encryptedData"]);
    assert_ne!(d1["encryptedData"], d3["encryptedData"]);
    c.post(
        &api("/decrypt"),
        svc,
        &json!({ "encryptedData": d1["encryptedData"], "context": { "field": "email" } }),
    )
    .await
    .assert_json(200, &json!({ "data": "alice@example.com" }));
    let rand = json!({ "data": "alice@example.com", "purpose": OWN });
    let r1 = c.post(&api("/encrypt"), svc, &rand).await.json();
    let r2 = c.post(&api("/encrypt"), svc, &rand).await.json();
    own_encryptions += 2;
    assert_ne!(r1["encryptedData"], r2["encryptedData"]);

    // returnObject: the ciphertext and its parsed header.
    let r = c
        .post(
            &api("/encrypt"),
            svc,
            &json!({ "data": "x", "purpose": OWN, "returnObject": true }),
        )
        .await;
    own_encryptions += 1;
    let body = r.json();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(body["encryptedData"].as_str().unwrap().starts_with("kf1:"));
    assert_eq!(
        body["envelope"],
        json!({ "keyId": "userData:v1", "purpose": OWN, "keyVersion": 1, "algorithm": "AES-256-GCM",
                "deterministic": false, "formatVersion": 1 })
    );

    // Batch encrypt, then batch decrypt with one tampered and one non-string item: 200,
    // and those items' errors in `results`, in order.
    let items = json!(["4111111111111111", 7, { "iban": "DE89370400440532013000" }]);
    let r = c
        .post(
            &api("/batch/encrypt"),
            svc,
            &json!({ "items": items, "purpose": OWN, "context": { "batch": "b-1" } }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    own_encryptions += 3;
    let body = r.json();
    assert_eq!(
        (&body["total"], &body["successful"], &body["failed"]),
        (&json!(3), &json!(3), &json!(0)),
        "{body}"
    );
    let cts: Vec<String> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["success"], true, "{r}");
            r["encryptedData"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(cts.len(), 3);
    let r = c
        .post(
            &api("/batch/decrypt"),
            svc,
            &json!({ "items": [cts[0], cts[1], tamper(&cts[1]), 12, cts[2]], "context": { "batch": "b-1" } }),
        )
        .await;
    r.assert_json(
        200,
        &json!({
            "total": 5, "successful": 3, "failed": 2,
            "results": [
                { "success": true, "data": "4111111111111111" },
                { "success": true, "data": 7 },
                { "success": false, "error": "decryption_failed", "message": "decryption failed" },
                { "success": false, "error": "invalid_request", "message": "item is not a ciphertext string" },
                { "success": true, "data": { "iban": "DE89370400440532013000" } },
            ],
        }),
    );

    // Blind index: stable for a value and field, different for another field; `bits` hex.
    let bi = |field: &str, bits: Option<u16>| {
        let mut b = json!({ "data": "alice@example.com", "purpose": OWN, "field": field });
        if let Some(bits) = bits {
            b["bits"] = json!(bits);
        }
        b
    };
    let i1 = c.post(&api("/blind-index"), svc, &bi("email", None)).await;
    assert_eq!(i1.status, 200, "{i1:?}");
    let i1 = i1.json();
    let i2 = c
        .post(&api("/blind-index"), svc, &bi("email", None))
        .await
        .json();
    let i3 = c
        .post(&api("/blind-index"), svc, &bi("login", None))
        .await
        .json();
    let i4 = c
        .post(&api("/blind-index"), svc, &bi("email", Some(64)))
        .await
        .json();
    assert_eq!(i1, i2);
    assert_ne!(i1["index"], i3["index"]);
    assert_eq!((&i1["keyVersion"], &i1["bits"]), (&json!(1), &json!(32)));
    let index = i1["index"].as_str().unwrap();
    assert!(
        index.len() == 8 && index.bytes().all(|b| b.is_ascii_hexdigit()),
        "{i1}"
    );
    assert_eq!(i4["index"].as_str().unwrap().len(), 16, "{i4}");
    assert_eq!(i4["bits"], 64);

    // Mask: the exact outputs of PRODUCT.md §4.
    for (data, kind, masked) in [
        (json!("4532123456789012"), Some("card"), "************9012"),
        (json!(4532123456789012u64), Some("card"), "************9012"),
        (json!("123456789"), Some("ssn"), "***-**-6789"),
        (json!("user@example.com"), Some("email"), "u***@example.com"),
        (json!("555-123-4567"), Some("phone"), "(***) ***-4567"),
        (json!("12345678"), Some("bankAccount"), "****5678"),
        (
            json!("DE89370400440532013000"),
            Some("iban"),
            "DE****************3000",
        ),
        (json!("secret"), None, "s****t"),
    ] {
        let mut body = json!({ "data": data });
        if let Some(kind) = kind {
            body["type"] = json!(kind);
        }
        c.post(&api("/mask"), svc, &body).await.assert_json(
            200,
            &json!({ "masked": masked, "type": kind.unwrap_or("default") }),
        );
    }

    // Keys: generate (201), rotate, list with filters; old ciphertexts still decrypt.
    let r = c
        .post(
            &api("/keys/generate"),
            admin,
            &json!({ "purpose": "newPurpose", "keyType": "aes-256" }),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.json();
    let created = key["createdAt"].as_str().unwrap().to_owned();
    assert!(created.ends_with('Z') && created.contains('T'), "{key}");
    assert_eq!(
        key,
        json!({ "keyId": "newPurpose:v1", "purpose": "newPurpose", "version": 1, "status": "active",
                "algorithm": "AES-256", "createdAt": created, "statusChangedAt": created, "encryptions": 0 })
    );
    let old = c
        .post(
            &api("/encrypt"),
            admin,
            &json!({ "data": "before", "purpose": "newPurpose" }),
        )
        .await
        .json();
    c.post(
        &api("/keys/rotate"),
        admin,
        &json!({ "purpose": "newPurpose" }),
    )
    .await
    .assert_json(
        200,
        &json!({ "purpose": "newPurpose", "oldVersion": 1, "newVersion": 2 }),
    );
    let new = c
        .post(
            &api("/encrypt"),
            admin,
            &json!({ "data": "after", "purpose": "newPurpose", "returnObject": true }),
        )
        .await
        .json();
    assert_eq!(new["envelope"]["keyVersion"], 2, "{new}");
    c.post(
        &api("/decrypt"),
        admin,
        &json!({ "encryptedData": old["encryptedData"] }),
    )
    .await
    .assert_json(200, &json!({ "data": "before" }));

    let r = c
        .get(&api("/keys?purpose=newPurpose"), auditor)
        .await
        .json();
    assert_eq!(r["total"], 2, "{r}");
    let mut states: Vec<(u64, String)> = r["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(
                k.get("wrappedKey").is_none() && k.get("material").is_none(),
                "{k}"
            );
            (
                k["version"].as_u64().unwrap(),
                k["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        vec![(1, "rotating".to_owned()), (2, "active".to_owned())]
    );
    let active = c.get(&api("/keys?status=active"), admin).await.json();
    assert_eq!(active["total"], 3, "{active}");
    let all = c.get(&api("/keys"), admin).await.json();
    assert_eq!(all["total"], 4, "{all}");

    // Health: public.
    let r = c.get(&api("/health"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut health = r.json();
    assert!(health["uptimeSeconds"].is_u64(), "{health}");
    health.as_object_mut().unwrap().remove("uptimeSeconds");
    assert!(health["checks"]["keyCacheAgeMs"].is_u64(), "{health}");
    health["checks"]
        .as_object_mut()
        .unwrap()
        .remove("keyCacheAgeMs");
    assert_eq!(
        health,
        json!({ "status": "ok", "live": true, "ready": true,
                "checks": { "keystore": "ok", "kek": "unlocked", "keyCache": "confirmed" } })
    );

    // Status: the old shape plus usage and cache figures.
    let r = c.get(&api("/status"), auditor).await;
    assert_eq!(r.status, 200, "{r:?}");
    let s = r.json();
    for field in [
        "total",
        "active",
        "expiringSoon",
        "deprecated",
        "revoked",
        "cacheSize",
        "byPurpose",
        "healthStatus",
    ] {
        assert!(s.get(field).is_some(), "status lacks {field}: {s}");
    }
    assert_eq!(
        (
            &s["total"],
            &s["active"],
            &s["expiringSoon"],
            &s["deprecated"],
            &s["revoked"]
        ),
        (&json!(4), &json!(3), &json!(0), &json!(0), &json!(0)),
        "{s}"
    );
    assert_eq!(s["healthStatus"], "healthy", "{s}");
    assert!(s["cacheSize"].as_u64().unwrap() >= 3, "{s}");
    let hit_rate = s["cache"]["hitRate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hit_rate) && hit_rate > 0.5, "{s}");
    assert_eq!(s["byPurpose"]["newPurpose"]["versions"], 2, "{s}");
    assert_eq!(s["byPurpose"]["newPurpose"]["activeVersion"], 2, "{s}");
    assert_eq!(s["byPurpose"]["newPurpose"]["encryptions"], 2, "{s}");
    assert_eq!(s["byPurpose"][OWN]["versions"], 1, "{s}");
    assert_eq!(
        s["byPurpose"][OWN]["encryptions"], own_encryptions,
        "usage counter of {OWN}: {s}"
    );
    assert_eq!(s["byPurpose"][OTHER]["encryptions"], 0, "{s}");

    // Metrics: Prometheus text with exact counters for what this test did.
    let r = c.get("/metrics", auditor).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), "text/plain; version=0.0.4");
    let text = r.text();
    assert!(
        text.contains("# TYPE keyflow_operations_total counter"),
        "{text}"
    );
    for (series, n) in [
        (
            r#"keyflow_operations_total{operation="encrypt",result="ok"}"#,
            12,
        ),
        (
            r#"keyflow_operations_total{operation="decrypt",result="ok"}"#,
            6,
        ),
        (
            r#"keyflow_operations_total{operation="batch_encrypt",result="ok"}"#,
            1,
        ),
        (
            // The one batch had refused items: counted as a (partial) failure.
            r#"keyflow_operations_total{operation="batch_decrypt",result="error"}"#,
            1,
        ),
        (
            r#"keyflow_operation_items_total{operation="batch_decrypt"}"#,
            5,
        ),
        (
            r#"keyflow_operations_total{operation="blind_index",result="ok"}"#,
            4,
        ),
        (
            r#"keyflow_operations_total{operation="mask",result="ok"}"#,
            8,
        ),
        (
            r#"keyflow_operations_total{operation="keys_generate",result="ok"}"#,
            1,
        ),
        (
            r#"keyflow_operations_total{operation="keys_rotate",result="ok"}"#,
            1,
        ),
        (
            r#"keyflow_operations_total{operation="keys_list",result="ok"}"#,
            3,
        ),
        (
            r#"keyflow_operations_total{operation="status",result="ok"}"#,
            1,
        ),
        (
            r#"keyflow_operations_total{operation="encrypt",result="error"}"#,
            0,
        ),
    ] {
        assert_eq!(metric(&text, series), n, "{series}");
    }
    assert!(text.contains("keyflow_key_cache_hits_total "), "{text}");

    // OpenAPI: a 3.1 document of every route, public.
    let r = c.get(&api("/openapi.json"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/encryption/encrypt",
        "/api/encryption/decrypt",
        "/api/encryption/batch/encrypt",
        "/api/encryption/batch/decrypt",
        "/api/encryption/blind-index",
        "/api/encryption/mask",
        "/api/encryption/keys/generate",
        "/api/encryption/keys/rotate",
        "/api/encryption/keys",
        "/api/encryption/health",
        "/api/encryption/status",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_authorization_failures() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let enc = json!({ "data": "x", "purpose": OWN });

    // No token, garbage tokens, another scheme, a well-formed token that does not exist.
    let r = c.post(&api("/encrypt"), None, &enc).await;
    r.assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
    assert_security_headers(&r);
    let unknown = format!("kft_0123456789abcdef_{}", "A".repeat(43));
    for token in ["garbage", "kft_short_x", unknown.as_str()] {
        c.post(&api("/encrypt"), Some(token), &enc)
            .await
            .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
    }
    // The admin token's id with another secret.
    let (id, _) = h
        .admin
        .strip_prefix("kft_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let forged = format!("kft_{id}_{}", "B".repeat(43));
    c.post(&api("/encrypt"), Some(&forged), &enc)
        .await
        .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
    c.send_raw(
        request("GET", &api("/status"), None).header("authorization", format!("Basic {}", h.admin)),
        Vec::new(),
    )
    .await
    .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);

    // Revoked: works, then is revoked in the keystore, then refused.
    let (token, id) = h.token(Role::Service, &[OWN], None).await;
    let r = c.post(&api("/encrypt"), Some(&token), &enc).await;
    assert_eq!(r.status, 200, "{r:?}");
    h.revoke(&id).await;
    c.post(&api("/encrypt"), Some(&token), &enc)
        .await
        .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);

    // Expired.
    let (expired, _) = h.token(Role::Admin, &[], Some(now_millis() - 1_000)).await;
    c.get(&api("/status"), Some(&expired)).await.assert_error(
        401,
        "unauthorized",
        UNAUTHORIZED_MESSAGE,
    );

    // Wrong role.
    let r = c.post(&api("/encrypt"), Some(&h.auditor), &enc).await;
    r.assert_error(
        403,
        "forbidden",
        "the auditor role may not perform this operation",
    );
    assert_security_headers(&r);
    c.post(
        &api("/keys/rotate"),
        Some(&h.service_token),
        &json!({ "purpose": OWN }),
    )
    .await
    .assert_error(
        403,
        "forbidden",
        "the service role may not perform this operation",
    );
    c.get(&api("/status"), Some(&h.service_token))
        .await
        .assert_error(
            403,
            "forbidden",
            "the service role may not perform this operation",
        );

    // A service token on a purpose it was not granted: encrypt, blind index, and
    // decrypting that purpose's ciphertext.
    let not_granted = "this token is not granted purpose 'financialData'";
    c.post(
        &api("/encrypt"),
        Some(&h.service_token),
        &json!({ "data": "x", "purpose": OTHER }),
    )
    .await
    .assert_error(403, "forbidden", not_granted);
    c.post(
        &api("/blind-index"),
        Some(&h.service_token),
        &json!({ "data": "x", "purpose": OTHER, "field": "f" }),
    )
    .await
    .assert_error(403, "forbidden", not_granted);
    let foreign = h.ciphertext(&json!("salary 100k"), OTHER, &[]).await;
    let r = c
        .post(
            &api("/decrypt"),
            Some(&h.service_token),
            &json!({ "encryptedData": foreign }),
        )
        .await;
    r.assert_error(403, "forbidden", not_granted);
    assert!(!r.text().contains("salary"), "{r:?}");
    // The admin may decrypt it.
    c.post(
        &api("/decrypt"),
        Some(&h.admin),
        &json!({ "encryptedData": foreign }),
    )
    .await
    .assert_json(200, &json!({ "data": "salary 100k" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_have_stable_codes() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let admin = Some(h.admin.as_str());

    // Tampered ciphertext, wrong or missing context, not a ciphertext: 422, never 500.
    let ct = h
        .ciphertext(&json!("4532123456789012"), OWN, &[("recordId", "r-1")])
        .await;
    let failed = |r: Resp| r.assert_error(422, "decryption_failed", "decryption failed");
    failed(
        c.post(
            &api("/decrypt"),
            admin,
            &json!({ "encryptedData": tamper(&ct), "context": { "recordId": "r-1" } }),
        )
        .await,
    );
    failed(
        c.post(
            &api("/decrypt"),
            admin,
            &json!({ "encryptedData": ct, "context": { "recordId": "r-2" } }),
        )
        .await,
    );
    failed(
        c.post(&api("/decrypt"), admin, &json!({ "encryptedData": ct }))
            .await,
    );
    failed(
        c.post(
            &api("/decrypt"),
            admin,
            &json!({ "encryptedData": "not a ciphertext" }),
        )
        .await,
    );
    failed(
        c.post(
            &api("/decrypt"),
            admin,
            &json!({ "encryptedData": "kf1:AAAA" }),
        )
        .await,
    );
    // The right context still works.
    c.post(
        &api("/decrypt"),
        admin,
        &json!({ "encryptedData": ct, "context": { "recordId": "r-1" } }),
    )
    .await
    .assert_json(200, &json!({ "data": "4532123456789012" }));

    // Malformed JSON, missing fields, wrong types.
    c.send_raw(
        request("POST", &api("/encrypt"), admin),
        b"{not json".to_vec(),
    )
    .await
    .assert_error(400, "invalid_json", "the request body is not valid JSON");
    c.send_raw(request("POST", &api("/encrypt"), admin), Vec::new())
        .await
        .assert_error(400, "invalid_json", "the request body is not valid JSON");
    c.post(&api("/encrypt"), admin, &json!({ "data": "x" }))
        .await
        .assert_error(400, "invalid_request", "missing field 'purpose'");
    c.post(&api("/encrypt"), admin, &json!({ "purpose": OWN }))
        .await
        .assert_error(400, "invalid_request", "missing field 'data'");
    c.post(&api("/decrypt"), admin, &json!({}))
        .await
        .assert_error(400, "invalid_request", "missing field 'encryptedData'");
    let r = c
        .post(
            &api("/encrypt"),
            admin,
            &json!({ "data": "4532123456789012", "purpose": OWN, "context": "r-1" }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (400, Some("invalid_request")),
        "{r:?}"
    );
    assert!(!r.text().contains("4532"), "{r:?}");

    // Unknown routes: JSON 404.
    for path in ["/api/encryption/nope", "/nope", "/api/encryption/keys/nope"] {
        let r = c.get(path, admin).await;
        r.assert_error(404, "not_found", "no such route");
        assert_security_headers(&r);
    }

    // Unknown purpose on rotate; generate of an existing purpose.
    c.post(&api("/keys/rotate"), admin, &json!({ "purpose": "ghost" }))
        .await
        .assert_error(404, "unknown_purpose", "unknown purpose 'ghost'");
    c.post(&api("/keys/generate"), admin, &json!({ "purpose": OWN }))
        .await
        .assert_error(
            409,
            "purpose_exists",
            "purpose 'userData' already has keys; rotate it instead",
        );
    c.post(
        &api("/mask"),
        admin,
        &json!({ "data": true, "type": "card" }),
    )
    .await
    .assert_error(400, "invalid_request", "data must be a string or a number");
    let r = c
        .post(
            &api("/mask"),
            admin,
            &json!({ "data": "4532123456789012", "type": "nope" }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (400, Some("invalid_request")),
        "{r:?}"
    );
    assert!(
        r.json()["message"].as_str().unwrap().starts_with("type: "),
        "{r:?}"
    );
    c.post(
        &api("/encrypt"),
        admin,
        &json!({ "data": "x", "purpose": "has space" }),
    )
    .await
    .assert_error(
        400,
        "invalid_request",
        "purpose: invalid purpose (a letter, then up to 63 letters, digits, '_', '-' or '.')",
    );
    c.post(
        &api("/blind-index"),
        admin,
        &json!({ "data": "x", "purpose": OWN, "field": "f", "bits": 7 }),
    )
    .await
    .assert_error(400, "invalid_request", "invalid blind index bits (8..=256)");
    c.post(
        &api("/keys/generate"),
        admin,
        &json!({ "purpose": "p2", "keyType": "rsa" }),
    )
    .await
    .assert_error(400, "invalid_request", "keyType: only aes-256 is supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_batch_limits() {
    let h = Harness::with_limits(Limits {
        json_body_bytes: 1024,
        batch_items: 2,
        ..Limits::default()
    })
    .await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let admin = Some(h.admin.as_str());

    let small = json!({ "data": "a".repeat(900), "purpose": OWN });
    assert!(serde_json::to_vec(&small).unwrap().len() <= 1024);
    let r = c.post(&api("/encrypt"), admin, &small).await;
    assert_eq!(r.status, 200, "{r:?}");
    let big = json!({ "data": "a".repeat(2000), "purpose": OWN });
    let r = c.post(&api("/encrypt"), admin, &big).await;
    r.assert_error(
        413,
        "payload_too_large",
        "the request body is larger than the limit of 1024 bytes",
    );
    assert_security_headers(&r);
    // The connection (or a new one) keeps working afterwards.
    let r = c.post(&api("/encrypt"), admin, &small).await;
    assert_eq!(r.status, 200, "{r:?}");

    c.post(
        &api("/batch/encrypt"),
        admin,
        &json!({ "items": [1, 2, 3], "purpose": OWN }),
    )
    .await
    .assert_error(400, "invalid_request", "too many items: 3 (at most 2)");
    let r = c
        .post(
            &api("/batch/encrypt"),
            admin,
            &json!({ "items": [1, 2], "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_response() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;

    let ok = c.get(&api("/health"), None).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_security_headers(&ok);
    let ok2 = c
        .post(
            &api("/encrypt"),
            Some(&h.admin),
            &json!({ "data": 1, "purpose": OWN }),
        )
        .await;
    assert_eq!(ok2.status, 200, "{ok2:?}");
    assert_security_headers(&ok2);
    let unauthorized = c.get(&api("/status"), None).await;
    assert_eq!(unauthorized.status, 401, "{unauthorized:?}");
    assert_security_headers(&unauthorized);
    let missing = c.get("/does/not/exist", None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_security_headers(&missing);
    let bad = c
        .send_raw(
            request("POST", &api("/encrypt"), Some(&h.admin)),
            b"{".to_vec(),
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_security_headers(&bad);
    // Every response has its own request id.
    let ids =
        [&ok, &ok2, &unauthorized, &missing, &bad].map(|r| r.header("x-request-id").to_owned());
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive (`bearer` = `Bearer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    for scheme in ["bearer", "BEARER"] {
        let r = c
            .send_raw(
                request("GET", &api("/status"), None)
                    .header("authorization", format!("{scheme} {}", h.admin)),
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{scheme}: {r:?}");
    }
}

/// PRODUCT.md §5: every error is `{"error", "message"}` JSON; a wrong method on an
/// existing route is an error like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_a_json_error() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let r = c.get(&api("/encrypt"), Some(&h.admin)).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_security_headers(&r);
    let body = r.json();
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{body}"
    );
}

async fn health_over(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> (Option<ProtocolVersion>, Resp) {
    let tls = bounded("TLS connect", tls_connect(addr, config))
        .await
        .unwrap();
    let version = tls.get_ref().1.protocol_version();
    let mut sender = http1::<Full<Bytes>, _>(tls).await;
    let res = bounded(
        "request",
        sender.send_request(
            request("GET", &api("/health"), None)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    (version, Resp::read(res).await)
}

/// Runs `openssl s_client` against the server; `None` if openssl is not installed.
async fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> Option<(bool, String)> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .args(args)
        .stdin(std::process::Stdio::null());
    let out = bounded(
        "openssl s_client",
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .unwrap();
    match out {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_only() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let cert = server.cert.clone().unwrap();

    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&cert, &[version], &[b"http/1.1"]);
        let (negotiated, r) = health_over(config, server.addr).await;
        assert_eq!(negotiated, Some(expected));
        assert_eq!(r.status, 200, "{r:?}");
    }

    // A client that does not trust the certificate is refused by the client itself;
    // this checks that the trust setup above is what made the handshakes work.
    let other = Harness::new().await;
    let untrusted = client_config(&other.cert_der(), rustls::DEFAULT_VERSIONS, &[b"http/1.1"]);
    assert!(tls_connect(server.addr, untrusted).await.is_err());

    // TLS 1.1 and weak suites: rustls cannot offer them, openssl can.
    let Some((ok, out)) = s_client(server.addr, &["-tls1_2"]).await else {
        println!("NOTICE: openssl is not on PATH; skipping the TLS 1.1 / weak-suite checks");
        return;
    };
    assert!(
        ok && out.contains("New, TLSv1.2, Cipher is ECDHE-"),
        "openssl -tls1_2 should connect with an ECDHE AEAD suite:\n{out}"
    );
    // SECLEVEL=0 so that the refusal comes from the server, not from openssl's own policy.
    let (ok, out) = s_client(server.addr, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .await
        .unwrap();
    assert!(!ok, "a TLS 1.1 client must be refused:\n{out}");
    // The server answers the TLS 1.1 ClientHello with a fatal alert; nothing is negotiated.
    assert!(
        out.contains("Cipher is (NONE)") && out.contains("alert"),
        "expected a refused handshake:\n{out}"
    );
    // CBC suites (no AEAD) are refused too.
    let (ok, out) = s_client(
        server.addr,
        &[
            "-tls1_2",
            "-cipher",
            "AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA",
        ],
    )
    .await
    .unwrap();
    assert!(
        !ok && out.contains("Cipher is (NONE)") && out.contains("alert"),
        "a client offering only CBC suites must be refused:\n{out}"
    );
}

/// A client (aws-lc-rs provider) offering only `suites`, in that order.
fn client_offering(
    cert: &rustls::pki_types::CertificateDer<'static>,
    suites: &[rustls::SupportedCipherSuite],
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// The suite a handshake with `config` negotiates (`None`: refused).
async fn negotiated_suite(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Option<rustls::CipherSuite> {
    let tls = bounded("TLS connect", tls_connect(addr, config))
        .await
        .ok()?;
    tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_the_cipher_suite() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::CipherSuite;
    let h = Harness::new().await;
    let cert = h.cert_der();
    let (cert_file, key_file) = h.cert_files();

    // Default: AES-128-GCM first, whatever the client prefers (rustls clients list
    // AES-256 first), on TLS 1.3 and on TLS 1.2; AES-256 when it is all a client offers.
    let server = h.start_tls().await;
    let all = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    for (offer, want) in [
        (all.clone(), CipherSuite::TLS13_AES_128_GCM_SHA256),
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let got = negotiated_suite(server.addr, client_offering(&cert, &offer)).await;
        assert_eq!(got, Some(want), "offered {offer:?}");
    }

    // Restricted by configuration (KEYFLOW_TLS_CIPHER_SUITES): only AES-256-GCM on
    // TLS 1.3; a client without it, or speaking only TLS 1.2, is refused.
    let options = keyflow_server::tls::TlsOptions {
        cipher_suites: vec!["TLS13_AES_256_GCM_SHA384".into()],
        ..Default::default()
    };
    let config = keyflow_server::tls::server_config_with(&cert_file, &key_file, &options).unwrap();
    let strict = h.start_with(h.app(Default::default()), Some(config)).await;
    assert_eq!(
        negotiated_suite(strict.addr, client_offering(&cert, &all)).await,
        Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    for offer in [
        vec![cs::TLS13_AES_128_GCM_SHA256],
        vec![cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
    ] {
        assert_eq!(
            negotiated_suite(strict.addr, client_offering(&cert, &offer)).await,
            None,
            "offered {offer:?}"
        );
    }
    // The restricted server still answers requests.
    let (_, r) = health_over(client_offering(&cert, &all), strict.addr).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Blank names (an empty variable, a trailing comma) leave the default order.
    let blank = [String::new(), " ".into()];
    assert_eq!(
        keyflow_server::tls::cipher_suites(&blank).unwrap(),
        keyflow_server::tls::cipher_suites(&[]).unwrap()
    );
    let trailing = ["TLS13_AES_256_GCM_SHA384".to_owned(), String::new()];
    assert_eq!(
        keyflow_server::tls::cipher_suites(&trailing).unwrap(),
        vec![cs::TLS13_AES_256_GCM_SHA384]
    );

    // A name the provider does not know stops the start, naming it and the known ones.
    let options = keyflow_server::tls::TlsOptions {
        cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
        ..Default::default()
    };
    let err = keyflow_server::tls::server_config_with(&cert_file, &key_file, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'TLS_RSA_WITH_RC4_128_SHA'") && err.contains("TLS13_AES_256_GCM_SHA384"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let cert = server.cert.clone().unwrap();

    let config = client_config(&cert, rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"]);
    let tls = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = bounded(
        "h2 request",
        sender.send_request(
            request("GET", "https://localhost/api/encryption/health", None)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let r = Resp::read(res).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_security_headers(&r);
    let res = bounded(
        "h2 request",
        sender.send_request(
            request(
                "POST",
                "https://localhost/api/encryption/encrypt",
                Some(&h.admin),
            )
            .body(Full::new(Bytes::from(
                json!({ "data": "over h2", "purpose": OWN }).to_string(),
            )))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let r = Resp::read(res).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["encryptedData"]
        .as_str()
        .unwrap()
        .starts_with("kf1:"));

    // A client that offers only HTTP/1.1 gets HTTP/1.1.
    let config = client_config(&cert, rustls::DEFAULT_VERSIONS, &[b"http/1.1"]);
    let tls = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// A request to `/batch/encrypt` (1000 items) whose body is sent only in part: it stays
/// in flight (headers read, handler waiting for the rest of the body) until the second
/// half is sent with `finish`.
struct HeldRequest {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    rest: Bytes,
    response: tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
}

impl HeldRequest {
    async fn start(server: &common::Server, token: &str) -> Self {
        let items: Vec<Value> = (0..1000).map(|i| json!(format!("item-{i}"))).collect();
        let body = Bytes::from(json!({ "items": items, "purpose": OWN }).to_string());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let config = client_config(
            server.cert.as_ref().unwrap(),
            rustls::DEFAULT_VERSIONS,
            &[b"http/1.1"],
        );
        let tls = bounded("TLS connect", tls_connect(server.addr, config))
            .await
            .unwrap();
        let mut sender = http1::<ChannelBody, _>(tls).await;
        let req = request("POST", &api("/batch/encrypt"), Some(token))
            .header("content-length", body.len())
            .body(ChannelBody(rx))
            .unwrap();
        let response = tokio::spawn(async move { sender.send_request(req).await });
        let half = body.len() / 2;
        tx.send(body.slice(..half)).await.unwrap();
        // Let the server read the headers and enter the handler.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            tx,
            rest: body.slice(half..),
            response,
        }
    }

    /// Sends the rest of the body and reads the response.
    async fn finish(self) -> Resp {
        self.tx.send(self.rest).await.unwrap();
        drop(self.tx);
        Self::read(self.response).await
    }

    /// Reads the response without sending the rest of the body.
    async fn read(
        response: tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    ) -> Resp {
        let res = bounded("held request", response).await.unwrap().unwrap();
        Resp::read(res).await
    }
}

#[track_caller]
fn assert_overloaded(r: &Resp) {
    r.assert_error(503, "overloaded", "the server is overloaded; retry later");
    assert_security_headers(r);
}

fn limited(h: &Harness, max_concurrency: usize, request_timeout: Duration) -> axum::Router {
    keyflow_server::app(
        h.state.clone(),
        &keyflow_server::HttpSettings {
            max_concurrency,
            request_timeout,
            transport: keyflow_transport::TransportConfig::default(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_and_slow_requests_get_503() {
    let h = Harness::new().await;
    let server = h.start(limited(&h, 1, Duration::from_secs(1)), true).await;
    let mut c = server.client().await;

    // One request in flight on a route with max_concurrency 1: the next one on the same
    // route is shed at once.
    let held = HeldRequest::start(&server, &h.admin).await;
    let r = c
        .post(
            &api("/batch/encrypt"),
            Some(&h.admin),
            &json!({ "items": [1], "purpose": OWN }),
        )
        .await;
    assert_overloaded(&r);
    // The held request never finishes its body: the timeout answers it.
    let HeldRequest { tx, response, .. } = held;
    let r = HeldRequest::read(response).await;
    assert_overloaded(&r);
    drop(tx);
    // Capacity is back.
    let r = c
        .post(
            &api("/batch/encrypt"),
            Some(&h.admin),
            &json!({ "items": [1], "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// `HttpSettings::max_concurrency` is documented as the largest number of requests in
/// progress, server-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_server_wide() {
    let h = Harness::new().await;
    let server = h.start(limited(&h, 1, Duration::from_secs(5)), true).await;
    let mut c = server.client().await;
    let held = HeldRequest::start(&server, &h.admin).await;
    // A second request in progress, on another route: beyond the limit of 1.
    let r = c
        .post(
            &api("/encrypt"),
            Some(&h.admin),
            &json!({ "data": "x", "purpose": OWN }),
        )
        .await;
    let held = held.finish().await;
    assert_eq!(held.status, 200, "{held:?}");
    assert_overloaded(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = Harness::new().await;
    let mut server = h.start_tls().await;

    // An idle keep-alive connection, used once.
    let mut idle = server.client().await;
    assert_eq!(idle.get(&api("/health"), None).await.status, 200);

    // A batch of 1000 items in flight when the shutdown starts.
    let held = HeldRequest::start(&server, &h.admin).await;
    server.trigger_shutdown();

    // The listener closes: new connections are refused while the request is in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::net::TcpStream::connect(server.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the listener still accepts connections after shutdown: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );

    // The in-flight request completes normally.
    let r = held.finish().await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(
        (&b["total"], &b["successful"], &b["failed"]),
        (&json!(1000), &json!(1000), &json!(0))
    );
    assert_eq!(b["results"][999]["success"], true);

    // serve returns once every connection is drained (the idle one is closed).
    let served = bounded("serve to return", &mut server.task).await.unwrap();
    assert!(served.is_ok(), "{served:?}");
    let open = tokio::time::timeout(Duration::from_secs(2), idle.connection_open()).await;
    assert!(
        matches!(open, Ok(false)),
        "the idle keep-alive connection should have been closed"
    );
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

/// src/serve.rs: "on the shutdown signal the listener closes, in-flight requests finish
/// (up to a grace period), idle connections are closed". A connection that has not
/// even finished its TLS handshake has no request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_silent_connection() {
    let h = Harness::new().await;
    let mut server = h.start_tls().await;
    // A client that connects and never sends its ClientHello.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.trigger_shutdown();
    let served = tokio::time::timeout(Duration::from_secs(2), &mut server.task).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "serve did not return within 2 s of the shutdown signal: {served:?}"
    );
}
