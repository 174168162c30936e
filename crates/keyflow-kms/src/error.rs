//! The key-management error type.

use std::path::PathBuf;

use keyflow_core::{KeyVersion, Purpose};

use crate::keystore::StoreError;
use crate::model::KeyStatus;

/// Errors of key management and of the [`crate::EncryptionService`].
///
/// Messages never contain plaintext, key material or passwords. Callers choose HTTP
/// statuses and exit codes by matching variants, never by reading the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The ciphertext did not parse or did not authenticate (wrong key, wrong context,
    /// tampered, truncated, unknown version…). Deliberately says nothing more.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The input is not a KeyFlow ciphertext (only from `summary`, which does not decrypt).
    #[error("not a KeyFlow ciphertext")]
    InvalidCiphertext,
    /// A caller's value is malformed or out of range.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// No key ring exists for this purpose.
    #[error("unknown purpose '{0}'")]
    UnknownPurpose(Purpose),
    /// `generate` on a purpose that already has versions.
    #[error("purpose '{0}' already has keys; rotate it instead")]
    PurposeExists(Purpose),
    /// ENCRYPTION_STRICT_MODE: the purpose must be generated before first use.
    #[error("purpose '{0}' has no key and ENCRYPTION_STRICT_MODE is on: generate it first (`keyflow keys generate --purpose {0}`)")]
    StrictModeNoKey(Purpose),
    /// The version named by a ciphertext exists but may not decrypt (revoked, destroyed).
    #[error("key {purpose}:v{version} is {status} and cannot be used")]
    KeyNotUsable {
        /// Purpose of the key.
        purpose: Purpose,
        /// Version of the key.
        version: KeyVersion,
        /// Its state.
        status: KeyStatus,
    },
    /// No such key version.
    #[error("key {purpose}:v{version} does not exist")]
    UnknownVersion {
        /// Purpose of the key.
        purpose: Purpose,
        /// Version asked for.
        version: KeyVersion,
    },
    /// A lifecycle change asked of a version in the wrong state; nothing was changed.
    #[error("key {purpose}:v{version} is {status}; {hint}")]
    WrongKeyState {
        /// Purpose of the key.
        purpose: Purpose,
        /// Version of the key.
        version: KeyVersion,
        /// Its current state.
        status: KeyStatus,
        /// What would be allowed instead.
        hint: &'static str,
    },
    /// Rotation kept conflicting with concurrent rotations.
    #[error("rotation of '{0}' conflicted with concurrent rotations; try again")]
    RotationConflict(Purpose),
    /// The KEK file is missing.
    #[error("no KEK file at {0}: run `keyflow init` first (or set KEK_PATH)")]
    KekMissing(PathBuf),
    /// The KEK file exists but did not unlock. Nothing was changed.
    #[error("the KEK at {0} could not be unlocked: wrong KEK_PASSWORD or a damaged KEK file (nothing was changed)")]
    KekUnlockFailed(PathBuf),
    /// The KEK file is not a valid KEK file.
    #[error("the KEK file {path} is invalid: {reason}")]
    KekFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the file's content).
        reason: String,
    },
    /// The keystore was initialized with another KEK.
    #[error("this keystore belongs to KEK {expected}, but the KEK file holds KEK {found}; refusing to continue (nothing was changed)")]
    KekMismatch {
        /// KEK id recorded in the keystore.
        expected: String,
        /// KEK id of the file.
        found: String,
    },
    /// The keystore has keys but its KEK file is gone: creating a new KEK would orphan
    /// every key, so `init` refuses.
    #[error("the keystore already holds keys for KEK {0}, but its KEK file is missing; restore the KEK file (never regenerated)")]
    KekLost(String),
    /// No password was given.
    #[error("KEK_PASSWORD is not set")]
    PasswordMissing,
    /// A weak password in production.
    #[error("KEK_PASSWORD must be at least {0} characters in production")]
    WeakPassword(usize),
    /// A backup password shorter than the minimum.
    #[error("the backup password must be at least {0} characters")]
    BackupPasswordTooShort(usize),
    /// The bytes are not a readable KeyFlow backup (structure, version, length).
    #[error("invalid backup file: {0} (nothing was changed)")]
    BackupInvalid(&'static str),
    /// The backup did not authenticate: wrong password, or a modified byte.
    #[error(
        "the backup could not be decrypted: wrong password or a damaged file (nothing was changed)"
    )]
    BackupDecryptionFailed,
    /// A restore conflicts with the keystore; nothing was written.
    #[error("restore refused, nothing was written: {0}")]
    RestoreRefused(String),
    /// A KEK rotation kept conflicting with concurrent key creation; nothing committed.
    #[error("the KEK rotation kept conflicting with concurrent key changes; nothing was committed, try again")]
    KekRotationConflict,
    /// Another KEK rotation or password change holds the KEK lease.
    #[error("another KEK rotation or password change is in progress (or one was interrupted less than {0} s ago); nothing was changed, try again later")]
    KekBusy(u64),
    /// The keystore failed.
    #[error("keystore: {0}")]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OS random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
    /// A cryptographic operation failed where it cannot fail with valid inputs.
    #[error("internal cryptographic failure")]
    Crypto,
}

impl From<keyflow_core::Error> for KmsError {
    fn from(e: keyflow_core::Error) -> Self {
        match e {
            keyflow_core::Error::DecryptionFailed => KmsError::DecryptionFailed,
            keyflow_core::Error::InvalidEnvelope => KmsError::InvalidCiphertext,
            keyflow_core::Error::Invalid(what) => KmsError::Invalid(what),
            keyflow_core::Error::Randomness => KmsError::Randomness,
            _ => KmsError::Crypto,
        }
    }
}

/// Result alias for key management.
pub type Result<T, E = KmsError> = std::result::Result<T, E>;
