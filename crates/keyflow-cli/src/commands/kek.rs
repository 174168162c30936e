//! `keyflow kek rotate | change-password`.

use clap::Subcommand;
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::kek_retire;
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
    /// Remove old KEK files (KEK_PATH.retired-*, KEK_PATH.orphan-*) that nothing needs
    /// any more — no key version wrapped and no audit record sealed under them — so
    /// old keystore dumps, replicas and key backups stop being unlockable with them.
    /// Without --yes, only lists what would be removed and what is kept (and why).
    Retire {
        /// Remove them (irreversible).
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(config: &Config, cmd: &KekCommand) -> Result<(), CliError> {
    match cmd {
        KekCommand::Retire { yes } => retire(config, *yes).await?,
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
                "KEK password changed for KEK {} in {}; set KEK_PASSWORD to the new password (the old one no longer unlocks this file; retired KEK files keep theirs until `keyflow kek retire --yes`)",
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

/// `keyflow kek retire [--yes]`.
async fn retire(config: &Config, yes: bool) -> Result<(), CliError> {
    let password = config.kek_password()?;
    let stores = open_stores(config).await?;
    // Unlocking checks the KEK file against the keystore (and installs the row
    // sealer, so the key versions consulted are authentic).
    let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
    let show = |f: &kek_retire::OldKekFile| {
        format!(
            "{} (KEK {})",
            f.path.display(),
            f.kek_id.as_deref().unwrap_or("unreadable")
        )
    };
    if !yes {
        let files = kek_retire::plan(&config.kek_path, &*stores.keys, &*stores.audit).await?;
        if files.is_empty() {
            println!(
                "no retired or orphaned KEK files beside {}",
                config.kek_path.display()
            );
        }
        for f in &files {
            if f.needed_by.is_empty() {
                println!("would remove {}", show(f));
            } else {
                println!("keep {}: {}", show(f), f.needed_by.join("; "));
            }
        }
        if files.iter().any(|f| f.needed_by.is_empty()) {
            println!("run again with --yes to remove them for good");
        }
        return Ok(());
    }
    let trail = Trail::new(config, stores.audit.clone(), &kek)?;
    let mut event = trail.event("kek.retire");
    let result = kek_retire::retire(&config.kek_path, &*stores.keys, &*stores.audit, &OsRng).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => return trail.conclude(event, Err(e.into())).await,
    };
    for path in &report.removed {
        println!("removed {}", path.display());
    }
    for f in &report.kept {
        println!("kept {}: {}", show(f), f.needed_by.join("; "));
    }
    println!(
        "{} old KEK file(s) removed, {} kept; copies outside this directory (snapshots, backups of it) are not reached",
        report.removed.len(),
        report.kept.len()
    );
    event.items = Some(report.removed.len() as u64);
    event.detail = Some(json!({
        "removed": report.removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "kept": report.kept.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
    }));
    trail.conclude(event, Ok(())).await
}
