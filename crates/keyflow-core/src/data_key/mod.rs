//! One DEK version's derived subkeys and the operations that use them: randomized and
//! deterministic encryption into envelopes, decryption, and blind indexes.
//!
//! Each mode has its own subkey, derived from the version's DEK with HKDF-SHA256 and a
//! distinct label, so one key is never used in two modes.

use std::fmt;

use aws_lc_rs::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use crate::context::Context;
use crate::envelope::{
    read::Envelope, write::encode_header_parts, Algorithm, PayloadKind, FIXED_HEADER_LEN,
    NONCE_LEN, TAG_LEN,
};
use crate::ids::{KeyVersion, Purpose};
use crate::rng::SecureRandom;
use crate::secret::SecretKey;
use crate::{Error, Result};

mod aad;
mod file_key;
mod plaintext;
#[cfg(test)]
mod tests;

use aad::Aad;
pub use file_key::FileKey;
pub use plaintext::Plaintext;

const HKDF_SALT: &[u8] = b"keyflow dek subkeys v1";
const LABEL_GCM: &[u8] = b"keyflow/v1/aes-256-gcm";
const LABEL_SIV: &[u8] = b"keyflow/v1/aes-256-gcm-siv";
const LABEL_DET_NONCE: &[u8] = b"keyflow/v1/deterministic-nonce";
const LABEL_BLIND: &[u8] = b"keyflow/v1/blind-index";
const LABEL_FILE: &[u8] = b"keyflow/v1/file-stream";
const FILE_KEY_INFO: &[u8] = b"keyflow/v1/file-stream/file-key";
const BLIND_DOMAIN: &[u8] = b"keyflow blind index v1";

/// Largest plaintext one envelope may carry (64 MiB); larger data goes through the
/// streaming file format.
pub const MAX_PLAINTEXT_LEN: usize = 64 << 20;

/// Length of the random salt from which each streamed file's key is derived.
pub const FILE_SALT_LEN: usize = 32;

/// How the nonce of an envelope is chosen.
#[derive(Clone, Copy)]
pub enum NonceMode<'a> {
    /// Randomized encryption (AES-256-GCM): a fresh nonce from this source.
    Random(&'a dyn SecureRandom),
    /// Deterministic encryption (AES-256-GCM-SIV), as [`DataKey::encrypt_deterministic`].
    Deterministic,
}

/// The subkeys of one DEK version, ready to use.
///
/// The DEK itself is not kept: only the derived subkeys, inside aws-lc key objects,
/// which clear their key schedules when dropped. `Debug` shows purpose and version only.
pub struct DataKey {
    purpose: Purpose,
    version: KeyVersion,
    gcm: aead::LessSafeKey,
    siv: aead::LessSafeKey,
    det_nonce: hmac::Key,
    blind: hmac::Key,
    // The streaming-file subkey, kept as an HKDF PRK (zeroized by aws-lc-rs on drop).
    file: hkdf::Prk,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn derive(prk: &hkdf::Prk, label: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[label], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| Error::Crypto)?;
    Ok(out)
}

fn aead_key(alg: &'static aead::Algorithm, key: &[u8; 32]) -> Result<aead::LessSafeKey> {
    aead::UnboundKey::new(alg, key)
        .map(aead::LessSafeKey::new)
        .map_err(|_| Error::Crypto)
}

impl DataKey {
    /// Derives the subkeys of DEK version `version` of `purpose`.
    pub fn derive(purpose: Purpose, version: KeyVersion, dek: &SecretKey) -> Result<Self> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(dek.expose());
        let gcm = aead_key(&aead::AES_256_GCM, &*derive(&prk, LABEL_GCM)?)?;
        let siv = aead_key(&aead::AES_256_GCM_SIV, &*derive(&prk, LABEL_SIV)?)?;
        let det_nonce = hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, LABEL_DET_NONCE)?[..]);
        let blind = hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, LABEL_BLIND)?[..]);
        let file = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &derive(&prk, LABEL_FILE)?[..]);
        Ok(Self {
            purpose,
            version,
            gcm,
            siv,
            det_nonce,
            blind,
            file,
        })
    }

    /// The AES-256-GCM key of one streamed file: HKDF-SHA256-Expand of this version's
    /// file subkey (label `keyflow/v1/file-stream`) with info
    /// `"keyflow/v1/file-stream/file-key" ‖ salt`. A fresh random salt per file gives
    /// every file its own key (docs/file-format.md).
    pub fn file_key(&self, salt: &[u8; FILE_SALT_LEN]) -> Result<FileKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        self.file
            .expand(&[FILE_KEY_INFO, &salt[..]], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes[..]))
            .map_err(|_| Error::Crypto)?;
        Ok(FileKey::new(aead_key(&aead::AES_256_GCM, &bytes)?))
    }

    /// The purpose this key belongs to.
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    /// The key version.
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// Randomized encryption (AES-256-GCM, random 96-bit nonce) into a binary envelope.
    pub fn encrypt(
        &self,
        kind: PayloadKind,
        plaintext: &[u8],
        context: &Context,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>> {
        let nonce = rng.nonce()?;
        self.seal(Algorithm::Aes256Gcm, nonce, kind, plaintext, context)
    }

    /// Randomized encryption of many values with one context. One result per item, in
    /// order.
    pub fn encrypt_batch(
        &self,
        items: &[(PayloadKind, &[u8])],
        context: &Context,
        rng: &dyn SecureRandom,
    ) -> Vec<Result<Vec<u8>>> {
        let mut out = Vec::with_capacity(items.len());
        self.encrypt_each(items.iter().copied(), context, rng, |r| {
            out.push(r.map(<[u8]>::to_vec));
        });
        out
    }

    /// Randomized encryption of a sequence of values with one context: each item's
    /// envelope (or its error) is handed to `emit`, in order, from one reused buffer —
    /// e.g. to write the text form straight into a response. Returns how many items
    /// were sealed (each one is a use of the key's nonce budget).
    pub fn encrypt_each<'a>(
        &self,
        items: impl IntoIterator<Item = (PayloadKind, &'a [u8])>,
        context: &Context,
        rng: &dyn SecureRandom,
        mut emit: impl FnMut(Result<&[u8]>),
    ) -> u64 {
        // Nonces come from the OS in chunks of up to 64: one `getrandom` per chunk rather
        // than a pool lookup per item, whose fork check (`getpid`) is itself a syscall.
        const CHUNK: usize = 64;
        let items = items.into_iter();
        let (low, high) = items.size_hint();
        let chunk = high.unwrap_or(low).clamp(1, CHUNK);
        let mut nonces = [0u8; CHUNK * NONCE_LEN];
        let mut next = chunk;
        let mut buf = Vec::new();
        let mut sealed = 0;
        for (kind, data) in items {
            buf.clear();
            if next == chunk {
                if let Err(e) = rng.fill(&mut nonces[..chunk * NONCE_LEN]) {
                    emit(Err(e));
                    continue;
                }
                next = 0;
            }
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&nonces[next * NONCE_LEN..(next + 1) * NONCE_LEN]);
            next += 1;
            let r = self.seal_into(Algorithm::Aes256Gcm, nonce, kind, data, context, &mut buf);
            match r {
                Ok(()) => {
                    sealed += 1;
                    emit(Ok(&buf));
                }
                Err(e) => emit(Err(e)),
            }
        }
        sealed
    }

    /// Deterministic encryption (AES-256-GCM-SIV): the same plaintext, key version and
    /// context always give the same envelope; another context gives another one.
    pub fn encrypt_deterministic(
        &self,
        kind: PayloadKind,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>> {
        let alg = Algorithm::Aes256GcmSivDeterministic;
        let nonce = self.deterministic_nonce(context)?;
        self.seal(alg, nonce, kind, plaintext, context)
    }

    /// Encrypts a plaintext that `fill` writes straight into the envelope, appended to
    /// `out`: `fill` must append exactly `len` bytes to the buffer it is given. A large
    /// payload that arrives encoded (base64 in JSON) is decoded in place, with no copy
    /// of its own. Randomized, or deterministic as [`Self::encrypt_deterministic`].
    /// When `fill` fails, or appends another length, `out` is left as it was.
    pub fn encrypt_filled_into(
        &self,
        mode: NonceMode<'_>,
        kind: PayloadKind,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        context: &Context,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let (alg, nonce) = match mode {
            NonceMode::Deterministic => (
                Algorithm::Aes256GcmSivDeterministic,
                self.deterministic_nonce(context)?,
            ),
            NonceMode::Random(rng) => (Algorithm::Aes256Gcm, rng.nonce()?),
        };
        let start = out.len();
        let r = self.seal_into_with(alg, nonce, kind, len, context, out, fill);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    /// The nonce of deterministic encryption under `context`.
    fn deterministic_nonce(&self, context: &Context) -> Result<[u8; NONCE_LEN]> {
        let alg = Algorithm::Aes256GcmSivDeterministic;
        // The nonce is derived from the key and everything the caller binds — not from
        // the plaintext: GCM-SIV is nonce-misuse resistant, so a repeated nonce leaks
        // only equality of plaintexts, which is exactly what this mode is for.
        let mut msg = Vec::with_capacity(16 + self.purpose.as_str().len() + context.encoded_len());
        msg.push(alg.id());
        msg.push(self.purpose.as_str().len() as u8);
        msg.extend_from_slice(self.purpose.as_str().as_bytes());
        msg.extend_from_slice(&self.version.get().to_be_bytes());
        context.encode_into(&mut msg);
        let tag = hmac::sign(&self.det_nonce, &msg);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(tag.as_ref().get(..NONCE_LEN).ok_or(Error::Crypto)?);
        Ok(nonce)
    }

    /// Encrypts with a caller-chosen nonce. Only for test vectors: reusing a nonce with
    /// AES-GCM destroys confidentiality and authenticity.
    #[doc(hidden)]
    pub fn hazmat_encrypt_with_nonce(
        &self,
        algorithm: Algorithm,
        nonce: [u8; NONCE_LEN],
        kind: PayloadKind,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>> {
        self.seal(algorithm, nonce, kind, plaintext, context)
    }

    fn key_for(&self, alg: Algorithm) -> &aead::LessSafeKey {
        match alg {
            Algorithm::Aes256Gcm => &self.gcm,
            Algorithm::Aes256GcmSivDeterministic => &self.siv,
        }
    }

    fn seal(
        &self,
        algorithm: Algorithm,
        nonce: [u8; NONCE_LEN],
        kind: PayloadKind,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(algorithm, nonce, kind, plaintext, context, &mut out)?;
        Ok(out)
    }

    /// Appends the envelope to `out` (expected empty).
    fn seal_into(
        &self,
        algorithm: Algorithm,
        nonce: [u8; NONCE_LEN],
        kind: PayloadKind,
        plaintext: &[u8],
        context: &Context,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.seal_into_with(algorithm, nonce, kind, plaintext.len(), context, out, |o| {
            o.extend_from_slice(plaintext);
            Ok(())
        })
    }

    /// Appends the envelope to `out` (expected empty, apart from what precedes the
    /// envelope); `fill` appends the `len` plaintext bytes in place.
    #[allow(clippy::too_many_arguments)]
    fn seal_into_with(
        &self,
        algorithm: Algorithm,
        nonce: [u8; NONCE_LEN],
        kind: PayloadKind,
        len: usize,
        context: &Context,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        if len > MAX_PLAINTEXT_LEN {
            return Err(Error::Invalid(
                "plaintext (over 64 MiB; use file encryption)",
            ));
        }
        let start = out.len();
        let purpose = self.purpose.as_str().as_bytes();
        let hlen = start + FIXED_HEADER_LEN + purpose.len();
        out.reserve(FIXED_HEADER_LEN + purpose.len() + 1 + len + TAG_LEN);
        encode_header_parts(algorithm, purpose, self.version, &nonce, out);
        let aad = Aad::new(&out[start..], context);
        out.push(kind.byte());
        fill(out)?;
        if out.len() != hlen + 1 + len {
            return Err(Error::Invalid("plaintext (not the length announced)"));
        }
        let body = out.get_mut(hlen..).ok_or(Error::Crypto)?;
        let tag = self
            .key_for(algorithm)
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                body,
            )
            .map_err(|_| Error::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Decrypts a parsed envelope. Every failure — another purpose or version than this
    /// key's, a wrong context, a modified byte — is [`Error::DecryptionFailed`].
    pub fn decrypt(&self, env: &Envelope<'_>, context: &Context) -> Result<Plaintext> {
        if env.header.purpose != self.purpose || env.header.key_version != self.version {
            return Err(Error::DecryptionFailed);
        }
        let aad = Aad::new(env.header_bytes, context);
        let mut buf = Zeroizing::new(env.ciphertext_and_tag.to_vec());
        let len = self
            .key_for(env.header.algorithm)
            .open_in_place(
                aead::Nonce::assume_unique_for_key(env.header.nonce),
                aead::Aad::from(aad.as_slice()),
                &mut buf[..],
            )
            .map_err(|_| Error::DecryptionFailed)?
            .len();
        buf.truncate(len);
        let kind = buf
            .first()
            .copied()
            .and_then(PayloadKind::from_byte)
            .ok_or(Error::DecryptionFailed)?;
        Ok(Plaintext::new(kind, buf))
    }

    /// Blind index of `value` for `field`: HMAC-SHA256 under the blind-index subkey,
    /// truncated to `bits` (8..=256; trailing bits of the last byte are zero).
    pub fn blind_index(&self, field: &str, value: &[u8], bits: u16) -> Result<Vec<u8>> {
        check_blind_bits(bits)?;
        let mut ctx = hmac::Context::with_key(&self.blind);
        ctx.update(BLIND_DOMAIN);
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field.as_bytes());
        ctx.update(value);
        let tag = ctx.sign();
        let nbytes = usize::from(bits).div_ceil(8);
        let mut out = tag.as_ref().get(..nbytes).ok_or(Error::Crypto)?.to_vec();
        let spare = (nbytes * 8) as u16 - bits;
        if let Some(last) = out.last_mut() {
            *last &= 0xFFu8 << spare;
        }
        Ok(out)
    }
}

/// Refuses a blind-index length outside 8..=256 bits (callers check before choosing a
/// key, so a bad request never creates one).
pub fn check_blind_bits(bits: u16) -> Result<()> {
    if (8..=256).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Invalid("blind index bits (8..=256)"))
    }
}
