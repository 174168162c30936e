//! SQLite: the catalog from `sqlite_master` and `pragma_table_info`, pages by rowid
//! (or by the primary key of a `WITHOUT ROWID` table).

use std::str::FromStr;
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Row as _, Sqlite, SqlitePool, TypeInfo as _, ValueRef as _};

use crate::count::Counts;
use crate::error::{Error, Result};
use crate::{keyset, quoted, ColumnPlan, KeyPlan, Progress, TablePlan};

/// Opens `url` read-only; never creates a file.
pub(crate) async fn connect(url: &str, shown: &str) -> Result<SqlitePool> {
    let connect_error = Error::connect(shown);
    let options = SqliteConnectOptions::from_str(url)
        .map_err(connect_error)?
        .create_if_missing(false)
        .read_only(true)
        // The application may be writing: wait for its locks rather than fail.
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(connect_error)?;
    // Opening is lazy about the file's contents: read the header now, so a file that
    // is not a database fails here, as a connection error.
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .execute(&pool)
        .await
        .map_err(connect_error)?;
    Ok(pool)
}

/// Ordinary tables (not SQLite's own, not virtual tables), in name order.
pub(crate) async fn table_names(pool: &SqlitePool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND upper(coalesce(sql, '')) NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Text affinity (CHAR, CLOB, TEXT), JSON, or no declared type (any value).
fn scanned_type(declared: &str) -> Option<bool> {
    let t = declared.to_ascii_uppercase();
    if t.contains("JSON") {
        Some(true)
    } else if t.is_empty() || t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Some(false)
    } else {
        None
    }
}

pub(crate) async fn table_plan(pool: &SqlitePool, name: String) -> Result<TablePlan> {
    let info: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
            .bind(&name)
            .fetch_all(pool)
            .await?;
    let columns = info
        .iter()
        .filter_map(|(n, t, _)| {
            scanned_type(t).map(|json| ColumnPlan {
                name: n.clone(),
                json,
            })
        })
        .collect();
    let sql: Option<String> =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .bind(&name)
            .fetch_optional(pool)
            .await?;
    let without_rowid = sql.is_some_and(|s| {
        s.to_ascii_uppercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0].ends_with("WITHOUT") && w[1].starts_with("ROWID"))
    });
    let key = if without_rowid {
        let mut pk: Vec<(i64, String)> = info
            .iter()
            .filter(|(_, _, pk)| *pk > 0)
            .map(|(n, _, pk)| (*pk, n.clone()))
            .collect();
        pk.sort();
        KeyPlan::Columns(pk.into_iter().map(|(_, n)| (n, String::new())).collect())
    } else {
        // `rowid` can be shadowed by a column of that name; SQLite has three aliases.
        let free = ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|a| !info.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(a)));
        match free {
            Some(alias) => KeyPlan::Rowid(alias),
            None => {
                return Err(Error::Database(format!(
                    "table '{name}' shadows every rowid alias; it cannot be paged"
                )))
            }
        }
    };
    Ok(TablePlan { name, columns, key })
}

/// A key value as read, bound back as the same storage class.
#[derive(Clone, Debug)]
enum KeyValue {
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn read_key(row: &SqliteRow, i: usize) -> Result<KeyValue> {
    let raw = row.try_get_raw(i)?;
    let kind = raw.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" => KeyValue::Int(row.try_get(i)?),
        "REAL" => KeyValue::Real(row.try_get(i)?),
        "TEXT" => KeyValue::Text(row.try_get(i)?),
        "BLOB" => KeyValue::Blob(row.try_get(i)?),
        _ => {
            return Err(Error::Database(
                "a key column holds NULL; the table cannot be paged".into(),
            ))
        }
    })
}

/// Binds a key value back as the storage class it was read in.
fn bind_key<'q>(
    q: Query<'q, Sqlite, SqliteArguments<'q>>,
    key: KeyValue,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match key {
        KeyValue::Int(v) => q.bind(v),
        KeyValue::Real(v) => q.bind(v),
        KeyValue::Text(v) => q.bind(v),
        KeyValue::Blob(v) => q.bind(v),
    }
}

fn key_names(t: &TablePlan) -> Vec<String> {
    match &t.key {
        KeyPlan::Rowid(alias) => vec![(*alias).to_owned()],
        KeyPlan::Columns(cols) => cols.iter().map(|(n, _)| quoted(n)).collect(),
        KeyPlan::Ctid => Vec::new(),
    }
}

/// Reads `t` in pages of `page` rows, counting into `counts` (one per column).
pub(crate) async fn scan_table(
    pool: &SqlitePool,
    t: &TablePlan,
    page: u32,
    counts: &mut [Counts],
    progress: &dyn Progress,
) -> Result<u64> {
    let keys = key_names(t);
    keyset::require_key(t, &keys)?;
    let key_list = keys.join(", ");
    let cols: Vec<String> = t.columns.iter().map(|c| quoted(&c.name)).collect();
    let select = format!(
        "SELECT {key_list}, {} FROM {}",
        cols.join(", "),
        quoted(&t.name)
    );
    let first = format!("{select} ORDER BY {key_list} LIMIT ?1");
    let params: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
    let next = format!(
        "{select} WHERE ({key_list}) > ({}) ORDER BY {key_list} LIMIT ?{}",
        params.join(", "),
        keys.len() + 1
    );
    let nk = keys.len();
    let fetch = |last| keyset::fetch_page(pool, &first, &next, page, last, bind_key);
    let count = |row: &SqliteRow| -> Result<()> {
        for (i, c) in counts.iter_mut().enumerate() {
            count_cell(row, nk + i, c)?;
        }
        Ok(())
    };
    let key = |row: &SqliteRow| (0..nk).map(|i| read_key(row, i)).collect::<Result<_>>();
    keyset::pages(page, progress, fetch, count, key).await
}

/// Text is scanned, an integer as its digits; NULL, reals and blobs are skipped.
fn count_cell(row: &SqliteRow, i: usize, counts: &mut Counts) -> Result<()> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(());
    }
    match raw.type_info().name() {
        "TEXT" => counts.add_cell(row.try_get::<&str, _>(i)?),
        "INTEGER" => counts.add_integer(row.try_get::<i64, _>(i)?),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanned_types() {
        assert_eq!(scanned_type("TEXT"), Some(false));
        assert_eq!(scanned_type("varchar(20)"), Some(false));
        assert_eq!(scanned_type(""), Some(false));
        assert_eq!(scanned_type("json"), Some(true));
        assert_eq!(scanned_type("INTEGER"), None);
        assert_eq!(scanned_type("BLOB"), None);
        assert_eq!(scanned_type("REAL"), None);
    }
}
