//! PostgreSQL: the catalog from `information_schema` (the current schema), pages by
//! the primary key (any column types: keys travel as text and are cast back), or by
//! `ctid` for a table without one.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgConnection, PgPool, Row as _};

use crate::count::Counts;
use crate::error::{Error, Result};
use crate::{keyset, quoted, ColumnPlan, KeyPlan, Progress, TablePlan};

pub(crate) async fn connect(url: &str, shown: &str) -> Result<PgPool> {
    let connect_error = Error::connect(shown);
    let options = PgConnectOptions::from_str(url).map_err(connect_error)?;
    // One direct attempt first: a pool retries refused connections until its acquire
    // timeout (30 s), and a wrong host or port should fail at once.
    PgConnection::connect_with(&options)
        .await
        .map_err(connect_error)?
        .close()
        .await
        .map_err(connect_error)?;
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(connect_error)
}

/// Base tables of the current schema, in name order.
pub(crate) async fn table_names(pool: &PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         ORDER BY table_name",
    )
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn table_plan(pool: &PgPool, name: String) -> Result<TablePlan> {
    let info: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, udt_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(&name)
    .fetch_all(pool)
    .await?;
    let columns = info
        .iter()
        .filter_map(|(n, data_type, udt)| {
            let json = matches!(data_type.as_str(), "json" | "jsonb");
            let text = matches!(
                data_type.as_str(),
                "text" | "character varying" | "character"
            ) || udt == "citext";
            (json || text).then(|| ColumnPlan {
                name: n.clone(),
                json,
            })
        })
        .collect();
    let pk: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_index i JOIN pg_attribute a \
           ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass(format('%I.%I', current_schema(), $1::text)) \
           AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(&name)
    .fetch_all(pool)
    .await?;
    let key = if pk.is_empty() {
        KeyPlan::Ctid
    } else {
        KeyPlan::Columns(pk)
    };
    Ok(TablePlan { name, columns, key })
}

/// (key expressions, their types) of `t`.
fn keys(t: &TablePlan) -> Vec<(String, String)> {
    match &t.key {
        KeyPlan::Ctid => vec![("ctid".to_owned(), "tid".to_owned())],
        KeyPlan::Columns(cols) => cols.iter().map(|(n, ty)| (quoted(n), ty.clone())).collect(),
        KeyPlan::Rowid(_) => Vec::new(),
    }
}

/// Reads `t` in pages of `page` rows, counting into `counts` (one per column).
pub(crate) async fn scan_table(
    pool: &PgPool,
    t: &TablePlan,
    page: u32,
    counts: &mut [Counts],
    progress: &dyn Progress,
) -> Result<u64> {
    let keys = keys(t);
    keyset::require_key(t, &keys)?;
    let key_list = keys
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // Output columns get aliases: `ORDER BY "id"` would otherwise sort by the output
    // column `"id"::text` (PostgreSQL resolves ORDER BY names to outputs first), in
    // text order, and the keyset would skip rows.
    let key_text = keys
        .iter()
        .enumerate()
        .map(|(i, (k, _))| format!("{k}::text AS keyflow_k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Every column as text: json/jsonb print as their JSON text.
    let cols = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}::text AS keyflow_c{i}", quoted(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!("SELECT {key_text}, {cols} FROM {}", quoted(&t.name));
    let first = format!("{select} ORDER BY {key_list} LIMIT $1");
    // Types come from the catalog (format_type), never from the user.
    let params = keys
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("CAST(${} AS {ty})", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let next = format!(
        "{select} WHERE ({key_list}) > ({params}) ORDER BY {key_list} LIMIT ${}",
        keys.len() + 1
    );
    let nk = keys.len();
    let fetch =
        |last| keyset::fetch_page(pool, &first, &next, page, last, |q, k: String| q.bind(k));
    let count = |row: &PgRow| -> Result<()> {
        for (i, c) in counts.iter_mut().enumerate() {
            if let Some(v) = row.try_get::<Option<&str>, _>(nk + i)? {
                c.add_cell(v);
            }
        }
        Ok(())
    };
    let key = |row: &PgRow| -> Result<Vec<String>> {
        Ok((0..nk)
            .map(|i| row.try_get::<String, _>(i))
            .collect::<Result<_, _>>()?)
    };
    keyset::pages(page, progress, fetch, count, key).await
}
