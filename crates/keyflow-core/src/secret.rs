//! Secret key material: zeroized on drop, never printed, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{rng::SecureRandom, Error, Result};

/// Length of every symmetric key KeyFlow holds (AES-256, HMAC-SHA256 keys).
pub const KEY_LEN: usize = 32;

/// 256 bits of secret key material (a KEK, a DEK or a derived subkey).
///
/// No `Clone`, no `PartialEq`, no `Hash`; `Debug` prints only the type name;
/// the bytes are overwritten when the value is dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Fresh random key material from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self> {
        let mut k = Self([0u8; KEY_LEN]);
        rng.fill(&mut k.0)?;
        Ok(k)
    }

    /// Takes key bytes from a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::DecryptionFailed)?;
        Ok(Self(arr))
    }

    /// Constant-time equality (for tests and merge checks; never `==`).
    pub fn ct_eq(&self, other: &SecretKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The raw bytes — for the crypto library and key wrapping only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Escape hatches that expose key material. Only for backup/export code paths that
/// must serialize keys; everything else stays inside the core.
pub mod hazmat {
    use super::SecretKey;

    /// The raw bytes of a secret key.
    pub fn expose_secret_key(key: &SecretKey) -> &[u8] {
        key.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::OsRng;

    #[test]
    fn debug_shows_no_bytes() {
        let k = SecretKey::from_slice(&[0xAB; 32]).unwrap();
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(!s.contains("171"), "{s}");
        assert_eq!(s, "SecretKey(<redacted>)");
    }

    #[test]
    fn ct_eq_and_generate() {
        let a = SecretKey::generate(&OsRng).unwrap();
        let b = SecretKey::generate(&OsRng).unwrap();
        assert!(!a.ct_eq(&b));
        let a2 = SecretKey::from_slice(a.expose()).unwrap();
        assert!(a.ct_eq(&a2));
        assert!(SecretKey::from_slice(&[0; 31]).is_err());
    }
}
