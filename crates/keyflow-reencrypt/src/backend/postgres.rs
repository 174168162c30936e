//! PostgreSQL target: the whole batch is one `UPDATE … FROM unnest($1, $2, $3)`
//! statement (three array parameters), one transaction per batch.

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres};

use super::sql::{column_types, Dialect, SqlBackend};
use super::{IdKind, RowId, TableSpec, Update, CHECKPOINT_TABLE};
use crate::error::{Error, Result};

/// The PostgreSQL backend.
pub type PostgresBackend = SqlBackend<Postgres>;

impl SqlBackend<Postgres> {
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
        let (id_type, value_type) = column_types(spec, &columns)?;
        let id_kind = match id_type {
            "int2" | "int4" | "int8" => IdKind::Int,
            "text" | "varchar" => IdKind::Text,
            other => {
                return Err(Error::Schema(format!(
                    "id column '{}' has type {other}; integer or text ids are supported",
                    spec.id_column
                )))
            }
        };
        if !matches!(value_type, "text" | "varchar") {
            return Err(Error::Schema(format!(
                "column '{}' has type {value_type}; text or varchar columns are supported",
                spec.column
            )));
        }
        Ok(Self::new(pool, spec, id_kind))
    }
}

/// The id as selected: cast to int8 or text so one Rust type decodes every width.
fn id_expr(spec: &TableSpec, id_kind: IdKind, qualifier: &str) -> String {
    let cast = match id_kind {
        IdKind::Int => "int8",
        IdKind::Text => "text",
    };
    format!("{qualifier}{}::{cast}", spec.id_column.quoted())
}

#[async_trait]
impl Dialect for Postgres {
    const LABEL: &'static str = "postgres";
    const MILLIS_TYPE: &'static str = "BIGINT";

    async fn checkpoint_table_exists(pool: &PgPool) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(CHECKPOINT_TABLE)
            .fetch_one(pool)
            .await?)
    }

    fn selected(spec: &TableSpec, id_kind: IdKind) -> (String, String) {
        (
            id_expr(spec, id_kind, ""),
            format!("{}::text", spec.column.quoted()),
        )
    }

    async fn update(
        conn: &mut PgConnection,
        spec: &TableSpec,
        id_kind: IdKind,
        updates: &[Update],
    ) -> Result<Vec<PgRow>> {
        let (t, c, id) = spec.quoted();
        let array_type = match id_kind {
            IdKind::Int => "int8[]",
            IdKind::Text => "text[]",
        };
        let returning = id_expr(spec, id_kind, "keyflow_t.");
        let sql = format!(
            "UPDATE {t} AS keyflow_t SET {c} = keyflow_b.new \
             FROM unnest($1::{array_type}, $2::text[], $3::text[]) AS keyflow_b(id, old, new) \
             WHERE keyflow_t.{id} = keyflow_b.id AND keyflow_t.{c} = keyflow_b.old \
             RETURNING {returning}"
        );
        let olds: Vec<&str> = updates.iter().map(|u| u.old.as_str()).collect();
        let news: Vec<&str> = updates.iter().map(|u| u.new.as_str()).collect();
        let q = match id_kind {
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
        Ok(q.bind(olds).bind(news).fetch_all(conn).await?)
    }
}
