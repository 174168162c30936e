//! The streaming format's error type.

/// Errors of streaming encryption and decryption.
///
/// Every authentication failure — a modified, truncated, reordered, duplicated or
/// extended file, the wrong key — is the one payload-less
/// [`StreamError::DecryptionFailed`]. Messages never contain plaintext or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The input does not start with a well-formed KeyFlow file header (bad magic,
    /// unsupported format version, or a malformed field). Reported without decrypting.
    #[error("not a KeyFlow encrypted file (or an unsupported format version)")]
    InvalidHeader,
    /// The file did not authenticate: wrong key, or modified, truncated, reordered,
    /// duplicated or extended data. Deliberately says nothing more.
    #[error("decryption failed")]
    DecryptionFailed,
    /// A caller's value is out of range or malformed (the text says which).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The plaintext read while encrypting differs in length from the size declared in
    /// the metadata (the input changed while it was being encrypted).
    #[error("the input's size changed while it was being encrypted (declared {declared} bytes, read {read})")]
    SizeMismatch {
        /// Size declared in the metadata.
        declared: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// The plaintext is longer than one file may hold (2^32 segments).
    #[error("the input is too large for one encrypted file")]
    TooLarge,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A key derivation or the random number generator failed.
    #[error("{0}")]
    Core(keyflow_core::Error),
}

impl From<keyflow_core::Error> for StreamError {
    fn from(e: keyflow_core::Error) -> Self {
        match e {
            keyflow_core::Error::DecryptionFailed => StreamError::DecryptionFailed,
            keyflow_core::Error::Invalid(what) => StreamError::Invalid(what),
            other => StreamError::Core(other),
        }
    }
}

impl From<StreamError> for std::io::Error {
    /// For the `Read`/`Write` impls: an I/O error is passed through unchanged; any other
    /// error becomes `InvalidData` wrapping the [`StreamError`] (recover it with
    /// [`StreamError::from_io`]).
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Io(io) => io,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

impl StreamError {
    /// Recovers a [`StreamError`] from an `io::Error` produced by this crate's
    /// `Read`/`Write` impls (other I/O errors become [`StreamError::Io`]).
    pub fn from_io(e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<StreamError>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(s) = inner.downcast::<StreamError>() {
                    return *s;
                }
            }
            return StreamError::DecryptionFailed;
        }
        StreamError::Io(e)
    }
}

/// Result alias for this crate.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;
