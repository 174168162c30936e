//! `keyflow keys list | generate | rotate`; the lifecycle subcommands are in
//! `lifecycle.rs`.

use keyflow_kms::clock::rfc3339;
use std::collections::HashMap;

use keyflow_kms::{KeyStatus, KeyVersionRecord, Policy, Purpose, VersionChange, VersionFilter};
use serde_json::json;

use super::{open_audited, open_store, parse_purpose};
use crate::cli::KeysCommand;
use crate::config::Config;
use crate::error::CliError;

/// The API's key metadata plus the KEK id, which operators need to see.
fn to_json(r: &KeyVersionRecord) -> serde_json::Value {
    let mut v = keyflow_server::wire::key_metadata(r);
    v["kekId"] = json!(r.kek_id);
    v
}

pub async fn run(config: &Config, cmd: &KeysCommand) -> Result<(), CliError> {
    match cmd {
        KeysCommand::List {
            purpose,
            status,
            json,
        } => {
            let filter = VersionFilter {
                purpose: purpose.as_deref().map(parse_purpose).transpose()?,
                status: status
                    .as_deref()
                    .map(|s| {
                        s.parse::<KeyStatus>()
                            .map_err(|e| CliError::Usage(format!("--status: {e}")))
                    })
                    .transpose()?,
            };
            let store = open_store(config).await?;
            let versions = store.list_versions(&filter).await?;
            let set: HashMap<Purpose, Policy> = store.list_policies().await?.into_iter().collect();
            let policy = |p: &Purpose| set.get(p).copied().unwrap_or_default();
            if *json {
                let list: Vec<_> = versions
                    .iter()
                    .map(|r| {
                        let mut v = to_json(r);
                        let p = policy(&r.purpose);
                        v["policy"] = json!(p);
                        if r.status == KeyStatus::Active {
                            v["rotationDueAt"] = json!(rfc3339(p.due_at(r.created_at)));
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<24} {:>7}  {:<10}  {:<24}  {:>12}  {:<24}",
                    "PURPOSE", "VERSION", "STATUS", "CREATED", "ENCRYPTIONS", "ROTATION DUE"
                );
                for r in &versions {
                    let due = if r.status == KeyStatus::Active {
                        rfc3339(policy(&r.purpose).due_at(r.created_at))
                    } else {
                        String::new()
                    };
                    println!(
                        "{:<24} {:>7}  {:<10}  {:<24}  {:>12}  {:<24}",
                        r.purpose.as_str(),
                        r.version.get(),
                        r.status.as_str(),
                        rfc3339(r.created_at),
                        r.encryptions,
                        due
                    );
                }
                let mut purposes: Vec<&Purpose> = versions.iter().map(|r| &r.purpose).collect();
                purposes.dedup();
                if !purposes.is_empty() {
                    println!("\nPOLICIES");
                }
                for p in purposes {
                    let pol = policy(p);
                    println!(
                        "{:<24} rotate every {} d, warn {} d before, grace {} d, at most {} encryptions per version{}",
                        p.as_str(),
                        pol.rotation_days,
                        pol.warn_days,
                        pol.grace_days,
                        pol.max_encryptions,
                        if set.contains_key(p) { "" } else { " (default)" }
                    );
                }
            }
        }
        KeysCommand::Generate { purpose } => {
            let purpose = parse_purpose(purpose)?;
            let (service, trail) = open_audited(config).await?;
            let mut event = trail.event("keys.generate");
            event.purposes = vec![purpose.to_string()];
            let outcome = service
                .keys()
                .generate(&purpose)
                .await
                .map_err(CliError::from);
            if let Ok(r) = &outcome {
                println!("{}", to_json(r));
                event.versions = vec![r.version.get()];
            }
            trail.conclude(event, outcome).await?;
        }
        KeysCommand::Policy {
            purpose,
            rotation_days,
            grace_days,
            warn_days,
            max_encryptions,
        } => {
            super::lifecycle::policy(
                config,
                purpose,
                [*rotation_days, *grace_days, *warn_days],
                *max_encryptions,
            )
            .await?;
        }
        KeysCommand::RotateDue { at, dry_run } => {
            super::lifecycle::rotate_due(config, at.as_deref(), *dry_run).await?;
        }
        KeysCommand::Revoke {
            purpose,
            version,
            reason,
        } => {
            super::lifecycle::change(config, purpose, *version, VersionChange::Revoke(reason))
                .await?;
        }
        KeysCommand::Reinstate { purpose, version } => {
            super::lifecycle::change(config, purpose, *version, VersionChange::Reinstate).await?;
        }
        KeysCommand::Destroy {
            purpose,
            version,
            yes,
        } => {
            if !*yes {
                return Err(CliError::Usage(
                    "destroying key material is irreversible: add --yes to confirm".into(),
                ));
            }
            super::lifecycle::change(config, purpose, *version, VersionChange::Destroy).await?;
        }
        KeysCommand::Purge => purge(config).await?,
        KeysCommand::Rotate { purpose } => {
            let purpose = parse_purpose(purpose)?;
            let (service, trail) = open_audited(config).await?;
            let mut event = trail.event("keys.rotate");
            event.purposes = vec![purpose.to_string()];
            let outcome = service
                .keys()
                .rotate(&purpose)
                .await
                .map_err(CliError::from);
            if let Ok(r) = &outcome {
                println!(
                    "{}",
                    json!({
                        "purpose": r.purpose.as_str(),
                        "oldVersion": r.old_version.get(),
                        "newVersion": r.new_version.get(),
                    })
                );
                event.versions = vec![r.old_version.get(), r.new_version.get()];
            }
            trail.conclude(event, outcome).await?;
        }
    }
    Ok(())
}

/// `keyflow keys purge`: the backend's erasure of destroyed material from its files.
async fn purge(config: &Config) -> Result<(), CliError> {
    // Audited, so the KEK is unlocked first (the record is sealed under it).
    let (_service, trail) = open_audited(config).await?;
    let event = trail.event("keys.purge");
    let outcome = match &config.store {
        crate::config::StoreLocation::Sqlite(path) => {
            let store = keyflow_store_sqlite::SqliteKeystore::open(path).await?;
            let done = store.erase_wal().await;
            store.close().await;
            done.map(|()| "SQLite: WAL checkpointed and truncated (freed pages are zeroed by secure_delete)")
        }
        crate::config::StoreLocation::Postgres(url) => {
            let store = keyflow_store_postgres::PostgresKeystore::connect(
                &url.0,
                &keyflow_store_postgres::PoolSettings::with_max_connections(1),
            )
            .await?;
            let done = store.vacuum_key_versions().await;
            store.close().await;
            done.map(|()| "PostgreSQL: VACUUM FULL key_versions done (WAL segments, replicas and base backups keep older copies until recycled)")
        }
    }
    .map_err(CliError::from);
    if let Ok(what) = &outcome {
        println!("{what}");
    }
    trail.conclude(event, outcome.map(drop)).await
}
