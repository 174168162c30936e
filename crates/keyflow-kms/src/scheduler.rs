//! The scheduler pass: rotate what is due, deprecate what is past its grace period.
//!
//! Driven only by persisted state (creation and state-change times, usage counters,
//! policies), so a pass is idempotent and any process can run it; a lease in the
//! keystore makes one process at a time do so, and rotations compare-and-set on the
//! expected active version, so even racing passes yield one new version. A failure is
//! reported and left for the next pass, which re-evaluates from the stored state.

use std::collections::HashMap;

use keyflow_core::{KeyVersion, Purpose};
use serde::Serialize;

use crate::admin::KeyAdmin;
use crate::clock::rfc3339;
use crate::model::{
    KeyStatus, KeyVersionRecord, Policy, StatusChange, StatusOutcome, VersionFilter,
};
use crate::Result;

/// Name of the scheduler's lease.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// What a pass decided for one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    /// The active version is inside its warn window or past its rotation date.
    RotateDue,
    /// The active version used up its encryption budget.
    RotateBudget,
    /// A rotating version passed its grace period.
    Deprecate,
}

impl ActionKind {
    /// The operation an audit record of this action names (a rotation, whatever its
    /// trigger, is `keys.rotate`, as when an admin rotates).
    pub fn operation(self) -> &'static str {
        match self {
            ActionKind::RotateDue | ActionKind::RotateBudget => "keys.rotate",
            ActionKind::Deprecate => "keys.deprecate",
        }
    }
}

/// One planned (and, unless a dry run, applied) action. Serializes as before the
/// fields were typed: `purpose` a string, `version` a number, `outcome` its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Key ring.
    #[serde(serialize_with = "as_text")]
    pub purpose: Purpose,
    /// The version acted on.
    #[serde(serialize_with = "as_number")]
    pub version: KeyVersion,
    /// What and why.
    pub kind: ActionKind,
    /// Human-readable reason (dates, counts).
    pub reason: String,
    /// What became of it.
    #[serde(serialize_with = "as_text")]
    pub outcome: ActionOutcome,
}

/// What became of a planned action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Planned, not yet tried (what [`plan`] returns).
    Planned,
    /// Done by this pass.
    Applied,
    /// Not tried: a dry run.
    Skipped,
    /// Another writer was first (nothing left to do).
    AlreadyDone,
    /// Tried and failed, with the error's message; the next pass retries it.
    Failed(String),
}

impl ActionOutcome {
    /// Whether this pass changed (or tried and failed to change) the key: the actions
    /// that get an audit record.
    pub fn is_attempted(&self) -> bool {
        matches!(self, ActionOutcome::Applied | ActionOutcome::Failed(_))
    }

    /// The error's message of a failed action.
    pub fn failure(&self) -> Option<&str> {
        match self {
            ActionOutcome::Failed(message) => Some(message),
            _ => None,
        }
    }
}

/// The text reports and logs show: `applied`, `skipped (dry run)`, `already done`,
/// `failed: …` (empty while planned).
impl std::fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionOutcome::Planned => Ok(()),
            ActionOutcome::Applied => f.write_str("applied"),
            ActionOutcome::Skipped => f.write_str("skipped (dry run)"),
            ActionOutcome::AlreadyDone => f.write_str("already done"),
            ActionOutcome::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}

fn as_text<S: serde::Serializer, T: std::fmt::Display>(
    value: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn as_number<S: serde::Serializer>(
    version: &KeyVersion,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u32(version.get())
}

/// The result of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    /// The instant the policies were evaluated at (RFC 3339).
    pub evaluated_at: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// False when another process held the scheduler lease (nothing was evaluated).
    pub ran: bool,
    /// Actions, in order.
    pub actions: Vec<Action>,
}

impl PassReport {
    /// Number of actions that failed.
    pub fn failures(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.outcome.failure().is_some())
            .count()
    }
}

/// Pure planning: the actions due at `at` for these versions and policies (a purpose
/// without a policy uses the default). Deprecations come before rotations so that a
/// version rotated in this pass is not also deprecated in it.
pub fn plan(
    versions: &[KeyVersionRecord],
    policies: &HashMap<Purpose, Policy>,
    at: i64,
) -> Vec<Action> {
    let policy = |p: &Purpose| policies.get(p).copied().unwrap_or_default();
    let mut deprecate = Vec::new();
    let mut rotate = Vec::new();
    for r in versions {
        let pol = policy(&r.purpose);
        let base = |kind, reason| Action {
            purpose: r.purpose.clone(),
            version: r.version,
            kind,
            reason,
            outcome: ActionOutcome::Planned,
        };
        match r.status {
            KeyStatus::Rotating => {
                let ends = pol.grace_ends_at(r.status_changed_at);
                if at >= ends {
                    deprecate.push(base(
                        ActionKind::Deprecate,
                        format!(
                            "grace period of {} days ended {}",
                            pol.grace_days,
                            rfc3339(ends)
                        ),
                    ));
                }
            }
            KeyStatus::Active => {
                if r.encryptions >= pol.max_encryptions {
                    rotate.push(base(
                        ActionKind::RotateBudget,
                        format!(
                            "{} encryptions reached the budget of {}",
                            r.encryptions, pol.max_encryptions
                        ),
                    ));
                } else {
                    let due = pol.due_at(r.created_at);
                    if at >= due {
                        rotate.push(base(
                            ActionKind::RotateDue,
                            format!(
                                "{}-day rotation due {} (warn window {} days from {})",
                                pol.rotation_days,
                                rfc3339(
                                    r.created_at.saturating_add(
                                        i64::from(pol.rotation_days)
                                            .saturating_mul(crate::model::DAY_MS)
                                    )
                                ),
                                pol.warn_days,
                                rfc3339(due)
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    deprecate.extend(rotate);
    deprecate
}

impl KeyAdmin<'_> {
    /// Runs one scheduler pass, evaluating the policies as of `at` (Unix ms). Unless
    /// `dry_run`, takes the scheduler lease for `holder` first (for `lease_ms`); if
    /// another holder has it, returns `ran == false` having done nothing.
    pub async fn scheduler_pass(
        self,
        at: i64,
        dry_run: bool,
        holder: &str,
        lease_ms: i64,
    ) -> Result<PassReport> {
        let mut report = PassReport {
            evaluated_at: rfc3339(at),
            dry_run,
            ran: false,
            actions: Vec::new(),
        };
        if !dry_run {
            let now = self.ring.clock.now_millis();
            if !self
                .ring
                .store
                .try_lease(SCHEDULER_LEASE, holder, now, lease_ms)
                .await?
            {
                return Ok(report);
            }
            // Budgets are judged on persisted counters: persist ours first.
            if let Err(e) = self.ring.flush_usage().await {
                tracing::warn!(error = %e, "scheduler: could not flush usage counters");
            }
        }
        report.ran = true;
        let versions = self
            .ring
            .store
            .list_versions(&VersionFilter::default())
            .await?;
        let policies: HashMap<Purpose, Policy> =
            self.ring.store.list_policies().await?.into_iter().collect();
        report.actions = plan(&versions, &policies, at);
        for action in &mut report.actions {
            action.outcome = if dry_run {
                ActionOutcome::Skipped
            } else {
                match self.apply(action).await {
                    Ok(true) => ActionOutcome::Applied,
                    Ok(false) => ActionOutcome::AlreadyDone,
                    Err(e) => {
                        tracing::warn!(purpose = %action.purpose, version = %action.version, error = %e, "scheduler action failed; the next pass retries it");
                        ActionOutcome::Failed(e.to_string())
                    }
                }
            };
        }
        Ok(report)
    }

    async fn apply(self, action: &Action) -> Result<bool> {
        let (purpose, version) = (&action.purpose, action.version);
        match action.kind {
            ActionKind::RotateDue | ActionKind::RotateBudget => {
                let done = self.rotate_if_active(purpose, version).await?;
                if let Some(r) = &done {
                    tracing::info!(purpose = %purpose, old = %r.old_version, new = %r.new_version, reason = %action.reason, "scheduler rotated");
                }
                Ok(done.is_some())
            }
            ActionKind::Deprecate => {
                let change = StatusChange {
                    purpose: purpose.clone(),
                    version,
                    from: vec![KeyStatus::Rotating],
                    to: KeyStatus::Deprecated,
                    reason: None,
                    now: self.ring.clock.now_millis(),
                };
                let outcome = self.ring.store.set_status(&change).await?;
                self.ring.cache.invalidate(purpose);
                Ok(outcome == StatusOutcome::Changed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DAY_MS, DEK_ALGORITHM};

    fn rec(
        p: &str,
        v: u32,
        status: KeyStatus,
        created: i64,
        changed: i64,
        n: u64,
    ) -> KeyVersionRecord {
        KeyVersionRecord {
            purpose: Purpose::new(p).unwrap(),
            version: KeyVersion::new(v).unwrap(),
            status,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(vec![1; 60]),
            kek_id: "k".into(),
            created_at: created,
            status_changed_at: changed,
            encryptions: n,
            revoked_reason: None,
        }
    }

    #[test]
    fn plans_by_age_budget_and_grace() {
        let t0 = 1_800_000_000_000;
        let versions = vec![
            rec("a", 1, KeyStatus::Rotating, t0, t0 + 10 * DAY_MS, 0),
            rec(
                "a",
                2,
                KeyStatus::Active,
                t0 + 10 * DAY_MS,
                t0 + 10 * DAY_MS,
                0,
            ),
            rec("b", 1, KeyStatus::Active, t0, t0, 5),
            rec("c", 1, KeyStatus::Revoked, t0, t0, 0),
        ];
        let mut policies = HashMap::new();
        policies.insert(
            Purpose::new("b").unwrap(),
            Policy {
                max_encryptions: 5,
                ..Policy::default()
            },
        );
        // Day 20: only b (budget).
        let p = plan(&versions, &policies, t0 + 20 * DAY_MS);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].purpose.as_str(), p[0].kind),
            ("b", ActionKind::RotateBudget)
        );
        // Day 40: a:v1 past its 30-day grace (from day 10).
        let p = plan(&versions, &policies, t0 + 40 * DAY_MS);
        assert_eq!(p[0].kind, ActionKind::Deprecate);
        assert_eq!(p.len(), 2);
        // Day 93 = 10 + 90 - 7: a:v2 enters its warn window. Deprecations first.
        let p = plan(&versions, &policies, t0 + 93 * DAY_MS);
        let kinds: Vec<_> = p
            .iter()
            .map(|a| (a.purpose.as_str(), a.version.get(), a.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a", 1, ActionKind::Deprecate),
                ("a", 2, ActionKind::RotateDue),
                ("b", 1, ActionKind::RotateBudget)
            ]
        );
        // One millisecond earlier, a:v2 is not due yet.
        let p = plan(&versions, &policies, t0 + 93 * DAY_MS - 1);
        assert!(p
            .iter()
            .all(|a| a.purpose.as_str() != "a" || a.kind == ActionKind::Deprecate));
    }

    #[test]
    fn actions_serialize_as_text_and_numbers() {
        let action = Action {
            purpose: Purpose::new("a").unwrap(),
            version: KeyVersion::new(3).unwrap(),
            kind: ActionKind::RotateDue,
            reason: "due".into(),
            outcome: ActionOutcome::Failed("store down".into()),
        };
        assert_eq!(
            serde_json::to_value(&action).unwrap(),
            serde_json::json!({
                "purpose": "a", "version": 3, "kind": "rotateDue", "reason": "due",
                "outcome": "failed: store down"
            })
        );
        for (outcome, text) in [
            (ActionOutcome::Planned, ""),
            (ActionOutcome::Applied, "applied"),
            (ActionOutcome::Skipped, "skipped (dry run)"),
            (ActionOutcome::AlreadyDone, "already done"),
        ] {
            assert_eq!(outcome.to_string(), text);
        }
    }
}
