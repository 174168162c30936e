//! The `keyflow` binary on PostgreSQL (`KEYFLOW_DATABASE_URL=postgres://…`): every
//! command, and two server instances sharing one database. Needs `TEST_DATABASE_URL`
//! (a database to connect to while creating a throwaway one); without it each test
//! prints `SKIPPED: TEST_DATABASE_URL not set` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, PASSWORD};
use keyflow_testkit::postgres::{with_database, TestDb};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

/// Runs `body` against a throwaway database (`test_support::with_database`: dropped
/// afterwards; a visible SKIPPED notice without `TEST_DATABASE_URL`).
fn with_db<Fut>(test: &str, body: impl FnOnce(TestDb, String) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(with_database(test, body));
}

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    let mut c = PgConnection::connect_with(&db.options()).await.unwrap();
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
    c.close().await.unwrap();
    v
}

/// One "instance": its own working and data directory (holding a copy of the KEK
/// file), the shared database at `db_url`.
fn instance(db_url: &str) -> Sandbox {
    Sandbox::new().with_env("KEYFLOW_DATABASE_URL", db_url)
}

impl Sandbox {
    /// Gives this instance the KEK file of `other` (every instance needs the same one).
    fn copy_kek_from(&self, other: &Sandbox) {
        std::fs::create_dir_all(self.data()).unwrap();
        std::fs::copy(other.data().join("kek.json"), self.data().join("kek.json")).unwrap();
    }
}

#[test]
fn every_command_works_against_postgres() {
    with_db(
        "every_command_works_against_postgres",
        |db, url| async move {
            let a = instance(&url);
            let init = a.ok_str(&["init", "--kdf-iterations", "100000"], b"");
            assert!(init.starts_with("initialized: KEK "), "{init}");
            assert!(init.contains("keystore postgres://"), "{init}");
            assert!(init.contains(&db.name), "{init}");
            let again = a.ok_str(&["init", "--kdf-iterations", "100000"], b"");
            assert!(again.starts_with("already initialized"), "{again}");
            assert!(
                !a.data().join("keyflow.db").exists(),
                "nothing was written to SQLite"
            );

            let ct1 = a.ok_str(
                &[
                    "encrypt",
                    "--purpose",
                    "userData",
                    "--context",
                    "recordId=r-1",
                ],
                b"123-45-6789",
            );
            assert!(ct1.starts_with("kf1:"), "{ct1}");
            let rotated = a.ok_str(&["keys", "rotate", "--purpose", "userData"], b"");
            assert!(rotated.contains('2'), "{rotated}");
            let ct2 = a.ok_str(
                &[
                    "encrypt",
                    "--purpose",
                    "userData",
                    "--context",
                    "recordId=r-2",
                ],
                b"987-65-4321",
            );
            let summary: Value = a.json(&["inspect"], ct2.as_bytes());
            assert_eq!(summary["keyVersion"], 2, "{summary}");
            assert_eq!(
                a.ok_str(&["decrypt", "--context", "recordId=r-1"], ct1.as_bytes()),
                "123-45-6789",
                "the old version still decrypts"
            );
            assert_eq!(
                a.ok_str(&["decrypt", "--context", "recordId=r-2"], ct2.as_bytes()),
                "987-65-4321"
            );
            let list = a.json(&["keys", "list", "--purpose", "userData", "--json"], b"");
            let states: Vec<(u64, String)> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    (
                        k["version"].as_u64().unwrap(),
                        k["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(
                states,
                vec![(1, "rotating".into()), (2, "active".into())],
                "{list}"
            );
            a.ok_str(&["keys", "generate", "--purpose", "financialData"], b"");
            // The rows are in PostgreSQL.
            assert_eq!(scalar(&db, "SELECT COUNT(*) FROM key_versions").await, 3);

            // Tokens.
            let token = a.ok_str(
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
            assert!(token.starts_with("kft_"), "{token}");
            let id = &token[4..20];
            let tokens: Value = a.json(&["tokens", "list", "--json"], b"");
            assert_eq!(tokens[0]["id"], id);
            assert_eq!(tokens[0]["state"], "active");
            assert_eq!(
                a.ok_str(&["tokens", "revoke", id], b""),
                format!("revoked token {id}")
            );
            assert_eq!(
                scalar(
                    &db,
                    "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL"
                )
                .await,
                1
            );

            // A second instance with the same KEK file sees the same keys.
            let b = instance(&url);
            b.copy_kek_from(&a);
            assert_eq!(
                b.ok_str(&["decrypt", "--context", "recordId=r-1"], ct1.as_bytes()),
                "123-45-6789"
            );
            // An instance with another KEK is refused: the keystore belongs to the first.
            let c = instance(&url);
            let out = c.run(&["init", "--kdf-iterations", "100000"], b"");
            assert!(
                !out.status.success(),
                "a second KEK for the same database is refused"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains(PASSWORD), "{err}");

            // The CLI's actions are in the database's one audit chain, which any
            // instance holding the KEK verifies.
            let trail = a.audit_list(&[]);
            let ops: Vec<&str> = trail
                .iter()
                .map(|r| r["operation"].as_str().unwrap())
                .collect();
            assert_eq!(
                ops,
                [
                    "tokens.revoke",
                    "tokens.create",
                    "keys.generate",
                    "keys.rotate",
                    "init",
                    "init"
                ]
            );
            assert_eq!(scalar(&db, "SELECT COUNT(*) FROM keyflow_audit").await, 6);
            let verified = b.ok_str(&["audit", "verify"], b"");
            assert!(
                verified.starts_with("audit chain verified: 6 records"),
                "{verified}"
            );
        },
    );
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    // No PostgreSQL needed: nothing listens on port 1.
    let out = instance("postgres://kf:hunter2-secret@127.0.0.1:1/keys")
        .cmd(&["keys", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("keyflow: error: "), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password never appears: {err}"
    );
}

/// Starts `serve` (plain HTTP on an ephemeral port); returns the child and its base URL.
fn serve(i: &Sandbox) -> (Child, String) {
    let mut child = i
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(u) = line.strip_prefix("KeyFlow listening on ") {
            break u.to_owned();
        }
    };
    (child, url)
}

fn curl(args: &[&str]) -> Option<String> {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50)); // waits for the server process to exit
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn two_servers_share_one_database() {
    with_db("two_servers_share_one_database", |_db, url| async move {
        if curl(&["--version"]).is_none() {
            eprintln!("SKIPPED: curl not found (two_servers_share_one_database)");
            return;
        }
        let a = instance(&url);
        a.ok_str(&["init", "--kdf-iterations", "100000"], b"");
        let admin = a.ok_str(
            &["tokens", "create", "--role", "admin", "--name", "ops"],
            b"",
        );
        let b = instance(&url);
        b.copy_kek_from(&a);
        let (server_a, url_a) = serve(&a);
        let (server_b, url_b) = serve(&b);
        let auth = format!("Authorization: Bearer {admin}");
        let post = |url: &str, path: &str, body: &str| {
            curl(&[
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("{url}{path}"),
            ])
            .unwrap()
        };
        let version_of = |ct: &str| -> u64 {
            let s: Value = a.json(&["inspect"], ct.as_bytes());
            s["keyVersion"].as_u64().unwrap()
        };
        let enc: Value = serde_json::from_str(&post(
            &url_a,
            "/encrypt",
            r#"{"data":"4532123456789012","purpose":"financialData"}"#,
        ))
        .unwrap();
        let ct = enc["encryptedData"].as_str().unwrap().to_owned();
        assert_eq!(version_of(&ct), 1);
        // Instance B decrypts what A encrypted.
        let dec: Value = serde_json::from_str(&post(
            &url_b,
            "/decrypt",
            &format!(r#"{{"encryptedData":"{ct}"}}"#),
        ))
        .unwrap();
        assert_eq!(dec["data"], "4532123456789012", "{dec}");
        // B rotates; A (whose cache holds version 1) encrypts under version 2 after its
        // revalidation on NOTIFY (or the next 250 ms poll).
        let rot = post(&url_b, "/keys/rotate", r#"{"purpose":"financialData"}"#);
        assert!(rot.contains("\"newVersion\":2"), "{rot}");
        let rotated_at = Instant::now();
        loop {
            let enc: Value = serde_json::from_str(&post(
                &url_a,
                "/encrypt",
                r#"{"data":1,"purpose":"financialData"}"#,
            ))
            .unwrap();
            if version_of(enc["encryptedData"].as_str().unwrap()) == 2 {
                break;
            }
            // Two real server processes and PostgreSQL: a generous bound, so a loaded
            // machine cannot fail the test; the 50 ms pause only paces the polling.
            assert!(
                rotated_at.elapsed() < Duration::from_secs(10),
                "instance A never saw B's rotation"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(server_a);
        stop(server_b);
    });
}
