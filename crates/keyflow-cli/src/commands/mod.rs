//! One module per command group; each takes the resolved config and does its job.

pub mod backup;
pub mod data;
pub mod fields;
pub mod file;
pub mod init;
pub mod kek;
pub mod keys;
pub mod lifecycle;
pub mod reencrypt;
pub mod serve;
pub mod tokens;

use std::sync::Arc;

use keyflow_kms::{kek_provider, Context, EncryptionService, Keystore};
use keyflow_store_postgres::{PoolSettings, PostgresKeystore};
use keyflow_store_sqlite::SqliteKeystore;

use crate::config::{Config, StoreLocation};
use crate::error::CliError;

/// Opens the configured keystore.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Keystore>, CliError> {
    match &config.store {
        StoreLocation::Sqlite(path) => Ok(Arc::new(SqliteKeystore::open(path).await?)),
        StoreLocation::Postgres(url) => Ok(Arc::new(
            PostgresKeystore::connect(&url.0, &PoolSettings::default()).await?,
        )),
    }
}

/// Opens the keystore, unlocks the KEK and builds the service.
pub async fn open_service(config: &Config) -> Result<EncryptionService, CliError> {
    let password = config.kek_password()?;
    let store = open_store(config).await?;
    let kek = kek_provider::unlock(&config.kek_path, &password, &*store).await?;
    Ok(EncryptionService::new(store, kek, config.service_config()))
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
