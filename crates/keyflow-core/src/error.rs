//! The core's error type.

/// Errors of the pure core.
///
/// Every failure to authenticate or parse a ciphertext, unwrap a key or derive a key
/// is the one payload-less [`Error::DecryptionFailed`]: telling the caller *why* a
/// ciphertext was refused helps an attacker and never the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ciphertext, wrapped key or KEK file did not parse or did not authenticate.
    #[error("decryption failed")]
    DecryptionFailed,
    /// An input that is not a ciphertext was given where one was expected
    /// (used only by `summary`/`inspect`, which do not decrypt).
    #[error("not a KeyFlow ciphertext")]
    InvalidEnvelope,
    /// A value given by the caller is out of range or malformed; the text says which
    /// (it never contains plaintext or key material).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
    /// The underlying crypto library refused an operation that cannot fail with valid
    /// inputs (a fault, not a caller's mistake).
    #[error("cryptographic operation failed")]
    Crypto,
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
