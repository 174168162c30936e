//! `keyflow kek rotate | change-password`.

use clap::Subcommand;
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::kek_rotation;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::KmsError;
use serde_json::json;

use super::backup::password_from_env_or_prompt;
use super::trail::Trail;
use super::{open_stores, Stores};
use crate::config::Config;
use crate::error::CliError;

/// Environment variable holding the new KEK password for `kek change-password`.
pub const NEW_PASSWORD_ENV: &str = "KEYFLOW_NEW_KEK_PASSWORD";

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Generate a new KEK and rewrap every data key under it (one keystore
    /// transaction); the old KEK file is kept as KEK_PATH.retired-<id>. Crash-safe.
    Rotate {
        /// PBKDF2-HMAC-SHA256 iterations for the new KEK file (default 600000).
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
    /// Re-seal the KEK file under a new password (KEYFLOW_NEW_KEK_PASSWORD or a
    /// prompt); data keys are untouched and the old password stops working.
    ChangePassword {
        /// PBKDF2-HMAC-SHA256 iterations for the re-sealed file (default 600000).
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
}

pub async fn run(config: &Config, cmd: &KekCommand) -> Result<(), CliError> {
    match cmd {
        KekCommand::Rotate { kdf_iterations } => {
            let password = config.kek_password()?;
            let params = config.kdf_params(*kdf_iterations)?;
            let stores = open_stores(config).await?;
            let done = match kek_rotation::rotate_kek(
                &config.kek_path,
                &password,
                params,
                &*stores.keys,
                &OsRng,
            )
            .await
            {
                Ok(done) => done,
                Err(e) => return record_failure(config, &stores, &password, "kek.rotate", e).await,
            };
            if let Some(orphan) = &done.orphan_moved {
                println!(
                    "moved aside an uncommitted KEK file from an interrupted rotation: {}",
                    orphan.display()
                );
            }
            println!(
                "KEK rotated: {} -> {}; {} data key versions rewrapped; old KEK file kept as {}",
                done.old_kek_id,
                done.new_kek_id,
                done.rewrapped,
                done.retired.display()
            );
            // Sealed under the new KEK; `audit verify` also reads the retired file.
            let trail = Trail::new(config, stores.audit, &done.kek)?;
            let mut event = trail.event("kek.rotate");
            event.items = Some(done.rewrapped as u64);
            event.detail = Some(json!({
                "oldKekId": done.old_kek_id,
                "newKekId": done.new_kek_id,
                "rewrapped": done.rewrapped,
            }));
            trail.conclude(event, Ok(())).await?;
        }
        KekCommand::ChangePassword { kdf_iterations } => {
            let old = config.kek_password()?;
            let params = config.kdf_params(*kdf_iterations)?;
            let raw = password_from_env_or_prompt(NEW_PASSWORD_ENV, "new KEK password", true)?;
            let new =
                KekPassword::new(raw.to_string(), config.production).map_err(|e| match e {
                    keyflow_kms::KmsError::WeakPassword(n) => CliError::Config(format!(
                        "the new KEK password must be at least {n} characters in production"
                    )),
                    _ => CliError::Usage("the new KEK password is empty".into()),
                })?;
            let stores = open_stores(config).await?;
            let kek = match kek_provider::change_password(
                &config.kek_path,
                &old,
                &new,
                params,
                &*stores.keys,
                &OsRng,
            )
            .await
            {
                Ok(kek) => kek,
                Err(e) => {
                    return record_failure(config, &stores, &old, "kek.change-password", e).await
                }
            };
            println!(
                "KEK password changed for KEK {} in {}; set KEK_PASSWORD to the new password (the old one no longer unlocks it)",
                kek.id(),
                config.kek_path.display()
            );
            let trail = Trail::new(config, stores.audit, &kek)?;
            let mut event = trail.event("kek.change-password");
            event.detail = Some(json!({ "kekId": kek.id(), "iterations": params.iterations }));
            trail.conclude(event, Ok(())).await?;
        }
    }
    Ok(())
}

/// Records a failed KEK operation when the KEK still unlocks with `password` (to seal
/// the record); returns the operation's error either way. A failure to unlock is not
/// retried here: `main` notes it (see `trail`).
async fn record_failure(
    config: &Config,
    stores: &Stores,
    password: &KekPassword,
    operation: &str,
    error: KmsError,
) -> Result<(), CliError> {
    if matches!(
        error,
        KmsError::KekUnlockFailed(_)
            | KmsError::KekMissing(_)
            | KmsError::KekFileInvalid { .. }
            | KmsError::KekMismatch { .. }
    ) {
        return Err(error.into());
    }
    let Ok(kek) = kek_provider::unlock(&config.kek_path, password, &*stores.keys).await else {
        return Err(error.into());
    };
    let trail = Trail::new(config, stores.audit.clone(), &kek)?;
    let event = trail.event(operation);
    trail.conclude(event, Err(error.into())).await
}
