//! The engine's error type. Messages never contain row values.

use keyflow_kms::KmsError;

/// A run that could not continue. Per-row problems are not errors: they are counted in
/// the [`crate::Census`] and the row is left untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table or column name that is not a plain SQL identifier.
    #[error("invalid {what} name: {reason}")]
    InvalidIdentifier {
        /// Which argument.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A database URL this engine cannot use.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// The table or columns are missing or have a type the engine does not handle.
    #[error("{0}")]
    Schema(String),
    /// A database error (connection, statement, transaction).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A checkpoint row that cannot be read back.
    #[error("checkpoint for this table/column is damaged: {0} (use --restart to discard it)")]
    Checkpoint(String),
    /// A key-management error that affects every row (keystore unreachable, strict mode…).
    #[error("{0}")]
    Kms(#[from] KmsError),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for errors in what the caller asked (names, URL, schema), as opposed to
    /// failures while running (CLIs map them to different exit codes).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidIdentifier { .. } | Error::UnsupportedUrl(_) | Error::Schema(_)
        )
    }
}
