//! The server checks its own audit trail: verification passes go on from the head the
//! last one verified and `/status` shows how far; a record edited in the SQLite file
//! (as someone who can write the database but does not hold the KEK) turns into
//! `chainBroken` and an alert; retention prunes under the scheduler lease, is recorded
//! as `audit.prune`, and leaves a chain that still verifies. The pass functions are
//! called directly, at times the test chooses: nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use axum::Router;
use common::{now_millis, request, Harness, OWN};
use keyflow_kms::audit::{AuditEvent, AuditSealer, Source};
use keyflow_kms::clock::rfc3339;
use keyflow_kms::kek_provider;
use keyflow_kms::model::DAY_MS;
use keyflow_kms::scheduler::SCHEDULER_LEASE;
use keyflow_server::upkeep::{audit_retention_pass, audit_verify_pass, AuditKeys};
use serde_json::{json, Value};

fn api(path: &str) -> String {
    format!("/api/encryption{path}")
}

/// The audit keys `keyflow serve` would give the upkeep: the KEK's, unlocked again.
async fn keys(h: &Harness) -> AuditKeys {
    let kek = kek_provider::unlock(&h.env.kek_path, &h.env.password(), &*h.store)
        .await
        .unwrap();
    AuditKeys::new(AuditSealer::new(&kek).unwrap(), Vec::new())
}

async fn encrypt(h: &Harness, app: &Router, n: usize) {
    for _ in 0..n {
        let r = common::oneshot(
            app,
            request("POST", &api("/encrypt"), Some(&h.service_token))
                .body(Body::from(json!({ "data": 1, "purpose": OWN }).to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// `/status` as the auditor sees it.
async fn status(h: &Harness, app: &Router) -> Value {
    let r = common::oneshot(
        app,
        request("GET", &api("/status"), Some(&h.auditor))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

async fn head(h: &Harness) -> u64 {
    h.audit_store.audit_head().await.unwrap().seq
}

#[tokio::test]
async fn verification_goes_on_from_the_last_head_and_status_shows_it() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let keys = keys(&h).await;
    let a = &status(&h, &app).await["audit"];
    assert_eq!(
        (
            &a["verifiedThrough"],
            &a["verifiedAt"],
            a.get("chainBroken")
        ),
        (&Value::Null, &Value::Null, None),
        "no pass yet: {a}"
    );

    encrypt(&h, &app, 3).await;
    let first = head(&h).await;
    let t1 = now_millis();
    let check = audit_verify_pass(&h.state, &keys, t1).await;
    assert_eq!(check.verified.map(|v| v.seq), Some(first));
    assert_eq!(check.broken, None);
    let s = status(&h, &app).await;
    let a = &s["audit"];
    assert_eq!(a["verifiedThrough"], first, "{a}");
    assert_eq!(a["verifiedAt"], rfc3339(t1), "{a}");
    assert!(a.get("chainBroken").is_none(), "{a}");
    assert!(
        s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["firing"] == false),
        "{s}"
    );

    // The status request itself, and more: the next pass reaches the new head.
    encrypt(&h, &app, 2).await;
    let second = head(&h).await;
    assert!(second > first);
    let check = audit_verify_pass(&h.state, &keys, t1 + 1_000).await;
    assert_eq!(check.verified.map(|v| v.seq), Some(second));
    let a = &status(&h, &app).await["audit"];
    assert_eq!(
        (&a["verifiedThrough"], &a["verifiedAt"]),
        (&json!(second), &json!(rfc3339(t1 + 1_000))),
        "{a}"
    );
    // The whole chain verifies too (what `keyflow audit verify` checks).
    assert_eq!(h.verify_audit_chain().await, head(&h).await);
}

#[tokio::test]
async fn a_record_edited_in_the_database_file_is_reported_as_a_break() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let keys = keys(&h).await;
    encrypt(&h, &app, 3).await;
    let verified = head(&h).await;
    audit_verify_pass(&h.state, &keys, now_millis()).await;
    encrypt(&h, &app, 3).await;

    // Someone with write access to the file, not the KEK: a successful request made to
    // look refused, after the head the last pass verified.
    let edited = verified + 2;
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&h.env.db_path))
        .await
        .unwrap();
    let done = sqlx::query(
        "UPDATE keyflow_audit SET body = replace(body, '\"result\":\"ok\"', '\"result\":\"forbidden\"') WHERE seq = ?1",
    )
    .bind(i64::try_from(edited).unwrap())
    .execute(&raw)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);

    let check = audit_verify_pass(&h.state, &keys, now_millis()).await;
    let expected =
        format!("record {edited}: MAC mismatch (the record was edited, or the chain before it)");
    assert_eq!(check.broken.as_deref(), Some(expected.as_str()));
    assert_eq!(check.verified.map(|v| v.seq), Some(verified));
    let s = status(&h, &app).await;
    let a = &s["audit"];
    assert_eq!(a["chainBroken"], expected, "{a}");
    assert_eq!(a["verifiedThrough"], verified, "{a}");
    assert_eq!(s["healthStatus"], "critical", "{s}");
    let firing: Vec<&Value> = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["firing"] == true)
        .collect();
    assert_eq!(firing.len(), 1, "{s}");
    assert_eq!(firing[0]["name"], "audit_chain_broken");
    assert_eq!(
        firing[0]["summary"],
        format!("the audit chain does not verify: {expected}"),
        "{s}"
    );
    // It stays reported (and is not logged again) on later passes.
    let again = audit_verify_pass(&h.state, &keys, now_millis()).await;
    assert_eq!(again, check);
}

#[tokio::test]
async fn retention_prunes_old_records_under_the_lease_and_the_chain_still_verifies() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let keys = keys(&h).await;
    let now = now_millis();
    // Four records from ten days ago, then today's requests.
    let old: Vec<AuditEvent> = (0..4)
        .map(|i| AuditEvent::new(now - 10 * DAY_MS + i, Source::Http, "tok-old", "encrypt"))
        .collect();
    h.audit_store.append_audit(&h.sealer, &old).await.unwrap();
    encrypt(&h, &app, 2).await;
    let before = audit_verify_pass(&h.state, &keys, now).await;
    assert_eq!(before.verified.map(|v| v.seq), Some(6));

    // Another instance holds the scheduler lease: it prunes, not this one.
    assert!(h
        .store
        .try_lease(SCHEDULER_LEASE, "other", now, 60_000)
        .await
        .unwrap());
    let skipped = audit_retention_pass(&h.state, &keys, 5, "this", 60_000, now)
        .await
        .unwrap();
    assert_eq!(skipped, None);
    assert_eq!(h.audit_records().await[0].seq, 1);

    // Once its lease has expired, this one does.
    let later = now + 61_000;
    let done = audit_retention_pass(&h.state, &keys, 5, "this", 60_000, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.anchor.map(|a| a.seq), done.removed), (Some(4), 4));
    let records = h.audit_records().await;
    assert_eq!(records[0].seq, 5, "records 1 to 4 are gone");
    let prune = records.last().unwrap().event().unwrap();
    assert_eq!(
        (
            prune.operation.as_str(),
            prune.source,
            prune.actor.as_str(),
            prune.result.as_str(),
            prune.items
        ),
        (
            "audit.prune",
            Source::Scheduler,
            "scheduler:this",
            "ok",
            Some(4)
        )
    );
    assert_eq!(
        prune.detail,
        Some(json!({
            "before": rfc3339(later - 5 * DAY_MS),
            "anchorSeq": 4,
            "recordsRemoved": 4,
        }))
    );

    // The chain verifies from the anchor: incrementally, and from scratch.
    let check = audit_verify_pass(&h.state, &keys, later).await;
    assert_eq!(check.broken, None);
    assert_eq!(check.verified.map(|v| v.seq), Some(head(&h).await));
    let sealers = [&*h.sealer];
    let all = keyflow_kms::audit::verify::verify_chain(
        &*h.audit_store,
        &sealers,
        &h.audit_store.audit_head().await.unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((all.start.seq, all.end.seq), (4, head(&h).await));

    // Nothing older than the cut is left: nothing changes, nothing is recorded.
    let n = head(&h).await;
    let again = audit_retention_pass(&h.state, &keys, 5, "this", 60_000, later + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.anchor, again.removed, again.start), (None, 0, 4));
    assert_eq!(head(&h).await, n);
}
