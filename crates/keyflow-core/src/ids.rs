//! Identifiers parsed once at the boundary: [`Purpose`] and [`KeyVersion`].

use std::fmt;

use crate::{Error, Result};

/// Longest purpose name, in bytes (the envelope stores its length in one byte).
pub const MAX_PURPOSE_LEN: usize = 64;

/// The name of a key ring (`userData`, `financialData`, …).
///
/// ASCII only: a letter, then up to 63 letters, digits, `_`, `-` or `.`. Case matters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purpose(String);

impl Purpose {
    /// Parses a purpose name.
    pub fn new(name: &str) -> Result<Self> {
        Self::validate(name.as_bytes())?;
        Ok(Self(name.to_owned()))
    }

    /// Validates raw bytes as a purpose name (used by the envelope parser).
    pub(crate) fn validate(bytes: &[u8]) -> Result<()> {
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_PURPOSE_LEN
            && bytes[0].is_ascii_alphabetic()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(
                "purpose (a letter, then up to 63 letters, digits, '_', '-' or '.')",
            ))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Purpose({})", self.0)
    }
}

impl std::str::FromStr for Purpose {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// A key version number within a purpose's ring: 1, 2, 3, … (never 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyVersion(u32);

impl KeyVersion {
    /// The first version of every ring.
    pub const FIRST: KeyVersion = KeyVersion(1);

    /// Makes a version; 0 is refused.
    pub fn new(v: u32) -> Result<Self> {
        if v == 0 {
            Err(Error::Invalid("key version (must be 1 or more)"))
        } else {
            Ok(Self(v))
        }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Result<Self> {
        self.0
            .checked_add(1)
            .map(Self)
            .ok_or(Error::Invalid("key version (overflow)"))
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id of one key version as shown to users: `purpose:vN`.
pub fn key_id(purpose: &Purpose, version: KeyVersion) -> String {
    format!("{}:v{}", purpose.as_str(), version.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_names() {
        for ok in ["userData", "financialData", "a", "a.b-c_9"] {
            assert!(Purpose::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "9abc", "_x", "with space", "é", long.as_str(), "a/b"] {
            assert!(Purpose::new(bad).is_err(), "{bad}");
        }
        assert!(Purpose::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn hex_encoding() {
        assert_eq!(crate::to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(crate::to_hex(&[]), "");
    }

    #[test]
    fn versions() {
        assert!(KeyVersion::new(0).is_err());
        assert_eq!(KeyVersion::FIRST.next().map(KeyVersion::get), Ok(2));
        assert!(KeyVersion(u32::MAX).next().is_err());
        assert_eq!(
            key_id(&Purpose::new("userData").unwrap(), KeyVersion(3)),
            "userData:v3"
        );
    }
}
