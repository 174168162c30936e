//! [`AuditStore`] in memory: the chain with the SQL backends' paging and refusals.

use super::*;

impl State {
    /// Seals every event first and keeps them only if all sealed: all or nothing.
    fn append_audit(
        &mut self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
    ) -> Result<ChainHead, StoreError> {
        let (sealed, head) = sealer
            .seal_after(self.audit_head, events)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.audit.extend(sealed);
        self.audit_head = head;
        Ok(head)
    }

    /// Checks first, then deletes and stores the anchor: all or nothing.
    fn audit_prune(&mut self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        let stored = self
            .audit
            .iter()
            .find(|r| r.seq == anchor.seq)
            .map(|r| r.mac);
        keyflow_kms::audit::check_prune(
            anchor,
            &self.audit_head,
            self.audit_anchor.as_ref().map(|a| a.seq),
            stored.as_ref(),
        )?;
        let before = self.audit.len();
        self.audit.retain(|r| r.seq > anchor.seq);
        self.audit_anchor = Some(anchor.clone());
        Ok(u64::try_from(before - self.audit.len()).unwrap_or(u64::MAX))
    }

    fn audit_scan(&self, after: u64, limit: u32) -> Vec<StoredAudit> {
        self.audit
            .iter()
            .filter(|r| r.seq > after)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    fn audit_query(&self, f: &AuditFilter) -> Vec<StoredAudit> {
        self.audit
            .iter()
            .rev()
            .filter(|r| f.matches(r))
            .take(usize::try_from(f.page_size()).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl AuditStore for MemoryKeystore {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        let events = EncodedEvent::all_for_store(events)?;
        self.with(|s| s.append_audit(sealer, &events))
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.with(|s| {
            let head = s.append_audit(sealer, events)?;
            if !events.is_empty() {
                s.journals.insert(mark.journal.clone(), mark.through);
            }
            Ok(head)
        })
    }

    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| s.journals.get(journal).copied()))
    }

    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        self.with(|s| s.journals.remove(journal));
        Ok(())
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(self.with(|s| s.audit_head))
    }

    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(self.with(|s| s.audit_scan(after, limit)))
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(self.with(|s| s.audit_query(filter)))
    }

    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.with(|s| s.audit_anchor.clone()))
    }

    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        self.with(|s| s.audit_prune(anchor))
    }
}
