//! `/health` serves a cached keystore check, refreshed in the background: no keystore
//! query per request of an unauthenticated route.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::time::Duration;

use axum::body::Body;
use common::{bounded, oneshot, request, Harness};
use keyflow_server::health::FRESH;

async fn check_age_ms(app: &axum::Router) -> u64 {
    let r = oneshot(
        app,
        request("GET", "/api/encryption/health", None)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let json = r.json();
    assert_eq!(json["checks"]["keystore"], "ok", "{json}");
    json["checks"]["keystoreCheckAgeMs"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serves_a_cached_check_and_refreshes_it_in_the_background() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    // The first request of a process waits for a check.
    check_age_ms(&app).await;
    // Past the freshness window, a request is still answered from the old check (a
    // request that queried the keystore itself would report an age near 0) …
    let wait = FRESH + Duration::from_millis(200);
    tokio::time::sleep(wait).await;
    let age = check_age_ms(&app).await;
    assert!(age >= wait.as_millis() as u64, "age {age} ms");
    // … and it starts one background check, whose result the next requests see.
    bounded("the background check", async {
        while check_age_ms(&app).await >= wait.as_millis() as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
