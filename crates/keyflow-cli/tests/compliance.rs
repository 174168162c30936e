//! `keyflow compliance` and `keyflow backup verify` as a user runs them: the report from
//! the data directory in three formats, `--at` moving the cryptoperiods, a verified
//! backup turning GDPR Art. 32(1)(c) from fail to pass, and bad input refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{assert_fails, Sandbox};
use keyflow_testkit::compliance::{control, evidence};

const BACKUP_PASSWORD: &str = "backup password, long enough";

#[test]
fn report_from_the_data_directory_backup_verify_and_at() {
    let s = Sandbox::new().with_env("KEYFLOW_BACKUP_PASSWORD", BACKUP_PASSWORD);
    s.init();
    s.ok(&["keys", "generate", "--purpose", "financialData"], b"");
    s.ok(&["keys", "generate", "--purpose", "userData"], b"");

    let report = s.json(&["compliance"], b"");
    assert_eq!(report["inventory"].as_array().unwrap().len(), 2);
    assert_eq!(control(&report, "pciDss", "3.7.4")["status"], "pass");
    // Nothing verifies the audit chain or a backup yet: never a pass.
    assert_eq!(control(&report, "gdpr", "Art. 32(1)(c)")["status"], "fail");
    assert_eq!(control(&report, "pciDss", "10.2")["status"], "warn");
    // The KEK file: owner-only, next to the SQLite keystore (said, as a warning).
    let keys = control(&report, "pciDss", "3.6.1");
    assert_eq!(keys["status"], "warn", "{keys}");
    assert!(evidence(keys).contains("KEK file mode 600"), "{keys}");
    assert!(
        evidence(keys).contains("same directory as the SQLite keystore"),
        "{keys}"
    );
    // No TLS in this environment: development, plain HTTP, evaluated from configuration.
    let tls = control(&report, "pciDss", "4.2.1");
    assert_eq!(tls["status"], "warn");
    assert!(evidence(tls).contains("configuration"), "{tls}");

    // A backup, verified: Art. 32(1)(c) passes with the backup's age.
    let file = s.path("keys.kfbackup");
    let f = file.to_str().unwrap();
    s.ok(
        &["keys", "backup", "-o", f, "--kdf-iterations", "100000"],
        b"",
    );
    let out = s.ok_str(&["backup", "verify", f], b"");
    assert!(
        out.starts_with("backup verified: ") && out.contains("2 key versions"),
        "{out}"
    );
    let report = s.json(&["compliance"], b"");
    let restore = control(&report, "gdpr", "Art. 32(1)(c)");
    assert_eq!(restore["status"], "pass", "{restore}");
    assert!(
        evidence(restore).contains("last verified backup made"),
        "{restore}"
    );
    let records = s.audit_list(&["--operation", "backup.verify"]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["result"], "ok");
    assert_eq!(records[0]["detail"]["versions"], 2);

    // A wrong password: recorded as failed, and the report says so.
    let mut wrong = s.cmd(&["backup", "verify", f]);
    wrong.env("KEYFLOW_BACKUP_PASSWORD", "another long password!!");
    let out = common::run(wrong, b"");
    assert_eq!(out.status.code(), Some(1));
    let report = s.json(&["compliance"], b"");
    assert_eq!(control(&report, "gdpr", "Art. 32(1)(c)")["status"], "fail");

    // 120 days on, both keys are past their 90-day cryptoperiod.
    let later = s.json(&["compliance", "--at", "2099-01-01T00:00:00Z"], b"");
    let crypto = control(&later, "pciDss", "3.7.4");
    assert_eq!(crypto["status"], "fail");
    assert!(
        evidence(crypto).contains("past its 90-day cryptoperiod"),
        "{crypto}"
    );
    assert_eq!(later["evaluatedAt"], "2099-01-01T00:00:00Z");

    // Markdown and HTML, to stdout and to a file.
    let md = s.ok_str(&["compliance", "--format", "markdown"], b"");
    assert!(md.starts_with("# KeyFlow compliance report"), "{md}");
    let page = s.path("report.html");
    let out = s.run(
        &[
            "compliance",
            "--format",
            "html",
            "--output",
            page.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("compliance report written"));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
}

#[test]
fn bad_input_is_refused() {
    let s = Sandbox::initialized();
    assert_fails(
        &s.run(&["compliance", "--at", "soon"], b""),
        2,
        "--at: expected an RFC 3339 instant",
    );
    let out = s.run(&["compliance", "--format", "pdf"], b"");
    assert_eq!(out.status.code(), Some(2), "clap refuses the format");
    let s = Sandbox::initialized().with_env("KEYFLOW_BACKUP_PASSWORD", BACKUP_PASSWORD);
    assert_fails(
        &s.run(&["backup", "verify", "missing.kfbackup"], b""),
        2,
        "cannot open missing.kfbackup",
    );
    std::fs::write(s.path("junk.kfbackup"), b"not a backup at all").unwrap();
    let out = s.run(&["backup", "verify", "junk.kfbackup"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let records = s.audit_list(&["--operation", "backup.verify"]);
    assert_eq!(records[0]["result"], "invalid_backup", "{records:?}");
    let tls = Sandbox::initialized().with_env("KEYFLOW_TLS_CERT", "cert.pem");
    assert_fails(
        &tls.run(&["compliance"], b""),
        2,
        "set both KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY",
    );
}
