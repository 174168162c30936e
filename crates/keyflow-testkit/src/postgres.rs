//! A throwaway PostgreSQL database per test, from `TEST_DATABASE_URL` (feature
//! `postgres`), for every crate whose tests need a real PostgreSQL keystore.
//! `scripts/test-postgres.sh up` starts a server and prints the URL.
//!
//! Without `TEST_DATABASE_URL` a test prints `SKIPPED: TEST_DATABASE_URL not set` to
//! stderr and passes, so `cargo test --workspace` works on a machine without PostgreSQL.
//! With it set, a PostgreSQL that does not answer fails the test with that reason.

use std::future::Future;
use std::io::Write;
use std::str::FromStr;

use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

/// `TEST_DATABASE_URL`, or `None` after printing the skip notice for `test`.
pub fn base_url(test: &str) -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // Straight to stderr, not `eprintln!`: the test harness captures the
            // latter, and a skipped database test should be visible.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: TEST_DATABASE_URL not set ({test} needs PostgreSQL)"
            );
            None
        }
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh database `keyflow_test_<random>`, dropped by [`with_database`].
#[derive(Clone, Debug)]
pub struct TestDb {
    base: PgConnectOptions,
    /// The database name (`keyflow_test_<random>`).
    pub name: String,
}

impl TestDb {
    /// Connect options for the test database.
    pub fn options(&self) -> PgConnectOptions {
        self.base.clone().database(&self.name)
    }

    /// The test database's URL (base URL with the database name replaced).
    pub fn url(&self, base_url: &str) -> String {
        let (head, tail) = base_url.rsplit_once('/').unwrap();
        let query = tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        format!("{head}/{}{query}", self.name)
    }

    /// Options for a new, empty schema of the test database (one per keystore).
    pub async fn fresh_schema(&self, schema: &str) -> PgConnectOptions {
        // A pool, not a bare connection: a `&mut PgConnection` executor makes this
        // future not `Send` (a known sqlx/rustc limitation).
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options())
            .await
            .unwrap();
        // Identifiers cannot be bound; the name is the test's own constant.
        assert!(schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        self.options().options([("search_path", schema)])
    }

    /// A keystore in a new, empty schema.
    pub async fn keystore(&self, schema: &str, pool: u32) -> PostgresKeystore {
        PostgresKeystore::connect_with(
            self.fresh_schema(schema).await,
            &PoolSettings::with_max_connections(pool),
        )
        .await
        .unwrap()
    }
}

async fn admin(base: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(base)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but PostgreSQL is not reachable: {e}"))
}

/// Runs `body` against a new database, then drops the database — also when `body`
/// panics (the panic is re-raised afterwards). `None` (skipped) without
/// `TEST_DATABASE_URL`.
pub async fn with_database<F, Fut>(test: &str, body: F)
where
    F: FnOnce(TestDb, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = base_url(test) else { return };
    let base = PgConnectOptions::from_str(&url).unwrap();
    let db = TestDb {
        base: base.clone(),
        name: format!("keyflow_test_{}", random_suffix()),
    };
    let mut a = admin(&base).await;
    sqlx::raw_sql(&format!("CREATE DATABASE {}", db.name))
        .execute(&mut a)
        .await
        .unwrap();
    let outcome = tokio::spawn(body(db.clone(), db.url(&url))).await;
    // FORCE ends the connections the test left open (pools, listeners).
    let dropped = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name))
        .execute(&mut a)
        .await;
    let _ = a.close().await;
    match outcome {
        Ok(()) => {
            dropped.unwrap();
        }
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("test task failed: {e}"),
    }
}
