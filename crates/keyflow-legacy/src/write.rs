//! Writers of the legacy formats — KeyFlow never produces legacy data in operation.
//! They exist so that tests and benches can make cases the committed vectors do not
//! have (other iteration counts, tampered packages, short tags, duplicate keys), each
//! built exactly as the specification (`../shared/legacy/FORMAT.md`) describes.

use aws_lc_rs::digest;
use keyflow_kms::keyflow_core::SecureRandom;
use serde_json::{json, Value};

use crate::envelope::{derive, SALT_LEN};
use crate::error::{LegacyError, Result};
use crate::gcm16::{Gcm16Key, IV_LEN};
use crate::kek::LegacyKek;
use crate::text::b64_encode;

fn random<const N: usize>(rng: &dyn SecureRandom) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| LegacyError::DecryptionFailed)?;
    Ok(b)
}

/// `base64( salt ‖ iv ‖ tag ‖ ct )` under PBKDF2(password, iterations): a KEK file
/// (when `plaintext` is a 32-byte key) or a backup.
pub fn password_envelope(
    plaintext: &[u8],
    password: &[u8],
    iterations: u32,
    rng: &dyn SecureRandom,
) -> Result<String> {
    let salt: [u8; SALT_LEN] = random(rng)?;
    let iv: [u8; IV_LEN] = random(rng)?;
    let key = derive(password, &salt, iterations)?;
    let mut ct = plaintext.to_vec();
    let tag = key.seal_in_place(&iv, &[], &mut ct)?;
    let mut out = salt.to_vec();
    out.extend_from_slice(&iv);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&ct);
    Ok(b64_encode(&out))
}

/// `iv ‖ tag ‖ ct` of `key` wrapped under the legacy KEK (an `encryptedKey`, decoded).
pub fn wrap_key(kek: &LegacyKek, key: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>> {
    let iv: [u8; IV_LEN] = random(rng)?;
    let mut ct = key.to_vec();
    let tag = kek.cipher().seal_in_place(&iv, &[], &mut ct)?;
    let mut out = iv.to_vec();
    out.extend_from_slice(&tag);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// A key document as `mongoexport` writes it (one JSON line).
pub fn key_document(
    key_id: &str,
    purpose: &str,
    version: u32,
    status: &str,
    encrypted_key: &[u8],
) -> String {
    json!({
        "_id": {"$oid": "000000000000000000000000"},
        "keyId": key_id, "version": version, "algorithm": "aes-256-gcm",
        "encryptedKey": b64_encode(encrypted_key), "keyType": "data", "purpose": purpose,
        "status": status, "createdAt": {"$date": "2026-03-02T00:00:00.000Z"},
        "rotatedAt": null, "expiresAt": {"$date": "2026-05-31T00:00:00.000Z"},
        "metadata": {"rotationPeriodDays": 90, "usageCount": 0}, "compliance": {}
    })
    .to_string()
}

/// The JSON of a 2.0 backup around the given `backup` object, with its checksum.
pub fn backup_v2_raw(backup: &Value) -> String {
    let inner = backup.to_string();
    let sum = keyflow_kms::keyflow_core::to_hex(
        digest::digest(&digest::SHA256, inner.as_bytes()).as_ref(),
    );
    format!(r#"{{"backup":{inner},"checksum":"{sum}"}}"#)
}

/// The JSON of a 2.0 backup listing `keys`.
pub fn backup_v2(keys: &[Value]) -> String {
    backup_v2_raw(&json!({
        "version": "2.0", "exportedAt": "2026-03-06T00:00:00.000Z",
        "provider": {"provider": "local-file"}, "keyCount": keys.len(), "keys": keys
    }))
}

/// A package (`base64` of its JSON) of `plaintext` under `dek`, as the old
/// `encryptionService.encrypt` made it.
pub fn package(
    dek: &[u8],
    key_id: &str,
    key_version: u32,
    plaintext: &[u8],
    aad: Option<&str>,
    rng: &dyn SecureRandom,
) -> Result<String> {
    let (iv, tag, ct) = seal(dek, plaintext, aad.unwrap_or("").as_bytes(), rng)?;
    let mut p = json!({
        "version": "1.0", "algorithm": "aes-256-gcm", "keyId": key_id, "keyVersion": key_version,
        "iv": iv, "authTag": tag, "ciphertext": ct, "encryptedAt": "2026-12-03T18:57:35.222Z"
    });
    if let Some(a) = aad {
        p["aad"] = json!(a);
    }
    Ok(b64_encode(p.to_string().as_bytes()))
}

/// `(iv, authTag, ciphertext)` in base64 for a legacy field value.
pub fn seal(
    dek: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(String, String, String)> {
    let iv: [u8; IV_LEN] = random(rng)?;
    let mut ct = plaintext.to_vec();
    let tag = Gcm16Key::new(dek)?.seal_in_place(&iv, aad, &mut ct)?;
    Ok((b64_encode(&iv), b64_encode(&tag), b64_encode(&ct)))
}
