//! The audit chain's persistence ([`AuditStore`]): tables `keyflow_audit` and
//! `keyflow_audit_head` (migration 0004), `keyflow_audit_anchor` (migration 0005),
//! `keyflow_audit_journal` (migration 0006).
//!
//! An append is one transaction that first takes the chain head's lock
//! ([`Backend::begin_audit`] and a locking read of the head): appenders of every
//! process queue there, each seals after the head the previous one committed, so the
//! chain never forks. A prune takes the same lock, so it never interleaves with an
//! append or another prune. No change generation: nothing caches audit records.
//! Queries build their `WHERE` from the set conditions only (so the planner can use
//! an index) and bind every value.

use async_trait::async_trait;
use keyflow_core::to_hex;
use keyflow_kms::audit::{
    check_prune, AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint,
    EncodedEvent, JournalMark, StoredAudit,
};
use keyflow_kms::keystore::StoreError;

use crate::rows::audit::{
    anchor, escape_purpose, head, record, seq_column, stored_mac, ANCHOR_COLUMNS, COLUMNS,
};
use crate::rows::Columns;
use crate::{Backend, SqlKeystore, Stmt, Txn};

/// The head; `lock` takes its row lock (where the backend locks rows) until the
/// transaction ends.
async fn read_head<B: Backend>(tx: &mut Txn<'_, B>, lock: bool) -> Result<ChainHead, StoreError> {
    let lock = if lock { B::FOR_UPDATE } else { "" };
    let row = tx
        .one(Stmt::new(format!(
            "SELECT seq, mac FROM keyflow_audit_head WHERE id = 1{lock}"
        )))
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit chain head row is missing".into()))?;
    head(&row)
}

async fn read_anchor<B: Backend>(tx: &mut Txn<'_, B>) -> Result<Option<Checkpoint>, StoreError> {
    let row = tx
        .one(Stmt::new(format!(
            "SELECT {ANCHOR_COLUMNS} FROM keyflow_audit_anchor WHERE id = 1"
        )))
        .await?;
    row.map(|r| anchor(&r)).transpose()
}

/// The MAC of the stored record `seq`, if there is one.
async fn mac_at<B: Backend>(tx: &mut Txn<'_, B>, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
    let row = tx
        .one(Stmt::new("SELECT mac FROM keyflow_audit WHERE seq = $1").bind(seq_column(seq)))
        .await?;
    row.map(|r| stored_mac(seq, &r.text("mac")?)).transpose()
}

impl<B: Backend> SqlKeystore<B> {
    /// Seals and inserts `events` after the head, moves the head and, with a `mark`,
    /// the journal's mark, all in one transaction.
    async fn append(
        &self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
        mark: Option<&JournalMark>,
    ) -> Result<ChainHead, StoreError> {
        if events.is_empty() {
            return self.audit_head().await;
        }
        let mut tx = self.begin_audit().await?;
        let head = read_head(&mut tx, true).await?;
        let (sealed, head) = sealer
            .seal_after(head, events)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.backend.insert_audit(tx.raw(), &sealed).await?;
        tx.exec(
            Stmt::new("UPDATE keyflow_audit_head SET seq = $1, mac = $2 WHERE id = 1")
                .bind(seq_column(head.seq))
                .bind(to_hex(&head.mac)),
        )
        .await?;
        if let Some(mark) = mark {
            tx.exec(
                Stmt::new(
                    "INSERT INTO keyflow_audit_journal (journal, drained) VALUES ($1, $2) \
                     ON CONFLICT (journal) DO UPDATE SET drained = EXCLUDED.drained",
                )
                .bind(&mark.journal)
                .bind(seq_column(mark.through)),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(head)
    }
}

#[async_trait]
impl<B: Backend> AuditStore for SqlKeystore<B> {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        let events = EncodedEvent::all_for_store(events)?;
        self.append(sealer, &events, None).await
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.append(sealer, events, Some(mark)).await
    }

    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        let drained = self
            .one(
                Stmt::new("SELECT drained FROM keyflow_audit_journal WHERE journal = $1")
                    .bind(journal),
            )
            .await?
            .map(|r| r.int("drained"))
            .transpose()?;
        drained
            .map(|d| {
                u64::try_from(d).map_err(|_| {
                    StoreError::Corrupt(format!("audit journal {journal}: negative mark {d}"))
                })
            })
            .transpose()
    }

    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        self.exec(Stmt::new("DELETE FROM keyflow_audit_journal WHERE journal = $1").bind(journal))
            .await
            .map(drop)
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let row = self
            .one(Stmt::new(
                "SELECT seq, mac FROM keyflow_audit_head WHERE id = 1",
            ))
            .await?
            .ok_or_else(|| StoreError::Corrupt("the audit chain head row is missing".into()))?;
        head(&row)
    }

    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        let rows = self
            .all(
                Stmt::new(format!(
                    "SELECT {COLUMNS} FROM keyflow_audit WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(seq_column(after))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(record).collect()
    }

    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = self
            .one(Stmt::new(format!(
                "SELECT {ANCHOR_COLUMNS} FROM keyflow_audit_anchor WHERE id = 1"
            )))
            .await?;
        row.map(|r| anchor(&r)).transpose()
    }

    async fn audit_prune(&self, cut: &Checkpoint) -> Result<u64, StoreError> {
        let mut tx = self.begin_audit().await?;
        // The head's lock first, as appends take it: prunes and appends queue there.
        let head = read_head(&mut tx, true).await?;
        let current = read_anchor(&mut tx).await?.map(|a| a.seq);
        let stored = mac_at(&mut tx, cut.seq).await?;
        // A refusal drops the transaction unwritten (rolled back).
        check_prune(cut, &head, current, stored.as_ref())?;
        let deleted = tx
            .exec(Stmt::new("DELETE FROM keyflow_audit WHERE seq <= $1").bind(seq_column(cut.seq)))
            .await?;
        tx.exec(
            Stmt::new(format!(
                "INSERT INTO keyflow_audit_anchor (id, {ANCHOR_COLUMNS}) \
                 VALUES (1, $1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, \
                 kind = EXCLUDED.kind, seq = EXCLUDED.seq, mac = EXCLUDED.mac, \
                 time = EXCLUDED.time, kek_id = EXCLUDED.kek_id, tag = EXCLUDED.tag"
            ))
            .bind(i64::from(cut.version))
            .bind(cut.kind.as_str())
            .bind(seq_column(cut.seq))
            .bind(&cut.mac)
            .bind(cut.time)
            .bind(&cut.kek_id)
            .bind(&cut.tag),
        )
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM keyflow_audit WHERE 1 = 1");
        let mut args: Vec<crate::Arg<'static>> = Vec::new();
        // Each condition's `$` is numbered here, in bind order.
        let mut cond = |clause: &str, arg: crate::Arg<'static>| {
            args.push(arg);
            sql.push_str(" AND ");
            sql.push_str(&clause.replace('$', &format!("${}", args.len())));
        };
        if let Some(since) = filter.since {
            cond("time >= $", since.into());
        }
        if let Some(until) = filter.until {
            cond("time < $", until.into());
        }
        if let Some(actor) = &filter.actor {
            cond("actor = $", actor.clone().into());
        }
        if let Some(purpose) = &filter.purpose {
            // A plain substring search, not `LIKE`: no wildcards to escape, and
            // case-sensitive (SQLite's LIKE ignores ASCII case).
            cond(
                &format!("{}(purposes, $) > 0", B::POSITION_FN),
                format!(",{},", escape_purpose(purpose)).into(),
            );
        }
        if let Some(operation) = &filter.operation {
            cond("operation = $", operation.clone().into());
        }
        if let Some(result) = &filter.result {
            cond("result = $", result.clone().into());
        }
        if let Some(before) = filter.before {
            cond("seq < $", seq_column(before).into());
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", args.len() + 1));
        let mut stmt = Stmt::new(sql);
        for arg in args {
            stmt = stmt.bind(arg);
        }
        let rows = self.all(stmt.bind(i64::from(filter.page_size()))).await?;
        rows.iter().map(record).collect()
    }
}
