//! PostgreSQL target: the whole batch is one `UPDATE … FROM unnest($1, $2, $3)`
//! statement (three array parameters), one transaction per batch.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row as _};

use super::{
    cell, checkpoint_delete, checkpoint_select, checkpoint_upsert, count_sql, not_found,
    now_millis, written_flags, Backend, Checkpoint, IdKind, Operation, PlanCheckpoint, Row, RowId,
    TableSpec, Update, CHECKPOINT_TABLE,
};
use crate::error::{Error, Result};

/// The PostgreSQL backend.
#[derive(Debug)]
pub struct PostgresBackend {
    pool: PgPool,
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
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (table_name, column_name, operation))"
    )
}

impl PostgresBackend {
    /// Connects and checks the table (resolved through the `search_path`, as the
    /// statements will be) and the types of its columns.
    pub async fn connect(url: &str, spec: &TableSpec) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, t.typname::text FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(spec.table.quoted())
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
        let value_type =
            find(spec.column.as_str()).ok_or_else(|| not_found(spec, "column", &spec.column))?;
        let id_kind = match id_type.as_str() {
            "int2" | "int4" | "int8" => IdKind::Int,
            "text" | "varchar" => IdKind::Text,
            other => {
                return Err(Error::Schema(format!(
                    "id column '{}' has type {other}; integer or text ids are supported",
                    spec.id_column
                )))
            }
        };
        if !matches!(value_type.as_str(), "text" | "varchar") {
            return Err(Error::Schema(format!(
                "column '{}' has type {value_type}; text or varchar columns are supported",
                spec.column
            )));
        }
        Ok(Self {
            pool,
            spec: spec.clone(),
            id_kind,
            checkpoint_table_ready: AtomicBool::new(false),
        })
    }

    /// The id as selected: cast to int8 or text so one Rust type decodes every width.
    fn id_expr(&self, qualifier: &str) -> String {
        let cast = match self.id_kind {
            IdKind::Int => "int8",
            IdKind::Text => "text",
        };
        format!("{qualifier}{}::{cast}", self.spec.id_column.quoted())
    }

    async fn checkpoint_table_exists(&self) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(CHECKPOINT_TABLE)
            .fetch_one(&self.pool)
            .await?)
    }

    fn decode_id(&self, row: &PgRow) -> Result<RowId> {
        Ok(match self.id_kind {
            IdKind::Int => RowId::Int(row.try_get::<i64, _>(0)?),
            IdKind::Text => RowId::Text(row.try_get::<String, _>(0)?),
        })
    }
}

fn bind_id<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    id: &'q RowId,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match id {
        RowId::Int(i) => q.bind(*i),
        RowId::Text(s) => q.bind(s.as_str()),
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
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
        let sel = self.id_expr("");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                let sql = format!("SELECT {sel}, {c}::text FROM {t} ORDER BY {id} LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?
            }
            Some(after) => {
                let sql = format!(
                    "SELECT {sel}, {c}::text FROM {t} WHERE {id} > $1 ORDER BY {id} LIMIT $2"
                );
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
        if !self.checkpoint_table_exists().await? {
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
            // Two first runs at once can race inside CREATE TABLE IF NOT EXISTS (a
            // unique violation on the catalog); the loser finds the table made.
            if let Err(e) = sqlx::query(&checkpoint_ddl()).execute(&self.pool).await {
                if !self.checkpoint_table_exists().await? {
                    return Err(e.into());
                }
            }
            self.checkpoint_table_ready.store(true, Ordering::Relaxed);
        }
        let (t, c, id) = (
            self.spec.table.quoted(),
            self.spec.column.quoted(),
            self.spec.id_column.quoted(),
        );
        let (array_type, returning) = match self.id_kind {
            IdKind::Int => ("int8[]", self.id_expr("keyflow_t.")),
            IdKind::Text => ("text[]", self.id_expr("keyflow_t.")),
        };
        let mut tx = self.pool.begin().await?;
        let mut returned = Vec::with_capacity(updates.len());
        if !updates.is_empty() {
            let sql = format!(
                "UPDATE {t} AS keyflow_t SET {c} = keyflow_b.new \
                 FROM unnest($1::{array_type}, $2::text[], $3::text[]) AS keyflow_b(id, old, new) \
                 WHERE keyflow_t.{id} = keyflow_b.id AND keyflow_t.{c} = keyflow_b.old \
                 RETURNING {returning}"
            );
            let olds: Vec<&str> = updates.iter().map(|u| u.old.as_str()).collect();
            let news: Vec<&str> = updates.iter().map(|u| u.new.as_str()).collect();
            let q = match self.id_kind {
                IdKind::Int => {
                    let ids: Vec<i64> = updates
                        .iter()
                        .filter_map(|u| match u.id {
                            RowId::Int(i) => Some(i),
                            RowId::Text(_) => None,
                        })
                        .collect();
                    sqlx::query(&sql).bind(ids)
                }
                IdKind::Text => {
                    let ids: Vec<String> = updates.iter().map(|u| u.id.to_string()).collect();
                    sqlx::query(&sql).bind(ids)
                }
            };
            for r in q.bind(olds).bind(news).fetch_all(&mut *tx).await? {
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
