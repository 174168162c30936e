//! JSON routes take `Content-Type: application/json` (with or without a UTF-8 charset)
//! and answer anything else 415 in the API's error shape, before reading the body —
//! and after authentication, so an unauthenticated caller still learns only 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use common::{oneshot, request, Harness, OWN, UNAUTHORIZED_MESSAGE};
use serde_json::json;

const MESSAGE: &str = "the request body must be JSON: send Content-Type: application/json";

/// A POST without the harness's default JSON content type.
fn post(
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> axum::http::Request<Body> {
    let mut b = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn encrypt_takes_json_only() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let body = json!({ "data": "x", "purpose": OWN }).to_string();
    let path = "/api/encryption/encrypt";
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=iso-8859-1"),
        Some("application/jsonp"),
    ] {
        let r = oneshot(&app, post(path, Some(&h.admin), ct, &body)).await;
        r.assert_error(415, "unsupported_media_type", MESSAGE);
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;Charset=\"UTF-8\"",
    ] {
        let r = oneshot(&app, post(path, Some(&h.admin), Some(ct), &body)).await;
        assert_eq!(r.status, 200, "{ct}: {r:?}");
    }
    // Authentication first: no token, wrong type → 401, not 415.
    let r = oneshot(&app, post(path, None, Some("text/plain"), &body)).await;
    r.assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
}

/// Every route whose OpenAPI request body is JSON refuses `text/plain` with 415 (so
/// the document's 415 is true of each), and the 415 is audited as such.
#[tokio::test]
async fn every_json_route_refuses_other_media_types() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let doc = keyflow_server::openapi::document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !op["requestBody"]["content"]["application/json"].is_object() {
                continue;
            }
            assert!(op["responses"]["415"].is_object(), "{method} {path}");
            let mut req = request(&method.to_uppercase(), path, Some(&h.admin))
                .body(Body::from("{}"))
                .unwrap();
            req.headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            let r = oneshot(&app, req).await;
            r.assert_error(415, "unsupported_media_type", MESSAGE);
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} JSON routes");
    let refused = h
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.result == "unsupported_media_type")
        .count();
    assert_eq!(refused, checked, "each 415 is audited with its code");
}
