//! `keyflow keys policy | rotate-due | revoke | reinstate | destroy` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_fails, text, Sandbox};

#[test]
fn policy_rotate_due_revoke_reinstate_destroy() {
    let s = Sandbox::new();
    s.init();
    let ct = text(s.ok(&["encrypt", "--purpose", "userData"], b"123-45-6789"));
    // Policy: defaults, then changed, shown in `keys list`.
    let p = s.json(&["keys", "policy", "--purpose", "userData"], b"");
    assert_eq!(p["policy"]["rotationDays"], 90);
    let p = s.json(
        &[
            "keys",
            "policy",
            "--purpose",
            "userData",
            "--rotation-days",
            "30",
            "--warn-days",
            "3",
        ],
        b"",
    );
    assert_eq!(p["policy"]["rotationDays"], 30);
    assert_eq!(p["policy"]["graceDays"], 30);
    let out = s.run(
        &[
            "keys",
            "policy",
            "--purpose",
            "userData",
            "--warn-days",
            "40",
        ],
        b"",
    );
    assert_fails(&out, 2, "warn days");
    let listed = text(s.ok(&["keys", "list"], b""));
    assert!(
        listed.contains("rotate every 30 d, warn 3 d before"),
        "{listed}"
    );
    let listed = s.json(&["keys", "list", "--json"], b"");
    assert_eq!(listed[0]["policy"]["rotationDays"], 30);
    assert!(listed[0]["rotationDueAt"].is_string());
    // rotate-due: nothing now; planned and applied at +40 days.
    let r = s.json(&["keys", "rotate-due"], b"");
    assert_eq!(r["actions"], serde_json::json!([]));
    let at = "2099-01-01T00:00:00Z";
    let r = s.json(&["keys", "rotate-due", "--at", at, "--dry-run"], b"");
    assert_eq!(r["actions"][0]["outcome"], "skipped (dry run)");
    let r = s.json(&["keys", "rotate-due", "--at", at], b"");
    assert_eq!(r["actions"][0]["outcome"], "applied", "{r}");
    assert_fails(
        &s.run(&["keys", "rotate-due", "--at", "soon"], b""),
        2,
        "RFC 3339",
    );
    // Revoke: the active version is refused; v1 revoked stops decrypting.
    assert_fails(
        &s.run(
            &[
                "keys",
                "revoke",
                "--purpose",
                "userData",
                "--version",
                "2",
                "--reason",
                "x",
            ],
            b"",
        ),
        1,
        "rotate the purpose first",
    );
    let r = s.json(
        &[
            "keys",
            "revoke",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--reason",
            "lost laptop",
        ],
        b"",
    );
    assert_eq!(
        (r["status"].as_str(), r["revokedReason"].as_str()),
        (Some("revoked"), Some("lost laptop"))
    );
    assert_fails(&s.run(&["decrypt"], ct.as_bytes()), 1, "revoked");
    // Reinstated: decrypts again.
    s.ok(
        &[
            "keys",
            "reinstate",
            "--purpose",
            "userData",
            "--version",
            "1",
        ],
        b"",
    );
    assert_eq!(text(s.ok(&["decrypt"], ct.as_bytes())), "123-45-6789");
    // Destroy: needs --yes and a revoked version; then gone for good.
    assert_fails(
        &s.run(
            &["keys", "destroy", "--purpose", "userData", "--version", "1"],
            b"",
        ),
        2,
        "--yes",
    );
    assert_fails(
        &s.run(
            &[
                "keys",
                "destroy",
                "--purpose",
                "userData",
                "--version",
                "1",
                "--yes",
            ],
            b"",
        ),
        1,
        "only a revoked version can be destroyed",
    );
    s.ok(
        &[
            "keys",
            "revoke",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--reason",
            "retire",
        ],
        b"",
    );
    let r = s.json(
        &[
            "keys",
            "destroy",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--yes",
        ],
        b"",
    );
    assert_eq!(r["status"], "destroyed");
    assert_fails(&s.run(&["decrypt"], ct.as_bytes()), 1, "destroyed");
    assert_fails(
        &s.run(
            &[
                "keys",
                "reinstate",
                "--purpose",
                "userData",
                "--version",
                "1",
            ],
            b"",
        ),
        1,
        "destroyed",
    );
    assert_fails(
        &s.run(
            &[
                "keys",
                "revoke",
                "--purpose",
                "userData",
                "--version",
                "9",
                "--reason",
                "x",
            ],
            b"",
        ),
        1,
        "does not exist",
    );
}
