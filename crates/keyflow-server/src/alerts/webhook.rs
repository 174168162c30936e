//! Optional push of alert state changes to `KEYFLOW_ALERT_WEBHOOK_URL`, in
//! Alertmanager's webhook JSON shape (version "4"), so anything that takes
//! Alertmanager notifications takes KeyFlow's.
//!
//! The evaluator hands changes to a [`Notifier`] with `try_send` on a bounded queue:
//! it never waits, and nothing on a request path touches it. One background task posts
//! each batch, retrying a failed delivery with exponential backoff a bounded number of
//! times; a batch that still fails, or that finds the queue full, is dropped with a
//! warning (the next change is sent anyway, and `/status` always has the truth).

use std::time::Duration;

use aws_lc_rs::digest;
use axum::http::{HeaderValue, Method};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::client::Client;

use super::config::WebhookUrl;
use super::evaluate::Alert;

/// Batches waiting for delivery at most; beyond, new ones are dropped.
pub const QUEUE: usize = 64;
/// Longest one delivery attempt may take (connect, TLS, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Alertmanager's "no end" time, which firing alerts carry as `endsAt`.
const NO_END: &str = "0001-01-01T00:00:00Z";

/// One batch of changed alerts and when they changed (Unix ms).
#[derive(Debug)]
struct Batch {
    alerts: Vec<Alert>,
    at: i64,
}

/// The sending side: cheap to call, never blocks.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Batch>,
}

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where.
    pub url: WebhookUrl,
    /// Attempts per batch, the first included (at least 1).
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one, up to
    /// [`MAX_BACKOFF`].
    pub backoff: Duration,
    /// The `instance` label (this server's identity).
    pub instance: String,
}

impl Notifier {
    /// The notifier and the task that delivers (run it on the runtime; dropping it
    /// stops delivery).
    pub fn new(delivery: Delivery) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, deliver_loop(delivery, rx))
    }

    /// Queues the changed alerts for delivery; drops them (with a warning) when the
    /// queue is full or the task stopped.
    pub fn send(&self, alerts: Vec<Alert>, at: i64) {
        if let Err(e) = self.tx.try_send(Batch { alerts, at }) {
            tracing::warn!(reason = %e, "alert webhook queue full or stopped; notification dropped");
        }
    }
}

async fn deliver_loop(d: Delivery, mut rx: mpsc::Receiver<Batch>) {
    let client = match Client::new(&[]) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert webhook disabled: no HTTP client");
            return;
        }
    };
    while let Some(batch) = rx.recv().await {
        let body = Bytes::from(payload(&batch.alerts, batch.at, &d.instance).to_string());
        let mut wait = d.backoff;
        for attempt in 1..=d.attempts.max(1) {
            match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&d.url, &client, body.clone())).await {
                Ok(Ok(())) => {
                    tracing::debug!(attempt, "alert webhook delivered");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(attempt, url = ?d.url, error = %e, "alert webhook delivery failed")
                }
                Err(_) => tracing::warn!(attempt, url = ?d.url, "alert webhook delivery timed out"),
            }
            if attempt == d.attempts.max(1) {
                tracing::error!(url = ?d.url, attempts = attempt, "alert webhook: giving up on this notification");
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

/// The Alertmanager-shaped body for `alerts` (all of one batch) changed at `at`.
pub fn payload(alerts: &[Alert], at: i64, instance: &str) -> Value {
    let time = keyflow_kms::clock::rfc3339;
    let status = |firing: bool| if firing { "firing" } else { "resolved" };
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let labels = json!({
                "alertname": a.name,
                "severity": a.severity.as_str(),
                "service": "keyflow",
                "instance": instance,
            });
            json!({
                "status": status(a.firing),
                "labels": labels,
                "annotations": {
                    "summary": a.summary,
                    "value": a.value.to_string(),
                    "threshold": a.threshold.to_string(),
                },
                // A resolved alert carries the start it had while firing.
                "startsAt": time(a.since.unwrap_or(at)),
                "endsAt": if a.firing { NO_END.to_owned() } else { time(at) },
                "generatorURL": "",
                "fingerprint": fingerprint(a.name, instance),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{service=\"keyflow\",instance={instance:?}}}"),
        "truncatedAlerts": 0,
        "status": status(alerts.iter().any(|a| a.firing)),
        "receiver": "keyflow",
        "groupLabels": { "service": "keyflow", "instance": instance },
        "commonLabels": { "service": "keyflow", "instance": instance },
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": items,
    })
}

/// A stable id of one alert of one instance (16 hex digits, as Alertmanager's).
fn fingerprint(name: &str, instance: &str) -> String {
    let d = digest::digest(&digest::SHA256, format!("{name}\n{instance}").as_bytes());
    keyflow_kms::keyflow_core::to_hex(&d.as_ref()[..8])
}

/// One POST of `body`; `Ok` on a 2xx answer.
async fn post(url: &WebhookUrl, client: &Client, body: Bytes) -> Result<(), String> {
    let json = HeaderValue::from_static("application/json");
    let (status, _) = client
        .send(
            Method::POST,
            url.uri(),
            &[(hyper::header::CONTENT_TYPE, json)],
            body,
        )
        .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::evaluate::Severity;

    #[test]
    fn the_payload_has_alertmanagers_shape() {
        let a = Alert {
            name: "rotation_failed",
            severity: Severity::Critical,
            firing: true,
            since: Some(1_000),
            value: 1.0,
            threshold: 0.0,
            summary: "the last scheduler pass failed".into(),
        };
        let mut resolved = a.clone();
        resolved.firing = false;
        let p = payload(&[a], 2_000, "host:8443");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        let item = &p["alerts"][0];
        assert_eq!(item["labels"]["alertname"], "rotation_failed");
        assert_eq!(item["labels"]["severity"], "critical");
        assert_eq!(item["startsAt"], "1970-01-01T00:00:01Z");
        assert_eq!(item["endsAt"], NO_END);
        assert_eq!(item["fingerprint"].as_str().unwrap().len(), 16);
        assert!(p["groupKey"].as_str().unwrap().contains("keyflow"));
        let p = payload(&[resolved], 2_000, "host:8443");
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], "1970-01-01T00:00:02Z");
        assert_eq!(
            p["alerts"][0]["fingerprint"], item["fingerprint"],
            "same alert, same id"
        );
    }
}
