//! Walking the stored chain: verification from the retention anchor (or record 1) over
//! paged [`AuditStore::audit_scan`]s up to a head the caller read first, its incremental
//! continuation, and retention ([`prune_before`]).
//!
//! The caller reads the head *before* walking, so records appended meanwhile (by a
//! running server) are not taken for a cut tail. Every audit key that may have sealed a
//! record is passed in: the current KEK's and those of retired KEKs. Reading KEK files
//! and wording hints about them is the caller's business (the CLI's, the server's).

use super::chain::{macs_equal, AuditSealer, ChainBreak, ChainHead, ChainVerifier, StoredAudit};
use super::checkpoint::{Checkpoint, CheckpointError, CheckpointKind};
use super::{AuditStore, MAX_PAGE};
use crate::keystore::StoreError;

/// Why a checkpoint (an operator's, or the stored retention anchor) does not vouch for
/// anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// Signed under a KEK whose audit key was not given.
    #[error("is signed under KEK {0}, whose key is not available here")]
    UnknownKek(String),
    /// Its tag does not verify (or it is malformed) under the key of the KEK it names.
    #[error("does not verify: {0}")]
    BadTag(CheckpointError),
    /// An operator checkpoint stored where only a retention anchor may be.
    #[error("is an operator checkpoint, not an anchor written by retention: it was put there by hand, and the records up to it may have been deleted with it")]
    NotAnAnchor,
}

/// Why a stored chain does not verify, or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The store failed (reading, or pruning).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored retention anchor cannot be where the chain starts.
    #[error("the retention anchor (record {seq}) {problem}")]
    Anchor {
        /// The anchor's sequence number.
        seq: u64,
        /// What is wrong with it.
        problem: CheckpointProblem,
    },
    /// A record does not verify (the first bad one is named).
    #[error(transparent)]
    Break(#[from] ChainBreak),
    /// The chain verified and the anchor was signed, but the store refused or failed the
    /// prune itself ([`prune_before`]); nothing was deleted.
    #[error("{source}")]
    Prune {
        /// The record the anchor was signed at.
        anchor_seq: u64,
        /// The store's answer.
        source: StoreError,
    },
}

/// How far a verification got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Where it started: the retention anchor, a head verified earlier, or record 0.
    pub start: ChainHead,
    /// The last record verified: the head it was asked to reach.
    pub end: ChainHead,
}

/// What [`prune_before`] did, or (dry run) would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Where the chain started before: the previous anchor's sequence number (0: record 1).
    pub start: u64,
    /// The chain verified up to this head.
    pub verified: ChainHead,
    /// The new anchor: the last record of the leading run of records older than the cut
    /// (`None`: the first record is not older, nothing to prune).
    pub anchor: Option<ChainHead>,
    /// Records removed (on a dry run: that would be).
    pub removed: u64,
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
}

/// The head `cp` vouches for, once its tag verifies under the key of the KEK it names.
pub fn vouched(cp: &Checkpoint, sealers: &[&AuditSealer]) -> Result<ChainHead, CheckpointProblem> {
    let sealer = sealers
        .iter()
        .find(|s| s.kek_id() == cp.kek_id)
        .ok_or_else(|| CheckpointProblem::UnknownKek(cp.kek_id.clone()))?;
    cp.verify(sealer).map_err(CheckpointProblem::BadTag)
}

/// Where verification starts: after `anchor` (as stored by [`AuditStore::audit_anchor`])
/// once its tag verifies and it is a retention anchor, or at record 1 without one.
pub fn anchor_start(
    anchor: Option<&Checkpoint>,
    sealers: &[&AuditSealer],
) -> Result<ChainHead, VerifyError> {
    let Some(anchor) = anchor else {
        return Ok(ChainHead::default());
    };
    let refused = |problem| VerifyError::Anchor {
        seq: anchor.seq,
        problem,
    };
    // The tag first: an operator checkpoint's kind is only meaningful once it verifies.
    let start = vouched(anchor, sealers).map_err(refused)?;
    if anchor.kind != CheckpointKind::Anchor {
        return Err(refused(CheckpointProblem::NotAnAnchor));
    }
    Ok(start)
}

/// Verifies the records after `start` (a verified position: an anchor or an earlier
/// verification's end) up to `upto`, which must be the stored head as read before;
/// hands each verified record to `each`. Returns the end (`upto` itself).
pub async fn verify_after(
    store: &dyn AuditStore,
    sealers: &[&AuditSealer],
    start: ChainHead,
    upto: &ChainHead,
    mut each: impl FnMut(&StoredAudit),
) -> Result<ChainHead, VerifyError> {
    let mut verifier = ChainVerifier::after(sealers.to_vec(), start);
    let mut after = start.seq;
    'scan: while after < upto.seq {
        let page = store.audit_scan(after, MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if r.seq > upto.seq {
                break 'scan;
            }
            verifier.push(r)?;
            each(r);
        }
    }
    Ok(verifier.finish(upto)?)
}

/// Verifies the whole stored chain: from the retention anchor (its tag and kind checked
/// first) or record 1, up to `upto` (the head, read by the caller first).
pub async fn verify_chain(
    store: &dyn AuditStore,
    sealers: &[&AuditSealer],
    upto: &ChainHead,
    each: impl FnMut(&StoredAudit),
) -> Result<Verified, VerifyError> {
    let anchor = store.audit_anchor().await?;
    let start = anchor_start(anchor.as_ref(), sealers)?;
    let end = verify_after(store, sealers, start, upto, each).await?;
    Ok(Verified { start, end })
}

/// Continues a verification from `prev`, a head an earlier pass verified, up to `upto`.
///
/// The stored anchor is checked again; if retention has pruned through `prev` since,
/// verification starts from the anchor instead. Otherwise the record at `prev.seq` must
/// still be there with `prev.mac` (a chain replaced since, e.g. by restoring an older
/// copy, is reported there), and the head must not have gone below it.
pub async fn verify_since(
    store: &dyn AuditStore,
    sealers: &[&AuditSealer],
    prev: &ChainHead,
    upto: &ChainHead,
    each: impl FnMut(&StoredAudit),
) -> Result<Verified, VerifyError> {
    let anchor = store.audit_anchor().await?;
    let anchored = anchor_start(anchor.as_ref(), sealers)?;
    if anchored.seq >= prev.seq {
        let end = verify_after(store, sealers, anchored, upto, each).await?;
        return Ok(Verified {
            start: anchored,
            end,
        });
    }
    if upto.seq < prev.seq {
        return Err(ChainBreak::Head {
            head_seq: upto.seq,
            last_seq: prev.seq,
        }
        .into());
    }
    let again = store.audit_scan(prev.seq - 1, 1).await?;
    match again.first() {
        Some(r) if r.seq == prev.seq && macs_equal(&r.mac, &prev.mac) => {}
        Some(r) if r.seq == prev.seq => return Err(ChainBreak::Mac { seq: r.seq }.into()),
        Some(r) => {
            return Err(ChainBreak::Sequence {
                expected: prev.seq,
                found: r.seq,
            }
            .into())
        }
        None => {
            return Err(ChainBreak::Head {
                head_seq: upto.seq,
                last_seq: prev.seq - 1,
            }
            .into())
        }
    }
    let end = verify_after(store, sealers, *prev, upto, each).await?;
    Ok(Verified { start: *prev, end })
}

/// Retention: verifies the chain up to the current head, takes as anchor the last record
/// of the run, from the start, of records older than `cut_ms` (so a record sealed late
/// with an early time never takes newer ones with it), signs it with `sealer` at
/// `now_ms` and prunes up to it ([`AuditStore::audit_prune`]). With `dry_run`, or when
/// the first record is not older than the cut, nothing changes.
///
/// `sealer` (the current KEK's) must be among `sealers`. Recording the prune in the
/// trail is the caller's job.
pub async fn prune_before(
    store: &dyn AuditStore,
    sealer: &AuditSealer,
    sealers: &[&AuditSealer],
    cut_ms: i64,
    now_ms: i64,
    dry_run: bool,
) -> Result<PruneOutcome, VerifyError> {
    let head = store.audit_head().await?;
    let (mut last_old, mut older) = (None, true);
    let verified = verify_chain(store, sealers, &head, |r| {
        older = older && r.time < cut_ms;
        if older {
            last_old = Some(ChainHead {
                seq: r.seq,
                mac: r.mac,
            });
        }
    })
    .await?;
    let mut outcome = PruneOutcome {
        start: verified.start.seq,
        verified: verified.end,
        anchor: last_old,
        removed: 0,
        dry_run,
    };
    let Some(at) = last_old else {
        return Ok(outcome);
    };
    if dry_run {
        outcome.removed = at.seq.saturating_sub(verified.start.seq);
        return Ok(outcome);
    }
    let anchor = Checkpoint::sign_anchor(sealer, &at, now_ms);
    outcome.removed = store
        .audit_prune(&anchor)
        .await
        .map_err(|source| VerifyError::Prune {
            anchor_seq: at.seq,
            source,
        })?;
    Ok(outcome)
}

// Tests: `tests/audit_verify.rs` (they run on the test kit's in-memory keystore, which
// depends on this crate and so cannot be used from its unit tests).
