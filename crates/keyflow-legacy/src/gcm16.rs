//! AES-256-GCM with a 16-byte IV — the one primitive aws-lc-rs cannot provide.
//!
//! The legacy system called Node's `createCipheriv('aes-256-gcm', key, iv16)`: with an
//! IV that is not 12 bytes, GCM derives its first counter block J0 from GHASH over the
//! IV (NIST SP 800-38D §7.1), which aws-lc-rs's AEAD API (12-byte nonces only) cannot
//! express. This module wraps RustCrypto's `aes-gcm` with a `U16` nonce size and is the
//! only place KeyFlow uses that crate. Tags are always 16 bytes here: a shorter tag (the
//! old code accepted 4-byte tags) is refused before any decryption, and the tag check
//! inside `aes-gcm` is constant time.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use zeroize::Zeroizing;

use crate::error::{LegacyError, Result};

/// IV length of every legacy GCM value.
pub const IV_LEN: usize = 16;
/// Tag length of every legacy GCM value (no other length is accepted).
pub const TAG_LEN: usize = 16;
/// AES-256 key length.
pub const KEY_LEN: usize = 32;

type Aes256Gcm16 = AesGcm<Aes256, U16>;

/// An AES-256 key schedule for 16-byte-IV GCM. The AES round keys and the GHASH key are
/// zeroized on drop (the `zeroize` features of `aes` and `polyval`, turned on in this
/// crate's manifest); `Debug` shows the type name only.
pub struct Gcm16Key(Aes256Gcm16);

impl std::fmt::Debug for Gcm16Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcm16Key(<redacted>)")
    }
}

impl Gcm16Key {
    /// A key from exactly 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN {
            return Err(LegacyError::KeyLength(key.len()));
        }
        Aes256Gcm16::new_from_slice(key)
            .map(Self)
            .map_err(|_| LegacyError::KeyLength(key.len()))
    }

    /// Decrypts `ct` with `iv` (16 bytes), `aad` and `tag` (16 bytes). The plaintext is
    /// zeroized when dropped. Any failure of the tag is [`LegacyError::DecryptionFailed`].
    pub fn open(&self, iv: &[u8], aad: &[u8], ct: &[u8], tag: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(ct.to_vec());
        self.open_in_place(iv, aad, &mut buf, tag)?;
        Ok(buf)
    }

    /// Decrypts `buf` in place (see [`Self::open`]); on failure `buf` holds no plaintext.
    pub fn open_in_place(&self, iv: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<()> {
        if tag.len() != TAG_LEN {
            return Err(LegacyError::TagLength(tag.len()));
        }
        if iv.len() != IV_LEN {
            return Err(LegacyError::IvLength(iv.len()));
        }
        self.0
            .decrypt_in_place_detached(
                GenericArray::from_slice(iv),
                aad,
                buf,
                GenericArray::from_slice(tag),
            )
            .map_err(|_| LegacyError::DecryptionFailed)
    }

    /// Encrypts `buf` in place and returns the 16-byte tag. KeyFlow never writes legacy
    /// data; this exists for [`crate::write`] (test vectors, benches).
    pub fn seal_in_place(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .encrypt_in_place_detached(GenericArray::from_slice(iv), aad, buf)
            .map_err(|_| LegacyError::DecryptionFailed)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = Gcm16Key::new(&[7u8; 32]).unwrap();
        let iv = [9u8; 16];
        let mut buf = b"hello legacy".to_vec();
        let tag = k.seal_in_place(&iv, b"aad", &mut buf).unwrap();
        assert_ne!(&buf[..], b"hello legacy");
        assert_eq!(
            &k.open(&iv, b"aad", &buf, &tag).unwrap()[..],
            b"hello legacy"
        );
        assert!(matches!(
            k.open(&iv, b"other", &buf, &tag),
            Err(LegacyError::DecryptionFailed)
        ));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(matches!(
            k.open(&iv, b"aad", &buf, &bad),
            Err(LegacyError::DecryptionFailed)
        ));
        let mut ct = buf.clone();
        ct[0] ^= 1;
        assert!(k.open(&iv, b"aad", &ct, &tag).is_err());
    }

    #[test]
    fn short_tags_and_ivs_are_refused() {
        let k = Gcm16Key::new(&[7u8; 32]).unwrap();
        let iv = [9u8; 16];
        let mut buf = b"x".to_vec();
        let tag = k.seal_in_place(&iv, b"", &mut buf).unwrap();
        // A truncated tag is refused before decryption, whatever its prefix.
        assert!(matches!(
            k.open(&iv, b"", &buf, &tag[..4]),
            Err(LegacyError::TagLength(4))
        ));
        assert!(matches!(
            k.open(&iv, b"", &buf, &tag[..12]),
            Err(LegacyError::TagLength(12))
        ));
        assert!(matches!(
            k.open(&iv[..12], b"", &buf, &tag),
            Err(LegacyError::IvLength(12))
        ));
        assert!(matches!(
            Gcm16Key::new(&[0u8; 16]),
            Err(LegacyError::KeyLength(16))
        ));
    }

    #[test]
    fn known_answers_with_a_16_byte_iv() {
        // From an independent implementation (Python `cryptography`, OpenSSL):
        // AESGCM(zeros32).encrypt(zeros16, pt, aad).
        let k = Gcm16Key::new(&[0u8; 32]).unwrap();
        let tag = k.seal_in_place(&[0u8; 16], b"", &mut []).unwrap();
        assert_eq!(tag.to_vec(), hex_bytes("8312357a2111ea33b1b67eb2fe05fe86"));
        let mut buf = b"abc".to_vec();
        let tag = k.seal_in_place(&[0u8; 16], b"x", &mut buf).unwrap();
        let mut all = buf.clone();
        all.extend_from_slice(&tag);
        assert_eq!(all, hex_bytes("be31a3acaecde63130b5237b133395dfcb3ca7"));
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn debug_hides_the_key() {
        let k = Gcm16Key::new(&[0xAB; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "Gcm16Key(<redacted>)");
    }
}
