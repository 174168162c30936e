//! What can go wrong in a discovery scan. Messages name tables and columns, never a
//! value, and never a password (target URLs are shown redacted).

/// A discovery error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not `sqlite:` nor `postgres://` (or unparsable).
    #[error("unsupported target URL scheme '{0}' (use sqlite:PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// The database could not be opened or reached.
    #[error("cannot open the target database {target}: {reason}")]
    Connect {
        /// The URL, redacted.
        target: String,
        /// The driver's reason.
        reason: String,
    },
    /// `--table` names no table of the database.
    #[error("table '{0}' not found in the target database (names are case-sensitive)")]
    NoSuchTable(String),
    /// `--table` names one of KeyFlow's own tables.
    #[error("table '{0}' is KeyFlow's own (discovery scans application tables)")]
    OwnTable(String),
    /// A query failed while reading.
    #[error("target database error: {0}")]
    Database(String),
}

impl Error {
    /// True for mistakes in the arguments (exit code 2 in the CLI).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnsupportedUrl(_) | Error::NoSuchTable(_) | Error::OwnTable(_)
        )
    }

    /// The stable code an audit record gives as its result.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnsupportedUrl(_) | Error::NoSuchTable(_) | Error::OwnTable(_) => {
                "invalid_request"
            }
            Error::Connect { .. } => "unavailable",
            Error::Database(_) => "database_error",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e.to_string())
    }
}

impl Error {
    /// The error of a failed connect to the target shown as `shown` (redacted).
    pub(crate) fn connect(shown: &str) -> impl Fn(sqlx::Error) -> Error + Copy + '_ {
        move |e| Error::Connect {
            target: shown.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
