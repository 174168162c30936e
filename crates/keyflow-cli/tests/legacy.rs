//! `keyflow legacy import | convert` as an operator runs them, on the generated vectors
//! of both legacy builds (copied into `keyflow-legacy/tests/vectors/`): iteration count
//! found without being told, census, idempotence, audit record, per-line conversion
//! errors, field documents that `keyflow fields decrypt` reads, and a wrong password
//! that leaves the keystore untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::path::PathBuf;

use common::{assert_fails, json_lines, Sandbox};
use serde_json::Value;

const KEK_PW_210K: &str = "legacy-dev210k-kek-password-with-enough-length-0001";
const BACKUP_PW_210K: &str = "legacy-dev210k-backup-password";

fn vectors(name: &str, file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../keyflow-legacy/tests/vectors")
        .join(name)
        .join(file)
        .display()
        .to_string()
}

fn sandbox() -> Sandbox {
    let s = Sandbox::new()
        .with_env("LEGACY_KEK_PASSWORD", KEK_PW_210K)
        .with_env("LEGACY_BACKUP_PASSWORD", BACKUP_PW_210K);
    s.init();
    s
}

fn import(s: &Sandbox, extra: &[&str]) -> Value {
    let kek = vectors("vectors-210k", "master.kek");
    let keys = vectors("vectors-210k", "encryptionkeys.jsonl");
    let mut args = vec![
        "legacy",
        "import",
        "--kek-file",
        &kek,
        "--keys",
        &keys,
        "--json",
    ];
    args.extend_from_slice(extra);
    s.json(&args, b"")
}

/// Proves the keystore holds no legacy key yet: a real import then imports all six.
fn imports_all_six(s: &Sandbox) {
    let c = import(s, &[]);
    assert_eq!(
        (c["imported"].as_u64(), c["alreadyPresent"].as_u64()),
        (Some(6), Some(0)),
        "{c}"
    );
}

#[test]
fn import_is_idempotent_audited_and_finds_the_iteration_count() {
    let s = sandbox();
    let backup = vectors("vectors-210k", "backup-v2.txt");
    let dry = import(&s, &["--dry-run"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["imported"], 6);

    let first = import(&s, &["--backup", &backup]);
    assert_eq!(first["kekIterations"], 210_000);
    assert_eq!(first["backup"]["format"], "2.0");
    // Imported now, so the dry run before wrote nothing.
    assert_eq!(
        (first["found"].as_u64(), first["imported"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(first["newActive"].as_array().unwrap().len(), 3);

    let second = import(&s, &[]);
    assert_eq!(
        (
            second["imported"].as_u64(),
            second["alreadyPresent"].as_u64()
        ),
        (Some(0), Some(6))
    );
    assert!(second["newActive"].as_array().unwrap().is_empty());

    let ops: Vec<String> = s
        .audit_export()
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| *o == "legacy.import").count(),
        2,
        "{ops:?}"
    );
    // The human census names the count and never prints key material.
    let kek = vectors("vectors-210k", "master.kek");
    let keys = vectors("vectors-210k", "encryptionkeys.jsonl");
    let out = s.ok_str(
        &["legacy", "import", "--kek-file", &kek, "--keys", &keys],
        b"",
    );
    assert!(
        out.contains("opened with PBKDF2 210000 iterations"),
        "{out}"
    );
    assert!(out.contains("already present: 6"), "{out}");
    for line in std::fs::read_to_string(&keys).unwrap().lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        assert!(!out.contains(doc["encryptedKey"].as_str().unwrap()));
    }
}

#[test]
fn wrong_password_changes_nothing() {
    let s = Sandbox::new().with_env(
        "LEGACY_KEK_PASSWORD",
        "not-the-password-of-this-kek-file-000",
    );
    s.init();
    let kek = vectors("vectors-210k", "master.kek");
    let keys = vectors("vectors-210k", "encryptionkeys.jsonl");
    let out = s.run(
        &["legacy", "import", "--kek-file", &kek, "--keys", &keys],
        b"",
    );
    assert_fails(
        &out,
        1,
        "does not open with this password at 100000 or 210000 PBKDF2 iterations",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-password"));
    let out = s.run(
        &[
            "legacy",
            "import",
            "--kek-file",
            &kek,
            "--keys",
            &keys,
            "--iterations",
            "0",
        ],
        b"",
    );
    assert_fails(&out, 2, "--iterations must be 1..=10000000");
    let s = s.with_env("LEGACY_KEK_PASSWORD", KEK_PW_210K);
    imports_all_six(&s);
    // Given the wrong count explicitly, the right password fails the same way.
    let s2 = sandbox();
    let out = s2.run(
        &[
            "legacy",
            "import",
            "--kek-file",
            &kek,
            "--keys",
            &keys,
            "--iterations",
            "100000",
        ],
        b"",
    );
    assert_fails(&out, 1, "at 100000 PBKDF2 iterations");
    imports_all_six(&s2);
}

#[test]
fn convert_packages_by_line_with_errors_counted() {
    let s = sandbox();
    import(&s, &[]);
    let packages: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(vectors("vectors-210k", "packages.json")).unwrap(),
    )
    .unwrap();
    let mut input: Vec<String> = packages
        .iter()
        .map(|p| p["encryptedData"].as_str().unwrap().to_owned())
        .collect();
    input.push("bm90IGEgcGFja2FnZQ==".into()); // base64 of "not a package"
    let stdin = input.join("\n");
    let out = s.run(
        &["legacy", "convert", "--lines", "--json"],
        stdin.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 1);
    assert_eq!(
        report["converted"].as_u64().unwrap() as usize,
        packages.len()
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(
        results.last().unwrap()["line"].as_u64().unwrap() as usize,
        input.len()
    );
    for (p, r) in packages.iter().zip(results) {
        let ct = r["data"].as_str().unwrap();
        let back = s.ok(&["decrypt"], ct.as_bytes());
        assert_eq!(
            String::from_utf8(back).unwrap(),
            p["expectedPlaintext"].as_str().unwrap()
        );
    }
    // Plain output: one ciphertext per input line, the failed line empty.
    let out = s.run(&["legacy", "convert", "--lines"], stdin.as_bytes());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), input.len());
    assert!(lines[..packages.len()]
        .iter()
        .all(|l| l.starts_with("kf1:")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line {}: malformed package", input.len())),
        "{err}"
    );
}

#[test]
fn converted_field_documents_read_with_fields_decrypt() {
    let s = sandbox();
    import(&s, &[]);
    let docs: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(vectors("vectors-210k", "field-documents.json")).unwrap(),
    )
    .unwrap();
    let stdin: String = docs
        .iter()
        .map(|d| format!("{}\n", d["document"]))
        .collect();
    let converted = s.ok(
        &[
            "legacy",
            "convert",
            "--fields",
            "--lines",
            "--id-field",
            "_id",
        ],
        stdin.as_bytes(),
    );
    let plain = json_lines(&s.ok(
        &["fields", "decrypt", "--lines", "--id-field", "_id"],
        &converted,
    ));
    assert_eq!(plain.len(), docs.len());
    for (d, p) in docs.iter().zip(&plain) {
        assert!(p.get("_encrypted").is_none());
        for (field, want) in d["expected"].as_object().unwrap() {
            assert_eq!(&p[field], want);
        }
    }
}

#[test]
fn reencrypt_from_legacy_converts_a_column_and_is_audited() {
    use sqlx::{Connection, Row};
    let s = sandbox();
    import(&s, &[]);
    let packages: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(vectors("vectors-210k", "packages.json")).unwrap(),
    )
    .unwrap();
    let url = format!("sqlite:{}", s.path("app.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = || {
        url.parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true)
    };
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect_with(&opts()).await.unwrap();
        sqlx::query("CREATE TABLE pay (id INTEGER PRIMARY KEY, data TEXT)")
            .execute(&mut c)
            .await
            .unwrap();
        for (i, p) in packages.iter().enumerate() {
            sqlx::query("INSERT INTO pay VALUES (?1, ?2)")
                .bind(i as i64 + 1)
                .bind(p["encryptedData"].as_str().unwrap())
                .execute(&mut c)
                .await
                .unwrap();
        }
    });
    let args = [
        "reencrypt",
        "--from-legacy",
        "--db",
        &url,
        "--table",
        "pay",
        "--column",
        "data",
        "--json",
    ];
    let census = s.json(&args, b"");
    assert_eq!(
        census["census"]["rewritten"].as_u64().unwrap() as usize,
        packages.len(),
        "{census}"
    );
    assert_eq!(
        s.json(&args, b"")["census"]["rewritten"],
        0,
        "a second run converts nothing"
    );
    let stored: Vec<String> = rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect_with(&opts()).await.unwrap();
        let rows = sqlx::query("SELECT data FROM pay ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<String, _>("data")).collect()
    });
    for (p, ct) in packages.iter().zip(&stored) {
        let back = String::from_utf8(s.ok(&["decrypt"], ct.as_bytes())).unwrap();
        assert_eq!(back, p["expectedPlaintext"].as_str().unwrap());
    }
    let ops: Vec<String> = s
        .audit_export()
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| *o == "reencrypt.from-legacy").count(),
        2,
        "{ops:?}"
    );
}
