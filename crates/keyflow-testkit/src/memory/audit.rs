//! [`AuditStore`] in memory: the chain with the SQL backends' paging and refusals.

use super::*;

impl State {
    /// Seals every event first and keeps them only if all sealed: all or nothing.
    fn append_audit(
        &mut self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        let mut head = self.audit_head;
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            // The SQL backends' sequence column is a signed 64-bit integer.
            let seq = head
                .seq
                .checked_add(1)
                .filter(|s| i64::try_from(*s).is_ok())
                .ok_or_else(|| StoreError::Backend("the audit chain is full".into()))?;
            let record = sealer
                .seal(&head.mac, seq, event)
                .map_err(|e| StoreError::Backend(format!("cannot seal an audit event: {e}")))?;
            head = ChainHead {
                seq,
                mac: record.mac,
            };
            sealed.push(record);
        }
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
        let limit = if f.limit == 0 { MAX_PAGE } else { f.limit };
        let matches = |r: &&StoredAudit| {
            f.since.is_none_or(|t| r.time >= t)
                && f.until.is_none_or(|t| r.time < t)
                && f.actor.as_ref().is_none_or(|a| *a == r.actor)
                && f.purpose.as_ref().is_none_or(|p| r.purposes.contains(p))
                && f.operation.as_ref().is_none_or(|o| *o == r.operation)
                && f.result.as_ref().is_none_or(|x| *x == r.result)
                && f.before.is_none_or(|b| r.seq < b)
        };
        self.audit
            .iter()
            .rev()
            .filter(matches)
            .take(usize::try_from(limit.min(MAX_PAGE)).unwrap_or(usize::MAX))
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
        self.with(|s| s.append_audit(sealer, events))
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
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
