//! One DEK version's derived subkeys and the operations that use them: randomized and
//! deterministic encryption into envelopes, decryption, and blind indexes.
//!
//! Each mode has its own subkey, derived from the version's DEK with HKDF-SHA256 and a
//! distinct label, so one key is never used in two modes.

use std::fmt;

use aws_lc_rs::{aead, hkdf, hmac};
use zeroize::{Zeroize, Zeroizing};

use crate::context::Context;
use crate::envelope::{
    read::Envelope, write::encode_header_parts, Algorithm, PayloadKind, FIXED_HEADER_LEN,
    NONCE_LEN, TAG_LEN,
};
use crate::ids::{KeyVersion, Purpose};
use crate::rng::SecureRandom;
use crate::secret::SecretKey;
use crate::{Error, Result};

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

/// A decrypted payload. The buffer is zeroized on drop.
pub struct Plaintext {
    kind: PayloadKind,
    // buf[0] is the payload-kind byte; the data follows.
    buf: Zeroizing<Vec<u8>>,
}

impl Plaintext {
    /// What kind of value was encrypted.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }
    /// The plaintext bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(1..).unwrap_or_default()
    }

    fn take_data(self) -> Vec<u8> {
        let mut buf = self.buf;
        let mut data = std::mem::take(&mut *buf);
        if !data.is_empty() {
            data.remove(0); // the payload-kind byte
        }
        data
    }

    /// The plaintext as a `String`, without a copy, when it is valid UTF-8 (otherwise
    /// the bytes are wiped and decryption is reported failed). A `String` is not
    /// zeroized on drop: the caller now owns that responsibility.
    pub fn into_string(self) -> Result<String> {
        String::from_utf8(self.take_data()).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            Error::DecryptionFailed
        })
    }

    /// The plaintext bytes, still zeroized on drop, without a copy.
    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.take_data())
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plaintext({:?}, {} bytes)",
            self.kind,
            self.as_bytes().len()
        )
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
        Ok(FileKey(aead_key(&aead::AES_256_GCM, &bytes)?))
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
        Ok(Plaintext { kind, buf })
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

/// The AES-256-GCM key of one streamed file ([`DataKey::file_key`]). Lives inside an
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

/// AAD = the header bytes (nonce included) ‖ the canonical context encoding. Built on
/// the stack when it fits (the common case), so a small-field encryption allocates only
/// its output.
#[allow(clippy::large_enum_variant)] // the inline variant is the point: no allocation
enum Aad {
    Stack([u8; 256], usize),
    Heap(Vec<u8>),
}

impl Aad {
    fn new(header: &[u8], context: &Context) -> Self {
        let len = header.len() + context.encoded_len();
        if len <= 256 {
            let mut buf = [0u8; 256];
            let mut w = crate::context::SliceWriter::new(&mut buf);
            w.put(header);
            context.encode_to(&mut w);
            Aad::Stack(buf, len)
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(header);
            context.encode_into(&mut v);
            Aad::Heap(v)
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Aad::Stack(b, n) => b.get(..*n).unwrap_or_default(),
            Aad::Heap(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::read::parse;
    use crate::rng::OsRng;
    use proptest::prelude::*;

    fn key(purpose: &str, v: u32, byte: u8) -> DataKey {
        DataKey::derive(
            Purpose::new(purpose).unwrap(),
            KeyVersion::new(v).unwrap(),
            &SecretKey::from_slice(&[byte; 32]).unwrap(),
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn randomized_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600), k in "[a-z]{1,8}", v in "[a-z0-9]{0,8}") {
            let dk = key("userData", 3, 1);
            let ctx = Context::from_pairs([(k, v)]).unwrap();
            let env = dk.encrypt(PayloadKind::Bytes, &data, &ctx, &OsRng).unwrap();
            let parsed = parse(&env).unwrap();
            let pt = dk.decrypt(&parsed, &ctx).unwrap();
            prop_assert_eq!(pt.as_bytes(), &data[..]);
            prop_assert_eq!(pt.kind(), PayloadKind::Bytes);
        }

        #[test]
        fn deterministic_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dk = key("userData", 1, 2);
            let ctx = Context::from_pairs([("field", "email")]).unwrap();
            let a = dk.encrypt_deterministic(PayloadKind::Text, &data, &ctx).unwrap();
            let b = dk.encrypt_deterministic(PayloadKind::Text, &data, &ctx).unwrap();
            prop_assert_eq!(&a, &b);
            let pt = dk.decrypt(&parse(&a).unwrap(), &ctx).unwrap();
            prop_assert_eq!(pt.as_bytes(), &data[..]);
        }
    }

    #[test]
    fn batch_encryption_round_trips_with_distinct_nonces() {
        let dk = key("userData", 1, 11);
        let ctx = Context::from_pairs([("k", "v")]).unwrap();
        let items: Vec<(PayloadKind, &[u8])> = vec![
            (PayloadKind::Text, b"a"),
            (PayloadKind::Json, b"1"),
            (PayloadKind::Bytes, b""),
        ];
        let out = dk.encrypt_batch(&items, &ctx, &OsRng);
        let mut nonces = std::collections::HashSet::new();
        for ((kind, data), env) in items.iter().zip(out) {
            let env = env.unwrap();
            let parsed = parse(&env).unwrap();
            assert!(nonces.insert(parsed.header.nonce));
            let pt = dk.decrypt(&parsed, &ctx).unwrap();
            assert_eq!((pt.kind(), pt.as_bytes()), (*kind, *data));
        }
    }

    #[test]
    fn a_failing_item_is_reported_in_place_and_not_counted() {
        let dk = key("userData", 1, 12);
        let ctx = Context::new();
        let oversize = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        let items = [
            (PayloadKind::Text, &b"first"[..]),
            (PayloadKind::Bytes, &oversize[..]),
            (PayloadKind::Text, &b"third"[..]),
        ];
        let mut seen = Vec::new();
        let sealed = dk.encrypt_each(items, &ctx, &OsRng, |r| {
            seen.push(r.map(|env| dk.decrypt(&parse(env).unwrap(), &ctx).unwrap()));
        });
        assert_eq!(sealed, 2);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].as_ref().unwrap().as_bytes(), b"first");
        assert!(matches!(seen[1], Err(Error::Invalid(_))));
        assert_eq!(seen[2].as_ref().unwrap().as_bytes(), b"third");
    }

    /// Counts `fill` calls; fails them all when `broken`.
    struct CountingRng {
        fills: std::sync::atomic::AtomicUsize,
        broken: bool,
    }

    impl SecureRandom for CountingRng {
        fn fill(&self, dest: &mut [u8]) -> Result<()> {
            self.fills
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.broken {
                return Err(Error::Randomness);
            }
            OsRng.fill(dest)
        }
    }

    #[test]
    fn batch_nonces_are_fetched_in_chunks_and_never_repeat() {
        let dk = key("userData", 1, 13);
        let ctx = Context::new();
        let rng = CountingRng {
            fills: 0.into(),
            broken: false,
        };
        let items = vec![(PayloadKind::Text, &b"x"[..]); 150];
        let mut nonces = std::collections::HashSet::new();
        let sealed = dk.encrypt_each(items.iter().copied(), &ctx, &rng, |r| {
            assert!(nonces.insert(parse(r.unwrap()).unwrap().header.nonce));
        });
        assert_eq!((sealed, nonces.len()), (150, 150));
        assert_eq!(rng.fills.into_inner(), 3, "64 + 64 + 22 items");

        // Without randomness nothing is sealed, and every item says why.
        let rng = CountingRng {
            fills: 0.into(),
            broken: true,
        };
        let mut errors = 0;
        let sealed = dk.encrypt_each(items.iter().copied().take(3), &ctx, &rng, |r| {
            assert!(matches!(r, Err(Error::Randomness)));
            errors += 1;
        });
        assert_eq!((sealed, errors), (0, 3));
    }

    #[test]
    fn randomized_is_randomized_and_context_bound() {
        let dk = key("userData", 1, 3);
        let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
        let a = dk
            .encrypt(PayloadKind::Text, b"4532", &ctx, &OsRng)
            .unwrap();
        let b = dk
            .encrypt(PayloadKind::Text, b"4532", &ctx, &OsRng)
            .unwrap();
        assert_ne!(a, b);
        let other = Context::from_pairs([("recordId", "r-2")]).unwrap();
        let env = parse(&a).unwrap();
        assert_eq!(
            dk.decrypt(&env, &other).err(),
            Some(Error::DecryptionFailed)
        );
        assert_eq!(
            dk.decrypt(&env, &Context::new()).err(),
            Some(Error::DecryptionFailed)
        );
        assert!(dk.decrypt(&env, &ctx).is_ok());
    }

    #[test]
    fn deterministic_differs_across_contexts_and_values() {
        let dk = key("userData", 1, 4);
        let c1 = Context::from_pairs([("field", "email")]).unwrap();
        let c2 = Context::from_pairs([("field", "phone")]).unwrap();
        let a = dk
            .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c1)
            .unwrap();
        let b = dk
            .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c2)
            .unwrap();
        let c = dk
            .encrypt_deterministic(PayloadKind::Text, b"x@y.zz", &c1)
            .unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(dk.decrypt(&parse(&a).unwrap(), &c2).is_err());
        // Another DEK gives another ciphertext for the same input.
        let other = key("userData", 1, 5);
        assert_ne!(
            a,
            other
                .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c1)
                .unwrap()
        );
    }

    #[test]
    fn wrong_key_purpose_or_version_refused() {
        let dk = key("userData", 1, 6);
        let env = dk
            .encrypt(PayloadKind::Bytes, b"secret", &Context::new(), &OsRng)
            .unwrap();
        let parsed = parse(&env).unwrap();
        assert!(key("userData", 1, 7)
            .decrypt(&parsed, &Context::new())
            .is_err());
        assert!(key("userData", 2, 6)
            .decrypt(&parsed, &Context::new())
            .is_err());
        assert!(key("other", 1, 6)
            .decrypt(&parsed, &Context::new())
            .is_err());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let dk = key("userData", 1, 8);
        let env = dk
            .encrypt(PayloadKind::Text, b"123-45-6789", &Context::new(), &OsRng)
            .unwrap();
        for i in 0..env.len() {
            for bit in 0..8 {
                let mut t = env.clone();
                t[i] ^= 1 << bit;
                let ok = parse(&t)
                    .ok()
                    .map(|p| dk.decrypt(&p, &Context::new()).is_ok())
                    .unwrap_or(false);
                assert!(!ok, "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn blind_index_truncation_and_separation() {
        let dk = key("userData", 1, 9);
        let a = dk.blind_index("email", b"a@b.c", 32).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a, dk.blind_index("email", b"a@b.c", 32).unwrap());
        assert_ne!(a, dk.blind_index("phone", b"a@b.c", 32).unwrap());
        let odd = dk.blind_index("email", b"a@b.c", 12).unwrap();
        assert_eq!(odd.len(), 2);
        assert_eq!(odd[1] & 0x0F, 0);
        assert_eq!(odd[0], a[0]);
        assert!(dk.blind_index("email", b"x", 7).is_err());
        assert!(dk.blind_index("email", b"x", 257).is_err());
        // Another DEK version gives another index (search must try every live version).
        assert_ne!(
            key("userData", 2, 10)
                .blind_index("email", b"a@b.c", 32)
                .unwrap(),
            a
        );
    }

    #[test]
    fn plaintext_moves_out_without_copies() {
        let dk = key("userData", 1, 12);
        let env = dk
            .encrypt(PayloadKind::Text, "zoë".as_bytes(), &Context::new(), &OsRng)
            .unwrap();
        let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
        assert_eq!(pt.into_string().unwrap(), "zoë");
        let env = dk
            .encrypt(PayloadKind::Bytes, &[0xff, 0xfe], &Context::new(), &OsRng)
            .unwrap();
        let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
        assert_eq!(&pt.into_bytes()[..], &[0xff, 0xfe]);
        let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
        assert_eq!(pt.into_string(), Err(Error::DecryptionFailed), "not UTF-8");
    }

    #[test]
    fn file_keys_depend_on_salt_and_dek_and_round_trip() {
        let dk = key("documents", 1, 13);
        let (s1, s2) = ([1u8; FILE_SALT_LEN], [2u8; FILE_SALT_LEN]);
        let nonce = [7u8; NONCE_LEN];
        let mut buf = *b"segment";
        let tag = dk
            .file_key(&s1)
            .unwrap()
            .seal_in_place(nonce, b"h", &mut buf)
            .unwrap();
        let mut ct = buf.to_vec();
        ct.extend_from_slice(&tag);
        let open = |k: &FileKey, aad: &[u8]| {
            k.open_in_place(nonce, aad, &mut ct.clone())
                .map(|p| p.to_vec())
        };
        assert_eq!(open(&dk.file_key(&s1).unwrap(), b"h").unwrap(), b"segment");
        assert_eq!(
            open(&dk.file_key(&s1).unwrap(), b"x"),
            Err(Error::DecryptionFailed)
        );
        assert!(open(&dk.file_key(&s2).unwrap(), b"h").is_err());
        assert!(open(&key("documents", 1, 14).file_key(&s1).unwrap(), b"h").is_err());
        // Debug shows no key material.
        assert_eq!(format!("{:?}", dk.file_key(&s1).unwrap()), "FileKey(..)");
    }

    #[test]
    fn file_key_out_of_place_matches_in_place_and_wipes_on_failure() {
        let dk = key("documents", 1, 15);
        let fk = dk.file_key(&[3u8; FILE_SALT_LEN]).unwrap();
        let nonce = [5u8; NONCE_LEN];
        for len in [0usize, 1, 15, 16, 17, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut in_place = plain.clone();
            let tag = fk.seal_in_place(nonce, b"aad", &mut in_place).unwrap();
            let mut ct = vec![0u8; len];
            let tag2 = fk
                .seal_out_of_place(nonce, b"aad", &plain, &mut ct)
                .unwrap();
            assert_eq!((&ct, tag2), (&in_place, tag), "len {len}");
            let mut out = vec![0xEEu8; len];
            fk.open_out_of_place(nonce, b"aad", &ct, &tag, &mut out)
                .unwrap();
            assert_eq!(out, plain);
            // Failure: wrong AAD, tampered tag, tampered ciphertext — output wiped.
            let mut bad_tag = tag;
            bad_tag[0] ^= 1;
            let mut bad_ct = ct.clone();
            if let Some(b) = bad_ct.first_mut() {
                *b ^= 0x80;
            }
            for (aad, c, t) in [
                (&b"aaX"[..], &ct, &tag),
                (&b"aad"[..], &ct, &bad_tag),
                (&b"aad"[..], &bad_ct, &tag),
            ] {
                if len == 0 && c == &bad_ct && t == &tag && aad == b"aad" {
                    continue; // nothing to tamper with
                }
                let mut out = vec![0xEEu8; len];
                assert_eq!(
                    fk.open_out_of_place(nonce, aad, c, t, &mut out),
                    Err(Error::DecryptionFailed)
                );
                assert!(out.iter().all(|&b| b == 0), "len {len}: not wiped");
            }
        }
        // Length mismatches are refused; a failed open still wipes.
        let mut short = [0u8; 3];
        assert_eq!(
            fk.seal_out_of_place(nonce, b"", b"four", &mut short),
            Err(Error::Crypto)
        );
        let mut out = [0xEEu8; 3];
        assert_eq!(
            fk.open_out_of_place(nonce, b"", b"four", &[0; TAG_LEN], &mut out),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(out, [0; 3]);
    }

    #[test]
    fn filled_encryption_is_the_same_envelope_as_from_bytes() {
        let k = key("userData", 3, 7);
        let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
        let data = b"bytes written in place";
        let fill = |o: &mut Vec<u8>| {
            o.extend_from_slice(data);
            Ok(())
        };
        // Randomized: appended after what `out` held, and it decrypts.
        let mut out = b"prefix".to_vec();
        k.encrypt_filled_into(
            NonceMode::Random(&OsRng),
            PayloadKind::Bytes,
            data.len(),
            fill,
            &ctx,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..6], b"prefix");
        let pt = k.decrypt(&parse(&out[6..]).unwrap(), &ctx).unwrap();
        assert_eq!((pt.kind(), pt.as_bytes()), (PayloadKind::Bytes, &data[..]));
        // Deterministic: exactly the envelope `encrypt_deterministic` makes.
        let mut det = Vec::new();
        k.encrypt_filled_into(
            NonceMode::Deterministic,
            PayloadKind::Bytes,
            data.len(),
            fill,
            &ctx,
            &mut det,
        )
        .unwrap();
        let want = k
            .encrypt_deterministic(PayloadKind::Bytes, data, &ctx)
            .unwrap();
        assert_eq!(det, want);
    }

    #[test]
    fn a_failed_or_short_fill_leaves_the_buffer_as_it_was() {
        let k = key("userData", 1, 9);
        let ctx = Context::new();
        let mut out = b"kept".to_vec();
        let failing = |o: &mut Vec<u8>| {
            o.extend_from_slice(b"half");
            Err(Error::Invalid("base64 data"))
        };
        assert_eq!(
            k.encrypt_filled_into(
                NonceMode::Random(&OsRng),
                PayloadKind::Bytes,
                8,
                failing,
                &ctx,
                &mut out
            ),
            Err(Error::Invalid("base64 data"))
        );
        assert_eq!(out, b"kept");
        for written in [7usize, 9] {
            let wrong = |o: &mut Vec<u8>| {
                o.extend(std::iter::repeat_n(1u8, written));
                Ok(())
            };
            let r = k.encrypt_filled_into(
                NonceMode::Deterministic,
                PayloadKind::Bytes,
                8,
                wrong,
                &ctx,
                &mut out,
            );
            assert!(matches!(r, Err(Error::Invalid(_))), "{written}: {r:?}");
            assert_eq!(out, b"kept");
        }
        // The size limit holds before anything is written.
        let never = |_: &mut Vec<u8>| -> Result<()> { panic!("fill must not run") };
        let r = k.encrypt_filled_into(
            NonceMode::Random(&OsRng),
            PayloadKind::Bytes,
            MAX_PLAINTEXT_LEN + 1,
            never,
            &ctx,
            &mut out,
        );
        assert!(matches!(r, Err(Error::Invalid(_))));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dk = key("userData", 1, 0xAB);
        let s = format!("{dk:?}");
        assert_eq!(
            s,
            "DataKey { purpose: Purpose(userData), version: KeyVersion(1), .. }"
        );
    }
}
