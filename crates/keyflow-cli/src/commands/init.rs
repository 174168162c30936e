//! `keyflow init`.

use keyflow_kms::kek_provider::{self, InitOutcome};
use keyflow_kms::keyflow_core::OsRng;
use serde_json::json;

use super::open_stores;
use super::trail::Trail;
use crate::config::Config;
use crate::error::CliError;

pub async fn run(config: &Config, kdf_iterations: Option<u32>) -> Result<(), CliError> {
    let password = config.kek_password()?;
    let params = config.kdf_params(kdf_iterations)?;
    let stores = open_stores(config).await?;
    let (outcome, kek) =
        kek_provider::init(&config.kek_path, &password, params, &*stores.keys, &OsRng).await?;
    let db = config.store.describe();
    match outcome {
        InitOutcome::Created => println!(
            "initialized: KEK {} in {}, keystore {}",
            kek.id(),
            config.kek_path.display(),
            db
        ),
        InitOutcome::AlreadyInitialized => println!(
            "already initialized: KEK {} in {} unlocks and matches keystore {}",
            kek.id(),
            config.kek_path.display(),
            db
        ),
    }
    let trail = Trail::new(config, stores.audit, &kek)?;
    let mut event = trail.event("init");
    event.detail = Some(json!({
        "kekId": kek.id(),
        "created": outcome == InitOutcome::Created,
    }));
    trail.conclude(event, Ok(())).await
}
