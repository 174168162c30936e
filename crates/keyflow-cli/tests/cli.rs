//! The `keyflow` binary as a user runs it: stdout, stderr and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{assert_fails, run, text, Sandbox, PASSWORD};

#[test]
fn five_minute_tour() {
    let s = Sandbox::new();
    let first = text(s.ok(&["init", "--kdf-iterations", "100000"], b""));
    assert!(first.starts_with("initialized: KEK "), "{first}");
    let again = text(s.ok(&["init"], b""));
    assert!(again.starts_with("already initialized"), "{again}");
    assert_eq!(
        text(s.ok(&["keys", "list", "--json"], b"")),
        "[]",
        "init creates no DEKs"
    );

    // Bytes pass through exactly: no newline added or stripped, binary kept.
    let plain: &[u8] = b"123-45-6789\n\x00\xff";
    let ct = text(s.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--context",
            "recordId=r-1",
        ],
        plain,
    ));
    assert!(ct.starts_with("kf1:"));
    let back = s.ok(
        &["decrypt", "--context", "recordId=r-1"],
        format!("  {ct}\n\n").as_bytes(),
    );
    assert_eq!(back, plain);

    let info: Value = serde_json::from_slice(&s.ok(&["inspect"], ct.as_bytes())).unwrap();
    assert_eq!(info["keyId"], "userData:v1");
    assert_eq!(info["purpose"], "userData");
    assert_eq!(info["keyVersion"], 1);
    assert_eq!(info["algorithm"], "AES-256-GCM");

    let rotated: Value =
        serde_json::from_slice(&s.ok(&["keys", "rotate", "--purpose", "userData"], b"")).unwrap();
    assert_eq!(
        (
            rotated["oldVersion"].as_u64(),
            rotated["newVersion"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        s.ok(&["decrypt", "--context", "recordId=r-1"], ct.as_bytes()),
        plain,
        "old data still readable"
    );

    let list: Value =
        serde_json::from_slice(&s.ok(&["keys", "list", "--json", "--purpose", "userData"], b""))
            .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["status"], "rotating");
    assert_eq!(list[1]["status"], "active");
    assert_eq!(list[0]["encryptions"], 1, "usage was persisted at exit");
    assert!(list[1]["createdAt"].as_str().unwrap().ends_with('Z'));
    let active: Value =
        serde_json::from_slice(&s.ok(&["keys", "list", "--json", "--status", "active"], b""))
            .unwrap();
    assert_eq!(active.as_array().unwrap().len(), 1);
    let table = text(s.ok(&["keys", "list"], b""));
    // Header, two versions, then the policy of each purpose shown.
    assert!(
        table.lines().take(3).last().unwrap().contains("active")
            && table.contains("rotating")
            && table.contains("rotate every 90 d, warn 7 d before, grace 30 d"),
        "{table}"
    );

    let d1 = text(s.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--deterministic",
            "--context",
            "field=email",
        ],
        b"a@b.c",
    ));
    let d2 = text(s.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--deterministic",
            "--context",
            "field=email",
        ],
        b"a@b.c",
    ));
    let d3 = text(s.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--deterministic",
            "--context",
            "field=phone",
        ],
        b"a@b.c",
    ));
    assert_eq!(d1, d2);
    assert_ne!(d1, d3);
    let info: Value = serde_json::from_slice(&s.ok(&["inspect"], d1.as_bytes())).unwrap();
    assert_eq!(info["keyVersion"], 2);

    let generated: Value =
        serde_json::from_slice(&s.ok(&["keys", "generate", "--purpose", "healthData"], b""))
            .unwrap();
    assert_eq!(generated["keyId"], "healthData:v1");
    assert_fails(
        &s.run(&["keys", "generate", "--purpose", "healthData"], b""),
        1,
        "already has keys",
    );
}

#[test]
fn mask_outputs() {
    let s = Sandbox::new();
    for (kind, value, want) in [
        ("card", "4532123456789012", "************9012"),
        ("bankAccount", "12345678", "****5678"),
        ("ssn", "123456789", "***-**-6789"),
        ("phone", "5551234567", "(***) ***-4567"),
        ("email", "user@example.com", "u***@example.com"),
        ("iban", "DE89370400440532013000", "DE****************3000"),
        ("default", "secret", "s****t"),
    ] {
        assert_eq!(text(s.ok(&["mask", "--type", kind, value], b"")), want);
    }
    assert_fails(
        &s.run(&["mask", "--type", "nope", "x"], b""),
        2,
        "mask type",
    );
}

#[test]
fn decryption_errors_are_clear_and_opaque() {
    let s = Sandbox::new();
    s.init();
    let ct = text(s.ok(
        &[
            "encrypt",
            "--purpose",
            "userData",
            "--context",
            "recordId=r-1",
        ],
        b"secret",
    ));
    assert_fails(
        &s.run(&["decrypt", "--context", "recordId=r-2"], ct.as_bytes()),
        1,
        "decryption failed",
    );
    assert_fails(&s.run(&["decrypt"], ct.as_bytes()), 1, "decryption failed");
    let mut bytes = ct.into_bytes();
    let i = bytes.len() - 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    assert_fails(
        &s.run(&["decrypt", "--context", "recordId=r-1"], &bytes),
        1,
        "decryption failed",
    );
    assert_fails(
        &s.run(&["decrypt"], b"not a ciphertext"),
        1,
        "decryption failed",
    );
    assert_fails(
        &s.run(&["inspect"], b"kf1:AAAA"),
        1,
        "not a KeyFlow ciphertext",
    );
    assert_fails(&s.run(&["decrypt", "--context", "novalue"], b""), 2, "K=V");
}

#[test]
fn kek_failures_stop_the_command_and_change_nothing() {
    let s = Sandbox::new();
    assert_fails(
        &s.run(&["encrypt", "--purpose", "userData"], b"x"),
        1,
        "run `keyflow init` first",
    );
    s.init();
    let kek = s.data().join("kek.json");
    let before = std::fs::read(&kek).unwrap();

    let mut wrong = s.cmd(&["init"]);
    wrong.env("KEK_PASSWORD", "wrong password");
    assert_fails(&run(wrong, b""), 1, "could not be unlocked");
    let mut wrong = s.cmd(&["encrypt", "--purpose", "userData"]);
    wrong.env("KEK_PASSWORD", "wrong password");
    assert_fails(&run(wrong, b"x"), 1, "could not be unlocked");
    assert_eq!(
        std::fs::read(&kek).unwrap(),
        before,
        "KEK file byte-for-byte unchanged"
    );

    let mut missing = s.cmd(&["encrypt", "--purpose", "userData"]);
    missing.env_remove("KEK_PASSWORD");
    assert_fails(&run(missing, b"x"), 2, "KEK_PASSWORD is not set");

    let mut prod = s.cmd(&["encrypt", "--purpose", "userData"]);
    prod.env("NODE_ENV", "production");
    assert_fails(&run(prod, b"x"), 1, "at least 32 characters");
    let mut prod = s.cmd(&["init", "--kdf-iterations", "100000"]);
    prod.env("KEYFLOW_ENV", "production")
        .env("KEK_PASSWORD", "x".repeat(40));
    assert_fails(&run(prod, b""), 2, "refused in production");
    assert_eq!(std::fs::read(&kek).unwrap(), before);

    // The KEK file gone: init refuses to make a new one for a keystore that has one.
    std::fs::rename(&kek, s.dir.path().join("kek.bak")).unwrap();
    assert_fails(&s.run(&["init"], b""), 1, "never regenerated");
    assert!(!kek.exists());
}

#[test]
fn strict_mode_and_purpose_validation() {
    let s = Sandbox::new();
    s.init();
    let mut strict = s.cmd(&["encrypt", "--purpose", "financialData"]);
    strict.env("ENCRYPTION_STRICT_MODE", "true");
    assert_fails(&run(strict, b"x"), 1, "generate it first");
    s.ok(&["keys", "generate", "--purpose", "financialData"], b"");
    let mut strict = s.cmd(&["encrypt", "--purpose", "financialData"]);
    strict.env("ENCRYPTION_STRICT_MODE", "true");
    assert!(run(strict, b"x").status.success());
    assert_fails(
        &s.run(&["encrypt", "--purpose", "bad name"], b"x"),
        2,
        "--purpose",
    );
    assert_fails(
        &s.run(&["keys", "rotate", "--purpose", "nobody"], b""),
        1,
        "unknown purpose",
    );
    assert_fails(
        &s.run(&["keys", "list", "--status", "expired"], b""),
        2,
        "--status",
    );
}

#[test]
fn configuration_from_a_dotenv_file_and_kek_path() {
    let s = Sandbox::new();
    let kek = s.dir.path().join("elsewhere/my-kek.json");
    std::fs::write(
        s.dir.path().join(".env"),
        format!(
            "KEK_PASSWORD=from-dotenv-file\nKEK_PATH={}\n",
            kek.display()
        ),
    )
    .unwrap();
    let mut c = s.cmd(&["init", "--kdf-iterations", "100000"]);
    c.env_remove("KEK_PASSWORD");
    let out = run(c, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kek.exists(), "KEK_PATH from .env honoured");
    // The environment wins over .env.
    let mut c = s.cmd(&["encrypt", "--purpose", "userData"]);
    c.env("KEK_PASSWORD", "not-the-dotenv-password");
    assert_fails(&run(c, b"x"), 1, "could not be unlocked");
    let unsupported = s.run(&["--database-url", "mysql://x", "keys", "list"], b"");
    assert_fails(&unsupported, 2, "unsupported scheme");
}

fn versions(s: &Sandbox) -> Vec<(u64, String)> {
    let list: Value =
        serde_json::from_slice(&s.ok(&["keys", "list", "--json", "--purpose", "documents"], b""))
            .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Kills `keyflow keys rotate` at many points; after each crash the ring is consistent
/// (contiguous versions, exactly one active) and every version still decrypts.
#[test]
fn a_killed_rotation_leaves_a_consistent_keystore() {
    let s = Sandbox::new();
    s.init();
    let mut cts = vec![text(
        s.ok(&["encrypt", "--purpose", "documents"], b"v1 data"),
    )];
    for i in 0..12u64 {
        let mut child = s
            .cmd(&["keys", "rotate", "--purpose", "documents"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kill over the run: KDF, keystore open, transaction, exit. Not a wait
        // for anything: every kill point, early or late, must leave a consistent ring.
        std::thread::sleep(std::time::Duration::from_millis(5 + i * 9));
        let _ = child.kill();
        let _ = child.wait();
        let ring = versions(&s);
        let n = ring.len() as u64;
        assert_eq!(
            ring.iter().map(|r| r.0).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "{ring:?}"
        );
        assert_eq!(
            ring.iter().filter(|r| r.1 == "active").count(),
            1,
            "{ring:?}"
        );
        cts.push(text(s.ok(
            &["encrypt", "--purpose", "documents"],
            format!("data {i}").as_bytes(),
        )));
    }
    assert_eq!(s.ok(&["decrypt"], cts[0].as_bytes()), b"v1 data");
    for (i, ct) in cts.iter().enumerate().skip(1) {
        assert_eq!(
            s.ok(&["decrypt"], ct.as_bytes()),
            format!("data {}", i - 1).as_bytes()
        );
    }
    // The rotation itself still works afterwards.
    s.ok(&["keys", "rotate", "--purpose", "documents"], b"");
}

#[test]
fn data_files_are_private() {
    let s = Sandbox::new();
    s.init();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data()), 0o700);
    assert_eq!(mode(&s.data().join("kek.json")), 0o600);
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let s = Sandbox::new();
    s.init();
    let token = text(s.ok(
        &[
            "tokens",
            "create",
            "--role",
            "service",
            "--purposes",
            "userData,financialData",
            "--name",
            "billing",
            "--expires",
            "30d",
        ],
        b"",
    ));
    assert!(
        token.starts_with("kft_") && token.len() == 4 + 16 + 1 + 43,
        "{token}"
    );
    let id = &token[4..20];
    let list: Value = serde_json::from_slice(&s.ok(&["tokens", "list", "--json"], b"")).unwrap();
    let t = &list.as_array().unwrap()[0];
    assert_eq!(t["id"], id);
    assert_eq!(t["role"], "service");
    assert_eq!(
        t["purposes"],
        serde_json::json!(["userData", "financialData"])
    );
    assert_eq!(t["state"], "active");
    assert!(t["expiresAt"].is_string());
    let listing = String::from_utf8(s.ok(&["tokens", "list"], b"")).unwrap();
    assert!(
        !listing.contains(&token[21..]),
        "the secret is never listed"
    );
    assert_eq!(
        text(s.ok(&["tokens", "revoke", id], b"")),
        format!("revoked token {id}")
    );
    assert_fails(&s.run(&["tokens", "revoke", id], b""), 2, "no active token");
    let list: Value = serde_json::from_slice(&s.ok(&["tokens", "list", "--json"], b"")).unwrap();
    assert_eq!(list[0]["state"], "revoked");
    assert_fails(
        &s.run(&["tokens", "create", "--role", "service"], b""),
        2,
        "at least one purpose",
    );
    assert_fails(
        &s.run(&["tokens", "create", "--role", "root"], b""),
        2,
        "--role",
    );
    assert_fails(
        &s.run(
            &["tokens", "create", "--role", "admin", "--expires", "soon"],
            b"",
        ),
        2,
        "--expires",
    );
}

#[test]
fn production_serve_refuses_unsafe_setups() {
    let s = Sandbox::new();
    s.init();
    let mut dev = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
    dev.env("KEYFLOW_ENV", "production")
        .env("KEK_PASSWORD", "x".repeat(40))
        .env("REQUEST_INTEGRITY_SECRET", "s".repeat(40));
    assert_fails(&run(dev, b""), 2, "--dev is refused in production");
    let mut no_cert = s.cmd(&["serve", "--listen", "127.0.0.1:0"]);
    no_cert
        .env("KEYFLOW_ENV", "production")
        .env("KEK_PASSWORD", "x".repeat(40))
        .env("REQUEST_INTEGRITY_SECRET", "s".repeat(40));
    assert_fails(&run(no_cert, b""), 2, "KEYFLOW_TLS_CERT");
    let mut weak = s.cmd(&["serve", "--listen", "127.0.0.1:0"]);
    weak.env("NODE_ENV", "production")
        .env("REQUEST_INTEGRITY_SECRET", "s".repeat(40))
        .env("KEYFLOW_TRUSTED_PROXIES", "127.0.0.1");
    assert_fails(&run(weak, b""), 1, "at least 32 characters");
    let mut half = s.cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.pem",
    ]);
    half.env("KEK_PASSWORD", PASSWORD);
    assert_fails(&run(half, b""), 2, "KEYFLOW_TLS_KEY");
}

/// `serve --dev` with no configuration: prints the URL and an admin token once, serves
/// HTTPS, stops gracefully on SIGTERM, and reuses its KEK, certificate and token table
/// on the next start.
#[test]
fn dev_server_starts_with_no_configuration_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let s = Sandbox::new();
    let start = || {
        let mut c = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
        c.env_remove("KEK_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
        (child, url, token)
    };
    let (mut child, url, token) = start();
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/api/encryption"),
        "{url}"
    );
    let token = token.expect("first start prints an admin token");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "10"])
            .args(args)
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if let Ok(health) = curl(&[&format!("{url}/health")]) {
        assert!(health.contains("\"ready\":true"), "{health}");
        let enc = curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"data":42,"purpose":"userData"}"#,
            &format!("{url}/encrypt"),
        ])
        .unwrap();
        assert!(enc.contains("kf1:"), "{enc}");
    } else {
        eprintln!("curl not found: skipping the HTTP part of this test");
    }
    let cert = std::fs::read(s.data().join("tls/dev-cert.pem")).unwrap();
    assert_eq!(
        std::fs::metadata(s.data().join("dev-kek-password"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");

    let (mut child, _, token_again) = start();
    assert!(
        token_again.is_none(),
        "the admin token is printed only on the first start"
    );
    assert_eq!(
        std::fs::read(s.data().join("tls/dev-cert.pem")).unwrap(),
        cert,
        "certificate reused"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// On a `serve --dev` data directory the CLI finds the generated `dev-kek-password`
/// (so `tokens create` works as the README shows); production never reads it.
#[test]
fn the_dev_password_file_is_used_outside_production_only() {
    let s = Sandbox::initialized();
    std::fs::write(s.data().join("dev-kek-password"), PASSWORD).unwrap();
    let mut c = s.cmd(&["tokens", "create", "--role", "admin", "--name", "dev"]);
    c.env_remove("KEK_PASSWORD");
    let out = run(c, b"");
    assert!(out.status.success(), "{out:?}");
    assert!(text(out.stdout).starts_with("kft_"));

    let mut c = s.cmd(&["tokens", "create", "--role", "admin", "--name", "prod"]);
    c.env_remove("KEK_PASSWORD")
        .env("KEYFLOW_ENV", "production");
    assert_fails(&run(c, b""), 2, "KEK_PASSWORD is not set");
}

/// The connection limits of `serve` refuse 0 (which would serve nothing, or close every
/// connection at once) before anything starts, from the flag or the environment.
#[test]
fn serve_refuses_zero_connection_limits() {
    let s = Sandbox::new();
    for (flag, env) in [
        ("--max-connections", "KEYFLOW_MAX_CONNECTIONS"),
        ("--max-tls-handshakes", "KEYFLOW_MAX_TLS_HANDSHAKES"),
        ("--idle-timeout-secs", "KEYFLOW_IDLE_TIMEOUT_SECS"),
        ("--body-min-bytes", "KEYFLOW_BODY_MIN_BYTES"),
        ("--body-window-secs", "KEYFLOW_BODY_WINDOW_SECS"),
    ] {
        let out = s.run(&["serve", "--listen", "127.0.0.1:0", flag, "0"], b"");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("not in 1.."), "{err}");
        let mut c = s.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        c.env(env, "0");
        let out = run(c, b"");
        assert_eq!(out.status.code(), Some(2), "{env}");
    }
    assert!(!s.data().exists(), "nothing was created");
}
