//! Production transport security end to end: request integrity (HMAC signatures, time
//! window, replay) on key management over TLS, and plain HTTP redirected or refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::Request;
use bytes::Bytes;
use common::{request, Client, Harness, Resp, OTHER, OWN, UNAUTHORIZED_MESSAGE};
use http_body_util::Full;
use keyflow_transport::{sign_request, IntegritySecret, TransportConfig};
use serde_json::json;

const SECRET: &str = "integrity-secret-for-keyflow-server-tests";
const PUBLIC_HOST: &str = "kms.example.com";

const INVALID: &str = "the request signature is malformed or does not match the request";
const REQUIRED: &str =
    "this path requires the X-KeyFlow-Timestamp, X-KeyFlow-Nonce and X-KeyFlow-Signature headers";

fn production() -> TransportConfig {
    TransportConfig {
        production: true,
        public_host: Some(PUBLIC_HOST.into()),
        integrity_secret: Some(IntegritySecret::new(SECRET).unwrap()),
        integrity_required_prefixes: vec!["/api/encryption/keys".into()],
        ..TransportConfig::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("nonce-{}-{}", unix_now(), N.fetch_add(1, Ordering::Relaxed))
}

/// A request signed with `secret` over (`method`, `path`, `ts`, `nonce`, `signed_body`),
/// carrying `body`.
#[allow(clippy::too_many_arguments)]
fn signed(
    secret: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    ts: u64,
    nonce: &str,
    signed_body: &[u8],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let secret = IntegritySecret::new(secret).unwrap();
    let sig = sign_request(&secret, method, path, ts, nonce, signed_body);
    request(method, path, token)
        .header("content-type", "application/json")
        .header("x-keyflow-timestamp", ts.to_string())
        .header("x-keyflow-nonce", nonce)
        .header("x-keyflow-signature", sig)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// A correctly signed request, now, with a fresh nonce.
fn good(method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Request<Full<Bytes>> {
    signed(
        SECRET,
        method,
        path,
        token,
        unix_now(),
        &nonce(),
        body,
        body,
    )
}

async fn versions(c: &mut Client, h: &Harness, purpose: &str) -> u64 {
    let path = format!("/api/encryption/keys?purpose={purpose}");
    let r = c.send(good("GET", &path, Some(&h.admin), b"")).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_requires_a_valid_signature() {
    let h = Harness::new().await;
    let server = h.start(h.app(production()), true).await;
    let mut c = server.client().await;
    let admin = Some(h.admin.as_str());
    let rotate = "/api/encryption/keys/rotate";
    let body = json!({ "purpose": OWN }).to_string().into_bytes();

    // Signed: accepted.
    let ts = unix_now();
    let n = nonce();
    let req = || signed(SECRET, "POST", rotate, admin, ts, &n, &body, &body);
    c.send(req()).await.assert_json(
        200,
        &json!({ "purpose": OWN, "oldVersion": 1, "newVersion": 2 }),
    );
    // The same request again: a replay.
    let r = c.send(req()).await;
    r.assert_error(
        401,
        "integrity_replayed",
        "this nonce has already been used",
    );
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(versions(&mut c, &h, OWN).await, 2);

    // Unsigned.
    let r = c.post(rotate, admin, &json!({ "purpose": OWN })).await;
    r.assert_error(401, "integrity_required", REQUIRED);
    assert_eq!(
        r.header("strict-transport-security"),
        "max-age=31536000; includeSubDomains; preload"
    );
    // Only some of the headers.
    c.send_raw(
        request("POST", rotate, admin).header("x-keyflow-timestamp", unix_now().to_string()),
        body.clone(),
    )
    .await
    .assert_error(401, "integrity_required", REQUIRED);
    // Signed with another secret.
    let other_secret = "another-secret-of-at-least-32-bytes!!";
    c.send(signed(
        other_secret,
        "POST",
        rotate,
        admin,
        unix_now(),
        &nonce(),
        &body,
        &body,
    ))
    .await
    .assert_error(401, "integrity_invalid", INVALID);
    // Garbage signature.
    c.send_raw(
        request("POST", rotate, admin)
            .header("x-keyflow-timestamp", unix_now().to_string())
            .header("x-keyflow-nonce", nonce())
            .header("x-keyflow-signature", "00".repeat(32)),
        body.clone(),
    )
    .await
    .assert_error(401, "integrity_invalid", INVALID);
    // Body changed after signing.
    let other_body = json!({ "purpose": OTHER }).to_string().into_bytes();
    c.send(signed(
        SECRET,
        "POST",
        rotate,
        admin,
        unix_now(),
        &nonce(),
        &body,
        &other_body,
    ))
    .await
    .assert_error(401, "integrity_invalid", INVALID);
    // Signed for another path.
    let sig_path = signed(
        SECRET,
        "POST",
        "/api/encryption/keys/generate",
        admin,
        unix_now(),
        &nonce(),
        &body,
        &body,
    );
    let (mut parts, b) = sig_path.into_parts();
    parts.uri = rotate.parse().unwrap();
    c.send(Request::from_parts(parts, b))
        .await
        .assert_error(401, "integrity_invalid", INVALID);
    // Stale (10 minutes old) and future (10 minutes ahead) timestamps.
    for ts in [unix_now() - 600, unix_now() + 600] {
        c.send(signed(
            SECRET,
            "POST",
            rotate,
            admin,
            ts,
            &nonce(),
            &body,
            &body,
        ))
        .await
        .assert_error(
            401,
            "integrity_stale",
            "the request timestamp is outside the accepted window",
        );
    }
    // None of the refused requests rotated anything.
    assert_eq!(versions(&mut c, &h, OWN).await, 2);
    assert_eq!(versions(&mut c, &h, OTHER).await, 1);

    // A valid signature does not replace the token: authentication and roles still apply.
    c.send(good("POST", rotate, None, &body))
        .await
        .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
    c.send(good("POST", rotate, Some(&h.service_token), &body))
        .await
        .assert_error(
            403,
            "forbidden",
            "the service role may not perform this operation",
        );

    // GET /keys is under the prefix too; the query is part of what is signed.
    c.get("/api/encryption/keys", admin)
        .await
        .assert_error(401, "integrity_required", REQUIRED);
    let mut req = good("GET", "/api/encryption/keys?purpose=userData", admin, b"");
    *req.uri_mut() = "/api/encryption/keys?purpose=financialData"
        .parse()
        .unwrap();
    c.send(req)
        .await
        .assert_error(401, "integrity_invalid", INVALID);
    let r = c
        .send(good(
            "GET",
            "/api/encryption/keys?purpose=userData",
            Some(&h.auditor),
            b"",
        ))
        .await;
    assert_eq!(
        (r.status.as_u16(), &r.json()["total"]),
        (200, &json!(2)),
        "{r:?}"
    );

    // Data routes work unsigned.
    let r = c
        .post(
            "/api/encryption/encrypt",
            Some(&h.service_token),
            &json!({ "data": "4532123456789012", "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
    c.post(
        "/api/encryption/decrypt",
        Some(&h.service_token),
        &json!({ "encryptedData": ct }),
    )
    .await
    .assert_json(200, &json!({ "data": "4532123456789012" }));
    assert_eq!(c.get("/api/encryption/health", None).await.status, 200);
    assert_eq!(
        c.get("/api/encryption/status", Some(&h.auditor))
            .await
            .status,
        200
    );
    // …but a client that signs a data request and gets it wrong is told so.
    let enc = json!({ "data": "x", "purpose": OWN })
        .to_string()
        .into_bytes();
    c.send(signed(
        other_secret,
        "POST",
        "/api/encryption/encrypt",
        admin,
        unix_now(),
        &nonce(),
        &enc,
        &enc,
    ))
    .await
    .assert_error(401, "integrity_invalid", INVALID);

    // Only the one valid rotation reached the handler.
    let text = c.get("/metrics", Some(&h.auditor)).await.text();
    for line in [
        r#"keyflow_operations_total{operation="keys_rotate",result="ok"} 1"#,
        r#"keyflow_operations_total{operation="keys_rotate",result="error"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}

fn https_required(r: &Resp) {
    r.assert_error(400, "https_required", "this service only accepts HTTPS");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
}

#[track_caller]
fn redirected(r: &Resp, location: &str) {
    r.assert_error(
        308,
        "https_required",
        "this service only accepts HTTPS; follow the Location header",
    );
    assert_eq!(r.header("location"), location, "{r:?}");
    assert_eq!(r.header("x-frame-options"), "DENY");
}

/// A GET with exactly the headers given (no default Host).
fn raw_get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_in_production_is_redirected_or_refused() {
    let h = Harness::new().await;
    let server = h.start(h.app(production()), false).await;
    let mut c = server.client().await;
    let admin = Some(h.admin.as_str());

    // Anything but GET/HEAD: refused, before authentication or signature checks.
    https_required(
        &c.post(
            "/api/encryption/encrypt",
            admin,
            &json!({ "data": "4532123456789012", "purpose": OWN }),
        )
        .await,
    );
    https_required(
        &c.post(
            "/api/encryption/keys/rotate",
            None,
            &json!({ "purpose": OWN }),
        )
        .await,
    );
    // GET: redirected to the configured host, never the request's Host; query kept.
    redirected(
        &c.send(raw_get(
            "/api/encryption/health?probe=1",
            &[("host", "evil.example.net")],
        ))
        .await,
        "https://kms.example.com/api/encryption/health?probe=1",
    );
    redirected(
        &c.get("/api/encryption/keys", admin).await,
        "https://kms.example.com/api/encryption/keys",
    );
    redirected(
        &c.get("/metrics", None).await,
        "https://kms.example.com/metrics",
    );
    // X-Forwarded-Proto from a peer that is not a configured proxy is not believed.
    redirected(
        &c.send(raw_get(
            "/api/encryption/health",
            &[("host", "localhost"), ("x-forwarded-proto", "https")],
        ))
        .await,
        "https://kms.example.com/api/encryption/health",
    );
    c.send_raw(
        request("POST", "/api/encryption/encrypt", admin).header("x-forwarded-proto", "https"),
        json!({ "data": "x", "purpose": OWN })
            .to_string()
            .into_bytes(),
    )
    .await
    .assert_error(400, "https_required", "this service only accepts HTTPS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proto_is_believed_only_from_a_trusted_proxy() {
    let h = Harness::new().await;
    // TLS ends at a proxy on 127.0.0.1.
    let behind_proxy = TransportConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..production()
    };
    let server = h.start(h.app(behind_proxy), false).await;
    let mut c = server.client().await;

    let r = c
        .send(raw_get(
            "/api/encryption/health",
            &[("host", "localhost"), ("x-forwarded-proto", "https")],
        ))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c
        .send_raw(
            request("POST", "/api/encryption/encrypt", Some(&h.admin))
                .header("x-forwarded-proto", "https"),
            json!({ "data": "x", "purpose": OWN })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // The proxy said the client used plain HTTP.
    redirected(
        &c.send(raw_get(
            "/api/encryption/health",
            &[("host", "localhost"), ("x-forwarded-proto", "http")],
        ))
        .await,
        "https://kms.example.com/api/encryption/health",
    );

    // Production without a public host: plain HTTP is refused, never redirected.
    let no_host = TransportConfig {
        public_host: None,
        ..production()
    };
    let server = h.start(h.app(no_host), false).await;
    let mut c = server.client().await;
    https_required(&c.get("/api/encryption/health", None).await);
}
