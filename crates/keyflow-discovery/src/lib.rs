//! # keyflow-discovery
//!
//! Data discovery (PCI DSS 12.5.2): which columns of an application's database hold
//! card numbers, SSNs, IBANs, e-mail addresses or phone numbers **in clear**.
//!
//! - the text and JSON columns of every table (or of the tables asked for) are found
//!   in the catalog (`sqlite_master` and `pragma_table_info`; PostgreSQL's
//!   `information_schema` of the current schema);
//! - rows are read in pages by keyset pagination (SQLite's rowid or the primary key;
//!   PostgreSQL's primary key, else `ctid`), never `OFFSET`, each page its own short
//!   read, so the application keeps writing while a scan runs;
//! - each value goes through [`count::Counts::add_cell`]: KeyFlow ciphertexts are
//!   counted as encrypted, JSON is walked, free text goes to
//!   [`keyflow_fields::text::find_in_text`];
//! - the [`ScanReport`] holds counts per table, column and detector, never a value.
//!
//! KeyFlow's own tables (`keyflow_*`, and a keystore's `key_versions`, `key_policies`,
//! `api_tokens`, `legacy_keys`, `_sqlx_migrations`) are skipped. The SQLite database
//! is opened read-only.
//!
//! ```no_run
//! # async fn demo() -> keyflow_discovery::Result<()> {
//! use keyflow_discovery::{NoProgress, ScanOptions, Target};
//!
//! let target = Target::connect("sqlite:app.db").await?;
//! let plan = target.plan(&ScanOptions::default()).await?;
//! let report = target.scan(&plan, &NoProgress).await?;
//! for f in report.findings() {
//!     println!("{}.{}: {} {}", f.table, f.column, f.count, f.detector);
//! }
//! # Ok(()) }
//! ```

pub mod count;
mod error;
mod keyset;
mod postgres;
pub mod report;
mod sqlite;
pub mod url;

pub use error::{Error, Result};
pub use report::{ColumnReport, FindingCount, ScanReport, TableReport};

/// Rows per page unless told otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// Tables a KeyFlow keystore creates besides its `keyflow_*` ones.
const KEYSTORE_TABLES: &[&str] = &[
    "key_versions",
    "key_policies",
    "api_tokens",
    "legacy_keys",
    "_sqlx_migrations",
];

/// The table holding a keystore's identity: its presence marks a KeyFlow keystore.
const KEYSTORE_MARKER: &str = "keyflow_meta";

/// What to scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Only these tables (names as in the catalog, case-sensitive); empty: every table.
    pub tables: Vec<String>,
    /// Rows per page.
    pub page_size: u32,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Told how a scan advances (a progress bar).
pub trait Progress: Send + Sync {
    /// The scan starts; `total_rows` rows are to be read.
    fn start(&self, total_rows: u64);
    /// `rows` more rows were read.
    fn advance(&self, rows: u64);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// A text or JSON column to scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Its name.
    pub name: String,
    /// Declared JSON (`json`/`jsonb` on PostgreSQL, `JSON` on SQLite).
    pub json: bool,
}

/// How a table is paged through.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyPlan {
    /// SQLite's rowid, under the first of its names no column shadows.
    Rowid(&'static str),
    /// The primary key's columns, with (PostgreSQL) each one's type.
    Columns(Vec<(String, String)>),
    /// PostgreSQL's physical row id, for tables without a primary key.
    Ctid,
}

/// A table to scan: its text and JSON columns and how to page through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePlan {
    /// Its name.
    pub name: String,
    /// The columns scanned (empty: the table is listed, not read).
    pub columns: Vec<ColumnPlan>,
    key: KeyPlan,
}

/// The tables a scan reads, in name order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The tables.
    pub tables: Vec<TablePlan>,
    page_size: u32,
}

/// An application database, connected.
#[derive(Debug)]
pub enum Target {
    /// `sqlite:PATH` (opened read-only; never created).
    Sqlite(sqlx::SqlitePool, String),
    /// `postgres://…`.
    Postgres(sqlx::PgPool, String),
}

impl Target {
    /// Connects to `url`: `sqlite:PATH`, `sqlite://PATH`, `postgres://…` or
    /// `postgresql://…`. Errors show the URL with its password redacted.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = url.trim();
        let shown = url::redact(url);
        if url.starts_with("sqlite:") {
            Ok(Target::Sqlite(sqlite::connect(url, &shown).await?, shown))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Target::Postgres(
                postgres::connect(url, &shown).await?,
                shown,
            ))
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            let scheme = if scheme.len() > 20 || scheme == url {
                "(none)"
            } else {
                scheme
            };
            Err(Error::UnsupportedUrl(scheme.to_owned()))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Target::Sqlite(..) => "sqlite",
            Target::Postgres(..) => "postgres",
        }
    }

    /// The URL, password redacted.
    pub fn shown_url(&self) -> &str {
        match self {
            Target::Sqlite(_, u) | Target::Postgres(_, u) => u,
        }
    }

    /// Reads the catalog: the tables to scan and their text and JSON columns. A table
    /// asked for that does not exist, or that is KeyFlow's own, is an error.
    pub async fn plan(&self, options: &ScanOptions) -> Result<Plan> {
        let names = match self {
            Target::Sqlite(pool, _) => sqlite::table_names(pool).await?,
            Target::Postgres(pool, _) => postgres::table_names(pool).await?,
        };
        let keystore = names.iter().any(|n| n == KEYSTORE_MARKER);
        let own = |n: &str| {
            n.to_ascii_lowercase().starts_with("keyflow_")
                || (keystore && KEYSTORE_TABLES.contains(&n))
        };
        let chosen: Vec<String> = if options.tables.is_empty() {
            names.iter().filter(|n| !own(n)).cloned().collect()
        } else {
            let mut chosen = Vec::new();
            for t in &options.tables {
                if !names.contains(t) {
                    return Err(Error::NoSuchTable(t.clone()));
                }
                if own(t) {
                    return Err(Error::OwnTable(t.clone()));
                }
                if !chosen.contains(t) {
                    chosen.push(t.clone());
                }
            }
            chosen.sort();
            chosen
        };
        let mut tables = Vec::with_capacity(chosen.len());
        for name in chosen {
            tables.push(match self {
                Target::Sqlite(pool, _) => sqlite::table_plan(pool, name).await?,
                Target::Postgres(pool, _) => postgres::table_plan(pool, name).await?,
            });
        }
        Ok(Plan {
            tables,
            page_size: options.page_size.max(1),
        })
    }

    /// Reads every planned table page by page and counts what it holds.
    pub async fn scan(&self, plan: &Plan, progress: &dyn Progress) -> Result<ScanReport> {
        let mut total = 0;
        for t in plan.tables.iter().filter(|t| !t.columns.is_empty()) {
            total += match self {
                Target::Sqlite(pool, _) => keyset::count_rows(pool, t).await?,
                Target::Postgres(pool, _) => keyset::count_rows(pool, t).await?,
            };
        }
        progress.start(total);
        let mut tables = Vec::with_capacity(plan.tables.len());
        for t in &plan.tables {
            let mut counts = vec![count::Counts::default(); t.columns.len()];
            let rows = if t.columns.is_empty() {
                0
            } else {
                match self {
                    Target::Sqlite(pool, _) => {
                        sqlite::scan_table(pool, t, plan.page_size, &mut counts, progress).await?
                    }
                    Target::Postgres(pool, _) => {
                        postgres::scan_table(pool, t, plan.page_size, &mut counts, progress).await?
                    }
                }
            };
            tables.push(TableReport {
                table: t.name.clone(),
                rows,
                columns: t
                    .columns
                    .iter()
                    .zip(&counts)
                    .map(|(c, n)| ColumnReport::new(c.name.clone(), c.json, n))
                    .collect(),
            });
        }
        Ok(ScanReport {
            backend: self.backend(),
            target: self.shown_url().to_owned(),
            tables,
        })
    }
}

/// `name` as a quoted SQL identifier, valid in SQLite and PostgreSQL (names come from
/// the catalog; an embedded quote is doubled).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("orders"), "\"orders\"");
        assert_eq!(quoted("we\"ird name"), "\"we\"\"ird name\"");
    }
}
