//! Running a [`Stmt`] on a driver: the same code for SQLite and PostgreSQL, which bind
//! the same Rust types ([`bind_all`]). The bounds sqlx needs to say so are written once,
//! here, so a [`Backend`](crate::Backend) only names its driver.

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use crate::stmt::{bind_all, Stmt};

/// A sqlx driver that runs [`Stmt`]s: every driver that binds `Option<i64>`,
/// `Option<&str>` and `Option<&[u8]>` is one.
#[async_trait]
pub trait Driver: Database {
    /// Runs `stmt` (inside `tx`, or on `pool`) and returns the driver's result.
    async fn execute_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Self::QueryResult, sqlx::Error>;

    /// Runs `stmt` and returns its first row, if any.
    async fn fetch_optional_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Option<Self::Row>, sqlx::Error>;

    /// Runs `stmt` and returns every row.
    async fn fetch_all_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Vec<Self::Row>, sqlx::Error>;
}

#[async_trait]
impl<DB> Driver for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
{
    async fn execute_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Self::QueryResult, sqlx::Error> {
        let query = bind_all(sqlx::query(stmt.sql()), stmt.args());
        match tx {
            Some(tx) => query.execute(&mut **tx).await,
            None => query.execute(pool).await,
        }
    }

    async fn fetch_optional_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Option<Self::Row>, sqlx::Error> {
        let query = bind_all(sqlx::query(stmt.sql()), stmt.args());
        match tx {
            Some(tx) => query.fetch_optional(&mut **tx).await,
            None => query.fetch_optional(pool).await,
        }
    }

    async fn fetch_all_stmt(
        pool: &Pool<Self>,
        tx: Option<&mut Transaction<'static, Self>>,
        stmt: &Stmt<'_>,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        let query = bind_all(sqlx::query(stmt.sql()), stmt.args());
        match tx {
            Some(tx) => query.fetch_all(&mut **tx).await,
            None => query.fetch_all(pool).await,
        }
    }
}
