//! How the link to PostgreSQL is protected, as a connection URL asks for it.
//!
//! sqlx's default `sslmode=prefer` (like libpq's) falls back to plain text when the
//! server — or whoever sits between — declines TLS, and `require` encrypts without
//! checking who answers: either way an active attacker on the network reads the
//! wrapped keys, the token hashes and the audit trail, and can rewrite them in
//! flight. Production therefore asks for [`LinkSecurity::VerifiedTls`]
//! (`sslmode=verify-full`: the CA chain and the host name are checked), or a Unix
//! socket with an explicit, logged opt-out (`keyflow` decides; see its `open_stores`).

use std::str::FromStr;

use keyflow_kms::StoreError;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// What a connection URL (with `PG*` environment defaults, as sqlx applies them)
/// guarantees about its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkSecurity {
    /// `sslmode=verify-full`: TLS, certificate chain and host name verified.
    VerifiedTls,
    /// A Unix-domain socket: no network on the way, whatever `sslmode` says.
    UnixSocket,
    /// Anything else, with the `sslmode` in effect (`disable`, `allow`, `prefer`,
    /// `require`, `verify-ca`).
    Unverified(&'static str),
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Reads the link security `url` asks for (the URL is never quoted in errors).
pub fn link_security(url: &str) -> Result<LinkSecurity, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
    Ok(if options.get_socket().is_some() {
        LinkSecurity::UnixSocket
    } else {
        match options.get_ssl_mode() {
            PgSslMode::VerifyFull => LinkSecurity::VerifiedTls,
            other => LinkSecurity::Unverified(mode_name(other)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verify_full_or_a_socket_counts() {
        let s = |u: &str| link_security(u).unwrap();
        assert_eq!(
            s("postgres://kf:pw@db.example/keys?sslmode=verify-full"),
            LinkSecurity::VerifiedTls
        );
        assert_eq!(
            s("postgres://kf@%2Fvar%2Frun%2Fpostgresql/keys"),
            LinkSecurity::UnixSocket
        );
        assert_eq!(
            s("postgres://kf@localhost/keys?host=/run/postgresql"),
            LinkSecurity::UnixSocket
        );
        for (url, mode) in [
            ("postgres://kf@db/keys?sslmode=require", "require"),
            ("postgres://kf@db/keys?sslmode=verify-ca", "verify-ca"),
            ("postgres://kf@db/keys?sslmode=disable", "disable"),
        ] {
            assert_eq!(s(url), LinkSecurity::Unverified(mode), "{url}");
        }
        let e = link_security("postgres://kf:s3cret@db:notaport/keys")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
