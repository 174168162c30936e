//! `audit verify` and `audit checkpoint`: the chain as a verifying command sees it.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use keyflow_kms::atomic_file;
use keyflow_kms::audit::verify::{self, CheckpointProblem, VerifyError};
use keyflow_kms::audit::{AuditSealer, ChainBreak, ChainHead, Checkpoint, StoredAudit};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::{to_hex, OsRng};
use serde_json::json;

use super::keys::{recover_journals, retired_audit_sealers};
use super::{out_err, CheckpointArgs, VerifyArgs, MAX_CHECKPOINT_LEN, OLD_PASSWORD_ENV};
use crate::commands::trail::Trail;
use crate::commands::{open_stores, Stores};
use crate::config::Config;
use crate::error::CliError;

/// The audit chain as a verifying command sees it: the database, the KEK, every audit
/// key that can check a record, and where verification starts.
pub(super) struct Chain {
    pub(super) stores: Stores,
    pub(super) kek: Kek,
    /// The current KEK's audit key.
    pub(super) current: AuditSealer,
    /// The audit keys of retired KEK files that unlocked.
    pub(super) retired: Vec<AuditSealer>,
    pub(super) kek_path: PathBuf,
    /// The retention anchor as stored, unchecked (`None`: the chain starts at record 1).
    pub(super) anchor: Option<Checkpoint>,
}

impl Chain {
    /// Unlocks the KEK (and the retired ones) and reads the retention anchor.
    pub(super) async fn open(config: &Config) -> Result<Self, CliError> {
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
    pub(super) fn start(&self) -> Result<ChainHead, CliError> {
        verify::anchor_start(self.anchor.as_ref(), &self.sealers()).map_err(|e| self.failed(e))
    }

    /// The sequence number verification starts after (unchecked; see [`Chain::start`]).
    pub(super) fn start_seq(&self) -> u64 {
        self.anchor.as_ref().map_or(0, |a| a.seq)
    }

    pub(super) fn sealers(&self) -> Vec<&AuditSealer> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .collect()
    }

    /// The head `cp` vouches for, once its tag verifies under the key of the KEK it
    /// names; otherwise why not.
    pub(super) fn vouched(&self, cp: &Checkpoint) -> Result<ChainHead, String> {
        verify::vouched(cp, &self.sealers()).map_err(|p| self.why(&p, cp.seq))
    }

    /// What is wrong with a checkpoint (or the anchor) at `seq`, with the hints only the
    /// CLI can give: where the retired KEK file would be, which passwords were tried.
    pub(super) fn why(&self, problem: &CheckpointProblem, seq: u64) -> String {
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
    pub(super) async fn walk(
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
    pub(super) fn failed(&self, e: VerifyError) -> CliError {
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

    pub(super) fn broken(&self, b: &ChainBreak) -> CliError {
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
    pub(super) fn summary(&self, end: &ChainHead) -> String {
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
pub(super) async fn verify(config: &Config, args: &VerifyArgs) -> Result<(), CliError> {
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
pub(super) async fn checkpoint(config: &Config, args: &CheckpointArgs) -> Result<(), CliError> {
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
