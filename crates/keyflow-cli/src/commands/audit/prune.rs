//! `audit prune`: removing records older than the retention cut, behind a signed anchor.

use keyflow_kms::audit::verify::{self, VerifyError};
use keyflow_kms::clock::{rfc3339, Clock, SystemClock};
use serde_json::json;

use super::chain::Chain;
use super::{instant, PruneArgs, DAY_MS, RETENTION_DAYS_ENV};
use crate::commands::trail::Trail;
use crate::config::Config;
use crate::error::CliError;

/// The prune's cut (Unix ms): records strictly older are removed. `--before`, else
/// `--older-than-days`, else KEYFLOW_AUDIT_RETENTION_DAYS.
fn cut(args: &PruneArgs, now: i64) -> Result<i64, CliError> {
    let days = |n: u32| now.saturating_sub(i64::from(n).saturating_mul(DAY_MS));
    match (&args.before, args.older_than_days) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "give --before or --older-than-days, not both".into(),
        )),
        (Some(before), None) => instant("--before", Some(before)).map(|t| t.unwrap_or(now)),
        (None, Some(n)) => Ok(days(n)),
        (None, None) => match std::env::var(RETENTION_DAYS_ENV) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .map(days)
                .ok_or_else(|| {
                    CliError::Config(format!(
                        "{RETENTION_DAYS_ENV}: expected a whole number of days, 1 or more"
                    ))
                }),
            _ => Err(CliError::Usage(format!(
                "give --before RFC3339 or --older-than-days N (or set {RETENTION_DAYS_ENV})"
            ))),
        },
    }
}

/// Verifies the chain, finds the last record older than the cut, signs an anchor of it,
/// prunes up to it and records `audit.prune`.
///
/// "Older than the cut" is taken from the start of the chain: the anchor is the last
/// record of the run of records all older than the cut, so a record sealed late with an
/// early time (a failed KEK unlock noted before it could be sealed) never takes newer
/// records with it. The `audit.prune` record comes after the anchor, so it survives the
/// prune it describes. A dry run, or a cut with nothing before it, changes nothing and
/// is not recorded.
pub(super) async fn prune(config: &Config, args: &PruneArgs) -> Result<(), CliError> {
    let now = SystemClock.now_millis();
    let cut = cut(args, now)?;
    let chain = Chain::open(config).await?;
    let trail = Trail::new(config, chain.stores.audit.clone(), &chain.kek)?;
    let mut event = trail.event("audit.prune");
    let outcome = verify::prune_before(
        &*chain.stores.audit,
        &chain.current,
        &chain.sealers(),
        cut,
        now,
        args.dry_run,
    )
    .await;
    let report = |removed: u64, anchor: u64| {
        json!({
            "dryRun": args.dry_run,
            "before": rfc3339(cut),
            "recordsRemoved": removed,
            "anchorSeq": anchor,
        })
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(VerifyError::Prune { anchor_seq, source }) => {
            event.detail = Some(json!({
                "before": rfc3339(cut),
                "anchorSeq": anchor_seq,
                "recordsRemoved": None::<u64>,
            }));
            return trail.conclude(event, Err(CliError::Store(source))).await;
        }
        // Nothing is pruned from a chain that does not verify; the refusal is recorded.
        Err(e) if args.dry_run => return Err(chain.failed(e)),
        Err(e) => return trail.conclude(event, Err(chain.failed(e))).await,
    };
    let Some(at) = outcome.anchor else {
        println!("{}", report(0, outcome.start));
        return Ok(());
    };
    if args.dry_run {
        println!("{}", report(outcome.removed, at.seq));
        return Ok(());
    }
    event.items = Some(outcome.removed);
    event.detail = Some(json!({
        "before": rfc3339(cut),
        "anchorSeq": at.seq,
        "recordsRemoved": outcome.removed,
    }));
    let removed = trail.conclude(event, Ok(outcome.removed)).await?;
    println!("{}", report(removed, at.seq));
    Ok(())
}
