//! `keyflow tokens create | list | revoke`.

use keyflow_kms::access::{self, Role};
use keyflow_kms::clock::{rfc3339, Clock, SystemClock};
use keyflow_kms::keyflow_core::OsRng;
use serde_json::json;

use super::{open_store, open_trail, parse_purpose};
use crate::cli::TokensCommand;
use crate::config::Config;
use crate::error::CliError;

/// Parses `90d`, `12h`, `30m`, `3600s` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--expires: '{s}' is not a duration like 90d, 12h, 30m or 3600s"
        ))
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).filter(|v| *v > 0).ok_or_else(bad)
}

pub async fn run(config: &Config, cmd: &TokensCommand) -> Result<(), CliError> {
    let now = SystemClock.now_millis();
    match cmd {
        TokensCommand::Create {
            role,
            purposes,
            name,
            expires,
        } => {
            let role: Role = role
                .parse()
                .map_err(|e| CliError::Usage(format!("--role: {e}")))?;
            let purposes = purposes
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| parse_purpose(p))
                .collect::<Result<Vec<_>, _>>()?;
            let expires_at = expires
                .as_deref()
                .map(parse_duration_ms)
                .transpose()?
                .map(|d| now + d);
            let new = access::generate(role, purposes, name.clone(), now, expires_at, &OsRng)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let (store, trail) = open_trail(config).await?;
            // The id and name identify the token; its secret is never recorded.
            let mut event = trail.event("tokens.create");
            event.purposes = new.record.purposes.iter().map(|p| p.to_string()).collect();
            event.detail = Some(json!({
                "tokenId": new.record.id,
                "name": new.record.name,
                "role": new.record.role.as_str(),
                "expiresAt": new.record.expires_at.map(rfc3339),
            }));
            let outcome = store.insert_token(&new.record).await;
            if outcome.is_ok() {
                println!("{}", new.token.as_str());
            }
            trail
                .conclude(event, outcome.map_err(CliError::from))
                .await?;
        }
        TokensCommand::List { json: as_json } => {
            let store = open_store(config).await?;
            let tokens = store.list_tokens().await?;
            let rows: Vec<_> = tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if !t.is_live(now) {
                        "expired"
                    } else {
                        "active"
                    };
                    json!({
                        "id": t.id,
                        "role": t.role.as_str(),
                        "purposes": t.purposes.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                        "name": t.name,
                        "createdAt": rfc3339(t.created_at),
                        "expiresAt": t.expires_at.map(rfc3339),
                        "revokedAt": t.revoked_at.map(rfc3339),
                        "state": state,
                    })
                })
                .collect();
            if *as_json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<18} {:<8} {:<8} {:<24} {:<24} NAME",
                    "ID", "ROLE", "STATE", "PURPOSES", "EXPIRES"
                );
                for r in rows {
                    println!(
                        "{:<18} {:<8} {:<8} {:<24} {:<24} {}",
                        r["id"].as_str().unwrap_or_default(),
                        r["role"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["purposes"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(|p| p.as_str())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default(),
                        r["expiresAt"].as_str().unwrap_or("never"),
                        r["name"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        TokensCommand::Revoke { id } => {
            let (store, trail) = open_trail(config).await?;
            let mut event = trail.event("tokens.revoke");
            // Only an id is recorded: a whole token pasted by mistake holds its secret.
            let is_id = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
            event.detail = Some(if is_id {
                json!({ "tokenId": id })
            } else {
                json!({ "tokenId": null, "note": "the argument was not a token id" })
            });
            let outcome = match store.revoke_token(id, now).await {
                Ok(true) => {
                    println!("revoked token {id}");
                    Ok(())
                }
                Ok(false) => Err(CliError::Usage(format!("no active token with id '{id}'"))),
                Err(e) => Err(e.into()),
            };
            trail.conclude(event, outcome).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90d").unwrap(), 90 * 86_400_000);
        assert_eq!(parse_duration_ms("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(parse_duration_ms("1s").unwrap(), 1000);
        for bad in ["", "d", "10", "10w", "-5d", "0s", "99999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
