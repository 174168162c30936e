//! The header, HTTPS, proxy, CORS, pinning and header-encryption layers, driven through
//! an axum Router with `oneshot`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

#[allow(dead_code)] // each test binary uses its own subset of the helpers
mod common;

use axum::http::{HeaderMap, StatusCode};
use common::{app, assert_error, conn, request, send, tls};
use keyflow_transport::{IntegritySecret, TransportConfig};

const HOST: &str = "kms.example.com";
const FRONTEND: &str = "https://app.example.com";

fn production() -> TransportConfig {
    TransportConfig {
        production: true,
        public_host: Some(HOST.into()),
        trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        allowed_origins: vec![FRONTEND.into()],
        ..TransportConfig::default()
    }
}

fn development() -> TransportConfig {
    TransportConfig {
        allowed_origins: vec![FRONTEND.into()],
        ..TransportConfig::default()
    }
}

/// The exact values the spec asks for, written out here rather than taken from the
/// crate so that a change to the crate's constants fails this test.
fn assert_security_headers(h: &HeaderMap) {
    let exact = [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains; preload",
        ),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("pragma", "no-cache"),
    ];
    for (name, value) in exact {
        let values: Vec<_> = h.get_all(name).iter().collect();
        assert_eq!(values, [value], "{name}");
    }
    let permissions = h["permissions-policy"].to_str().unwrap();
    for feature in [
        "camera=()",
        "microphone=()",
        "geolocation=()",
        "payment=()",
        "usb=()",
    ] {
        assert!(permissions.contains(feature), "{feature} in {permissions}");
    }
    assert!(!h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("unsafe"));
}

#[tokio::test]
async fn security_headers_on_every_kind_of_response_in_every_mode() {
    for config in [development(), production()] {
        let mode = if config.production {
            "production"
        } else {
            "development"
        };
        let app = app(config);
        let cases = [
            (
                request("GET", "/hello", Some(tls()), &[], ()),
                StatusCode::OK,
            ),
            (
                request("GET", "/missing", Some(tls()), &[], ()),
                StatusCode::NOT_FOUND,
            ),
            (
                request("GET", "/fail", Some(tls()), &[], ()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                request("DELETE", "/hello", Some(tls()), &[], ()),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            // A refusal produced by one of the layers themselves.
            (
                request(
                    "OPTIONS",
                    "/hello",
                    Some(tls()),
                    &[
                        ("origin", "https://evil.example"),
                        ("access-control-request-method", "POST"),
                    ],
                    (),
                ),
                StatusCode::FORBIDDEN,
            ),
        ];
        for (req, expected) in cases {
            let uri = req.uri().clone();
            let (status, headers, _) = send(&app, req).await;
            assert_eq!(status, expected, "{mode} {uri}");
            assert_security_headers(&headers);
        }
    }
}

#[tokio::test]
async fn security_headers_on_https_refusal_and_redirect() {
    let app = app(production());
    let (status, headers, body) = send(
        &app,
        request(
            "POST",
            "/open",
            Some(conn("198.51.100.20:1", false, None)),
            &[],
            "x",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "https_required");
    assert_security_headers(&headers);

    let (status, headers, _) = send(&app, request("GET", "/hello", None, &[], ())).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_security_headers(&headers);
}

#[tokio::test]
async fn production_redirects_plain_get_and_head_to_the_configured_host() {
    let app = app(production());
    for method in ["GET", "HEAD"] {
        let req = request(
            method,
            "/hello?x=1&y=%20",
            Some(conn("198.51.100.20:1", false, None)),
            &[
                ("host", "evil.example"),
                ("x-forwarded-host", "evil.example"),
            ],
            (),
        );
        let (status, headers, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{method}");
        assert_eq!(
            headers["location"], "https://kms.example.com/hello?x=1&y=%20",
            "{method}"
        );
        if method == "GET" {
            assert_error(&body, "https_required");
        }
    }
    // An absolute-form target names a host too; it is ignored as well.
    let req = request("GET", "http://evil.example/hello", None, &[], ());
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://kms.example.com/hello");
}

#[tokio::test]
async fn production_refuses_other_methods_over_plain_http() {
    let app = app(production());
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let req = request(
            method,
            "/open",
            Some(conn("198.51.100.20:1", false, None)),
            &[],
            "x",
        );
        let (status, headers, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}");
        assert!(headers.get("location").is_none());
        assert_error(&body, "https_required");
    }
}

#[tokio::test]
async fn production_without_public_host_refuses_instead_of_redirecting() {
    let app = app(TransportConfig {
        public_host: None,
        ..production()
    });
    let (status, headers, body) = send(&app, request("GET", "/hello", None, &[], ())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(headers.get("location").is_none());
    assert_error(&body, "https_required");
}

#[tokio::test]
async fn production_over_tls_is_served() {
    let app = app(production());
    let (status, _, body) = send(&app, request("GET", "/hello", Some(tls()), &[], ())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn development_does_not_redirect_or_refuse_plain_http() {
    let app = app(development());
    let plain = || Some(conn("127.0.0.1:1", false, None));
    let (status, _, body) = send(&app, request("GET", "/hello", plain(), &[], ())).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    let (status, _, body) = send(&app, request("POST", "/open", plain(), &[], "data")).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"data"[..]));
    let (status, _, _) = send(&app, request("GET", "/hello", None, &[], ())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn forwarded_headers_are_honoured_from_a_trusted_proxy() {
    let app = app(production());
    let req = request(
        "GET",
        "/whoami",
        Some(conn("10.0.0.1:40000", false, None)),
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
        (),
    );
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "203.0.113.7");

    // The same proxy saying the client used plain HTTP gets the client redirected.
    let req = request(
        "GET",
        "/whoami",
        Some(conn("10.0.0.1:40000", true, None)),
        &[("x-forwarded-proto", "http")],
        (),
    );
    let (status, _, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
}

#[tokio::test]
async fn forwarded_headers_are_ignored_from_anyone_else() {
    let app = app(production());
    let forged = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "10.9.9.9"),
    ];
    let req = request(
        "GET",
        "/whoami",
        Some(conn("203.0.113.9:5000", false, None)),
        &forged,
        (),
    );
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://kms.example.com/whoami");

    let req = request(
        "POST",
        "/open",
        Some(conn("203.0.113.9:5000", false, None)),
        &forged,
        "x",
    );
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "https_required");

    // Over TLS the request is served, and the client address is the peer's, not the
    // forged one.
    let req = request(
        "GET",
        "/whoami",
        Some(conn("203.0.113.9:5000", true, None)),
        &forged,
        (),
    );
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "203.0.113.9");

    // Without ConnectionInfo nobody is trusted and the address is unknown.
    let app = app_dev();
    let (_, _, body) = send(&app, request("GET", "/whoami", None, &forged, ())).await;
    assert_eq!(body, "unknown");
}

fn app_dev() -> axum::Router {
    app(development())
}

#[tokio::test]
async fn cors_allowed_origin_is_echoed_exactly() {
    let app = app_dev();
    let req = request("GET", "/hello", Some(tls()), &[("origin", FRONTEND)], ());
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], FRONTEND);
    assert!(headers.get_all("vary").iter().any(|v| v == "Origin"));
    assert!(headers.get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn cors_other_origins_get_no_allow_origin() {
    let app = app_dev();
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "null",
    ] {
        let req = request("GET", "/hello", Some(tls()), &[("origin", origin)], ());
        let (status, headers, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::OK, "{origin}");
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(
            headers.get_all("vary").iter().any(|v| v == "Origin"),
            "{origin}"
        );
    }
    // No Origin at all: no CORS headers.
    let (_, headers, _) = send(&app, request("GET", "/hello", Some(tls()), &[], ())).await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_preflight_from_allowed_origin() {
    let app = app_dev();
    let req = request(
        "OPTIONS",
        "/v1/keys",
        Some(tls()),
        &[
            ("origin", FRONTEND),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, x-keyflow-signature",
            ),
        ],
        (),
    );
    let (status, headers, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(headers["access-control-allow-origin"], FRONTEND);
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for h in [
        "authorization",
        "content-type",
        "x-keyflow-timestamp",
        "x-keyflow-nonce",
        "x-keyflow-signature",
        "x-ssn",
    ] {
        assert!(allowed.split(", ").any(|a| a == h), "{h} in {allowed}");
    }
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(headers["vary"].to_str().unwrap().contains("Origin"));
    assert_security_headers(&headers);
}

#[tokio::test]
async fn cors_preflight_from_other_origin_is_forbidden() {
    let app = app_dev();
    let req = request(
        "OPTIONS",
        "/v1/keys",
        Some(tls()),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        (),
    );
    let (status, headers, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "origin_not_allowed");
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn websocket_upgrade_from_other_origin_is_forbidden() {
    let app = app_dev();
    let ws = |origin: &'static str| {
        request(
            "GET",
            "/hello",
            Some(tls()),
            &[
                ("origin", origin),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
            ],
            (),
        )
    };
    let (status, _, body) = send(&app, ws("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "origin_not_allowed");
    // From the allowed origin the upgrade reaches the app (here a plain handler).
    let (status, _, _) = send(&app, ws(FRONTEND)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refusals_from_inner_layers_carry_cors_headers() {
    let app = app(TransportConfig {
        integrity_secret: Some(IntegritySecret::new("s".repeat(32)).unwrap()),
        integrity_required_prefixes: vec!["/v1/keys".into()],
        ..development()
    });
    let req = request(
        "POST",
        "/v1/keys",
        Some(tls()),
        &[("origin", FRONTEND)],
        "{}",
    );
    let (status, headers, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "integrity_required");
    assert_eq!(headers["access-control-allow-origin"], FRONTEND);
}

#[tokio::test]
async fn client_certificate_pinning() {
    let pinned = [0x11; 32];
    let app = app(TransportConfig {
        pinned_client_certs: vec![[0x22; 32], pinned],
        ..development()
    });
    let with_cert = |cert| {
        request(
            "GET",
            "/hello",
            Some(conn("198.51.100.1:1", true, cert)),
            &[],
            (),
        )
    };

    let (status, _, body) = send(&app, with_cert(Some(pinned))).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"hello"[..]));

    for (what, req) in [
        ("unpinned", with_cert(Some([0x33; 32]))),
        ("no certificate", with_cert(None)),
        ("no ConnectionInfo", request("GET", "/hello", None, &[], ())),
    ] {
        let (status, headers, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
        assert_error(&body, "client_cert_not_pinned");
        assert_security_headers(&headers);
    }

    // Without pins, certificates are not looked at.
    let app = app_dev();
    let (status, _, _) = send(&app, with_cert(None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn header_encryption_strict() {
    let app = app(TransportConfig {
        header_encryption_strict: true,
        ..development()
    });
    let clear = request(
        "POST",
        "/open",
        Some(tls()),
        &[("x-ssn", "123-45-6789")],
        "x",
    );
    let (status, _, body) = send(&app, clear).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "header_not_encrypted");
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("x-ssn"), "{text}");
    assert!(
        !text.contains("123-45-6789"),
        "the value must never be echoed: {text}"
    );

    for value in ["kf1:", "kf1:not base64", "KF1:AQEI"] {
        let req = request(
            "POST",
            "/open",
            Some(tls()),
            &[("X-Card-Number", value)],
            "x",
        );
        let (status, _, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
        assert_error(&body, "header_not_encrypted");
    }

    let encrypted = request(
        "POST",
        "/open",
        Some(tls()),
        &[("x-ssn", "kf1:AQEIAAAAAQ-_ZXhhbXBsZQ")],
        "x",
    );
    let (status, _, body) = send(&app, encrypted).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"x"[..]));

    // Headers not on the list are not checked.
    let other = request(
        "POST",
        "/open",
        Some(tls()),
        &[("x-note", "clear text")],
        "x",
    );
    assert_eq!(send(&app, other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn header_encryption_not_strict_lets_clear_values_through() {
    let app = app_dev();
    let clear = request(
        "POST",
        "/open",
        Some(tls()),
        &[("x-ssn", "123-45-6789")],
        "x",
    );
    assert_eq!(send(&app, clear).await.0, StatusCode::OK);
}
