//! [`FlakyAudit`]: an audit store whose appends fail while a switch is on, for the
//! fail-closed and retry tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint, JournalMark,
    StoredAudit,
};
use keyflow_kms::keystore::StoreError;

/// Wraps an audit store; every append (journaled or not) fails with "disk full" while
/// [`failing`](Self::failing) is set. Reads pass through.
pub struct FlakyAudit {
    inner: Arc<dyn AuditStore>,
    /// Set: appends fail.
    pub failing: Arc<AtomicBool>,
}

impl FlakyAudit {
    /// `inner`, appending normally until the switch is set.
    pub fn new(inner: Arc<dyn AuditStore>) -> Self {
        Self {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditStore for FlakyAudit {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        self.check()?;
        self.inner.append_audit(sealer, events).await
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.check()?;
        self.inner.append_audit_from(sealer, events, mark).await
    }

    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        self.inner.audit_journal_mark(journal).await
    }

    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        self.inner.audit_journal_forget(journal).await
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }

    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        self.inner.audit_scan(after, limit).await
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        self.inner.audit_query(filter).await
    }

    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.audit_anchor().await
    }

    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        self.inner.audit_prune(anchor).await
    }
}
