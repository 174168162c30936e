//! `keyflow migrate` and `keyflow reencrypt` as an operator runs them, including a real
//! SIGKILL in the middle of a re-encryption and the rerun that finishes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Sandbox, PASSWORD};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::{Context, EncryptionService, Keystore, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

/// What these tests add to the shared sandbox: the application's SQLite database.
impl Sandbox {
    fn app_url(&self) -> String {
        format!("sqlite:{}", self.path("app.db").display())
    }

    /// `reencrypt`/`migrate` with the app database and `--json`; the parsed output.
    fn job(&self, verb: &str, extra: &[&str]) -> Value {
        let url = self.app_url();
        let mut args = vec![
            verb, "--db", &url, "--table", "users", "--column", "ssn", "--json",
        ];
        args.extend_from_slice(extra);
        self.json(&args, b"")
    }

    async fn app(&self) -> SqlitePool {
        let opts = SqliteConnectOptions::from_str(&self.app_url())
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap()
    }

    /// The application's table: `n` plaintext SSNs (row 3 is NULL).
    async fn plaintext_table(&self, n: i64) -> SqlitePool {
        let pool = self.app().await;
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for i in 1..=n {
            let ssn = (i != 3).then(|| ssn(i));
            sqlx::query("INSERT INTO users (id, name, ssn) VALUES (?1, ?2, ?3)")
                .bind(i)
                .bind(format!("user {i}"))
                .bind(ssn)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        pool
    }

    /// The sandbox's keystore, in process, to check what the CLI wrote.
    async fn service(&self) -> EncryptionService {
        let store: Arc<dyn Keystore> = Arc::new(
            SqliteKeystore::open(&self.data().join("keyflow.db"))
                .await
                .unwrap(),
        );
        let password = KekPassword::new(PASSWORD.into(), false).unwrap();
        let kek = kek_provider::unlock(&self.data().join("kek.json"), &password, &*store)
            .await
            .unwrap();
        EncryptionService::new(store, kek, ServiceConfig::default())
    }
}

fn ssn(i: i64) -> String {
    format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10000)
}

async fn rows(pool: &SqlitePool) -> Vec<(i64, Option<String>)> {
    sqlx::query_as("SELECT id, ssn FROM users ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Every row under `version` and decrypting to its original SSN.
async fn assert_rows(s: &Sandbox, pool: &SqlitePool, version: u32) {
    let service = s.service().await;
    for (id, v) in rows(pool).await {
        let Some(ct) = v else {
            assert_eq!(id, 3);
            continue;
        };
        assert_eq!(
            EncryptionService::summary(&ct).unwrap().key_version,
            version,
            "row {id}"
        );
        let pt = service.decrypt_raw(&ct, &Context::new()).await.unwrap();
        assert_eq!(pt.as_bytes(), ssn(id).as_bytes(), "row {id}");
    }
}

fn census(v: &Value) -> &Value {
    &v["census"]
}

#[tokio::test]
async fn migrate_rotate_reencrypt() {
    let s = Sandbox::initialized();
    let pool = s.plaintext_table(600).await;

    let dry = s.job("migrate", &["--purpose", "userData", "--dry-run"]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(census(&dry)["rewritten"], 599);
    assert_eq!(
        rows(&pool).await[0].1.as_deref(),
        Some(ssn(1).as_str()),
        "dry run wrote nothing"
    );

    let m = s.job("migrate", &["--purpose", "userData", "--batch", "100"]);
    assert_eq!(census(&m)["rewritten"], 599);
    assert_eq!(census(&m)["skipped"]["null"], 1);
    assert_eq!(census(&m)["byKeyVersion"]["userData:v1"], 599);
    assert_rows(&s, &pool, 1).await;
    let m2 = s.job("migrate", &["--purpose", "userData"]);
    assert_eq!(
        census(&m2)["rewritten"],
        0,
        "already-encrypted values are skipped"
    );
    assert_eq!(census(&m2)["unchanged"], 599);

    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    let before = rows(&pool).await;
    let dry = s.job("reencrypt", &["--dry-run"]);
    assert_eq!(census(&dry)["rewritten"], 599);
    assert_eq!(census(&dry)["byKeyVersion"]["userData:v2"], 599);
    assert_eq!(rows(&pool).await, before, "dry run wrote nothing");

    let r = s.job("reencrypt", &["--batch", "64"]);
    assert_eq!(census(&r)["rewritten"], 599);
    assert_eq!(census(&r)["byKeyVersion"]["userData:v2"], 599);
    assert_eq!(r["rowsNotUnderActiveVersion"], 0);
    assert_rows(&s, &pool, 2).await;

    let after = rows(&pool).await;
    let again = s.job("reencrypt", &[]);
    assert_eq!(census(&again)["rewritten"], 0);
    assert_eq!(census(&again)["unchanged"], 599);
    assert_eq!(rows(&pool).await, after, "second run is a no-op");

    // The human census, and the database URL from the environment (keeps passwords out of ps).
    let out = s
        .cmd(&["reencrypt", "--table", "users", "--column", "ssn"])
        .env("KEYFLOW_TARGET_URL", s.app_url())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("userData:v2") && text.contains("(active)"),
        "{text}"
    );
}

#[tokio::test]
async fn failed_rows_are_reported_without_values_and_exit_1() {
    let s = Sandbox::initialized();
    let pool = s.plaintext_table(20).await;
    s.job("migrate", &["--purpose", "userData"]);
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    sqlx::query("UPDATE users SET ssn = 'secret-plaintext-999' WHERE id = 5")
        .execute(&pool)
        .await
        .unwrap();
    let url = s.app_url();
    let out = s.run(
        &[
            "reencrypt",
            "--db",
            &url,
            "--table",
            "users",
            "--column",
            "ssn",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stdout.contains("secret-plaintext") && !stderr.contains("secret-plaintext"));
    assert!(
        stderr.starts_with("keyflow: error: 1 rows could not be processed"),
        "{stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(census(&v)["failed"]["not a KeyFlow ciphertext"], 1);
    assert_eq!(census(&v)["failedRows"][0]["id"], "5");
    assert_eq!(census(&v)["rewritten"], 18);
    let row5: String = sqlx::query_scalar("SELECT ssn FROM users WHERE id = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row5, "secret-plaintext-999", "left untouched");
}

#[test]
fn invalid_identifiers_and_urls_are_usage_errors() {
    let s = Sandbox::initialized();
    let url = s.app_url();
    for (table, column) in [
        ("users; DROP TABLE users", "ssn"),
        ("users", "ssn\" OR 1=1 --"),
        ("keyflow_reencrypt_checkpoint", "state"),
    ] {
        let out = s.run(
            &[
                "reencrypt",
                "--db",
                &url,
                "--table",
                table,
                "--column",
                column,
            ],
            b"",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("keyflow: error: invalid "), "{err}");
    }
    let out = s.run(
        &[
            "reencrypt",
            "--db",
            "mysql://x/y",
            "--table",
            "users",
            "--column",
            "ssn",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = s.run(
        &[
            "migrate", "--db", &url, "--table", "users", "--column", "ssn",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "--purpose is required");
}

/// A real `kill -9` of `keyflow reencrypt` once its checkpoint shows progress; the rerun
/// resumes from the checkpoint and every row ends correct.
#[tokio::test]
async fn sigkill_mid_run_then_rerun_finishes() {
    const N: i64 = 40_000;
    let s = Sandbox::initialized();
    let pool = s.plaintext_table(N).await;
    s.job("migrate", &["--purpose", "userData", "--batch", "5000"]);
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");

    let url = s.app_url();
    let mut child = s
        .cmd(&[
            "reencrypt",
            "--db",
            &url,
            "--table",
            "users",
            "--column",
            "ssn",
            "--batch",
            "50",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progressed = None;
    while Instant::now() < deadline {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM keyflow_reencrypt_checkpoint WHERE table_name = 'users'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
        if let Some(state) = state {
            let v: Value = serde_json::from_str(&state).unwrap();
            if v["lastId"].as_i64().unwrap() >= 1000 {
                progressed = Some(v["lastId"].as_i64().unwrap());
                break;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        // Paces the polling of a checkpoint that another process writes (120 s bound).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_seen = progressed.expect("checkpoint showed progress");
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running at the kill"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    let done = rows(&pool)
        .await
        .iter()
        .filter(|(_, v)| {
            v.as_deref()
                .is_some_and(|ct| EncryptionService::summary(ct).unwrap().key_version == 2)
        })
        .count() as i64;
    assert!(
        done >= last_seen - 1 && done < N - 1,
        "killed mid-run: {done} rows rewritten"
    );

    let r = s.job("reencrypt", &["--batch", "500"]);
    let resumed = r["resumedAfter"]
        .as_i64()
        .expect("resumed from the checkpoint");
    assert!(resumed >= last_seen);
    assert_eq!(census(&r)["rows"], N, "census covers the whole table");
    assert_eq!(census(&r)["rewritten"], N - 1);
    assert_eq!(census(&r)["failed"], serde_json::json!({}));
    assert_rows(&s, &pool, 2).await;
    let cps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keyflow_reencrypt_checkpoint")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cps, 0, "finished: checkpoint removed");
}
