//! Test setup shared by the engine tests and the benchmark: a KeyFlow service over a
//! temporary SQLite keystore, and a target database (SQLite file, or PostgreSQL: a
//! throwaway database from `TEST_DATABASE_URL`, see `test_support::with_database`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(dead_code, missing_docs)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{Context, Decrypted, EncryptionService, Keystore, Purpose, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub service: Arc<EncryptionService>,
}

impl Env {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Keystore> = Arc::new(
            SqliteKeystore::open(&dir.path().join("keyflow.db"))
                .await
                .unwrap(),
        );
        let password = KekPassword::new("correct horse battery staple".into(), false).unwrap();
        let params = KdfParams {
            iterations: MIN_PBKDF2_ITERATIONS,
        };
        let (_, kek) = kek_provider::init(
            &dir.path().join("kek.json"),
            &password,
            params,
            &*store,
            &OsRng,
        )
        .await
        .unwrap();
        let service = Arc::new(EncryptionService::new(store, kek, ServiceConfig::default()));
        Self { dir, service }
    }

    pub async fn encrypt(&self, purpose: &str, plain: &str, ctx: &Context) -> String {
        self.service
            .encrypt_value(
                &serde_json::Value::String(plain.into()),
                &Purpose::new(purpose).unwrap(),
                ctx,
            )
            .await
            .unwrap()
    }

    pub async fn decrypt(&self, ct: &str, ctx: &Context) -> String {
        match self.service.decrypt(ct, ctx).await.unwrap() {
            Decrypted::Json(serde_json::Value::String(s)) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn rotate(&self, purpose: &str) {
        self.service
            .keys()
            .rotate(&Purpose::new(purpose).unwrap())
            .await
            .unwrap();
    }
}

/// The key version of a ciphertext, from its header.
pub fn version_of(ct: &str) -> u32 {
    EncryptionService::summary(ct).unwrap().key_version
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// A target database with one test table `(id integer primary key, val text)`.
pub struct Db {
    pub url: String,
    pub pool: Pool,
    pub table: String,
}

impl Db {
    /// A fresh SQLite file in `dir` (WAL, as applications sharing a file use).
    pub async fn sqlite(dir: &std::path::Path) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("app{n}.db"));
        let url = format!("sqlite:{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .unwrap();
        Self {
            url,
            pool: Pool::Sqlite(pool),
            table: "customers".into(),
        }
    }

    /// PostgreSQL at `url`: a throwaway database from
    /// `keyflow_testkit::postgres::with_database`.
    pub async fn postgres(url: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .unwrap();
        Self {
            url: url.to_owned(),
            pool: Pool::Pg(pool),
            table: "customers".into(),
        }
    }

    pub async fn exec(&self, sql: &str) {
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query(sql).execute(p).await.unwrap();
            }
            Pool::Pg(p) => {
                sqlx::query(sql).execute(p).await.unwrap();
            }
        }
    }

    pub async fn create(&self) {
        let id_type = match self.pool {
            Pool::Sqlite(_) => "INTEGER",
            Pool::Pg(_) => "BIGINT",
        };
        self.exec(&format!(
            "CREATE TABLE {} (id {id_type} PRIMARY KEY, val TEXT)",
            self.table
        ))
        .await;
    }

    pub async fn drop_table(&self) {
        self.exec(&format!("DROP TABLE IF EXISTS {}", self.table))
            .await;
        if let Pool::Pg(p) = &self.pool {
            let _ = sqlx::query("DELETE FROM keyflow_reencrypt_checkpoint WHERE table_name = $1")
                .bind(&self.table)
                .execute(p)
                .await;
        }
    }

    pub async fn insert(&self, rows: &[(i64, Option<String>)]) {
        for chunk in rows.chunks(500) {
            match &self.pool {
                Pool::Sqlite(p) => {
                    let values = vec!["(?, ?)"; chunk.len()].join(",");
                    let sql = format!("INSERT INTO {} (id, val) VALUES {values}", self.table);
                    let mut q = sqlx::query(&sql);
                    for (id, v) in chunk {
                        q = q.bind(*id).bind(v.clone());
                    }
                    q.execute(p).await.unwrap();
                }
                Pool::Pg(p) => {
                    let sql = format!(
                        "INSERT INTO {} (id, val) SELECT * FROM unnest($1::int8[], $2::text[])",
                        self.table
                    );
                    let ids: Vec<i64> = chunk.iter().map(|r| r.0).collect();
                    let vals: Vec<Option<String>> = chunk.iter().map(|r| r.1.clone()).collect();
                    sqlx::query(&sql)
                        .bind(ids)
                        .bind(vals)
                        .execute(p)
                        .await
                        .unwrap();
                }
            }
        }
    }

    pub async fn all(&self) -> Vec<(i64, Option<String>)> {
        let sql = format!("SELECT id, val FROM {} ORDER BY id", self.table);
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as(&sql).fetch_all(p).await.unwrap(),
            Pool::Pg(p) => sqlx::query_as(&sql).fetch_all(p).await.unwrap(),
        }
    }

    pub async fn set(&self, id: i64, value: &str) {
        match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!("UPDATE {} SET val = ?1 WHERE id = ?2", self.table);
                sqlx::query(&sql)
                    .bind(value)
                    .bind(id)
                    .execute(p)
                    .await
                    .unwrap();
            }
            Pool::Pg(p) => {
                let sql = format!("UPDATE {} SET val = $1 WHERE id = $2", self.table);
                sqlx::query(&sql)
                    .bind(value)
                    .bind(id)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }

    /// Number of saved checkpoints for this table (0 when the checkpoint table is absent).
    pub async fn checkpoints(&self) -> i64 {
        match &self.pool {
            Pool::Sqlite(p) => {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM sqlite_master WHERE name = 'keyflow_reencrypt_checkpoint'",
                )
                .fetch_optional(p)
                .await
                .unwrap();
                if exists.is_none() {
                    return 0;
                }
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM keyflow_reencrypt_checkpoint WHERE table_name = ?1",
                )
                .bind(&self.table)
                .fetch_one(p)
                .await
                .unwrap()
            }
            Pool::Pg(p) => {
                let exists: bool = sqlx::query_scalar(
                    "SELECT to_regclass('keyflow_reencrypt_checkpoint') IS NOT NULL",
                )
                .fetch_one(p)
                .await
                .unwrap();
                if !exists {
                    return 0;
                }
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM keyflow_reencrypt_checkpoint WHERE table_name = $1",
                )
                .bind(&self.table)
                .fetch_one(p)
                .await
                .unwrap()
            }
        }
    }
}
