//! The password envelope of the KEK file and of key backups:
//! `base64( salt[32] ‖ iv[16] ‖ tag[16] ‖ ct )`, key = PBKDF2-HMAC-SHA256(password,
//! salt, iterations, 32 bytes), AES-256-GCM with the 16-byte IV, no AAD.
//!
//! The iteration count is stored nowhere, so [`open`] tries the given counts in order
//! and reports which one opened the envelope.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use zeroize::Zeroizing;

use crate::error::{LegacyError, Result};
use crate::gcm16::{Gcm16Key, IV_LEN, KEY_LEN, TAG_LEN};
use crate::text::b64_decode;

/// Salt length of the envelope.
pub const SALT_LEN: usize = 32;
/// The counts of the two builds in the field, in the order they are tried: the older
/// build (100,000) and the newer one (210,000).
pub const LIKELY_ITERATIONS: [u32; 2] = [100_000, 210_000];

/// An opened envelope: the plaintext (zeroized on drop) and the count that opened it.
pub struct Opened {
    /// The decrypted contents.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The PBKDF2 iteration count that opened it.
    pub iterations: u32,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The key PBKDF2-HMAC-SHA256 derives from `password` and `salt`.
pub(crate) fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Result<Gcm16Key> {
    let n = NonZeroU32::new(iterations)
        .ok_or_else(|| LegacyError::malformed("iteration count", "must be at least 1"))?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, salt, password, &mut key[..]);
    Gcm16Key::new(&key[..])
}

/// Opens the envelope in `text` (`what` names it in errors: `KEK file`, `backup`),
/// trying each of `iterations` in order. A count that does not open it is not an
/// error until every count has failed: then [`LegacyError::WrongPassword`].
pub fn open(text: &str, password: &[u8], iterations: &[u32], what: &'static str) -> Result<Opened> {
    let bytes = b64_decode(what, "contents", text.trim())?;
    let min = SALT_LEN + IV_LEN + TAG_LEN;
    if bytes.len() < min {
        return Err(LegacyError::malformed(
            what,
            format!(
                "{} bytes, shorter than salt, IV and tag ({min})",
                bytes.len()
            ),
        ));
    }
    let (salt, rest) = bytes.split_at(SALT_LEN);
    let (iv, rest) = rest.split_at(IV_LEN);
    let (tag, ct) = rest.split_at(TAG_LEN);
    for &n in iterations {
        let key = derive(password, salt, n)?;
        match key.open(iv, &[], ct, tag) {
            Ok(plaintext) => {
                return Ok(Opened {
                    plaintext,
                    iterations: n,
                })
            }
            Err(LegacyError::DecryptionFailed) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(LegacyError::WrongPassword {
        what,
        tried: iterations
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

/// The counts to try: the one given, or [`LIKELY_ITERATIONS`].
pub fn counts(given: Option<u32>) -> Vec<u32> {
    given.map_or_else(|| LIKELY_ITERATIONS.to_vec(), |n| vec![n])
}

/// The counts to try for a second envelope once a first one opened at `first`:
/// that count first (the legacy system used one count for both), then the others.
pub fn counts_after(given: Option<u32>, first: u32) -> Vec<u32> {
    let mut out = vec![first];
    out.extend(counts(given).into_iter().filter(|&n| n != first));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write;
    use keyflow_kms::keyflow_core::OsRng;

    #[test]
    fn opens_with_the_right_count_only() {
        let text = write::password_envelope(b"secret contents", b"pw", 1_000, &OsRng).unwrap();
        let o = open(&text, b"pw", &[2_000, 1_000], "backup").unwrap();
        assert_eq!(o.iterations, 1_000);
        assert_eq!(&o.plaintext[..], b"secret contents");
        let e = open(&text, b"pw", &[2_000, 3_000], "backup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the backup does not open with this password at 2000 or 3000 PBKDF2 iterations (wrong password, or another iteration count: give it with --iterations)"
        );
        assert!(matches!(
            open(&text, b"other", &[1_000], "backup"),
            Err(LegacyError::WrongPassword { .. })
        ));
        assert!(!format!("{o:?}").contains("secret"));
    }

    #[test]
    fn short_or_non_base64_input_is_malformed() {
        assert!(matches!(
            open("AAAA", b"pw", &[1], "KEK file"),
            Err(LegacyError::Malformed { .. })
        ));
        assert!(matches!(
            open("not base64!", b"pw", &[1], "KEK file"),
            Err(LegacyError::Malformed { .. })
        ));
    }

    #[test]
    fn count_orders() {
        assert_eq!(counts(None), vec![100_000, 210_000]);
        assert_eq!(counts(Some(5)), vec![5]);
        assert_eq!(counts_after(None, 210_000), vec![210_000, 100_000]);
        assert_eq!(counts_after(Some(7), 7), vec![7]);
    }
}
