//! SQLite target: batched `WITH … UPDATE … FROM … RETURNING` statements (SQLite ≥ 3.35,
//! bundled by sqlx), one transaction per batch.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePoolOptions, SqliteRow};
use sqlx::{Sqlite, SqlitePool};

use super::sql::{bind_id, column_types, Dialect, SqlBackend};
use super::{IdKind, TableSpec, Update, CHECKPOINT_TABLE};
use crate::error::Result;

/// Rows per UPDATE statement: 3 parameters each, well below SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 500;

/// The SQLite backend.
pub type SqliteBackend = SqlBackend<Sqlite>;

impl SqlBackend<Sqlite> {
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
        let (id_type, _) = column_types(spec, &columns)?;
        // SQLite's affinity rule: a declared type containing "INT" is an integer.
        let id_kind = if id_type.to_ascii_uppercase().contains("INT") {
            IdKind::Int
        } else {
            IdKind::Text
        };
        Ok(Self::new(pool, spec, id_kind))
    }
}

#[async_trait]
impl Dialect for Sqlite {
    const LABEL: &'static str = "sqlite";
    const MILLIS_TYPE: &'static str = "INTEGER";

    async fn checkpoint_table_exists(pool: &SqlitePool) -> Result<bool> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(CHECKPOINT_TABLE)
                .fetch_optional(pool)
                .await?;
        Ok(exists.is_some())
    }

    fn selected(spec: &TableSpec, _: IdKind) -> (String, String) {
        (spec.id_column.quoted(), spec.column.quoted())
    }

    async fn update(
        conn: &mut SqliteConnection,
        spec: &TableSpec,
        _: IdKind,
        updates: &[Update],
    ) -> Result<Vec<SqliteRow>> {
        let (t, c, id) = spec.quoted();
        let mut returned = Vec::with_capacity(updates.len());
        for chunk in updates.chunks(ROWS_PER_STATEMENT) {
            let values = vec!["(?,?,?)"; chunk.len()].join(",");
            let sql = format!(
                "WITH keyflow_batch(id, old, new) AS (VALUES {values}) \
                 UPDATE {t} AS keyflow_t SET {c} = keyflow_batch.new FROM keyflow_batch \
                 WHERE keyflow_t.{id} = keyflow_batch.id AND keyflow_t.{c} = keyflow_batch.old \
                 RETURNING {id}"
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = bind_id(q, &u.id).bind(u.old.as_str()).bind(u.new.as_str());
            }
            returned.extend(q.fetch_all(&mut *conn).await?);
        }
        Ok(returned)
    }
}
