//! The file format itself, without I/O: header encoding and parsing, metadata, nonces,
//! segment sealing and opening, and the length arithmetic. Specification:
//! `docs/file-format.md`.
//!
//! ```text
//! header (all integers big-endian)
//! off    size  field
//! 0      8     magic 89 4B 46 53 0D 0A 1A 0A  ("\x89KFS\r\n\x1a\n")
//! 8      1     format version = 0x01
//! 9      1     purpose length L (1..=64)
//! 10     L     purpose (ASCII)
//! 10+L   4     key version (≥ 1)
//! 14+L   4     segment size S (plaintext bytes per segment, 16..=1 MiB; writers use 64 KiB)
//! 18+L   32    salt
//! 50+L   7     nonce prefix
//! 57+L   2     M = length of the sealed metadata (tag included)
//! 59+L   M     sealed metadata: AES-256-GCM, nonce = prefix ‖ 00000000 ‖ 02,
//!              AAD = header bytes 0 .. 59+L
//! then segments i = 0 .. n-1: ciphertext ‖ 16-byte tag, S plaintext bytes each except
//! the last (1..=S bytes; 0 only when the whole file is empty), nonce = prefix ‖ u32 i ‖
//! (01 for the last segment, else 00), AAD = SHA-256(whole header).
//! ```

use aws_lc_rs::digest;
use keyflow_core::data_key::{FileKey, FILE_SALT_LEN};
use keyflow_core::envelope::{NONCE_LEN, TAG_LEN};
use keyflow_core::ids::MAX_PURPOSE_LEN;
use keyflow_core::{DataKey, KeyVersion, Purpose, SecureRandom};

use crate::error::{Result, StreamError};

/// The file magic: `\x89KFS\r\n\x1a\n` (the high byte catches 7-bit channels, CR LF
/// and ^Z catch text-mode conversions, as in PNG).
pub const MAGIC: [u8; 8] = [0x89, b'K', b'F', b'S', 0x0D, 0x0A, 0x1A, 0x0A];
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 0x01;
/// Plaintext bytes per segment written by default (64 KiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment size a reader accepts.
pub const MIN_SEGMENT_SIZE: u32 = 16;
/// Largest segment size a reader accepts (bounds a reader's memory).
pub const MAX_SEGMENT_SIZE: u32 = 1 << 20;
/// Length of the random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of each segment's authentication tag.
pub const SEGMENT_TAG_LEN: usize = TAG_LEN;
/// Longest file name in the metadata, bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest MIME type in the metadata.
pub const MAX_MIME_LEN: usize = 255;
/// Most segments one file may hold (the counter is 32 bits).
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// Header bytes before the purpose: magic, version, purpose length.
pub const HEADER_PREFIX_LEN: usize = 8 + 1 + 1;
/// Header bytes after the purpose and before the sealed metadata.
const HEADER_FIXED_TAIL: usize = 4 + 4 + FILE_SALT_LEN + NONCE_PREFIX_LEN + 2;
const META_FLAG_SIZE: u8 = 0x01;
const META_MIN_PLAIN: usize = 1 + 2 + 2;
const META_MAX_PLAIN: usize = 1 + 8 + 2 + MAX_NAME_LEN + 2 + MAX_MIME_LEN;
const NONCE_FLAG_MIDDLE: u8 = 0x00;
const NONCE_FLAG_LAST: u8 = 0x01;
const NONCE_FLAG_METADATA: u8 = 0x02;

/// What the file says about its content, encrypted and authenticated in the header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The original file name (any UTF-8 up to 1024 bytes; never used as a path by
    /// KeyFlow).
    pub name: Option<String>,
    /// The MIME type (printable ASCII, up to 255 bytes).
    pub mime_type: Option<String>,
    /// The plaintext size, when it was known before encryption began (a file, not a
    /// pipe). Readers check it against the data at the end.
    pub size: Option<u64>,
}

impl Metadata {
    fn validate(&self) -> Result<()> {
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(StreamError::Invalid("file name (1..=1024 bytes)"));
            }
        }
        if let Some(mime) = &self.mime_type {
            if mime.is_empty()
                || mime.len() > MAX_MIME_LEN
                || !mime.bytes().all(|b| (0x20..=0x7e).contains(&b))
            {
                return Err(StreamError::Invalid(
                    "MIME type (1..=255 printable ASCII characters)",
                ));
            }
        }
        Ok(())
    }

    /// The canonical plaintext encoding: flags, [size], name, MIME type.
    fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let name = self.name.as_deref().unwrap_or("").as_bytes();
        let mime = self.mime_type.as_deref().unwrap_or("").as_bytes();
        let mut out = Vec::with_capacity(META_MAX_PLAIN + TAG_LEN);
        match self.size {
            Some(size) => {
                out.push(META_FLAG_SIZE);
                out.extend_from_slice(&size.to_be_bytes());
            }
            None => out.push(0),
        }
        for field in [name, mime] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        Ok(out)
    }

    /// Parses the canonical encoding; anything else (after a valid tag) is refused.
    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || StreamError::DecryptionFailed;
        let mut r = Cursor(bytes);
        let flags = r.u8().ok_or_else(bad)?;
        let size = match flags {
            0 => None,
            META_FLAG_SIZE => Some(u64::from_be_bytes(r.array().ok_or_else(bad)?)),
            _ => return Err(bad()),
        };
        let mut text = || -> Result<Option<String>> {
            let len = usize::from(u16::from_be_bytes(r.array().ok_or_else(bad)?));
            let raw = r.take(len).ok_or_else(bad)?;
            let s = std::str::from_utf8(raw).map_err(|_| bad())?;
            Ok((!s.is_empty()).then(|| s.to_owned()))
        };
        let name = text()?;
        let mime_type = text()?;
        if !r.0.is_empty() {
            return Err(bad());
        }
        let meta = Metadata {
            name,
            mime_type,
            size,
        };
        meta.validate().map_err(|_| bad())?;
        Ok(meta)
    }
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

/// How long a header is, judged from its first bytes ([`header_len`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderLen {
    /// Not known yet: read until at least this many bytes are available, then ask again.
    NeedAtLeast(usize),
    /// The whole header is exactly this many bytes.
    Exactly(usize),
}

/// Tells a reader how many bytes the header takes, from the bytes it has so far
/// (checking magic, version and lengths on the way). Start with
/// [`HEADER_PREFIX_LEN`] bytes.
pub fn header_len(bytes: &[u8]) -> Result<HeaderLen> {
    let mut r = Cursor(bytes);
    let (Some(magic), Some(version), Some(plen)) = (r.take(8), r.u8(), r.u8()) else {
        // Check what is there already, so a non-KeyFlow input fails early.
        if !MAGIC.starts_with(bytes.get(..bytes.len().min(8)).unwrap_or_default()) {
            return Err(StreamError::InvalidHeader);
        }
        return Ok(HeaderLen::NeedAtLeast(HEADER_PREFIX_LEN));
    };
    if magic != MAGIC || version != FORMAT_VERSION {
        return Err(StreamError::InvalidHeader);
    }
    let plen = usize::from(plen);
    if plen == 0 || plen > MAX_PURPOSE_LEN {
        return Err(StreamError::InvalidHeader);
    }
    let before_meta = HEADER_PREFIX_LEN + plen + HEADER_FIXED_TAIL;
    let Some(mlen) = bytes.get(before_meta - 2..before_meta) else {
        return Ok(HeaderLen::NeedAtLeast(before_meta));
    };
    let mlen = usize::from(u16::from_be_bytes([mlen[0], mlen[1]]));
    if !(META_MIN_PLAIN + TAG_LEN..=META_MAX_PLAIN + TAG_LEN).contains(&mlen) {
        return Err(StreamError::InvalidHeader);
    }
    Ok(HeaderLen::Exactly(before_meta + mlen))
}

/// A header parsed for structure but not yet authenticated: it names the key
/// (purpose and version) needed to [`open`](ParsedHeader::open) it.
#[derive(Clone)]
pub struct ParsedHeader {
    purpose: Purpose,
    key_version: KeyVersion,
    segment_size: u32,
    salt: [u8; FILE_SALT_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Offset of the sealed metadata in `bytes`.
    meta_at: usize,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for ParsedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedHeader")
            .field("purpose", &self.purpose)
            .field("key_version", &self.key_version)
            .field("segment_size", &self.segment_size)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl ParsedHeader {
    /// Parses exactly one whole header (see [`header_len`]); every length is checked
    /// before slicing, and trailing bytes are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = || StreamError::InvalidHeader;
        if header_len(bytes)? != HeaderLen::Exactly(bytes.len()) {
            return Err(bad());
        }
        let mut r = Cursor(bytes);
        r.take(HEADER_PREFIX_LEN - 1).ok_or_else(bad)?;
        let plen = usize::from(r.u8().ok_or_else(bad)?);
        let purpose = std::str::from_utf8(r.take(plen).ok_or_else(bad)?)
            .ok()
            .and_then(|p| Purpose::new(p).ok())
            .ok_or_else(bad)?;
        let key_version =
            KeyVersion::new(u32::from_be_bytes(r.array().ok_or_else(bad)?)).map_err(|_| bad())?;
        let segment_size = u32::from_be_bytes(r.array().ok_or_else(bad)?);
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(bad());
        }
        let salt = r.array().ok_or_else(bad)?;
        let nonce_prefix = r.array().ok_or_else(bad)?;
        r.take(2).ok_or_else(bad)?;
        Ok(Self {
            purpose,
            key_version,
            segment_size,
            salt,
            nonce_prefix,
            meta_at: bytes.len() - r.0.len(),
            bytes: bytes.to_vec(),
        })
    }

    /// The purpose whose key encrypted the file (not yet authenticated).
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    /// The key version that encrypted the file (not yet authenticated).
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    /// Length of the header in bytes (where the first segment starts).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a header has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Authenticates the header with `key` — the version named by the header — and
    /// decrypts the metadata. A wrong key or any modified header byte is
    /// [`StreamError::DecryptionFailed`].
    pub fn open(&self, key: &DataKey) -> Result<Opener> {
        if *key.purpose() != self.purpose || key.version() != self.key_version {
            return Err(StreamError::DecryptionFailed);
        }
        let file_key = key.file_key(&self.salt)?;
        let (aad, sealed) = self.bytes.split_at(self.meta_at);
        let mut buf = zeroize::Zeroizing::new(sealed.to_vec());
        let plain = file_key.open_in_place(
            nonce(&self.nonce_prefix, 0, NONCE_FLAG_METADATA),
            aad,
            &mut buf[..],
        )?;
        let metadata = Metadata::decode(plain)?;
        Ok(Opener {
            cipher: SegmentCipher::new(file_key, self.nonce_prefix, &self.bytes),
            metadata,
            segment_size: self.segment_size,
            header_len: self.bytes.len() as u64,
            purpose: self.purpose.clone(),
            key_version: self.key_version,
        })
    }
}

/// The keys and facts needed to decrypt one file's segments, from an authenticated
/// header ([`ParsedHeader::open`]).
#[derive(Debug)]
pub struct Opener {
    pub(crate) cipher: SegmentCipher,
    metadata: Metadata,
    segment_size: u32,
    header_len: u64,
    purpose: Purpose,
    key_version: KeyVersion,
}

impl Opener {
    /// The authenticated metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }
    /// Length of the header (offset of the first segment).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }
    /// The purpose whose key encrypted the file.
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }
    /// The key version that encrypted the file.
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }
}

/// A new file's header and keys, made by [`Sealer::new`] under the active key; hand it
/// to a writer ([`crate::Encryptor`], [`crate::encrypt`], [`crate::AsyncEncryptor`]).
#[derive(Debug)]
pub struct Sealer {
    pub(crate) cipher: SegmentCipher,
    pub(crate) header: Vec<u8>,
    pub(crate) segment_size: u32,
    pub(crate) declared_size: Option<u64>,
}

impl Sealer {
    /// A new file under `key` with fresh random salt and nonce prefix, default segment
    /// size (64 KiB) and `metadata` sealed into the header.
    pub fn new(key: &DataKey, metadata: &Metadata, rng: &dyn SecureRandom) -> Result<Self> {
        Self::with_segment_size(key, metadata, DEFAULT_SEGMENT_SIZE, rng)
    }

    /// Like [`Sealer::new`] with another segment size (16..=1 MiB; small sizes are for
    /// tests and test vectors).
    pub fn with_segment_size(
        key: &DataKey,
        metadata: &Metadata,
        segment_size: u32,
        rng: &dyn SecureRandom,
    ) -> Result<Self> {
        // One call for both (each OS randomness call costs ~0.35 µs).
        let mut random = [0u8; FILE_SALT_LEN + NONCE_PREFIX_LEN];
        rng.fill(&mut random)?;
        let mut salt = [0u8; FILE_SALT_LEN];
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        salt.copy_from_slice(&random[..FILE_SALT_LEN]);
        prefix.copy_from_slice(&random[FILE_SALT_LEN..]);
        Self::from_parts(key, metadata, segment_size, salt, prefix)
    }

    /// Builds a header from caller-chosen salt and nonce prefix. Only for test vectors:
    /// reusing a salt reuses a file key and its nonces.
    #[doc(hidden)]
    pub fn hazmat_from_parts(
        key: &DataKey,
        metadata: &Metadata,
        segment_size: u32,
        salt: [u8; FILE_SALT_LEN],
        prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<Self> {
        Self::from_parts(key, metadata, segment_size, salt, prefix)
    }

    fn from_parts(
        key: &DataKey,
        metadata: &Metadata,
        segment_size: u32,
        salt: [u8; FILE_SALT_LEN],
        prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<Self> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(StreamError::Invalid("segment size (16..=1048576)"));
        }
        let mut meta = zeroize::Zeroizing::new(metadata.encode()?);
        let purpose = key.purpose().as_str().as_bytes();
        let mut header = Vec::with_capacity(
            HEADER_PREFIX_LEN + purpose.len() + HEADER_FIXED_TAIL + meta.len() + TAG_LEN,
        );
        header.extend_from_slice(&MAGIC);
        header.push(FORMAT_VERSION);
        header.push(purpose.len() as u8);
        header.extend_from_slice(purpose);
        header.extend_from_slice(&key.version().get().to_be_bytes());
        header.extend_from_slice(&segment_size.to_be_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(&((meta.len() + TAG_LEN) as u16).to_be_bytes());
        let file_key = key.file_key(&salt)?;
        let tag = file_key.seal_in_place(
            nonce(&prefix, 0, NONCE_FLAG_METADATA),
            &header,
            &mut meta[..],
        )?;
        header.extend_from_slice(&meta);
        header.extend_from_slice(&tag);
        Ok(Self {
            cipher: SegmentCipher::new(file_key, prefix, &header),
            header,
            segment_size,
            declared_size: metadata.size,
        })
    }

    /// The header bytes (written before the first segment).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }
}

/// Segment i's nonce: prefix ‖ u32 i ‖ flag.
fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, flag: u8) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&counter.to_be_bytes());
    n[NONCE_LEN - 1] = flag;
    n
}

/// Seals and opens segments: the file key, the nonce prefix and the header hash.
pub(crate) struct SegmentCipher {
    key: FileKey,
    prefix: [u8; NONCE_PREFIX_LEN],
    aad: [u8; 32],
}

impl std::fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentCipher(..)")
    }
}

impl SegmentCipher {
    fn new(key: FileKey, prefix: [u8; NONCE_PREFIX_LEN], header: &[u8]) -> Self {
        let mut aad = [0u8; 32];
        aad.copy_from_slice(digest::digest(&digest::SHA256, header).as_ref());
        Self { key, prefix, aad }
    }

    fn nonce(&self, index: u64, last: bool) -> Result<[u8; NONCE_LEN]> {
        let counter = u32::try_from(index).map_err(|_| StreamError::TooLarge)?;
        let flag = if last {
            NONCE_FLAG_LAST
        } else {
            NONCE_FLAG_MIDDLE
        };
        Ok(nonce(&self.prefix, counter, flag))
    }

    /// Seals `buf[..len]` in place and writes the tag at `buf[len..len + 16]`.
    pub(crate) fn seal(&self, index: u64, last: bool, buf: &mut [u8], len: usize) -> Result<()> {
        let nonce = self.nonce(index, last)?;
        let (data, rest) = buf
            .split_at_mut_checked(len)
            .ok_or(StreamError::Invalid("segment buffer"))?;
        let tag = self.key.seal_in_place(nonce, &self.aad, data)?;
        rest.get_mut(..TAG_LEN)
            .ok_or(StreamError::Invalid("segment buffer"))?
            .copy_from_slice(&tag);
        Ok(())
    }

    /// Seals `plain` out of place into `out` (ciphertext ‖ tag, `plain.len() + 16`
    /// bytes); the same bytes as [`SegmentCipher::seal`] without copying `plain`.
    pub(crate) fn seal_out_of_place(
        &self,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let nonce = self.nonce(index, last)?;
        let (ct, tag_out) = out
            .split_at_mut_checked(plain.len())
            .ok_or(StreamError::Invalid("segment buffer"))?;
        let tag = self.key.seal_out_of_place(nonce, &self.aad, plain, ct)?;
        tag_out
            .get_mut(..TAG_LEN)
            .ok_or(StreamError::Invalid("segment buffer"))?
            .copy_from_slice(&tag);
        Ok(())
    }

    /// Opens the sealed segment `sealed` (ciphertext ‖ tag) out of place into
    /// `out[..sealed.len() - 16]`; returns the plaintext length. On failure that part
    /// of `out` is wiped.
    pub(crate) fn open_out_of_place(
        &self,
        index: u64,
        last: bool,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let nonce = self.nonce(index, last)?;
        let ct_len = sealed
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(StreamError::DecryptionFailed)?;
        let (ct, tag) = sealed.split_at(ct_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| StreamError::DecryptionFailed)?;
        let plain = out
            .get_mut(..ct_len)
            .ok_or(StreamError::Invalid("segment buffer"))?;
        self.key
            .open_out_of_place(nonce, &self.aad, ct, tag, plain)?;
        Ok(ct_len)
    }

    /// Opens the sealed segment `buf` (ciphertext ‖ tag) in place; returns the
    /// plaintext length (at the front of `buf`).
    pub(crate) fn open(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<usize> {
        let nonce = self.nonce(index, last)?;
        Ok(self.key.open_in_place(nonce, &self.aad, buf)?.len())
    }
}

/// Where segment boundaries fall, for a segment size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) segment: usize,
}

impl Layout {
    pub(crate) fn new(segment_size: u32) -> Self {
        Self {
            segment: segment_size as usize,
        }
    }

    /// Bytes of one full sealed segment.
    pub(crate) fn sealed(&self) -> usize {
        self.segment + TAG_LEN
    }

    /// Bytes of a buffer holding a sealed segment plus one byte of lookahead (the
    /// first byte of the next segment, plaintext for writers, ciphertext for readers).
    pub(crate) fn lookahead_buf(&self) -> usize {
        self.sealed() + 1
    }

    /// From the length of everything after the header: (segment count, plaintext
    /// size). Lengths no writer produces are refused.
    pub(crate) fn segments_and_size(&self, body: u64) -> Result<(u64, u64)> {
        let sealed = self.sealed() as u64;
        let n = body.div_ceil(sealed);
        if n == 0 || n > MAX_SEGMENTS {
            return Err(StreamError::DecryptionFailed);
        }
        let last = body - (n - 1) * sealed;
        // The last segment holds a tag, and data unless it is the only one.
        if last < TAG_LEN as u64 || (n > 1 && last == TAG_LEN as u64) {
            return Err(StreamError::DecryptionFailed);
        }
        Ok((n, body - n * TAG_LEN as u64))
    }
}

/// Size of the encrypted file for a plaintext of `size` bytes with a header of
/// `header_len` bytes and segments of `segment_size` bytes.
pub fn encrypted_len(header_len: u64, segment_size: u32, size: u64) -> u64 {
    let n = size.div_ceil(u64::from(segment_size)).max(1);
    header_len + size + n * TAG_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_core::{OsRng, SecretKey};
    use proptest::prelude::*;

    fn key(purpose: &str, v: u32) -> DataKey {
        DataKey::derive(
            Purpose::new(purpose).unwrap(),
            KeyVersion::new(v).unwrap(),
            &SecretKey::from_slice(&[9; 32]).unwrap(),
        )
        .unwrap()
    }

    fn meta() -> Metadata {
        Metadata {
            name: Some("report.pdf".into()),
            mime_type: Some("application/pdf".into()),
            size: Some(12345),
        }
    }

    #[test]
    fn header_round_trip_and_incremental_length() {
        let dk = key("documents", 3);
        let s = Sealer::new(&dk, &meta(), &OsRng).unwrap();
        let h = s.header();
        assert_eq!(
            header_len(&h[..HEADER_PREFIX_LEN]).unwrap(),
            HeaderLen::NeedAtLeast(HEADER_PREFIX_LEN + 9 + HEADER_FIXED_TAIL)
        );
        assert_eq!(header_len(h).unwrap(), HeaderLen::Exactly(h.len()));
        let p = ParsedHeader::parse(h).unwrap();
        assert_eq!(p.purpose().as_str(), "documents");
        assert_eq!(p.key_version().get(), 3);
        assert_eq!(p.segment_size(), DEFAULT_SEGMENT_SIZE);
        let o = p.open(&dk).unwrap();
        assert_eq!(o.metadata(), &meta());
        assert_eq!(o.header_len(), h.len() as u64);
    }

    #[test]
    fn every_header_bit_flip_is_refused() {
        let dk = key("documents", 1);
        let h = Sealer::new(&dk, &meta(), &OsRng).unwrap().header;
        for i in 0..h.len() {
            for bit in 0..8 {
                let mut t = h.clone();
                t[i] ^= 1 << bit;
                let ok = ParsedHeader::parse(&t)
                    .ok()
                    .map(|p| p.open(&dk).is_ok())
                    .unwrap_or(false);
                assert!(!ok, "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn wrong_key_is_refused() {
        let h = Sealer::new(&key("documents", 1), &meta(), &OsRng)
            .unwrap()
            .header;
        let p = ParsedHeader::parse(&h).unwrap();
        let other = DataKey::derive(
            Purpose::new("documents").unwrap(),
            KeyVersion::FIRST,
            &SecretKey::from_slice(&[8; 32]).unwrap(),
        )
        .unwrap();
        assert!(matches!(p.open(&other), Err(StreamError::DecryptionFailed)));
        assert!(matches!(
            p.open(&key("documents", 2)),
            Err(StreamError::DecryptionFailed)
        ));
        assert!(matches!(
            p.open(&key("userData", 1)),
            Err(StreamError::DecryptionFailed)
        ));
    }

    #[test]
    fn metadata_limits() {
        let dk = key("documents", 1);
        for bad in [
            Metadata {
                name: Some(String::new()),
                ..Metadata::default()
            },
            Metadata {
                name: Some("x".repeat(1025)),
                ..Metadata::default()
            },
            Metadata {
                mime_type: Some("text/plain\n".into()),
                ..Metadata::default()
            },
        ] {
            assert!(matches!(
                Sealer::new(&dk, &bad, &OsRng),
                Err(StreamError::Invalid(_))
            ));
        }
        let max = Metadata {
            name: Some("é".repeat(512)),
            mime_type: Some("a".repeat(255)),
            size: Some(u64::MAX),
        };
        let s = Sealer::new(&dk, &max, &OsRng).unwrap();
        let o = ParsedHeader::parse(s.header()).unwrap().open(&dk).unwrap();
        assert_eq!(o.metadata(), &max);
        let none = Sealer::new(&dk, &Metadata::default(), &OsRng).unwrap();
        let o = ParsedHeader::parse(none.header())
            .unwrap()
            .open(&dk)
            .unwrap();
        assert_eq!(o.metadata(), &Metadata::default());
    }

    #[test]
    fn layout_arithmetic() {
        let l = Layout::new(16);
        assert_eq!(l.segments_and_size(16).unwrap(), (1, 0));
        assert_eq!(l.segments_and_size(17).unwrap(), (1, 1));
        assert_eq!(l.segments_and_size(32).unwrap(), (1, 16));
        assert_eq!(l.segments_and_size(32 + 17).unwrap(), (2, 17));
        assert!(l.segments_and_size(0).is_err());
        assert!(l.segments_and_size(15).is_err());
        assert!(
            l.segments_and_size(32 + 16).is_err(),
            "empty non-only last segment"
        );
        assert!(l.segments_and_size(32 + 5).is_err());
        for size in [0u64, 1, 15, 16, 17, 100] {
            let body = encrypted_len(0, 16, size);
            assert_eq!(l.segments_and_size(body).unwrap().1, size);
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = header_len(&bytes);
            let _ = ParsedHeader::parse(&bytes);
        }

        #[test]
        fn parser_never_panics_on_mutated_headers(i in 0usize..120, b in any::<u8>(), cut in 0usize..130) {
            let h = Sealer::new(&key("documents", 1), &meta(), &OsRng).unwrap().header;
            let mut t = h.clone();
            let i = i % t.len();
            t[i] = b;
            t.truncate(cut.min(t.len()));
            let _ = header_len(&t);
            let _ = ParsedHeader::parse(&t);
        }
    }
}
