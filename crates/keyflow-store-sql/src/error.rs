//! Driver errors → [`StoreError`], in one place for both backends: the variant says
//! what the caller can do (retry later, reload and retry, nothing), the message says
//! what failed. Messages come from the driver and the database, which never see key
//! material as text (it is bound as a parameter, and bound values are not echoed).

use keyflow_kms::keystore::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};

/// SQLSTATE classes and codes (PostgreSQL) and primary result codes (SQLite) that mean
/// "try again": the database is busy, shutting down or out of resources, or chose this
/// transaction as a deadlock's or serialization conflict's victim.
fn is_transient(d: &dyn DatabaseError) -> bool {
    let Some(code) = d.code() else {
        return false;
    };
    match code.as_ref() {
        // PostgreSQL (five-character SQLSTATE): connection exceptions (class 08),
        // insufficient resources (53: disk full, out of memory, too many connections),
        // serialization failure, deadlock, lock not available, statement timeout,
        // admin or crash shutdown, cannot connect now.
        c if c.len() == 5 => {
            c.starts_with("08")
                || c.starts_with("53")
                || matches!(
                    c,
                    "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
                )
        }
        // SQLite (a number; extended codes keep the primary code in their low byte):
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_IOERR, SQLITE_FULL.
        c => c
            .parse::<u32>()
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 7 | 10 | 13)),
    }
}

/// A driver error as a [`StoreError`]:
/// - [`StoreError::Unavailable`]: the database cannot be reached or is busy (pool
///   closed or timed out, I/O, TLS, a crashed worker, a transient database error);
/// - [`StoreError::Conflict`]: a constraint refused the write (unique, foreign key,
///   check, not null);
/// - [`StoreError::Corrupt`]: a stored value does not decode into its column's type;
/// - [`StoreError::Backend`]: anything else.
pub fn db_error(e: sqlx::Error) -> StoreError {
    let message = e.to_string();
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(message),
        sqlx::Error::Database(d) if !matches!(d.kind(), ErrorKind::Other) => {
            StoreError::Conflict(message)
        }
        sqlx::Error::Database(d) if is_transient(d.as_ref()) => StoreError::Unavailable(message),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt(message),
        _ => StoreError::Backend(message),
    }
}

/// A unique-key violation (a row that exists already).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A unique or check violation: an insert's precondition did not hold.
pub(crate) fn is_insert_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() || d.is_check_violation())
}

/// Any constraint failure (duplicate, second active version, unknown version).
pub(crate) fn is_constraint_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if !matches!(d.kind(), ErrorKind::Other))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::fmt;

    use super::*;

    /// A database error with a code and a kind, as a driver reports it.
    #[derive(Debug)]
    struct Db {
        code: &'static str,
        kind: ErrorKind,
    }

    impl fmt::Display for Db {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "database error {}", self.code)
        }
    }

    impl std::error::Error for Db {}

    impl DatabaseError for Db {
        fn message(&self) -> &str {
            "database error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            match self.kind {
                ErrorKind::UniqueViolation => ErrorKind::UniqueViolation,
                ErrorKind::ForeignKeyViolation => ErrorKind::ForeignKeyViolation,
                ErrorKind::NotNullViolation => ErrorKind::NotNullViolation,
                ErrorKind::CheckViolation => ErrorKind::CheckViolation,
                _ => ErrorKind::Other,
            }
        }
    }

    fn db(code: &'static str, kind: ErrorKind) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Db { code, kind }))
    }

    fn variant(e: &StoreError) -> &'static str {
        match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Backend(_) => "backend",
            _ => "other",
        }
    }

    #[test]
    fn driver_errors_map_to_what_the_caller_can_do() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for (e, want) in [
            (sqlx::Error::PoolTimedOut, "unavailable"),
            (sqlx::Error::PoolClosed, "unavailable"),
            (sqlx::Error::Io(io()), "unavailable"),
            (sqlx::Error::WorkerCrashed, "unavailable"),
            (db("23505", ErrorKind::UniqueViolation), "conflict"),
            (db("2067", ErrorKind::UniqueViolation), "conflict"),
            (db("23514", ErrorKind::CheckViolation), "conflict"),
            (db("23503", ErrorKind::ForeignKeyViolation), "conflict"),
            (db("23502", ErrorKind::NotNullViolation), "conflict"),
            (db("40001", ErrorKind::Other), "unavailable"),
            (db("40P01", ErrorKind::Other), "unavailable"),
            (db("57P01", ErrorKind::Other), "unavailable"),
            (db("08006", ErrorKind::Other), "unavailable"),
            (db("53300", ErrorKind::Other), "unavailable"),
            (db("22005", ErrorKind::Other), "backend"),
            (db("5", ErrorKind::Other), "unavailable"),
            (db("517", ErrorKind::Other), "unavailable"),
            (db("13", ErrorKind::Other), "unavailable"),
            (db("42P01", ErrorKind::Other), "backend"),
            (db("1", ErrorKind::Other), "backend"),
            (sqlx::Error::Decode("bad".into()), "corrupt"),
            (
                sqlx::Error::ColumnDecode {
                    index: "version".into(),
                    source: "bad".into(),
                },
                "corrupt",
            ),
            (sqlx::Error::RowNotFound, "backend"),
            (sqlx::Error::Protocol("unexpected".into()), "backend"),
        ] {
            let shown = e.to_string();
            let mapped = db_error(e);
            assert_eq!(variant(&mapped), want, "{shown}");
            assert_eq!(mapped.to_string(), shown, "the driver's message is kept");
        }
    }
}
