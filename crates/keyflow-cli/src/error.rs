//! The CLI's error type: one clear line on stderr, a non-zero exit code.

use keyflow_kms::KmsError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    /// The operation ran and (partly) failed; the message says what.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Kms(#[from] KmsError),
    #[error("{0}")]
    Store(#[from] keyflow_kms::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stream(#[from] keyflow_stream::StreamError),
    #[error("{0}")]
    Reencrypt(#[from] keyflow_reencrypt::Error),
    #[error("{0} rows could not be processed and were left untouched (see the census)")]
    RowsFailed(u64),
}

impl From<keyflow_core::Error> for CliError {
    fn from(e: keyflow_core::Error) -> Self {
        CliError::Kms(e.into())
    }
}

impl From<keyflow_server::settings::ServeError> for CliError {
    fn from(e: keyflow_server::settings::ServeError) -> Self {
        use keyflow_server::settings::ServeError;
        match e {
            ServeError::Config(m) => CliError::Config(m),
            ServeError::Kms(e) => CliError::Kms(e),
            ServeError::Store(e) => CliError::Store(e),
            ServeError::Io(e) => CliError::Io(e),
            // Failed, and any later variant: the operation failed (exit 1).
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl CliError {
    /// Exit codes: 1 for failures of the operation, 2 for bad usage or configuration.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Reencrypt(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}
