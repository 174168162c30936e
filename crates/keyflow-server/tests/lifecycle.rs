//! Lifecycle routes (revoke, reinstate, destroy, policy, rotate-due, rewrap) and two
//! server instances on one keystore: a change through one takes effect on the other
//! within a second; an instance cut off from its keystore stops being ready.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use common::{oneshot, request, Harness, Resp, OTHER, OWN};
use keyflow_kms::clock::{Clock, ManualClock, SystemClock};
use keyflow_kms::kek_provider;
use keyflow_kms::{EncryptionService, Keystore, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_server::upkeep::{self, UpkeepConfig};
use keyflow_server::{AppState, HttpSettings, Limits};
use keyflow_store_sqlite::SqliteKeystore;
use serde_json::{json, Value};

async fn post(app: &Router, path: &str, token: &str, body: Value) -> Resp {
    let req = request("POST", &format!("/api/encryption{path}"), Some(token))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    oneshot(app, req).await
}

/// `POST /decrypt` of `ct` without a context.
async fn decrypt(app: &Router, token: &str, ct: &str) -> Resp {
    post(app, "/decrypt", token, json!({ "encryptedData": ct })).await
}

async fn get(app: &Router, path: &str, token: &str) -> Resp {
    let req = request("GET", &format!("/api/encryption{path}"), Some(token))
        .body(Body::empty())
        .unwrap();
    oneshot(app, req).await
}

#[tokio::test]
async fn lifecycle_routes_are_admin_only_and_enforce_states() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let ct = h.ciphertext(&json!("123-45-6789"), OWN, &[]).await;
    let v1 = json!({ "purpose": OWN, "version": 1, "reason": "test" });
    for (path, body) in [
        ("/keys/revoke", &v1),
        ("/keys/reinstate", &v1),
        ("/keys/destroy", &v1),
        (
            "/keys/policy",
            &json!({ "purpose": OWN, "rotationDays": 30 }),
        ),
        ("/keys/rotate-due", &json!({})),
    ] {
        for token in [&h.service_token, &h.auditor] {
            let r = post(&app, path, token, body.clone()).await;
            assert_eq!(r.status.as_u16(), 403, "{path}: {r:?}");
        }
    }
    // Malformed JSON, a missing field and version 0 are client errors, not faults.
    let req = request("POST", "/api/encryption/keys/revoke", Some(&h.admin))
        .header("content-type", "application/json")
        .body(Body::from("{\"purpose\": "))
        .unwrap();
    let r = oneshot(&app, req).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (400, Some("invalid_json"))
    );
    for body in [
        json!({ "version": 1, "reason": "x" }),
        json!({ "purpose": OWN, "version": 0, "reason": "x" }),
    ] {
        let r = post(&app, "/keys/revoke", &h.admin, body).await;
        assert_eq!(r.status.as_u16(), 400, "{r:?}");
    }
    // The active version cannot be revoked.
    let r = post(&app, "/keys/revoke", &h.admin, v1.clone()).await;
    assert_eq!(r.status.as_u16(), 409, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_key_state");
    post(&app, "/keys/rotate", &h.admin, json!({ "purpose": OWN })).await;
    // Missing reason → 400; unknown version → 404.
    let r = post(
        &app,
        "/keys/revoke",
        &h.admin,
        json!({ "purpose": OWN, "version": 1 }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{r:?}");
    let r = post(
        &app,
        "/keys/revoke",
        &h.admin,
        json!({ "purpose": OWN, "version": 7, "reason": "x" }),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (404, Some("unknown_key"))
    );
    // Revoked: decrypt refuses with 422.
    let r = post(&app, "/keys/revoke", &h.admin, v1.clone()).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(r.json()["revokedReason"], "test");
    let r = decrypt(&app, &h.service_token, &ct).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (422, Some("key_unavailable"))
    );
    // Reinstated: decrypts again.
    let r = post(&app, "/keys/reinstate", &h.admin, v1.clone()).await;
    assert_eq!(r.json()["status"], "deprecated");
    let r = decrypt(&app, &h.service_token, &ct).await;
    r.assert_json(200, &json!({ "data": "123-45-6789" }));
    // Destroy needs revoked and an explicit confirmation.
    let r = post(&app, "/keys/destroy", &h.admin, v1.clone()).await;
    assert_eq!(r.status.as_u16(), 400, "{r:?}");
    let confirm = json!({ "purpose": OWN, "version": 1, "confirm": true });
    let r = post(&app, "/keys/destroy", &h.admin, confirm.clone()).await;
    assert_eq!(r.status.as_u16(), 409, "not revoked yet: {r:?}");
    post(&app, "/keys/revoke", &h.admin, v1.clone()).await;
    let r = post(&app, "/keys/destroy", &h.admin, confirm).await;
    assert_eq!(r.json()["status"], "destroyed", "{r:?}");
    let r = decrypt(&app, &h.service_token, &ct).await;
    assert_eq!(r.status.as_u16(), 422, "{r:?}");
}

#[tokio::test]
async fn policies_and_rotate_due() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let r = get(&app, &format!("/keys/policy?purpose={OWN}"), &h.auditor).await;
    assert_eq!(r.json()["policy"]["rotationDays"], 90, "{r:?}");
    let r = post(
        &app,
        "/keys/policy",
        &h.admin,
        json!({ "purpose": OWN, "rotationDays": 30, "warnDays": 5 }),
    )
    .await;
    assert_eq!(r.json()["policy"]["rotationDays"], 30, "{r:?}");
    assert_eq!(r.json()["policy"]["graceDays"], 30, "untouched values kept");
    let r = post(
        &app,
        "/keys/policy",
        &h.admin,
        json!({ "purpose": OWN, "warnDays": 30 }),
    )
    .await;
    assert_eq!(
        r.status.as_u16(),
        400,
        "warn window must be shorter than the period: {r:?}"
    );
    // At +40 days only OWN (30-day policy) is due; OTHER (90 days) is not.
    let at = keyflow_kms::clock::rfc3339(common::now_millis() + 40 * 86_400_000);
    let r = post(
        &app,
        "/keys/rotate-due",
        &h.admin,
        json!({ "at": at, "dryRun": true }),
    )
    .await;
    let actions = r.json()["actions"].as_array().unwrap().clone();
    assert_eq!(actions.len(), 1, "{r:?}");
    assert_eq!(actions[0]["purpose"], OWN);
    assert_eq!(actions[0]["outcome"], "skipped (dry run)");
    let r = post(&app, "/keys/rotate-due", &h.admin, json!({ "at": at })).await;
    assert_eq!(r.json()["actions"][0]["outcome"], "applied", "{r:?}");
    let r = get(
        &app,
        &format!("/keys?purpose={OWN}&status=active"),
        &h.admin,
    )
    .await;
    assert_eq!(r.json()["keys"][0]["version"], 2);
    let r = post(
        &app,
        "/keys/rotate-due",
        &h.admin,
        json!({ "at": "next tuesday" }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400);
}

#[tokio::test]
async fn rewrap_one_and_many_within_granted_purposes() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let own = h.ciphertext(&json!({"n": 1}), OWN, &[("doc", "7")]).await;
    let other = h.ciphertext(&json!("x"), OTHER, &[]).await;
    post(&app, "/keys/rotate", &h.admin, json!({ "purpose": OWN })).await;
    let r = post(
        &app,
        "/rewrap",
        &h.service_token,
        json!({ "encryptedData": own, "context": {"doc": "7"} }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(
        (
            r.json()["fromVersion"].as_u64(),
            r.json()["toVersion"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let new = r.json()["encryptedData"].as_str().unwrap().to_owned();
    let r = post(
        &app,
        "/decrypt",
        &h.service_token,
        json!({ "encryptedData": new, "context": {"doc": "7"} }),
    )
    .await;
    r.assert_json(200, &json!({ "data": {"n": 1} }));
    // Another purpose: 403 alone, a per-item error in a batch; a bad context: 422.
    let r = post(
        &app,
        "/rewrap",
        &h.service_token,
        json!({ "encryptedData": other }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 403);
    let r = post(
        &app,
        "/rewrap",
        &h.service_token,
        json!({ "items": [own, other, "kf1:garbage"], "context": {"doc": "7"} }),
    )
    .await;
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["changed"], true, "{r:?}");
    assert_eq!(results[1]["error"], "forbidden");
    assert_eq!(results[2]["error"], "decryption_failed");
    let r = post(
        &app,
        "/rewrap",
        &h.service_token,
        json!({ "encryptedData": own }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "wrong context: {r:?}");
    assert!(!r.text().contains("\"n\""), "no plaintext in errors");
    let r = post(&app, "/rewrap", &h.auditor, json!({ "encryptedData": own })).await;
    assert_eq!(r.status.as_u16(), 403);
    let r = post(&app, "/rewrap", &h.admin, json!({})).await;
    assert_eq!(r.status.as_u16(), 400);
    // Over the per-request item limit: refused as a whole, nothing rewrapped.
    let many: Vec<&str> = std::iter::repeat_n(own.as_str(), 1001).collect();
    let r = post(
        &app,
        "/rewrap",
        &h.admin,
        json!({ "items": many, "context": {"doc": "7"} }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{r:?}");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("at most 1000"));
}

/// A second instance over the same keystore file, with its own cache and tokens, on
/// `clock` (staleness bound `bound`). No upkeep runs: tests call what it would call.
async fn second_instance(
    h: &Harness,
    bound: Duration,
    clock: Arc<dyn Clock>,
) -> (AppState, Arc<SqliteKeystore>) {
    let store = Arc::new(SqliteKeystore::open(&h.env.db_path).await.unwrap());
    let kek = kek_provider::unlock(&h.env.kek_path, &h.env.password(), &*store)
        .await
        .unwrap();
    let dyn_store: Arc<dyn Keystore> = store.clone();
    let service = Arc::new(
        EncryptionService::new(
            dyn_store.clone(),
            kek,
            ServiceConfig {
                cache_ttl: Duration::from_secs(3600),
                max_staleness: Some(bound),
                ..ServiceConfig::default()
            },
        )
        .with_clock(clock.clone()),
    );
    let tokens = TokenCache::new(dyn_store, clock);
    tokens.refresh().await.unwrap();
    (AppState::new(service, tokens, Limits::default()), store)
}

/// A change through A reaches B at B's next revalidation, whatever B's cache TTL (one
/// hour here). The upkeep runs that revalidation every 250 ms by default, which is what
/// makes "within a second" hold; the test calls it itself instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_takes_effect_on_another_at_its_next_revalidation() {
    let h = Harness::new().await;
    let a = h.app(keyflow_transport::TransportConfig::default());
    let (state_b, _store_b) =
        second_instance(&h, Duration::from_secs(10), Arc::new(SystemClock)).await;
    let b = keyflow_server::app(state_b.clone(), &HttpSettings::default());
    let ct = h.ciphertext(&json!("secret"), OWN, &[]).await;
    post(&a, "/keys/rotate", &h.admin, json!({ "purpose": OWN })).await;
    // B caches version 1 (one-hour TTL) by decrypting.
    let r = decrypt(&b, &h.service_token, &ct).await;
    r.assert_json(200, &json!({ "data": "secret" }));
    // B's first revalidation records the generation (as its upkeep would at start).
    state_b.service.ring().revalidate().await.unwrap();
    assert!(
        !state_b.service.ring().revalidate().await.unwrap(),
        "nothing changed since"
    );
    decrypt(&b, &h.service_token, &ct)
        .await
        .assert_json(200, &json!({ "data": "secret" }));
    let r = post(
        &a,
        "/keys/revoke",
        &h.admin,
        json!({ "purpose": OWN, "version": 1, "reason": "x" }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    // Until B revalidates, its cache still holds version 1: the TTL alone would keep it
    // for an hour. One revalidation drops it.
    assert!(
        state_b.service.ring().revalidate().await.unwrap(),
        "B sees the change"
    );
    let r = decrypt(&b, &h.service_token, &ct).await;
    assert_eq!(
        r.status.as_u16(),
        422,
        "B refuses the revoked version: {r:?}"
    );

    // A rotation through A: after its next revalidation B encrypts under the new version.
    assert_eq!(encrypt_version(&b, &h.service_token).await, 2);
    post(&a, "/keys/rotate", &h.admin, json!({ "purpose": OWN })).await;
    assert!(state_b.service.ring().revalidate().await.unwrap());
    assert_eq!(encrypt_version(&b, &h.service_token).await, 3);
}

/// The key version `app` encrypts `OWN` under.
async fn encrypt_version(app: &Router, token: &str) -> u32 {
    let r = post(app, "/encrypt", token, json!({ "data": 1, "purpose": OWN })).await;
    let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
    EncryptionService::summary(&ct).unwrap().key_version
}

/// The upkeep task is what calls the revalidation above: with it running, B notices a
/// change made through A by itself. (A wait for a background task: generous deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upkeep_revalidates_in_the_background() {
    let h = Harness::new().await;
    let a = h.app(keyflow_transport::TransportConfig::default());
    let (state_b, _store_b) =
        second_instance(&h, Duration::from_secs(10), Arc::new(SystemClock)).await;
    let b = keyflow_server::app(state_b.clone(), &HttpSettings::default());
    let ct = h.ciphertext(&json!("secret"), OWN, &[]).await;
    post(&a, "/keys/rotate", &h.admin, json!({ "purpose": OWN })).await;
    decrypt(&b, &h.service_token, &ct)
        .await
        .assert_json(200, &json!({ "data": "secret" }));
    let up = upkeep::spawn(
        state_b,
        UpkeepConfig {
            revalidate_every: Duration::from_millis(100),
            scheduler_every: None,
            holder: "b".into(),
        },
    );
    let r = post(
        &a,
        "/keys/revoke",
        &h.admin,
        json!({ "purpose": OWN, "version": 1, "reason": "x" }),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = decrypt(&b, &h.service_token, &ct).await;
        if r.status.as_u16() == 422 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's upkeep never revalidated: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // next poll of a background task
    }
    up.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_loses_its_keystore_stops_being_ready_and_serving_cached_keys() {
    let h = Harness::new().await;
    let bound = Duration::from_millis(400);
    let clock = Arc::new(ManualClock::starting_now());
    let (state_b, store_b) = second_instance(&h, bound, clock.clone()).await;
    let b = keyflow_server::app(state_b.clone(), &HttpSettings::default());
    let enc = json!({ "data": 1, "purpose": OWN });
    // The first validation, as the upkeep would make it.
    state_b.service.ring().revalidate().await.unwrap();
    let r = get(&b, "/health", &h.admin).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(
        post(&b, "/encrypt", &h.service_token, enc.clone())
            .await
            .status
            .as_u16(),
        200
    );
    // The database goes away (the pool is closed under the instance).
    store_b.close().await;
    assert!(
        state_b.service.ring().revalidate().await.is_err(),
        "revalidation fails without the keystore"
    );
    // Within the bound, cached keys keep serving.
    clock.advance(bound - Duration::from_millis(1));
    let r = post(&b, "/encrypt", &h.service_token, enc.clone()).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    clock.advance(Duration::from_millis(1));
    let r = get(&b, "/health", &h.admin).await;
    assert_eq!(r.status.as_u16(), 503, "{r:?}");
    assert_eq!(r.json()["ready"], false);
    assert_eq!(r.json()["checks"]["keyCache"], "unconfirmed");
    // Beyond the bound nothing is served from the unconfirmed cache: 503, not 500.
    let r = post(&b, "/encrypt", &h.service_token, enc).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (503, Some("unavailable")),
        "{r:?}"
    );
}
