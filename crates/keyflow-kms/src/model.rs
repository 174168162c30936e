//! Key-version records and their lifecycle states.

use std::fmt;
use std::str::FromStr;

use keyflow_core::{KeyVersion, Purpose};

/// Lifecycle state of one key version (PRODUCT.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Encrypts and decrypts; exactly one per purpose.
    Active,
    /// Decrypt-only, inside the grace period after a rotation.
    Rotating,
    /// Decrypt-only, past the grace period; flagged in health and compliance.
    Deprecated,
    /// No decryption; reversible by an admin.
    Revoked,
    /// Material erased (crypto-shredding); irreversible.
    Destroyed,
}

impl KeyStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [KeyStatus; 5] = [
        KeyStatus::Active,
        KeyStatus::Rotating,
        KeyStatus::Deprecated,
        KeyStatus::Revoked,
        KeyStatus::Destroyed,
    ];

    /// The stored / displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Rotating => "rotating",
            KeyStatus::Deprecated => "deprecated",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Destroyed => "destroyed",
        }
    }

    /// May a version in this state decrypt?
    pub fn can_decrypt(self) -> bool {
        matches!(
            self,
            KeyStatus::Active | KeyStatus::Rotating | KeyStatus::Deprecated
        )
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStatus {
    type Err = crate::KmsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(crate::KmsError::Invalid(
                "key status (active, rotating, deprecated, revoked or destroyed)",
            ))
    }
}

/// Algorithm name recorded for DEK versions (all KeyFlow DEKs are 256-bit AES keys from
/// which per-mode subkeys are derived).
pub const DEK_ALGORITHM: &str = "AES-256";

/// One key version as stored. The material is only ever present wrapped under the KEK.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyVersionRecord {
    /// Key ring.
    pub purpose: Purpose,
    /// Version number.
    pub version: KeyVersion,
    /// Lifecycle state.
    pub status: KeyStatus,
    /// Key algorithm (`AES-256`).
    pub algorithm: String,
    /// nonce ‖ AES-256-GCM(KEK, DEK) ‖ tag; `None` once destroyed.
    pub wrapped_key: Option<Vec<u8>>,
    /// Id of the KEK that wrapped it.
    pub kek_id: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Time of the last state change, Unix milliseconds.
    pub status_changed_at: i64,
    /// Encryptions made with this version (persisted in batches).
    pub encryptions: u64,
    /// Why the version was revoked (set while `revoked`, and kept once `destroyed`).
    pub revoked_reason: Option<String>,
}

impl fmt::Debug for KeyVersionRecord {
    // The wrapped key is ciphertext, but there is no reason to print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersionRecord")
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .field("status", &self.status)
            .field("algorithm", &self.algorithm)
            .field("kek_id", &self.kek_id)
            .field("created_at", &self.created_at)
            .field("status_changed_at", &self.status_changed_at)
            .field("encryptions", &self.encryptions)
            .field("revoked_reason", &self.revoked_reason)
            .finish_non_exhaustive()
    }
}

/// The rotation policy of one purpose (PRODUCT.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Days an active version lives before it is due for rotation.
    pub rotation_days: u32,
    /// Days a `rotating` version stays decryptable before it becomes `deprecated`.
    pub grace_days: u32,
    /// A version is rotated once it is within this many days of its rotation date.
    pub warn_days: u32,
    /// Encryptions per version before rotation is due, whatever its age.
    pub max_encryptions: u64,
}

/// The most encryptions one AES-256-GCM key may make with random 96-bit nonces
/// (NIST SP 800-38D §8.3): whatever a policy says, no version is used beyond this.
pub const MAX_ENCRYPTIONS_PER_KEY: u64 = 1 << 32;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

impl Default for Policy {
    /// 90-day rotation, 30-day grace, 7-day warning, 2^30 encryptions per version
    /// (AES-GCM with random 96-bit nonces is safe for at most 2^32 messages per key,
    /// NIST SP 800-38D §8.3; 2^30 leaves a wide margin).
    fn default() -> Self {
        Self {
            rotation_days: 90,
            grace_days: 30,
            warn_days: 7,
            max_encryptions: 1 << 30,
        }
    }
}

impl Policy {
    /// Checks the values make sense together.
    pub fn validate(&self) -> crate::Result<()> {
        if self.rotation_days == 0 || self.rotation_days > 3650 {
            return Err(crate::KmsError::Invalid("rotation days (1..=3650)"));
        }
        if self.grace_days > 3650 {
            return Err(crate::KmsError::Invalid("grace days (0..=3650)"));
        }
        if self.warn_days >= self.rotation_days {
            return Err(crate::KmsError::Invalid(
                "warn days (must be below the rotation period)",
            ));
        }
        if self.max_encryptions == 0 || self.max_encryptions > MAX_ENCRYPTIONS_PER_KEY {
            return Err(crate::KmsError::Invalid(
                "max encryptions (1..=2^32, the AES-GCM random-nonce bound)",
            ));
        }
        Ok(())
    }

    /// When an active version created at `created_at` becomes due (warn window start).
    /// Saturating: no stored time, however damaged, overflows.
    pub fn due_at(&self, created_at: i64) -> i64 {
        let days = i64::from(self.rotation_days).saturating_sub(i64::from(self.warn_days));
        created_at.saturating_add(days.saturating_mul(DAY_MS))
    }

    /// When a version that became `rotating` at `since` passes its grace period.
    /// Saturating, as [`Self::due_at`].
    pub fn grace_ends_at(&self, since: i64) -> i64 {
        since.saturating_add(i64::from(self.grace_days).saturating_mul(DAY_MS))
    }
}

/// A change of one version's state, applied only from one of the `from` states.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// Key ring.
    pub purpose: Purpose,
    /// Version.
    pub version: KeyVersion,
    /// States the version may be in for the change to apply.
    pub from: Vec<KeyStatus>,
    /// The new state (never `active`: only a rotation makes a version active).
    pub to: KeyStatus,
    /// Revocation reason (stored with `revoked`).
    pub reason: Option<String>,
    /// Time of the change, Unix milliseconds.
    pub now: i64,
}

/// The result of a [`StatusChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Applied.
    Changed,
    /// No such version.
    NotFound,
    /// The version is in this state, not one of `from`; nothing was written.
    WrongState(KeyStatus),
}

/// One version's material wrapped under a new KEK (KEK rotation).
#[derive(Clone)]
pub struct RewrappedKey {
    /// Key ring.
    pub purpose: Purpose,
    /// Version.
    pub version: KeyVersion,
    /// The DEK wrapped under the new KEK.
    pub wrapped_key: Vec<u8>,
}

impl fmt::Debug for RewrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewrappedKey")
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A filter for listing versions.
#[derive(Clone, Debug, Default)]
pub struct VersionFilter {
    /// Only this purpose.
    pub purpose: Option<Purpose>,
    /// Only this state.
    pub status: Option<KeyStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in KeyStatus::ALL {
            assert_eq!(s.as_str().parse::<KeyStatus>().unwrap(), s);
        }
        assert!("expired".parse::<KeyStatus>().is_err());
        assert!(KeyStatus::Deprecated.can_decrypt());
        assert!(!KeyStatus::Revoked.can_decrypt());
    }

    #[test]
    fn due_dates_saturate_instead_of_overflowing() {
        let p = Policy::default();
        assert_eq!(p.due_at(i64::MAX), i64::MAX);
        assert_eq!(p.grace_ends_at(i64::MAX - 1), i64::MAX);
        assert_eq!(p.due_at(0), 83 * DAY_MS);
        let odd = Policy {
            rotation_days: 1,
            warn_days: 3650,
            ..p
        };
        assert_eq!(odd.due_at(i64::MIN), i64::MIN);
    }

    #[test]
    fn debug_hides_wrapped_key() {
        let r = KeyVersionRecord {
            purpose: Purpose::new("userData").unwrap(),
            version: KeyVersion::FIRST,
            status: KeyStatus::Active,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(vec![0xAB; 60]),
            kek_id: "k".into(),
            created_at: 0,
            status_changed_at: 0,
            encryptions: 0,
            revoked_reason: None,
        };
        let s = format!("{r:?}");
        assert!(!s.contains("171") && !s.contains("wrapped"), "{s}");
    }
}
