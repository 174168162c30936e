//! The legacy KEK file (`master.kek`) and the DEKs wrapped under it.

use keyflow_kms::keyflow_core::SecretKey;

use crate::envelope;
use crate::error::{LegacyError, Result};
use crate::gcm16::{Gcm16Key, IV_LEN, KEY_LEN, TAG_LEN};
use crate::text::b64_decode;

/// The legacy system's KEK, unlocked. Held only as an AES key schedule (zeroized on
/// drop); `Debug` shows no bytes.
#[derive(Debug)]
pub struct LegacyKek(Gcm16Key);

impl LegacyKek {
    /// Opens `master.kek` (its text) with the KEK password, trying `iterations` in
    /// order; returns the KEK and the count that opened it.
    pub fn open(text: &str, password: &[u8], iterations: &[u32]) -> Result<(Self, u32)> {
        let opened = envelope::open(text, password, iterations, "KEK file")?;
        if opened.plaintext.len() != KEY_LEN {
            return Err(LegacyError::KeyLength(opened.plaintext.len()));
        }
        Ok((Self(Gcm16Key::new(&opened.plaintext)?), opened.iterations))
    }

    /// A KEK from raw bytes (tests and the [`crate::write`] helpers).
    pub fn from_bytes(key: &[u8]) -> Result<Self> {
        Gcm16Key::new(key).map(Self)
    }

    /// Unwraps an `encryptedKey` (`base64( iv[16] ‖ tag[16] ‖ ct )`, no AAD). A tag
    /// that does not verify is [`LegacyError::DecryptionFailed`] (this KEK file is not
    /// the one the key was wrapped under); a key that is not 32 bytes once unwrapped is
    /// [`LegacyError::KeyLength`].
    pub fn unwrap_dek(&self, encrypted_key: &[u8]) -> Result<SecretKey> {
        if encrypted_key.len() < IV_LEN + TAG_LEN {
            return Err(LegacyError::malformed(
                "key document",
                "'encryptedKey' is shorter than IV and tag",
            ));
        }
        let (iv, rest) = encrypted_key.split_at(IV_LEN);
        let (tag, ct) = rest.split_at(TAG_LEN);
        let dek = self.0.open(iv, &[], ct, tag)?;
        if dek.len() != KEY_LEN {
            return Err(LegacyError::KeyLength(dek.len()));
        }
        SecretKey::from_slice(&dek).map_err(|_| LegacyError::KeyLength(dek.len()))
    }

    /// [`Self::unwrap_dek`] of the base64 text form.
    pub fn unwrap_dek_b64(&self, encrypted_key: &str) -> Result<SecretKey> {
        self.unwrap_dek(&b64_decode("key document", "encryptedKey", encrypted_key)?)
    }

    pub(crate) fn cipher(&self) -> &Gcm16Key {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write;
    use keyflow_kms::keyflow_core::OsRng;

    #[test]
    fn wrong_lengths_are_refused() {
        let kek = LegacyKek::from_bytes(&[1u8; 32]).unwrap();
        let short = write::wrap_key(&kek, &[5u8; 16], &OsRng).unwrap();
        assert!(matches!(
            kek.unwrap_dek(&short),
            Err(LegacyError::KeyLength(16))
        ));
        let long = write::wrap_key(&kek, &[5u8; 48], &OsRng).unwrap();
        assert!(matches!(
            kek.unwrap_dek(&long),
            Err(LegacyError::KeyLength(48))
        ));
        let ok = write::wrap_key(&kek, &[5u8; 32], &OsRng).unwrap();
        assert!(kek.unwrap_dek(&ok).is_ok());
        let other = LegacyKek::from_bytes(&[2u8; 32]).unwrap();
        assert!(matches!(
            other.unwrap_dek(&ok),
            Err(LegacyError::DecryptionFailed)
        ));
        assert!(matches!(
            kek.unwrap_dek(&ok[..20]),
            Err(LegacyError::Malformed { .. })
        ));
    }

    #[test]
    fn kek_file_round_trip_and_wrong_length() {
        let text = write::password_envelope(&[3u8; 32], b"pw", 1_000, &OsRng).unwrap();
        let (_, n) = LegacyKek::open(&text, b"pw", &[1_000]).unwrap();
        assert_eq!(n, 1_000);
        let text = write::password_envelope(&[3u8; 31], b"pw", 1_000, &OsRng).unwrap();
        assert!(matches!(
            LegacyKek::open(&text, b"pw", &[1_000]),
            Err(LegacyError::KeyLength(31))
        ));
    }
}
