//! [`FileKey`]: the AES-256-GCM key of one streamed file.

use std::fmt;

use aws_lc_rs::aead;
use zeroize::Zeroize;

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::{Error, Result};

/// The AES-256-GCM key of one streamed file ([`super::DataKey::file_key`]). Lives inside an
/// aws-lc key object (cleared on drop); `Debug` shows only the type name. Nonce
/// uniqueness is the caller's duty: the streaming format derives each nonce from a
/// per-file prefix, the segment counter and the last-segment flag.
pub struct FileKey(aead::LessSafeKey);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// Wraps the derived key ([`super::DataKey::file_key`] is the only maker).
    pub(super) fn new(key: aead::LessSafeKey) -> Self {
        Self(key)
    }

    /// Encrypts `in_out` in place and returns the 128-bit tag.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                in_out,
            )
            .map_err(|_| Error::Crypto)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Authenticates and decrypts `ciphertext ‖ tag` in place; returns the plaintext
    /// (the front of `in_out`). Any failure is [`Error::DecryptionFailed`].
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8]> {
        self.0
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                in_out,
            )
            .map_err(|_| Error::DecryptionFailed)
    }

    /// Encrypts `plaintext` into `ciphertext` (out of place: `plaintext` is only read)
    /// and returns the 128-bit tag. The result is identical to
    /// [`FileKey::seal_in_place`] on a copy of `plaintext`, without making that copy:
    /// the source is read once, by the cipher. `ciphertext` must be exactly as long as
    /// `plaintext` (otherwise [`Error::Crypto`], and nothing is written).
    pub fn seal_out_of_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let mut tag = [0u8; TAG_LEN];
        self.0
            .seal_out_of_place_scatter(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                plaintext,
                ciphertext,
                &[],
                &mut tag,
            )
            .map_err(|_| Error::Crypto)?;
        Ok(tag)
    }

    /// Authenticates `ciphertext` with `tag` and decrypts it into `plaintext` (out of
    /// place: `ciphertext` is only read). `plaintext` must be exactly as long as
    /// `ciphertext`. Only an `Ok` means `plaintext` holds verified data; on any failure
    /// — wrong key, nonce, AAD or tag, a modified byte, a length mismatch — `plaintext`
    /// is wiped (all zero) before [`Error::DecryptionFailed`] is returned, so no
    /// unverified plaintext is left behind.
    pub fn open_out_of_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        plaintext: &mut [u8],
    ) -> Result<()> {
        self.0
            .open_separate_gather(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                ciphertext,
                tag,
                plaintext,
            )
            .map_err(|_| {
                // aws-lc decrypts before it compares tags: wipe what it wrote.
                plaintext.zeroize();
                Error::DecryptionFailed
            })
    }
}
