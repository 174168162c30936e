//! `keyflow fields encrypt | decrypt` and `keyflow scan` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{assert_fails, Sandbox};
use serde_json::{json, Value};

/// `args` with the JSON document `doc` on stdin; the JSON on stdout.
fn fields(s: &Sandbox, args: &[&str], doc: &Value) -> Value {
    s.json(args, doc.to_string().as_bytes())
}

/// Stdout of a command that must succeed, as it is (trailing newline and all).
fn ok_text(s: &Sandbox, args: &[&str], stdin: &[u8]) -> String {
    String::from_utf8(s.ok(args, stdin)).unwrap()
}

fn is_ct(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("kf1:"))
}

#[test]
fn encrypt_and_decrypt_a_document() {
    let s = Sandbox::initialized();
    let doc = json!({
        "id": 7,
        "ssn": "123-45-6789",
        "profile": {"address": {"street": "1 Main St"}, "age": 36},
        "cards": [{"cardNumber": "4111111111111111", "expiry": "12/29"}],
        "email": "ada@example.com"
    });
    let enc = fields(
        &s,
        &[
            "fields",
            "encrypt",
            "--purpose",
            "userData",
            "--fields",
            "ssn,profile.address,cards[*].cardNumber,profile.age:deterministic",
            "--fields",
            "email:blind_index/16",
            "--id",
            "user-7",
        ],
        &doc,
    );
    assert!(is_ct(&enc["ssn"]));
    assert!(is_ct(&enc["profile"]["address"]));
    assert!(is_ct(&enc["profile"]["age"]));
    assert!(is_ct(&enc["cards"][0]["cardNumber"]));
    assert_eq!(enc["cards"][0]["expiry"], "12/29");
    assert_eq!(enc["email_bidx"].as_str().unwrap().len(), 4);
    assert_eq!(enc["id"], 7);

    // Idempotent: encrypting the output again changes nothing.
    let again = fields(
        &s,
        &[
            "fields",
            "encrypt",
            "--purpose",
            "userData",
            "--fields",
            "ssn,profile.address",
            "--id",
            "user-7",
        ],
        &enc,
    );
    assert_eq!(again, enc);

    let back = fields(&s, &["fields", "decrypt", "--id", "user-7"], &enc);
    assert_eq!(back, doc, "types survive (numbers stay numbers)");

    // Another document id: refused, naming the path; nothing on stdout.
    let out = s.run(
        &["fields", "decrypt", "--id", "user-8"],
        enc.to_string().as_bytes(),
    );
    assert_fails(&out, 1, "decryption failed at ");
    assert!(out.stdout.is_empty());

    // Only the listed fields.
    let part = fields(
        &s,
        &["fields", "decrypt", "--id", "user-7", "--fields", "ssn"],
        &enc,
    );
    assert_eq!(part["ssn"], "123-45-6789");
    assert!(is_ct(&part["profile"]["address"]));
}

#[test]
fn auto_detect_matches_every_naming_style() {
    let s = Sandbox::initialized();
    let doc = json!({
        "phoneNumber": "+14155550001", "phone_number": "+14155550002",
        "phone-number": "+14155550003", "PhoneNumber": "+14155550004",
        "nickname": "ada"
    });
    let enc = fields(
        &s,
        &[
            "fields",
            "encrypt",
            "--purpose",
            "userData",
            "--auto-detect",
        ],
        &doc,
    );
    for k in ["phoneNumber", "phone_number", "phone-number", "PhoneNumber"] {
        assert!(is_ct(&enc[k]), "{k}");
    }
    assert_eq!(enc["nickname"], "ada");
    assert_eq!(fields(&s, &["fields", "decrypt"], &enc), doc);
}

#[test]
fn json_lines_with_an_id_per_document() {
    let s = Sandbox::initialized();
    let input =
        "{\"id\":\"a\",\"ssn\":\"123-45-6789\"}\n\n{\"id\":\"b\",\"ssn\":\"234-56-7890\"}\n";
    let args = [
        "fields",
        "encrypt",
        "--purpose",
        "userData",
        "--auto-detect",
        "--lines",
        "--id-field",
        "id",
    ];
    let out = ok_text(&s, &args, input.as_bytes());
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert!(is_ct(&docs[0]["ssn"]) && is_ct(&docs[1]["ssn"]));
    let back = ok_text(
        &s,
        &["fields", "decrypt", "--lines", "--id-field", "id"],
        out.as_bytes(),
    );
    assert_eq!(
        back,
        "{\"id\":\"a\",\"ssn\":\"123-45-6789\"}\n{\"id\":\"b\",\"ssn\":\"234-56-7890\"}\n"
    );

    // Swap the ssn between the two documents: line 2 fails, naming line and path.
    let mut swapped = docs.clone();
    swapped[1]["ssn"] = docs[0]["ssn"].clone();
    let input = format!("{}\n{}\n", swapped[0], swapped[1]);
    let out = s.run(
        &["fields", "decrypt", "--lines", "--id-field", "id"],
        input.as_bytes(),
    );
    assert_fails(&out, 1, "line 2: decryption failed at ssn");
}

#[test]
fn sensitive_authentication_data_is_removed_or_refused() {
    let s = Sandbox::initialized();
    let doc = json!({"cardNumber": "4111111111111111", "cvv": "987", "nested": {"pin": "4321"}});
    let out = s.run(
        &[
            "fields",
            "encrypt",
            "--purpose",
            "financialData",
            "--auto-detect",
        ],
        doc.to_string().as_bytes(),
    );
    assert!(out.status.success());
    let enc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(enc.get("cvv").is_none());
    assert_eq!(enc["nested"], json!({}));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cvv") && err.contains("nested.pin"), "{err}");
    assert!(!err.contains("987") && !err.contains("4321"), "{err}");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), err);
    assert!(!all.contains("987") && !all.contains("4321"));

    let out = s.run(
        &[
            "fields",
            "encrypt",
            "--purpose",
            "financialData",
            "--auto-detect",
            "--sad",
            "reject",
        ],
        doc.to_string().as_bytes(),
    );
    assert_fails(&out, 1, "PCI DSS 3.3.1): cvv, nested.pin");
    assert!(out.stdout.is_empty());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("987"));
}

#[test]
fn usage_errors_exit_2() {
    let s = Sandbox::initialized();
    let doc = b"{\"ssn\": \"1\"}";
    assert_fails(
        &s.run(&["fields", "encrypt", "--purpose", "userData"], doc),
        2,
        "nothing to encrypt",
    );
    assert_fails(
        &s.run(
            &[
                "fields",
                "encrypt",
                "--purpose",
                "userData",
                "--fields",
                "a..b",
            ],
            doc,
        ),
        2,
        "invalid field selector 'a..b'",
    );
    assert_fails(
        &s.run(
            &["fields", "encrypt", "--purpose", "custom", "--auto-detect"],
            doc,
        ),
        2,
        "has no auto-detection list",
    );
    assert_fails(
        &s.run(
            &[
                "fields",
                "encrypt",
                "--purpose",
                "userData",
                "--fields",
                "ssn",
                "--sad",
                "keep",
            ],
            doc,
        ),
        2,
        "strip or reject",
    );
    assert_fails(
        &s.run(
            &[
                "fields",
                "encrypt",
                "--purpose",
                "userData",
                "--fields",
                "ssn",
            ],
            b"{not json",
        ),
        2,
        "input is not JSON",
    );
    assert_fails(
        &s.run(&["fields", "decrypt", "--context", "kf.field=ssn"], doc),
        2,
        "reserved",
    );
}

#[test]
fn scan_reports_paths_and_detectors_and_gates_ci() {
    let s = Sandbox::initialized();
    let dirty = json!({
        "user": {"contact": "ada@example.com", "note": "hello"},
        "payments": [{"ref": "4532015112830366"}, {"ref": "4532015112830367"}],
        "salary": 100000,
        "iban_ish": "DE89370400440532013000"
    });
    let out = s.run(&["scan"], dirty.to_string().as_bytes());
    assert_fails(&out, 1, "found 4 sensitive value(s) in clear");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "iban_ish\tiban",
            "payments[0].ref\tcardNumber",
            "salary\tsensitiveName (financial)",
            "user.contact\temail"
        ]
    );
    assert!(
        !stdout.contains("4532") && !stdout.contains("ada@"),
        "values are never printed"
    );

    // After encryption the same document is clean.
    let enc = ok_text(
        &s,
        &[
            "fields",
            "encrypt",
            "--purpose",
            "documents",
            "--auto-detect",
            "--fields",
            "user.contact,payments[*].ref,iban_ish",
        ],
        dirty.to_string().as_bytes(),
    );
    let out = s.run(&["scan"], enc.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // JSON lines, JSON output.
    let input = "{\"a\": 1}\n{\"ssn\": \"123-45-6789\"}\n{\"phone\": \"+14155552671\"}\n";
    let out = s.run(&["scan", "--lines", "--json"], input.as_bytes());
    assert_fails(&out, 1, "found 2");
    let found: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        found,
        [
            json!({"path": "ssn", "detector": "sensitiveName", "list": "pii", "line": 2}),
            json!({"path": "phone", "detector": "phone", "line": 3}),
        ]
    );

    assert_fails(&s.run(&["scan"], b"[1, "), 2, "not JSON");
}
