//! `keyflow keys backup | restore`: encrypted backups of every key version.
//!
//! The password comes from `KEYFLOW_BACKUP_PASSWORD` or, when unset, a prompt on the
//! terminal (no echo; asked twice for a backup). It is never a flag.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use keyflow_kms::backup::format::{MAX_FILE_LEN, MIN_ITERATIONS};
use keyflow_kms::backup::{BackupPassword, RestoreAction};
use keyflow_kms::keyflow_core::{OsRng, SecureRandom};
use keyflow_kms::{atomic_file, VersionFilter};
use serde_json::json;
use zeroize::Zeroizing;

use super::{open_audited, open_service};
use crate::config::Config;
use crate::error::CliError;

/// Environment variable holding the backup password.
pub const PASSWORD_ENV: &str = "KEYFLOW_BACKUP_PASSWORD";

/// `keyflow keys backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write (mode 0600; refused if it exists, unless --force).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
    /// PBKDF2-HMAC-SHA256 iterations (default 600000; at least 100000, and not below
    /// the default in production).
    #[arg(long)]
    pub kdf_iterations: Option<u32>,
}

/// `keyflow keys restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Only report what would be inserted, skipped or refused; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keyflow backup …`: checks of backup files (making and restoring them are
/// `keyflow keys backup | restore`).
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Open and check a backup with its password, without restoring anything: it
    /// decrypts, every version parses, the rings are consistent; reports what it holds
    /// and which of the keystore's versions it lacks. Recorded as `backup.verify` (the
    /// compliance report's "last verified backup", GDPR Art. 32(1)(c)).
    Verify(VerifyArgs),
}

/// `keyflow backup verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A password from `env` or, if unset, from the terminal (twice when `confirm`).
pub fn password_from_env_or_prompt(
    env: &str,
    what: &str,
    confirm: bool,
) -> Result<Zeroizing<String>, CliError> {
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    let no_tty = |e: std::io::Error| {
        CliError::Config(format!(
            "{env} is not set and no terminal is available to ask for the {what} ({e})"
        ))
    };
    let first = Zeroizing::new(rpassword::prompt_password(format!("{what}: ")).map_err(no_tty)?);
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("{what} (again): ")).map_err(no_tty)?,
        );
        if *first != *again {
            return Err(CliError::Usage(format!("the two {what}s differ")));
        }
    }
    Ok(first)
}

fn backup_password(confirm: bool) -> Result<BackupPassword, CliError> {
    let raw = password_from_env_or_prompt(PASSWORD_ENV, "backup password", confirm)?;
    BackupPassword::new(raw.to_string()).map_err(|e| CliError::Usage(e.to_string()))
}

pub async fn backup(config: &Config, args: &BackupArgs) -> Result<(), CliError> {
    let iterations = config.kdf_params(args.kdf_iterations)?.iterations;
    if iterations < MIN_ITERATIONS {
        return Err(CliError::Usage(format!(
            "--kdf-iterations must be at least {MIN_ITERATIONS}"
        )));
    }
    if !args.force && fs::symlink_metadata(&args.output).is_ok() {
        return Err(CliError::Usage(format!(
            "{} exists; refusing to overwrite it (use --force)",
            args.output.display()
        )));
    }
    let password = backup_password(true)?;
    let (service, trail) = open_audited(config).await?;
    let mut event = trail.event("keys.backup");
    let outcome = async {
        let versions = service.keys().list(&VersionFilter::default()).await?.len();
        let bytes = service
            .keys().backup_with_iterations(&password, iterations)
            .await?;
        write_atomically(&args.output, &bytes, args.force, &OsRng)?;
        println!(
            "backup written: {} ({versions} key versions, {} bytes, PBKDF2 {iterations} iterations)",
            args.output.display(),
            bytes.len()
        );
        Ok::<_, CliError>(versions)
    }
    .await;
    event.items = outcome.as_ref().ok().map(|n| *n as u64);
    event.detail = Some(json!({
        "file": args.output.display().to_string(),
        "iterations": iterations,
    }));
    trail.conclude(event, outcome).await.map(drop)
}

pub async fn restore(config: &Config, args: &RestoreArgs) -> Result<(), CliError> {
    let bytes = read_bounded(&args.file)?;
    let password = backup_password(false)?;
    let report = if args.dry_run {
        // A dry run writes nothing: not recorded.
        open_service(config)
            .await?
            .keys()
            .restore(&bytes, &password, true)
            .await?
    } else {
        let (service, trail) = open_audited(config).await?;
        let mut event = trail.event("keys.restore");
        event.detail = Some(json!({ "file": args.file.display().to_string() }));
        let outcome = service.keys().restore(&bytes, &password, false).await;
        if let Ok(r) = &outcome {
            let inserted = r
                .versions
                .iter()
                .filter(|v| v.action == RestoreAction::Insert);
            for v in inserted {
                if let Some((p, n)) = v.key_id.rsplit_once(":v") {
                    if !event.purposes.iter().any(|q| q == p) {
                        event.purposes.push(p.to_owned());
                    }
                    event.versions.extend(n.parse::<u32>().ok());
                }
            }
            event.items = Some(r.inserted as u64);
            event.detail = Some(json!({
                "file": args.file.display().to_string(),
                "total": r.total,
                "inserted": r.inserted,
                "skipped": r.skipped,
            }));
        }
        trail
            .conclude(event, outcome.map_err(CliError::from))
            .await?
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CliError::Config(e.to_string()))?
        );
        return Ok(());
    }
    for item in &report.versions {
        let action = match (item.action, report.dry_run) {
            (RestoreAction::Insert, true) => "would insert",
            (RestoreAction::Insert, false) => "inserted",
            (RestoreAction::Skip, _) => "skipped",
            (RestoreAction::Refuse, _) => "refused",
        };
        match item.reason {
            Some(r) => println!("{:<32} {:<10} {action}: {r}", item.key_id, item.status),
            None => println!("{:<32} {:<10} {action}", item.key_id, item.status),
        }
    }
    if report.dry_run {
        println!(
            "dry run: {} would be inserted, {} skipped, {} refused{}; nothing was written",
            report.inserted,
            report.skipped,
            report.refused,
            if report.refused > 0 {
                " (a real restore would be refused as a whole)"
            } else {
                ""
            }
        );
    } else {
        println!(
            "restored: {} inserted, {} skipped (of {})",
            report.inserted, report.skipped, report.total
        );
    }
    Ok(())
}

/// `keyflow backup verify FILE`.
pub async fn verify(config: &Config, args: &VerifyArgs) -> Result<(), CliError> {
    let bytes = read_bounded(&args.file)?;
    let password = backup_password(false)?;
    let (service, trail) = open_audited(config).await?;
    let mut event = trail.event("backup.verify");
    event.detail = Some(json!({ "file": args.file.display().to_string() }));
    let outcome = async {
        let header = keyflow_kms::backup::format::read_header(&bytes)?;
        let pw = password;
        let contents =
            tokio::task::spawn_blocking(move || keyflow_kms::backup::format::open(&bytes, &pw))
                .await
                .map_err(|e| CliError::Failed(format!("backup verification stopped: {e}")))??;
        let in_backup: std::collections::BTreeSet<(String, u32)> = contents
            .versions
            .iter()
            .map(|v| (v.purpose.to_string(), v.version.get()))
            .collect();
        let missing: Vec<String> = service
            .keys()
            .list(&VersionFilter::default())
            .await?
            .iter()
            .filter(|r| !in_backup.contains(&(r.purpose.to_string(), r.version.get())))
            .map(|r| keyflow_kms::keyflow_core::key_id(&r.purpose, r.version))
            .collect();
        let mut purposes: Vec<String> = in_backup.iter().map(|(p, _)| p.clone()).collect();
        purposes.dedup();
        Ok::<_, CliError>(json!({
            "file": args.file.display().to_string(),
            "backupCreatedAt": contents.created_at,
            "iterations": header.iterations,
            "versions": contents.versions.len(),
            "withMaterial": contents.versions.iter().filter(|v| v.material.is_some()).count(),
            "purposes": purposes,
            "sourceKekId": contents.source_kek_id,
            "keystoreVersionsMissing": missing,
        }))
    }
    .await;
    if let Ok(detail) = &outcome {
        event.items = detail["versions"].as_u64();
        event.detail = Some(detail.clone());
    }
    let detail = trail.conclude(event, outcome).await?;
    if args.json {
        println!("{detail}");
        return Ok(());
    }
    let missing = detail["keystoreVersionsMissing"]
        .as_array()
        .map_or(0, Vec::len);
    println!(
        "backup verified: {} ({} key versions, {} with material, made {}, PBKDF2 {} iterations){}",
        args.file.display(),
        detail["versions"],
        detail["withMaterial"],
        keyflow_kms::clock::rfc3339(detail["backupCreatedAt"].as_i64().unwrap_or(0)),
        detail["iterations"],
        if missing > 0 {
            format!("; {missing} of the keystore's versions are not in it")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CliError> {
    let f = fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

fn io_err(action: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::Io(std::io::Error::new(
        e.kind(),
        format!("{action} {}: {e}", path.display()),
    ))
}

/// Writes `bytes` to `path` atomically (0600, fsynced): refused if the file exists
/// unless `replace`.
fn write_atomically(
    path: &Path,
    bytes: &[u8],
    replace: bool,
    rng: &dyn SecureRandom,
) -> Result<(), CliError> {
    let written = if replace {
        atomic_file::replace(path, bytes, rng)
    } else {
        atomic_file::write_new(path, bytes, rng)
    };
    written.map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            CliError::Usage(format!(
                "{} exists; refusing to overwrite it (use --force)",
                path.display()
            ))
        } else {
            io_err("cannot write backup", path, e)
        }
    })
}
