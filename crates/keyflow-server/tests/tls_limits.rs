//! End-to-end over TLS, wired like `keyflow serve`: requests beyond the concurrency
//! limit and requests slower than the timeout are answered 503 at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::time::Duration;

use common::tls::{api, assert_security_headers, start_observed, HeldRequest};
use common::{Harness, Resp, OWN};
use serde_json::json;

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
    // The held request must still be in flight when the next one arrives, so the
    // timeout leaves room for a loaded machine; the test waits it out once, below.
    let (server, reads) = start_observed(&h, limited(&h, 1, Duration::from_secs(3))).await;
    let mut c = server.client().await;

    // One request in flight on a route with max_concurrency 1: the next one on the same
    // route is shed at once.
    let held = HeldRequest::start(&server, &reads, &h.admin).await;
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
    let (server, reads) = start_observed(&h, limited(&h, 1, Duration::from_secs(5))).await;
    let mut c = server.client().await;
    let held = HeldRequest::start(&server, &reads, &h.admin).await;
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
