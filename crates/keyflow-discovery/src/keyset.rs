//! Keyset pagination, the same for every database: a page after the last key read,
//! its cells counted, until a page comes back short. The backends say how to select
//! a page, bind a key, count a row and read its key.

use std::future::Future;

use sqlx::query::Query;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::error::{Error, Result};
use crate::{quoted, Progress, TablePlan};

/// Rows in `t` (for the progress bar).
pub(crate) async fn count_rows<DB>(pool: &Pool<DB>, t: &TablePlan) -> Result<u64>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quoted(&t.name)))
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Fails unless `t` has a key to page by (`keys`, as the backend names them).
pub(crate) fn require_key<K>(t: &TablePlan, keys: &[K]) -> Result<()> {
    if keys.is_empty() {
        return Err(Error::Database(format!("table '{}' has no key", t.name)));
    }
    Ok(())
}

/// One page of `page` rows: `first` when there is no `last` key yet, else `next`
/// with the key's values bound in order (`bind_key`), then the page size.
pub(crate) async fn fetch_page<'q, DB, K>(
    pool: &Pool<DB>,
    first: &'q str,
    next: &'q str,
    page: u32,
    last: Option<Vec<K>>,
    bind_key: impl Fn(Query<'q, DB, DB::Arguments<'q>>, K) -> Query<'q, DB, DB::Arguments<'q>>,
) -> Result<Vec<DB::Row>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    let query = match last {
        None => sqlx::query(first),
        Some(key) => key.into_iter().fold(sqlx::query(next), &bind_key),
    };
    Ok(query.bind(i64::from(page)).fetch_all(pool).await?)
}

/// Reads a table in pages of `page` rows — `fetch(None)` for the first, then
/// `fetch(Some(key))` with the last row's `key` — calling `count` on every row, and
/// returns the number of rows read.
pub(crate) async fn pages<R, K, F, Fut>(
    page: u32,
    progress: &dyn Progress,
    mut fetch: F,
    mut count: impl FnMut(&R) -> Result<()>,
    key: impl Fn(&R) -> Result<K>,
) -> Result<u64>
where
    F: FnMut(Option<K>) -> Fut,
    Fut: Future<Output = Result<Vec<R>>>,
{
    let mut last = None;
    let mut rows_read = 0u64;
    loop {
        let rows = fetch(last.take()).await?;
        for row in &rows {
            count(row)?;
        }
        let n = rows.len() as u64;
        rows_read += n;
        progress.advance(n);
        match rows.last() {
            Some(row) if n == u64::from(page) => last = Some(key(row)?),
            _ => return Ok(rows_read),
        }
    }
}
