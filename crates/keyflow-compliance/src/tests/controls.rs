//! Each control's pass / warn / fail edges, and `--at`.

use super::*;

#[test]
fn a_snapshot_in_order_passes_every_control() {
    let r = evaluate(&good());
    let not_passing: Vec<_> = r
        .standards
        .all()
        .filter(|(_, c)| c.status != Status::Pass)
        .map(|(_, c)| format!("{} {:?} {:?}", c.id, c.status, c.evidence))
        .collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    assert_eq!(r.overall, Status::Pass);
    assert_eq!(r.summary.pass, r.summary.total);
    assert!(r.standards.all().all(|(_, c)| c.remediation.is_none()));
    assert_eq!(r.inventory.len(), 3);
    assert_eq!(r.legacy_mapping.len(), 6);
    let text = find(&r, "3.7.4").evidence.join("\n");
    assert!(
        text.contains("oldest active key 30 days (userData:v1); policy 90"),
        "{text}"
    );
    assert!(text.contains("2 of 2 purposes rotate ≤ 90 d"), "{text}");
    assert!(find(&r, "10.2")
        .evidence
        .iter()
        .any(|e| e.contains("verified through record 18,224")));
    assert!(find(&r, "4.2.1").evidence[0]
        .starts_with("TLS 1.2–1.3 only; suites: TLS13_AES_128_GCM_SHA256"));
}

#[test]
fn an_empty_snapshot_never_passes() {
    let r = evaluate(&Snapshot::default());
    assert_ne!(r.overall, Status::Pass);
    assert!(
        r.summary.fail > 0,
        "no backup, no audit trail: {:?}",
        r.summary
    );
    // Whatever passes on no facts passes on evidence it states, never silently.
    for (_, c) in r.standards.all() {
        assert!(!c.evidence.is_empty(), "{} has no evidence", c.id);
    }
    assert_eq!(find(&r, "3.5.1").status, Status::NotApplicable);
    assert_eq!(find(&r, "10.2").status, Status::Fail);
}

#[test]
fn cryptoperiod_edges() {
    let mut s = good();
    // Exactly at the end of the cryptoperiod: due, not yet past.
    s.keys[2] = key("userData", 1, "active", 90);
    assert_eq!(status(&s, "3.7.4"), Status::Warn);
    // One day past its cryptoperiod: fails.
    s.keys[2] = key("userData", 1, "active", 91);
    assert_eq!(status(&s, "3.7.4"), Status::Fail);
    let r = evaluate(&s);
    let c = find(&r, "3.7.4");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("userData:v1 is 91 days old, past its 90-day cryptoperiod")),
        "{:?}",
        c.evidence
    );
    assert!(c.remediation.as_deref().unwrap().contains("rotate-due"));
    // ISO A.8.24 and GDPR 32(1)(a) inherit it; so do the old labels 3.6.
    assert_eq!(find(&r, "A.8.24").status, Status::Fail);
    assert_eq!(find(&r, "Art. 32(1)(a)").status, Status::Fail);
    let old = r
        .legacy_mapping
        .iter()
        .find(|l| l.requirement == "3.6")
        .unwrap();
    assert_eq!(old.status, Status::Fail);
    // Inside the 7-day window: rotation configured but not happened.
    s.keys[2] = key("userData", 1, "active", 84);
    let r = evaluate(&s);
    assert_eq!(find(&r, "3.7.4").status, Status::Warn);
    assert!(find(&r, "3.7.4")
        .evidence
        .iter()
        .any(|e| e.contains("due for rotation since")));
    s.keys[2] = key("userData", 1, "active", 82);
    assert_eq!(status(&s, "3.7.4"), Status::Pass);
    // A longer explicit policy moves the edge.
    s.keys[2] = key("userData", 1, "active", 100);
    s.policies[1].rotation_days = 180;
    s.policies[1].explicit = true;
    assert_eq!(status(&s, "3.7.4"), Status::Pass);
    assert!(find(&evaluate(&s), "3.7.4")
        .evidence
        .iter()
        .any(|e| e.contains("1 of 2 purposes rotate ≤ 90 d")));
}

#[test]
fn spent_budget_and_failed_rotations() {
    let mut s = good();
    s.keys[1].encryptions = 1 << 30;
    assert_eq!(status(&s, "3.7.4"), Status::Fail);
    s.keys[1].encryptions = 1 << 32;
    assert_eq!(status(&s, "SP 800-38D §8.3"), Status::Fail);
    let mut s = good();
    let mut failure = event(NOW - DAY, 20, Some(json!({"error": "store down"})));
    failure.result = "failed".into();
    s.events.last_rotation_failure = Some(failure.clone());
    let r = evaluate(&s);
    assert_eq!(find(&r, "3.7.4").status, Status::Warn);
    assert!(find(&r, "3.7.4")
        .evidence
        .iter()
        .any(|e| e.contains("store down")));
    // A successful rotation after the failure clears it.
    s.events.last_rotation = Some(event(NOW, 21, None));
    assert_eq!(status(&s, "3.7.4"), Status::Pass);
}

#[test]
fn at_shifts_time_dependent_controls() {
    let mut s = good();
    s.at = NOW + 70 * DAY;
    let r = evaluate(&s);
    // financialData:v2 is 82 days old: fine; userData:v1 is 100: past.
    assert_eq!(find(&r, "3.7.4").status, Status::Fail);
    assert_eq!(r.evaluated_at, "2027-02-12T00:00:00Z");
    assert_eq!(r.generated_at, "2026-12-04T00:00:00Z");
    // The scan is now 80 days old: still fine; 100 days: stale.
    assert_eq!(find(&r, "12.5.2").status, Status::Pass);
    s.at = NOW + 90 * DAY;
    let r = evaluate(&s);
    assert_eq!(find(&r, "12.5.2").status, Status::Warn);
    assert_eq!(
        find(&r, "Art. 32(1)(c)").status,
        Status::Warn,
        "backup 92 days old"
    );
    assert_eq!(
        find(&r, "10.2").status,
        Status::Warn,
        "verified 91 days before"
    );
    let age = r
        .inventory
        .iter()
        .find(|k| k.key_id == "userData:v1")
        .unwrap()
        .age_days;
    assert_eq!(age, 120);
}

#[test]
fn audit_trail_edges() {
    let mut s = good();
    s.audit.enabled = false;
    let r = evaluate(&s);
    assert_eq!(find(&r, "10.2").status, Status::Fail);
    assert!(find(&r, "10.2").evidence[0].contains("off"));
    assert_eq!(find(&r, "Art. 5(1)(f)").status, Status::Fail);
    assert_eq!(find(&r, "A.8.5").status, Status::Warn, "token use unknown");
    let mut s = good();
    s.audit.verification = None;
    assert_eq!(status(&s, "10.2"), Status::Warn);
    s.audit.verification = Some(Verification {
        at: NOW,
        through_seq: 5,
        broken: Some("record 6: MAC mismatch".into()),
        by: "server".into(),
    });
    assert_eq!(status(&s, "10.2"), Status::Fail);
    let mut s = good();
    s.audit.routes_audited = 26;
    assert_eq!(status(&s, "10.2"), Status::Fail);
    let mut s = good();
    s.audit.fail_closed = false;
    assert_eq!(status(&s, "10.2"), Status::Warn);
    s.production = false;
    assert_eq!(status(&s, "10.2"), Status::Pass);
}

#[test]
fn discovery_scan_edges() {
    let mut s = good();
    s.events.last_scan = None;
    let r = evaluate(&s);
    for id in ["3.4.1", "12.5.2"] {
        let c = find(&r, id);
        assert_eq!(c.status, Status::Warn, "{id}");
        assert!(c.evidence.iter().any(|e| e == "no discovery scan recorded"));
    }
    let mut s = good();
    let scan = s.events.last_scan.as_mut().unwrap();
    scan.clear_values = 3;
    scan.findings = vec![Finding {
        table: "expenses".into(),
        column: "note".into(),
        detector: "pan".into(),
        count: 3,
    }];
    let r = evaluate(&s);
    assert_eq!(find(&r, "3.4.1").status, Status::Fail);
    assert!(find(&r, "12.5.2")
        .evidence
        .iter()
        .any(|e| e.contains("expenses.note (3 pan)")));
    let mut s = good();
    s.events.last_scan.as_mut().unwrap().at = NOW - 91 * DAY;
    assert_eq!(status(&s, "12.5.2"), Status::Warn);
    s.events.last_scan.as_mut().unwrap().result = "unavailable".into();
    assert_eq!(status(&s, "12.5.2"), Status::Warn);
}

#[test]
fn scan_event_contract_is_read() {
    let detail = json!({"scope":{"backend":"sqlite","tables":["a","b"]},"rows":12,"columns":3,
        "findings":[{"table":"a","column":"c","detector":"iban","count":2}],"clearValues":2});
    let f = ScanFact::from_event(5, "ok", Some(&detail));
    assert_eq!(
        (f.backend.as_str(), f.rows, f.columns, f.clear_values),
        ("sqlite", 12, 3, 2)
    );
    assert_eq!(f.tables, ["a", "b"]);
    assert_eq!(f.findings[0].detector, "iban");
    let empty = ScanFact::from_event(5, "ok", None);
    assert_eq!((empty.rows, empty.findings.len()), (0, 0));
}

#[test]
fn token_edges_expired_versus_idle() {
    let mut s = good();
    // Expired long ago and never used: refused anyway, not an idle live token.
    let mut expired = token("e1", "service", 400, None);
    expired.expires_at = Some(NOW - 100 * DAY);
    s.tokens.as_mut().unwrap().push(expired);
    let r = evaluate(&s);
    assert_eq!(find(&r, "A.8.5").status, Status::Pass);
    assert!(find(&r, "A.8.5")
        .evidence
        .iter()
        .any(|e| e.contains("1 expired (refused)")));
    // A live token last used 90 days ago: idle.
    s.tokens
        .as_mut()
        .unwrap()
        .push(token("i1", "service", 300, Some(90)));
    let r = evaluate(&s);
    let c = find(&r, "A.8.5");
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("i1 (service, last used")),
        "{:?}",
        c.evidence
    );
    // 89 days: not yet.
    s.tokens.as_mut().unwrap().pop();
    s.tokens
        .as_mut()
        .unwrap()
        .push(token("i2", "service", 300, Some(89)));
    assert_eq!(status(&s, "A.8.5"), Status::Pass);
    // Never used, created 90 days ago: idle.
    s.tokens
        .as_mut()
        .unwrap()
        .push(token("n1", "auditor", 90, None));
    assert_eq!(status(&s, "A.8.5"), Status::Warn);
    // Admin tokens without expiry.
    let mut s = good();
    s.tokens.as_mut().unwrap()[0].expires_at = None;
    assert_eq!(status(&s, "A.5.15"), Status::Warn);
    s.tokens = None;
    assert_eq!(status(&s, "A.5.15"), Status::Warn);
    s.tokens = Some(vec![]);
    assert_eq!(status(&s, "A.5.15"), Status::NotApplicable);
}

#[test]
fn tls_edges() {
    let mut s = good();
    s.tls.versions.push("TLSv1.1".into());
    assert_eq!(status(&s, "4.2.1"), Status::Fail);
    let mut s = good();
    s.tls.suites.push("TLS_RSA_WITH_AES_128_CBC_SHA".into());
    assert_eq!(status(&s, "4.2.1"), Status::Fail);
    let mut s = good();
    s.tls.served = false;
    assert_eq!(
        status(&s, "4.2.1"),
        Status::Fail,
        "plain HTTP in production"
    );
    s.tls.trusted_proxies = 1;
    assert_eq!(
        status(&s, "4.2.1"),
        Status::Warn,
        "TLS at a proxy: not measurable"
    );
    s.production = false;
    s.tls.trusted_proxies = 0;
    assert_eq!(status(&s, "4.2.1"), Status::Warn, "development, plain HTTP");
    let mut s = good();
    s.tls.https_enforced = false;
    assert_eq!(status(&s, "4.2.1"), Status::Fail);
    s.tls = TlsFacts::default();
    let r = evaluate(&s);
    assert_eq!(
        find(&r, "4.2.1").status,
        Status::Warn,
        "unknown is never a pass"
    );
    assert!(find(&r, "4.2.1").evidence[0].contains("unknown"));
}

#[test]
fn kek_and_storage_edges() {
    let mut s = good();
    s.kek.mode = Some(0o100644);
    let r = evaluate(&s);
    assert_eq!(find(&r, "3.6.1").status, Status::Fail);
    assert!(find(&r, "3.6.1")
        .evidence
        .iter()
        .any(|e| e.contains("mode 644")));
    let mut s = good();
    s.kek.same_dir_as_keystore = Some(true);
    assert_eq!(status(&s, "3.6.1"), Status::Warn);
    assert_eq!(status(&s, "SP 800-57 Pt1 §5.2"), Status::Warn);
    s.kek.mode = None;
    s.kek.same_dir_as_keystore = None;
    assert_eq!(status(&s, "3.6.1"), Status::Warn, "unknown is never a pass");
    let mut s = good();
    s.kek.kdf_iterations = Some(100_000);
    assert_eq!(status(&s, "3.7.3"), Status::Warn);
    let mut s = good();
    s.keys[0].kek_id = "kek-0".into();
    assert_eq!(status(&s, "3.6.1"), Status::Warn);
    let mut s = good();
    s.keys[0].algorithm = "DES".into();
    assert_eq!(status(&s, "3.5.1"), Status::Fail);
    let mut s = good();
    s.keys[0].legacy = true;
    assert_eq!(status(&s, "3.7.1"), Status::Warn);
}

#[test]
fn sad_policy_edges() {
    let mut s = good();
    s.fields.sad_options.push("keep".into());
    assert_eq!(status(&s, "3.3.1"), Status::Fail);
    let mut s = good();
    s.fields
        .sad_names
        .retain(|n| !n.contains("track") && !n.contains("magnetic"));
    assert_eq!(status(&s, "3.3.1"), Status::Fail);
    s.fields.sad_names.clear();
    assert_eq!(status(&s, "3.3.1"), Status::Warn);
    let mut s = good();
    s.fields.card_purposes.clear();
    assert_eq!(status(&s, "3.4.1"), Status::Warn);
}

#[test]
fn backup_edges() {
    let mut s = good();
    s.events.last_backup = None;
    assert_eq!(status(&s, "Art. 32(1)(c)"), Status::Fail);
    let mut s = good();
    s.events.last_backup_verified = None;
    s.events.last_backup_verify = None;
    assert_eq!(status(&s, "Art. 32(1)(c)"), Status::Warn);
    assert_eq!(status(&s, "Art. 32(1)(d)"), Status::Warn);
    let mut s = good();
    let mut failed = event(NOW, 30, None);
    failed.result = "decryption_failed".into();
    s.events.last_backup_verify = Some(failed);
    assert_eq!(status(&s, "Art. 32(1)(c)"), Status::Fail);
    // A key created after the verified backup is not in it.
    let mut s = good();
    s.keys.push(key("healthData", 1, "active", 0));
    assert_eq!(status(&s, "Art. 32(1)(c)"), Status::Warn);
}

#[test]
fn retirement_edges() {
    let mut s = good();
    let mut k = key("userData", 0, "rotating", 100);
    k.status_changed_at = NOW - 32 * DAY;
    s.keys.push(k.clone());
    assert_eq!(status(&s, "3.7.5"), Status::Warn);
    k.status_changed_at = NOW - 30 * DAY;
    *s.keys.last_mut().unwrap() = k;
    assert_eq!(status(&s, "3.7.5"), Status::Pass);
    let mut s = good();
    let mut bad = key("userData", 0, "destroyed", 200);
    bad.has_material = true;
    s.keys.push(bad);
    assert_eq!(status(&s, "3.7.3"), Status::Fail);
}

#[test]
fn nist_cryptoperiod_edges() {
    let mut s = good();
    s.policies[1].rotation_days = 731;
    s.policies[1].explicit = true;
    assert_eq!(status(&s, "SP 800-57 Pt1 §5.3"), Status::Fail);
    let mut s = good();
    s.keys.push(key("userData", 0, "deprecated", 2000));
    assert_eq!(status(&s, "SP 800-57 Pt1 §5.3"), Status::Warn);
}
