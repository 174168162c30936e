//! `keyflow audit list | verify | export | checkpoint | prune`: reading, checking and
//! trimming the audit chain.
//!
//! `list` and `export` only read the database; the others need the KEK (and any retired
//! KEK files a KEK rotation left beside it), because each record's MAC is keyed by the
//! KEK that was current when it was sealed. Every command that verifies starts after the
//! retention anchor when `prune` stored one (its tag checked first), and `checkpoint` and
//! `prune` refuse to act on a chain that does not verify.

use std::collections::BTreeMap;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use keyflow_kms::atomic_file;
use keyflow_kms::audit::recover::{self, Outcome, JOURNAL_DAMAGED};
use keyflow_kms::audit::verify::{self, CheckpointProblem, VerifyError};
use keyflow_kms::audit::{
    journal, AuditFilter, AuditSealer, AuditStore, ChainBreak, ChainHead, Checkpoint, StoredAudit,
    MAX_PAGE,
};
use keyflow_kms::clock::{parse_rfc3339, rfc3339, Clock, SystemClock};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{Kek, KekFile};
use keyflow_kms::keyflow_core::{to_hex, OsRng};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::trail::Trail;
use super::{open_stores, Stores};
use crate::config::Config;
use crate::error::CliError;

/// Environment variable holding the password of retired KEK files whose password was
/// changed since (`kek change-password` re-seals only the current file).
pub const OLD_PASSWORD_ENV: &str = "KEYFLOW_OLD_KEK_PASSWORD";
/// Environment variable giving `audit prune` its default `--older-than-days`.
pub const RETENTION_DAYS_ENV: &str = "KEYFLOW_AUDIT_RETENTION_DAYS";
/// Largest KEK file read when looking for retired KEKs (a real one is ~400 bytes).
const MAX_KEK_FILE_LEN: usize = 64 * 1024;
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

/// The audit chain as a verifying command sees it: the database, the KEK, every audit
/// key that can check a record, and where verification starts.
struct Chain {
    stores: Stores,
    kek: Kek,
    /// The current KEK's audit key.
    current: AuditSealer,
    /// The audit keys of retired KEK files that unlocked.
    retired: Vec<AuditSealer>,
    kek_path: PathBuf,
    /// The retention anchor as stored, unchecked (`None`: the chain starts at record 1).
    anchor: Option<Checkpoint>,
}

impl Chain {
    /// Unlocks the KEK (and the retired ones) and reads the retention anchor.
    async fn open(config: &Config) -> Result<Self, CliError> {
        let text = config.kek_password_text()?;
        let password = KekPassword::new(text.to_string(), config.production)?;
        let stores = open_stores(config).await?;
        let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
        let current = AuditSealer::new(&kek)?;
        let retired = retired_audit_sealers(&config.kek_path, &text, kek.id());
        recover_journals(config, &stores.audit, &current, &retired).await?;
        Ok(Self {
            current,
            retired,
            kek,
            kek_path: config.kek_path.clone(),
            anchor: stores.audit.audit_anchor().await?,
            stores,
        })
    }

    /// Where verification starts: the anchor's record once its tag verifies and
    /// `audit prune` made it, or record 0.
    fn start(&self) -> Result<ChainHead, CliError> {
        verify::anchor_start(self.anchor.as_ref(), &self.sealers()).map_err(|e| self.failed(e))
    }

    /// The sequence number verification starts after (unchecked; see [`Chain::start`]).
    fn start_seq(&self) -> u64 {
        self.anchor.as_ref().map_or(0, |a| a.seq)
    }

    fn sealers(&self) -> Vec<&AuditSealer> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .collect()
    }

    /// The head `cp` vouches for, once its tag verifies under the key of the KEK it
    /// names; otherwise why not.
    fn vouched(&self, cp: &Checkpoint) -> Result<ChainHead, String> {
        verify::vouched(cp, &self.sealers()).map_err(|p| self.why(&p, cp.seq))
    }

    /// What is wrong with a checkpoint (or the anchor) at `seq`, with the hints only the
    /// CLI can give: where the retired KEK file would be, which passwords were tried.
    fn why(&self, problem: &CheckpointProblem, seq: u64) -> String {
        match problem {
            CheckpointProblem::UnknownKek(kek_id) => format!(
                "is signed under KEK {kek_id}, whose key is not available here (another keystore's, or its retired KEK file {} is missing or unlocks with neither KEK_PASSWORD nor {OLD_PASSWORD_ENV})",
                kek_provider::retired_path(&self.kek_path, kek_id).display()
            ),
            CheckpointProblem::BadTag(e) => format!("does not verify: {e}"),
            CheckpointProblem::NotAnAnchor => format!(
                "is an operator checkpoint, not an anchor written by `audit prune`: it was put there by hand, and records up to {seq} may have been deleted with it"
            ),
            other => other.to_string(),
        }
    }

    /// Verifies the records after `start` up to `head` (read by the caller first, so
    /// records appended meanwhile by a running server are not taken for a cut tail),
    /// handing each verified record to `each`.
    async fn walk(
        &self,
        start: ChainHead,
        head: &ChainHead,
        each: impl FnMut(&StoredAudit),
    ) -> Result<ChainHead, CliError> {
        verify::verify_after(&*self.stores.audit, &self.sealers(), start, head, each)
            .await
            .map_err(|e| self.failed(e))
    }

    /// The library's verification error as this command reports it.
    fn failed(&self, e: VerifyError) -> CliError {
        match e {
            VerifyError::Store(e) | VerifyError::Prune { source: e, .. } => CliError::Store(e),
            VerifyError::Anchor { seq, problem } => CliError::Failed(format!(
                "audit chain broken: the retention anchor (record {seq}) {}",
                self.why(&problem, seq)
            )),
            VerifyError::Break(b) => self.broken(&b),
            other => CliError::Failed(format!("audit chain broken: {other}")),
        }
    }

    fn broken(&self, b: &ChainBreak) -> CliError {
        let hint = match (b, &self.anchor) {
            (ChainBreak::UnknownKek { kek_id, .. }, _) => format!(
                " (its retired KEK file {} is missing or unlocks with neither KEK_PASSWORD nor {OLD_PASSWORD_ENV})",
                kek_provider::retired_path(&self.kek_path, kek_id).display()
            ),
            (ChainBreak::Sequence { expected: 1, found }, None) if *found > 1 => format!(
                " (records 1 to {} are gone and no retention anchor is stored: they were deleted, or the anchor was)",
                found - 1
            ),
            (ChainBreak::Sequence { expected, .. }, Some(a)) if *expected == a.seq.saturating_add(1) => format!(
                " (the first record after the retention anchor at record {} is missing: records were deleted, or the anchor was replaced by an older one)",
                a.seq
            ),
            _ => String::new(),
        };
        CliError::Failed(format!("audit chain broken: {b}{hint}"))
    }

    /// "N records[ after the retention anchor at record A], head H".
    fn summary(&self, end: &ChainHead) -> String {
        let records = end.seq.saturating_sub(self.start_seq());
        let from = match &self.anchor {
            Some(a) => format!(" after the retention anchor at record {}", a.seq),
            None => String::new(),
        };
        format!("{records} records{from}, head {}", to_hex(&end.mac[..8]))
    }
}

/// A checkpoint file: bounded, parsed; a file that is not one is refused by name.
fn read_checkpoint(path: &Path) -> Result<Checkpoint, CliError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CHECKPOINT_LEN + 1).read_to_end(&mut bytes))
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_CHECKPOINT_LEN {
        return Err(CliError::Failed(format!(
            "checkpoint {} refused: larger than any checkpoint",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Failed(format!(
            "checkpoint {} refused: not a checkpoint ({e})",
            path.display()
        ))
    })
}

/// Verifies from the anchor (or record 1) up to the head read first, then holds the
/// chain against each checkpoint given: its tag must verify (a forged or edited one is
/// refused by name) and the chain must reach its record with its MAC. A checkpoint at or
/// below the anchor vouches for records retention removed: only one exactly at the
/// anchor can still be compared.
async fn verify(config: &Config, args: &VerifyArgs) -> Result<(), CliError> {
    let files = args
        .checkpoints
        .iter()
        .map(|p| Ok((p, read_checkpoint(p)?)))
        .collect::<Result<Vec<_>, CliError>>()?;
    let chain = Chain::open(config).await?;
    let start = chain.start()?;
    let mut vouched = Vec::with_capacity(files.len());
    for (path, cp) in &files {
        let head = chain.vouched(cp).map_err(|why| {
            CliError::Failed(format!("checkpoint {} refused: it {why}", path.display()))
        })?;
        vouched.push((path, cp, head));
    }
    let mut macs: BTreeMap<u64, Option<[u8; 32]>> = vouched
        .iter()
        .map(|(_, _, h)| (h.seq, (h.seq == start.seq).then_some(start.mac)))
        .collect();

    let head = chain.stores.audit.audit_head().await?;
    let end = chain
        .walk(start, &head, |r| {
            if let Some(slot) = macs.get_mut(&r.seq) {
                *slot = Some(r.mac);
            }
        })
        .await?;
    let mut lines = vec![format!("audit chain verified: {}", chain.summary(&end))];
    for (path, cp, h) in vouched {
        if h.seq < start.seq {
            lines.push(format!(
                "checkpoint {}: record {} was removed by retention (anchor at record {}); not compared",
                path.display(),
                h.seq,
                start.seq
            ));
            continue;
        }
        let mac = macs.get(&h.seq).copied().flatten();
        cp.matches(&h, mac.as_ref(), end.seq).map_err(|e| {
            CliError::Failed(format!(
                "audit chain broken: {e} (checkpoint {})",
                path.display()
            ))
        })?;
        lines.push(format!(
            "checkpoint {}: record {} matches",
            path.display(),
            h.seq
        ));
    }
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Verifies the chain, records `audit.checkpoint`, then signs a checkpoint of the head.
///
/// Decision: the record goes in *before* the checkpoint is taken, so the checkpoint
/// covers its own record. Recorded after, it would sit in the tail no checkpoint
/// protects yet: cut together with the head row, the chain would no longer show that a
/// checkpoint — the very evidence against that cut — was ever handed out. The records
/// between the first verification and the head after the append (this one, and any a
/// running server appended meanwhile) are verified too before signing, so a checkpoint
/// never vouches for anything unverified. The cost: if writing the file fails
/// afterwards, the chain says a checkpoint was taken that the operator does not have
/// (the command fails saying so; run it again).
async fn checkpoint(config: &Config, args: &CheckpointArgs) -> Result<(), CliError> {
    if let Some(out) = &args.output {
        if !args.force && std::fs::symlink_metadata(out).is_ok() {
            return Err(CliError::Usage(format!(
                "{} exists; refusing to overwrite it (use --force)",
                out.display()
            )));
        }
    }
    let chain = Chain::open(config).await?;
    let trail = Trail::new(config, chain.stores.audit.clone(), &chain.kek)?;
    let mut event = trail.event("audit.checkpoint");
    if let Some(out) = &args.output {
        event.detail = Some(json!({ "file": out.display().to_string() }));
    }
    let head = chain.stores.audit.audit_head().await?;
    let verified = async { chain.walk(chain.start()?, &head, |_| {}).await }.await;
    let verified = match verified {
        Ok(end) => end,
        // A chain that does not verify gets no checkpoint; the refusal is recorded.
        Err(e) => return trail.conclude(event, Err(e)).await,
    };
    trail.append(vec![event]).await.map_err(|e| {
        CliError::Failed(format!(
            "no checkpoint taken: its audit record could not be written: {e}"
        ))
    })?;
    let head = chain.stores.audit.audit_head().await?;
    let end = chain.walk(verified, &head, |_| {}).await?;
    let cp = Checkpoint::sign(&chain.current, &end, SystemClock.now_millis());
    let mut text = serde_json::to_string_pretty(&cp)
        .map_err(|e| CliError::Failed(format!("cannot encode the checkpoint: {e}")))?;
    text.push('\n');
    let Some(out) = &args.output else {
        print!("{text}");
        return std::io::stdout().flush().map_err(out_err);
    };
    let written = if args.force {
        atomic_file::replace(out, text.as_bytes(), &OsRng)
    } else {
        atomic_file::write_new(out, text.as_bytes(), &OsRng)
    };
    written.map_err(|e| {
        let why = if e.kind() == ErrorKind::AlreadyExists {
            "it exists (use --force)".to_owned()
        } else {
            e.to_string()
        };
        CliError::Failed(format!(
            "the checkpoint of record {} was recorded in the chain but could not be written to {}: {why}",
            end.seq,
            out.display()
        ))
    })?;
    println!(
        "audit checkpoint of record {} written to {}",
        end.seq,
        out.display()
    );
    Ok(())
}

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
async fn prune(config: &Config, args: &PruneArgs) -> Result<(), CliError> {
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

/// The audit keys of the retired KEK files beside `kek_path` that unlock with
/// `password` (the current KEK's) or [`OLD_PASSWORD_ENV`]: what verifying commands and
/// `serve`'s background verification check records sealed before a KEK rotation with.
pub(crate) fn retired_audit_sealers(
    kek_path: &Path,
    password: &str,
    current: &str,
) -> Vec<AuditSealer> {
    let old = std::env::var(OLD_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Zeroizing::new);
    let mut passwords: Vec<&[u8]> = vec![password.as_bytes()];
    passwords.extend(old.as_ref().map(|p| p.as_bytes()));
    retired_sealers(kek_path, &passwords, current)
}

/// Sealers of the retired KEK files beside `kek_path` (`<kek>.retired-<id>`, kept by
/// `kek rotate`) that unlock with one of `passwords`: records sealed before a KEK
/// rotation name the KEK of their time. A retired file keeps the password it had when
/// it was retired, so after a later `kek change-password` it needs
/// [`OLD_PASSWORD_ENV`]. A file that unlocks with none is skipped; a record needing it
/// is then reported as unverifiable.
fn retired_sealers(kek_path: &Path, passwords: &[&[u8]], current: &str) -> Vec<AuditSealer> {
    let (Some(dir), Some(name)) = (kek_path.parent(), kek_path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.retired-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            if bytes.len() > MAX_KEK_FILE_LEN {
                return None;
            }
            let file = KekFile::parse(&bytes).ok()?;
            if file.kek_id() == current {
                return None;
            }
            let kek = passwords.iter().find_map(|p| file.unlock(p).ok());
            if kek.is_none() {
                tracing::info!(path = %e.path().display(), "a retired KEK file does not unlock with the passwords given; records it sealed cannot be verified");
            }
            AuditSealer::new(&kek?).ok()
        })
        .collect()
}

/// Drains the audit journals of servers that stopped abruptly (SIGKILL, crash, power
/// loss) into the chain, saying on stderr what was recovered or left (and why).
pub(crate) async fn recover_journals(
    config: &Config,
    store: &Arc<dyn AuditStore>,
    sealer: &AuditSealer,
    retired: &[AuditSealer],
) -> Result<(), CliError> {
    let outcomes = recover::recover(
        &config.audit_journal_dir,
        store,
        sealer,
        retired,
        &SystemClock,
    )
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?;
    for o in outcomes {
        match o {
            Outcome::Drained {
                path,
                appended,
                rejected,
                missing,
            } if rejected + missing > 0 => eprintln!(
                "warning: recovered {appended} audit records from {}; {rejected} lines were refused (altered or malformed) and {missing} entries are missing — recorded in the trail as {JOURNAL_DAMAGED}",
                path.display()
            ),
            Outcome::Drained { path, appended, .. } => eprintln!(
                "recovered {appended} audit records from the journal of a server that stopped abruptly ({})",
                path.display()
            ),
            Outcome::Left(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(())
}

/// Before reading the trail: drains the journals of servers that stopped abruptly when
/// the KEK can be unlocked here; otherwise says they are pending (a reader needs no
/// KEK password, and is not refused for lacking one).
async fn recover_before_reading(config: &Config, stores: &Stores) -> Result<(), CliError> {
    let pending = journal::orphans(&config.audit_journal_dir).map_err(CliError::Io)?;
    if pending.is_empty() {
        return Ok(());
    }
    drop(pending);
    let Ok(text) = config.kek_password_text() else {
        eprintln!(
            "warning: audit journals of stopped servers in {} are not in the trail yet (set KEK_PASSWORD, or start the server, to recover them)",
            config.audit_journal_dir.display()
        );
        return Ok(());
    };
    let password = KekPassword::new(text.to_string(), config.production)?;
    let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
    let retired = retired_audit_sealers(&config.kek_path, &text, kek.id());
    recover_journals(config, &stores.audit, &AuditSealer::new(&kek)?, &retired).await
}
