//! The five alerts of the old design (issue 14) through the router: each one fires from
//! live state after an evaluation pass, shows in `/status` (with since-when) and in
//! `/metrics`; rotation failures are read back from the audit trail; the webhook posts
//! firing then resolved in Alertmanager's shape, retrying a failing receiver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use common::{bounded, now_millis, oneshot, request, Harness, Resp, OWN};
use keyflow_kms::clock::rfc3339;
use keyflow_kms::scheduler::{Action, ActionKind, ActionOutcome, PassReport};
use keyflow_kms::{KmsError, Policy, Purpose};
use keyflow_server::alerts::webhook::{Delivery, Notifier};
use keyflow_server::alerts::{evaluate_pass, rotation_state, AlertConfig, WebhookUrl};
use keyflow_server::upkeep::scheduler_events;
use keyflow_transport::TransportConfig;
use serde_json::{json, Value};

async fn get(app: &Router, path: &str, token: &str) -> Resp {
    oneshot(
        app,
        request("GET", path, Some(token))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn status(h: &Harness, app: &Router) -> Value {
    let r = get(app, "/api/encryption/status", &h.auditor).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn alert<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no alert {name} in {s}"))
}

fn firing(s: &Value) -> Vec<String> {
    s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["firing"] == true)
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn status_lists_every_alert_and_offers_the_old_by_purpose_shape() {
    let h = Harness::new().await;
    let app = h.app(TransportConfig::default());
    let s = status(&h, &app).await;
    assert_eq!(s["alertsEvaluatedAt"], Value::Null, "nothing evaluated yet");
    let now = now_millis();
    evaluate_pass(&h.state, now).await;
    let s = status(&h, &app).await;
    assert_eq!(s["alertsEvaluatedAt"], rfc3339(now));
    let names: Vec<&str> = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "keys_expiring",
            "rotation_failed",
            "decrypt_error_rate",
            "cache_hit_rate_low",
            "plain_http_in_production",
            "audit_trail_failing",
            "audit_chain_broken",
            "keystore_rows_refused",
        ]
    );
    for a in s["alerts"].as_array().unwrap() {
        for field in [
            "severity",
            "firing",
            "since",
            "value",
            "threshold",
            "summary",
        ] {
            assert!(a.get(field).is_some(), "{field} missing in {a}");
        }
    }
    assert!(firing(&s).is_empty(), "{s}");
    assert_eq!(s["healthStatus"], "healthy");
    assert!(
        s["byPurpose"].is_object(),
        "the current shape stays the default"
    );

    let legacy = get(&app, "/api/encryption/status?shape=legacy", &h.auditor).await;
    assert_eq!(legacy.status, 200, "{legacy:?}");
    assert_eq!(
        legacy.json()["byPurpose"],
        json!([{ "_id": "financialData", "count": 1 }, { "_id": "userData", "count": 1 }])
    );
    let current = get(&app, "/api/encryption/status?shape=current", &h.auditor).await;
    assert!(current.json()["byPurpose"][OWN].is_object());
    let bad = get(&app, "/api/encryption/status?shape=mongo", &h.auditor).await;
    bad.assert_error(400, "invalid_request", "shape: expected current or legacy");
    let r = get(
        &app,
        "/api/encryption/status?shape=legacy",
        &h.service_token,
    )
    .await;
    assert_eq!(r.status, 403, "still admin or auditor only");
}

#[tokio::test]
async fn more_than_five_keys_near_the_end_of_their_cryptoperiod_fire() {
    let h = Harness::new().await;
    let app = h.app(TransportConfig::default());
    // A 5-day cryptoperiod ends within the 7-day horizon as soon as the key exists.
    let short = Policy {
        rotation_days: 5,
        warn_days: 1,
        ..Policy::default()
    };
    for i in 0..6 {
        let p = Purpose::new(&format!("short{i}")).unwrap();
        h.service.keys().set_policy(&p, &short).await.unwrap();
        h.service.keys().generate(&p).await.unwrap();
        let now = now_millis();
        evaluate_pass(&h.state, now).await;
        let s = status(&h, &app).await;
        let a = alert(&s, "keys_expiring");
        assert_eq!(a["value"], f64::from(i + 1), "{a}");
        assert_eq!(a["firing"], i == 5, "{a}");
    }
    let s = status(&h, &app).await;
    let a = alert(&s, "keys_expiring");
    assert_eq!(
        (&a["severity"], &a["threshold"]),
        (&json!("warning"), &json!(5.0))
    );
    assert!(a["since"].is_string(), "{a}");
    assert!(a["summary"].as_str().unwrap().contains("short0:v1"), "{a}");
    assert_eq!(s["healthStatus"], "warning");
    let m = get(&app, "/metrics", &h.auditor).await.text();
    for line in [
        r#"keyflow_alert_firing{alert="keys_expiring",severity="warning"} 1"#,
        r#"keyflow_alert_firing{alert="rotation_failed",severity="critical"} 0"#,
        "keyflow_keys_expiring_soon 6",
        "keyflow_rotation_failures 0",
    ] {
        assert!(m.lines().any(|l| l == line), "missing `{line}` in\n{m}");
    }
}

fn report(actions: Vec<Action>) -> PassReport {
    PassReport {
        evaluated_at: rfc3339(0),
        dry_run: false,
        ran: true,
        actions,
    }
}

#[tokio::test]
async fn rotation_failures_are_read_back_from_the_audit_trail() {
    let h = Harness::new().await;
    let app = h.app(TransportConfig::default());
    let trail = h.state.audit.as_ref().unwrap();
    let t0 = now_millis() - 60_000;
    let write = |events: Vec<keyflow_kms::audit::AuditEvent>| async move {
        for e in events {
            trail.record(e).await.unwrap();
        }
    };
    // A whole pass failed, then one that failed for one purpose.
    write(scheduler_events("kf-1", t0, &Err(KmsError::Invalid("x")))).await;
    let failed = Action {
        purpose: keyflow_kms::Purpose::new(OWN).unwrap(),
        version: keyflow_kms::KeyVersion::FIRST,
        kind: ActionKind::RotateDue,
        reason: "due".into(),
        outcome: ActionOutcome::Failed("store down".into()),
    };
    write(scheduler_events(
        "kf-1",
        t0 + 1_000,
        &Ok(report(vec![failed])),
    ))
    .await;
    evaluate_pass(&h.state, now_millis()).await;
    let s = status(&h, &app).await;
    let a = alert(&s, "rotation_failed");
    assert_eq!(a["firing"], true, "{a}");
    assert_eq!(
        a["since"],
        rfc3339(t0),
        "since the first failure after the last success"
    );
    assert_eq!(a["value"], 1.0);
    assert!(a["summary"].as_str().unwrap().contains(OWN), "{a}");
    assert_eq!(s["healthStatus"], "critical");

    // What a restarted instance, or another one on the same database, reads.
    let read = rotation_state(&*h.audit_store).await.unwrap();
    assert_eq!(read.failing_since, Some(t0));
    assert_eq!(read.failed_purposes, vec![OWN.to_owned()]);

    // The next pass succeeds (nothing to do): resolved.
    write(scheduler_events("kf-2", t0 + 2_000, &Ok(report(vec![])))).await;
    evaluate_pass(&h.state, now_millis()).await;
    let a = alert(&status(&h, &app).await, "rotation_failed").clone();
    assert_eq!(
        (&a["firing"], &a["since"]),
        (&json!(false), &Value::Null),
        "{a}"
    );
    assert_eq!(
        rotation_state(&*h.audit_store).await.unwrap().failing_since,
        None
    );

    // A later failure starts a new run, since its own time.
    write(scheduler_events(
        "kf-2",
        t0 + 3_000,
        &Err(KmsError::Invalid("x")),
    ))
    .await;
    let read = rotation_state(&*h.audit_store).await.unwrap();
    assert_eq!(
        (read.failing_since, read.pass_failed),
        (Some(t0 + 3_000), true)
    );
}

#[tokio::test]
async fn failed_decrypts_above_the_threshold_fire() {
    let h = Harness::new().await;
    h.state.alerts.configure(AlertConfig {
        decrypt_min_samples: 4,
        ..AlertConfig::default()
    });
    let app = h.app(TransportConfig::default());
    let decrypt = |body: Value| {
        request("POST", "/api/encryption/decrypt", Some(&h.service_token))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let good = h.ciphertext(&json!("x"), OWN, &[]).await;
    for _ in 0..3 {
        let r = oneshot(&app, decrypt(json!({ "encryptedData": good }))).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    evaluate_pass(&h.state, now_millis()).await;
    let a = alert(&status(&h, &app).await, "decrypt_error_rate").clone();
    assert_eq!(
        a["firing"], false,
        "3 decrypts are fewer than the 4 needed: {a}"
    );
    // A tampered ciphertext: one failed decrypt in four, 25 % > 5 %.
    let mut bad = good.clone();
    bad.pop();
    bad.push(if good.ends_with('A') { 'B' } else { 'A' });
    let r = oneshot(&app, decrypt(json!({ "encryptedData": bad }))).await;
    assert_eq!(r.status, 422, "{r:?}");
    evaluate_pass(&h.state, now_millis()).await;
    let s = status(&h, &app).await;
    let a = alert(&s, "decrypt_error_rate");
    assert_eq!(
        (&a["firing"], &a["value"]),
        (&json!(true), &json!(0.25)),
        "{a}"
    );
    assert_eq!(s["healthStatus"], "critical");
}

#[tokio::test]
async fn the_cache_hit_rate_is_measured_over_the_window() {
    let h = Harness::new().await;
    // Any miss at all fires (the threshold is a 100 % hit rate).
    h.state.alerts.configure(AlertConfig {
        cache_hit_rate: 1.0,
        cache_min_samples: 1,
        ..AlertConfig::default()
    });
    let app = h.app(TransportConfig::default());
    h.ciphertext(&json!(1), OWN, &[]).await;
    let stats = h.service.ring().cache_stats();
    evaluate_pass(&h.state, now_millis()).await;
    let a = alert(&status(&h, &app).await, "cache_hit_rate_low").clone();
    let lookups = stats.hits + stats.misses;
    assert!(lookups >= 1, "{stats:?}");
    assert_eq!(a["value"], stats.hits as f64 / lookups as f64, "{a}");
    assert_eq!(a["firing"], stats.misses > 0, "{a}");
}

#[tokio::test]
async fn plain_http_in_production_is_counted_and_fires() {
    let h = Harness::new().await;
    h.state.alerts.configure(AlertConfig {
        plain_http_window: Duration::from_secs(1),
        ..AlertConfig::default()
    });
    let app = h.app(TransportConfig {
        production: true,
        ..TransportConfig::default()
    });
    // No TLS on this request (no connection info): turned away in production.
    let r = oneshot(
        &app,
        request("GET", "/api/encryption/health", None)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let now = now_millis();
    evaluate_pass(&h.state, now).await;
    let a = h.state.alerts.current().0;
    let p = a
        .iter()
        .find(|a| a.name == "plain_http_in_production")
        .unwrap();
    assert!(p.firing && p.value == 1.0, "{p:?}");
    // Outside the window, with no new plain-HTTP request: resolved.
    evaluate_pass(&h.state, now + 10_000).await;
    let a = h.state.alerts.current().0;
    assert!(
        !a.iter()
            .find(|a| a.name == "plain_http_in_production")
            .unwrap()
            .firing
    );
    // The counter itself, for Prometheus rules (the scrape goes through the same
    // production stack, so it cannot be read over plain HTTP: read the registry).
    let text = h
        .state
        .metrics
        .render(h.service.ring().cache_stats(), Duration::ZERO, None)
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l == "keyflow_plain_http_requests_total 1"),
        "{text}"
    );
}

/// A receiver on 127.0.0.1 that refuses the first `fail` posts with 503, then keeps
/// every accepted body.
async fn receiver(fail: usize) -> (String, Arc<Mutex<(usize, Vec<Value>)>>) {
    let seen = Arc::new(Mutex::new((0usize, Vec::new())));
    let state = seen.clone();
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let mut s = state.lock().unwrap();
                s.0 += 1;
                if s.0 <= fail {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                s.1.push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Waits (bounded) until the receiver has accepted `n` notifications.
async fn accepted(seen: &Arc<Mutex<(usize, Vec<Value>)>>, n: usize) -> (usize, Vec<Value>) {
    bounded("webhook deliveries", async {
        loop {
            {
                let s = seen.lock().unwrap();
                if s.1.len() >= n {
                    return s.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_webhook_posts_firing_then_resolved_and_retries_a_failing_receiver() {
    let h = Harness::new().await;
    let (url, seen) = receiver(2).await;
    h.state.alerts.configure(AlertConfig {
        plain_http_window: Duration::from_secs(1),
        ..AlertConfig::default()
    });
    let (notifier, deliver) = Notifier::new(Delivery {
        url: WebhookUrl::parse(&url).unwrap(),
        attempts: 5,
        backoff: Duration::from_millis(10),
        instance: "kf-test".into(),
    });
    h.state.alerts.notify_with(notifier);
    let task = tokio::spawn(deliver);
    let app = h.app(TransportConfig {
        production: true,
        ..TransportConfig::default()
    });
    let plain = || {
        request("POST", "/api/encryption/encrypt", None)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(oneshot(&app, plain()).await.status, 400);
    let now = now_millis();
    evaluate_pass(&h.state, now).await;
    // Another evaluation while still firing sends nothing new.
    evaluate_pass(&h.state, now + 100).await;
    let (posts, bodies) = accepted(&seen, 1).await;
    assert_eq!(posts, 3, "two refusals, then delivered");
    let first = &bodies[0];
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["receiver"], "keyflow");
    assert!(first["groupKey"].is_string());
    let alert = &first["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "plain_http_in_production");
    assert_eq!(alert["labels"]["instance"], "kf-test");
    assert_eq!(alert["startsAt"], rfc3339(now));
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        first["alerts"].as_array().unwrap().len(),
        1,
        "only what changed"
    );

    evaluate_pass(&h.state, now + 10_000).await;
    let (posts, bodies) = accepted(&seen, 2).await;
    assert_eq!(posts, 4, "delivered at once");
    assert_eq!(
        bodies.len(),
        2,
        "the firing notification was delivered once"
    );
    assert_eq!(bodies[1]["status"], "resolved");
    assert_eq!(bodies[1]["alerts"][0]["endsAt"], rfc3339(now + 10_000));
    assert_eq!(
        bodies[1]["alerts"][0]["startsAt"],
        rfc3339(now),
        "the start it had"
    );
    task.abort();
}

#[tokio::test]
async fn a_receiver_that_never_accepts_costs_bounded_attempts() {
    let h = Harness::new().await;
    let (url, seen) = receiver(usize::MAX).await;
    let (notifier, deliver) = Notifier::new(Delivery {
        url: WebhookUrl::parse(&url).unwrap(),
        attempts: 3,
        backoff: Duration::from_millis(5),
        instance: "kf-test".into(),
    });
    let task = tokio::spawn(deliver);
    let alert = keyflow_server::alerts::Alert {
        name: "rotation_failed",
        severity: keyflow_server::alerts::Severity::Critical,
        firing: true,
        since: Some(1),
        value: 1.0,
        threshold: 0.0,
        summary: "x".into(),
    };
    notifier.send(vec![alert.clone()], 1);
    // A second batch is attempted only after the first gave up: its arrival bounds the
    // first one's attempts.
    notifier.send(vec![alert], 2);
    bounded("attempts", async {
        while seen.lock().unwrap().0 < 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().0,
        6,
        "3 attempts per batch, then given up"
    );
    assert!(seen.lock().unwrap().1.is_empty());
    drop(h);
    task.abort();
}

/// Two instances on one PostgreSQL database: a scheduler failure recorded by one is the
/// other's `rotation_failed` too. Skipped (with a notice) without `TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_failure_recorded_by_one_instance_shows_on_another() {
    use keyflow_kms::audit::{AuditSealer, AuditStore};
    use keyflow_kms::clock::SystemClock;
    use keyflow_kms::kek_provider::{self, KekPassword};
    use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
    use keyflow_kms::keyflow_core::OsRng;
    use keyflow_store_postgres::{PoolSettings, PostgresKeystore};

    keyflow_testkit::postgres::with_database("alerts_rotation", |db, _url| async move {
        let connect = || async {
            Arc::new(
                PostgresKeystore::connect_with(
                    db.options(),
                    &PoolSettings::with_max_connections(2),
                )
                .await
                .unwrap(),
            )
        };
        let (a, b) = (connect().await, connect().await);
        let dir = tempfile::tempdir().unwrap();
        let password = KekPassword::new("correct horse battery staple".into(), false).unwrap();
        let fast = KdfParams {
            iterations: MIN_PBKDF2_ITERATIONS,
        };
        let (_, kek) =
            kek_provider::init(&dir.path().join("kek.json"), &password, fast, &*a, &OsRng)
                .await
                .unwrap();
        let trail = keyflow_server::AuditTrail::start(
            a.clone() as Arc<dyn AuditStore>,
            AuditSealer::new(&kek).unwrap(),
            Arc::new(SystemClock),
            keyflow_server::AuditPolicy::PRODUCTION,
        )
        .unwrap();
        let t0 = now_millis();
        for e in scheduler_events("instance-a", t0, &Err(KmsError::Invalid("x"))) {
            trail.record(e).await.unwrap();
        }
        let seen_by_b = rotation_state(&*b).await.unwrap();
        assert_eq!(
            (seen_by_b.failing_since, seen_by_b.pass_failed),
            (Some(t0), true)
        );
        for e in scheduler_events("instance-a", t0 + 1, &Ok(report(vec![]))) {
            trail.record(e).await.unwrap();
        }
        assert_eq!(rotation_state(&*b).await.unwrap().failing_since, None);
    })
    .await;
}
