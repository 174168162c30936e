//! Helpers shared by the integration tests: a small app behind the full stack.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Request as HttpRequest, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use keyflow_transport::{ClientAddr, ConnectionInfo, IntegrityVerified, TransportConfig};
use tower::ServiceExt;

/// `/hello` (GET), `/fail` (handler error 500), `/whoami` (the `ClientAddr` seen),
/// `/v1/keys` and `/open` (POST, echo the body; `x-verified` says whether the
/// integrity layer verified it), all behind `keyflow_transport::layer(config)`.
pub fn app(config: TransportConfig) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "handler failed") }),
        )
        .route(
            "/whoami",
            get(|req: Request| async move {
                match req.extensions().get::<ClientAddr>() {
                    Some(ClientAddr(ip)) => ip.to_string(),
                    None => "unknown".to_owned(),
                }
            }),
        )
        .route("/v1/keys", post(echo))
        .route("/v1/keys/{id}", post(echo))
        .route("/open", post(echo))
        .layer(keyflow_transport::layer(config))
}

async fn echo(req: Request) -> ([(&'static str, &'static str); 1], Bytes) {
    let verified = if req.extensions().get::<IntegrityVerified>().is_some() {
        "yes"
    } else {
        "no"
    };
    let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    ([("x-verified", verified)], body)
}

/// A connection from `peer` (`ip:port`).
pub fn conn(peer: &str, tls: bool, cert: Option<[u8; 32]>) -> ConnectionInfo {
    ConnectionInfo {
        peer: peer.parse().unwrap(),
        tls,
        client_cert_sha256: cert,
    }
}

/// A TLS connection from a client, as the server would record it.
pub fn tls() -> ConnectionInfo {
    conn("198.51.100.20:50000", true, None)
}

/// Status, headers and body of one request through a clone of `app`.
pub async fn send(app: &Router, req: Request) -> (StatusCode, HeaderMap, Bytes) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, headers, body)
}

/// Builds a request with `ConnectionInfo` (if any) in its extensions.
pub fn request(
    method: &str,
    uri: &str,
    conn: Option<ConnectionInfo>,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Request {
    let mut builder = HttpRequest::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut req = builder.body(body.into()).unwrap();
    if let Some(conn) = conn {
        req.extensions_mut().insert(conn);
    }
    req
}

/// Asserts a JSON error body with exactly this code (and a non-empty message).
pub fn assert_error(body: &Bytes, code: &str) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["error"], code, "body: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 2, "body: {v}");
}
