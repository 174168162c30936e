//! PostgreSQL's dialect of the shared SQL keystore: rows locked with `FOR UPDATE`,
//! every generation bump announced with NOTIFY, a `VACUUM` after a destroy, audit
//! batches in one `INSERT … UNNEST`.

use std::sync::Arc;

use async_trait::async_trait;
use keyflow_kms::audit::StoredAudit;
use keyflow_kms::keyflow_core::to_hex;
use keyflow_kms::keystore::StoreError;
use keyflow_store_sql::rows::audit::{purposes_column, seq_column, COLUMNS as AUDIT_COLUMNS};
use keyflow_store_sql::rows::SqlRow;
use keyflow_store_sql::{db_error, Backend, Tx};
use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{PgPool, Postgres};
use tokio::sync::Notify;

use crate::PostgresBackend;

#[async_trait]
impl Backend for PostgresBackend {
    type Db = Postgres;
    type Row = SqlRow<PgRow>;

    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const LOCKS_BY_WRITING: bool = false;
    /// Bumps the change generation and announces the new value on
    /// [`CHANNEL`](crate::CHANNEL): the NOTIFY is delivered on commit and discarded on
    /// rollback, so a listener never hears of a change that did not happen. The row
    /// lock it takes also serializes key-version writers, so every such transaction
    /// takes its locks in one order (generation first): no deadlocks.
    const BUMP_GENERATION: &'static str = "WITH g AS (\
           UPDATE keyflow_meta SET value = (CAST(value AS BIGINT) + 1)::text \
           WHERE key = 'generation' RETURNING value) \
         SELECT pg_notify('keyflow_keys', value) FROM g";
    const POSITION_FN: &'static str = "strpos";

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// In one statement, one array per column (one round trip whatever the batch).
    async fn insert_audit(
        &self,
        tx: &mut Tx<Self>,
        records: &[StoredAudit],
    ) -> Result<(), StoreError> {
        let texts = |f: fn(&StoredAudit) -> String| records.iter().map(f).collect::<Vec<_>>();
        sqlx::query(&format!(
            "INSERT INTO keyflow_audit ({AUDIT_COLUMNS}) SELECT * FROM UNNEST(\
             $1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[])"
        ))
        .bind(
            records
                .iter()
                .map(|r| seq_column(r.seq))
                .collect::<Vec<_>>(),
        )
        .bind(texts(|r| r.kek_id.clone()))
        .bind(records.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(texts(|r| r.actor.clone()))
        .bind(texts(|r| r.operation.clone()))
        .bind(texts(|r| r.result.clone()))
        .bind(texts(|r| purposes_column(&r.purposes)))
        .bind(texts(|r| r.body.clone()))
        .bind(texts(|r| to_hex(&r.mac)))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The old row version (with the wrapped key) stays in the heap as a dead tuple
    /// until vacuumed; vacuum now rather than whenever autovacuum gets to a small
    /// table. Best effort: PostgreSQL does not zero freed space, and WAL, replicas and
    /// base backups keep older copies until recycled — all of them still wrapped under
    /// the KEK (see docs/ARCHITECTURE.md). A retried destroy has nothing left to do.
    async fn after_destroy(&self, again: bool) -> Result<(), StoreError> {
        if !again {
            if let Err(e) = sqlx::raw_sql("VACUUM key_versions")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(error = %e, "VACUUM after destroying a key version failed");
            }
        }
        Ok(())
    }

    fn change_notifier(&self) -> Option<Arc<Notify>> {
        self.notifier()
    }
}
