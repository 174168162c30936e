//! The audit trail through the real app over the SQLite store: every request recorded
//! with its outcome (refusals included) before its answer, nothing secret in any
//! record, `GET /audit` filters and pages, `/status` reports the writer, the chain
//! verifies, and a trail that cannot be written fails closed (or open, in development).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{now_millis, request, Client, Harness, Resp, OTHER, OWN};
use keyflow_kms::audit::{AuditEvent, StoredAudit};
use keyflow_server::{AuditPolicy, Limits};
use serde_json::{json, Value};

fn api(path: &str) -> String {
    format!("/api/encryption{path}")
}

/// Plaintexts no record may contain.
const PLAIN: &str = "audit-plaintext-4532015112830366";
const PLAIN_BATCH: [&str; 3] = ["batch-plain-alpha", "batch-plain-beta", "batch-plain-gamma"];
const PLAIN_FILE: &str = "file-plaintext-of-the-audit-test";

/// Every record, parsed, with its body.
async fn events(h: &Harness) -> Vec<(StoredAudit, AuditEvent)> {
    h.audit_records()
        .await
        .into_iter()
        .map(|r| {
            let e = r.event().unwrap();
            (r, e)
        })
        .collect()
}

/// The one record of the request answered by `r`.
async fn record_of(h: &Harness, r: &Resp) -> AuditEvent {
    let id = r.header("x-request-id").to_owned();
    let found: Vec<AuditEvent> = events(h)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(found.len(), 1, "records of request {id}: {found:?}");
    found.into_iter().next().unwrap()
}

#[track_caller]
fn assert_outcome(e: &AuditEvent, operation: &str, result: &str, status: u16) {
    assert_eq!(
        (e.operation.as_str(), e.result.as_str(), e.status),
        (operation, result, Some(status)),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_with_its_outcome_and_nothing_secret() {
    let h = Harness::with_limits(Limits {
        json_body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let svc = h.service_token.as_str();
    let sid = h.service_token_id.as_str();
    let before = now_millis();

    // 200: everything about the request, and the real client address.
    let r = c
        .post(
            &api("/encrypt"),
            Some(svc),
            &json!({ "data": PLAIN, "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "ok", 200);
    assert_eq!(e.source, keyflow_kms::audit::Source::Http);
    assert_eq!(e.actor, sid);
    assert_eq!(e.actor_name.as_deref(), Some("test service"));
    assert_eq!(e.route.as_deref(), Some("POST /api/encryption/encrypt"));
    assert_eq!(e.client.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        (e.purposes.clone(), e.versions.clone(), e.items),
        (vec![OWN.to_owned()], vec![1], Some(1))
    );
    assert!(e.latency_us.is_some());
    assert!(e.time >= before && e.time <= now_millis(), "{e:?}");

    // 400: malformed JSON (the token was valid, so the actor is known).
    let r = c
        .send_raw(
            request("POST", &api("/encrypt"), Some(svc)).header("content-type", "application/json"),
            format!("{{\"data\": \"{PLAIN}\", ").into_bytes(),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "invalid_json", 400);
    assert_eq!(e.actor, sid);

    // 401: no token, and a well-formed token whose secret is wrong.
    let r = c
        .post(
            &api("/encrypt"),
            None,
            &json!({ "data": PLAIN, "purpose": OWN }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "unauthorized", 401);
    assert_eq!(
        (e.actor.as_str(), e.actor_name.as_deref()),
        ("anonymous", None)
    );
    let mut forged = h.admin.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    let r = c
        .post(
            &api("/decrypt"),
            Some(&forged),
            &json!({ "encryptedData": ct }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "decrypt", "unauthorized", 401);
    assert_eq!(e.actor, "anonymous");

    // 403: a purpose the token is not granted — who tried what.
    let r = c
        .post(
            &api("/encrypt"),
            Some(svc),
            &json!({ "data": PLAIN, "purpose": OTHER }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "forbidden", 403);
    assert_eq!(
        (e.actor.as_str(), e.purposes.clone()),
        (sid, vec![OTHER.to_owned()])
    );

    // 404: an unknown route; its path is not recorded. No handler checked the token,
    // so the layer did: a valid one names the actor, none is anonymous.
    let r = c.get(&api("/keys/4532015112830366"), Some(svc)).await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "unknown", "not_found", 404);
    assert_eq!((e.route.as_deref(), e.actor.as_str()), (None, sid));
    let r = c.get("/wp-login.php", Some(&forged)).await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "unknown", "not_found", 404);
    assert_eq!(e.actor, "anonymous");
    // 405: a known path, another method.
    let r = c.get(&api("/encrypt"), Some(svc)).await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "unknown", "method_not_allowed", 405);
    assert_eq!(e.route.as_deref(), Some("GET /api/encryption/encrypt"));
    assert_eq!(e.actor, sid);

    // 413: over the JSON body limit.
    let big = "x".repeat(8192);
    let r = c
        .post(
            &api("/encrypt"),
            Some(svc),
            &json!({ "data": big, "purpose": OWN }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "payload_too_large", 413);

    // 422: a tampered ciphertext.
    let mut tampered = ct.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let r = c
        .post(
            &api("/decrypt"),
            Some(svc),
            &json!({ "encryptedData": tampered }),
        )
        .await;
    assert_eq!(r.status, 422, "{r:?}");
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "decrypt", "decryption_failed", 422);
    assert_eq!(e.actor, sid);

    // A batch: the item count.
    let r = c
        .post(
            &api("/batch/encrypt"),
            Some(svc),
            &json!({ "items": PLAIN_BATCH, "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let batch_cts: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["encryptedData"].as_str().unwrap().to_owned())
        .collect();
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "batch_encrypt", "ok", 200);
    assert_eq!(
        (e.items, e.purposes.clone(), e.versions.clone()),
        (Some(3), vec![OWN.to_owned()], vec![1])
    );
    let r = c
        .post(
            &api("/batch/decrypt"),
            Some(svc),
            &json!({ "items": batch_cts }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "batch_decrypt", "ok", 200);
    assert_eq!(
        (e.items, e.purposes.clone(), e.versions.clone()),
        (Some(3), vec![OWN.to_owned()], vec![1])
    );

    // A streamed file: recorded when the head goes out, with its key.
    let r = c
        .send_raw(
            request(
                "POST",
                &api(&format!("/files/encrypt?purpose={OWN}")),
                Some(svc),
            ),
            PLAIN_FILE.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let file_ct = r.body.clone();
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "file_encrypt", "ok", 200);
    assert_eq!(
        (e.purposes.clone(), e.versions.clone()),
        (vec![OWN.to_owned()], vec![1])
    );

    // Revoke, reinstate and destroy are three operations.
    let admin = h.admin.as_str();
    let r = c
        .post(
            &api("/keys/rotate"),
            Some(admin),
            &json!({ "purpose": OWN }),
        )
        .await;
    assert_outcome(&record_of(&h, &r).await, "keys.rotate", "ok", 200);
    let change = |reason: Option<&str>| {
        let mut b = json!({ "purpose": OWN, "version": 1, "confirm": true });
        if let Some(r) = reason {
            b["reason"] = json!(r);
        }
        b
    };
    let r = c
        .post(
            &api("/keys/revoke"),
            Some(admin),
            &change(Some("suspected leak")),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "keys.revoke", "ok", 200);
    assert_eq!(
        (e.purposes.clone(), e.versions.clone()),
        (vec![OWN.to_owned()], vec![1])
    );
    assert_eq!(e.detail, Some(json!({ "reason": "suspected leak" })));
    let r = c
        .post(&api("/keys/reinstate"), Some(admin), &change(None))
        .await;
    assert_outcome(&record_of(&h, &r).await, "keys.reinstate", "ok", 200);
    c.post(&api("/keys/revoke"), Some(admin), &change(Some("again")))
        .await;
    let r = c
        .post(&api("/keys/destroy"), Some(admin), &change(None))
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "keys.destroy", "ok", 200);
    assert_eq!(e.versions, vec![1]);

    // Probes are not audited; status is.
    let n = h.audit_records().await.len();
    assert_eq!(c.get(&api("/health"), None).await.status, 200);
    assert_eq!(c.get(&api("/openapi.json"), None).await.status, 200);
    assert_eq!(c.get("/metrics", Some(admin)).await.status, 200);
    assert_eq!(
        h.audit_records().await.len(),
        n,
        "health, openapi and metrics are not audited"
    );
    let r = c.get(&api("/status"), Some(&h.auditor)).await;
    assert_outcome(&record_of(&h, &r).await, "status", "ok", 200);

    // Nothing secret in any record: no plaintext, ciphertext or token.
    let mut secrets: Vec<String> = vec![
        PLAIN.into(),
        PLAIN_FILE.into(),
        ct.clone(),
        tampered.clone(),
        forged.clone(),
    ];
    secrets.extend(PLAIN_BATCH.iter().map(|s| s.to_string()));
    secrets.extend(batch_cts.iter().cloned());
    for t in [&h.admin, &h.service_token, &h.auditor] {
        secrets.push(t.clone());
        // The secret part alone (its last 43 characters), too.
        secrets.push(t[t.len() - 43..].to_owned());
    }
    let all = events(&h).await;
    for (r, _) in &all {
        for s in &secrets {
            assert!(
                !r.body.contains(s.as_str()),
                "record {} holds a secret: {}",
                r.seq,
                r.body
            );
        }
        assert!(
            !file_ct
                .windows(16)
                .any(|w| r.body.as_bytes().windows(16).any(|b| b == w)),
            "record {} holds file ciphertext",
            r.seq
        );
    }

    // The chain verifies, every record included.
    assert_eq!(h.verify_audit_chain().await, all.len() as u64);
}

async fn get_json(c: &mut Client, path: &str, token: &str) -> Value {
    let r = c.get(path, Some(token)).await;
    assert_eq!(r.status, 200, "{path}: {r:?}");
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_route_filters_pages_and_is_for_admins_and_auditors() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let svc = h.service_token.as_str();
    for i in 0..5 {
        let r = c
            .post(
                &api("/encrypt"),
                Some(svc),
                &json!({ "data": i, "purpose": OWN }),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        let r = c
            .post(
                &api("/encrypt"),
                Some(&h.admin),
                &json!({ "data": 1, "purpose": OTHER }),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(c.get(&api("/status"), None).await.status, 401);

    // Newest first, each with its sequence number.
    let all = get_json(&mut c, &api("/audit"), &h.auditor).await;
    let records = all["records"].as_array().unwrap();
    assert!(records.len() >= 8, "{all}");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(all["nextCursor"], Value::Null);
    assert_eq!(records[0]["operation"], "status", "newest first: {all}");

    // Filters.
    let q = format!("/audit?operation=encrypt&actor={}", h.service_token_id);
    let mine = get_json(&mut c, &api(&q), &h.auditor).await;
    let mine = mine["records"].as_array().unwrap();
    assert_eq!(mine.len(), 5);
    assert!(mine
        .iter()
        .all(|r| r["actor"] == h.service_token_id.as_str() && r["purposes"] == json!([OWN])));
    let other = get_json(&mut c, &api(&format!("/audit?purpose={OTHER}")), &h.admin).await;
    assert_eq!(other["records"].as_array().unwrap().len(), 2, "{other}");
    let refused = get_json(&mut c, &api("/audit?result=unauthorized"), &h.auditor).await;
    let refused = refused["records"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0]["actor"].as_str(), refused[0]["status"].as_u64()),
        (Some("anonymous"), Some(401))
    );
    let hour = 3_600_000;
    let since = keyflow_kms::clock::rfc3339(now_millis() - hour);
    let until = keyflow_kms::clock::rfc3339(now_millis() + hour);
    let window = get_json(
        &mut c,
        &api(&format!(
            "/audit?operation=encrypt&since={since}&until={until}"
        )),
        &h.auditor,
    )
    .await;
    assert_eq!(window["records"].as_array().unwrap().len(), 7);
    let future = get_json(&mut c, &api(&format!("/audit?since={until}")), &h.auditor).await;
    assert_eq!(future["records"], json!([]));
    let past = get_json(&mut c, &api(&format!("/audit?until={since}")), &h.auditor).await;
    assert_eq!(past["records"], json!([]));

    // Pages of 2 through the cursor: every encrypt once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut q = "/audit?operation=encrypt&limit=2".to_owned();
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let page = get_json(&mut c, &api(&q), &h.auditor).await;
        let recs = page["records"].as_array().unwrap();
        assert!(recs.len() <= 2);
        seen.extend(recs.iter().map(|r| r["seq"].as_u64().unwrap()));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");

    // Roles: a service token may not read the trail; no token is a 401.
    let r = c.get(&api("/audit"), Some(svc)).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (403, Some("forbidden"))
    );
    let r = c.get(&api("/audit"), None).await;
    assert_eq!(r.status, 401);

    // Bad parameters: 400, never echoing the value.
    for q in [
        "since=yesterday",
        "until=12",
        "limit=0",
        "limit=1001",
        "limit=many",
        "cursor=abc",
        "cursor=0",
        "sinse=2026-01-01T00:00:00Z",
    ] {
        let r = c.get(&api(&format!("/audit?{q}")), Some(&h.auditor)).await;
        assert_eq!(
            (r.status.as_u16(), r.json()["error"].as_str()),
            (400, Some("invalid_request")),
            "{q}: {r:?}"
        );
        let value = q.split('=').nth(1).unwrap();
        if value.len() > 4 {
            assert!(
                !r.json()["message"].as_str().unwrap().contains(value),
                "{q}: {r:?}"
            );
        }
    }
    // The refusals are in the trail too.
    let bad = get_json(
        &mut c,
        &api("/audit?operation=audit&result=invalid_request"),
        &h.auditor,
    )
    .await;
    assert_eq!(bad["records"].as_array().unwrap().len(), 8);
    assert_eq!(
        h.verify_audit_chain().await,
        h.audit_records().await.len() as u64
    );
}

#[tokio::test]
async fn status_reports_the_audit_writer() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    for _ in 0..3 {
        let r = common::oneshot(
            &app,
            request("POST", &api("/encrypt"), Some(&h.service_token))
                .body(axum::body::Body::from(
                    json!({ "data": 1, "purpose": OWN }).to_string(),
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = common::oneshot(
        &app,
        request("GET", &api("/status"), Some(&h.auditor))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let a = &r.json()["audit"];
    assert_eq!(
        (
            a["enabled"].as_bool(),
            a["failClosed"].as_bool(),
            a["failing"].as_bool()
        ),
        (Some(true), Some(true), Some(false)),
        "{a}"
    );
    assert_eq!(a["written"], 3, "{a}");
    assert_eq!(a["headSeq"], 3, "{a}");
    assert!(a["commits"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(
        (a["failures"].as_u64(), a["backlog"].as_u64()),
        (Some(0), Some(0)),
        "{a}"
    );
    let last = a["lastWrite"].as_str().unwrap();
    assert!(keyflow_kms::clock::parse_rfc3339(last).is_some(), "{a}");
    // Oneshot requests have no connection: no client address is made up.
    let e = h.audit_records().await[0].event().unwrap();
    assert_eq!(e.client, None);
}

async fn flaky_harness(policy: AuditPolicy) -> (Harness, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let h = Harness::build(Limits::default(), policy, move |inner| {
        let mut flaky = keyflow_testkit::FlakyAudit::new(inner);
        flaky.failing = flag;
        Arc::new(flaky)
    })
    .await;
    (h, failing)
}

/// The journaled trail (what `keyflow serve` runs): an answered request is in the
/// journal, not yet in the database; a reader through the API still sees it at once
/// (the read flushes first), and the journal holds no plaintext or token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_journal_a_reader_sees_every_answered_request() {
    let h = Harness::journaled().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let enc = json!({ "data": PLAIN, "purpose": OWN });
    let r = c.post(&api("/encrypt"), Some(&h.service_token), &enc).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.header("x-request-id").to_owned();

    let r = c
        .get(&api("/audit?operation=encrypt"), Some(&h.auditor))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.json();
    let found: Vec<_> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["requestId"] == id.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{page}");
    assert_eq!(found[0]["result"], "ok");

    let s = c.get(&api("/status"), Some(&h.auditor)).await.json();
    assert!(s["audit"]["journaled"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["audit"]["failing"], false, "{s}");

    let dir = h.journal_dir.as_ref().unwrap().path();
    let journals: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(journals.len(), 1);
    let text = std::fs::read_to_string(&journals[0]).unwrap();
    assert!(text.contains(&id), "the request's line is in the journal");
    for secret in [PLAIN, h.service_token.as_str(), h.auditor.as_str()] {
        assert!(
            !text.contains(secret),
            "the journal holds no plaintext or token"
        );
    }
    assert_eq!(
        h.verify_audit_chain().await,
        h.audit_records().await.len() as u64
    );
}

const AUDIT_UNAVAILABLE: &str = "the audit trail cannot be written; retry later";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_trail_fails_closed_and_recovers() {
    let (h, failing) = flaky_harness(AuditPolicy::PRODUCTION).await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let svc = h.service_token.as_str();
    let enc = json!({ "data": PLAIN, "purpose": OWN });
    assert_eq!(c.post(&api("/encrypt"), Some(svc), &enc).await.status, 200);
    let written = h.audit_records().await.len();

    failing.store(true, Ordering::SeqCst);
    // The operation ran, its record could not be written: the result is withheld.
    let r = c.post(&api("/encrypt"), Some(svc), &enc).await;
    r.assert_error(503, "audit_unavailable", AUDIT_UNAVAILABLE);
    assert!(
        !r.text().contains(PLAIN) && !r.text().contains("kf1:"),
        "{r:?}"
    );
    assert!(r.headers.contains_key("x-request-id"));
    // While failing, new operations are refused up front.
    for path in ["/decrypt", "/keys/rotate"] {
        let r = c
            .post(&api(path), Some(&h.admin), &json!({ "purpose": OWN }))
            .await;
        r.assert_error(503, "audit_unavailable", AUDIT_UNAVAILABLE);
    }
    // Monitoring stays readable, and says what is wrong; probes are untouched.
    let r = c.get(&api("/status"), Some(&h.auditor)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let s = r.json();
    assert_eq!(s["audit"]["failing"], true, "{s}");
    assert!(s["audit"]["failures"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["firing"] == true && a["name"] == "audit_trail_failing"),
        "{s}"
    );
    assert_eq!(c.get(&api("/health"), None).await.status, 200);
    assert_eq!(
        h.audit_records().await.len(),
        written,
        "nothing was written"
    );

    // The store is back: the next refusal's record is written, and operations resume.
    failing.store(false, Ordering::SeqCst);
    let r = c.post(&api("/encrypt"), Some(svc), &enc).await;
    r.assert_error(503, "audit_unavailable", AUDIT_UNAVAILABLE);
    let r = c.post(&api("/encrypt"), Some(svc), &enc).await;
    assert_eq!(r.status, 200, "{r:?}");
    let refused = events(&h).await;
    let refused: Vec<_> = refused
        .iter()
        .filter(|(_, e)| e.result == "audit_unavailable")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (refused[0].1.status, refused[0].1.operation.as_str()),
        (Some(503), "encrypt")
    );
    // Failed appends left no trace in the chain.
    assert_eq!(
        h.verify_audit_chain().await,
        h.audit_records().await.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_development_an_unwritable_trail_fails_open() {
    let (h, failing) = flaky_harness(AuditPolicy::DEVELOPMENT).await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    failing.store(true, Ordering::SeqCst);
    let enc = json!({ "data": PLAIN, "purpose": OWN });
    for _ in 0..2 {
        let r = c.post(&api("/encrypt"), Some(&h.service_token), &enc).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.json()["encryptedData"]
            .as_str()
            .unwrap()
            .starts_with("kf1:"));
    }
    let r = c.get(&api("/status"), Some(&h.auditor)).await;
    let a = &r.json()["audit"];
    assert_eq!(
        (a["failClosed"].as_bool(), a["written"].as_u64()),
        (Some(false), Some(0)),
        "{a}"
    );
    assert!(a["failures"].as_u64().unwrap() >= 2, "{a}");
    assert!(h.audit_records().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_transport_layers_are_recorded_with_their_codes() {
    let h = Harness::new().await;
    let production = keyflow_transport::TransportConfig {
        production: true,
        integrity_secret: Some(
            keyflow_transport::IntegritySecret::new("integrity-secret-for-the-audit-test").unwrap(),
        ),
        integrity_required_prefixes: vec!["/api/encryption/keys".into()],
        ..keyflow_transport::TransportConfig::default()
    };
    // An unsigned key-management request over TLS: refused before any handler, so the
    // layer identifies the token itself.
    let server = h.start(h.app(production.clone()), true).await;
    let mut c = server.client().await;
    let r = c
        .post(
            &api("/keys/rotate"),
            Some(&h.admin),
            &json!({ "purpose": OWN }),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "keys.rotate", "integrity_required", 401);
    assert_eq!(e.client.as_deref(), Some("127.0.0.1"));
    assert_ne!(e.actor, "anonymous");
    // Plain HTTP in production.
    let plain = h.start(h.app(production), false).await;
    let mut c = plain.client().await;
    let r = c
        .post(
            &api("/encrypt"),
            Some(&h.service_token),
            &json!({ "data": PLAIN, "purpose": OWN }),
        )
        .await;
    let e = record_of(&h, &r).await;
    assert_outcome(&e, "encrypt", "https_required", r.status.as_u16());
    assert_eq!(
        (e.client.as_deref(), e.actor.as_str()),
        (Some("127.0.0.1"), h.service_token_id.as_str())
    );
    assert_eq!(h.verify_audit_chain().await, 2);
}
