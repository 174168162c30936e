//! API tokens and roles: generation, the stored (hashed) form, and verification.
//!
//! A token looks like `kft_<id>_<secret>`: `id` is 16 hex characters (public, the lookup
//! key), `secret` 43 URL-safe base64 characters (256 bits from the OS CSPRNG). Only
//! SHA-256(secret) is stored — a fast hash is enough for a 256-bit random secret — and
//! it is compared in constant time. The full token is shown once, at creation.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use keyflow_core::{Purpose, SecureRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{KmsError, Result};

const PREFIX: &str = "kft_";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything: key management and data operations on every purpose.
    Admin,
    /// Data operations on the purposes it was granted, and masking.
    Service,
    /// Health, status, compliance, audit and key metadata; no data, no key changes.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Service, Role::Auditor];

    /// The stored / displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = KmsError;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(KmsError::Invalid("role (admin, service or auditor)"))
    }
}

/// A token as stored: never the secret, only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (16 hex characters).
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// Role.
    pub role: Role,
    /// Purposes a `service` token may use (empty for admin/auditor).
    pub purposes: Vec<Purpose>,
    /// A label for humans.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Expiry, Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Revocation time, Unix milliseconds.
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("purposes", &self.purposes)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl TokenRecord {
    /// May this token act on `purpose` at all (role aside)?
    pub fn allows_purpose(&self, purpose: &Purpose) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Service => self.purposes.contains(purpose),
            Role::Auditor => false,
        }
    }

    /// Is the token usable at `now` (not revoked, not expired)?
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A freshly generated token: the string to hand out (once) and the record to store.
pub struct NewToken {
    /// The full token; zeroized on drop.
    pub token: Zeroizing<String>,
    /// What the keystore keeps.
    pub record: TokenRecord,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Generates a token. `purposes` must be non-empty for `service` and empty otherwise.
pub fn generate(
    role: Role,
    purposes: Vec<Purpose>,
    name: String,
    now: i64,
    expires_at: Option<i64>,
    rng: &dyn SecureRandom,
) -> Result<NewToken> {
    match (role, purposes.is_empty()) {
        (Role::Service, true) => {
            return Err(KmsError::Invalid(
                "service token: give at least one purpose",
            ))
        }
        (Role::Admin | Role::Auditor, false) => {
            return Err(KmsError::Invalid(
                "purposes: only service tokens are limited to purposes",
            ))
        }
        _ => {}
    }
    if name.len() > 128 {
        return Err(KmsError::Invalid("token name (at most 128 bytes)"));
    }
    let mut id = [0u8; 8];
    rng.fill(&mut id).map_err(|_| KmsError::Randomness)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill(&mut secret[..])
        .map_err(|_| KmsError::Randomness)?;
    let id = keyflow_core::to_hex(&id);
    let secret_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(&secret[..]));
    let token = Zeroizing::new(format!("{PREFIX}{id}_{}", secret_text.as_str()));
    Ok(NewToken {
        token,
        record: TokenRecord {
            id,
            secret_hash: sha256(secret_text.as_bytes()),
            role,
            purposes,
            name,
            created_at: now,
            expires_at,
            revoked_at: None,
        },
    })
}

/// Splits a presented token into (id, secret). `None` if it is not shaped like one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((id, secret))
}

/// Does `secret` match the record's hash? Constant time.
pub fn verify(record: &TokenRecord, secret: &str) -> bool {
    sha256(secret.as_bytes()).ct_eq(&record.secret_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_core::OsRng;

    #[test]
    fn generate_parse_verify() {
        let t = generate(
            Role::Service,
            vec![Purpose::new("userData").unwrap()],
            "api".into(),
            0,
            None,
            &OsRng,
        )
        .unwrap();
        let (id, secret) = parse(&t.token).unwrap();
        assert_eq!(id, t.record.id);
        assert!(verify(&t.record, secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
        assert!(!verify(&t.record, &wrong));
        assert!(t.record.allows_purpose(&Purpose::new("userData").unwrap()));
        assert!(!t
            .record
            .allows_purpose(&Purpose::new("financialData").unwrap()));
        assert!(!format!("{t:?}").contains(secret));
        assert!(!format!("{:?}", t.record).contains("secret_hash"));
    }

    #[test]
    fn shapes_and_rules() {
        assert!(parse("kft_0123456789abcdef_short").is_none());
        assert!(parse("Bearer x").is_none());
        assert!(parse("").is_none());
        assert!(generate(Role::Service, vec![], String::new(), 0, None, &OsRng).is_err());
        assert!(generate(
            Role::Admin,
            vec![Purpose::new("a").unwrap()],
            String::new(),
            0,
            None,
            &OsRng
        )
        .is_err());
        let a = generate(Role::Auditor, vec![], String::new(), 10, Some(20), &OsRng)
            .unwrap()
            .record;
        assert!(a.is_live(19) && !a.is_live(20));
        assert!(!a.allows_purpose(&Purpose::new("userData").unwrap()));
        assert_eq!("auditor".parse::<Role>().unwrap(), Role::Auditor);
        assert!("root".parse::<Role>().is_err());
    }
}
