//! Recovering the journals of writers that died (SIGKILL, crash, power loss): their
//! entries not yet in the chain are appended to it, then the journal is deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::journal::{self, JournalError, JournalMark, Recovered};
use super::log::MAX_BATCH;
use super::{AuditEvent, AuditSealer, AuditStore, EncodedEvent, Source};
use crate::clock::Clock;
use crate::keystore::StoreError;

/// Operation of the record noting a recovered journal.
pub const JOURNAL_RECOVERED: &str = "audit.journal_recovered";
/// Its result when entries were refused or missing.
pub const JOURNAL_DAMAGED: &str = "journal_damaged";

/// What [`recover`] did with one journal.
#[derive(Debug)]
pub enum Outcome {
    /// Its entries are in the chain and the file is gone.
    Drained {
        /// The journal.
        path: PathBuf,
        /// Entries appended now.
        appended: usize,
        /// Lines refused (bad MAC, malformed) and entry numbers missing.
        rejected: u64,
        /// Entry numbers skipped over.
        missing: u64,
    },
    /// Left in place: it cannot be read here (another KEK's, unreadable). Says why.
    Left(JournalError),
}

/// Why recovery stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The journal directory could not be listed or a file removed.
    #[error("audit journal recovery: {0}")]
    Io(#[from] std::io::Error),
    /// The database refused (the journal stays, for the next try).
    #[error("audit journal recovery: {0}")]
    Store(#[from] StoreError),
}

/// Drains every orphaned journal in `dir` (see [`journal::orphans`]) into `store`'s
/// chain, sealing with `sealer`; entries are checked with the audit key of the KEK
/// each journal names, among `sealer` and `retired`. A journal that was damaged gets a
/// record saying so (result [`JOURNAL_DAMAGED`]); every recovered journal gets one
/// ([`JOURNAL_RECOVERED`]), so the trail shows where records came back after a crash.
pub async fn recover(
    dir: &Path,
    store: &Arc<dyn AuditStore>,
    sealer: &AuditSealer,
    retired: &[AuditSealer],
    clock: &dyn Clock,
) -> Result<Vec<Outcome>, RecoverError> {
    let mut sealers = vec![sealer];
    sealers.extend(retired);
    let mut outcomes = Vec::new();
    for orphan in journal::orphans(dir)? {
        // Only what the chain does not hold yet.
        let read = match journal::read_header(&orphan.path) {
            Ok(header) => {
                let drained = store.audit_journal_mark(&header.id).await?.unwrap_or(0);
                journal::read_entries(&orphan.path, &header, &sealers, drained).map(|r| (header, r))
            }
            Err(e) => Err(e),
        };
        let (header, recovered) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "an audit journal was left in place");
                outcomes.push(Outcome::Left(e));
                continue;
            }
        };
        let appended = append(store, sealer, &header.id, &orphan.path, &recovered, clock).await?;
        let path = orphan.path.clone();
        // The file first, then its mark: a crash in between leaves a stale mark only.
        journal::remove(orphan)?;
        store.audit_journal_forget(&header.id).await?;
        if recovered.damaged() {
            tracing::warn!(journal = %path.display(), records = appended, rejected = recovered.rejected,
                missing = recovered.missing, "recovered a DAMAGED audit journal of a writer that stopped abruptly");
        } else {
            tracing::info!(journal = %path.display(), records = appended,
                "recovered the audit journal of a writer that stopped abruptly");
        }
        outcomes.push(Outcome::Drained {
            path,
            appended,
            rejected: recovered.rejected,
            missing: recovered.missing,
        });
    }
    Ok(outcomes)
}

async fn append(
    store: &Arc<dyn AuditStore>,
    sealer: &AuditSealer,
    id: &str,
    path: &Path,
    recovered: &Recovered,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let mut note = AuditEvent::new(
        clock.now_millis(),
        Source::System,
        "system:audit-journal",
        JOURNAL_RECOVERED,
    );
    note.detail = Some(json!({
        "journal": id,
        "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "recovered": recovered.entries.len(),
        "rejected": recovered.rejected,
        "missing": recovered.missing,
        "tornLastLine": recovered.torn,
    }));
    if recovered.damaged() {
        note.result = JOURNAL_DAMAGED.into();
    }
    let mut through = 0;
    let chunks: Vec<&[(u64, AuditEvent)]> = recovered.entries.chunks(MAX_BATCH).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut events: Vec<AuditEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
        through = chunk.last().map_or(through, |(n, _)| *n);
        if i + 1 == chunks.len() {
            events.push(note.clone());
        }
        let events = EncodedEvent::all_for_store(&events)?;
        let mark = JournalMark {
            journal: id.to_owned(),
            through,
        };
        store.append_audit_from(sealer, &events, &mark).await?;
    }
    if chunks.is_empty() {
        store.append_audit(sealer, &[note]).await?;
    }
    Ok(recovered.entries.len())
}
