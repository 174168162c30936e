//! `TransportLayer`'s two extension points: the application's slot between the security
//! headers and the checks, and the client hook after HTTPS enforcement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

#[allow(dead_code)] // each test binary uses its own subset of the helpers
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::{conn, request, send, tls};
use keyflow_transport::{ClientAddr, PlainHttpTurnedAway, TransportConfig, TransportLayer};
use tower::ServiceBuilder;

/// Requests the client hook saw with a `ClientAddr`.
static NOTED: AtomicUsize = AtomicUsize::new(0);
/// Answers the slot saw marked `PlainHttpTurnedAway`.
static TURNED_AWAY: AtomicUsize = AtomicUsize::new(0);

fn note(req: &Request) {
    if req.extensions().get::<ClientAddr>().is_some() {
        NOTED.fetch_add(1, Ordering::SeqCst);
    }
}

fn app(config: &TransportConfig) -> Router {
    let slot = ServiceBuilder::new().map_response(|resp: Response| {
        if resp.extensions().get::<PlainHttpTurnedAway>().is_some() {
            TURNED_AWAY.fetch_add(1, Ordering::SeqCst);
        }
        resp
    });
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(TransportLayer::new(config).on_client(note).between(slot))
}

#[tokio::test]
async fn the_slot_sees_refusals_and_the_hook_runs_only_past_https() {
    let config = TransportConfig {
        production: true,
        pinned_client_certs: vec![[0x11; 32]],
        ..TransportConfig::default()
    };
    let app = app(&config);

    // Plain HTTP in production: turned away before the hook; the slot sees the refusal,
    // and the security headers (outside the slot) are still on it.
    let plain = request(
        "POST",
        "/hello",
        Some(conn("198.51.100.1:1", false, None)),
        &[],
        (),
    );
    let (status, headers, _) = send(&app, plain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(TURNED_AWAY.load(Ordering::SeqCst), 1);
    assert_eq!(NOTED.load(Ordering::SeqCst), 0);

    // Over TLS without the pinned certificate: the hook has run (the client is known)
    // before pinning refuses.
    let (status, _, _) = send(&app, request("GET", "/hello", Some(tls()), &[], ())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(NOTED.load(Ordering::SeqCst), 1);

    // With it: served, noted once more.
    let pinned = request(
        "GET",
        "/hello",
        Some(conn("198.51.100.1:1", true, Some([0x11; 32]))),
        &[],
        (),
    );
    let (status, _, body) = send(&app, pinned).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(NOTED.load(Ordering::SeqCst), 2);
    assert_eq!(TURNED_AWAY.load(Ordering::SeqCst), 1);
}
