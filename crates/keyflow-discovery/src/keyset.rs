//! Keyset pagination, the same for every database: a page after the last key read,
//! its cells counted, until a page comes back short. The backends say how to fetch a
//! page, count a row and read its key.

use std::future::Future;

use crate::error::Result;
use crate::Progress;

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
