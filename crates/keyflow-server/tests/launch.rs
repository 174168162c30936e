//! The server started exactly as `keyflow serve --dev` starts it (`ServeArgs` →
//! `Settings::resolve` → `launch::start` → `Server::run`), on an ephemeral loopback port
//! over TLS: the dev KEK, certificate and admin token are created, requests are served
//! and audited, and a shutdown records `server.stop`. Also: the settings refuse what
//! `keyflow serve` refuses, before the keystore is opened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{bounded, client_config, Client};
use keyflow_kms::audit::{AuditStore, MAX_PAGE};
use keyflow_kms::ServiceConfig;
use keyflow_server::launch::{self, Stores};
use keyflow_server::settings::{Backend, ServeArgs, ServeError, Settings, Site, SiteFacts};
use keyflow_store_sqlite::SqliteKeystore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::sync::oneshot;

/// What the CLI's global options resolve to for a data directory, outside production,
/// with no KEK password configured (dev mode generates one).
fn site(data: &Path) -> Site {
    Site {
        facts: SiteFacts {
            production: false,
            data_dir: data.to_owned(),
            kek_path: data.join("kek.json"),
            audit_journal_dir: data.join("audit-journal"),
            service: ServiceConfig::default(),
            backend: Backend::Sqlite(data.join("keyflow.db")),
        },
        kek_password: Err("KEK_PASSWORD is not set (nor KEYFLOW_KEK_PASSWORD_FILE)".into()),
    }
}

async fn operations(store: &SqliteKeystore) -> Vec<String> {
    let records = store.audit_scan(0, MAX_PAGE).await.unwrap();
    records.into_iter().map(|r| r.operation).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_starts_serves_and_stops_like_keyflow_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ServeArgs::parse_flags(["--dev", "--listen", "127.0.0.1:0"]).unwrap();
    let settings = Settings::resolve(&args, site(&data)).unwrap();
    assert!(
        settings.tls.is_some(),
        "dev mode serves its own certificate"
    );
    assert!(data.join("dev-kek-password").is_file());
    let store = Arc::new(
        SqliteKeystore::open(&data.join("keyflow.db"))
            .await
            .unwrap(),
    );
    let server = launch::start(
        settings,
        Stores {
            keys: store.clone(),
            audit: store.clone(),
        },
    )
    .await
    .unwrap();
    let token = server
        .dev_admin_token()
        .expect("dev mode creates an admin token")
        .to_owned();
    let addr = server.local_addr();
    assert_eq!(server.url(), format!("https://{addr}/api/encryption"));
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let (cert, _) = keyflow_server::tls::dev_certificate(&data.join("tls")).unwrap();
    let cert = CertificateDer::from_pem_file(cert).unwrap();
    let tls = client_config(&cert, rustls::DEFAULT_VERSIONS, &[b"http/1.1"]);
    let mut client = Client::connect(addr, Some(tls)).await;
    let r = client
        .post(
            "/api/encryption/encrypt",
            Some(&token),
            &json!({ "data": "4111111111111111", "purpose": "userData" }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["encryptedData"]
        .as_str()
        .unwrap()
        .starts_with("kf1:"));
    drop(client);

    stop.send(()).unwrap();
    bounded("shutdown", running).await.unwrap().unwrap();
    let ops = operations(&store).await;
    for op in ["server.start", "tokens.create", "server.stop"] {
        assert!(ops.iter().any(|o| o == op), "{op} not in {ops:?}");
    }
    assert!(ops.iter().any(|o| o.contains("encrypt")), "{ops:?}");

    // A second start finds the KEK, the password and a token: no new token.
    let args = ServeArgs::parse_flags(["--dev", "--listen", "127.0.0.1:0"]).unwrap();
    let again = launch::start(
        Settings::resolve(&args, site(&data)).unwrap(),
        Stores {
            keys: store.clone(),
            audit: store,
        },
    )
    .await
    .unwrap();
    assert!(again.dev_admin_token().is_none());
}

#[test]
fn settings_refuse_what_keyflow_serve_refuses_before_opening_the_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refused = |flags: &[&str], site: Site| match Settings::resolve(
        &ServeArgs::parse_flags(flags).unwrap(),
        site,
    ) {
        Err(ServeError::Config(m)) => m,
        other => panic!("{flags:?}: expected a configuration error, got {other:?}"),
    };
    let mut production = site(&data);
    production.facts.production = true;
    assert_eq!(
        refused(&["--dev"], production),
        "--dev is refused in production"
    );
    assert_eq!(
        refused(&["--dev", "--tls-cert", "c.pem"], site(&data)),
        "set both KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY"
    );
    assert_eq!(
        refused(&[], site(&data)),
        "KEK_PASSWORD is not set (nor KEYFLOW_KEK_PASSWORD_FILE)"
    );
    assert_eq!(
        refused(
            &[
                "--dev",
                "--cache-max-staleness-secs",
                "1",
                "--revalidate-ms",
                "1000"
            ],
            site(&data)
        ),
        "KEYFLOW_CACHE_MAX_STALENESS_SECS must exceed the revalidation interval"
    );
    let e = refused(&["--dev", "--integrity-min-version", "3"], site(&data));
    assert!(e.starts_with("KEYFLOW_INTEGRITY_MIN_VERSION: "), "{e}");
    assert!(!data.join("keyflow.db").exists(), "nothing opened");
}
