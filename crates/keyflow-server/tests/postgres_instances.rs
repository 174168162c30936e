//! Two server instances on one PostgreSQL keystore (issue 7): a revocation or rotation
//! made through one takes effect on the other when PostgreSQL pushes the change
//! (LISTEN/NOTIFY), whatever the cache TTL and long before the next poll. Skipped (with a visible notice) without
//! `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use keyflow_kms::access::{self, Role};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{EncryptionService, Keystore, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_server::upkeep::{self, UpkeepConfig};
use keyflow_server::{AppState, HttpSettings, Limits};
use keyflow_testkit::postgres::with_database;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Instance {
    app: Router,
    _upkeep: upkeep::Upkeep,
}

async fn instance(store: Arc<dyn Keystore>, kek_path: &std::path::Path, first: bool) -> Instance {
    let password = KekPassword::new("correct horse battery staple".into(), false).unwrap();
    let kek = if first {
        let fast = KdfParams {
            iterations: MIN_PBKDF2_ITERATIONS,
        };
        kek_provider::init(kek_path, &password, fast, &*store, &OsRng)
            .await
            .unwrap()
            .1
    } else {
        kek_provider::unlock(kek_path, &password, &*store)
            .await
            .unwrap()
    };
    let service = Arc::new(EncryptionService::new(
        store.clone(),
        kek,
        ServiceConfig {
            cache_ttl: Duration::from_secs(3600),
            max_staleness: Some(Duration::from_secs(10)),
            background_usage_flush: true,
            ..ServiceConfig::default()
        },
    ));
    let tokens = TokenCache::new(store, Arc::new(SystemClock));
    tokens.refresh().await.unwrap();
    let state = AppState::new(service, tokens, Limits::default());
    let up = upkeep::spawn(
        state.clone(),
        UpkeepConfig {
            // A slow poll: what makes the change visible within a second is the
            // notification, not the poll.
            // Far beyond the test's bound: only NOTIFY can bring a change in time.
            revalidate_every: Duration::from_secs(60),
            scheduler_every: None,
            holder: format!("instance-{first}"),
        },
    );
    Instance {
        app: keyflow_server::app(state, &HttpSettings::default()),
        _upkeep: up,
    }
}

async fn post(app: &Router, path: &str, token: &str, body: Value) -> (u16, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/encryption{path}"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Polls `done` until it holds. The change travels through PostgreSQL, a real external
/// process: the bound is generous so a loaded machine cannot fail the test, and the
/// 20 ms pause only paces the polling. The instances poll only every 60 s, so within the
/// bound only NOTIFY can have brought the change.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not seen within 10 s (NOTIFY was not heard)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_revocation_through_one_instance_reach_the_other_by_notify() {
    with_database("postgres_instances", |db, _url| async move {
        let dir = tempfile::tempdir().unwrap();
        let kek_path = dir.path().join("kek.json");
        let connect = || async {
            let store = keyflow_store_postgres::PostgresKeystore::connect_with(
                db.options(),
                &keyflow_store_postgres::PoolSettings::with_max_connections(4),
            )
            .await
            .unwrap();
            Arc::new(store) as Arc<dyn Keystore>
        };
        let store_a = connect().await;
        let store_b = connect().await;
        let a = instance(store_a.clone(), &kek_path, true).await;
        let b = instance(store_b, &kek_path, false).await;
        let admin = access::generate(
            Role::Admin,
            vec![],
            "t".into(),
            SystemClock.now_millis() - 1000,
            None,
            &OsRng,
        )
        .unwrap();
        store_a.insert_token(&admin.record).await.unwrap();
        let token = admin.token.to_string();
        // Both instances see the new token within a second (token refresh).
        for (name, app) in [("A", &a.app), ("B", &b.app)] {
            eventually(&format!("token on {name}"), || async {
                post(
                    app,
                    "/encrypt",
                    &token,
                    json!({ "data": 0, "purpose": "userData" }),
                )
                .await
                .0 == 200
            })
            .await;
        }
        let (s, r) = post(
            &a.app,
            "/encrypt",
            &token,
            json!({ "data": "s", "purpose": "userData" }),
        )
        .await;
        let ct = r["encryptedData"]
            .as_str()
            .unwrap_or_else(|| panic!("{s} {r}"))
            .to_owned();
        // B caches version 1 for an hour by decrypting.
        let (s, r) = post(&b.app, "/decrypt", &token, json!({ "encryptedData": ct })).await;
        assert_eq!((s, r), (200, json!({ "data": "s" })));
        // Rotate through A: B encrypts under version 2 within a second.
        let (s, _) = post(
            &a.app,
            "/keys/rotate",
            &token,
            json!({ "purpose": "userData" }),
        )
        .await;
        assert_eq!(s, 200);
        eventually("rotation seen by B", || async {
            let (_, r) = post(
                &b.app,
                "/encrypt",
                &token,
                json!({ "data": 1, "purpose": "userData" }),
            )
            .await;
            let ct = r["encryptedData"].as_str().unwrap_or_default().to_owned();
            EncryptionService::summary(&ct).ok().map(|s| s.key_version) == Some(2)
        })
        .await;
        // Revoke version 1 through A: B refuses it within a second.
        let (s, _) = post(
            &a.app,
            "/keys/revoke",
            &token,
            json!({ "purpose": "userData", "version": 1, "reason": "t" }),
        )
        .await;
        assert_eq!(s, 200);
        eventually("revocation seen by B", || async {
            post(&b.app, "/decrypt", &token, json!({ "encryptedData": ct }))
                .await
                .0
                == 422
        })
        .await;
        // Reinstate through B: A decrypts again within a second.
        let (s, _) = post(
            &b.app,
            "/keys/reinstate",
            &token,
            json!({ "purpose": "userData", "version": 1 }),
        )
        .await;
        assert_eq!(s, 200);
        eventually("reinstatement seen by A", || async {
            post(&a.app, "/decrypt", &token, json!({ "encryptedData": ct }))
                .await
                .0
                == 200
        })
        .await;
    })
    .await;
}
