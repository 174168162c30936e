//! The five alerts of the old design, computed from live state (docs/alerts.md):
//! `keys_expiring`, `rotation_failed`, `decrypt_error_rate`, `cache_hit_rate_low`,
//! `plain_http_in_production`.
//!
//! - [`evaluate`] is pure: a [`Snapshot`] and `now` in, alerts out;
//! - [`gather`] measures a snapshot (keystore, audit trail, counters);
//! - [`evaluate_pass`] does both and keeps the result on the [`AlertBoard`], which
//!   `/status`, `/metrics` and the webhook read. The server runs it on a background
//!   tick ([`crate::upkeep`]), never per request.
//!
//! Rotation failures are read back from the audit trail (`scheduler.pass` /
//! `scheduler.failed` records), so they survive restarts and every instance on one
//! database shows the same; the rates are this instance's own, over sliding windows of
//! counter samples kept in memory.

pub mod config;
pub mod evaluate;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock, PoisonError};

use keyflow_kms::audit::{AuditFilter, AuditStore, StoredAudit, MAX_PAGE};
use keyflow_kms::{KeyStatus, KmsError, VersionFilter};
use serde_json::{json, Value};

pub use config::{AlertConfig, AlertConfigError, WebhookUrl};
pub use evaluate::{evaluate, Alert, RotationState, Severity, Snapshot, Window, ALERT_NAMES};

use crate::state::AppState;

const DAY_MS: i64 = keyflow_kms::model::DAY_MS;

/// The audit operation of one scheduler pass that ran (result `ok`, or `failed` with
/// the failed purposes); see [`crate::upkeep::scheduler_events`].
pub const SCHEDULER_PASS: &str = "scheduler.pass";
/// The audit operation of a scheduler pass that failed as a whole.
pub const SCHEDULER_FAILED: &str = "scheduler.failed";

/// Cumulative counters read at one instant (this process's, from its start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// When (Unix ms).
    pub at: i64,
    /// Decrypt operations answered.
    pub decrypts: u64,
    /// … with an error.
    pub decrypt_errors: u64,
    /// Key-cache lookups.
    pub lookups: u64,
    /// … that missed.
    pub misses: u64,
    /// Plain-HTTP requests turned away.
    pub plain_http: u64,
}

/// The last evaluation and the sample history; shared by `/status`, `/metrics` and
/// the webhook.
#[derive(Debug, Default)]
pub struct AlertBoard {
    config: OnceLock<AlertConfig>,
    inner: Mutex<Board>,
    webhook: OnceLock<webhook::Notifier>,
    production: OnceLock<bool>,
}

#[derive(Debug, Default)]
struct Board {
    alerts: Vec<Alert>,
    evaluated_at: Option<i64>,
    samples: VecDeque<Sample>,
    /// Without an audit trail: the scheduler outcome this instance saw.
    local_rotation: RotationState,
}

impl AlertBoard {
    /// Sets the thresholds, before anything reads them (the server does so right after
    /// building its state). Once: a later call — or one after the defaults were read —
    /// is ignored and returns `false`.
    pub fn configure(&self, config: AlertConfig) -> bool {
        self.config.set(config).is_ok()
    }

    /// Tells the evaluator whether this is a production server (set by [`crate::app`]
    /// from the transport configuration; once).
    pub fn set_production(&self, production: bool) {
        let _ = self.production.set(production);
    }

    /// Is this a production server? (Unknown: no.)
    pub fn production(&self) -> bool {
        self.production.get().copied().unwrap_or(false)
    }

    /// The thresholds in force.
    pub fn config(&self) -> &AlertConfig {
        self.config.get_or_init(AlertConfig::default)
    }

    /// Sends every later state change to `notifier` (once; later calls are ignored).
    pub fn notify_with(&self, notifier: webhook::Notifier) {
        let _ = self.webhook.set(notifier);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last evaluation (empty before the first) and when it ran (Unix ms).
    pub fn current(&self) -> (Vec<Alert>, Option<i64>) {
        let b = self.lock();
        (b.alerts.clone(), b.evaluated_at)
    }

    /// Notes a scheduler pass this instance ran (used only without an audit trail).
    pub fn note_scheduler_pass(&self, at: i64, failed: Option<Vec<String>>) {
        let mut b = self.lock();
        b.local_rotation = match failed {
            None => RotationState::default(),
            Some(purposes) => RotationState {
                failing_since: b.local_rotation.failing_since.or(Some(at)),
                pass_failed: purposes.is_empty(),
                failed_purposes: purposes,
            },
        };
    }
}

/// Counter deltas over `window` ending at `now`: against the oldest sample inside the
/// window (the history starts with a zero sample at the process start).
fn delta(samples: &VecDeque<Sample>, current: &Sample, window_ms: i64) -> Sample {
    let from = current.at.saturating_sub(window_ms);
    let base = samples
        .iter()
        .find(|s| s.at >= from)
        .copied()
        .unwrap_or(*current);
    Sample {
        at: current.at,
        decrypts: current.decrypts.saturating_sub(base.decrypts),
        decrypt_errors: current.decrypt_errors.saturating_sub(base.decrypt_errors),
        lookups: current.lookups.saturating_sub(base.lookups),
        misses: current.misses.saturating_sub(base.misses),
        plain_http: current.plain_http.saturating_sub(base.plain_http),
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This process's counters now.
pub fn sample(state: &AppState, now: i64) -> Sample {
    let cache = state.service.ring().cache_stats();
    let (decrypts, decrypt_errors) = state.metrics.decrypt_totals();
    Sample {
        at: now,
        decrypts,
        decrypt_errors,
        lookups: cache.hits.saturating_add(cache.misses),
        misses: cache.misses,
        plain_http: state.metrics.plain_http_requests(),
    }
}

/// Measures a snapshot at `now`: expiring versions from the keystore, the scheduler's
/// outcome from the audit trail (or this instance's memory without one), and the
/// windows from `current` against the sample history.
pub async fn gather(state: &AppState, now: i64, current: &Sample) -> Result<Snapshot, KmsError> {
    let config = state.alerts.config();
    let versions = state.service.keys().list(&VersionFilter::default()).await?;
    let policies: HashMap<_, _> = state.service.keys().policies().await?.into_iter().collect();
    let horizon = now.saturating_add(i64::from(config.expiring_days).saturating_mul(DAY_MS));
    let expiring = versions
        .iter()
        .filter(|r| r.status == KeyStatus::Active)
        .filter(|r| {
            let p = policies.get(&r.purpose).copied().unwrap_or_default();
            let end = r
                .created_at
                .saturating_add(i64::from(p.rotation_days).saturating_mul(DAY_MS));
            end <= horizon || r.encryptions >= p.max_encryptions
        })
        .map(|r| keyflow_kms::keyflow_core::key_id(&r.purpose, r.version))
        .collect();
    let rotation = match &state.audit {
        Some(trail) => rotation_state(&**trail.store()).await?,
        None => state.alerts.lock().local_rotation.clone(),
    };
    let b = state.alerts.lock();
    let d = |w| delta(&b.samples, current, ms(w));
    let (dec, cache, plain) = (
        d(config.decrypt_window),
        d(config.cache_window),
        d(config.plain_http_window),
    );
    Ok(Snapshot {
        expiring,
        rotation,
        decrypts: Window {
            total: dec.decrypts,
            bad: dec.decrypt_errors,
        },
        cache: Window {
            total: cache.lookups,
            bad: cache.misses,
        },
        plain_http: plain.plain_http,
        production: state.alerts.production(),
    })
}

/// The scheduler's outcome as the audit trail has it: failing when the newest pass
/// record (`scheduler.pass` or `scheduler.failed`) is a failure, since the first
/// failure after the newest successful pass.
pub async fn rotation_state(store: &dyn AuditStore) -> Result<RotationState, KmsError> {
    let query = |operation: &str, result: Option<&str>, since: Option<i64>, limit| AuditFilter {
        operation: Some(operation.to_owned()),
        result: result.map(str::to_owned),
        since,
        limit,
        ..AuditFilter::default()
    };
    let newest = |rows: Vec<StoredAudit>| rows.into_iter().next();
    let pass = newest(
        store
            .audit_query(&query(SCHEDULER_PASS, None, None, 1))
            .await?,
    );
    let failed = newest(
        store
            .audit_query(&query(SCHEDULER_FAILED, None, None, 1))
            .await?,
    );
    let last = match (pass, failed) {
        (Some(p), Some(f)) => {
            if p.seq > f.seq {
                p
            } else {
                f
            }
        }
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) => return Ok(RotationState::default()),
    };
    if last.operation == SCHEDULER_PASS && last.result == "ok" {
        return Ok(RotationState::default());
    }
    let last_ok = newest(
        store
            .audit_query(&query(SCHEDULER_PASS, Some("ok"), None, 1))
            .await?,
    );
    let after = last_ok.map(|r| r.time.saturating_add(1));
    let mut first = last.time;
    // Bounded: at most a page of each (an hourly scheduler fills a page in ~6 weeks).
    for (op, result) in [(SCHEDULER_PASS, Some("failed")), (SCHEDULER_FAILED, None)] {
        let rows = store
            .audit_query(&query(op, result, after, MAX_PAGE))
            .await?;
        if let Some(t) = rows.iter().map(|r| r.time).min() {
            first = first.min(t);
        }
    }
    let pass_failed = last.operation == SCHEDULER_FAILED;
    Ok(RotationState {
        failing_since: Some(first),
        failed_purposes: if pass_failed {
            Vec::new()
        } else {
            last.purposes
        },
        pass_failed,
    })
}

/// One evaluation at `now` (Unix ms): samples the counters, gathers a snapshot,
/// evaluates it, keeps the result on the board and hands state changes to the webhook.
/// A keystore or audit-store failure keeps the previous evaluation (and is logged).
pub async fn evaluate_pass(state: &AppState, now: i64) -> Vec<Alert> {
    let current = sample(state, now);
    {
        let mut b = state.alerts.lock();
        if b.samples.is_empty() {
            // The counters start at zero with the process.
            let start = now.saturating_sub(ms(state.uptime()));
            b.samples.push_back(Sample {
                at: start,
                ..Sample::default()
            });
        }
    }
    let snap = match gather(state, now, &current).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "alert evaluation could not read the keystore or audit trail; keeping the last result");
            return state.alerts.current().0;
        }
    };
    let config = state.alerts.config();
    let mut b = state.alerts.lock();
    let alerts = evaluate(config, &snap, &b.alerts, now);
    // What changed; a resolved alert keeps the start it had (Alertmanager's `startsAt`).
    let changed: Vec<Alert> = alerts
        .iter()
        .filter_map(|a| {
            let before = b.alerts.iter().find(|p| p.name == a.name && p.firing);
            match (before, a.firing) {
                (None, true) => Some(a.clone()),
                (Some(p), false) => Some(Alert {
                    since: p.since,
                    ..a.clone()
                }),
                _ => None,
            }
        })
        .collect();
    for a in &changed {
        if a.firing {
            tracing::warn!(alert = a.name, severity = a.severity.as_str(), summary = %a.summary, "alert firing");
        } else {
            tracing::info!(alert = a.name, "alert resolved");
        }
    }
    b.alerts.clone_from(&alerts);
    b.evaluated_at = Some(now);
    b.samples.push_back(current);
    let keep_from = now.saturating_sub(ms(config.longest_window()));
    // Keep one sample at or before the window start, so a full window has a base.
    while b.samples.len() > 2 && b.samples.get(1).is_some_and(|s| s.at <= keep_from) {
        b.samples.pop_front();
    }
    drop(b);
    if let Some(hook) = state.alerts.webhook.get() {
        if !changed.is_empty() {
            hook.send(changed, now);
        }
    }
    alerts
}

/// Evaluates on `config.eval_every` until the task is dropped.
pub(crate) async fn alerts_loop(state: AppState) {
    let every = state.alerts.config().eval_every;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = state.service.ring().clock().now_millis();
        evaluate_pass(&state, now).await;
    }
}

/// One alert as JSON (`since` as RFC 3339, or null).
pub fn alert_json(a: &Alert) -> Value {
    json!({
        "name": a.name,
        "severity": a.severity,
        "firing": a.firing,
        "since": a.since.map(keyflow_kms::clock::rfc3339),
        "value": a.value,
        "threshold": a.threshold,
        "summary": a.summary,
    })
}

/// The alert series of `/metrics` (Prometheus text 0.0.4); empty before the first
/// evaluation, so rules see no data rather than zeros nobody measured.
pub fn render_metrics(board: &AlertBoard) -> Result<String, std::fmt::Error> {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct AlertLabels {
        alert: &'static str,
        severity: &'static str,
    }
    let (alerts, at) = board.current();
    let Some(at) = at else {
        return Ok(String::new());
    };
    let mut r = Registry::default();
    let firing = Family::<AlertLabels, Gauge>::default();
    for a in &alerts {
        firing
            .get_or_create(&AlertLabels {
                alert: a.name,
                severity: a.severity.as_str(),
            })
            .set(i64::from(a.firing));
    }
    r.register(
        "keyflow_alert_firing",
        "1 while the alert fires (docs/alerts.md)",
        firing,
    );
    let value = |name: &str| {
        alerts
            .iter()
            .find(|a| a.name == name)
            .map_or(0, |a| a.value as u64)
    };
    r.register(
        "keyflow_keys_expiring_soon",
        "Active key versions whose cryptoperiod ends within the alert horizon",
        ConstGauge::new(value(evaluate::KEYS_EXPIRING)),
    );
    r.register(
        "keyflow_rotation_failures",
        "Failures of the last scheduler pass (failed purposes; 1 when the pass itself failed)",
        ConstGauge::new(value(evaluate::ROTATION_FAILED)),
    );
    r.register(
        "keyflow_alerts_evaluated_timestamp_seconds",
        "When the alerts were last evaluated (Unix seconds)",
        ConstGauge::new(at / 1000),
    );
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_use_the_oldest_sample_inside_the_window() {
        let s = |at, decrypts| Sample {
            at,
            decrypts,
            ..Sample::default()
        };
        let history: VecDeque<Sample> = [s(0, 0), s(10_000, 5), s(20_000, 9)].into();
        let now = s(30_000, 20);
        assert_eq!(
            delta(&history, &now, 15_000).decrypts,
            11,
            "from the 20 s sample"
        );
        assert_eq!(delta(&history, &now, 60_000).decrypts, 20, "whole history");
        assert_eq!(delta(&history, &now, 5_000).decrypts, 0, "no sample inside");
        assert_eq!(delta(&VecDeque::new(), &now, 60_000).decrypts, 0);
    }

    #[test]
    fn local_scheduler_outcomes_keep_the_first_failure() {
        let b = AlertBoard::default();
        b.note_scheduler_pass(10, Some(vec!["userData".into()]));
        b.note_scheduler_pass(20, Some(vec![]));
        let r = b.lock().local_rotation.clone();
        assert_eq!((r.failing_since, r.pass_failed), (Some(10), true));
        b.note_scheduler_pass(30, None);
        assert_eq!(b.lock().local_rotation, RotationState::default());
    }
}
