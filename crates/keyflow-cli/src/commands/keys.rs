//! `keyflow keys list | generate | rotate`.

use keyflow_kms::clock::rfc3339;
use keyflow_kms::{KeyStatus, KeyVersionRecord, VersionFilter};
use serde_json::json;

use super::{open_service, open_store, parse_purpose};
use crate::cli::KeysCommand;
use crate::config::Config;
use crate::error::CliError;

/// The API's key metadata plus the KEK id, which operators need to see.
fn to_json(r: &KeyVersionRecord) -> serde_json::Value {
    let mut v = r.metadata_json();
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
            if *json {
                let list: Vec<_> = versions.iter().map(to_json).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<24} {:>7}  {:<10}  {:<24}  {:>12}",
                    "PURPOSE", "VERSION", "STATUS", "CREATED", "ENCRYPTIONS"
                );
                for r in &versions {
                    println!(
                        "{:<24} {:>7}  {:<10}  {:<24}  {:>12}",
                        r.purpose.as_str(),
                        r.version.get(),
                        r.status.as_str(),
                        rfc3339(r.created_at),
                        r.encryptions
                    );
                }
            }
        }
        KeysCommand::Generate { purpose } => {
            let purpose = parse_purpose(purpose)?;
            let service = open_service(config).await?;
            let r = service.generate(&purpose).await?;
            println!("{}", to_json(&r));
        }
        KeysCommand::Rotate { purpose } => {
            let purpose = parse_purpose(purpose)?;
            let service = open_service(config).await?;
            let r = service.rotate(&purpose).await?;
            println!(
                "{}",
                json!({
                    "purpose": r.purpose.as_str(),
                    "oldVersion": r.old_version.get(),
                    "newVersion": r.new_version.get(),
                })
            );
        }
    }
    Ok(())
}
