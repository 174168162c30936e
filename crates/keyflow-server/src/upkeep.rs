//! Background upkeep of a running server:
//! - key-cache revalidation: polls the keystore's change generation every
//!   `revalidate_every` and at once on a change notification (PostgreSQL NOTIFY), so a
//!   rotation or revocation made through another instance takes effect here within
//!   that interval whatever the cache TTL;
//! - API-token table refresh (every second) and usage-counter flushes (every 10 s);
//! - the scheduler pass every `scheduler_every`, under the keystore lease, so with
//!   several instances one runs it and another takes over when that one dies; its
//!   actions and failures go to the audit trail ([`scheduler_events`]).

use std::time::Duration;

use keyflow_kms::audit::{AuditEvent, Source};
use keyflow_kms::scheduler::{ActionKind, PassReport};
use keyflow_kms::KmsError;
use serde_json::json;
use tokio::task::JoinSet;

use crate::state::AppState;

/// Upkeep settings.
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    /// Cache revalidation poll interval (default 250 ms).
    pub revalidate_every: Duration,
    /// Scheduler pass interval (`None`: this instance never runs the scheduler).
    pub scheduler_every: Option<Duration>,
    /// This instance's identity in the scheduler lease.
    pub holder: String,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        Self {
            revalidate_every: Duration::from_millis(250),
            scheduler_every: Some(Duration::from_secs(3600)),
            holder: "keyflow".into(),
        }
    }
}

/// The running upkeep tasks; dropping it stops them.
#[derive(Debug)]
pub struct Upkeep(JoinSet<()>);

impl Upkeep {
    /// Stops every task.
    pub fn stop(mut self) {
        self.0.abort_all();
    }
}

/// Starts the upkeep tasks on the current runtime.
pub fn spawn(state: AppState, config: UpkeepConfig) -> Upkeep {
    let mut set = JoinSet::new();
    set.spawn(revalidate_loop(state.clone(), config.revalidate_every));
    set.spawn(housekeeping_loop(state.clone()));
    if let Some(every) = config.scheduler_every {
        set.spawn(scheduler_loop(state, every, config.holder));
    }
    Upkeep(set)
}

async fn revalidate_loop(state: AppState, every: Duration) {
    let notifier = state.service.keystore().change_notifier();
    let mut failing = false;
    loop {
        match &notifier {
            Some(n) => {
                tokio::select! {
                    () = n.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
            }
            None => tokio::time::sleep(every).await,
        }
        match state.service.revalidate().await {
            Ok(changed) => {
                if changed {
                    tracing::debug!("keys changed elsewhere; key cache dropped");
                }
                if failing {
                    tracing::info!("keystore reachable again; key cache revalidated");
                    failing = false;
                }
            }
            Err(e) => {
                // Logged once per outage, not four times a second.
                if !failing {
                    tracing::warn!(error = %e, "cannot revalidate the key cache; cached keys stop being used once the staleness bound passes");
                    failing = true;
                }
            }
        }
    }
}

async fn housekeeping_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        if let Err(e) = state.tokens.refresh().await {
            tracing::warn!(error = %e, "token refresh failed");
        }
        if n.is_multiple_of(10) {
            if let Err(e) = state.service.flush_usage().await {
                tracing::warn!(error = %e, "usage flush failed");
            }
        }
    }
}

async fn scheduler_loop(state: AppState, every: Duration, holder: String) {
    // The lease outlives one interval, so the holder keeps it from pass to pass and
    // another instance takes over only after the holder missed two passes.
    let lease_ms = i64::try_from(every.as_millis().saturating_mul(2))
        .unwrap_or(i64::MAX)
        .max(60_000);
    // First pass soon after start, then every interval.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(5).min(every),
        every,
    );
    loop {
        tick.tick().await;
        let now = state.service.clock().now_millis();
        let outcome = state
            .service
            .scheduler_pass(now, false, &holder, lease_ms)
            .await;
        match &outcome {
            Ok(report) if report.ran => {
                for a in &report.actions {
                    tracing::info!(purpose = %a.purpose, version = a.version, action = ?a.kind, outcome = %a.outcome, reason = %a.reason, "scheduler");
                }
            }
            Ok(_) => tracing::debug!("scheduler lease held by another instance"),
            Err(e) => tracing::warn!(error = %e, "scheduler pass failed; retrying next interval"),
        }
        if let Some(trail) = &state.audit {
            for event in scheduler_events(&holder, trail.now_millis(), &outcome) {
                if let Err(e) = trail.record(event).await {
                    tracing::error!(error = %e, "scheduler audit record not written");
                }
            }
        }
    }
}

/// The audit records of one scheduler pass (source `scheduler`, actor
/// `scheduler:<instance>`): one per action applied or failed — `keys.rotate` or
/// `keys.deprecate` (the CLI's names; the source tells them apart), result `ok` or `failed` — or one `scheduler.failed` when the
/// pass itself failed. A pass with nothing to do, or run by another instance, records
/// nothing; an action another writer had already done is recorded by that writer.
pub fn scheduler_events(
    holder: &str,
    now: i64,
    outcome: &Result<PassReport, KmsError>,
) -> Vec<AuditEvent> {
    let actor = format!("scheduler:{holder}");
    match outcome {
        Ok(report) => report
            .actions
            .iter()
            .filter(|a| a.outcome == "applied" || a.outcome.starts_with("failed"))
            .map(|a| {
                let operation = match a.kind {
                    ActionKind::RotateDue | ActionKind::RotateBudget => "keys.rotate",
                    ActionKind::Deprecate => "keys.deprecate",
                };
                let mut e = AuditEvent::new(now, Source::Scheduler, actor.clone(), operation);
                e.purposes = vec![a.purpose.clone()];
                e.versions = vec![a.version];
                e.items = Some(1);
                let mut detail = json!({ "kind": a.kind, "reason": a.reason });
                if let Some(error) = a.outcome.strip_prefix("failed") {
                    e.result = "failed".into();
                    detail["error"] = json!(error.trim_start_matches(':').trim());
                }
                e.detail = Some(detail);
                e
            })
            .collect(),
        Err(err) => {
            let mut e = AuditEvent::new(now, Source::Scheduler, actor, "scheduler.failed");
            e.result = "failed".into();
            e.detail = Some(json!({ "error": err.to_string() }));
            vec![e]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_kms::scheduler::Action;

    #[test]
    fn scheduler_passes_become_audit_events() {
        let action = |kind, outcome: &str| Action {
            purpose: "userData".into(),
            version: 3,
            kind,
            reason: "due".into(),
            outcome: outcome.into(),
        };
        let report = PassReport {
            evaluated_at: "2026-01-01T00:00:00Z".into(),
            dry_run: false,
            ran: true,
            actions: vec![
                action(ActionKind::RotateDue, "applied"),
                action(ActionKind::Deprecate, "failed: store down"),
                action(ActionKind::RotateBudget, "already done"),
            ],
        };
        let events = scheduler_events("host/1", 7, &Ok(report));
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (events[0].operation.as_str(), events[0].result.as_str()),
            ("keys.rotate", "ok")
        );
        assert_eq!(events[0].actor, "scheduler:host/1");
        assert_eq!(events[0].source, Source::Scheduler);
        assert_eq!(
            (events[0].purposes.clone(), events[0].versions.clone()),
            (vec!["userData".to_owned()], vec![3])
        );
        assert_eq!(
            (events[1].operation.as_str(), events[1].result.as_str()),
            ("keys.deprecate", "failed")
        );
        assert_eq!(events[1].detail.as_ref().unwrap()["error"], "store down");
        let failed = scheduler_events("h", 7, &Err(KmsError::Invalid("x")));
        assert_eq!(failed[0].operation, "scheduler.failed");
        assert_eq!(failed[0].result, "failed");
    }
}
