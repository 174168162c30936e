//! One module per command group; each takes the resolved config and does its job.

pub mod audit;
pub mod backup;
pub mod compliance;
pub mod data;
pub mod discover;
pub mod fields;
pub mod file;
pub mod init;
pub mod kek;
pub mod keys;
pub mod legacy;
pub mod lifecycle;
pub(crate) mod progress;
pub mod reencrypt;
pub mod serve;
pub mod status;
pub mod tokens;
pub mod trail;

use std::sync::Arc;

use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::{kek_provider, Context, EncryptionService, Keystore};
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
use keyflow_store_sqlite::SqliteKeystore;

use crate::config::{Config, StoreLocation};
use crate::error::CliError;
use trail::Trail;

/// The configured database, as the keystore and as the audit chain it also holds (the
/// server's type: `serve` hands it over as it is).
pub use keyflow_server::launch::Stores;

/// Environment variable: `true` accepts an unverified link to PostgreSQL in production
/// when it is a Unix-domain socket (nothing on the network to intercept it); logged.
pub const UNVERIFIED_SOCKET_ENV: &str = "KEYFLOW_DATABASE_UNVERIFIED_SOCKET";

/// In production the keystore link must be `sslmode=verify-full` (the default `prefer`
/// can be downgraded to plain text by anyone on the path, and `require` does not
/// check who answers), or a Unix socket the operator explicitly accepted.
fn check_postgres_link(config: &Config, url: &str) -> Result<(), CliError> {
    use keyflow_store_postgres::LinkSecurity;
    if !config.production {
        return Ok(());
    }
    let socket_ok = std::env::var(UNVERIFIED_SOCKET_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    });
    match keyflow_store_postgres::link_security(url)? {
        LinkSecurity::VerifiedTls => Ok(()),
        LinkSecurity::UnixSocket if socket_ok => {
            tracing::warn!(
                "{UNVERIFIED_SOCKET_ENV}: the PostgreSQL keystore is reached over a local Unix socket without TLS verification"
            );
            Ok(())
        }
        LinkSecurity::UnixSocket => Err(CliError::Config(format!(
            "production needs sslmode=verify-full for the PostgreSQL keystore; for a local Unix socket, set {UNVERIFIED_SOCKET_ENV}=true to accept it without TLS"
        ))),
        LinkSecurity::Unverified(mode) => Err(CliError::Config(format!(
            "production needs sslmode=verify-full for the PostgreSQL keystore (the URL gives sslmode={mode}, which an attacker on the network can downgrade or intercept)"
        ))),
    }
}

/// Opens the configured database.
pub async fn open_stores(config: &Config) -> Result<Stores, CliError> {
    match &config.store {
        StoreLocation::Sqlite(path) => {
            let store = Arc::new(SqliteKeystore::open(path).await?);
            Ok(Stores {
                keys: store.clone(),
                audit: store,
            })
        }
        StoreLocation::Postgres(url) => {
            check_postgres_link(config, &url.0)?;
            let store =
                Arc::new(PostgresKeystore::connect(&url.0, &PoolSettings::default()).await?);
            Ok(Stores {
                keys: store.clone(),
                audit: store,
            })
        }
    }
}

/// Opens the configured keystore for reading key versions, tokens or policies. The
/// KEK is unlocked (and dropped again) so that every row read is checked against its
/// MAC: a listing never shows what someone without the KEK wrote into the database.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Keystore>, CliError> {
    let (stores, _kek) = unlock(config).await?;
    Ok(stores.keys)
}

/// Opens the database and unlocks the KEK.
async fn unlock(config: &Config) -> Result<(Stores, Kek), CliError> {
    let password = config.kek_password()?;
    let stores = open_stores(config).await?;
    let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
    Ok((stores, kek))
}

/// Opens the keystore, unlocks the KEK and builds the service (read-only commands).
pub async fn open_service(config: &Config) -> Result<EncryptionService, CliError> {
    let (stores, kek) = unlock(config).await?;
    Ok(EncryptionService::new(
        stores.keys,
        kek,
        config.service_config(),
    ))
}

/// [`open_service`] plus the trail its changes are recorded in.
pub async fn open_audited(config: &Config) -> Result<(EncryptionService, Trail), CliError> {
    let (stores, kek) = unlock(config).await?;
    let trail = Trail::new(config, stores.audit, &kek)?;
    let service = EncryptionService::new(stores.keys, kek, config.service_config());
    Ok((service, trail))
}

/// The keystore and a trail, for audited commands that need no service (tokens).
pub async fn open_trail(config: &Config) -> Result<(Arc<dyn Keystore>, Trail), CliError> {
    let (stores, kek) = unlock(config).await?;
    let trail = Trail::new(config, stores.audit, &kek)?;
    Ok((stores.keys, trail))
}

/// Parses repeated `--context K=V` arguments.
pub fn parse_context(pairs: &[String]) -> Result<Context, CliError> {
    let mut ctx = Context::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--context expects K=V, got '{pair}'")))?;
        ctx.insert(k.to_owned(), v.to_owned())
            .map_err(|e| CliError::Usage(format!("--context {k}: {e}")))?;
    }
    if let Some(key) = ctx.reserved_key() {
        return Err(CliError::Usage(format!(
            "--context {key}: keys starting with 'kf.' are reserved for KeyFlow's field layer"
        )));
    }
    Ok(ctx)
}

/// Parses a purpose argument.
pub fn parse_purpose(name: &str) -> Result<keyflow_kms::Purpose, CliError> {
    keyflow_kms::Purpose::new(name).map_err(|e| CliError::Usage(format!("--purpose: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_pairs() {
        let c = parse_context(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "x=y")]);
        assert!(parse_context(&["novalue".into()]).is_err());
        assert!(parse_context(&["=v".into()]).is_err());
        assert!(parse_context(&["a=1".into(), "a=2".into()]).is_err());
    }
}
