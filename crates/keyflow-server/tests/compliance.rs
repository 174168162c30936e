//! `GET /compliance` through the real app: roles, the query, the three formats, facts
//! read from the audit trail (a recorded discovery scan, a backup), `?at=` moving the
//! time-dependent controls, and HTML that escapes what came from data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use common::{now_millis, oneshot, request, Harness, Resp};
use keyflow_kms::audit::{AuditEvent, Source};
use keyflow_testkit::compliance::{control, evidence};
use serde_json::json;

const PATH: &str = "/api/encryption/compliance";

async fn get(h: &Harness, query: &str, token: Option<&str>) -> Resp {
    let app = h.app(keyflow_transport::TransportConfig::default());
    oneshot(
        &app,
        request("GET", &format!("{PATH}{query}"), token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn auditor_and_admin_read_it_service_and_anonymous_do_not() {
    let h = Harness::new().await;
    let r = get(&h, "", Some(&h.auditor)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").starts_with("application/json"));
    let report = r.json();
    for k in [
        "generatedAt",
        "overall",
        "summary",
        "implementation",
        "inventory",
        "legacyMapping",
    ] {
        assert!(!report[k].is_null(), "{k}");
    }
    for k in ["pciDss", "gdpr", "nist", "iso27001"] {
        assert!(
            !report["standards"][k].as_array().unwrap().is_empty(),
            "{k}"
        );
    }
    // The harness's two purposes, each version 1, in the inventory.
    let inventory = report["inventory"].as_array().unwrap();
    let ids: Vec<&str> = inventory
        .iter()
        .map(|k| k["keyId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["financialData:v1", "userData:v1"]);
    assert_eq!(inventory[0]["cryptoperiodDays"], 90);
    let crypto = control(&report, "pciDss", "3.7.4");
    assert_eq!(crypto["status"], "pass", "{crypto}");
    assert!(
        evidence(crypto).contains("oldest active key 0 days"),
        "{crypto}"
    );
    // Facts the harness does not give are never a pass: no backup, no scan, no TLS known.
    assert_eq!(control(&report, "gdpr", "Art. 32(1)(c)")["status"], "fail");
    assert_eq!(control(&report, "pciDss", "12.5.2")["status"], "warn");
    assert_ne!(control(&report, "pciDss", "4.2.1")["status"], "pass");
    assert_ne!(report["overall"], "pass");
    // Every API route is audited, this one included.
    let audit = control(&report, "pciDss", "10.2");
    assert!(evidence(audit).contains("every API route"), "{audit}");

    assert_eq!(get(&h, "", Some(&h.admin)).await.status, 200);
    let r = get(&h, "", Some(&h.service_token)).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(get(&h, "", None).await.status, 401);
    // Each request is recorded as `compliance`, refusals included.
    let ops: Vec<String> = h
        .audit_records()
        .await
        .iter()
        .filter(|r| r.operation == "compliance")
        .map(|r| r.result.clone())
        .collect();
    assert_eq!(ops, ["ok", "ok", "forbidden", "unauthorized"]);
}

#[tokio::test]
async fn bad_query_is_400() {
    let h = Harness::new().await;
    for q in [
        "?at=tomorrow",
        "?at=2027-13-01T00:00:00Z",
        "?format=pdf",
        "?frmat=html",
    ] {
        let r = get(&h, q, Some(&h.auditor)).await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{q}");
    }
}

#[tokio::test]
async fn at_moves_the_time_dependent_controls() {
    let h = Harness::new().await;
    let later = keyflow_kms::clock::rfc3339(now_millis() + 120 * 86_400_000);
    let r = get(&h, &format!("?at={later}"), Some(&h.auditor)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let report = r.json();
    let c = control(&report, "pciDss", "3.7.4");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(evidence(c).contains("past its 90-day cryptoperiod"), "{c}");
    assert!(c["remediation"].as_str().unwrap().contains("rotate-due"));
    assert_eq!(report["overall"], "fail");
    assert_eq!(report["inventory"][0]["ageDays"], 120);
}

#[tokio::test]
async fn recorded_scans_and_backups_are_evidence() {
    let h = Harness::new().await;
    let trail = h.state.audit.as_ref().unwrap();
    let mut scan = AuditEvent::new(now_millis(), Source::Cli, "cli:alice", "scan.database");
    scan.items = Some(1200);
    scan.detail = Some(json!({
        "scope": {"backend": "sqlite", "tables": ["<script>alert(1)</script>", "expenses"]},
        "rows": 1200, "columns": 3,
        "findings": [{"table": "expenses", "column": "note", "detector": "pan", "count": 2}],
        "clearValues": 2,
    }));
    trail.record(scan).await.unwrap();
    let r = get(&h, "", Some(&h.auditor)).await;
    let report = r.json();
    for (std, id) in [("pciDss", "3.4.1"), ("pciDss", "12.5.2")] {
        let c = control(&report, std, id);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(evidence(c).contains("expenses.note (2 pan)"), "{c}");
    }

    // A backup through the API is recorded; Art. 32(1)(c) then wants its verification.
    let app = h.app(keyflow_transport::TransportConfig::default());
    let r = oneshot(
        &app,
        request("POST", "/api/encryption/keys/backup", Some(&h.admin))
            .body(Body::from(
                json!({"password": "a long backup password"}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let report = get(&h, "", Some(&h.auditor)).await.json();
    let c = control(&report, "gdpr", "Art. 32(1)(c)");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(evidence(c).contains("last backup"), "{c}");
    assert!(evidence(c).contains("no backup has been verified"), "{c}");
}

#[tokio::test]
async fn html_is_one_escaped_page_and_markdown_is_markdown() {
    let h = Harness::new().await;
    let trail = h.state.audit.as_ref().unwrap();
    let mut scan = AuditEvent::new(now_millis(), Source::Cli, "cli:alice", "scan.database");
    scan.detail = Some(json!({
        "scope": {"backend": "sqlite", "tables": ["<img src=x onerror=alert(1)>"]},
        "rows": 1, "columns": 1, "findings": [], "clearValues": 0,
    }));
    trail.record(scan).await.unwrap();
    let r = get(&h, "?format=html", Some(&h.auditor)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    let page = r.text();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg"), "the key-age chart");
    assert!(page.contains("userData:v1") && page.contains("financialData:v1"));
    assert!(!page.contains("<img"), "unescaped data");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<script"), "no script at all");
    // Styled in a browser: the CSP allows exactly the page's one style sheet, by hash,
    // and keeps every other restriction.
    let sheet = page
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(css, _)| css)
        .expect("one inline style sheet");
    let csp = r.header("content-security-policy");
    let expected = keyflow_transport::InlineStyleHash::of(sheet).0;
    assert!(csp.starts_with(keyflow_transport::CSP), "{csp}");
    assert!(csp.ends_with(&format!("; style-src '{expected}'")), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let json = get(&h, "", Some(&h.auditor)).await;
    assert_eq!(
        json.header("content-security-policy"),
        keyflow_transport::CSP
    );
    let r = get(&h, "?format=markdown", Some(&h.auditor)).await;
    assert_eq!(r.header("content-type"), "text/markdown; charset=utf-8");
    let md = r.text();
    assert!(md.starts_with("# KeyFlow compliance report"));
    assert!(md.contains("### 3.7.4"));
    assert!(!md.contains("<img"));
}

#[tokio::test]
async fn tls_facts_come_from_the_served_configuration() {
    let h = Harness::new().await;
    let (cert, key) = h.cert_files();
    let options = keyflow_server::tls::TlsOptions {
        request_client_certs: false,
        cipher_suites: vec![
            "TLS13_AES_256_GCM_SHA384".into(),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
        ],
    };
    let tls = keyflow_server::tls::server_config_with(&cert, &key, &options).unwrap();
    h.state
        .set_deployment(keyflow_server::compliance::Deployment {
            production: true,
            tls: keyflow_server::compliance::tls_facts(Some(&tls), 0, true, "server"),
            audit_journaled: false,
            keystore_file: None,
            backend: "sqlite".into(),
        });
    let report = get(&h, "", Some(&h.auditor)).await.json();
    let c = control(&report, "pciDss", "4.2.1");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        evidence(c).contains("TLS 1.2–1.3 only; suites: TLS13_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
        "{c}"
    );
}
