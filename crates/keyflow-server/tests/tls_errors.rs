//! End-to-end tests over real TLS, wired like `keyflow serve`: authentication and
//! authorization failures, request errors with their stable codes, body and batch
//! limits, the security headers on every response, the bearer scheme and a wrong method.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::tls::{api, assert_security_headers, tamper};
use common::{now_millis, request, Harness, Resp, OTHER, OWN, UNAUTHORIZED_MESSAGE};
use keyflow_kms::access::Role;
use keyflow_server::Limits;
use serde_json::json;

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
    .assert_error(
        400,
        "invalid_request",
        "keyType: only aes-256 is supported (also accepted: aes256, data, aes-256-gcm)",
    );
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
