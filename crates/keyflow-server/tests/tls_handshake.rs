//! End-to-end TLS handshakes against the server, wired like `keyflow serve`: TLS 1.2
//! and 1.3 only, AEAD suites only, the server's choice of cipher suite (and its
//! configuration), HTTP/2 by ALPN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use bytes::Bytes;
use common::tls::{api, assert_security_headers};
use common::{bounded, client_config, http1, request, tls_connect, Harness, Resp, OWN};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ProtocolVersion;
use serde_json::json;

async fn health_over(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> (Option<ProtocolVersion>, Resp) {
    let tls = bounded("TLS connect", tls_connect(addr, config))
        .await
        .unwrap();
    let version = tls.get_ref().1.protocol_version();
    let mut sender = http1::<Full<Bytes>, _>(tls).await;
    let res = bounded(
        "request",
        sender.send_request(
            request("GET", &api("/health"), None)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    (version, Resp::read(res).await)
}

/// Runs `openssl s_client` against the server: whether it succeeded, and its output.
/// rustls cannot offer TLS 1.1 or CBC suites, so openssl is a test dependency: its
/// absence fails the test rather than skipping the checks.
async fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .args(args)
        .stdin(std::process::Stdio::null());
    let out = bounded(
        "openssl s_client",
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .unwrap();
    match out {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "openssl is not on PATH. openssl is a test dependency: install Debian's openssl \
             package (scripts/test-postgres.sh / .ci/run install it)"
        ),
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_only() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let cert = server.cert.clone().unwrap();

    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&cert, &[version], &[b"http/1.1"]);
        let (negotiated, r) = health_over(config, server.addr).await;
        assert_eq!(negotiated, Some(expected));
        assert_eq!(r.status, 200, "{r:?}");
    }

    // A client that does not trust the certificate is refused by the client itself;
    // this checks that the trust setup above is what made the handshakes work.
    let other = Harness::new().await;
    let untrusted = client_config(&other.cert_der(), rustls::DEFAULT_VERSIONS, &[b"http/1.1"]);
    assert!(tls_connect(server.addr, untrusted).await.is_err());

    // TLS 1.1 and weak suites: rustls cannot offer them, openssl can.
    let (ok, out) = s_client(server.addr, &["-tls1_2"]).await;
    assert!(
        ok && out.contains("New, TLSv1.2, Cipher is ECDHE-"),
        "openssl -tls1_2 should connect with an ECDHE AEAD suite:\n{out}"
    );
    // SECLEVEL=0 so that the refusal comes from the server, not from openssl's own policy.
    let (ok, out) = s_client(server.addr, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
    assert!(!ok, "a TLS 1.1 client must be refused:\n{out}");
    // The server answers the TLS 1.1 ClientHello with a fatal alert; nothing is negotiated.
    assert!(
        out.contains("Cipher is (NONE)") && out.contains("alert"),
        "expected a refused handshake:\n{out}"
    );
    // CBC suites (no AEAD) are refused too.
    let (ok, out) = s_client(
        server.addr,
        &[
            "-tls1_2",
            "-cipher",
            "AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA",
        ],
    )
    .await;
    assert!(
        !ok && out.contains("Cipher is (NONE)") && out.contains("alert"),
        "a client offering only CBC suites must be refused:\n{out}"
    );
}

/// A client (aws-lc-rs provider) offering only `suites`, in that order.
fn client_offering(
    cert: &rustls::pki_types::CertificateDer<'static>,
    suites: &[rustls::SupportedCipherSuite],
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// The suite a handshake with `config` negotiates (`None`: refused).
async fn negotiated_suite(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Option<rustls::CipherSuite> {
    let tls = bounded("TLS connect", tls_connect(addr, config))
        .await
        .ok()?;
    tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_the_cipher_suite() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::CipherSuite;
    let h = Harness::new().await;
    let cert = h.cert_der();
    let (cert_file, key_file) = h.cert_files();

    // Default: AES-128-GCM first, whatever the client prefers (rustls clients list
    // AES-256 first), on TLS 1.3 and on TLS 1.2; AES-256 when it is all a client offers.
    let server = h.start_tls().await;
    let all = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    for (offer, want) in [
        (all.clone(), CipherSuite::TLS13_AES_128_GCM_SHA256),
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let got = negotiated_suite(server.addr, client_offering(&cert, &offer)).await;
        assert_eq!(got, Some(want), "offered {offer:?}");
    }

    // Restricted by configuration (KEYFLOW_TLS_CIPHER_SUITES): only AES-256-GCM on
    // TLS 1.3; a client without it, or speaking only TLS 1.2, is refused.
    let options = keyflow_server::tls::TlsOptions {
        cipher_suites: vec!["TLS13_AES_256_GCM_SHA384".into()],
        ..Default::default()
    };
    let config = keyflow_server::tls::server_config_with(&cert_file, &key_file, &options).unwrap();
    let strict = h.start_with(h.app(Default::default()), Some(config)).await;
    assert_eq!(
        negotiated_suite(strict.addr, client_offering(&cert, &all)).await,
        Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    for offer in [
        vec![cs::TLS13_AES_128_GCM_SHA256],
        vec![cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
    ] {
        assert_eq!(
            negotiated_suite(strict.addr, client_offering(&cert, &offer)).await,
            None,
            "offered {offer:?}"
        );
    }
    // The restricted server still answers requests.
    let (_, r) = health_over(client_offering(&cert, &all), strict.addr).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Blank names (an empty variable, a trailing comma) leave the default order.
    let blank = [String::new(), " ".into()];
    assert_eq!(
        keyflow_server::tls::cipher_suites(&blank).unwrap(),
        keyflow_server::tls::cipher_suites(&[]).unwrap()
    );
    let trailing = ["TLS13_AES_256_GCM_SHA384".to_owned(), String::new()];
    assert_eq!(
        keyflow_server::tls::cipher_suites(&trailing).unwrap(),
        vec![cs::TLS13_AES_256_GCM_SHA384]
    );

    // A name the provider does not know stops the start, naming it and the known ones.
    let options = keyflow_server::tls::TlsOptions {
        cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
        ..Default::default()
    };
    let err = keyflow_server::tls::server_config_with(&cert_file, &key_file, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'TLS_RSA_WITH_RC4_128_SHA'") && err.contains("TLS13_AES_256_GCM_SHA384"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let cert = server.cert.clone().unwrap();

    let config = client_config(&cert, rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"]);
    let tls = bounded("TLS connect", tls_connect(server.addr, config))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = bounded(
        "h2 request",
        sender.send_request(
            request("GET", "https://localhost/api/encryption/health", None)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let r = Resp::read(res).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_security_headers(&r);
    let res = bounded(
        "h2 request",
        sender.send_request(
            request(
                "POST",
                "https://localhost/api/encryption/encrypt",
                Some(&h.admin),
            )
            .body(Full::new(Bytes::from(
                json!({ "data": "over h2", "purpose": OWN }).to_string(),
            )))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let r = Resp::read(res).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["encryptedData"]
        .as_str()
        .unwrap()
        .starts_with("kf1:"));

    // A client that offers only HTTP/1.1 gets HTTP/1.1.
    let config = client_config(&cert, rustls::DEFAULT_VERSIONS, &[b"http/1.1"]);
    let tls = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}
