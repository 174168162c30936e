//! SQLite target: batched `WITH … UPDATE … FROM … RETURNING` statements (SQLite ≥ 3.35,
//! bundled by sqlx), one transaction per batch.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Row as _, SqlitePool};

use super::{
    cell, checkpoint_delete, checkpoint_select, checkpoint_upsert, count_sql, not_found,
    now_millis, written_flags, Backend, Checkpoint, IdKind, Operation, PlanCheckpoint, Row, RowId,
    TableSpec, Update, CHECKPOINT_TABLE,
};
use crate::error::{Error, Result};

/// Rows per UPDATE statement: 3 parameters each, well below SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 500;

/// The SQLite backend.
#[derive(Debug)]
pub struct SqliteBackend {
    pool: SqlitePool,
    spec: TableSpec,
    id_kind: IdKind,
    checkpoint_table_ready: AtomicBool,
}

fn checkpoint_ddl() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
            table_name TEXT NOT NULL,
            column_name TEXT NOT NULL,
            operation TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (table_name, column_name, operation))"
    )
}

impl SqliteBackend {
    /// Opens `url` (never creates the file) and checks the table and columns.
    pub async fn connect(url: &str, spec: &TableSpec) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            // The application keeps writing while we run: wait for its locks.
            .busy_timeout(Duration::from_secs(30));
        // One connection: the engine is sequential, and reads see its own commits.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let columns: Vec<(String, String)> =
            sqlx::query_as("SELECT name, type FROM pragma_table_info(?1)")
                .bind(spec.table.as_str())
                .fetch_all(&pool)
                .await?;
        if columns.is_empty() {
            return Err(Error::Schema(format!(
                "table '{}' not found (names are case-sensitive)",
                spec.table
            )));
        }
        let find = |name: &str| columns.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let id_type = find(spec.id_column.as_str())
            .ok_or_else(|| not_found(spec, "id column", &spec.id_column))?;
        find(spec.column.as_str()).ok_or_else(|| not_found(spec, "column", &spec.column))?;
        // SQLite's affinity rule: a declared type containing "INT" is an integer.
        let id_kind = if id_type.to_ascii_uppercase().contains("INT") {
            IdKind::Int
        } else {
            IdKind::Text
        };
        Ok(Self {
            pool,
            spec: spec.clone(),
            id_kind,
            checkpoint_table_ready: AtomicBool::new(false),
        })
    }

    fn decode_id(&self, row: &SqliteRow) -> Result<RowId> {
        let bad = |_| {
            Error::Schema(format!(
                "id column '{}' holds a value that is not {}",
                self.spec.id_column,
                if self.id_kind == IdKind::Int {
                    "an integer"
                } else {
                    "text"
                }
            ))
        };
        Ok(match self.id_kind {
            IdKind::Int => RowId::Int(row.try_get::<i64, _>(0).map_err(bad)?),
            IdKind::Text => RowId::Text(row.try_get::<String, _>(0).map_err(bad)?),
        })
    }

    fn update_sql(&self, rows: usize) -> String {
        let (t, c, id) = (
            self.spec.table.quoted(),
            self.spec.column.quoted(),
            self.spec.id_column.quoted(),
        );
        let values = vec!["(?,?,?)"; rows].join(",");
        format!(
            "WITH keyflow_batch(id, old, new) AS (VALUES {values}) \
             UPDATE {t} AS keyflow_t SET {c} = keyflow_batch.new FROM keyflow_batch \
             WHERE keyflow_t.{id} = keyflow_batch.id AND keyflow_t.{c} = keyflow_batch.old \
             RETURNING {id}"
        )
    }
}

fn bind_id<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    id: &'q RowId,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match id {
        RowId::Int(i) => q.bind(*i),
        RowId::Text(s) => q.bind(s.as_str()),
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn count_rows(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&count_sql(&self.spec))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn fetch(&self, after: Option<&RowId>, limit: usize) -> Result<Vec<Row>> {
        let (t, c, id) = (
            self.spec.table.quoted(),
            self.spec.column.quoted(),
            self.spec.id_column.quoted(),
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                let sql = format!("SELECT {id}, {c} FROM {t} ORDER BY {id} LIMIT ?1");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?
            }
            Some(after) => {
                let sql =
                    format!("SELECT {id}, {c} FROM {t} WHERE {id} > ?1 ORDER BY {id} LIMIT ?2");
                bind_id(sqlx::query(&sql), after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Row {
                    id: self.decode_id(r)?,
                    value: cell(r.try_get::<Option<String>, _>(1)),
                })
            })
            .collect()
    }

    async fn load_checkpoint(&self, op: Operation) -> Result<Option<Checkpoint>> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(CHECKPOINT_TABLE)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let state: Option<String> = sqlx::query_scalar(&checkpoint_select())
            .bind(self.spec.table.as_str())
            .bind(self.spec.column.as_str())
            .bind(op.as_str())
            .fetch_optional(&self.pool)
            .await?;
        state.as_deref().map(Checkpoint::from_json).transpose()
    }

    async fn apply(
        &self,
        op: Operation,
        updates: &[Update],
        plan: &PlanCheckpoint<'_>,
    ) -> Result<Checkpoint> {
        if !self.checkpoint_table_ready.load(Ordering::Relaxed) {
            sqlx::query(&checkpoint_ddl()).execute(&self.pool).await?;
            self.checkpoint_table_ready.store(true, Ordering::Relaxed);
        }
        let mut tx = self.pool.begin().await?;
        let mut returned = Vec::with_capacity(updates.len());
        for chunk in updates.chunks(ROWS_PER_STATEMENT) {
            let sql = self.update_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = bind_id(q, &u.id).bind(u.old.as_str()).bind(u.new.as_str());
            }
            for r in q.fetch_all(&mut *tx).await? {
                returned.push(self.decode_id(&r)?);
            }
        }
        let checkpoint = plan(&written_flags(updates, &returned))?;
        sqlx::query(&checkpoint_upsert())
            .bind(self.spec.table.as_str())
            .bind(self.spec.column.as_str())
            .bind(op.as_str())
            .bind(checkpoint.to_json()?)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    async fn clear_checkpoint(&self, op: Operation) -> Result<()> {
        if self.load_checkpoint(op).await?.is_none() {
            return Ok(());
        }
        sqlx::query(&checkpoint_delete())
            .bind(self.spec.table.as_str())
            .bind(self.spec.column.as_str())
            .bind(op.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
