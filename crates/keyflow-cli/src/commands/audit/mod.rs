//! `keyflow audit list | verify | export | checkpoint | prune`: reading, checking and
//! trimming the audit chain.
//!
//! `list` and `export` only read the database; the others need the KEK (and any retired
//! KEK files a KEK rotation left beside it), because each record's MAC is keyed by the
//! KEK that was current when it was sealed. Every command that verifies starts after the
//! retention anchor when `prune` stored one (its tag checked first), and `checkpoint` and
//! `prune` refuse to act on a chain that does not verify.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyflow_kms::audit::{AuditFilter, StoredAudit, MAX_PAGE};
use keyflow_kms::clock::{parse_rfc3339, rfc3339};
use keyflow_kms::keyflow_core::to_hex;
use serde_json::{json, Value};

use super::open_stores;
use crate::config::Config;
use crate::error::CliError;

mod chain;
mod keys;
mod prune;

use chain::{checkpoint, verify};
use keys::recover_before_reading;
use prune::prune;

pub use keyflow_server::launch::OLD_PASSWORD_ENV;
/// Environment variable giving `audit prune` its default `--older-than-days`.
pub use keyflow_server::settings::RETENTION_DAYS_ENV;
/// Largest checkpoint file read (a real one is ~300 bytes).
const MAX_CHECKPOINT_LEN: u64 = 64 * 1024;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List records, newest first: a table, or one JSON object per line with --json.
    List(ListArgs),
    /// Check the whole chain (needs the KEK): exit 0 if intact, 1 naming the first bad
    /// record. Starts after the retention anchor if `audit prune` left one. Records
    /// sealed before a KEK rotation are checked with the retired KEK file; if its
    /// password differs from KEK_PASSWORD, set KEYFLOW_OLD_KEK_PASSWORD.
    Verify(VerifyArgs),
    /// Every record, oldest first, one JSON object per line (the event plus seq, kekId
    /// and mac), for a SIEM.
    Export {
        /// Only records at or after this RFC 3339 instant.
        #[arg(long)]
        since: Option<String>,
    },
    /// Verify the chain, then print a signed checkpoint of its head (JSON) to keep
    /// outside the database: `audit verify --checkpoint FILE` later proves that no record
    /// up to it was removed, even if the tail was cut and the head row moved back.
    Checkpoint(CheckpointArgs),
    /// Retention: verify the chain, then delete the records older than a cut, leaving a
    /// signed anchor that verification starts from. Recorded as `audit.prune`.
    Prune(PruneArgs),
}

/// `keyflow audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A checkpoint from `audit checkpoint` (repeatable): the chain must still reach its
    /// record, with the same MAC.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
}

/// `keyflow audit checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Write the checkpoint to FILE (mode 0600, atomically; refused if it exists,
    /// unless --force) instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// `keyflow audit prune`: the cut is `--before`, or `--older-than-days` (whose default
/// is KEYFLOW_AUDIT_RETENTION_DAYS).
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete records older than this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339")]
    pub before: Option<String>,
    /// Delete records older than this many days (default: KEYFLOW_AUDIT_RETENTION_DAYS,
    /// when set).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub older_than_days: Option<u32>,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

/// `keyflow audit list`: every given condition must hold.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Records at or after this RFC 3339 instant.
    #[arg(long)]
    pub since: Option<String>,
    /// Records before this RFC 3339 instant.
    #[arg(long)]
    pub until: Option<String>,
    /// This actor exactly (a token id, `cli:<user>`, `scheduler:<instance>`…).
    #[arg(long)]
    pub actor: Option<String>,
    /// Records involving this purpose.
    #[arg(long)]
    pub purpose: Option<String>,
    /// This operation exactly (`encrypt`, `keys.rotate`, `tokens.create`…).
    #[arg(long)]
    pub operation: Option<String>,
    /// This result exactly (`ok` or an error code).
    #[arg(long)]
    pub result: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// One JSON object per line (the event plus seq, kekId and mac).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, cmd: &AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::List(args) => list(config, args).await,
        AuditCommand::Verify(args) => verify(config, args).await,
        AuditCommand::Export { since } => export(config, since.as_deref()).await,
        AuditCommand::Checkpoint(args) => checkpoint(config, args).await,
        AuditCommand::Prune(args) => prune(config, args).await,
    }
}

fn instant(flag: &str, value: Option<&str>) -> Result<Option<i64>, CliError> {
    value
        .map(|s| {
            parse_rfc3339(s).ok_or_else(|| {
                CliError::Usage(format!(
                    "{flag}: expected an RFC 3339 instant like 2026-03-01T00:00:00Z"
                ))
            })
        })
        .transpose()
}

/// A record as exported: the sealed event's own fields (exactly as stored) plus `seq`,
/// `kekId` and `mac` (hex). A body that is not a JSON object (tampering) is given as
/// `body`, a string, beside the indexed copies.
pub fn record_json(r: &StoredAudit) -> Value {
    let mut v = match serde_json::from_str::<Value>(&r.body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => json!({
            "time": r.time,
            "actor": r.actor,
            "operation": r.operation,
            "result": r.result,
            "purposes": r.purposes,
            "body": r.body,
        }),
    };
    v["seq"] = json!(r.seq);
    v["kekId"] = json!(r.kek_id);
    v["mac"] = json!(to_hex(&r.mac));
    v
}

fn out_err(e: std::io::Error) -> CliError {
    CliError::Io(std::io::Error::new(
        e.kind(),
        format!("cannot write to stdout: {e}"),
    ))
}

async fn list(config: &Config, args: &ListArgs) -> Result<(), CliError> {
    let mut filter = AuditFilter {
        since: instant("--since", args.since.as_deref())?,
        until: instant("--until", args.until.as_deref())?,
        actor: args.actor.clone(),
        purpose: args.purpose.clone(),
        operation: args.operation.clone(),
        result: args.result.clone(),
        before: None,
        limit: 0,
    };
    let stores = open_stores(config).await?;
    recover_before_reading(config, &stores).await?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if !args.json {
        writeln!(
            out,
            "{:>8}  {:<24}  {:<22}  {:<20}  {:<18}  KEYS",
            "SEQ", "TIME", "ACTOR", "OPERATION", "RESULT"
        )
        .map_err(out_err)?;
    }
    let mut remaining = args.limit;
    while remaining > 0 {
        filter.limit = remaining.min(MAX_PAGE);
        let page = stores.audit.audit_query(&filter).await?;
        for r in &page {
            if args.json {
                writeln!(out, "{}", record_json(r)).map_err(out_err)?;
            } else {
                writeln!(out, "{}", table_row(r)).map_err(out_err)?;
            }
        }
        let Some(last) = page.last() else { break };
        filter.before = Some(last.seq);
        remaining = remaining.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
    }
    out.flush().map_err(out_err)
}

fn table_row(r: &StoredAudit) -> String {
    let versions = r.event().map(|e| e.versions).unwrap_or_default();
    let mut keys = r.purposes.join(",");
    if !versions.is_empty() {
        let v: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
        keys = format!("{keys} {}", v.join(","));
    }
    format!(
        "{:>8}  {:<24}  {:<22}  {:<20}  {:<18}  {}",
        r.seq,
        rfc3339(r.time),
        r.actor,
        r.operation,
        r.result,
        keys.trim()
    )
}

async fn export(config: &Config, since: Option<&str>) -> Result<(), CliError> {
    let since = instant("--since", since)?;
    let stores = open_stores(config).await?;
    recover_before_reading(config, &stores).await?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut after = 0;
    loop {
        let page = stores.audit.audit_scan(after, MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in page.iter().filter(|r| since.is_none_or(|s| r.time >= s)) {
            writeln!(out, "{}", record_json(r)).map_err(out_err)?;
        }
    }
    out.flush().map_err(out_err)
}
