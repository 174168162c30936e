//! Request integrity through the full stack: signatures, tampering, time window,
//! replays, required and optional paths, body limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

#[allow(dead_code)] // each test binary uses its own subset of the helpers
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use base64::Engine;
use common::{app, assert_error, request, send, tls};
use keyflow_transport::{sign_request, IntegritySecret, TransportConfig};

const SECRET: &str = "integrity-secret-for-tests-0123456789";

fn secret() -> IntegritySecret {
    IntegritySecret::new(SECRET).unwrap()
}

fn config() -> TransportConfig {
    TransportConfig {
        integrity_secret: Some(secret()),
        integrity_required_prefixes: vec!["/v1/keys".into()],
        ..TransportConfig::default()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh valid nonce for every call.
fn nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("test-nonce-{:016}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A request signed over (`method`, `uri`, `timestamp`, `nonce`, `signed_body`) but
/// carrying `sent_body`.
struct Signed<'a> {
    method: &'a str,
    uri: &'a str,
    timestamp: u64,
    nonce: String,
    signed_body: &'a [u8],
    secret: IntegritySecret,
}

impl<'a> Signed<'a> {
    fn new(method: &'a str, uri: &'a str, body: &'a [u8]) -> Self {
        Self {
            method,
            uri,
            timestamp: now(),
            nonce: nonce(),
            signed_body: body,
            secret: secret(),
        }
    }

    fn signature(&self) -> String {
        sign_request(
            &self.secret,
            self.method,
            self.uri,
            self.timestamp,
            &self.nonce,
            self.signed_body,
        )
    }

    fn request_with(
        &self,
        method: &str,
        uri: &str,
        signature: &str,
        sent_body: impl Into<Body>,
    ) -> Request {
        let ts = self.timestamp.to_string();
        request(
            method,
            uri,
            Some(tls()),
            &[
                ("x-keyflow-timestamp", &ts),
                ("x-keyflow-nonce", &self.nonce),
                ("x-keyflow-signature", signature),
            ],
            sent_body,
        )
    }

    fn request(&self) -> Request {
        self.request_with(
            self.method,
            self.uri,
            &self.signature(),
            self.signed_body.to_vec(),
        )
    }
}

async fn expect_refusal(app: &Router, req: Request, status: StatusCode, code: &str) {
    let (got, headers, body) = send(app, req).await;
    assert_eq!(got, status, "expected {code}, body {body:?}");
    assert_error(&body, code);
    assert_eq!(headers["x-frame-options"], "DENY");
}

#[tokio::test]
async fn valid_signature_passes_and_the_handler_sees_the_identical_body() {
    let app = app(config());
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let signed = Signed::new("POST", "/v1/keys/k1?purpose=userData&x=%2F", &body);
    let (status, headers, echoed) = send(&app, signed.request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-verified"], "yes");
    assert_eq!(echoed, Bytes::from(body));
}

#[tokio::test]
async fn base64_signatures_are_accepted() {
    let app = app(config());
    let signed = Signed::new("POST", "/v1/keys", b"{}");
    let raw = hex::decode(signed.signature()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let (status, _, _) = send(&app, signed.request_with("POST", "/v1/keys", &b64, "{}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let app = app(config());
    let signed = Signed {
        secret: IntegritySecret::new("another-secret-of-enough-length-000").unwrap(),
        ..Signed::new("POST", "/v1/keys", b"{}")
    };
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::UNAUTHORIZED,
        "integrity_invalid",
    )
    .await;
}

#[tokio::test]
async fn tampering_after_signing_is_refused() {
    let app = app(config());
    let signed = Signed::new("POST", "/v1/keys/k1?limit=1", b"{\"amount\":1}");
    let sig = signed.signature();
    let cases = [
        (
            "body changed",
            signed.request_with("POST", "/v1/keys/k1?limit=1", &sig, "{\"amount\":9}"),
        ),
        (
            "body dropped",
            signed.request_with("POST", "/v1/keys/k1?limit=1", &sig, ""),
        ),
        (
            "query changed",
            signed.request_with("POST", "/v1/keys/k1?limit=2", &sig, "{\"amount\":1}"),
        ),
        (
            "path changed",
            signed.request_with("POST", "/v1/keys/k2?limit=1", &sig, "{\"amount\":1}"),
        ),
        (
            "method changed",
            signed.request_with("PUT", "/v1/keys/k1?limit=1", &sig, "{\"amount\":1}"),
        ),
    ];
    for (what, req) in cases {
        let (status, _, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_error(&body, "integrity_invalid");
    }
    // The untampered request still passes: the failures above did not spend its nonce.
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn timestamps_outside_the_window_are_stale() {
    let app = app(config());
    for (what, timestamp) in [("past", now() - 301), ("future", now() + 301), ("zero", 0)] {
        let signed = Signed {
            timestamp,
            ..Signed::new("POST", "/v1/keys", b"{}")
        };
        let (status, _, body) = send(&app, signed.request()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_error(&body, "integrity_stale");
    }
    // Inside the window, either way, passes (the margin absorbs a slow test).
    for timestamp in [now() - 290, now() + 290] {
        let signed = Signed {
            timestamp,
            ..Signed::new("POST", "/v1/keys", b"{}")
        };
        assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn window_is_configurable() {
    let app = app(TransportConfig {
        integrity_window: Duration::from_secs(30),
        ..config()
    });
    let signed = Signed {
        timestamp: now() - 60,
        ..Signed::new("POST", "/v1/keys", b"{}")
    };
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::UNAUTHORIZED,
        "integrity_stale",
    )
    .await;
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let app = app(config());
    let signed = Signed::new("POST", "/v1/keys", b"{}");
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::UNAUTHORIZED,
        "integrity_replayed",
    )
    .await;

    // The same nonce on another path, newly signed, is still a replay.
    let again = Signed {
        nonce: signed.nonce.clone(),
        ..Signed::new("POST", "/v1/keys/other", b"{}")
    };
    expect_refusal(
        &app,
        again.request(),
        StatusCode::UNAUTHORIZED,
        "integrity_replayed",
    )
    .await;
}

#[tokio::test]
async fn missing_headers_on_a_required_prefix() {
    let app = app(config());
    let unsigned = request("POST", "/v1/keys", Some(tls()), &[], "{}");
    expect_refusal(
        &app,
        unsigned,
        StatusCode::UNAUTHORIZED,
        "integrity_required",
    )
    .await;

    let ts = now().to_string();
    let n = nonce();
    let no_signature = request(
        "POST",
        "/v1/keys/k1",
        Some(tls()),
        &[("x-keyflow-timestamp", &ts), ("x-keyflow-nonce", &n)],
        "{}",
    );
    expect_refusal(
        &app,
        no_signature,
        StatusCode::UNAUTHORIZED,
        "integrity_required",
    )
    .await;
}

#[tokio::test]
async fn malformed_headers_are_invalid() {
    let app = app(config());
    let signed = Signed::new("POST", "/v1/keys", b"{}");
    let sig = signed.signature();
    let ts = signed.timestamp.to_string();
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "short nonce",
            vec![
                ("x-keyflow-timestamp", &ts),
                ("x-keyflow-nonce", "short"),
                ("x-keyflow-signature", &sig),
            ],
        ),
        (
            "signed timestamp",
            vec![
                ("x-keyflow-timestamp", "+1"),
                ("x-keyflow-nonce", &signed.nonce),
                ("x-keyflow-signature", &sig),
            ],
        ),
        (
            "signature not hex",
            vec![
                ("x-keyflow-timestamp", &ts),
                ("x-keyflow-nonce", &signed.nonce),
                ("x-keyflow-signature", "zz"),
            ],
        ),
        (
            "two signatures",
            vec![
                ("x-keyflow-timestamp", &ts),
                ("x-keyflow-nonce", &signed.nonce),
                ("x-keyflow-signature", &sig),
                ("x-keyflow-signature", &sig),
            ],
        ),
    ];
    for (what, headers) in cases {
        let req = request("POST", "/v1/keys", Some(tls()), &headers, "{}");
        let (status, _, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_error(&body, "integrity_invalid");
    }
}

#[tokio::test]
async fn not_required_elsewhere_unless_configured() {
    let optional = app(config());
    let unsigned = request("POST", "/open", Some(tls()), &[], "plain");
    let (status, headers, body) = send(&optional, unsigned).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"plain"[..]));
    assert_eq!(headers["x-verified"], "no");
    // A prefix is a path segment boundary: /v1/keysets is not under /v1/keys.
    let unsigned = request("POST", "/v1/keysets", Some(tls()), &[], "");
    assert_eq!(send(&optional, unsigned).await.0, StatusCode::NOT_FOUND);

    // A signature offered on an optional path is still checked.
    let signed = Signed::new("POST", "/open", b"data");
    let (status, headers, _) = send(&optional, signed.request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-verified"], "yes");
    let bad = signed.request_with("POST", "/open", &"0".repeat(64), "data");
    expect_refusal(
        &optional,
        bad,
        StatusCode::UNAUTHORIZED,
        "integrity_invalid",
    )
    .await;

    // Required everywhere when configured so.
    let everywhere = app(TransportConfig {
        integrity_required_prefixes: vec!["/".into()],
        ..config()
    });
    let unsigned = request("POST", "/open", Some(tls()), &[], "plain");
    expect_refusal(
        &everywhere,
        unsigned,
        StatusCode::UNAUTHORIZED,
        "integrity_required",
    )
    .await;
}

#[tokio::test]
async fn required_without_a_secret_fails_closed() {
    let app = app(TransportConfig {
        integrity_secret: None,
        ..config()
    });
    let unsigned = request("POST", "/v1/keys", Some(tls()), &[], "{}");
    expect_refusal(
        &app,
        unsigned,
        StatusCode::SERVICE_UNAVAILABLE,
        "integrity_unavailable",
    )
    .await;
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    // The default limit is 1 MiB.
    let app = app(config());
    let big = vec![b'a'; 1024 * 1024 + 1];
    let signed = Signed::new("POST", "/v1/keys", &big);
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    let exact = vec![b'a'; 1024 * 1024];
    let signed = Signed::new("POST", "/v1/keys", &exact);
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);

    // A configured limit, announced by Content-Length or only discovered while reading.
    let app = app_with_limit(16);
    let signed = Signed::new("POST", "/v1/keys", b"0123456789abcdefX");
    let mut announced = signed.request();
    announced
        .headers_mut()
        .insert("content-length", "17".parse().unwrap());
    expect_refusal(
        &app,
        announced,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    let signed = Signed::new("POST", "/v1/keys", b"0123456789abcdefX");
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
}

fn app_with_limit(limit: usize) -> Router {
    app(TransportConfig {
        integrity_max_body: limit,
        ..config()
    })
}

#[tokio::test]
async fn a_full_nonce_table_refuses_with_503_instead_of_growing() {
    let app = app(TransportConfig {
        integrity_max_nonces: 2,
        ..config()
    });
    for _ in 0..2 {
        let signed = Signed::new("POST", "/v1/keys", b"{}");
        assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    }
    let signed = Signed::new("POST", "/v1/keys", b"{}");
    expect_refusal(
        &app,
        signed.request(),
        StatusCode::SERVICE_UNAVAILABLE,
        "replay_cache_full",
    )
    .await;
}

#[tokio::test]
async fn unsigned_garbage_never_fills_the_nonce_table() {
    let app = app(TransportConfig {
        integrity_max_nonces: 1,
        ..config()
    });
    for _ in 0..5 {
        let forged = Signed::new("POST", "/v1/keys", b"{}");
        let req = forged.request_with("POST", "/v1/keys", &"0".repeat(64), "{}");
        assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
    }
    let signed = Signed::new("POST", "/v1/keys", b"{}");
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
}

/// 401 with `code`, from the integrity layer alone (no security-header layer around it).
async fn refused(app: &Router, req: Request, code: &str) {
    let (status, _, body) = send(app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{code}");
    assert_error(&body, code);
}

/// The window's edges and the nonce table's memory, on a clock the test moves: exact
/// boundaries instead of margins that a slow run might eat.
#[tokio::test]
async fn the_window_and_the_nonce_table_follow_the_injected_clock() {
    use keyflow_core::clock::ManualClock;
    use keyflow_transport::RequestIntegrityLayer;
    use std::sync::Arc;

    let t0 = 1_800_000_000u64;
    let clock = Arc::new(ManualClock::new(i64::try_from(t0 * 1000).unwrap()));
    let app = Router::new()
        .route(
            "/v1/keys",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .layer(RequestIntegrityLayer::from_config_and_clock(
            &config(),
            clock.clone(),
        ));
    let at = |timestamp: u64| Signed {
        timestamp,
        ..Signed::new("POST", "/v1/keys", b"{}")
    };
    // Exactly at the edges of the ±300 s window: accepted; one second beyond: stale.
    for ts in [t0 - 300, t0 + 300] {
        assert_eq!(send(&app, at(ts).request()).await.0, StatusCode::OK, "{ts}");
    }
    for ts in [t0 - 301, t0 + 301] {
        refused(&app, at(ts).request(), "integrity_stale").await;
    }

    // A nonce is remembered while its timestamp is inside the window...
    let signed = at(t0);
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(300));
    refused(&app, signed.request(), "integrity_replayed").await;
    // ...and once the timestamp has left the window the request is stale, not a replay.
    clock.advance(Duration::from_secs(1));
    refused(&app, signed.request(), "integrity_stale").await;
    // The nonce itself may be used again under a new timestamp once the old one expired.
    let reused = Signed {
        nonce: signed.nonce.clone(),
        ..at(t0 + 301)
    };
    assert_eq!(send(&app, reused.request()).await.0, StatusCode::OK);
    refused(&app, reused.request(), "integrity_replayed").await;
}

/// Format 2 (`X-KeyFlow-Signature-Version: 2`): a request signed with the headers it
/// was sent with.
fn v2_request(
    s: &Signed<'_>,
    host: &str,
    authorization: &str,
    sent_host: &str,
    sent_auth: &str,
) -> Request {
    let sig = keyflow_transport::sign_request_v2(
        &s.secret,
        s.method,
        s.uri,
        s.timestamp,
        &s.nonce,
        keyflow_transport::SignedExtras {
            host,
            authorization: authorization.as_bytes(),
        },
        s.signed_body,
    );
    let ts = s.timestamp.to_string();
    request(
        s.method,
        s.uri,
        Some(tls()),
        &[
            ("x-keyflow-timestamp", &ts),
            ("x-keyflow-nonce", &s.nonce),
            ("x-keyflow-signature", &sig),
            ("x-keyflow-signature-version", "2"),
            ("host", sent_host),
            ("authorization", sent_auth),
        ],
        s.signed_body.to_vec(),
    )
}

/// Format 2 binds the host and the Authorization header: a signed request cannot be
/// sent to another host sharing the secret, nor re-attributed to another token.
#[tokio::test]
async fn format_2_binds_host_and_authorization() {
    let app = app(config());
    let (h, a) = ("kms.example.com", "Bearer kft_alice");
    let ok = Signed::new("POST", "/v1/keys", b"{}");
    let (status, headers, _) = send(&app, v2_request(&ok, h, a, h, a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-verified"], "yes");
    for (sent_host, sent_auth) in [("other.example.com", a), (h, "Bearer kft_mallory")] {
        let s = Signed::new("POST", "/v1/keys", b"{}");
        refused(
            &app,
            v2_request(&s, h, a, sent_host, sent_auth),
            "integrity_invalid",
        )
        .await;
    }
    // A format-1 signature sent as format 2 (or an unknown version) does not verify.
    let s = Signed::new("POST", "/v1/keys", b"{}");
    let mut req = s.request();
    req.headers_mut()
        .insert("x-keyflow-signature-version", "2".parse().unwrap());
    req.headers_mut().insert("host", h.parse().unwrap());
    refused(&app, req, "integrity_invalid").await;
    let mut req = Signed::new("POST", "/v1/keys", b"{}").request();
    req.headers_mut()
        .insert("x-keyflow-signature-version", "3".parse().unwrap());
    refused(&app, req, "integrity_invalid").await;
}

/// Old clients (format 1) are told apart and, with `integrity_min_version = 2`, refused.
#[tokio::test]
async fn format_1_is_refused_once_the_minimum_is_2() {
    let strict = app(TransportConfig {
        integrity_min_version: 2,
        ..config()
    });
    refused(
        &strict,
        Signed::new("POST", "/v1/keys", b"{}").request(),
        "integrity_outdated",
    )
    .await;
    let s = Signed::new("POST", "/v1/keys", b"{}");
    let host = "kms.example.com";
    assert_eq!(
        send(&strict, v2_request(&s, host, "", host, "")).await.0,
        StatusCode::OK
    );
    // The default still accepts format 1 (compatibility).
    let lenient = app(config());
    assert_eq!(
        send(&lenient, Signed::new("POST", "/v1/keys", b"{}").request())
            .await
            .0,
        StatusCode::OK
    );
}

/// Two instances behind a load balancer: with a table each, a signed request replays
/// once on the other; sharing one store (as the KeyFlow server does through its
/// keystore) refuses the replay everywhere.
#[tokio::test]
async fn a_shared_nonce_store_refuses_replays_across_instances() {
    use keyflow_transport::{MemoryNonceStore, NonceStore};
    use std::sync::Arc;
    let separate = (app(config()), app(config()));
    let s = Signed::new("POST", "/v1/keys", b"{}");
    assert_eq!(send(&separate.0, s.request()).await.0, StatusCode::OK);
    assert_eq!(
        send(&separate.1, s.request()).await.0,
        StatusCode::OK,
        "the hole: each instance remembers only its own nonces"
    );
    let shared: Arc<dyn NonceStore> = Arc::new(MemoryNonceStore::new(100));
    let with_shared = || {
        app(TransportConfig {
            nonce_store: Some(shared.clone()),
            ..config()
        })
    };
    let (a, b) = (with_shared(), with_shared());
    let s = Signed::new("POST", "/v1/keys", b"{}");
    assert_eq!(send(&a, s.request()).await.0, StatusCode::OK);
    refused(&b, s.request(), "integrity_replayed").await;
}
