//! The field layer's error type.

use keyflow_kms::{KmsError, Purpose};

/// Errors of field-level encryption.
///
/// Messages name field *paths*, never values: a path is the caller's schema, a value
/// may be a card number. Callers choose HTTP statuses and exit codes by matching
/// variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldsError {
    /// A selector did not parse.
    #[error("invalid field selector '{selector}': {reason}")]
    InvalidSelector {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option or the caller's context is unusable.
    #[error("{0}")]
    InvalidOption(String),
    /// Auto-detection was asked for a purpose that has no list of sensitive names.
    #[error("purpose '{0}' has no auto-detection list (known: userData, financialData, healthData, documents, pciLevel1, pciLevel2, pii, financial, authentication, health); list the fields instead")]
    NoDetectionList(Purpose),
    /// Sensitive authentication data was present and the policy is `reject`.
    #[error("sensitive authentication data may not be stored, not even encrypted (PCI DSS 3.3.1): {}", .paths.join(", "))]
    SensitiveAuthenticationData {
        /// Where it was found.
        paths: Vec<String>,
    },
    /// A blind index was asked for a value that is not an object member (it is stored
    /// beside the value, in the same object).
    #[error("blind index at {0}: only object members can carry a blind index")]
    BlindIndexPlacement(String),
    /// Encrypting the value at `path` failed.
    #[error("encryption failed at {path}: {source}")]
    Encrypt {
        /// Where.
        path: String,
        /// Why (never the value).
        source: KmsError,
    },
    /// Decrypting the value at `path` failed; the document was not changed.
    #[error("decryption failed at {path}: {source}")]
    Decrypt {
        /// Where.
        path: String,
        /// Why (opaque for tag failures).
        source: KmsError,
    },
    /// `ENCRYPTION_STRICT_MODE` (fail closed on read): values that must be ciphertexts
    /// are in clear ([`crate::DecryptOptions::require_ciphertext`]). Names the paths,
    /// never the values.
    #[error("ENCRYPTION_STRICT_MODE: plaintext where a ciphertext is required: {}", .paths.join(", "))]
    PlaintextRefused {
        /// Where.
        paths: Vec<String>,
    },
    /// A string that should be a KeyFlow ciphertext is not one.
    #[error("not a KeyFlow ciphertext")]
    NotCiphertext,
    /// A decrypted value does not have the expected type (or a value could not be
    /// turned into JSON). Never quotes the value.
    #[error("value at {0} does not have the expected type")]
    Type(String),
    /// The key service failed outside a field (resolving a purpose, listing versions).
    #[error(transparent)]
    Kms(#[from] KmsError),
}

impl FieldsError {
    /// The underlying key-service error of an encrypt/decrypt failure, if any.
    pub fn kms(&self) -> Option<&KmsError> {
        match self {
            FieldsError::Encrypt { source, .. }
            | FieldsError::Decrypt { source, .. }
            | FieldsError::Kms(source) => Some(source),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = FieldsError> = std::result::Result<T, E>;

impl From<keyflow_kms::keyflow_core::Error> for FieldsError {
    fn from(e: keyflow_kms::keyflow_core::Error) -> Self {
        FieldsError::Kms(e.into())
    }
}
