//! Key lifecycle on [`KeyAdmin`]: policies, revocation, reinstatement and destruction.
//!
//! Every change is one compare-and-set in the keystore, so two administrators (or
//! instances) acting at once cannot both apply conflicting changes; the local cache
//! of the purpose is dropped afterwards.

use keyflow_core::{KeyVersion, Purpose};

use crate::admin::KeyAdmin;
use crate::model::{KeyStatus, KeyVersionRecord, Policy, StatusChange, StatusOutcome};
use crate::{KmsError, Result};

/// Longest revocation reason kept.
const MAX_REASON_CHARS: usize = 500;

/// A state change of one version asked for by an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChange<'a> {
    /// Revoke, with the reason kept beside the version.
    Revoke(&'a str),
    /// Reinstate a revoked version.
    Reinstate,
    /// Destroy a revoked version's material.
    Destroy,
}

impl KeyAdmin<'_> {
    /// Applies `change` to version `version` of `purpose` (see [`Self::revoke`],
    /// [`Self::reinstate`], [`Self::destroy`]).
    pub async fn change_version(
        self,
        purpose: &Purpose,
        version: KeyVersion,
        change: VersionChange<'_>,
    ) -> Result<KeyVersionRecord> {
        match change {
            VersionChange::Revoke(reason) => self.revoke(purpose, version, reason).await,
            VersionChange::Reinstate => self.reinstate(purpose, version).await,
            VersionChange::Destroy => self.destroy(purpose, version).await,
        }
    }

    /// The purpose's rotation policy: the one set, or the default.
    pub async fn policy(self, purpose: &Purpose) -> Result<Policy> {
        Ok(self
            .ring
            .store
            .get_policy(purpose)
            .await?
            .unwrap_or_default())
    }

    /// Every purpose's policy that was set (purposes without one use the default).
    pub async fn policies(self) -> Result<Vec<(Purpose, Policy)>> {
        Ok(self.ring.store.list_policies().await?)
    }

    /// Sets the purpose's rotation policy (validated first).
    pub async fn set_policy(self, purpose: &Purpose, policy: &Policy) -> Result<()> {
        policy.validate()?;
        Ok(self.ring.store.set_policy(purpose, policy).await?)
    }

    /// Revokes a version: it no longer decrypts (reversible with [`Self::reinstate`]).
    /// The active version cannot be revoked: rotate first.
    pub async fn revoke(
        self,
        purpose: &Purpose,
        version: KeyVersion,
        reason: &str,
    ) -> Result<KeyVersionRecord> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(KmsError::Invalid("reason (1 to 500 characters)"));
        }
        self.transition(
            purpose,
            version,
            &[KeyStatus::Rotating, KeyStatus::Deprecated],
            KeyStatus::Revoked,
            Some(reason.to_owned()),
            |status| match status {
                KeyStatus::Active => {
                    "the active version cannot be revoked: rotate the purpose first"
                }
                _ => "only a rotating or deprecated version can be revoked",
            },
        )
        .await
    }

    /// Reinstates a revoked version as `deprecated` (decrypt-only, flagged in health;
    /// the time it spent `rotating` is not restored).
    pub async fn reinstate(
        self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<KeyVersionRecord> {
        self.transition(
            purpose,
            version,
            &[KeyStatus::Revoked],
            KeyStatus::Deprecated,
            None,
            |_| "only a revoked version can be reinstated",
        )
        .await
    }

    /// Destroys a revoked version: its material is erased from the keystore
    /// (crypto-shredding; irreversible). Its number is never reused.
    pub async fn destroy(self, purpose: &Purpose, version: KeyVersion) -> Result<KeyVersionRecord> {
        self.transition(
            purpose,
            version,
            &[KeyStatus::Revoked],
            KeyStatus::Destroyed,
            None,
            |_| "only a revoked version can be destroyed: revoke it first",
        )
        .await
    }

    async fn transition(
        self,
        purpose: &Purpose,
        version: KeyVersion,
        from: &[KeyStatus],
        to: KeyStatus,
        reason: Option<String>,
        hint: fn(KeyStatus) -> &'static str,
    ) -> Result<KeyVersionRecord> {
        let change = StatusChange {
            purpose: purpose.clone(),
            version,
            from: from.to_vec(),
            to,
            reason,
            now: self.ring.clock.now_millis(),
        };
        let outcome = self.ring.store.set_status(&change).await?;
        // Whatever happened, the cached view of this purpose may be stale now.
        self.ring.cache.invalidate(purpose);
        match outcome {
            StatusOutcome::Changed => {}
            StatusOutcome::NotFound => {
                return Err(KmsError::UnknownVersion {
                    purpose: purpose.clone(),
                    version,
                })
            }
            StatusOutcome::WrongState(status) => {
                return Err(KmsError::WrongKeyState {
                    purpose: purpose.clone(),
                    version,
                    status,
                    hint: hint(status),
                })
            }
        }
        tracing::info!(purpose = %purpose, version = %version, to = %to, "key version state changed");
        self.ring
            .store
            .get_version(purpose, version)
            .await?
            .ok_or(KmsError::UnknownVersion {
                purpose: purpose.clone(),
                version,
            })
    }
}
