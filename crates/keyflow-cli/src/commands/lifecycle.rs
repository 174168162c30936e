//! `keyflow keys policy | rotate-due | revoke | reinstate | destroy`.

use keyflow_kms::audit::AuditEvent;
use keyflow_kms::clock::{parse_rfc3339, Clock, SystemClock};
use keyflow_kms::scheduler::Action;
use keyflow_kms::{KeyVersion, Policy, VersionChange};
use serde_json::json;

use super::trail::Trail;
use super::{open_audited, parse_purpose};
use crate::config::Config;
use crate::error::CliError;

fn version(n: u32) -> Result<KeyVersion, CliError> {
    KeyVersion::new(n).map_err(|e| CliError::Usage(format!("--version: {e}")))
}

/// `keys policy`: prints the policy after applying the given changes.
pub async fn policy(
    config: &Config,
    purpose: &str,
    changes: [Option<u32>; 3],
    max_encryptions: Option<u64>,
) -> Result<(), CliError> {
    let purpose = parse_purpose(purpose)?;
    let (service, trail) = open_audited(config).await?;
    let mut p: Policy = service.keys().policy(&purpose).await?;
    let [rotation, grace, warn] = changes;
    let changed = changes.iter().any(Option::is_some) || max_encryptions.is_some();
    p.rotation_days = rotation.unwrap_or(p.rotation_days);
    p.grace_days = grace.unwrap_or(p.grace_days);
    p.warn_days = warn.unwrap_or(p.warn_days);
    p.max_encryptions = max_encryptions.unwrap_or(p.max_encryptions);
    if changed {
        p.validate()
            .map_err(|e| CliError::Usage(format!("policy: {e}")))?;
        let mut event = trail.event("keys.policy");
        event.purposes = vec![purpose.to_string()];
        event.detail = Some(json!({ "policy": p }));
        let outcome = service.keys().set_policy(&purpose, &p).await;
        trail
            .conclude(event, outcome.map_err(CliError::from))
            .await?;
    }
    println!("{}", json!({ "purpose": purpose.as_str(), "policy": p }));
    Ok(())
}

/// `keys rotate-due`: one scheduler pass; exit 1 if any action failed.
pub async fn rotate_due(config: &Config, at: Option<&str>, dry_run: bool) -> Result<(), CliError> {
    let now = SystemClock.now_millis();
    let at = match at {
        None => now,
        Some(s) => parse_rfc3339(s)
            .ok_or_else(|| CliError::Usage("--at: expected an RFC 3339 instant".into()))?,
    };
    let (service, trail) = open_audited(config).await?;
    let holder = format!("cli/{}", std::process::id());
    let report = service
        .keys()
        .scheduler_pass(at, dry_run, &holder, 60_000)
        .await?;
    let audited = record_pass(&trail, &report.actions, dry_run).await;
    if report.ran && !dry_run {
        service
            .keys()
            .release_lease(keyflow_kms::scheduler::SCHEDULER_LEASE, &holder)
            .await?;
    }
    service.ring().flush_usage().await?;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| CliError::Config(e.to_string()))?
    );
    if !report.ran {
        return Err(CliError::Failed(
            "another process holds the scheduler lease; nothing was done".into(),
        ));
    }
    audited?;
    match report.failures() {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "{n} scheduler action(s) failed; they are retried by the next pass"
        ))),
    }
}

/// One record per action applied or failed, in one transaction. Actions another writer
/// had already done changed nothing here (that writer records them); a dry run changes
/// nothing at all.
async fn record_pass(trail: &Trail, actions: &[Action], dry_run: bool) -> Result<(), CliError> {
    if dry_run {
        return Ok(());
    }
    let events: Vec<AuditEvent> = actions
        .iter()
        .filter(|a| a.outcome.is_attempted())
        .map(|a| {
            let operation = a.kind.operation();
            let mut e = trail.event(operation);
            e.purposes = vec![a.purpose.to_string()];
            e.versions = vec![a.version.get()];
            let mut detail = json!({ "trigger": "rotate-due", "kind": a.kind, "reason": a.reason });
            if let Some(error) = a.outcome.failure() {
                e.result = "failed".into();
                detail["error"] = json!(error);
            }
            e.detail = Some(detail);
            e
        })
        .collect();
    let n = events.len();
    trail.append(events).await.map_err(|e| {
        CliError::Failed(format!(
            "the scheduler pass was done, but the audit records of its {n} action(s) could not be written: {e}"
        ))
    })
}

/// `keys revoke | reinstate | destroy`.
pub async fn change(
    config: &Config,
    purpose: &str,
    v: u32,
    change: VersionChange<'_>,
) -> Result<(), CliError> {
    let purpose = parse_purpose(purpose)?;
    let v = version(v)?;
    let (service, trail) = open_audited(config).await?;
    let mut event = trail.event(match change {
        VersionChange::Revoke(_) => "keys.revoke",
        VersionChange::Reinstate => "keys.reinstate",
        VersionChange::Destroy => "keys.destroy",
    });
    event.purposes = vec![purpose.to_string()];
    event.versions = vec![v.get()];
    if let VersionChange::Revoke(reason) = change {
        event.detail = Some(json!({ "reason": reason }));
    }
    let outcome = service.keys().change_version(&purpose, v, change).await;
    if let Ok(r) = &outcome {
        let mut out = keyflow_server::wire::key_metadata(r);
        out["kekId"] = json!(r.kek_id);
        println!("{out}");
    }
    trail
        .conclude(event, outcome.map_err(CliError::from))
        .await?;
    Ok(())
}
