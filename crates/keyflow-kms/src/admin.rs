//! Key administration: [`KeyAdmin`], reached as [`crate::EncryptionService::keys`].
//!
//! Generate, rotate, list and leases here; version lifecycle and policies in
//! `lifecycle.rs`, the scheduler pass in [`crate::scheduler`], backup and restore in
//! [`crate::backup`], legacy imports in [`crate::legacy`] — all on this type.

use keyflow_core::{KeyVersion, Purpose};

use crate::keystore::{CreateOutcome, RotateOutcome};
use crate::model::{KeyStatus, KeyVersionRecord, VersionFilter};
use crate::ring::{KeyRing, ROTATE_ATTEMPTS};
use crate::service::Rotation;
use crate::{KmsError, Result};

/// Key administration over a service's key ring. A borrowed view: get it from
/// [`crate::EncryptionService::keys`] where it is needed.
#[derive(Debug, Clone, Copy)]
pub struct KeyAdmin<'a> {
    pub(crate) ring: &'a KeyRing,
}

impl<'a> KeyAdmin<'a> {
    pub(crate) fn new(ring: &'a KeyRing) -> Self {
        Self { ring }
    }

    /// Creates version 1 of a new purpose. Refused if the purpose already exists.
    pub async fn generate(self, purpose: &Purpose) -> Result<KeyVersionRecord> {
        let ring = self.ring;
        let (record, key) = ring.new_version(purpose, KeyVersion::FIRST)?;
        match ring.store.create_first(&record).await? {
            CreateOutcome::Created => {
                ring.cache.insert(key, KeyStatus::Active);
                Ok(record)
            }
            CreateOutcome::AlreadyExists => Err(KmsError::PurposeExists(purpose.clone())),
        }
    }

    /// Rotates a purpose: a new version becomes active and the old one `rotating`, in
    /// one transaction. Old ciphertexts keep decrypting.
    pub async fn rotate(self, purpose: &Purpose) -> Result<Rotation> {
        let ring = self.ring;
        for _ in 0..ROTATE_ATTEMPTS {
            let active = ring
                .store
                .active_version(purpose)
                .await?
                .ok_or_else(|| KmsError::UnknownPurpose(purpose.clone()))?;
            let next = active.version.next()?;
            let (record, key) = ring.new_version(purpose, next)?;
            match ring.store.rotate(&record, ring.clock.now_millis()).await? {
                RotateOutcome::Rotated => {
                    ring.cache.invalidate(purpose);
                    ring.cache.insert(key, KeyStatus::Active);
                    return Ok(Rotation {
                        purpose: purpose.clone(),
                        old_version: active.version,
                        new_version: next,
                    });
                }
                RotateOutcome::Conflict => continue,
            }
        }
        Err(KmsError::RotationConflict(purpose.clone()))
    }

    /// Rotates `purpose` only if `expected` is still its active version. `None` when
    /// another writer rotated first — which, for the scheduler, means the work is done:
    /// racing passes yield exactly one new version.
    pub async fn rotate_if_active(
        self,
        purpose: &Purpose,
        expected: KeyVersion,
    ) -> Result<Option<Rotation>> {
        self.ring.rotate_if_active(purpose, expected).await
    }

    /// Key versions (metadata only).
    pub async fn list(self, filter: &VersionFilter) -> Result<Vec<KeyVersionRecord>> {
        Ok(self.ring.store.list_versions(filter).await?)
    }

    /// Takes (or renews) the lease `name` for `holder` until `now + ttl_ms`; false
    /// while another holder has it. One process at a time runs the scheduler pass or
    /// the audit pruning.
    pub async fn try_lease(self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        Ok(self.ring.store.try_lease(name, holder, now, ttl_ms).await?)
    }

    /// Gives the lease `name` back if `holder` has it (so the next pass need not wait
    /// for it to expire).
    pub async fn release_lease(self, name: &str, holder: &str) -> Result<()> {
        Ok(self.ring.store.release_lease(name, holder).await?)
    }
}
