//! Connection-level limits of `serve_with`: the cap on open connections, idle
//! connections shut down (HTTP/2 GOAWAY, HTTP/1.1 close), and idle or slow clients do
//! not keep a normal client from being served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{bounded, client_config, request, tls_connect, Harness, Server, OWN};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyflow_server::serve::ServeOptions;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves the harness's app over TLS with `options`.
async fn start(h: &Harness, options: ServeOptions) -> Server {
    let (cert, key) = h.cert_files();
    let tls = keyflow_server::tls::server_config(&cert, &key, false).unwrap();
    let app = h.app(keyflow_transport::TransportConfig::default());
    h.start_with_options(app, Some(tls), options).await
}

/// A client configuration trusting `server`'s certificate, offering `alpn`.
fn config_for(server: &Server, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    client_config(
        server.cert.as_ref().unwrap(),
        rustls::DEFAULT_VERSIONS,
        &[alpn],
    )
}

fn encrypt_request(token: &str) -> hyper::Request<Full<Bytes>> {
    let body = json!({ "data": "x", "purpose": OWN }).to_string();
    request("POST", "/api/encryption/encrypt", Some(token))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// An HTTP/2 connection idle for the idle timeout gets GOAWAY and ends; before, an idle
/// HTTP/2 connection stayed open for as long as the client kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_shut_down() {
    let h = Harness::new().await;
    let server = start(
        &h,
        ServeOptions {
            idle_timeout: Duration::from_secs(1),
            ..ServeOptions::default()
        },
    )
    .await;
    let config = config_for(&server, b"h2");
    let tls = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let r = bounded("request", sender.send_request(encrypt_request(&h.admin)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    // The connection ends on the server's GOAWAY; STEP (10 s) is far beyond the 1 s idle
    // timeout, so a loaded machine does not fail this.
    bounded("the idle connection to end", conn)
        .await
        .unwrap()
        .unwrap();
}

/// An HTTP/1.1 keep-alive connection idle for the idle timeout is closed cleanly (the
/// header timeout, which would also close it, is set far beyond the test's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_connection_is_closed() {
    let h = Harness::new().await;
    let server = start(
        &h,
        ServeOptions {
            idle_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(600),
            ..ServeOptions::default()
        },
    )
    .await;
    let config = config_for(&server, b"http/1.1");
    let mut tls = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    tls.write_all(b"GET /api/encryption/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // Reads the response, then the end of the stream (a clean close).
    let n = bounded("the idle connection to close", tls.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        n > 0 && buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// With a cap of 2 connections, a third waits (its TLS handshake does not complete)
/// until one of the two closes, and is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_connection_waits_for_a_slot() {
    let h = Harness::new().await;
    let server = start(
        &h,
        ServeOptions {
            max_connections: 2,
            ..ServeOptions::default()
        },
    )
    .await;
    let config = config_for(&server, b"http/1.1");
    let first = bounded("TLS connect", tls_connect(server.addr, config.clone()))
        .await
        .unwrap();
    let _second = bounded("TLS connect", tls_connect(server.addr, config.clone()))
        .await
        .unwrap();
    let third = tokio::spawn(tls_connect(server.addr, config.clone()));
    // Half a second is ample for a handshake on loopback; if the cap let the third
    // connection in, it would be done by then. (A slow machine can only make this check
    // pass wrongly, never fail wrongly.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "the third connection was accepted beyond the cap"
    );
    drop(first);
    let third = bounded("the third connection", third)
        .await
        .unwrap()
        .unwrap();
    let mut sender = common::http1::<Full<Bytes>, _>(third).await;
    let r = bounded("request", sender.send_request(encrypt_request(&h.admin)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// 500 idle connections and 50 clients trickling a body do not keep a normal client
/// from being served (the "within a second" is the bound STEP stands for here,
/// generous for a loaded 2-core machine; on an idle one it takes milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_starve_a_normal_one() {
    let h = Harness::new().await;
    let server = start(&h, ServeOptions::default()).await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(
            bounded("TCP connect", tokio::net::TcpStream::connect(server.addr))
                .await
                .unwrap(),
        );
    }
    let config = config_for(&server, b"http/1.1");
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tls = bounded("TLS connect", tls_connect(server.addr, config.clone()))
            .await
            .unwrap();
        let head = format!(
            "POST /api/encryption/encrypt HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: 100000\r\n\r\n{{\"data\":\"",
            h.admin
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        slow.push(tls);
    }
    let mut client = server.client().await;
    let r = bounded(
        "a normal request",
        client.post(
            "/api/encryption/encrypt",
            Some(&h.admin),
            &json!({ "data": "x", "purpose": OWN }),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    drop((idle, slow));
}

/// A body trickled below the minimum rate fails after one window of waiting: the JSON
/// route answers 400 and the connection is closed (`Connection: close`), instead of the
/// request holding its slot until the 30 s request timeout (beyond STEP, so without the
/// minimum rate this test fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_below_the_minimum_rate_is_refused() {
    let h = Harness::new().await;
    let server = start(
        &h,
        ServeOptions {
            min_body_rate: keyflow_server::min_rate::MinRate {
                bytes: 1000,
                window: Duration::from_secs(1),
            },
            ..ServeOptions::default()
        },
    )
    .await;
    let config = config_for(&server, b"http/1.1");
    let mut tls = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    let head = format!(
        "POST /api/encryption/encrypt HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"data\":\"",
        h.admin
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    bounded("the answer and the close", tls.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.contains("could not read the request body"), "{text}");
}
