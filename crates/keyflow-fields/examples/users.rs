//! A users table with an encrypted SSN and bank account and an e-mail searchable by
//! blind index, in SQLite, through `#[derive(Encrypt)]` and `Encrypted<T>` columns.
//!
//! ```text
//! cargo run -p keyflow-fields --example users
//! ```
//!
//! Creates its own KEK and keystore in a temporary directory, stores four users (one of
//! them after a key rotation), finds users by e-mail across the rotation, re-encrypts
//! the table under the new key version and prints a census of key versions.
#![allow(missing_docs)]

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use keyflow_fields::blind::search_terms;
use keyflow_fields::{Binding, BlindIndexValue, Encrypt, Encrypted};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::{KdfParams, MIN_PBKDF2_ITERATIONS};
use keyflow_kms::keyflow_core::mask::MaskType;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{EncryptionService, Keystore, Purpose, ServiceConfig};
use keyflow_store_sqlite::SqliteKeystore;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Expected number of distinct e-mail addresses: sets the blind index length
/// (`bits_for_distinct_values(1_000_000)` = 18 bits, ~2 addresses per index value).
pub const EMAIL_DISTINCT: u64 = 1_000_000;

/// A user as the application sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encrypt)]
#[keyflow(purpose = "userData", auto_detect)]
pub struct User {
    /// Primary key; also the AAD record id of every encrypted field.
    pub id: String,
    /// Shown in the UI, not sensitive.
    pub display_name: String,
    /// Randomized ciphertext + `email_bidx` for lookups.
    #[encrypted(blind_index, distinct = 1000000)]
    pub email: String,
    /// Auto-detected from the `userData` lists (pii).
    pub ssn: String,
    /// Another key ring.
    #[encrypted(purpose = "financialData")]
    pub bank_account_number: String,
}

/// What a run found, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// Ids found by e-mail search (one search per listed address).
    pub found: Vec<Vec<String>>,
    /// `(purpose key id, rows)` of the `ssn` column before re-encryption.
    pub census_before: Vec<(String, usize)>,
    /// The same after re-encryption.
    pub census_after: Vec<(String, usize)>,
    /// Every user, decrypted from the table at the end.
    pub users: Vec<User>,
}

/// The users stored by the example.
pub fn sample_users() -> Vec<User> {
    [
        (
            "u-1",
            "Ada",
            "ada@example.com",
            "123-45-6789",
            "DE89370400440532013000",
        ),
        (
            "u-2",
            "Grace",
            "grace@example.com",
            "234-56-7890",
            "GB82WEST12345698765432",
        ),
        (
            "u-3",
            "Alan",
            "alan@example.com",
            "345-67-8901",
            "FR1420041010050500013M02606",
        ),
        (
            "u-4",
            "Edsger",
            "edsger@example.com",
            "456-78-9012",
            "NL91ABNA0417164300",
        ),
    ]
    .into_iter()
    .map(|(id, name, email, ssn, iban)| User {
        id: id.into(),
        display_name: name.into(),
        email: email.into(),
        ssn: ssn.into(),
        bank_account_number: iban.into(),
    })
    .collect()
}

async fn open_service(dir: &Path) -> Result<EncryptionService> {
    let store: Arc<dyn Keystore> = Arc::new(SqliteKeystore::open(&dir.join("keyflow.db")).await?);
    let password = KekPassword::new("example password, not for production".into(), false)?;
    let (_, kek) = kek_provider::init(
        &dir.join("kek.json"),
        &password,
        KdfParams {
            iterations: MIN_PBKDF2_ITERATIONS,
        },
        &*store,
        &OsRng,
    )
    .await?;
    Ok(EncryptionService::new(store, kek, ServiceConfig::default()))
}

async fn open_db(dir: &Path) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("app.db"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    sqlx::query(
        "CREATE TABLE users (
            id TEXT PRIMARY KEY,
            display_name TEXT NOT NULL,
            email TEXT NOT NULL,
            email_bidx TEXT NOT NULL,
            ssn TEXT NOT NULL,
            bank_account_number TEXT NOT NULL
        )",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE INDEX users_email_bidx ON users (email_bidx)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

async fn insert(pool: &SqlitePool, u: &EncryptedUser) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, display_name, email, email_bidx, ssn, bank_account_number)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&u.id)
    .bind(&u.display_name)
    .bind(&u.email)
    .bind(&u.email_bidx)
    .bind(&u.ssn)
    .bind(&u.bank_account_number)
    .execute(pool)
    .await?;
    Ok(())
}

fn row_to_user(row: &sqlx::sqlite::SqliteRow) -> Result<EncryptedUser> {
    Ok(EncryptedUser {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get::<Encrypted<String>, _>("email")?,
        email_bidx: row.try_get::<BlindIndexValue, _>("email_bidx")?,
        ssn: row.try_get("ssn")?,
        bank_account_number: row.try_get("bank_account_number")?,
    })
}

async fn all_rows(pool: &SqlitePool) -> Result<Vec<EncryptedUser>> {
    sqlx::query("SELECT * FROM users ORDER BY id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(row_to_user)
        .collect()
}

/// Finds users by e-mail: the blind-index terms of every live key version, an indexed
/// `IN (…)` query, then decryption of the candidates to drop false positives.
async fn find_by_email(
    service: &EncryptionService,
    pool: &SqlitePool,
    email: &str,
) -> Result<Vec<User>> {
    let purpose = Purpose::new("userData")?;
    let bits = keyflow_fields::blind::bits_for_distinct_values(EMAIL_DISTINCT);
    let terms = search_terms(service, &purpose, "email", &serde_json::json!(email), bits).await?;
    let placeholders = vec!["?"; terms.len()].join(", ");
    let sql = format!("SELECT * FROM users WHERE email_bidx IN ({placeholders}) ORDER BY id");
    let mut query = sqlx::query(&sql);
    for t in &terms {
        query = query.bind(t);
    }
    let mut found = Vec::new();
    for row in query.fetch_all(pool).await? {
        let enc = row_to_user(&row)?;
        let user = enc.decrypt(service, &Binding::doc(enc.id.clone())).await?;
        if user.email == email {
            found.push(user);
        }
    }
    Ok(found)
}

async fn census(pool: &SqlitePool) -> Result<Vec<(String, usize)>> {
    let mut counts = std::collections::BTreeMap::new();
    for u in all_rows(pool).await? {
        *counts.entry(u.ssn.summary()?.key_id).or_insert(0usize) += 1;
    }
    Ok(counts.into_iter().collect())
}

/// The whole example, in `dir`.
pub async fn run(dir: &Path, verbose: bool) -> Result<Outcome> {
    let service = open_service(dir).await?;
    let pool = open_db(dir).await?;
    let users = sample_users();

    // Three users under version 1, a rotation, the fourth under version 2.
    for (i, user) in users.iter().enumerate() {
        if i == 3 {
            let r = service.keys().rotate(&Purpose::new("userData")?).await?;
            if verbose {
                println!(
                    "rotated userData: v{} -> v{}",
                    r.old_version.get(),
                    r.new_version.get()
                );
            }
        }
        let enc = user
            .encrypt(&service, &Binding::doc(user.id.clone()))
            .await?;
        insert(&pool, &enc).await?;
    }
    if verbose {
        for u in all_rows(&pool).await?.iter().take(1) {
            println!(
                "stored row {}: ssn = {}…, email_bidx = {}",
                u.id,
                &u.ssn.as_str()[..24],
                u.email_bidx
            );
        }
    }

    let mut found = Vec::new();
    for email in [
        "ada@example.com",
        "edsger@example.com",
        "nobody@example.com",
    ] {
        let hits = find_by_email(&service, &pool, email).await?;
        if verbose {
            for u in &hits {
                println!(
                    "found {email}: {} {} ssn {} account {}",
                    u.id,
                    u.display_name,
                    service.mask(&u.ssn, MaskType::Ssn),
                    service.mask(&u.bank_account_number, MaskType::Iban),
                );
            }
            if hits.is_empty() {
                println!("found {email}: nobody");
            }
        }
        found.push(hits.into_iter().map(|u| u.id).collect());
    }

    let census_before = census(&pool).await?;
    for enc in all_rows(&pool).await? {
        let moved = enc
            .reencrypt(&service, &Binding::doc(enc.id.clone()))
            .await?;
        sqlx::query("UPDATE users SET email = ?, email_bidx = ?, ssn = ?, bank_account_number = ? WHERE id = ?")
            .bind(&moved.email)
            .bind(&moved.email_bidx)
            .bind(&moved.ssn)
            .bind(&moved.bank_account_number)
            .bind(&moved.id)
            .execute(&pool)
            .await?;
    }
    let census_after = census(&pool).await?;
    if verbose {
        println!("ssn key versions before re-encryption: {census_before:?}");
        println!("ssn key versions after re-encryption:  {census_after:?}");
    }
    let mut plain = Vec::new();
    for enc in all_rows(&pool).await? {
        plain.push(enc.decrypt(&service, &Binding::doc(enc.id.clone())).await?);
    }
    service.ring().flush_usage().await?;
    pool.close().await;
    Ok(Outcome {
        found,
        census_before,
        census_after,
        users: plain,
    })
}

#[tokio::main(flavor = "current_thread")]
#[allow(dead_code)] // also compiled into the test that runs the example
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let outcome = run(dir.path(), true).await?;
    println!("{} users round-tripped through SQLite", outcome.users.len());
    Ok(())
}
