//! [`FlakyAudit`]: an audit store whose appends fail while a switch is on, for the
//! fail-closed and retry tests; it also counts journaled appends and can make each take
//! a while, for the drain's batching tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint, EncodedEvent,
    JournalMark, StoredAudit,
};
use keyflow_kms::keystore::StoreError;

/// Wraps an audit store; every append (journaled or not) fails with "disk full" while
/// [`failing`](Self::failing) is set. Reads pass through.
pub struct FlakyAudit {
    inner: Arc<dyn AuditStore>,
    /// Set: appends fail.
    pub failing: Arc<AtomicBool>,
    /// Journaled appends (transactions) so far, failed ones included.
    pub journaled_appends: AtomicUsize,
    /// How long each journaled append takes (a database commit's time), on tokio's clock.
    delay: Duration,
}

impl FlakyAudit {
    /// `inner`, appending normally until the switch is set.
    pub fn new(inner: Arc<dyn AuditStore>) -> Self {
        Self::slow(inner, Duration::ZERO)
    }

    /// [`new`](Self::new), each journaled append taking `delay`.
    pub fn slow(inner: Arc<dyn AuditStore>, delay: Duration) -> Self {
        Self {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
            journaled_appends: AtomicUsize::new(0),
            delay,
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
        events: &[EncodedEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.journaled_appends.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
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
