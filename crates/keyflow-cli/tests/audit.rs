//! The audit trail as an operator meets it: every CLI action recorded, `keyflow audit
//! list | verify | export`, tampering with the SQLite file found and named, no secret
//! in the database, failed KEK unlocks sealed later, signed checkpoints proving a cut
//! tail that the head row hides, retention (`audit prune`) whose anchor cannot be
//! removed or swapped, and a server killed with SIGKILL mid-load that never answered a
//! request it had not recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_fails, json_lines, run, text, Sandbox, PASSWORD};
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

/// A sandbox whose commands run as OS user `alice`, initialized.
fn alice() -> Sandbox {
    let s = Sandbox::new().with_env("USER", "alice");
    s.init();
    s
}

/// Runs SQL statements on the sandbox's keystore file directly (the attacker's view).
fn sql(s: &Sandbox, statements: &[&str]) {
    let path = s.data().join("keyflow.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::from_secs(30));
        let mut c = SqliteConnection::connect_with(&opts).await.unwrap();
        for q in statements {
            sqlx::query(q).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    });
}

fn ops(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect()
}

fn verified(s: &Sandbox) -> String {
    text(s.ok(&["audit", "verify"], b""))
}

/// The lifecycle of a purpose and a token: init, generate, rotate, revoke, reinstate,
/// revoke, destroy, tokens create and revoke. Returns the token printed.
fn lifecycle(s: &Sandbox) -> String {
    for args in [
        &["keys", "generate", "--purpose", "userData"][..],
        &["keys", "rotate", "--purpose", "userData"],
        &[
            "keys",
            "revoke",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--reason",
            "laptop stolen",
        ],
        &[
            "keys",
            "reinstate",
            "--purpose",
            "userData",
            "--version",
            "1",
        ],
        &[
            "keys",
            "revoke",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--reason",
            "retired",
        ],
        &[
            "keys",
            "destroy",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--yes",
        ],
    ] {
        s.ok(args, b"");
    }
    let token = s.ok_str(
        &[
            "tokens",
            "create",
            "--role",
            "service",
            "--purposes",
            "userData",
            "--name",
            "billing",
        ],
        b"",
    );
    s.ok(&["tokens", "revoke", &token[4..20]], b"");
    token
}

#[test]
fn every_cli_action_is_recorded_and_the_chain_verifies() {
    let s = alice();
    let token = lifecycle(&s);
    let id = &token[4..20];

    let records = s.audit_list(&[]);
    assert_eq!(
        ops(&records),
        [
            "tokens.revoke",
            "tokens.create",
            "keys.destroy",
            "keys.revoke",
            "keys.reinstate",
            "keys.revoke",
            "keys.rotate",
            "keys.generate",
            "init",
        ],
        "newest first"
    );
    for r in &records {
        assert_eq!(r["actor"], "cli:alice", "{r}");
        assert_eq!(r["source"], "cli", "{r}");
        assert_eq!(r["result"], "ok", "{r}");
    }
    let by_op = |op: &str| records.iter().find(|r| r["operation"] == op).unwrap();
    assert_eq!(by_op("keys.generate")["versions"], serde_json::json!([1]));
    assert_eq!(
        by_op("keys.rotate")["purposes"],
        serde_json::json!(["userData"])
    );
    assert_eq!(by_op("keys.rotate")["versions"], serde_json::json!([1, 2]));
    assert_eq!(by_op("keys.destroy")["versions"], serde_json::json!([1]));
    assert_eq!(records[3]["detail"]["reason"], "retired");
    assert_eq!(records[5]["detail"]["reason"], "laptop stolen");
    let created = by_op("tokens.create");
    assert_eq!(created["detail"]["tokenId"], id);
    assert_eq!(created["detail"]["name"], "billing");
    assert_eq!(created["purposes"], serde_json::json!(["userData"]));
    assert_eq!(by_op("tokens.revoke")["detail"]["tokenId"], id);
    assert_eq!(records.last().unwrap()["seq"], 1);

    let ok = verified(&s);
    assert!(
        ok.starts_with("audit chain verified: 9 records, head "),
        "{ok}"
    );

    // Filters.
    let revokes = s.audit_list(&["--operation", "keys.revoke"]);
    assert_eq!(ops(&revokes), ["keys.revoke", "keys.revoke"]);
    assert_eq!(s.audit_list(&["--limit", "2"]).len(), 2);
    assert_eq!(s.audit_list(&["--purpose", "userData"]).len(), 7);
    assert_eq!(s.audit_list(&["--actor", "cli:bob"]).len(), 0);
    assert_eq!(s.audit_list(&["--result", "ok"]).len(), 9);
    assert!(s
        .audit_list(&["--since", "2999-01-01T00:00:00Z"])
        .is_empty());
    assert_eq!(s.audit_list(&["--until", "2999-01-01T00:00:00Z"]).len(), 9);
    assert_fails(
        &s.run(&["audit", "list", "--since", "yesterday"], b""),
        2,
        "RFC 3339",
    );
    // The table: a header and one row per record.
    let table = s.ok_str(&["audit", "list"], b"");
    assert_eq!(table.lines().count(), 10, "{table}");
    assert!(
        table.lines().next().unwrap().contains("OPERATION"),
        "{table}"
    );
    assert!(
        table.contains("keys.rotate") && table.contains("userData v1,v2"),
        "{table}"
    );

    // A failure after the KEK was unlocked is recorded with its code.
    let refused = s.run(
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
    );
    assert_eq!(refused.status.code(), Some(1));
    let last = &s.audit_list(&["--limit", "1"])[0];
    assert_eq!(last["operation"], "keys.revoke");
    assert_eq!(last["result"], "invalid_key_state");
    // Read-only commands are not recorded.
    s.ok(&["keys", "list"], b"");
    s.ok(&["tokens", "list"], b"");
    s.ok(&["encrypt", "--purpose", "userData"], b"x");
    assert_eq!(s.audit_export().len(), 10);
}

#[test]
fn policy_rotate_due_backup_restore_and_kek_commands_are_recorded() {
    let s = alice();
    s.ok(&["keys", "generate", "--purpose", "cards"], b"");
    s.ok(&["keys", "policy", "--purpose", "cards"], b""); // only shows: not recorded
    s.ok(
        &[
            "keys",
            "policy",
            "--purpose",
            "cards",
            "--rotation-days",
            "30",
        ],
        b"",
    );
    s.ok(
        &[
            "keys",
            "rotate-due",
            "--at",
            "2999-01-01T00:00:00Z",
            "--dry-run",
        ],
        b"",
    );
    s.ok(&["keys", "rotate-due", "--at", "2999-01-01T00:00:00Z"], b"");
    let backup = s.path("keys.kfb");
    let mut b = s.cmd(&[
        "keys",
        "backup",
        "-o",
        backup.to_str().unwrap(),
        "--kdf-iterations",
        "100000",
    ]);
    b.env("KEYFLOW_BACKUP_PASSWORD", "a backup password of length");
    common::ok(b, b"");
    s.ok(&["kek", "rotate", "--kdf-iterations", "100000"], b"");

    let records = s.audit_list(&[]);
    assert_eq!(
        ops(&records),
        [
            "kek.rotate",
            "keys.backup",
            "keys.rotate",
            "keys.policy",
            "keys.generate",
            "init"
        ]
    );
    let due = &records[2];
    assert_eq!(due["detail"]["trigger"], "rotate-due");
    assert_eq!(due["detail"]["kind"], "rotateDue");
    assert_eq!(due["versions"], serde_json::json!([1]));
    assert_eq!(records[3]["detail"]["policy"]["rotationDays"], 30);
    assert_eq!(records[1]["items"], 2);
    let kek = &records[0];
    assert_ne!(kek["detail"]["oldKekId"], kek["detail"]["newKekId"]);
    assert_eq!(
        kek["kekId"], kek["detail"]["newKekId"],
        "sealed under the new KEK"
    );
    assert_eq!(records[1]["kekId"], kek["detail"]["oldKekId"]);
    // Records sealed under the old KEK verify with its retired file.
    assert!(verified(&s).starts_with("audit chain verified: 6 records"));

    // After a password change the retired file keeps the old password.
    let mut change = s.cmd(&["kek", "change-password", "--kdf-iterations", "100000"]);
    change.env("KEYFLOW_NEW_KEK_PASSWORD", "the new KEK password");
    common::ok(change, b"");
    let s = s.with_env("KEK_PASSWORD", "the new KEK password");
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 1: sealed under KEK",
    );
    let mut old = s.cmd(&["audit", "verify"]);
    old.env("KEYFLOW_OLD_KEK_PASSWORD", PASSWORD);
    assert!(text(common::ok(old, b"")).starts_with("audit chain verified: 7 records"));

    // A restore into a fresh keystore is recorded there.
    let t = alice();
    let mut r = t.cmd(&["keys", "restore", backup.to_str().unwrap()]);
    r.env("KEYFLOW_BACKUP_PASSWORD", "a backup password of length");
    common::ok(r, b"");
    let restored = &t.audit_list(&["--operation", "keys.restore"])[0];
    assert_eq!(restored["items"], 2);
    assert_eq!(restored["purposes"], serde_json::json!(["cards"]));
    assert_eq!(restored["versions"], serde_json::json!([1, 2]));
}

#[test]
fn tampering_with_the_database_is_found_and_named() {
    let s = alice();
    lifecycle(&s); // records 1..=9
    assert!(verified(&s).contains("9 records"));

    // An edited body (the revocation's reason, record 4).
    sql(
        &s,
        &["UPDATE keyflow_audit SET body = replace(body, 'laptop stolen', 'routine') WHERE seq = 4"],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 4: MAC mismatch",
    );
    sql(
        &s,
        &["UPDATE keyflow_audit SET body = replace(body, 'routine', 'laptop stolen') WHERE seq = 4"],
    );
    assert!(verified(&s).contains("9 records"), "restored");

    // An edited indexed copy, which filters read (record 2's actor).
    sql(
        &s,
        &["UPDATE keyflow_audit SET actor = 'cli:mallory' WHERE seq = 2"],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 2: actor does not match the sealed body",
    );
    sql(
        &s,
        &["UPDATE keyflow_audit SET actor = 'cli:alice' WHERE seq = 2"],
    );

    // A deleted middle record (5): record 6 comes where 5 should.
    sql(
        &s,
        &[
            "CREATE TABLE saved AS SELECT * FROM keyflow_audit WHERE seq = 5",
            "DELETE FROM keyflow_audit WHERE seq = 5",
        ],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 6: expected sequence number 5",
    );
    sql(
        &s,
        &[
            "INSERT INTO keyflow_audit SELECT * FROM saved",
            "DROP TABLE saved",
        ],
    );
    assert!(verified(&s).contains("9 records"), "restored");

    // The tail cut (8 and 9), the head left alone.
    sql(
        &s,
        &[
            "CREATE TABLE saved AS SELECT * FROM keyflow_audit WHERE seq >= 8",
            "DELETE FROM keyflow_audit WHERE seq >= 8",
        ],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "the chain head says record 9 but the last record is 7",
    );
    // `list` and `export` still read what is there (they do not verify).
    assert_eq!(s.audit_export().len(), 7);
    sql(
        &s,
        &[
            "INSERT INTO keyflow_audit SELECT * FROM saved",
            "DROP TABLE saved",
        ],
    );
    assert!(verified(&s).contains("9 records"), "restored");

    // A body that is not even JSON is exported as it is, beside the indexed copies.
    sql(
        &s,
        &["UPDATE keyflow_audit SET body = 'gone' WHERE seq = 3"],
    );
    let r = &s.audit_export()[2];
    assert_eq!(
        (r["seq"].as_u64(), r["body"].as_str()),
        (Some(3), Some("gone"))
    );
    assert_eq!(r["operation"], "keys.rotate");
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 3: MAC mismatch",
    );
}

#[test]
fn export_is_stable_json_lines_and_holds_no_secret() {
    let s = alice();
    let token = lifecycle(&s);
    let records = s.audit_export();
    assert_eq!(records.len(), 9);
    let stable: BTreeSet<&str> = [
        "seq",
        "kekId",
        "mac",
        "time",
        "source",
        "actor",
        "actorName",
        "operation",
        "route",
        "client",
        "requestId",
        "purposes",
        "versions",
        "items",
        "result",
        "status",
        "latencyUs",
        "detail",
    ]
    .into();
    for (i, r) in records.iter().enumerate() {
        let obj = r.as_object().unwrap();
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "ascending from 1");
        for key in [
            "seq",
            "kekId",
            "mac",
            "time",
            "source",
            "actor",
            "operation",
            "result",
        ] {
            assert!(obj.contains_key(key), "{key} in {r}");
        }
        for key in obj.keys() {
            assert!(
                stable.contains(key.as_str()),
                "unexpected field {key} in {r}"
            );
        }
        let mac = r["mac"].as_str().unwrap();
        assert!(
            mac.len() == 64 && mac.bytes().all(|b| b.is_ascii_hexdigit()),
            "{mac}"
        );
        assert!(r["time"].is_i64());
    }
    // --since keeps the later ones.
    let t5 = records[4]["time"].as_i64().unwrap();
    let since = keyflow_kms::clock::rfc3339(t5);
    let later = json_lines(&s.ok(&["audit", "export", "--since", &since], b""));
    assert!(later.iter().all(|r| r["time"].as_i64().unwrap() >= t5));
    assert_eq!(
        later[0]["seq"],
        records
            .iter()
            .find(|r| r["time"].as_i64().unwrap() >= t5)
            .unwrap()["seq"]
    );

    // The token's secret is printed once and stored nowhere: not in the database's
    // files (the WAL included), not in any export. The reason given for a revocation
    // is found there, which shows the search reads what the trail wrote.
    let secret = &token[21..];
    let mut bytes = Vec::new();
    for name in ["keyflow.db", "keyflow.db-wal", "keyflow.db-shm"] {
        if let Ok(b) = std::fs::read(s.data().join(name)) {
            bytes.extend(b);
        }
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"laptop stolen"), "the search sees audit bodies");
    assert!(
        !contains(secret.as_bytes()),
        "token secret in the database file"
    );
    assert!(
        !contains(PASSWORD.as_bytes()),
        "KEK password in the database file"
    );
    let export = String::from_utf8(s.ok(&["audit", "export"], b"")).unwrap();
    assert!(!export.contains(secret) && !export.contains(PASSWORD));
}

#[test]
fn a_failed_kek_unlock_is_sealed_by_the_next_command() {
    let s = alice();
    s.ok(&["keys", "generate", "--purpose", "userData"], b"");
    let mut wrong = s.cmd(&["keys", "rotate", "--purpose", "userData"]);
    wrong
        .env("KEK_PASSWORD", "not the password")
        .env("USER", "mallory");
    assert_fails(&run(wrong, b""), 1, "could not be unlocked");
    let notes = s.data().join("kek.json.failed-unlocks");
    assert!(notes.exists());
    let noted = std::fs::read_to_string(&notes).unwrap();
    assert!(!noted.contains("not the password"), "{noted}");
    // Reading the trail seals nothing; the next audited command does.
    assert_eq!(s.audit_export().len(), 2);
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    assert!(!notes.exists(), "notes sealed and removed");
    let records = s.audit_list(&[]);
    assert_eq!(ops(&records)[..2], ["keys.rotate", "kek.unlock"]);
    let failed = &records[1];
    assert_eq!(failed["actor"], "cli:mallory");
    assert_eq!(failed["result"], "kek_unlock_failed");
    assert_eq!(failed["detail"]["command"], "keys.rotate");
    assert_eq!(failed["detail"]["sealedLater"], true);
    assert!(verified(&s).contains("4 records"));
    // Without a user in the environment the actor is the uid.
    let mut anon = s.cmd(&["keys", "rotate", "--purpose", "userData"]);
    anon.env_remove("USER");
    common::ok(anon, b"");
    let actor = s.audit_list(&["--limit", "1"])[0]["actor"].clone();
    let uid = actor.as_str().unwrap().strip_prefix("cli:").unwrap();
    assert!(uid.parse::<u32>().is_ok(), "{actor}");
}

#[test]
fn an_unwritable_trail_fails_the_command_and_says_the_action_was_done() {
    let s = alice();
    s.ok(&["keys", "generate", "--purpose", "userData"], b"");
    sql(
        &s,
        &["CREATE TRIGGER no_audit BEFORE INSERT ON keyflow_audit BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"],
    );
    let out = s.run(&["keys", "rotate", "--purpose", "userData"], b"");
    assert_fails(
        &out,
        1,
        "keys.rotate was done, but its audit record could not be written",
    );
    // The rotation happened (and its output was printed).
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"newVersion\":2"));
    let keys: Value = s.json(&["keys", "list", "--json", "--purpose", "userData"], b"");
    assert_eq!(keys.as_array().unwrap().len(), 2);
    sql(&s, &["DROP TRIGGER no_audit"]);
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    assert!(verified(&s).contains("3 records"));
}

#[test]
fn reencrypt_and_migrate_record_their_census() {
    let s = alice();
    let app = s.path("app.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = SqliteConnectOptions::new()
            .filename(&app)
            .create_if_missing(true);
        let mut c = SqliteConnection::connect_with(&opts).await.unwrap();
        for q in [
            "CREATE TABLE users (id INTEGER PRIMARY KEY, ssn TEXT)",
            "INSERT INTO users VALUES (1, '123-45-6789'), (2, NULL), (3, '987-65-4321')",
        ] {
            sqlx::query(q).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    });
    let url = format!("sqlite:{}", app.display());
    let job = |verb: &str, extra: &[&str]| {
        let mut args = vec![verb, "--db", &url, "--table", "users", "--column", "ssn"];
        args.extend_from_slice(extra);
        s.ok(&args, b"");
    };
    job("migrate", &["--purpose", "ssn"]);
    s.ok(&["keys", "rotate", "--purpose", "ssn"], b"");
    job("reencrypt", &["--dry-run"]);
    job("reencrypt", &[]);

    let records = s.audit_list(&[]);
    assert_eq!(
        ops(&records)[..4],
        ["reencrypt", "reencrypt", "keys.rotate", "migrate"]
    );
    let migrate = &records[3];
    assert_eq!(migrate["purposes"], serde_json::json!(["ssn"]));
    assert_eq!(migrate["items"], 3);
    assert_eq!(migrate["detail"]["table"], "users");
    assert_eq!(migrate["detail"]["census"]["rewritten"], 2);
    assert_eq!(records[1]["detail"]["dryRun"], true);
    assert_eq!(records[0]["detail"]["dryRun"], false);
    assert_eq!(records[0]["detail"]["census"]["rewritten"], 2);
    let all = String::from_utf8(s.ok(&["audit", "export"], b"")).unwrap();
    assert!(
        !all.contains("123-45-6789") && !all.contains(&url),
        "no value, no URL"
    );
    assert!(verified(&s).contains("5 records"));
}

/// `keyflow audit checkpoint -o FILE`: the checkpoint of the head (0600).
fn take_checkpoint(s: &Sandbox, name: &str) -> (std::path::PathBuf, Value) {
    let path = s.path(name);
    let out = s.ok_str(&["audit", "checkpoint", "-o", path.to_str().unwrap()], b"");
    let cp: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        out,
        format!(
            "audit checkpoint of record {} written to {}",
            cp["seq"],
            path.display()
        )
    );
    (path, cp)
}

fn verify_with(s: &Sandbox, checkpoints: &[&std::path::Path]) -> std::process::Output {
    let mut args = vec!["audit", "verify"];
    for c in checkpoints {
        args.extend(["--checkpoint", c.to_str().unwrap()]);
    }
    s.run(&args, b"")
}

#[test]
fn a_checkpoint_proves_a_cut_tail_that_the_moved_head_hides() {
    use std::os::unix::fs::PermissionsExt;
    let s = alice();
    lifecycle(&s); // records 1..=9
    let (cp_path, cp) = take_checkpoint(&s, "cp.json");
    // The checkpoint's own record goes in first: the checkpoint covers it.
    assert_eq!(cp["seq"], 10);
    assert_eq!(cp["kind"], "checkpoint");
    let last = &s.audit_list(&["--limit", "1"])[0];
    assert_eq!(last["operation"], "audit.checkpoint");
    assert_eq!(last["seq"], 10);
    assert_eq!(last["mac"], cp["mac"]);
    assert_eq!(
        last["detail"]["file"],
        cp_path.display().to_string().as_str()
    );
    let mode = std::fs::metadata(&cp_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Refused over an existing file unless --force; stdout otherwise.
    assert_fails(
        &s.run(
            &["audit", "checkpoint", "-o", cp_path.to_str().unwrap()],
            b"",
        ),
        2,
        "exists",
    );
    let printed: Value = s.json(&["audit", "checkpoint"], b"");
    assert_eq!(printed["seq"], 11);

    for args in [
        &["keys", "generate", "--purpose", "cards"][..],
        &["keys", "rotate", "--purpose", "cards"],
    ] {
        s.ok(args, b"");
    }
    let ok = text(verify_with(&s, &[&cp_path]).stdout);
    assert_eq!(
        ok.lines().collect::<Vec<_>>()[1..],
        [format!(
            "checkpoint {}: record 10 matches",
            cp_path.display()
        )],
        "{ok}"
    );

    // The attacker cuts the tail after record 7 and moves the head row back onto it.
    sql(
        &s,
        &[
            "DELETE FROM keyflow_audit WHERE seq > 7",
            "UPDATE keyflow_audit_head SET seq = 7, \
             mac = (SELECT mac FROM keyflow_audit WHERE seq = 7) WHERE id = 1",
        ],
    );
    // The chain alone cannot tell (the documented limit)...
    assert!(verified(&s).starts_with("audit chain verified: 7 records"));
    // ...the checkpoint kept elsewhere can.
    let out = verify_with(&s, &[&cp_path]);
    assert_fails(&out, 1, "records after 7 were removed");
    assert_fails(
        &out,
        1,
        &format!(
            "vouches for record 10: records after 7 were removed (checkpoint {})",
            cp_path.display()
        ),
    );
}

#[test]
fn a_checkpoint_that_was_edited_forged_or_diverged_is_refused() {
    let s = alice();
    lifecycle(&s);
    let copy = s.path("before.db");
    sql(&s, &[&format!("VACUUM INTO '{}'", copy.display())]);
    let (cp_path, cp) = take_checkpoint(&s, "cp.json");
    let edit = |name: &str, key: &str, value: Value| {
        let mut c = cp.clone();
        c[key] = value;
        let p = s.path(name);
        std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
        p
    };
    for (name, key, value) in [
        ("seq.json", "seq", serde_json::json!(9)),
        ("mac.json", "mac", serde_json::json!("00".repeat(32))),
        ("time.json", "time", serde_json::json!(1)),
        ("kind.json", "kind", serde_json::json!("anchor")),
    ] {
        let p = edit(name, key, value);
        assert_fails(
            &verify_with(&s, &[&cp_path, &p]),
            1,
            &format!(
                "checkpoint {} refused: it does not verify: the checkpoint's tag does not verify under KEK",
                p.display()
            ),
        );
    }
    let other_kek = edit("kek.json", "kekId", serde_json::json!("0123456789abcdef"));
    assert_fails(
        &verify_with(&s, &[&other_kek]),
        1,
        "is signed under KEK 0123456789abcdef, whose key is not available here",
    );
    let junk = s.path("junk.json");
    std::fs::write(&junk, b"{\"seq\": 3}").unwrap();
    assert_fails(&verify_with(&s, &[&junk]), 1, "refused: not a checkpoint");
    assert_fails(
        &verify_with(&s, &[&s.path("missing.json")]),
        2,
        "cannot read",
    );
    // Another keystore's checkpoint (another KEK).
    let t = alice();
    let (theirs, _) = take_checkpoint(&t, "theirs.json");
    assert_fails(
        &verify_with(&s, &[&theirs]),
        1,
        "whose key is not available here",
    );

    // A keystore put back from a copy taken before the checkpoint, then written to
    // again: record 10 exists, but it is another one.
    s.ok(&["keys", "generate", "--purpose", "cards"], b"");
    let (later, _) = take_checkpoint(&s, "later.json"); // record 12
    assert!(text(verify_with(&s, &[&cp_path, &later]).stdout).contains("record 12 matches"));
    for name in ["keyflow.db-wal", "keyflow.db-shm"] {
        let _ = std::fs::remove_file(s.data().join(name));
    }
    std::fs::copy(&copy, s.data().join("keyflow.db")).unwrap();
    s.ok(&["keys", "generate", "--purpose", "other"], b""); // a different record 10
    assert!(verified(&s).contains("10 records"));
    assert_fails(
        &verify_with(&s, &[&cp_path]),
        1,
        "record 10 differs from the one the checkpoint vouches for: the chain was rewritten",
    );
    assert_fails(
        &verify_with(&s, &[&later]),
        1,
        "the chain ends at record 10 but the checkpoint vouches for record 12: records after 10 were removed",
    );
}

/// The time of record `seq` as an RFC 3339 cut: records before it are older.
fn cut_at(records: &[Value], seq: u64) -> String {
    let r = records.iter().find(|r| r["seq"] == seq).unwrap();
    keyflow_kms::clock::rfc3339(r["time"].as_i64().unwrap())
}

/// The last record of the leading run older than `cut` (what `prune` anchors at).
fn expected_anchor(records: &[Value], cut: &str) -> u64 {
    let cut = keyflow_kms::clock::parse_rfc3339(cut).unwrap();
    records
        .iter()
        .take_while(|r| r["time"].as_i64().unwrap() < cut)
        .last()
        .map_or(0, |r| r["seq"].as_u64().unwrap())
}

#[test]
fn prune_removes_old_records_and_the_rest_still_verifies() {
    let s = alice();
    lifecycle(&s); // records 1..=9
    let records = s.audit_export();
    let cut = cut_at(&records, 6);
    let anchor = expected_anchor(&records, &cut);
    assert!(anchor >= 4, "CLI commands take more than a millisecond");

    let dry: Value = s.json(&["audit", "prune", "--before", &cut, "--dry-run"], b"");
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["anchorSeq"], anchor);
    assert_eq!(dry["recordsRemoved"], anchor);
    assert_eq!(s.audit_export(), records, "a dry run changes nothing");

    let done: Value = s.json(&["audit", "prune", "--before", &cut], b"");
    assert_eq!(
        (&done["dryRun"], &done["anchorSeq"], &done["recordsRemoved"]),
        (
            &Value::Bool(false),
            &serde_json::json!(anchor),
            &serde_json::json!(anchor)
        )
    );
    let left = s.audit_export();
    assert_eq!(
        left[0]["seq"],
        anchor + 1,
        "records up to the anchor are gone"
    );
    assert_eq!(left[..left.len() - 1], records[anchor as usize..]);
    let pruned = left.last().unwrap();
    assert_eq!(pruned["operation"], "audit.prune");
    assert_eq!(pruned["seq"], 10);
    assert_eq!(pruned["items"], anchor);
    assert_eq!(pruned["detail"]["recordsRemoved"], anchor);
    assert_eq!(pruned["detail"]["anchorSeq"], anchor);
    assert_eq!(pruned["detail"]["before"], cut.as_str());
    assert_eq!(
        verified(&s),
        format!(
            "audit chain verified: {} records after the retention anchor at record {anchor}, head {}",
            10 - anchor,
            &pruned["mac"].as_str().unwrap()[..16]
        )
    );
    for r in s.audit_list(&[]) {
        assert!(r["seq"].as_u64().unwrap() > anchor, "{r}");
    }

    // Later records continue the sequence.
    s.ok(&["keys", "generate", "--purpose", "cards"], b"");
    assert_eq!(s.audit_list(&["--limit", "1"])[0]["seq"], 11);
    assert!(verified(&s).contains(&format!("{} records after", 11 - anchor)));

    // Nothing older than the cut is left: nothing to do, nothing recorded.
    let again: Value = s.json(&["audit", "prune", "--before", &cut], b"");
    assert_eq!(
        (&again["recordsRemoved"], &again["anchorSeq"]),
        (&serde_json::json!(0), &serde_json::json!(anchor))
    );
    let none: Value = s.json(&["audit", "prune", "--older-than-days", "1"], b"");
    assert_eq!(none["recordsRemoved"], 0);
    let mut by_env = s.cmd(&["audit", "prune"]);
    by_env.env("KEYFLOW_AUDIT_RETENTION_DAYS", "30");
    let by_env: Value = serde_json::from_slice(&common::ok(by_env, b"")).unwrap();
    assert_eq!(by_env["recordsRemoved"], 0);
    use keyflow_kms::clock::Clock;
    let days = |n: i64| keyflow_kms::clock::SystemClock.now_millis() - n * 86_400_000;
    let said = keyflow_kms::clock::parse_rfc3339(by_env["before"].as_str().unwrap()).unwrap();
    assert!((days(30) - said).abs() < 600_000, "{by_env}");
    assert_eq!(s.audit_export().len(), 11 - anchor as usize);

    // Arguments.
    assert_fails(&s.run(&["audit", "prune"], b""), 2, "--older-than-days");
    assert_fails(
        &s.run(
            &["audit", "prune", "--before", &cut, "--older-than-days", "3"],
            b"",
        ),
        2,
        "not both",
    );
    assert_fails(
        &s.run(&["audit", "prune", "--before", "last week"], b""),
        2,
        "RFC 3339",
    );
    let mut bad_env = s.cmd(&["audit", "prune"]);
    bad_env.env("KEYFLOW_AUDIT_RETENTION_DAYS", "forever");
    assert_fails(&run(bad_env, b""), 2, "KEYFLOW_AUDIT_RETENTION_DAYS");
    assert_eq!(
        s.run(&["audit", "prune", "--older-than-days", "0"], b"")
            .status
            .code(),
        Some(2)
    );

    // Everything up to the head; then a KEK rotation: the anchor, signed under the old
    // KEK, still verifies with its retired file.
    let all: Value = s.json(&["audit", "prune", "--before", "2999-01-01T00:00:00Z"], b"");
    assert_eq!(all["anchorSeq"], 11);
    assert_eq!(all["recordsRemoved"], 11 - anchor);
    assert!(verified(&s)
        .starts_with("audit chain verified: 1 records after the retention anchor at record 11"));
    s.ok(&["kek", "rotate", "--kdf-iterations", "100000"], b"");
    assert!(verified(&s)
        .starts_with("audit chain verified: 2 records after the retention anchor at record 11"));
}

#[test]
fn the_anchor_cannot_be_removed_replaced_or_forged() {
    let s = alice();
    lifecycle(&s); // records 1..=9
    let records = s.audit_export();
    let first_cut = cut_at(&records, 4);
    let first = expected_anchor(&records, &first_cut);
    s.ok(&["audit", "prune", "--before", &first_cut], b""); // records the prune as 10
    sql(
        &s,
        &["CREATE TABLE first_anchor AS SELECT * FROM keyflow_audit_anchor"],
    );
    s.ok(&["keys", "generate", "--purpose", "cards"], b""); // 11
    let second_cut = cut_at(&s.audit_export(), 10);
    s.ok(&["audit", "prune", "--before", &second_cut], b""); // 12
    assert!(verified(&s).contains("after the retention anchor at record 9"));
    sql(
        &s,
        &["CREATE TABLE saved AS SELECT * FROM keyflow_audit_anchor"],
    );
    let restore = [
        "DELETE FROM keyflow_audit_anchor",
        "INSERT INTO keyflow_audit_anchor SELECT * FROM saved",
    ];

    // The anchor row deleted: the chain seems to start at record 10.
    sql(&s, &["DELETE FROM keyflow_audit_anchor"]);
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "record 10: expected sequence number 1 (a record was removed, inserted or reordered) (records 1 to 9 are gone and no retention anchor is stored",
    );
    // `prune` and `checkpoint` refuse a chain that does not verify, and say so in it.
    assert_fails(
        &s.run(&["audit", "prune", "--before", "2999-01-01T00:00:00Z"], b""),
        1,
        "audit chain broken",
    );
    assert_fails(
        &s.run(&["audit", "checkpoint"], b""),
        1,
        "audit chain broken",
    );
    let refusals = s.audit_list(&["--limit", "2"]);
    assert_eq!(ops(&refusals), ["audit.checkpoint", "audit.prune"]);
    assert!(refusals.iter().all(|r| r["result"] == "failed"));
    sql(&s, &restore);
    assert!(verified(&s).contains("after the retention anchor at record 9"));

    // Replaced by the older anchor (a genuine one, kept from the first prune).
    sql(
        &s,
        &[
            "DELETE FROM keyflow_audit_anchor",
            "INSERT INTO keyflow_audit_anchor SELECT * FROM first_anchor",
        ],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        &format!(
            "expected sequence number {} (a record was removed, inserted or reordered) (the first record after the retention anchor at record {first} is missing",
            first + 1
        ),
    );
    sql(&s, &restore);

    // Edited: moved forward over more records.
    sql(&s, &["UPDATE keyflow_audit_anchor SET seq = 12"]);
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        "the retention anchor (record 12) does not verify: the checkpoint's tag does not verify",
    );
    assert_fails(
        &s.run(&["audit", "prune", "--before", "2999-01-01T00:00:00Z"], b""),
        1,
        "the retention anchor (record 12) does not verify",
    );
    let refused = &s.audit_list(&["--limit", "1"])[0];
    assert_eq!(
        (&refused["operation"], &refused["result"]),
        (&Value::from("audit.prune"), &Value::from("failed"))
    );
    sql(&s, &restore);

    // An operator checkpoint (signed, but handed out) made into the anchor, with every
    // record up to it deleted.
    let (_, cp) = take_checkpoint(&s, "cp.json");
    let n = cp["seq"].as_u64().unwrap();
    sql(
        &s,
        &[
            &format!(
                "UPDATE keyflow_audit_anchor SET kind = 'checkpoint', seq = {n}, mac = '{}', time = {}, tag = '{}'",
                cp["mac"].as_str().unwrap(),
                cp["time"],
                cp["tag"].as_str().unwrap()
            ),
            &format!("DELETE FROM keyflow_audit WHERE seq <= {n}"),
        ],
    );
    assert_fails(
        &s.run(&["audit", "verify"], b""),
        1,
        &format!("the retention anchor (record {n}) is an operator checkpoint, not an anchor written by `audit prune`"),
    );
}

/// `serve --dev` under concurrent encrypt requests, killed with SIGKILL mid-load: every
/// request that got a 2xx answer has its record (by `x-request-id`) in the trail, and
/// the chain still verifies.
#[test]
fn no_answered_request_is_missing_after_sigkill() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl not found (no_answered_request_is_missing_after_sigkill)");
        return;
    }
    let s = Sandbox::new().with_env("USER", "ops");
    let mut server = s
        .cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut token = None;
    let url = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(t) = line.strip_prefix("admin token (shown once; keep it): ") {
            token = Some(t.to_owned());
        }
        if let Some(u) = line.strip_prefix("KeyFlow listening on ") {
            break u.to_owned();
        }
    };
    let token = token.expect("admin token");
    // Keeps the pipe drained so the server never blocks on stdout.
    std::thread::spawn(move || lines.for_each(drop));

    const REQUESTS: usize = 200;
    const KILL_AFTER: usize = 100;
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    // Real processes on a shared 2-core machine: a generous bound, never a threshold.
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (sent, answered) = (sent.clone(), answered.clone());
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                while sent.fetch_add(1, Ordering::SeqCst) < REQUESTS && Instant::now() < deadline {
                    let out = Command::new("curl")
                        .args(["-sk", "--max-time", "20", "-o", "/dev/null", "-D", "-"])
                        .args(["-H", &format!("Authorization: Bearer {token}")])
                        .args(["-H", "Content-Type: application/json"])
                        .args(["-d", &format!(r#"{{"data":"w{w}","purpose":"userData"}}"#)])
                        .arg(format!("{url}/encrypt"))
                        .output()
                        .unwrap();
                    if let Some(id) = answered_id(&String::from_utf8_lossy(&out.stdout)) {
                        answered.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    while answered.lock().unwrap().len() < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "the server answered too few requests"
        );
        std::thread::sleep(Duration::from_millis(5)); // polls the workers' progress
    }
    server.kill().unwrap(); // SIGKILL, with requests in flight
    server.wait().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= KILL_AFTER, "{}", answered.len());

    let exported = s.audit_export();
    // The killed server's journal was recovered by the export, and the trail says so.
    assert!(
        exported
            .iter()
            .any(|r| r["operation"] == "audit.journal_recovered" && r["result"] == "ok"),
        "no journal recovery record"
    );
    let recorded: HashSet<String> = exported
        .iter()
        .filter_map(|r| r["requestId"].as_str().map(str::to_owned))
        .collect();
    eprintln!(
        "{} answered before or while SIGKILL hit, {} records with a request id",
        answered.len(),
        recorded.len()
    );
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no audit record: {missing:?}",
        missing.len(),
        answered.len()
    );
    assert!(verified(&s).starts_with("audit chain verified"));
}

/// The `x-request-id` of a 2xx answer, from curl's dumped headers.
fn answered_id(headers: &str) -> Option<String> {
    let mut lines = headers.lines();
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    if !(200..300).contains(&status) {
        return None;
    }
    lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-request-id")
            .then(|| value.trim().to_owned())
    })
}
