//! The `keyflow` binary on PostgreSQL (`KEYFLOW_DATABASE_URL=postgres://…`): every
//! command, and two server instances sharing one database. Needs `TEST_DATABASE_URL`
//! (a database to connect to while creating a throwaway one); without it each test
//! prints `SKIPPED: TEST_DATABASE_URL not set` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const PASSWORD: &str = "correct horse battery staple";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A throwaway database `keyflow_test_<unique>`, dropped (connections and all) on drop.
struct TestDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl TestDb {
    fn create(test: &str) -> Option<Self> {
        let Some(base) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            // Straight to stderr, not `eprintln!`: the test harness captures the
            // latter, and a skipped database test should be visible.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: TEST_DATABASE_URL not set ({test} needs PostgreSQL)"
            );
            return None;
        };
        let admin = PgConnectOptions::from_str(&base).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("keyflow_test_cli_{}_{nanos}", std::process::id());
        block_on(async {
            let mut c = admin.connect().await.unwrap_or_else(|e| {
                panic!("TEST_DATABASE_URL is set but PostgreSQL is not reachable: {e}")
            });
            // Identifiers cannot be bound; the name is made here from digits.
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        });
        let (head, tail) = base.rsplit_once('/').unwrap();
        let query = tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        let url = format!("{head}/{name}{query}");
        Some(Self { admin, name, url })
    }

    fn scalar(&self, sql: &str) -> i64 {
        let opts = self.admin.clone().database(&self.name);
        block_on(async {
            let mut c = opts.connect().await.unwrap();
            let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            v
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = block_on(async {
            let mut c = self.admin.connect().await?;
            sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut c)
            .await?;
            c.close().await
        });
    }
}

/// One "instance": its own working and data directory (holding a copy of the KEK
/// file), the shared database.
struct Instance {
    dir: tempfile::TempDir,
    db_url: String,
}

impl Instance {
    fn new(db: &TestDb) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            db_url: db.url.clone(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyflow"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYFLOW_DATA_DIR", self.data())
            .env("KEYFLOW_DATABASE_URL", &self.db_url)
            .env("KEK_PASSWORD", PASSWORD);
        c
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Gives this instance the KEK file of `other` (every instance needs the same one).
    fn copy_kek_from(&self, other: &Instance) {
        std::fs::create_dir_all(self.data()).unwrap();
        std::fs::copy(other.data().join("kek.json"), self.data().join("kek.json")).unwrap();
    }
}

#[test]
fn every_command_works_against_postgres() {
    let Some(db) = TestDb::create("every_command_works_against_postgres") else {
        return;
    };
    let a = Instance::new(&db);
    let init = a.ok(&["init", "--kdf-iterations", "100000"], b"");
    assert!(init.starts_with("initialized: KEK "), "{init}");
    assert!(init.contains("keystore postgres://"), "{init}");
    assert!(init.contains(&db.name), "{init}");
    let again = a.ok(&["init", "--kdf-iterations", "100000"], b"");
    assert!(again.starts_with("already initialized"), "{again}");
    assert!(
        !a.data().join("keyflow.db").exists(),
        "nothing was written to SQLite"
    );

    let ct1 = a.ok(
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
    let rotated = a.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    assert!(rotated.contains('2'), "{rotated}");
    let ct2 = a.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--context",
            "recordId=r-2",
        ],
        b"987-65-4321",
    );
    let summary: Value = serde_json::from_str(&a.ok(&["inspect"], ct2.as_bytes())).unwrap();
    assert_eq!(summary["keyVersion"], 2, "{summary}");
    assert_eq!(
        a.ok(&["decrypt", "--context", "recordId=r-1"], ct1.as_bytes()),
        "123-45-6789",
        "the old version still decrypts"
    );
    assert_eq!(
        a.ok(&["decrypt", "--context", "recordId=r-2"], ct2.as_bytes()),
        "987-65-4321"
    );
    let list: Value =
        serde_json::from_str(&a.ok(&["keys", "list", "--purpose", "userData", "--json"], b""))
            .unwrap();
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
    a.ok(&["keys", "generate", "--purpose", "financialData"], b"");
    // The rows are in PostgreSQL.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM key_versions"), 3);

    // Tokens.
    let token = a.ok(
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
    let tokens: Value = serde_json::from_str(&a.ok(&["tokens", "list", "--json"], b"")).unwrap();
    assert_eq!(tokens[0]["id"], id);
    assert_eq!(tokens[0]["state"], "active");
    assert_eq!(
        a.ok(&["tokens", "revoke", id], b""),
        format!("revoked token {id}")
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL"),
        1
    );

    // A second instance with the same KEK file sees the same keys.
    let b = Instance::new(&db);
    b.copy_kek_from(&a);
    assert_eq!(
        b.ok(&["decrypt", "--context", "recordId=r-1"], ct1.as_bytes()),
        "123-45-6789"
    );
    // An instance with another KEK is refused: the keystore belongs to the first.
    let c = Instance::new(&db);
    let out = c.run(&["init", "--kdf-iterations", "100000"], b"");
    assert!(
        !out.status.success(),
        "a second KEK for the same database is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    // No PostgreSQL needed: nothing listens on port 1.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["keys", "list"])
        .current_dir(dir.path())
        .env_clear()
        .env("KEYFLOW_DATA_DIR", dir.path().join("data"))
        .env(
            "KEYFLOW_DATABASE_URL",
            "postgres://kf:hunter2-secret@127.0.0.1:1/keys",
        )
        .env("KEK_PASSWORD", PASSWORD)
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
fn serve(i: &Instance) -> (Child, String) {
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
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn two_servers_share_one_database() {
    let Some(db) = TestDb::create("two_servers_share_one_database") else {
        return;
    };
    if curl(&["--version"]).is_none() {
        eprintln!("SKIPPED: curl not found (two_servers_share_one_database)");
        return;
    }
    let a = Instance::new(&db);
    a.ok(&["init", "--kdf-iterations", "100000"], b"");
    let admin = a.ok(
        &["tokens", "create", "--role", "admin", "--name", "ops"],
        b"",
    );
    let b = Instance::new(&db);
    b.copy_kek_from(&a);
    let (server_a, url_a) = serve(&a);
    let (server_b, url_b) = serve(&b);
    let auth = format!("Authorization: Bearer {admin}");
    let post = |url: &str, path: &str, body: &str| {
        curl(&["-H", &auth, "-d", body, &format!("{url}{path}")]).unwrap()
    };
    let version_of = |ct: &str| -> u64 {
        let s: Value = serde_json::from_str(&a.ok(&["inspect"], ct.as_bytes())).unwrap();
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
    // B rotates; A (whose cache holds version 1) encrypts under version 2 within a
    // second: revalidation on NOTIFY (or the next poll).
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
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "instance A never saw B's rotation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rotated_at.elapsed() < Duration::from_secs(2),
        "seen within a second or so: {:?}",
        rotated_at.elapsed()
    );
    stop(server_a);
    stop(server_b);
}
