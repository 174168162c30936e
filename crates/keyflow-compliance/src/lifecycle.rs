//! Checks shared by several standards: cryptoperiods, retirement, the audit trail.

use crate::report::{Control, ControlBuilder};
use crate::snapshot::Snapshot;
use crate::util::{age_days, days_ago, policy_for, thousands, when, DAY_MS};

/// The AES-GCM random-nonce bound (NIST SP 800-38D §8.3).
pub const GCM_LIMIT: u64 = 1 << 32;

/// A verification of the audit chain older than this many days is stale.
pub const VERIFY_MAX_AGE_DAYS: i64 = 7;

/// A `rotating` version this many days past its grace period means the scheduler
/// did not run (it runs hourly by default).
const DEPRECATION_SLACK_MS: i64 = DAY_MS;

/// PCI DSS 3.7.4 (and the NIST and ISO controls that reuse it): each active version
/// against its policy, the rotations that happened and the ones that failed.
pub(crate) fn cryptoperiods(mut c: ControlBuilder, s: &Snapshot) -> Control {
    let active: Vec<_> = s.keys.iter().filter(|k| k.status == "active").collect();
    if active.is_empty() {
        c.not_applicable("no active key version: no cryptoperiod runs");
        return c.build();
    }
    let mut purposes: Vec<&str> = active.iter().map(|k| k.purpose.as_str()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    let within_90 = purposes
        .iter()
        .filter(|p| policy_for(s, p).rotation_days <= 90)
        .count();
    c.fact(format!(
        "{within_90} of {} purposes rotate ≤ 90 d",
        purposes.len()
    ));
    let Some(oldest) = active
        .iter()
        .max_by_key(|k| s.at.saturating_sub(k.created_at))
    else {
        return c.build();
    };
    let oldest_policy = policy_for(s, &oldest.purpose);
    let oldest_age = age_days(s.at, oldest.created_at);
    c.fact(format!(
        "oldest active key {oldest_age} days ({}:v{}); policy {}",
        oldest.purpose, oldest.version, oldest_policy.rotation_days
    ));
    c.measure("oldestActiveAgeDays", oldest_age)
        .measure("oldestActivePolicyDays", oldest_policy.rotation_days)
        .measure("purposes", purposes.len())
        .measure("purposesWithin90Days", within_90);
    let (mut overdue, mut due, mut spent) = (Vec::new(), Vec::new(), Vec::new());
    for k in &active {
        let p = policy_for(s, &k.purpose);
        let end = k
            .created_at
            .saturating_add(i64::from(p.rotation_days).saturating_mul(DAY_MS));
        let due_at = end.saturating_sub(i64::from(p.warn_days).saturating_mul(DAY_MS));
        let name = format!("{}:v{}", k.purpose, k.version);
        if s.at > end {
            overdue.push(format!(
                "{name} is {} days old, past its {}-day cryptoperiod",
                age_days(s.at, k.created_at),
                p.rotation_days
            ));
        } else if s.at >= due_at {
            due.push(format!(
                "{name} has been due for rotation since {} and is still active",
                when(due_at)
            ));
        }
        let budget = p.max_encryptions.min(GCM_LIMIT);
        if k.encryptions >= budget {
            spent.push(format!(
                "{name} made {} encryptions (budget {})",
                thousands(k.encryptions),
                thousands(budget)
            ));
        }
    }
    c.measure("pastCryptoperiod", overdue.len())
        .measure("dueNotRotated", due.len())
        .measure("budgetSpent", spent.len());
    for o in overdue {
        c.fail(o, "Rotate now (`keyflow keys rotate-due`) and check that the scheduler runs (KEYFLOW_SCHEDULER_INTERVAL_SECS).");
    }
    for d in due {
        c.warn(d, "Rotation is configured but has not happened: check the scheduler, or run `keyflow keys rotate-due`.");
    }
    for b in spent {
        c.fail(b, "Rotate the purpose: the encryption budget is spent.");
    }
    let ev = &s.events;
    match &ev.last_rotation {
        Some(r) => {
            c.fact(format!(
                "last rotation {} ({}) by {}",
                when(r.at),
                days_ago(age_days(s.at, r.at)),
                r.actor
            ));
        }
        None => {
            c.fact("no rotation recorded in the audit trail");
        }
    }
    if let Some(f) = &ev.last_rotation_failure {
        let after_success = ev.last_rotation.as_ref().is_none_or(|r| f.seq > r.seq);
        if after_success {
            let why = f
                .detail
                .as_ref()
                .and_then(|d| d["error"].as_str())
                .unwrap_or(f.result.as_str())
                .to_owned();
            c.warn(
                format!("the last rotation attempt failed {}: {why}", when(f.at)),
                "Look at the scheduler's failure in the audit trail and fix its cause.",
            );
        }
    }
    c.pass();
    c.build()
}

/// PCI DSS 3.7.5: versions leave use on time (rotating → deprecated after the grace
/// period), revocations and destructions.
pub(crate) fn retirement(mut c: ControlBuilder, s: &Snapshot) -> Control {
    if s.keys.is_empty() {
        c.not_applicable("no key versions yet");
        return c.build();
    }
    let n = |st: &str| s.keys.iter().filter(|k| k.status == st).count();
    let (rotating, deprecated, revoked, destroyed) =
        (n("rotating"), n("deprecated"), n("revoked"), n("destroyed"));
    c.measure("rotating", rotating)
        .measure("deprecated", deprecated)
        .measure("revoked", revoked)
        .measure("destroyed", destroyed);
    c.fact(format!(
        "{rotating} rotating and {deprecated} deprecated versions decrypt only; {revoked} revoked (no decryption); {destroyed} destroyed (material erased)"
    ));
    let mut late = Vec::new();
    for k in s.keys.iter().filter(|k| k.status == "rotating") {
        let p = policy_for(s, &k.purpose);
        let end = k
            .status_changed_at
            .saturating_add(i64::from(p.grace_days).saturating_mul(DAY_MS));
        if s.at > end.saturating_add(DEPRECATION_SLACK_MS) {
            late.push(format!("{}:v{}", k.purpose, k.version));
        }
    }
    c.measure("deprecationOverdue", late.len());
    if !late.is_empty() {
        late.truncate(5);
        c.warn(
            format!(
                "rotating versions past their grace period but not deprecated: {}",
                late.join(", ")
            ),
            "Check that the scheduler runs; `keyflow keys rotate-due` deprecates them now.",
        );
    }
    let revocable = s
        .keys
        .iter()
        .filter(|k| k.status == "revoked" && k.has_material)
        .count();
    if revocable > 0 {
        c.fact(format!(
            "{revocable} revoked versions still hold material (reversible until destroyed)"
        ));
    }
    c.pass();
    c.build()
}

/// PCI DSS 10.2 (and GDPR Art. 32(1)(d)'s audit half): the trail is on, records every
/// operation, and its chain verified recently.
pub(crate) fn audit(mut c: ControlBuilder, s: &Snapshot) -> Control {
    let a = &s.audit;
    c.measure("enabled", a.enabled)
        .measure("headSeq", a.head_seq);
    if !a.enabled {
        c.fail(
            "the audit trail is off: operations are not recorded",
            "Turn the audit trail on (unset KEYFLOW_AUDIT=off).",
        );
        return c.build();
    }
    c.fact(format!(
        "audit trail on ({}{}), head at record {}",
        if a.journaled {
            "journaled before the database"
        } else {
            "written to the database"
        },
        if a.fail_closed {
            ", fail-closed"
        } else {
            ", fail-open"
        },
        thousands(a.head_seq)
    ));
    if a.failing {
        c.fail(
            "the audit trail cannot be written right now",
            "Restore the database or journal storage the trail writes to.",
        );
    }
    if !a.fail_closed && s.production {
        c.warn(
            "fail-open in production: an unwritable trail does not stop operations",
            "Set KEYFLOW_AUDIT_FAILURE=closed.",
        );
    }
    if a.routes_total > 0 {
        c.measure("routesAudited", a.routes_audited)
            .measure("routesTotal", a.routes_total);
        if a.routes_audited < a.routes_total {
            c.fail(
                format!(
                    "{} of {} API routes are recorded",
                    a.routes_audited, a.routes_total
                ),
                "Record every route (audit::ROUTES).",
            );
        } else {
            c.fact(format!(
                "every API route ({}) is recorded, refusals included; CLI key, token, KEK, backup and audit commands are recorded too",
                a.routes_total
            ));
        }
    }
    match &a.verification {
        None => {
            c.warn(
                "the chain has not been verified yet",
                "Run `keyflow audit verify` (a running server verifies in the background, KEYFLOW_AUDIT_VERIFY_SECS).",
            );
        }
        Some(v) => {
            let age = age_days(s.at, v.at);
            c.measure("verifiedThrough", v.through_seq)
                .measure("verifiedAgeDays", age);
            if let Some(broken) = &v.broken {
                c.fail(
                    format!("the audit chain does not verify: {broken}"),
                    "Investigate: compare with the last checkpoint (`keyflow audit verify --checkpoint`).",
                );
            } else {
                c.fact(format!(
                    "audit chain verified through record {} {} ({}, {})",
                    thousands(v.through_seq),
                    when(v.at),
                    days_ago(age),
                    v.by
                ));
                if age > VERIFY_MAX_AGE_DAYS {
                    c.warn(
                        format!("the last verification is older than {VERIFY_MAX_AGE_DAYS} days"),
                        "Verify the chain at least weekly.",
                    );
                }
            }
        }
    }
    c.pass();
    c.build()
}
