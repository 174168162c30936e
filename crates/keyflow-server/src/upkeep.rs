//! Background upkeep of a running server:
//! - key-cache revalidation: polls the keystore's change generation every
//!   `revalidate_every` and at once on a change notification (PostgreSQL NOTIFY), so a
//!   rotation or revocation made through another instance takes effect here within
//!   that interval whatever the cache TTL;
//! - API-token table refresh (every second) and usage-counter flushes (every 10 s);
//! - alert evaluation every `KEYFLOW_ALERT_EVAL_SECS` ([`crate::alerts`]) and, when
//!   configured, the webhook's delivery task;
//! - the scheduler pass every `scheduler_every`, under the keystore lease, so with
//!   several instances one runs it and another takes over when that one dies; its
//!   actions and failures go to the audit trail ([`scheduler_events`]);
//! - with an audit trail ([`Upkeep::spawn_audit`]): verification of the chain soon after
//!   start and then every `verify_every`, each pass going on from the head the last one
//!   verified ([`audit_verify_pass`], shown by `/status`), and, when a retention is set,
//!   a daily prune under the scheduler lease ([`audit_retention_pass`]).

use std::sync::Arc;
use std::time::Duration;

use keyflow_kms::audit::verify::{self, PruneOutcome, Verified, VerifyError};
use keyflow_kms::audit::{AuditEvent, AuditSealer, AuditStore, ChainHead, Source};
use keyflow_kms::clock::rfc3339;
use keyflow_kms::scheduler::{PassReport, SCHEDULER_LEASE};
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
    // Alerts: evaluated on their own tick, never per request; changes pushed to the
    // webhook when one is configured.
    if let Some(url) = state.alerts.config().webhook.clone() {
        let (notifier, deliver) =
            crate::alerts::webhook::Notifier::new(crate::alerts::webhook::Delivery {
                url,
                attempts: state.alerts.config().webhook_attempts,
                backoff: Duration::from_secs(1),
                instance: config.holder.clone(),
            });
        state.alerts.notify_with(notifier);
        set.spawn(deliver);
    }
    set.spawn(crate::alerts::alerts_loop(state.clone()));
    if let Some(every) = config.scheduler_every {
        set.spawn(scheduler_loop(state, every, config.holder));
    }
    Upkeep(set)
}

async fn revalidate_loop(state: AppState, every: Duration) {
    let notifier = state.service.ring().change_notifier();
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
        match state.service.ring().revalidate().await {
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
            if let Err(e) = state.service.ring().flush_usage().await {
                tracing::warn!(error = %e, "usage flush failed");
            }
        }
    }
}

/// How long the scheduler lease is taken for, for passes every `every`: it outlives one
/// interval, so the holder keeps it from pass to pass and another instance takes over
/// only after the holder missed two passes.
pub fn scheduler_lease_ms(every: Duration) -> i64 {
    i64::try_from(every.as_millis().saturating_mul(2))
        .unwrap_or(i64::MAX)
        .max(60_000)
}

async fn scheduler_loop(state: AppState, every: Duration, holder: String) {
    let lease_ms = scheduler_lease_ms(every);
    // First pass soon after start, then every interval.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(5).min(every),
        every,
    );
    loop {
        tick.tick().await;
        let now = state.service.ring().clock().now_millis();
        let outcome = state
            .service
            .keys()
            .scheduler_pass(now, false, &holder, lease_ms)
            .await;
        match &outcome {
            Ok(report) if report.ran => {
                for a in &report.actions {
                    tracing::info!(purpose = %a.purpose, version = %a.version, action = ?a.kind, outcome = %a.outcome, reason = %a.reason, "scheduler");
                }
            }
            Ok(_) => tracing::debug!("scheduler lease held by another instance"),
            Err(e) => tracing::warn!(error = %e, "scheduler pass failed; retrying next interval"),
        }
        match &outcome {
            Ok(r) if r.ran => state
                .alerts
                .note_scheduler_pass(now, (r.failures() > 0).then(|| failed_purposes(r))),
            Ok(_) => {}
            Err(_) => state.alerts.note_scheduler_pass(now, Some(Vec::new())),
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

/// The purposes a pass failed to act on, each once, in order.
fn failed_purposes(report: &PassReport) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in report
        .actions
        .iter()
        .filter(|a| a.outcome.failure().is_some())
    {
        let purpose = a.purpose.as_str();
        if !out.iter().any(|p| p == purpose) {
            out.push(purpose.to_owned());
        }
    }
    out
}

/// The audit records of one scheduler pass (source `scheduler`, actor
/// `scheduler:<instance>`): one per action applied or failed — `keys.rotate` or
/// `keys.deprecate` (the CLI's names; the source tells them apart), result `ok` or
/// `failed` — then one `scheduler.pass` summing the pass up (result `ok`, or `failed`
/// with the failed purposes; `detail` `{actions, failed}`); or one `scheduler.failed`
/// when the pass itself failed. The `rotation_failed` alert reads the last two back
/// ([`crate::alerts::rotation_state`]), so it survives restarts and every instance
/// sees it. A pass run by another instance records nothing; an action another writer
/// had already done is recorded by that writer.
pub fn scheduler_events(
    holder: &str,
    now: i64,
    outcome: &Result<PassReport, KmsError>,
) -> Vec<AuditEvent> {
    let actor = format!("scheduler:{holder}");
    match outcome {
        Ok(report) if !report.ran => Vec::new(),
        Ok(report) => {
            let mut events: Vec<AuditEvent> = report
                .actions
                .iter()
                .filter(|a| a.outcome.is_attempted())
                .map(|a| {
                    let operation = a.kind.operation();
                    let mut e = AuditEvent::new(now, Source::Scheduler, actor.clone(), operation);
                    e.purposes = vec![a.purpose.to_string()];
                    e.versions = vec![a.version.get()];
                    e.items = Some(1);
                    let mut detail = json!({ "kind": a.kind, "reason": a.reason });
                    if let Some(error) = a.outcome.failure() {
                        e.result = "failed".into();
                        detail["error"] = json!(error.trim());
                    }
                    e.detail = Some(detail);
                    e
                })
                .collect();
            let mut pass =
                AuditEvent::new(now, Source::Scheduler, actor, crate::alerts::SCHEDULER_PASS);
            let failed = failed_purposes(report);
            if !failed.is_empty() {
                pass.result = "failed".into();
            }
            pass.detail =
                Some(json!({ "actions": report.actions.len(), "failed": report.failures() }));
            pass.purposes = failed;
            events.push(pass);
            events
        }
        Err(err) => {
            let mut e = AuditEvent::new(
                now,
                Source::Scheduler,
                actor,
                crate::alerts::SCHEDULER_FAILED,
            );
            e.result = "failed".into();
            e.detail = Some(json!({ "error": err.to_string() }));
            vec![e]
        }
    }
}

/// The audit keys a server checks its chain with: the current KEK's (which also signs
/// retention anchors) and those of retired KEKs, for records sealed before a rotation.
#[derive(Debug)]
pub struct AuditKeys {
    current: AuditSealer,
    retired: Vec<AuditSealer>,
}

impl AuditKeys {
    /// The current KEK's audit key and the retired ones that could be unlocked.
    pub fn new(current: AuditSealer, retired: Vec<AuditSealer>) -> Self {
        Self { current, retired }
    }

    /// The retired KEKs' audit keys.
    pub fn retired(&self) -> &[AuditSealer] {
        &self.retired
    }

    fn all(&self) -> Vec<&AuditSealer> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .collect()
    }
}

/// Settings of the audit trail's upkeep.
#[derive(Debug, Clone)]
pub struct AuditUpkeepConfig {
    /// The keys to verify with.
    pub keys: Arc<AuditKeys>,
    /// Interval between verification passes (`KEYFLOW_AUDIT_VERIFY_SECS`, default 1 h).
    pub verify_every: Duration,
    /// Retention (`KEYFLOW_AUDIT_RETENTION_DAYS`): records older than this many days are
    /// pruned once a day; `None`: never.
    pub retention_days: Option<u32>,
    /// This instance's identity in the scheduler lease.
    pub holder: String,
    /// How long the scheduler lease is taken for ([`scheduler_lease_ms`] of the
    /// scheduler's interval). Retention runs only where the scheduler does, so taking
    /// the lease never keeps the scheduler from an instance that runs it.
    pub lease_ms: i64,
}

/// What the background verification found, as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainCheck {
    /// The head the last successful pass verified (`None`: no pass finished yet).
    pub verified: Option<ChainHead>,
    /// When that pass ran (Unix ms).
    pub verified_at: Option<i64>,
    /// The break a pass found. It stays until the server restarts: a chain that broke
    /// and later verifies again was tampered with and put back, which is no better.
    pub broken: Option<String>,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Upkeep {
    /// Starts the audit trail's upkeep: verification passes, and retention when set.
    /// Nothing when `state` has no audit trail.
    pub fn spawn_audit(&mut self, state: AppState, config: AuditUpkeepConfig) {
        if state.audit.is_none() {
            return;
        }
        self.0.spawn(audit_verify_loop(
            state.clone(),
            config.keys.clone(),
            config.verify_every,
        ));
        if let Some(days) = config.retention_days {
            self.0.spawn(audit_retention_loop(state, config, days));
        }
    }
}

async fn audit_verify_loop(state: AppState, keys: Arc<AuditKeys>, every: Duration) {
    // The first pass soon after start (it verifies the whole chain), then every interval.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10).min(every),
        every,
    );
    loop {
        tick.tick().await;
        let now = state.service.ring().clock().now_millis();
        audit_verify_pass(&state, &keys, now).await;
    }
}

async fn audit_retention_loop(state: AppState, config: AuditUpkeepConfig, days: u32) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), DAY);
    loop {
        tick.tick().await;
        let now = state.service.ring().clock().now_millis();
        let pass = audit_retention_pass(
            &state,
            &config.keys,
            days,
            &config.holder,
            config.lease_ms,
            now,
        );
        match pass.await {
            Ok(Some(o)) if o.removed > 0 => {
                tracing::info!(records_removed = o.removed, anchor = ?o.anchor.map(|a| a.seq), "audit retention: pruned");
            }
            Ok(_) => tracing::debug!(
                "audit retention: nothing to prune, or another instance holds the lease"
            ),
            Err(e) => tracing::warn!(error = %e, "audit retention pass failed; retrying tomorrow"),
        }
    }
}

/// One verification pass at `now` (Unix ms): the whole chain the first time, then on
/// from the head the last pass verified, up to the head read now. Its result is kept in
/// the state for `/status`. A break is logged at ERROR once and ends verification (see
/// [`ChainCheck::broken`]); a store failure is a warning, and the next pass tries again.
pub async fn audit_verify_pass(state: &AppState, keys: &AuditKeys, now: i64) -> ChainCheck {
    let check = state.chain_check();
    let Some(trail) = &state.audit else {
        return check;
    };
    if check.broken.is_some() {
        return check;
    }
    let store = &**trail.store();
    let sealers = keys.all();
    let pass = async {
        let anchor = store.audit_anchor().await?;
        let head = store.audit_head().await?;
        let prev = check.verified;
        match verify_to(store, &sealers, prev, &head).await {
            // Another instance pruned while this pass walked: the records it expected
            // were removed under a new anchor. Once more, from that anchor.
            Err(VerifyError::Break(_) | VerifyError::Anchor { .. })
                if store.audit_anchor().await? != anchor =>
            {
                verify_to(store, &sealers, prev, &head).await
            }
            other => other,
        }
    };
    let outcome = pass.await;
    let mut check = check;
    match outcome {
        Ok(v) => {
            check.verified = Some(v.end);
            check.verified_at = Some(now);
        }
        Err(VerifyError::Store(e)) => {
            tracing::warn!(error = %e, "audit chain verification could not read the store; retrying next interval");
        }
        Err(e) => {
            tracing::error!(error = %e, verified_through = check.verified.map_or(0, |h| h.seq), "the audit chain does not verify");
            check.broken = Some(e.to_string());
        }
    }
    state.set_chain_check(check.clone());
    check
}

/// The whole chain up to `head`, or on from `prev`.
async fn verify_to(
    store: &dyn AuditStore,
    sealers: &[&AuditSealer],
    prev: Option<ChainHead>,
    head: &ChainHead,
) -> Result<Verified, VerifyError> {
    match &prev {
        None => verify::verify_chain(store, sealers, head, |_| {}).await,
        Some(prev) => verify::verify_since(store, sealers, prev, head, |_| {}).await,
    }
}

/// One retention pass at `now` (Unix ms): unless another instance holds the scheduler
/// lease, prunes the records older than `days` days ([`verify::prune_before`]) and
/// records it as `audit.prune` (source `scheduler`, actor `scheduler:<holder>`; `detail`
/// `before`, `anchorSeq`, `recordsRemoved`, and `error` when it failed) — as `keyflow
/// audit prune` does. `Ok(None)`: another instance holds the lease, or there is no trail.
pub async fn audit_retention_pass(
    state: &AppState,
    keys: &AuditKeys,
    days: u32,
    holder: &str,
    lease_ms: i64,
    now: i64,
) -> Result<Option<PruneOutcome>, VerifyError> {
    let Some(trail) = &state.audit else {
        return Ok(None);
    };
    // The keystore's lease, read directly: its error is a store error, as the
    // pruning's own errors are.
    if !state
        .service
        .ring()
        .keystore()
        .try_lease(SCHEDULER_LEASE, holder, now, lease_ms)
        .await?
    {
        return Ok(None);
    }
    let cut = now.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
    let store = &**trail.store();
    let outcome = verify::prune_before(store, &keys.current, &keys.all(), cut, now, false).await;
    let mut event = AuditEvent::new(
        now,
        Source::Scheduler,
        format!("scheduler:{holder}"),
        "audit.prune",
    );
    let mut detail = json!({ "before": rfc3339(cut) });
    match &outcome {
        // Nothing before the cut: nothing changed, nothing recorded.
        Ok(o) if o.anchor.is_none() => return outcome.map(Some),
        Ok(o) => {
            event.items = Some(o.removed);
            detail["anchorSeq"] = json!(o.anchor.map(|a| a.seq));
            detail["recordsRemoved"] = json!(o.removed);
        }
        Err(e) => {
            event.result = match e {
                VerifyError::Store(_) | VerifyError::Prune { .. } => "unavailable",
                _ => "failed",
            }
            .into();
            if let VerifyError::Prune { anchor_seq, .. } = e {
                detail["anchorSeq"] = json!(anchor_seq);
                detail["recordsRemoved"] = json!(null);
            }
            detail["error"] = json!(e.to_string());
        }
    }
    event.detail = Some(detail);
    if let Err(e) = trail.record(event).await {
        tracing::error!(error = %e, "the audit.prune record was not written");
    }
    outcome.map(Some)
}

const DAY_MS: i64 = keyflow_kms::model::DAY_MS;

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_kms::scheduler::{Action, ActionKind, ActionOutcome};

    #[test]
    fn scheduler_passes_become_audit_events() {
        let action = |kind, outcome: ActionOutcome| Action {
            purpose: keyflow_kms::Purpose::new("userData").unwrap(),
            version: keyflow_kms::KeyVersion::new(3).unwrap(),
            kind,
            reason: "due".into(),
            outcome,
        };
        let report = PassReport {
            evaluated_at: "2026-01-01T00:00:00Z".into(),
            dry_run: false,
            ran: true,
            actions: vec![
                action(ActionKind::RotateDue, ActionOutcome::Applied),
                action(
                    ActionKind::Deprecate,
                    ActionOutcome::Failed("store down".into()),
                ),
                action(ActionKind::RotateBudget, ActionOutcome::AlreadyDone),
            ],
        };
        let events = scheduler_events("host/1", 7, &Ok(report.clone()));
        assert_eq!(events.len(), 3, "{events:?}");
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
        // The pass sums up: failed, for the purpose that failed.
        assert_eq!(
            (events[2].operation.as_str(), events[2].result.as_str()),
            ("scheduler.pass", "failed")
        );
        assert_eq!(events[2].purposes, vec!["userData".to_owned()]);
        assert_eq!(events[2].detail.as_ref().unwrap()["failed"], 1);
        // A quiet pass still says it ran; one held by another instance says nothing.
        let quiet = PassReport {
            actions: vec![],
            ..report.clone()
        };
        let events = scheduler_events("h", 7, &Ok(quiet.clone()));
        assert_eq!(
            (
                events.len(),
                events[0].operation.as_str(),
                events[0].result.as_str()
            ),
            (1, "scheduler.pass", "ok")
        );
        let elsewhere = PassReport {
            ran: false,
            ..quiet
        };
        assert!(scheduler_events("h", 7, &Ok(elsewhere)).is_empty());
        let failed = scheduler_events("h", 7, &Err(KmsError::Invalid("x")));
        assert_eq!(failed[0].operation, "scheduler.failed");
        assert_eq!(failed[0].result, "failed");
    }
}
