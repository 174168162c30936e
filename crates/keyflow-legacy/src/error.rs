//! Errors of the legacy readers. None carries key material, plaintext or a password:
//! crypto failures are payload-less, parse failures name the field, not its value.

/// What went wrong reading legacy data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// A GCM tag did not verify: wrong key, wrong password, or modified bytes.
    #[error("decryption failed (wrong key or password, or modified data)")]
    DecryptionFailed,
    /// A password envelope (KEK file or backup) opened with none of the iteration
    /// counts tried.
    #[error("the {what} does not open with this password at {tried} PBKDF2 iterations (wrong password, or another iteration count: give it with --iterations)")]
    WrongPassword {
        /// `KEK file` or `backup`.
        what: &'static str,
        /// The counts tried, e.g. `100000 or 210000`.
        tried: String,
    },
    /// The input is not in the expected format; the message names what is wrong.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read (`KEK file`, `package`, `key document`…).
        what: &'static str,
        /// What is wrong with it (never a value from it).
        reason: String,
    },
    /// A tag that is not 16 bytes (the old code did not pin the tag length).
    #[error("authentication tag of {0} bytes refused (only 16-byte tags are accepted)")]
    TagLength(usize),
    /// An IV that is not 16 bytes.
    #[error("IV of {0} bytes refused (the legacy format uses 16-byte IVs)")]
    IvLength(usize),
    /// An unwrapped key that is not 32 bytes.
    #[error("unwrapped key of {0} bytes refused (AES-256 keys are 32 bytes)")]
    KeyLength(usize),
    /// A 2.0 backup whose SHA-256 checksum does not match its contents.
    #[error("backup checksum mismatch: the backup was modified or damaged")]
    ChecksumMismatch,
    /// An algorithm other than `aes-256-gcm`.
    #[error("unsupported algorithm (only aes-256-gcm)")]
    Algorithm,
    /// A package or field names a legacy key id that was not imported.
    #[error("unknown legacy key id {0} (not imported, or its key document was deleted)")]
    UnknownKey(String),
    /// The key exists but may not decrypt any more (revoked or destroyed in KeyFlow).
    #[error("legacy key {key_id} is {status} in KeyFlow and may not decrypt")]
    KeyNotUsable {
        /// The legacy key id.
        key_id: String,
        /// Its KeyFlow state.
        status: String,
    },
    /// The package's `keyVersion` disagrees with the imported key's version.
    #[error("package names key {key_id} with version {found}, but that key is version {expected}")]
    VersionMismatch {
        /// The legacy key id.
        key_id: String,
        /// The version the package names.
        found: u64,
        /// The version imported for that key id.
        expected: u32,
    },
    /// Another writer changed the keystore during an import; nothing was written.
    #[error("the keystore changed during the import (another writer); nothing was written: run it again")]
    Conflict,
    /// A KeyFlow operation failed (keystore, service).
    #[error(transparent)]
    Kms(#[from] keyflow_kms::KmsError),
    /// A field-level operation failed.
    #[error(transparent)]
    Fields(#[from] keyflow_fields::FieldsError),
}

impl LegacyError {
    /// A [`LegacyError::Malformed`].
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = LegacyError> = std::result::Result<T, E>;
