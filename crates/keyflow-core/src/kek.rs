//! The key-encryption key (KEK): the password-protected KEK file format and the
//! wrapping of DEK versions under the KEK.
//!
//! The file is JSON so an operator can read its parameters:
//!
//! ```json
//! {"format":"keyflow-kek","version":1,"kekId":"…32 hex…",
//!  "kdf":{"algorithm":"pbkdf2-hmac-sha256","iterations":600000,"salt":"…base64…"},
//!  "cipher":"aes-256-gcm","nonce":"…base64…","wrappedKey":"…base64 (key ‖ tag)…"}
//! ```
//!
//! The KDF parameters travel with the file, so raising the cost later never locks
//! anyone out; they, the id and the format version are bound into the AAD, so editing
//! any of them makes the file fail to unlock.

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::{aead, hkdf, hmac, pbkdf2};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::ids::{KeyVersion, Purpose};
use crate::rng::SecureRandom;
use crate::secret::{SecretKey, KEY_LEN};
use crate::{Error, Result};

const FILE_FORMAT: &str = "keyflow-kek";
const FILE_VERSION: u32 = 1;
const KDF_PBKDF2: &str = "pbkdf2-hmac-sha256";
const CIPHER: &str = "aes-256-gcm";
const FILE_AAD_DOMAIN: &[u8] = b"keyflow kek file v1";
const DEK_AAD_DOMAIN: &[u8] = b"keyflow dek wrap v1";

/// PBKDF2-HMAC-SHA256 iterations for new KEK files (OWASP 2023).
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;
/// Fewest iterations a KEK file may declare (lower is refused when creating or opening).
pub const MIN_PBKDF2_ITERATIONS: u32 = 100_000;
/// Most iterations a KEK file may declare (a bound, so a hostile file cannot hang us).
pub const MAX_PBKDF2_ITERATIONS: u32 = 50_000_000;
const SALT_LEN: usize = 16;
/// Length of a wrapped DEK: nonce ‖ encrypted key ‖ tag.
pub const WRAPPED_DEK_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// KDF settings for a new KEK file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// PBKDF2-HMAC-SHA256 iterations.
    pub iterations: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_PBKDF2_ITERATIONS,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KdfSection {
    algorithm: String,
    iterations: u32,
    salt: String,
}

/// A parsed KEK file (public data only: the KEK inside is still encrypted).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KekFile {
    format: String,
    version: u32,
    kek_id: String,
    kdf: KdfSection,
    cipher: String,
    nonce: String,
    wrapped_key: String,
}

/// The unlocked KEK. `Debug` shows its id only.
pub struct Kek {
    id: String,
    material: SecretKey,
    key: aead::LessSafeKey,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn check_iterations(iterations: u32) -> Result<NonZeroU32> {
    if !(MIN_PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
        return Err(Error::Invalid(
            "KEK file KDF iterations (100,000..=50,000,000)",
        ));
    }
    NonZeroU32::new(iterations).ok_or(Error::Invalid("KEK file KDF iterations"))
}

fn password_key(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Result<aead::LessSafeKey> {
    let mut derived = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut derived[..],
    );
    aead::UnboundKey::new(&aead::AES_256_GCM, &derived[..])
        .map(aead::LessSafeKey::new)
        .map_err(|_| Error::Crypto)
}

impl KekFile {
    /// Generates a new random KEK and its file, protected by `password`.
    pub fn create(
        password: &[u8],
        params: KdfParams,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Kek)> {
        let mut id = [0u8; 16];
        rng.fill(&mut id)?;
        let material = SecretKey::generate(rng)?;
        let kek = Kek::new(crate::to_hex(&id), material)?;
        let file = Self::seal(&kek, password, params, rng)?;
        Ok((file, kek))
    }

    /// Wraps an existing KEK under `password` (new salt and nonce): used by
    /// `create` and by a password change.
    pub fn seal(
        kek: &Kek,
        password: &[u8],
        params: KdfParams,
        rng: &dyn SecureRandom,
    ) -> Result<Self> {
        let iterations = check_iterations(params.iterations)?;
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        let mut file = KekFile {
            format: FILE_FORMAT.into(),
            version: FILE_VERSION,
            kek_id: kek.id.clone(),
            kdf: KdfSection {
                algorithm: KDF_PBKDF2.into(),
                iterations: iterations.get(),
                salt: B64.encode(salt),
            },
            cipher: CIPHER.into(),
            nonce: B64.encode(nonce),
            wrapped_key: String::new(),
        };
        let key = password_key(password, &salt, iterations)?;
        let mut buf = kek.material.expose().to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(file.aad()),
                &mut buf,
            )
            .map_err(|_| Error::Crypto)?;
        buf.extend_from_slice(tag.as_ref());
        file.wrapped_key = B64.encode(&buf);
        Ok(file)
    }

    /// Parses a KEK file's bytes. Structural problems name the file, never its content.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let file: KekFile = serde_json::from_slice(bytes)
            .map_err(|_| Error::Invalid("KEK file (not a KeyFlow KEK file)"))?;
        if file.format != FILE_FORMAT {
            return Err(Error::Invalid("KEK file (not a KeyFlow KEK file)"));
        }
        if file.version != FILE_VERSION {
            return Err(Error::Invalid("KEK file (unsupported format version)"));
        }
        if file.kdf.algorithm != KDF_PBKDF2 || file.cipher != CIPHER {
            return Err(Error::Invalid("KEK file (unsupported KDF or cipher)"));
        }
        check_iterations(file.kdf.iterations)?;
        Ok(file)
    }

    /// The file's bytes (pretty JSON, trailing newline).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).map_err(|_| Error::Crypto)?;
        v.push(b'\n');
        Ok(v)
    }

    /// The KEK's id (not secret; the keystore records it to detect a mismatched KEK).
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// PBKDF2 iterations this file uses.
    pub fn iterations(&self) -> u32 {
        self.kdf.iterations
    }

    /// Unlocks the KEK. A wrong password or an edited file is [`Error::DecryptionFailed`].
    pub fn unlock(&self, password: &[u8]) -> Result<Kek> {
        let iterations =
            check_iterations(self.kdf.iterations).map_err(|_| Error::DecryptionFailed)?;
        let salt = B64
            .decode(&self.kdf.salt)
            .map_err(|_| Error::DecryptionFailed)?;
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(Error::DecryptionFailed)?;
        let mut buf = Zeroizing::new(
            B64.decode(&self.wrapped_key)
                .map_err(|_| Error::DecryptionFailed)?,
        );
        if buf.len() != KEY_LEN + TAG_LEN || salt.len() < SALT_LEN {
            return Err(Error::DecryptionFailed);
        }
        let key = password_key(password, &salt, iterations)?;
        let material = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(self.aad()),
                &mut buf[..],
            )
            .map_err(|_| Error::DecryptionFailed)?;
        Kek::new(self.kek_id.clone(), SecretKey::from_slice(material)?)
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        aad.extend_from_slice(FILE_AAD_DOMAIN);
        for part in [
            &self.format,
            &self.kek_id,
            &self.kdf.algorithm,
            &self.kdf.salt,
            &self.cipher,
        ] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.extend_from_slice(&self.kdf.iterations.to_be_bytes());
        aad
    }
}

fn dek_aad(purpose: &Purpose, version: KeyVersion) -> Vec<u8> {
    let p = purpose.as_str().as_bytes();
    let mut aad = Vec::with_capacity(DEK_AAD_DOMAIN.len() + 1 + p.len() + 4);
    aad.extend_from_slice(DEK_AAD_DOMAIN);
    aad.push(p.len() as u8);
    aad.extend_from_slice(p);
    aad.extend_from_slice(&version.get().to_be_bytes());
    aad
}

impl Kek {
    fn new(id: String, material: SecretKey) -> Result<Self> {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, material.expose())
            .map(aead::LessSafeKey::new)
            .map_err(|_| Error::Crypto)?;
        Ok(Self { id, material, key })
    }

    /// Generates a fresh KEK with a fresh id (for KEK rotation).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self> {
        let mut id = [0u8; 16];
        rng.fill(&mut id)?;
        Self::new(crate::to_hex(&id), SecretKey::generate(rng)?)
    }

    /// The KEK's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a DEK version: nonce ‖ AES-256-GCM(KEK, dek, AAD = purpose ‖ version) ‖ tag.
    pub fn wrap_dek(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        dek: &SecretKey,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>> {
        let nonce = rng.nonce()?;
        let mut out = Vec::with_capacity(WRAPPED_DEK_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(dek.expose());
        let body = out.get_mut(NONCE_LEN..).ok_or(Error::Crypto)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(dek_aad(purpose, version)),
                body,
            )
            .map_err(|_| Error::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Unwraps a DEK version; anything wrong (another purpose/version, another KEK,
    /// a modified byte) is [`Error::DecryptionFailed`].
    pub fn unwrap_dek(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        wrapped: &[u8],
    ) -> Result<SecretKey> {
        if wrapped.len() != WRAPPED_DEK_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::DecryptionFailed)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let dek = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(dek_aad(purpose, version)),
                &mut buf[..],
            )
            .map_err(|_| Error::DecryptionFailed)?;
        SecretKey::from_slice(dek)
    }

    /// Constant-time comparison of two KEKs' material.
    pub fn same_material(&self, other: &Kek) -> bool {
        self.material.ct_eq(&other.material)
    }

    /// An HMAC-SHA256 key derived from the KEK for one use named by `label` (HKDF-SHA256,
    /// `label` as info), e.g. the audit chain's. Distinct labels give independent keys;
    /// the KEK itself never signs anything.
    pub fn derive_mac_key(&self, label: &[u8]) -> Result<MacKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, MAC_KEY_SALT).extract(self.material.expose());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        prk.expand(&[label], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out[..]))
            .map_err(|_| Error::Crypto)?;
        Ok(MacKey(hmac::Key::new(hmac::HMAC_SHA256, &out[..])))
    }
}

const MAC_KEY_SALT: &[u8] = b"keyflow kek mac keys v1";

/// An HMAC-SHA256 key derived from a KEK ([`Kek::derive_mac_key`]). `Debug` shows no
/// key bytes; verification is constant time.
pub struct MacKey(hmac::Key);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is the HMAC of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.sign(parts);
        expected.ct_eq(tag).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::OsRng;

    const FAST: KdfParams = KdfParams {
        iterations: MIN_PBKDF2_ITERATIONS,
    };

    #[test]
    fn create_unlock_and_wrong_password() {
        let (file, kek) = KekFile::create(b"correct horse battery staple", FAST, &OsRng).unwrap();
        let bytes = file.to_bytes().unwrap();
        let parsed = KekFile::parse(&bytes).unwrap();
        assert_eq!(parsed, file);
        let again = parsed.unlock(b"correct horse battery staple").unwrap();
        assert!(again.same_material(&kek));
        assert_eq!(again.id(), kek.id());
        assert_eq!(parsed.unlock(b"wrong").err(), Some(Error::DecryptionFailed));
    }

    #[test]
    fn edited_parameters_fail_to_unlock() {
        let (file, _) = KekFile::create(b"pw-pw-pw-pw-pw-pw", FAST, &OsRng).unwrap();
        let mut edited = file.clone();
        edited.kek_id = "00".repeat(16);
        assert!(edited.unlock(b"pw-pw-pw-pw-pw-pw").is_err());
        let mut edited = file.clone();
        edited.kdf.iterations += 1;
        assert!(edited.unlock(b"pw-pw-pw-pw-pw-pw").is_err());
    }

    #[test]
    fn parse_refuses_foreign_and_weak_files() {
        assert!(KekFile::parse(b"not json").is_err());
        assert!(KekFile::parse(b"{}").is_err());
        let (file, _) = KekFile::create(b"pw", FAST, &OsRng).unwrap();
        let mut weak = file.clone();
        weak.kdf.iterations = 1000;
        assert!(KekFile::parse(&weak.to_bytes().unwrap()).is_err());
        let mut v2 = file.clone();
        v2.version = 2;
        assert!(KekFile::parse(&v2.to_bytes().unwrap()).is_err());
        assert!(KekFile::create(b"pw", KdfParams { iterations: 10 }, &OsRng).is_err());
    }

    #[test]
    fn dek_wrap_is_bound_to_purpose_and_version() {
        let kek = Kek::generate(&OsRng).unwrap();
        let p = Purpose::new("userData").unwrap();
        let v1 = KeyVersion::FIRST;
        let dek = SecretKey::generate(&OsRng).unwrap();
        let w = kek.wrap_dek(&p, v1, &dek, &OsRng).unwrap();
        assert_eq!(w.len(), WRAPPED_DEK_LEN);
        assert!(kek.unwrap_dek(&p, v1, &w).unwrap().ct_eq(&dek));
        assert!(kek.unwrap_dek(&p, v1.next().unwrap(), &w).is_err());
        assert!(kek
            .unwrap_dek(&Purpose::new("other").unwrap(), v1, &w)
            .is_err());
        assert!(Kek::generate(&OsRng)
            .unwrap()
            .unwrap_dek(&p, v1, &w)
            .is_err());
        let mut t = w.clone();
        t[20] ^= 1;
        assert!(kek.unwrap_dek(&p, v1, &t).is_err());
        assert!(kek.unwrap_dek(&p, v1, &w[..59]).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let (file, kek) = KekFile::create(b"pw", FAST, &OsRng).unwrap();
        let s = format!("{kek:?}");
        assert!(s.starts_with("Kek { id: ") && s.ends_with(", .. }"), "{s}");
        // The file's Debug shows the wrapped (encrypted) key only, never the KEK.
        let material = kek.material.expose();
        let file_debug = format!("{file:?}");
        assert!(
            !file_debug.contains(&crate::to_hex(material)),
            "{file_debug}"
        );
        assert!(!file_debug.contains(&B64.encode(material)), "{file_debug}");
        assert!(!s.contains(&crate::to_hex(material)), "{s}");
    }
}
