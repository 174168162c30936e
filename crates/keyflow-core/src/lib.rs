//! # keyflow-core
//!
//! The pure heart of KeyFlow: the envelope format, AES-256-GCM randomized encryption,
//! AES-256-GCM-SIV deterministic encryption, blind indexes, HKDF subkey derivation,
//! the password-protected KEK file format and DEK wrapping, and masking.
//!
//! This crate does no I/O: it reads no files, opens no sockets, spawns no tasks and
//! has no async code. Randomness is passed in as a [`rng::SecureRandom`] value;
//! outside tests it is always [`rng::OsRng`], the operating system's CSPRNG. Time is
//! passed in the same way, as a [`clock::Clock`] value.
//!
//! ```
//! use keyflow_core::{Context, DataKey, KeyVersion, OsRng, PayloadKind, Purpose, SecretKey};
//! use keyflow_core::envelope::{read, write};
//!
//! let dek = SecretKey::generate(&OsRng)?;
//! let key = DataKey::derive(Purpose::new("userData")?, KeyVersion::FIRST, &dek)?;
//! let ctx = Context::from_pairs([("recordId", "r-1")])?;
//! let env = key.encrypt(PayloadKind::Text, b"123-45-6789", &ctx, &OsRng)?;
//! let text = write::to_text(&env); // "kf1:AQEI…"
//!
//! let bytes = read::from_text(&text)?;
//! let plain = key.decrypt(&read::parse(&bytes)?, &ctx)?;
//! assert_eq!(plain.as_bytes(), b"123-45-6789");
//! # Ok::<(), keyflow_core::Error>(())
//! ```

pub mod clock;
pub mod context;
pub mod data_key;
pub mod envelope;
mod error;
pub mod ids;
pub mod kek;
pub mod mask;
pub mod rng;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock};
pub use context::Context;
pub use data_key::{DataKey, Plaintext};
pub use envelope::{Algorithm, Header, PayloadKind};
pub use error::{Error, Result};
pub use ids::{key_id, KeyVersion, Purpose};

/// Lowercase hex of `bytes` (ids, fingerprints, blind indexes; never key material).
/// The `hex` crate's, as everywhere in KeyFlow: one implementation.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The bytes of hex text (either case), or `None` if it is not an even run of hex digits.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}
pub use rng::{OsRng, SecureRandom};
pub use secret::SecretKey;

#[cfg(test)]
mod hex_tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x1a];
        assert_eq!(to_hex(&bytes), "007f80ff1a");
        assert_eq!(from_hex("007f80ff1a").as_deref(), Some(&bytes[..]));
        assert_eq!(from_hex("007F80FF1A").as_deref(), Some(&bytes[..]));
        assert_eq!(from_hex("").as_deref(), Some(&[][..]));
        assert_eq!(from_hex("abc"), None, "odd length");
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
