//! `keyflow status`: a Grafana-free quick look at a running server — its key health
//! and the alerts it evaluated (docs/alerts.md), read from `GET /status` with an admin
//! or auditor token.
//!
//! It asks the server rather than opening the keystore: the rate alerts (decrypt
//! errors, cache hit rate, plain HTTP) exist only in a running server's counters, and
//! an auditor's token is all it needs — no KEK password on the operator's machine.

use std::path::PathBuf;

use clap::Args;
use keyflow_server::client::Uri;
use serde_json::Value;

use crate::error::CliError;

/// `keyflow status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server: `https://host:port` (the `/api/encryption` base is added when
    /// missing).
    #[arg(long, env = "KEYFLOW_URL", default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// An admin or auditor API token. Prefer KEYFLOW_TOKEN: a flag shows in `ps`.
    #[arg(long, env = "KEYFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM certificate to trust besides the public roots (for a `serve --dev`
    /// server: DATA_DIR/tls/dev-cert.pem).
    #[arg(long, env = "KEYFLOW_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The `/status` URL for `base`.
fn status_uri(base: &str) -> Result<Uri, CliError> {
    let base = base.trim().trim_end_matches('/');
    let full = if base.ends_with("/api/encryption") {
        format!("{base}/status")
    } else {
        format!("{base}/api/encryption/status")
    };
    let uri: Uri = full
        .parse()
        .map_err(|_| CliError::Usage("--url: not a valid URL".into()))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        _ => Err(CliError::Usage(
            "--url: expected http(s)://host[:port]".into(),
        )),
    }
}

/// Runs `keyflow status`.
pub async fn run(args: &StatusArgs) -> Result<(), CliError> {
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::Config("set KEYFLOW_TOKEN (or --token) to an admin or auditor token".into())
        })?;
    let uri = status_uri(&args.url)?;
    let client = match &args.ca_cert {
        Some(path) => keyflow_server::client::Client::with_ca_file(path),
        None => keyflow_server::client::Client::new(&[]),
    }
    .map_err(CliError::Config)?;
    let request = client.get(&uri, Some(token));
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(30), request)
        .await
        .map_err(|_| CliError::Failed("the server did not answer within 30 s".into()))?
        .map_err(CliError::Failed)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|_| CliError::Failed(format!("the server answered {status} without JSON")))?;
    if !(200..300).contains(&status) {
        let field = |k: &str| {
            json.get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        return Err(CliError::Failed(format!(
            "the server answered {status}: {} ({})",
            field("message"),
            field("error")
        )));
    }
    if args.json {
        println!("{json:#}");
    } else {
        print!("{}", render(&args.url, &json));
    }
    Ok(())
}

/// The human-readable summary of a `/status` answer.
pub fn render(url: &str, s: &Value) -> String {
    let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut out = format!(
        "KeyFlow at {url}: {}\nkeys: {} total, {} active, {} in their rotation window, {} deprecated, {} revoked\n",
        text(s, "healthStatus"),
        n("total"),
        n("active"),
        n("expiringSoon"),
        n("deprecated"),
        n("revoked"),
    );
    let alerts = s
        .get("alerts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match s.get("alertsEvaluatedAt").and_then(Value::as_str) {
        Some(at) => out.push_str(&format!("alerts (evaluated {at}):\n")),
        None => out.push_str("alerts (the five alerts are not evaluated yet; the server does so every KEYFLOW_ALERT_EVAL_SECS):\n"),
    }
    let width = alerts
        .iter()
        .map(|a| text(a, "name").len())
        .max()
        .unwrap_or(0);
    for a in &alerts {
        let firing = a.get("firing").and_then(Value::as_bool).unwrap_or(false);
        let since = a
            .get("since")
            .and_then(Value::as_str)
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<7} {:<8} {:<width$}  {}{since}\n",
            if firing { "FIRING" } else { "ok" },
            text(a, "severity"),
            text(a, "name"),
            text(a, "summary"),
        ));
    }
    let firing = alerts
        .iter()
        .filter(|a| a.get("firing").and_then(Value::as_bool) == Some(true))
        .count();
    out.push_str(&format!("{firing} alert(s) firing\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_api_base_once() {
        for (given, want) in [
            (
                "https://127.0.0.1:8443",
                "https://127.0.0.1:8443/api/encryption/status",
            ),
            ("https://h:1/", "https://h:1/api/encryption/status"),
            ("http://h/api/encryption", "http://h/api/encryption/status"),
            ("http://h/api/encryption/", "http://h/api/encryption/status"),
        ] {
            assert_eq!(status_uri(given).unwrap().to_string(), want, "{given}");
        }
        for bad in ["ftp://h", "127.0.0.1:8443", "not a url", "https://"] {
            assert!(status_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_summary_lists_every_alert_and_marks_the_firing_ones() {
        let s = serde_json::json!({
            "healthStatus": "critical", "total": 4, "active": 3,
            "alertsEvaluatedAt": "2026-12-04T21:00:00Z",
            "alerts": [
                { "name": "rotation_failed", "severity": "critical", "firing": true,
                  "since": "2026-12-04T20:00:00Z", "summary": "the last scheduler pass failed" },
                { "name": "keys_expiring", "severity": "warning", "firing": false,
                  "since": null, "summary": "no active key reaches the end" },
            ],
        });
        let text = render("https://h", &s);
        assert!(
            text.starts_with("KeyFlow at https://h: critical\n"),
            "{text}"
        );
        assert!(text.contains("keys: 4 total, 3 active"), "{text}");
        assert!(text.contains("  FIRING  critical rotation_failed  the last scheduler pass failed since 2026-12-04T20:00:00Z\n"), "{text}");
        assert!(
            text.contains("  ok      warning  keys_expiring    no active key"),
            "{text}"
        );
        assert!(text.ends_with("1 alert(s) firing\n"), "{text}");
        let fresh = serde_json::json!({ "alerts": [] });
        assert!(render("u", &fresh).contains("not evaluated yet"));
    }
}
