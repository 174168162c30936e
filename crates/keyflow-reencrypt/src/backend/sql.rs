//! The database-independent half of a backend: [`SqlBackend`] runs the checkpoint
//! statements, the row count, keyset paging and the batch's transaction the same way on
//! every driver, and asks its [`Dialect`] only where the SQL differs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row as _, Type};

use super::{
    Backend, Cell, Checkpoint, IdKind, Operation, PlanCheckpoint, Row, RowId, TableSpec, Update,
    CHECKPOINT_TABLE,
};
use crate::error::{Error, Result};
use crate::ident::Ident;

/// Where one database's SQL differs from the other's.
#[async_trait]
pub trait Dialect: Database {
    /// "sqlite" or "postgres".
    const LABEL: &'static str;
    /// The SQL type of the checkpoint's `updated_at` (milliseconds).
    const MILLIS_TYPE: &'static str;

    /// Whether the checkpoint table exists (reads the catalog; writes nothing).
    async fn checkpoint_table_exists(pool: &Pool<Self>) -> Result<bool>;

    /// The selected id and value expressions, in a form [`decode_id`] and [`cell`] read
    /// whatever the columns' declared widths.
    fn selected(spec: &TableSpec, id_kind: IdKind) -> (String, String);

    /// Applies `updates` on `conn` (inside the batch's transaction), each only where the
    /// column still holds its `old` value; returns the rows written (their id first).
    async fn update(
        conn: &mut Self::Connection,
        spec: &TableSpec,
        id_kind: IdKind,
        updates: &[Update],
    ) -> Result<Vec<Self::Row>>;
}

/// A target database: the table and columns checked at connect, and the dialect's
/// connection pool.
#[derive(Debug)]
pub struct SqlBackend<DB: Database> {
    pool: Pool<DB>,
    spec: TableSpec,
    id_kind: IdKind,
    checkpoint_table_ready: AtomicBool,
}

impl<DB: Database> SqlBackend<DB> {
    /// A backend over `pool`, whose table was checked: its id column holds `id_kind`.
    pub(super) fn new(pool: Pool<DB>, spec: &TableSpec, id_kind: IdKind) -> Self {
        Self {
            pool,
            spec: spec.clone(),
            id_kind,
            checkpoint_table_ready: AtomicBool::new(false),
        }
    }
}

/// The declared types of the id column and the value column, from the table's
/// `(name, type)` catalog rows (empty: no such table).
pub(super) fn column_types<'a>(
    spec: &TableSpec,
    columns: &'a [(String, String)],
) -> Result<(&'a str, &'a str)> {
    if columns.is_empty() {
        return Err(Error::Schema(format!(
            "table '{}' not found (names are case-sensitive)",
            spec.table
        )));
    }
    let find = |name: &Ident, what: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name.as_str())
            .map(|(_, t)| t.as_str())
            .ok_or_else(|| not_found(spec, what, name))
    };
    Ok((
        find(&spec.id_column, "id column")?,
        find(&spec.column, "column")?,
    ))
}

fn not_found(spec: &TableSpec, what: &str, name: &Ident) -> Error {
    Error::Schema(format!(
        "{what} '{name}' not found in table '{}' (names are case-sensitive)",
        spec.table
    ))
}

/// Binds a row id as the driver's integer or text.
pub(super) fn bind_id<'q, DB>(
    query: Query<'q, DB, DB::Arguments<'q>>,
    id: &'q RowId,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
{
    match id {
        RowId::Int(i) => query.bind(*i),
        RowId::Text(s) => query.bind(s.as_str()),
    }
}

/// The id in a fetched or returned row's first column.
fn decode_id<R>(spec: &TableSpec, id_kind: IdKind, row: &R) -> Result<RowId>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let bad = |_| {
        Error::Schema(format!(
            "id column '{}' holds a value that is not {}",
            spec.id_column,
            match id_kind {
                IdKind::Int => "an integer",
                IdKind::Text => "text",
            }
        ))
    };
    Ok(match id_kind {
        IdKind::Int => RowId::Int(row.try_get::<i64, _>(0).map_err(bad)?),
        IdKind::Text => RowId::Text(row.try_get::<String, _>(0).map_err(bad)?),
    })
}

/// A fetched value: text, NULL, or (SQLite's dynamic typing) something else, never
/// touched.
fn cell(value: std::result::Result<Option<String>, sqlx::Error>) -> Cell {
    match value {
        Ok(None) => Cell::Null,
        Ok(Some(s)) => Cell::Text(s),
        Err(_) => Cell::NotText,
    }
}

/// Which planned updates the database applied, from the ids its `RETURNING` gave back.
fn written_flags(updates: &[Update], returned: &[RowId]) -> Vec<bool> {
    let set: HashSet<&RowId> = returned.iter().collect();
    updates.iter().map(|u| set.contains(&u.id)).collect()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The checkpoint table, one row per `(table_name, column_name, operation)`.
fn checkpoint_ddl(millis_type: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
            table_name TEXT NOT NULL,
            column_name TEXT NOT NULL,
            operation TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at {millis_type} NOT NULL,
            PRIMARY KEY (table_name, column_name, operation))"
    )
}

/// The statements on one checkpoint row, the same text for both databases (`$n`
/// placeholders, which sqlx's SQLite driver binds by number).
const CHECKPOINT_KEY: &str = "table_name = $1 AND column_name = $2 AND operation = $3";

fn checkpoint_select() -> String {
    format!("SELECT state FROM {CHECKPOINT_TABLE} WHERE {CHECKPOINT_KEY}")
}

fn checkpoint_upsert() -> String {
    format!(
        "INSERT INTO {CHECKPOINT_TABLE} (table_name, column_name, operation, state, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (table_name, column_name, operation) \
         DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
    )
}

fn checkpoint_delete() -> String {
    format!("DELETE FROM {CHECKPOINT_TABLE} WHERE {CHECKPOINT_KEY}")
}

// Both drivers bind and decode the same Rust types; the bounds say which.
#[async_trait]
impl<DB> Backend for SqlBackend<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn name(&self) -> &'static str {
        DB::LABEL
    }

    async fn count_rows(&self) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.spec.table.quoted());
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn fetch(&self, after: Option<&RowId>, limit: usize) -> Result<Vec<Row>> {
        let (t, id) = (self.spec.table.quoted(), self.spec.id_column.quoted());
        let (sel_id, sel_value) = DB::selected(&self.spec, self.id_kind);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                let sql = format!("SELECT {sel_id}, {sel_value} FROM {t} ORDER BY {id} LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?
            }
            Some(after) => {
                let sql = format!(
                    "SELECT {sel_id}, {sel_value} FROM {t} WHERE {id} > $1 ORDER BY {id} LIMIT $2"
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
                    id: decode_id(&self.spec, self.id_kind, r)?,
                    value: cell(r.try_get::<Option<String>, _>(1)),
                })
            })
            .collect()
    }

    async fn load_checkpoint(&self, op: Operation) -> Result<Option<Checkpoint>> {
        if !DB::checkpoint_table_exists(&self.pool).await? {
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
            // Two first runs at once can race inside CREATE TABLE IF NOT EXISTS (on
            // PostgreSQL, a unique violation on the catalog); the loser finds the table
            // made.
            let ddl = checkpoint_ddl(DB::MILLIS_TYPE);
            if let Err(e) = sqlx::query(&ddl).execute(&self.pool).await {
                if !DB::checkpoint_table_exists(&self.pool).await? {
                    return Err(e.into());
                }
            }
            self.checkpoint_table_ready.store(true, Ordering::Relaxed);
        }
        let mut tx = self.pool.begin().await?;
        let mut returned = Vec::with_capacity(updates.len());
        if !updates.is_empty() {
            for r in DB::update(&mut tx, &self.spec, self.id_kind, updates).await? {
                returned.push(decode_id(&self.spec, self.id_kind, &r)?);
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
