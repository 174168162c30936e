//! Transition reads of the legacy Node.js system's data (issue 17,
//! docs/legacy-migration.md): while applications still hold legacy packages and field
//! documents, `/decrypt`, `/batch/decrypt`, `/decrypt-fields` read them and `/rewrap`
//! turns a package into a KeyFlow ciphertext — for purposes whose keys were imported
//! (`keyflow legacy import`), authorized by the purpose the package's key was imported
//! under, like any ciphertext. Off by default (`KEYFLOW_LEGACY_READS=on`); every read is
//! counted in `/status` (`legacy`), so the operator sees when nothing legacy is read any
//! more and the legacy versions can be revoked.
//!
//! The legacy keys are loaded from the keystore at most once a second (when used), so a
//! revocation stops legacy reads within a second, as for KeyFlow's own versions.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyflow_kms::{Context, EncryptionService, Purpose};
use keyflow_legacy::fields::{is_legacy_document, legacy_fields, ENCRYPTED, ENCRYPTION_VERSION};
use keyflow_legacy::package::typed_value;
use keyflow_legacy::{convert, LegacyError, LegacyKeyring, Package};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a loaded set of legacy keys is used before it is read again.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// The transition-read state: the legacy keys and the counters shown in `/status`.
#[derive(Default)]
pub struct LegacyReads {
    ring: Mutex<Option<(Arc<LegacyKeyring>, Duration)>>,
    values: AtomicU64,
    failures: AtomicU64,
    rewraps: AtomicU64,
    last_read_ms: AtomicI64,
}

impl std::fmt::Debug for LegacyReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyReads")
            .field("values", &self.values.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LegacyReads {
    /// The legacy keys, reloaded from the keystore when older than a second.
    async fn ring(&self, service: &EncryptionService) -> Result<Arc<LegacyKeyring>, ApiError> {
        let now = service.ring().clock().monotonic();
        {
            let held = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((ring, at)) = held.as_ref() {
                if now.saturating_sub(*at) < RELOAD_AFTER {
                    return Ok(ring.clone());
                }
            }
        }
        let ring = Arc::new(LegacyKeyring::load(service).await.map_err(api_error)?);
        *self.ring.lock().unwrap_or_else(PoisonError::into_inner) = Some((ring.clone(), now));
        Ok(ring)
    }

    fn count(&self, service: &EncryptionService, values: u64, ok: bool) {
        if ok {
            self.values.fetch_add(values, Ordering::Relaxed);
            self.last_read_ms
                .store(service.ring().clock().now_millis(), Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `/status` block.
    pub fn status(&self) -> Value {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        json!({
            "enabled": true,
            "valuesRead": self.values.load(Ordering::Relaxed),
            "rewrapped": self.rewraps.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "lastReadAt": (last > 0).then(|| keyflow_kms::clock::rfc3339(last)),
        })
    }
}

/// `/status`'s `legacy` block (`{enabled: false}` when transition reads are off).
pub fn status(state: &AppState) -> Value {
    state
        .legacy_reads()
        .map_or_else(|| json!({ "enabled": false }), LegacyReads::status)
}

/// A legacy error as an API error: crypto failures and unknown keys are the same opaque
/// `decryption_failed` as for KeyFlow ciphertexts.
fn api_error(e: LegacyError) -> ApiError {
    match e {
        LegacyError::Kms(k) => ApiError::from(k),
        e @ LegacyError::KeyNotUsable { .. } => ApiError::KeyUnavailable(e.to_string()),
        // A 4-byte tag, a 12-byte IV, a broken package: not a value this route reads.
        LegacyError::TagLength(_)
        | LegacyError::IvLength(_)
        | LegacyError::Malformed { .. }
        | LegacyError::Algorithm => ApiError::InvalidCiphertext,
        _ => ApiError::DecryptionFailed,
    }
}

/// The transition state, when on and `text` looks like a legacy package.
fn applies<'a>(state: &'a AppState, text: &str) -> Option<&'a LegacyReads> {
    state.legacy_reads().filter(|_| Package::looks_like(text))
}

/// The JSON answer fields of a legacy plaintext: `data` typed as the old reader did
/// (bytes base64 with `encoding`), and `legacy: true`.
fn answer(plaintext: &[u8]) -> Value {
    match typed_value(plaintext) {
        Some(v) => json!({ "data": v, "legacy": true }),
        None => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
            json!({ "data": b64, "encoding": "base64", "legacy": true })
        }
    }
}

/// Parses the legacy package `text` and loads the legacy key ring, once `who` may use
/// the purpose of the package's key (an unknown or unusable key fails as decryption).
async fn authorized(
    reads: &LegacyReads,
    state: &AppState,
    who: &Principal,
    text: &str,
) -> Result<(Package, Arc<LegacyKeyring>, Purpose), ApiError> {
    let package = Package::parse(text).map_err(api_error)?;
    let ring = reads.ring(&state.service).await?;
    let purpose = ring
        .purpose_of(&package.key_id)
        .ok_or(ApiError::DecryptionFailed)?
        .clone();
    who.require_purpose(&purpose)?;
    Ok((package, ring, purpose))
}

/// Decrypts `text` if it is a legacy package and transition reads are on (`None`:
/// not for this module). Returns the answer and the purpose it was authorized under.
pub async fn decrypt_package(
    state: &AppState,
    who: &Principal,
    text: &str,
) -> Option<Result<(Value, String), ApiError>> {
    let reads = applies(state, text)?;
    let result = async {
        let (package, ring, purpose) = authorized(reads, state, who, text).await?;
        let (_, plaintext) = ring.open_package(&package).map_err(api_error)?;
        Ok((answer(&plaintext), purpose.to_string()))
    }
    .await;
    reads.count(&state.service, 1, result.is_ok());
    Some(result)
}

/// Rewraps `text` into a KeyFlow ciphertext under its purpose's active version if it is
/// a legacy package and transition reads are on; the plaintext stays in the server.
pub async fn rewrap_package(
    state: &AppState,
    who: &Principal,
    text: &str,
    ctx: &Context,
) -> Option<Result<Value, ApiError>> {
    let reads = applies(state, text)?;
    let result = async {
        let (package, ring, _) = authorized(reads, state, who, text).await?;
        let ct = convert::convert_package(&state.service, &ring, text, ctx)
            .await
            .map_err(api_error)?;
        let to = EncryptionService::summary(&ct)
            .map(|s| s.key_version)
            .unwrap_or_default();
        Ok(json!({
            "encryptedData": ct,
            "fromVersion": package.key_version,
            "toVersion": to,
            "changed": true,
            "legacy": true,
        }))
    }
    .await;
    reads.count(&state.service, 1, result.is_ok());
    if result.is_ok() {
        reads.rewraps.fetch_add(1, Ordering::Relaxed);
    }
    Some(result)
}

/// Decrypts the legacy fields of `doc` in place (each authorized by its key's purpose)
/// and removes `_encrypted` / `_encryptionVersion`, when transition reads are on and the
/// document has legacy metadata. Returns the fields decrypted (empty: nothing legacy).
/// All or nothing: the first field that fails fails the call and `doc` is dropped.
pub async fn decrypt_document(
    state: &AppState,
    who: &Principal,
    doc: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(reads) = state.legacy_reads().filter(|_| is_legacy_document(&doc)) else {
        return Ok((doc, Vec::new()));
    };
    let result = async {
        let ring = reads.ring(&state.service).await?;
        let fields = legacy_fields(&doc).map_err(api_error)?;
        let mut opened = Vec::with_capacity(fields.len());
        for f in &fields {
            let purpose = ring
                .purpose_of(&f.key_id)
                .ok_or_else(|| ApiError::FieldDecryptionFailed(f.name.clone()))?;
            who.require_purpose(purpose)?;
            let (_, pt) = ring
                .open_field(f)
                .map_err(|_| ApiError::FieldDecryptionFailed(f.name.clone()))?;
            let value =
                typed_value(&pt).ok_or_else(|| ApiError::FieldDecryptionFailed(f.name.clone()))?;
            opened.push((f, value));
        }
        let mut doc = doc;
        let mut names = Vec::with_capacity(opened.len());
        for (f, value) in opened {
            if let Some(slot) = f.path.iter().try_fold(&mut doc, |v, p| v.get_mut(p)) {
                *slot = value;
            }
            names.push(f.name.clone());
        }
        if let Some(obj) = doc.as_object_mut() {
            obj.remove(ENCRYPTED);
            obj.remove(ENCRYPTION_VERSION);
        }
        Ok((doc, names))
    }
    .await;
    reads.count(
        &state.service,
        result.as_ref().map_or(0, |(_, n)| n.len() as u64),
        result.is_ok(),
    );
    result
}
