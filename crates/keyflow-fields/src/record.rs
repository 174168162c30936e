//! What `#[derive(Encrypt)]` code calls: one function per field operation, with the
//! same AAD binding as [`crate::encrypt_fields`] (reserved pairs `kf.field` = the
//! normalized field name, `kf.doc` = the record id), so a record encrypted by the
//! derive macro decrypts through the JSON API and the other way round.
//!
//! Ordinary async functions, unit-tested here; the macro only wires them to fields.

use keyflow_kms::{EncryptionService, KmsError, Purpose};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::blind::index_bytes;
use crate::document::Binding;
use crate::error::{FieldsError, Result};
use crate::typed::{BlindIndexValue, Encrypted};

fn purpose(name: &str) -> Result<Purpose> {
    Purpose::new(name).map_err(|e| FieldsError::InvalidOption(format!("purpose: {e}")))
}

/// Encrypts one field of a record. `label` is the normalized field name.
pub async fn encrypt_field<T: Serialize>(
    service: &EncryptionService,
    value: &T,
    purpose_name: &str,
    label: &str,
    deterministic: bool,
    binding: &Binding,
) -> Result<Encrypted<T>> {
    let p = purpose(purpose_name)?;
    let ctx = binding.context_for(label)?;
    Encrypted::encrypt(service, value, &p, &ctx, deterministic)
        .await
        .map_err(|e| at(label, e, true))
}

/// The blind index of one field's value, under the purpose's active version.
pub async fn blind_index_field<T: Serialize>(
    service: &EncryptionService,
    value: &T,
    purpose_name: &str,
    label: &str,
    bits: u16,
) -> Result<BlindIndexValue> {
    let p = purpose(purpose_name)?;
    let json = serde_json::to_value(value).map_err(|_| FieldsError::Type(label.to_owned()))?;
    let bi = service
        .blind_index(&p, label, &index_bytes(&json), bits)
        .await
        .map_err(|source| FieldsError::Encrypt {
            path: label.to_owned(),
            source,
        })?;
    BlindIndexValue::new(bi.hex)
}

/// Decrypts one field of a record.
pub async fn decrypt_field<T: DeserializeOwned>(
    service: &EncryptionService,
    value: &Encrypted<T>,
    label: &str,
    binding: &Binding,
) -> Result<T> {
    let ctx = binding.context_for(label)?;
    value
        .decrypt(service, &ctx)
        .await
        .map_err(|e| at(label, e, false))
}

/// Re-encrypts one field under the active version (a no-op when already there).
/// Returns the ciphertext and whether it changed.
pub async fn reencrypt_field<T>(
    service: &EncryptionService,
    value: &Encrypted<T>,
    label: &str,
    binding: &Binding,
) -> Result<(Encrypted<T>, bool)> {
    let ctx = binding.context_for(label)?;
    value
        .rewrap(service, &ctx)
        .await
        .map_err(|e| at(label, e, false))
}

/// Re-encrypts a blind-indexed field and recomputes its index under the active version
/// when the ciphertext moved (so the index keeps matching once the old version retires).
pub async fn reencrypt_indexed_field<T: Serialize + DeserializeOwned>(
    service: &EncryptionService,
    value: &Encrypted<T>,
    index: &BlindIndexValue,
    purpose_name: &str,
    label: &str,
    bits: u16,
    binding: &Binding,
) -> Result<(Encrypted<T>, BlindIndexValue)> {
    let (ct, changed) = reencrypt_field(service, value, label, binding).await?;
    if !changed {
        return Ok((ct, index.clone()));
    }
    let plain: T = decrypt_field(service, &ct, label, binding).await?;
    let bi = blind_index_field(service, &plain, purpose_name, label, bits).await?;
    Ok((ct, bi))
}

/// Puts the field name on an error of the typed layer.
fn at(label: &str, e: FieldsError, encrypting: bool) -> FieldsError {
    let path = label.to_owned();
    match e {
        FieldsError::Kms(source) if encrypting => FieldsError::Encrypt { path, source },
        FieldsError::Kms(source) => FieldsError::Decrypt { path, source },
        FieldsError::Type(_) => FieldsError::Type(path),
        FieldsError::NotCiphertext => FieldsError::Decrypt {
            path,
            source: KmsError::DecryptionFailed,
        },
        other => other,
    }
}
