//! Trust boundaries (issue 15) as the operator meets them: one production resolver for
//! every rule, the dev certificate made once when two dev servers start together, and
//! retired KEK files removed for good.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{assert_fails, run, Sandbox, PASSWORD};

/// `KEYFLOW_ENV=Production` (any case, either name) turns on the CLI's production rules
/// exactly as it turns on the transport's: `--dev` refused, the TLS requirement, the
/// 32-character KEK password.
#[test]
fn production_in_any_case_applies_every_rule() {
    let s = Sandbox::new();
    s.init();
    for (var, value) in [("KEYFLOW_ENV", "Production"), ("NODE_ENV", "PRODUCTION")] {
        let mut dev = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
        dev.env(var, value)
            .env("KEK_PASSWORD", "x".repeat(40))
            .env("REQUEST_INTEGRITY_SECRET", "s".repeat(40));
        assert_fails(&run(dev, b""), 2, "--dev is refused in production");
        let mut no_cert = s.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        no_cert
            .env(var, value)
            .env("KEK_PASSWORD", "x".repeat(40))
            .env("REQUEST_INTEGRITY_SECRET", "s".repeat(40));
        assert_fails(&run(no_cert, b""), 2, "KEYFLOW_TLS_CERT");
        // The sandbox's password has 28 characters: fine in development, not here.
        assert!(PASSWORD.len() < 32);
        let mut weak = s.cmd(&["keys", "list"]);
        weak.env(var, value);
        assert_fails(&run(weak, b""), 1, "at least 32 characters");
    }
    // The same password works outside production (the control case).
    let mut dev_list = s.cmd(&["keys", "list"]);
    dev_list.env("KEYFLOW_ENV", "Development");
    assert!(run(dev_list, b"").status.success());
}

/// `NODE_ENV=production` with `KEYFLOW_ENV=development` used to mean production to the
/// CLI and development to the transport (every `/keys*` route then answered 503).
/// Conflicting values now refuse to start, whatever the command.
#[test]
fn conflicting_environment_values_refuse_to_start() {
    let s = Sandbox::new();
    s.init();
    for args in [
        &["keys", "list"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let mut c = s.cmd(args);
        c.env("NODE_ENV", "production")
            .env("KEYFLOW_ENV", "development");
        assert_fails(&run(c, b""), 2, "disagrees with KEYFLOW_ENV");
    }
    let mut unknown = s.cmd(&["keys", "list"]);
    unknown.env("KEYFLOW_ENV", "prod");
    assert_fails(&run(unknown, b""), 2, "KEYFLOW_ENV: expected production");
}

/// After `kek rotate`, the retired KEK file still unlocks every dump of the keystore
/// taken before (same password). `kek retire --yes` removes it once nothing needs it
/// — not while audit records sealed under it remain — and the old dump is then shut.
#[test]
fn retired_kek_files_are_removed_for_good_once_nothing_needs_them() {
    let s = Sandbox::new();
    s.init();
    let ct = s.ok_str(
        &["encrypt", "--purpose", "userData"],
        b"before the rotation",
    );
    // A dump of the keystore as it was (a replica, a database backup).
    let dump = s.path("old-dump.db");
    std::fs::copy(s.data().join("keyflow.db"), &dump).unwrap();
    // With the write-ahead log: the last commits may not be checkpointed into the main
    // file yet (the dump must hold the key that encrypted `ct`).
    let wal = s.data().join("keyflow.db-wal");
    if wal.exists() {
        std::fs::copy(&wal, s.path("old-dump.db-wal")).unwrap();
    }
    let rotated = s.ok_str(&["kek", "rotate", "--kdf-iterations", "100000"], b"");
    assert!(rotated.contains("old KEK file kept as"), "{rotated}");
    let retired: Vec<_> = std::fs::read_dir(s.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".retired-"))
        .collect();
    assert_eq!(retired.len(), 1, "{retired:?}");
    let retired = retired[0].clone();
    let open_dump = || {
        let mut c = s.cmd(&["decrypt"]);
        c.env("KEK_PATH", &retired)
            .env("KEYFLOW_DATABASE_URL", format!("sqlite:{}", dump.display()));
        run(c, ct.as_bytes())
    };
    // The attack: the old file and the same password open the old dump.
    let out = open_dump();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"before the rotation");

    // Audit records sealed under the old KEK still need it: kept.
    let plan = s.ok_str(&["kek", "retire"], b"");
    assert!(
        plan.contains("keep ") && plan.contains("audit record(s)"),
        "{plan}"
    );
    let kept = s.ok_str(&["kek", "retire", "--yes"], b"");
    assert!(kept.contains("0 old KEK file(s) removed, 1 kept"), "{kept}");
    assert!(retired.exists());
    // Once the trail is pruned past them, nothing needs the file.
    let cut = "2999-01-01T00:00:00Z";
    s.ok(&["audit", "prune", "--before", cut], b"");
    let plan = s.ok_str(&["kek", "retire"], b"");
    assert!(plan.contains("would remove"), "{plan}");
    let done = s.ok_str(&["kek", "retire", "--yes"], b"");
    assert!(done.contains("1 old KEK file(s) removed"), "{done}");
    assert!(!retired.exists());
    let out = open_dump();
    assert_eq!(out.status.code(), Some(1), "the old dump no longer opens");
    // The current keystore is untouched: the ciphertext still decrypts with the new KEK.
    assert_eq!(s.ok(&["decrypt"], ct.as_bytes()), b"before the rotation");
    // And the retirement is in the trail.
    let trail = s.audit_export();
    assert!(trail
        .iter()
        .any(|r| r["operation"] == "kek.retire" && r["items"] == 1));
}

/// Production refuses a PostgreSQL keystore over a link an attacker on the network
/// could downgrade (`sslmode=prefer`, the default) or intercept (`require`), before
/// connecting; `verify-full` passes the check, and a Unix socket only with the explicit
/// opt-out. (No server is needed: the refusal comes first.)
#[test]
fn production_needs_a_verified_postgres_link() {
    let s = Sandbox::new();
    let strong = "x".repeat(40);
    let attempt = |url: &str, socket_ok: bool| {
        let mut c = s.cmd(&["keys", "list"]);
        c.env("KEYFLOW_ENV", "production")
            .env("KEK_PASSWORD", &strong)
            .env("KEYFLOW_DATABASE_URL", url);
        if socket_ok {
            c.env("KEYFLOW_DATABASE_UNVERIFIED_SOCKET", "true");
        }
        run(c, b"")
    };
    for url in [
        "postgres://kf:pw@127.0.0.1:9/keys",
        "postgres://kf:pw@127.0.0.1:9/keys?sslmode=prefer",
        "postgres://kf:pw@127.0.0.1:9/keys?sslmode=require",
        "postgres://kf:pw@127.0.0.1:9/keys?sslmode=verify-ca",
    ] {
        assert_fails(&attempt(url, false), 2, "sslmode=verify-full");
    }
    let socket = "postgres://kf@localhost/keys?host=/nonexistent-socket-dir";
    assert_fails(
        &attempt(socket, false),
        2,
        "KEYFLOW_DATABASE_UNVERIFIED_SOCKET",
    );
    // Past the check (then the connection fails: nothing listens there).
    for (url, socket_ok) in [
        (
            "postgres://kf:pw@127.0.0.1:9/keys?sslmode=verify-full",
            false,
        ),
        (socket, true),
    ] {
        let out = attempt(url, socket_ok);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            !err.contains("sslmode=verify-full") && err.contains("cannot connect"),
            "{err}"
        );
    }
    // Development is unchanged.
    let mut dev = s.cmd(&["keys", "list"]);
    dev.env("KEYFLOW_DATABASE_URL", "postgres://kf:pw@127.0.0.1:9/keys");
    let err = String::from_utf8_lossy(&run(dev, b"").stderr).into_owned();
    assert!(err.contains("cannot connect"), "{err}");
}

/// A running server meets a token row written into its database by someone without the
/// KEK: the token is refused (401), `/status` raises it, and the trail records
/// `integrity.row_refused` (the server's hook on the row sealer).
#[test]
fn a_forged_token_row_is_refused_by_a_running_server_and_audited() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let s = Sandbox::new();
    let mut c = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    let url = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(t) = line.strip_prefix("admin token (shown once; keep it): ") {
            admin = Some(t.to_owned());
        }
        if let Some(u) = line.strip_prefix("KeyFlow listening on ") {
            break u.to_owned();
        }
    };
    let admin = admin.unwrap();
    // The attacker's row: an admin token whose secret they know, with the MAC of the
    // real admin row copied beside it.
    let secret_hash = "ab".repeat(32);
    let forged_token = format!("kft_00000000000000f1_{}", "A".repeat(43));
    let db = s.data().join("keyflow.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
            .await
            .unwrap();
        sqlx::query(&format!(
            "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at, row_mac) \
             SELECT '00000000000000f1', X'{secret_hash}', 'admin', '', 'root', 1, row_mac \
             FROM api_tokens LIMIT 1"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "10",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
            ])
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .map(|o| {
                (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
    };
    let Ok((code, _)) = curl(&[
        &format!("{url}/keys"),
        "-H",
        &format!("Authorization: Bearer {forged_token}"),
    ]) else {
        eprintln!("curl not found: skipping this test");
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    assert_eq!(code, "401");
    // The server reads the token table on an unknown id (rate-limited) and every
    // second; wait for the read that meets the forged row (bounded: 10 s).
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let (code, body) = curl(&[
            &format!("{url}/status"),
            "-H",
            &format!("Authorization: Bearer {admin}"),
        ])
        .unwrap();
        assert_eq!(code, "200", "{body}");
        status = serde_json::from_str(&body).unwrap();
        if status["refusedRows"].as_u64().unwrap() >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(status["refusedRows"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["healthStatus"], "critical");
    // Still refused once the table was read.
    let (code, _) = curl(&[
        &format!("{url}/keys"),
        "-H",
        &format!("Authorization: Bearer {forged_token}"),
    ])
    .unwrap();
    assert_eq!(code, "401");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let trail = s.audit_export();
    let refused: Vec<_> = trail
        .iter()
        .filter(|r| r["operation"] == "integrity.row_refused")
        .collect();
    assert!(!refused.is_empty(), "no integrity.row_refused record");
    assert_eq!(refused[0]["detail"]["table"], "api_tokens");
    assert_eq!(refused[0]["detail"]["row"], "00000000000000f1");
    assert_eq!(refused[0]["detail"]["reason"], "mismatch");
}
