//! `keyflow scan --target-url`: data discovery over a generated application database
//! (free text, JSON, KeyFlow ciphertexts that must not count, near misses), `--table`,
//! bad URLs, the `scan.database` audit record, and a scan without a keystore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::str::FromStr;

use common::{assert_fails, Sandbox};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// Rows of `customers` besides the four hand-written ones.
const FILLER: i64 = 2500;

impl Sandbox {
    fn app_url(&self) -> String {
        format!("sqlite:{}", self.path("app.db").display())
    }

    /// The application's database. `ciphertext` is a KeyFlow ciphertext of a card
    /// number (stored in a column and inside a JSON document: neither may count).
    async fn app_db(&self, ciphertext: &str) {
        let opts = SqliteConnectOptions::from_str(&self.app_url())
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, notes TEXT, \
             profile JSON, card TEXT, age INTEGER)",
            "CREATE TABLE orders (order_no TEXT PRIMARY KEY, memo VARCHAR(200)) WITHOUT ROWID",
            "CREATE TABLE metrics (id INTEGER PRIMARY KEY, value REAL)",
            // KeyFlow's own (the re-encryption checkpoint): never scanned.
            "CREATE TABLE keyflow_reencrypt_checkpoint (state TEXT)",
        ] {
            sqlx::query(ddl).execute(&pool).await.unwrap();
        }
        let mut tx = pool.begin().await.unwrap();
        let rows: [(i64, &str, Option<String>, Option<String>); 4] = [
            (
                1,
                "paid with 4532 0151 1283 0366 yesterday",
                Some(r#"{"email": "ada@example.com", "phones": ["+1 415 555 2671"]}"#.into()),
                Some(ciphertext.into()),
            ),
            (
                2,
                "order #4532015112830366 shipped 2024-01-15, tracking 1Z999AA10123456784",
                Some(format!(
                    r#"{{"card": "{ciphertext}", "since": 1700000000123}}"#
                )),
                Some("4532015112830366".into()),
            ),
            (
                3,
                "ssn 123-45-6789; iban DE89 3704 0044 0532 0130 00",
                None,
                None,
            ),
            (
                4,
                "ts 1700000000123, uuid 123e4567-e89b-12d3-a456-426614174000, v1.2.3, 192.168.1.10",
                Some("[not json 4532-0151-1283-0367".into()),
                None,
            ),
        ];
        for (id, notes, profile, card) in rows {
            sqlx::query("INSERT INTO customers (id, name, notes, profile, card, age) VALUES (?1, 'n', ?2, ?3, ?4, 40)")
                .bind(id)
                .bind(notes)
                .bind(profile)
                .bind(card)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        // Near misses on every row; a clear card number on every 500th (five pages apart).
        for i in 10..10 + FILLER {
            let notes = if i % 500 == 0 {
                "card 4111 1111 1111 1111 used".to_owned()
            } else {
                format!(
                    "order ORD-{i} at {} from 10.0.{}.{}",
                    1_700_000_000_000 + i,
                    i % 250,
                    i % 200
                )
            };
            sqlx::query("INSERT INTO customers (id, name, notes) VALUES (?1, 'n', ?2)")
                .bind(i)
                .bind(notes)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        for i in 0..250 {
            let memo = match i {
                0 => "call (415) 555-2671",
                _ if i % 100 == 7 => "refund to 5555 5555 5555 4444",
                _ => "ok",
            };
            sqlx::query("INSERT INTO orders (order_no, memo) VALUES (?1, ?2)")
                .bind(format!("K{i:04}"))
                .bind(memo)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        pool.close().await;
    }

    fn scan(&self, extra: &[&str]) -> std::process::Output {
        let url = self.app_url();
        let mut args = vec!["scan", "--target-url", &url];
        args.extend_from_slice(extra);
        self.run(&args, b"")
    }
}

fn ciphertext(s: &Sandbox) -> String {
    String::from_utf8(s.ok(&["encrypt", "--purpose", "userData"], b"4532015112830366"))
        .unwrap()
        .trim()
        .to_owned()
}

fn finding(table: &str, column: &str, detector: &str, count: u64) -> Value {
    json!({"table": table, "column": column, "detector": detector, "count": count})
}

fn no_values(text: &str) {
    for value in ["4532", "4111", "5555", "ada@", "123-45", "DE89", "415"] {
        assert!(
            !text.contains(value),
            "a value ({value}…) was shown: {text}"
        );
    }
}

#[tokio::test]
async fn a_database_scan_counts_clear_values_and_is_audited() {
    let s = Sandbox::initialized();
    let ct = ciphertext(&s);
    s.app_db(&ct).await;

    let out = s.scan(&["--page-size", "100", "--format", "json"]);
    assert_fails(&out, 1, "found 15 sensitive value(s) in clear");
    let stdout = String::from_utf8(out.stdout).unwrap();
    no_values(&stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let expected = json!([
        finding("customers", "notes", "pan", 6),
        finding("customers", "notes", "ssn", 1),
        finding("customers", "notes", "iban", 1),
        finding("customers", "profile", "email", 1),
        finding("customers", "profile", "phone", 1),
        finding("customers", "card", "pan", 1),
        finding("orders", "memo", "pan", 3),
        finding("orders", "memo", "phone", 1),
    ]);
    let mut findings = report["findings"].as_array().unwrap().clone();
    let key = |v: &Value| format!("{}.{}.{}", v["table"], v["column"], v["detector"]);
    findings.sort_by_key(key);
    let mut want = expected.as_array().unwrap().clone();
    want.sort_by_key(key);
    assert_eq!(findings, want);
    assert_eq!(report["clearValues"], 15);
    let tables: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["customers", "metrics", "orders"],
        "keyflow_* is skipped"
    );
    let rows = 4 + FILLER as u64 + 250;
    assert_eq!(report["rows"], rows);
    assert_eq!(
        report["columns"], 6,
        "name, notes, profile, card; order_no, memo"
    );
    assert_eq!(
        report["encryptedValues"], 2,
        "the column and the JSON string"
    );
    assert_eq!(report["recorded"], true);

    // The audit record /compliance reads.
    let records = s.audit_list(&["--operation", "scan.database"]);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["operation"], "scan.database");
    assert_eq!(r["source"], "cli");
    assert!(r["actor"].as_str().unwrap().starts_with("cli:"), "{r}");
    assert_eq!(r["items"], rows);
    assert_eq!(r["result"], "ok");
    let detail = &r["detail"];
    assert_eq!(
        detail["scope"],
        json!({"backend": "sqlite", "tables": ["customers", "metrics", "orders"]})
    );
    assert_eq!(detail["rows"], rows);
    assert_eq!(detail["columns"], 6);
    assert_eq!(detail["clearValues"], report["clearValues"]);
    let mut recorded = detail["findings"].as_array().unwrap().clone();
    recorded.sort_by_key(key);
    assert_eq!(recorded, want);
    no_values(&r.to_string());
    s.ok(&["audit", "verify"], b"");

    // The human form: a table of counts, no value.
    let out = s.scan(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    no_values(&text);
    assert!(
        text.contains("customers.notes") && text.contains("pan"),
        "{text}"
    );
    assert!(text.contains("orders.memo"), "{text}");
    assert!(text.contains("(sqlite): 3 tables, 6 columns"), "{text}");
}

#[tokio::test]
async fn table_restriction_and_table_errors() {
    let s = Sandbox::initialized();
    let ct = ciphertext(&s);
    s.app_db(&ct).await;

    let out = s.scan(&["--table", "orders", "--format", "json"]);
    assert_fails(&out, 1, "found 4 sensitive value(s)");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 250);
    assert_eq!(
        report["findings"],
        json!([
            finding("orders", "memo", "pan", 3),
            finding("orders", "memo", "phone", 1)
        ])
    );
    let r = &s.audit_list(&["--operation", "scan.database"])[0];
    assert_eq!(r["detail"]["scope"]["tables"], json!(["orders"]));

    // A table without text columns is clean (exit 0).
    let out = s.scan(&["--table", "metrics"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Names are the catalog's; a missing or KeyFlow table is refused before anything.
    assert_fails(&s.scan(&["--table", "nope"]), 2, "table 'nope' not found");
    assert_fails(&s.scan(&["--table", "Orders"]), 2, "case-sensitive");
    assert_fails(
        &s.scan(&["--table", "keyflow_reencrypt_checkpoint"]),
        2,
        "KeyFlow's own",
    );
    assert_eq!(s.audit_list(&["--operation", "scan.database"]).len(), 2);
}

#[test]
fn bad_targets_are_clear_errors_and_never_show_a_password() {
    let s = Sandbox::initialized();
    let run = |url: &str| s.run(&["scan", "--target-url", url], b"");
    assert_fails(&run("mysql://app:pw@db/app"), 2, "unsupported target URL");
    assert_fails(&run("app.db"), 2, "unsupported target URL");
    let missing = format!("sqlite:{}", s.path("missing.db").display());
    assert_fails(&run(&missing), 1, "cannot open the target database");
    assert!(!s.path("missing.db").exists(), "never created");
    std::fs::write(s.path("junk.db"), vec![b'x'; 4096]).unwrap();
    let junk = format!("sqlite:{}", s.path("junk.db").display());
    assert_fails(&run(&junk), 1, "cannot open the target database");
    let out = run("postgres://app:s3cr3t-pw@127.0.0.1:1/app");
    assert_fails(&out, 1, "postgres://app:***@127.0.0.1:1/app");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t"));
    // Database options need a database (clap's usage errors: exit 2).
    let usage = |args: &[&str], needle: &str| {
        let out = s.run(args, b"{}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    };
    usage(&["scan", "--table", "t"], "--target-url");
    usage(
        &["scan", "--target-url", &missing, "--lines"],
        "cannot be used with",
    );
    usage(
        &["scan", "--target-url", &missing, "--page-size", "0"],
        "page-size",
    );
    // Refusals before the scan are not recorded.
    assert!(s.audit_list(&["--operation", "scan.database"]).is_empty());
}

#[tokio::test]
async fn without_a_keystore_the_scan_runs_and_says_it_was_not_recorded() {
    let s = Sandbox::new();
    s.app_db("not a ciphertext").await;
    let out = s.scan(&["--table", "metrics"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("keyflow: note: this scan was not recorded in the audit trail"),
        "{stderr}"
    );
    let out = s.scan(&["--table", "orders", "--format", "json"]);
    assert_fails(&out, 1, "not recorded in the audit trail");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recorded"], false);
    assert_eq!(report["clearValues"], 4);
    assert!(!s.data().exists(), "no keystore is created by a scan");
}

#[test]
fn the_stdin_scan_finds_values_inside_free_text() {
    let s = Sandbox::new();
    let doc = json!({"note": "paid with 4532 0151 1283 0366 yesterday", "ref": "order #100234 on 2024-01-15"});
    let out = s.run(&["scan"], doc.to_string().as_bytes());
    assert_fails(&out, 1, "found 1 sensitive value(s) in clear");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "note\tcardNumber\n");
}

/// The same scan against PostgreSQL (`TEST_DATABASE_URL`; skipped without it): the
/// record says `postgres`, the URL's password is nowhere in the output.
#[test]
fn a_postgres_database_is_scanned_and_recorded() {
    use keyflow_testkit::postgres::with_database;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(with_database(
        "a_postgres_database_is_scanned_and_recorded",
        |db, url| async move {
            let pool = sqlx::PgPool::connect_with(db.options()).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE tickets (id serial PRIMARY KEY, body text, meta jsonb);
                 INSERT INTO tickets (body, meta)
                   SELECT CASE WHEN i % 10 = 0 THEN 'card 4111 1111 1111 1111 declined'
                               ELSE 'ticket #' || i || ' opened 2024-01-15' END,
                          jsonb_build_object('from', CASE WHEN i = 3 THEN 'ada@example.com' ELSE 'n/a' END)
                   FROM generate_series(1, 95) AS i;",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            let s = Sandbox::initialized();
            let out = s.run(
                &["scan", "--target-url", &url, "--page-size", "10", "--format", "json"],
                b"",
            );
            assert_fails(&out, 1, "found 10 sensitive value(s)");
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["rows"], 95);
            assert_eq!(
                report["findings"],
                json!([
                    finding("tickets", "body", "pan", 9),
                    finding("tickets", "meta", "email", 1)
                ])
            );
            let password = url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.rsplit_once('@'))
                .and_then(|(userinfo, _)| userinfo.split_once(':'))
                .map(|(_, p)| p.to_owned());
            if let Some(p) = password.filter(|p| !p.is_empty()) {
                assert!(!String::from_utf8_lossy(&out.stdout).contains(&p));
                assert!(report["target"].as_str().unwrap().contains(":***@"));
            }
            let r = &s.audit_list(&["--operation", "scan.database"])[0];
            assert_eq!(r["detail"]["scope"], json!({"backend": "postgres", "tables": ["tickets"]}));
            assert_eq!(r["items"], 95);
        },
    ));
}
