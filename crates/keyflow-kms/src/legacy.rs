//! Key versions imported from the legacy Node.js system (issue 17, ARCHITECTURE
//! decision 41). A legacy DEK becomes an ordinary key version of its purpose — wrapped
//! under KeyFlow's KEK with the usual purpose ‖ version AAD, never `active`, subject to
//! revoke and destroy like any version — plus a [`LegacyKeyRecord`] row that maps the
//! legacy key id (what legacy packages name) to that version.
//!
//! The methods here are the only way to get a DEK's raw bytes out of the service, and
//! they give only the DEKs of imported legacy versions: the legacy formats need the
//! raw key (16-byte-IV AES-GCM under the DEK itself), which KeyFlow's own versions
//! never expose.

use keyflow_core::{KeyVersion, Purpose, SecretKey};

use crate::admin::KeyAdmin;
use crate::model::{KeyStatus, KeyVersionRecord, DEK_ALGORITHM};
use crate::{KmsError, Result, WriteOutcome};

/// One imported legacy key id and the KeyFlow version that holds its DEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyKeyRecord {
    /// The legacy key id (`${purpose}-…-${16 hex}`).
    pub legacy_key_id: String,
    /// The KeyFlow purpose.
    pub purpose: Purpose,
    /// The KeyFlow version (equal to the legacy version).
    pub version: KeyVersion,
    /// The state the key had in the legacy system (`active`, `rotating`, `deprecated`,
    /// `revoked`, or `unknown` for a 1.0 backup).
    pub legacy_status: String,
    /// When it was imported, Unix milliseconds.
    pub imported_at: i64,
}

impl KeyAdmin<'_> {
    /// A version record holding `dek` (an imported legacy key) as `version` of
    /// `purpose`, wrapped under this service's KEK. `status` must not be `active`.
    pub fn legacy_version_record(
        self,
        purpose: &Purpose,
        version: KeyVersion,
        dek: &SecretKey,
        status: KeyStatus,
        created_at: i64,
        revoked_reason: Option<String>,
    ) -> Result<KeyVersionRecord> {
        if matches!(status, KeyStatus::Active | KeyStatus::Destroyed) {
            return Err(KmsError::Invalid(
                "legacy version state (never active or destroyed)",
            ));
        }
        let wrapped = self
            .ring
            .kek
            .wrap_dek(purpose, version, dek, &*self.ring.rng)?;
        Ok(KeyVersionRecord {
            purpose: purpose.clone(),
            version,
            status,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(wrapped),
            kek_id: self.ring.kek.id().to_owned(),
            created_at,
            status_changed_at: self.ring.clock.now_millis(),
            encryptions: 0,
            revoked_reason,
        })
    }

    /// A fresh active version (new random DEK) for a purpose whose only versions are
    /// imported legacy ones, so that it can encrypt.
    pub fn fresh_active_record(
        self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<KeyVersionRecord> {
        Ok(self.ring.new_version(purpose, version)?.0)
    }

    /// Whether the stored version `record` holds the same DEK as `dek` (constant-time
    /// comparison after unwrapping). A destroyed version holds nothing: `false`.
    pub fn holds_material(self, record: &KeyVersionRecord, dek: &SecretKey) -> Result<bool> {
        let Some(wrapped) = record.wrapped_key.as_deref() else {
            return Ok(false);
        };
        if record.kek_id != self.ring.kek.id() {
            return Err(KmsError::KekMismatch {
                expected: record.kek_id.clone(),
                found: self.ring.kek.id().to_owned(),
            });
        }
        let stored = self
            .ring
            .kek
            .unwrap_dek(&record.purpose, record.version, wrapped)
            .map_err(|_| KmsError::Crypto)?;
        Ok(stored.ct_eq(dek))
    }

    /// The imported legacy key ids.
    pub async fn legacy_keys(self) -> Result<Vec<LegacyKeyRecord>> {
        Ok(self.ring.store.legacy_keys().await?)
    }

    /// Writes an import in one keystore transaction (see
    /// [`crate::LegacyKeys::import_legacy`]) and drops the key cache.
    pub async fn import_legacy(
        self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome> {
        let out = self.ring.store.import_legacy(versions, keys).await?;
        self.ring.cache.invalidate_all();
        Ok(out)
    }

    /// The DEK of every imported legacy key whose version may decrypt; for the others,
    /// the reason (its state). Read from the keystore on every call (no cache), so a
    /// revocation is seen by the next call.
    pub async fn legacy_deks(
        self,
    ) -> Result<Vec<(LegacyKeyRecord, std::result::Result<SecretKey, String>)>> {
        let mut out = Vec::new();
        for key in self.ring.store.legacy_keys().await? {
            let record = self
                .ring
                .store
                .get_version(&key.purpose, key.version)
                .await?;
            let dek = match record {
                None => Err("missing".to_owned()),
                Some(r) if !r.status.can_decrypt() => Err(r.status.as_str().to_owned()),
                Some(r) => {
                    let wrapped = r.wrapped_key.as_deref().ok_or(KmsError::Crypto)?;
                    if r.kek_id != self.ring.kek.id() {
                        return Err(KmsError::KekMismatch {
                            expected: r.kek_id.clone(),
                            found: self.ring.kek.id().to_owned(),
                        });
                    }
                    Ok(self
                        .ring
                        .kek
                        .unwrap_dek(&r.purpose, r.version, wrapped)
                        .map_err(|_| KmsError::Crypto)?)
                }
            };
            out.push((key, dek));
        }
        Ok(out)
    }
}
