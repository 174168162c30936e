//! `keyflow status` against a running `serve --dev` (the alerts it evaluated, human
//! readable and as JSON; refusals of a bad token, a missing token, an untrusted
//! certificate), `KEYFLOW_CACHE_TTL_SECS` validation, and strict-mode reads of
//! `fields decrypt`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{assert_fails, run, Sandbox};

/// A `serve --dev` on an ephemeral port: the child, its base URL and the admin token.
fn dev_server(s: &Sandbox) -> (Child, String, String) {
    let mut c = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
    c.env_remove("KEK_PASSWORD")
        .env("KEYFLOW_ALERT_EVAL_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
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
    (
        child,
        url,
        token.expect("an admin token on the first start"),
    )
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn status_prints_the_alerts_of_a_running_server() {
    let s = Sandbox::new();
    let (child, url, token) = dev_server(&s);
    let ca = s.data().join("tls/dev-cert.pem");
    let ca = ca.to_str().unwrap();
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--url", &url, "--ca-cert", ca];
        args.extend_from_slice(extra);
        let mut c = s.cmd(&args);
        c.env("KEYFLOW_TOKEN", &token);
        run(c, b"")
    };
    // The server evaluates its alerts every second here: wait (bounded) for the first.
    let mut text = String::new();
    for _ in 0..50 {
        let out = status(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text = String::from_utf8(out.stdout).unwrap();
        if text.contains("keys_expiring") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(text.starts_with(&format!("KeyFlow at {url}: ")), "{text}");
    assert!(text.contains("alerts (evaluated "), "{text}");
    for name in [
        "keys_expiring",
        "rotation_failed",
        "decrypt_error_rate",
        "cache_hit_rate_low",
        "plain_http_in_production",
        "audit_trail_failing",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("  ok ") && l.contains(name)),
            "{name} in {text}"
        );
    }
    assert!(text.ends_with("0 alert(s) firing\n"), "{text}");
    assert!(!text.contains(&token), "never the token");

    // JSON, as the server answered.
    let out = status(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["alerts"].as_array().unwrap().len(), 8, "{json}");
    assert!(json["byPurpose"].is_object());

    // A wrong token: the server's refusal, one line, exit 1.
    let mut c = s.cmd(&["status", "--url", &url, "--ca-cert", ca]);
    c.env("KEYFLOW_TOKEN", "kft_0000000000000000_nope");
    assert_fails(&run(c, b""), 1, "401");
    // No token: a configuration error, exit 2.
    let out = s.run(&["status", "--url", &url, "--ca-cert", ca], b"");
    assert_fails(&out, 2, "KEYFLOW_TOKEN");
    // The dev certificate is not trusted without --ca-cert.
    let mut c = s.cmd(&["status", "--url", &url]);
    c.env("KEYFLOW_TOKEN", &token);
    assert_fails(&run(c, b""), 1, "TLS");
    stop(child);
}

#[test]
fn status_refuses_bad_urls_and_unreachable_servers() {
    let s = Sandbox::new();
    let mut c = s.cmd(&["status", "--url", "ftp://127.0.0.1:1"]);
    c.env("KEYFLOW_TOKEN", "t");
    assert_fails(&run(c, b""), 2, "--url");
    // Nothing listens on port 1 of the loopback.
    let mut c = s.cmd(&["status", "--url", "http://127.0.0.1:1"]);
    c.env("KEYFLOW_TOKEN", "t");
    assert_fails(&run(c, b""), 1, "cannot connect");
    let mut c = s.cmd(&["status", "--ca-cert", "/nonexistent.pem"]);
    c.env("KEYFLOW_TOKEN", "t");
    assert_fails(&run(c, b""), 2, "CA certificate");
}

#[test]
fn the_cache_ttl_is_validated() {
    let s = Sandbox::initialized();
    for bad in ["0", "1h", "-1"] {
        let mut c = s.cmd(&["keys", "list"]);
        c.env("KEYFLOW_CACHE_TTL_SECS", bad);
        assert_fails(&run(c, b""), 2, "KEYFLOW_CACHE_TTL_SECS");
    }
    let mut c = s.cmd(&["keys", "list"]);
    c.env("KEYFLOW_CACHE_TTL_SECS", "60");
    let out = run(c, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_unusable_alert_settings_at_startup() {
    let s = Sandbox::new();
    for (var, value, needle) in [
        (
            "KEYFLOW_ALERT_WEBHOOK_URL",
            "ftp://alerts.example/hook",
            "KEYFLOW_ALERT_WEBHOOK_URL: only http:// and https://",
        ),
        (
            "KEYFLOW_ALERT_WEBHOOK_URL",
            "alerts.example/hook",
            "KEYFLOW_ALERT_WEBHOOK_URL",
        ),
        (
            "KEYFLOW_ALERT_DECRYPT_ERROR_RATE",
            "5%",
            "KEYFLOW_ALERT_DECRYPT_ERROR_RATE: expected a ratio",
        ),
        (
            "KEYFLOW_ALERT_CACHE_WINDOW_SECS",
            "0",
            "KEYFLOW_ALERT_CACHE_WINDOW_SECS",
        ),
    ] {
        let mut c = s.cmd(&["serve", "--dev", "--listen", "127.0.0.1:0"]);
        c.env(var, value);
        assert_fails(&run(c, b""), 2, needle);
    }
    assert!(!s.data().exists(), "refused before anything was created");
}

#[test]
fn strict_mode_fields_decrypt_refuses_plaintext() {
    let s = Sandbox::initialized();
    let doc = br#"{"ssn":"123-45-6789","nickname":"ada"}"#;
    let out = s.run(&["fields", "decrypt"], doc);
    assert!(out.status.success(), "not strict: passed through");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"nickname":"ada","ssn":"123-45-6789"}"#
    );
    let mut c = s.cmd(&["fields", "decrypt"]);
    c.env("ENCRYPTION_STRICT_MODE", "true");
    let out = run(c, doc);
    assert_fails(
        &out,
        1,
        "ENCRYPTION_STRICT_MODE: plaintext where a ciphertext is required: ssn",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("6789"));
}
