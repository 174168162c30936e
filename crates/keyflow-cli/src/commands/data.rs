//! `keyflow encrypt | decrypt | inspect | mask`.

use std::io::{Read, Write};

use keyflow_kms::keyflow_core::mask::MaskType;
use keyflow_kms::keyflow_core::{data_key::MAX_PLAINTEXT_LEN, PayloadKind};
use keyflow_kms::{Encrypt, EncryptMode, EncryptionService, Input};
use zeroize::Zeroizing;

use super::{open_service, parse_context, parse_purpose};
use crate::config::Config;
use crate::error::CliError;

/// Reads all of stdin, refusing more than `limit` bytes.
fn read_stdin(limit: usize) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(CliError::Usage(format!(
            "input is larger than {} MiB; use file encryption for large data",
            limit >> 20
        )));
    }
    Ok(buf)
}

fn read_ciphertext() -> Result<String, CliError> {
    // The text form of a 64 MiB plaintext is under 90 MiB.
    let raw = read_stdin(96 << 20)?;
    let text = std::str::from_utf8(&raw)
        .map_err(|_| CliError::Kms(keyflow_kms::KmsError::DecryptionFailed))?;
    Ok(text.trim().to_owned())
}

pub async fn encrypt(
    config: &Config,
    purpose: &str,
    deterministic: bool,
    context: &[String],
) -> Result<(), CliError> {
    let purpose = parse_purpose(purpose)?;
    let ctx = parse_context(context)?;
    let data = read_stdin(MAX_PLAINTEXT_LEN)?;
    let service = open_service(config).await?;
    let ct = service
        .encrypt(
            Encrypt::new(&purpose, &ctx, Input::Payload(PayloadKind::Bytes, &data))
                .mode(EncryptMode::deterministic_if(deterministic)),
        )
        .await?
        .ciphertext;
    service.ring().flush_usage().await?;
    println!("{ct}");
    Ok(())
}

pub async fn decrypt(config: &Config, context: &[String]) -> Result<(), CliError> {
    let ctx = parse_context(context)?;
    let text = read_ciphertext()?;
    let service = open_service(config).await?;
    let plain = service.decrypt_raw(&text, &ctx).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(plain.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn inspect() -> Result<(), CliError> {
    let text = read_ciphertext()?;
    let summary = EncryptionService::summary(&text)?;
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| CliError::Config(e.to_string()))?;
    println!("{json}");
    Ok(())
}

pub fn mask(kind: &str, value: &str) -> Result<(), CliError> {
    let kind: MaskType = kind
        .parse()
        .map_err(|e| CliError::Usage(format!("--type: {e}")))?;
    println!("{}", keyflow_kms::keyflow_core::mask::mask(value, kind));
    Ok(())
}
