//! The audit chain's persistence ([`AuditStore`]): tables `keyflow_audit` and
//! `keyflow_audit_head` (migration 0004), `keyflow_audit_anchor` (migration 0005).
//!
//! An append is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before
//! reading the head, so appenders from every process on the file queue (busy timeout)
//! instead of sealing after the same head. A prune is one too, so it never interleaves
//! with an append. Queries build their `WHERE` from the set
//! conditions only (so SQLite can use an index) and bind every value.

use async_trait::async_trait;
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint, JournalMark,
    StoredAudit,
};
use keyflow_kms::keyflow_core::to_hex;
use keyflow_kms::keystore::StoreError;
use keyflow_kms::rows::audit::{
    check_prune, escape_purpose, page, purposes_column, seq_column, ANCHOR_COLUMNS, COLUMNS,
};
use sqlx::SqliteConnection;

use crate::{Cols, SqliteKeystore};

async fn read_head(conn: &mut SqliteConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, mac FROM keyflow_audit_head WHERE id = 1")
        .fetch_optional(conn)
        .await
        .map_err(StoreError::backend)?
        .ok_or_else(|| StoreError("the audit chain head row is missing".into()))?;
    keyflow_kms::rows::audit::head(&Cols(&row))
}

async fn read_anchor(conn: &mut SqliteConnection) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ANCHOR_COLUMNS} FROM keyflow_audit_anchor WHERE id = 1"
    ))
    .fetch_optional(conn)
    .await
    .map_err(StoreError::backend)?;
    row.map(|r| keyflow_kms::rows::audit::anchor(&Cols(&r)))
        .transpose()
}

/// The MAC of the stored record `seq`, if there is one.
async fn mac_at(conn: &mut SqliteConnection, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
    let mac: Option<String> = sqlx::query_scalar("SELECT mac FROM keyflow_audit WHERE seq = ?1")
        .bind(seq_column(seq))
        .fetch_optional(conn)
        .await
        .map_err(StoreError::backend)?;
    mac.map(|m| keyflow_kms::rows::audit::stored_mac(seq, &m))
        .transpose()
}

/// Rows per `INSERT` statement, largest first: one statement per chunk instead of one
/// per record (each statement is a round trip to sqlx's SQLite worker thread), and only
/// four distinct statement texts for sqlx's statement cache. A journal drain of ~600
/// records takes ~10 statements.
const INSERT_CHUNKS: [usize; 4] = [128, 32, 8, 1];

/// Inserts sealed records, in chunks of [`INSERT_CHUNKS`].
async fn insert_all(
    conn: &mut SqliteConnection,
    mut records: &[StoredAudit],
) -> Result<(), StoreError> {
    while !records.is_empty() {
        let n = INSERT_CHUNKS
            .into_iter()
            .find(|n| *n <= records.len())
            .unwrap_or(1);
        let (chunk, rest) = records.split_at(n);
        records = rest;
        let mut sql = format!("INSERT INTO keyflow_audit ({COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?)");
        }
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(seq_column(r.seq))
                .bind(&r.kek_id)
                .bind(r.time)
                .bind(&r.actor)
                .bind(&r.operation)
                .bind(&r.result)
                .bind(purposes_column(&r.purposes))
                .bind(&r.body)
                .bind(to_hex(&r.mac));
        }
        q.execute(&mut *conn).await.map_err(StoreError::backend)?;
    }
    Ok(())
}

/// A value bound to a query built from the filter's set conditions.
enum Arg {
    Int(i64),
    Text(String),
}

impl SqliteKeystore {
    /// Seals and inserts `events` after the head, moves the head and, with a `mark`,
    /// the journal's mark, all in one transaction.
    async fn append(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
        mark: Option<&JournalMark>,
    ) -> Result<ChainHead, StoreError> {
        if events.is_empty() {
            return self.audit_head().await;
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::backend)?;
        let mut head = read_head(&mut tx).await?;
        let mut sealed_all = Vec::with_capacity(events.len());
        for event in events {
            let seq = head
                .seq
                .checked_add(1)
                .ok_or_else(|| StoreError("the audit chain is full".into()))?;
            let sealed = sealer
                .seal(&head.mac, seq, event)
                .map_err(|e| StoreError(format!("cannot seal an audit event: {e}")))?;
            head = ChainHead {
                seq,
                mac: sealed.mac,
            };
            sealed_all.push(sealed);
        }
        insert_all(&mut tx, &sealed_all).await?;
        sqlx::query("UPDATE keyflow_audit_head SET seq = ?1, mac = ?2 WHERE id = 1")
            .bind(seq_column(head.seq))
            .bind(to_hex(&head.mac))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        if let Some(mark) = mark {
            sqlx::query(
                "INSERT INTO keyflow_audit_journal (journal, drained) VALUES (?1, ?2) \
                 ON CONFLICT (journal) DO UPDATE SET drained = excluded.drained",
            )
            .bind(&mark.journal)
            .bind(seq_column(mark.through))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(head)
    }
}

#[async_trait]
impl AuditStore for SqliteKeystore {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        self.append(sealer, events, None).await
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.append(sealer, events, Some(mark)).await
    }

    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        let drained: Option<i64> =
            sqlx::query_scalar("SELECT drained FROM keyflow_audit_journal WHERE journal = ?1")
                .bind(journal)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::backend)?;
        drained
            .map(|d| {
                u64::try_from(d)
                    .map_err(|_| StoreError(format!("audit journal {journal}: negative mark {d}")))
            })
            .transpose()
    }

    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM keyflow_audit_journal WHERE journal = ?1")
            .bind(journal)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::backend)?;
        read_head(&mut conn).await
    }

    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM keyflow_audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))
        .bind(seq_column(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        rows.iter()
            .map(|r| keyflow_kms::rows::audit::record(&Cols(r)))
            .collect()
    }

    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::backend)?;
        read_anchor(&mut conn).await
    }

    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::backend)?;
        let head = read_head(&mut tx).await?;
        let current = read_anchor(&mut tx).await?.map(|a| a.seq);
        let stored = mac_at(&mut tx, anchor.seq).await?;
        // A refusal drops the transaction unwritten (rolled back).
        check_prune(anchor, &head, current, stored.as_ref())?;
        let deleted = sqlx::query("DELETE FROM keyflow_audit WHERE seq <= ?1")
            .bind(seq_column(anchor.seq))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?
            .rows_affected();
        sqlx::query(&format!(
            "INSERT INTO keyflow_audit_anchor (id, {ANCHOR_COLUMNS}) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, kind = excluded.kind, \
             seq = excluded.seq, mac = excluded.mac, time = excluded.time, \
             kek_id = excluded.kek_id, tag = excluded.tag"
        ))
        .bind(i64::from(anchor.version))
        .bind(anchor.kind.as_str())
        .bind(seq_column(anchor.seq))
        .bind(&anchor.mac)
        .bind(anchor.time)
        .bind(&anchor.kek_id)
        .bind(&anchor.tag)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(deleted)
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM keyflow_audit WHERE 1 = 1");
        let mut args = Vec::new();
        let mut cond = |clause: &str, arg: Arg| {
            sql.push_str(" AND ");
            sql.push_str(clause);
            args.push(arg);
        };
        if let Some(since) = filter.since {
            cond("time >= ?", Arg::Int(since));
        }
        if let Some(until) = filter.until {
            cond("time < ?", Arg::Int(until));
        }
        if let Some(actor) = &filter.actor {
            cond("actor = ?", Arg::Text(actor.clone()));
        }
        if let Some(purpose) = &filter.purpose {
            // `instr`, not `LIKE`: SQLite's LIKE ignores ASCII case and would need its
            // wildcards escaped; purpose names are case-sensitive and matched exactly.
            cond(
                "instr(purposes, ?) > 0",
                Arg::Text(format!(",{},", escape_purpose(purpose))),
            );
        }
        if let Some(operation) = &filter.operation {
            cond("operation = ?", Arg::Text(operation.clone()));
        }
        if let Some(result) = &filter.result {
            cond("result = ?", Arg::Text(result.clone()));
        }
        if let Some(before) = filter.before {
            cond("seq < ?", Arg::Int(seq_column(before)));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        let mut query = sqlx::query(&sql);
        for arg in args {
            query = match arg {
                Arg::Int(n) => query.bind(n),
                Arg::Text(s) => query.bind(s),
            };
        }
        let rows = query
            .bind(page(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        rows.iter()
            .map(|r| keyflow_kms::rows::audit::record(&Cols(r)))
            .collect()
    }
}
