//! Database I/O: one [`Backend`], [`SqlBackend`], over sqlx's typed drivers.
//!
//! sqlx's `any` driver was not used: array binding (PostgreSQL updates a whole batch
//! through `unnest`), catalog queries and type checks differ. What is the same for both
//! databases (the checkpoint table, counting, paging, the batch's transaction) is
//! written once in `sql`, generic over a small [`Dialect`]; `postgres` and `sqlite` say
//! exactly what SQL differs where.

mod postgres;
mod sql;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::census::Census;
use crate::error::{Error, Result};
use crate::ident::Ident;

pub use postgres::PostgresBackend;
pub use sql::{Dialect, SqlBackend};
pub use sqlite::SqliteBackend;

/// Name of the checkpoint table the engine creates in the target database.
pub const CHECKPOINT_TABLE: &str = "keyflow_reencrypt_checkpoint";

/// The columns a run works on. Every name is a validated [`Ident`].
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The table.
    pub table: Ident,
    /// The column holding the values.
    pub column: Ident,
    /// A unique, ordered key (usually the primary key): keyset pagination and the
    /// optimistic `UPDATE … WHERE id = ? AND column = <value read>`.
    pub id_column: Ident,
}

impl TableSpec {
    /// Validates the three names (the table may not start with `keyflow_`).
    pub fn new(table: &str, column: &str, id_column: &str) -> Result<Self> {
        Ok(Self {
            table: Ident::user_table(table)?,
            column: Ident::new("column", column)?,
            id_column: Ident::new("id column", id_column)?,
        })
    }

    /// The table, value column and id column, quoted for SQL.
    pub fn quoted(&self) -> (String, String, String) {
        (
            self.table.quoted(),
            self.column.quoted(),
            self.id_column.quoted(),
        )
    }
}

/// A row's key: an integer or a text id (checkpoints store it as a JSON number or string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowId {
    /// An integer key (SQLite INTEGER, PostgreSQL smallint/integer/bigint).
    Int(i64),
    /// A text key (ordered by the database's collation).
    Text(String),
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowId::Int(i) => write!(f, "{i}"),
            RowId::Text(s) => f.write_str(s),
        }
    }
}

/// What the id column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Integers.
    Int,
    /// Text.
    Text,
}

/// A column value as read.
#[derive(Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A text value.
    Text(String),
    /// A value that is not text (SQLite's dynamic typing allows it); never touched.
    NotText,
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be plaintext (migrations): never shown.
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Text(s) => write!(f, "Text(<{} bytes>)", s.len()),
            Cell::NotText => f.write_str("NotText"),
        }
    }
}

/// One row read from the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its id.
    pub id: RowId,
    /// Its value.
    pub value: Cell,
}

/// One planned write: `SET column = new WHERE id = id AND column = old`.
#[derive(Clone)]
pub struct Update {
    /// The row.
    pub id: RowId,
    /// The value read (the optimistic-concurrency guard).
    pub old: String,
    /// The value to write.
    pub new: String,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Which job a checkpoint belongs to (re-encryption and migration of the same column
/// keep separate checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Rewrite values under non-active key versions.
    Reencrypt,
    /// Encrypt plaintext values.
    Migrate,
    /// Convert values of the legacy Node.js system (`keyflow reencrypt --from-legacy`,
    /// transform in `keyflow-legacy`).
    FromLegacy,
}

impl Operation {
    /// The label stored in the checkpoint table.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Reencrypt => "reencrypt",
            Operation::Migrate => "migrate",
            Operation::FromLegacy => "from-legacy",
        }
    }
}

/// Where an interrupted run stopped: every row with `id <= last_id` is done, and
/// `census` describes exactly those rows. Written in the same transaction as the
/// batch's updates, so it can never claim a write that did not commit, nor miss one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The last id of the last committed batch.
    pub last_id: RowId,
    /// The census of every row up to `last_id`.
    pub census: Census,
}

impl Checkpoint {
    pub(crate) fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Checkpoint(e.to_string()))
    }

    pub(crate) fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::Checkpoint(e.to_string()))
    }
}

/// Builds the checkpoint of a batch once the database said which updates it applied
/// (`written[i]` for `updates[i]`); called inside the batch's transaction.
pub type PlanCheckpoint<'a> = dyn Fn(&[bool]) -> Result<Checkpoint> + Send + Sync + 'a;

/// The engine's view of a target database: a table, a value column and an id column.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// "sqlite" or "postgres".
    fn name(&self) -> &'static str;

    /// Rows in the table (for the progress bar).
    async fn count_rows(&self) -> Result<u64>;

    /// Up to `limit` rows with `id > after`, ordered by id (keyset pagination).
    async fn fetch(&self, after: Option<&RowId>, limit: usize) -> Result<Vec<Row>>;

    /// The saved checkpoint of `op` on this table/column, if any. Writes nothing (the
    /// checkpoint table is created on the first save).
    async fn load_checkpoint(&self, op: Operation) -> Result<Option<Checkpoint>>;

    /// One transaction: applies `updates` (each only if the column still holds `old`),
    /// then saves the checkpoint that `plan` builds from what was applied. Returns it.
    async fn apply(
        &self,
        op: Operation,
        updates: &[Update],
        plan: &PlanCheckpoint<'_>,
    ) -> Result<Checkpoint>;

    /// Deletes the checkpoint of `op` (a finished run, or `--restart`).
    async fn clear_checkpoint(&self, op: Operation) -> Result<()>;
}

/// Connects to the database named by `url` (`sqlite:PATH`, `sqlite://PATH`,
/// `postgres://…`, `postgresql://…`) and checks that `spec` names an existing table and
/// columns the engine can handle.
pub async fn connect(url: &str, spec: &TableSpec) -> Result<Box<dyn Backend>> {
    let url = url.trim();
    if url.starts_with("sqlite:") {
        Ok(Box::new(SqliteBackend::connect(url, spec).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresBackend::connect(url, spec).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(Error::UnsupportedUrl(format!(
            "scheme '{scheme}' (use sqlite:PATH or postgres://…)"
        )))
    }
}
