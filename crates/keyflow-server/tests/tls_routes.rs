//! End-to-end tests over real TLS on an ephemeral loopback port, wired like
//! `keyflow serve`: every route succeeds, by route group, and `/status` and `/metrics`
//! count exactly what was done.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::tls::{api, tamper};
use common::{Client, Harness, OTHER, OWN};
use serde_json::json;

/// The value of one Prometheus sample line.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Encrypt, decrypt, batch, blind index and mask, as the service and the admin. Returns
/// the number of encryptions made under userData v1 (for the usage counter in /status).
async fn data_routes(c: &mut Client, h: &Harness) -> u64 {
    let admin = Some(h.admin.as_str());
    let svc = Some(h.service_token.as_str());
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
    own_encryptions
}

/// Keys: generate a new purpose, rotate it, list with filters.
async fn key_routes(c: &mut Client, h: &Harness) {
    let admin = Some(h.admin.as_str());
    let auditor = Some(h.auditor.as_str());

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_routes_succeed_over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    data_routes(&mut c, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_routes_succeed_over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    key_routes(&mut c, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_public_over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;

    // Health: public.
    let r = c.get(&api("/health"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut health = r.json();
    assert!(health["uptimeSeconds"].is_u64(), "{health}");
    health.as_object_mut().unwrap().remove("uptimeSeconds");
    for age in ["keyCacheAgeMs", "keystoreCheckAgeMs"] {
        assert!(health["checks"][age].is_u64(), "{health}");
        health["checks"].as_object_mut().unwrap().remove(age);
    }
    assert_eq!(
        health,
        json!({ "status": "ok", "live": true, "ready": true,
                "checks": { "keystore": "ok", "kek": "unlocked", "keyCache": "confirmed" } })
    );
}

/// `/status` and `/metrics` after the data and key routes above, on one server: the
/// figures are exactly what those routes did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_count_what_was_done() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let auditor = Some(h.auditor.as_str());
    let own_encryptions = data_routes(&mut c, &h).await;
    key_routes(&mut c, &h).await;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;

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
