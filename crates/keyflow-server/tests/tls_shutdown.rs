//! End-to-end over TLS, wired like `keyflow serve`: graceful shutdown finishes the
//! requests in flight, closes idle connections, and is not held up by a client that
//! never starts its TLS handshake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::time::Duration;

use common::tls::{api, start_observed, HeldRequest};
use common::{bounded, client_config, tls_connect, Harness, STEP};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = Harness::new().await;
    let (mut server, reads) = start_observed(&h, h.app(Default::default())).await;

    // An idle keep-alive connection, used once.
    let mut idle = server.client().await;
    assert_eq!(idle.get(&api("/health"), None).await.status, 200);

    // A batch of 1000 items in flight when the shutdown starts.
    let held = HeldRequest::start(&server, &reads, &h.admin).await;
    server.trigger_shutdown();

    // The listener closes: new connections are refused while the request is in flight.
    // The server exposes no event for it, so poll (the interval only paces the polling;
    // the deadline is the bound).
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::net::TcpStream::connect(server.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the listener still accepts connections {STEP:?} after shutdown: {other:?}"
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
    let open = tokio::time::timeout(STEP, idle.connection_open()).await;
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
    let _silent = bounded("TCP connect", tokio::net::TcpStream::connect(server.addr))
        .await
        .unwrap();
    // The listener hands connections out in the order they were established, so once a
    // later one has completed its TLS handshake, the server has accepted the silent one
    // too and is waiting for its ClientHello. The later one is closed at once.
    let config = client_config(
        server.cert.as_ref().unwrap(),
        rustls::DEFAULT_VERSIONS,
        &[b"http/1.1"],
    );
    let later = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    drop(later);
    server.trigger_shutdown();
    // Well under the 5 s grace period (`Harness::start_with`), which is when serve
    // would return if the silent connection held it up.
    let served = tokio::time::timeout(Duration::from_secs(2), &mut server.task).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "serve did not return within 2 s of the shutdown signal: {served:?}"
    );
}
