//! The backup file format, version 1 (specification: `docs/backup-format.md`).
//!
//! Pure: bytes in, bytes out; no keystore, no I/O. A file is a fixed 48-byte header
//! followed by one AES-256-GCM ciphertext of the body:
//!
//! ```text
//! magic "KFBACKUP" (8) | format 1 (1) | kdf 1 = PBKDF2-HMAC-SHA256 (1) | iterations u32
//! | salt length 16 (1) | salt (16) | cipher 1 = AES-256-GCM (1) | nonce (12)
//! | body length u32 (4) || AES-256-GCM(key, body, AAD = the 48 header bytes) ‖ tag
//! ```
//!
//! `key = PBKDF2-HMAC-SHA256(password, salt, iterations)`: independent of the KEK, so a
//! backup restores under another KEK. The header is the AAD, so editing any parameter,
//! the length or a byte of the body makes the file fail to open; a truncated or
//! extended file fails the length check. The decrypted body lives only in a
//! [`Zeroizing`] buffer and every key in a [`SecretKey`].

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::{aead, pbkdf2};
use keyflow_core::secret::{hazmat, KEY_LEN};
use keyflow_core::{KeyVersion, Purpose, SecretKey, SecureRandom};
use zeroize::Zeroizing;

use crate::model::KeyStatus;
use crate::{KmsError, Result};

/// First bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"KFBACKUP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// PBKDF2-HMAC-SHA256 iterations of new backups (OWASP 2023).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations a backup may declare.
pub const MIN_ITERATIONS: u32 = 100_000;
/// Most iterations a backup may declare (a hostile file cannot make us spin for hours).
pub const MAX_ITERATIONS: u32 = 50_000_000;
/// Largest backup file read (a version takes ~100 bytes, so ~600,000 versions).
pub const MAX_FILE_LEN: usize = 64 << 20;
/// Shortest backup password, in characters (PRODUCT.md §1).
pub const MIN_PASSWORD_CHARS: usize = 16;

const KDF_PBKDF2_SHA256: u8 = 1;
const CIPHER_AES_256_GCM: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the fixed header (the AAD).
pub const HEADER_LEN: usize = 8 + 1 + 1 + 4 + 1 + SALT_LEN + 1 + NONCE_LEN + 4;
const NO_REASON: u16 = u16::MAX;
const MAX_REASON_BYTES: usize = 4096;

/// The backup password: at least [`MIN_PASSWORD_CHARS`] characters, zeroized on drop,
/// never printed.
pub struct BackupPassword(Zeroizing<String>);

impl BackupPassword {
    /// Checks the length (characters, not bytes).
    pub fn new(password: String) -> Result<Self> {
        let password = Zeroizing::new(password);
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(KmsError::BackupPasswordTooShort(MIN_PASSWORD_CHARS));
        }
        Ok(Self(password))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// A second zeroizing copy (to move into a blocking task).
    pub(crate) fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }
}

impl fmt::Debug for BackupPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupPassword(<redacted>)")
    }
}

/// One key version in a backup: its metadata and, unless destroyed, its material.
pub struct BackupVersion {
    /// Key ring.
    pub purpose: Purpose,
    /// Version number.
    pub version: KeyVersion,
    /// Lifecycle state when the backup was made.
    pub status: KeyStatus,
    /// Key algorithm name.
    pub algorithm: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last state change, Unix milliseconds.
    pub status_changed_at: i64,
    /// Encryptions made with the version.
    pub encryptions: u64,
    /// Why it was revoked, if it was.
    pub revoked_reason: Option<String>,
    /// The DEK in clear (inside the decrypted backup only); `None` when destroyed.
    pub material: Option<SecretKey>,
}

impl fmt::Debug for BackupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupVersion")
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .field("status", &self.status)
            .field("has_material", &self.material.is_some())
            .finish_non_exhaustive()
    }
}

/// The decrypted content of a backup.
#[derive(Debug)]
pub struct BackupContents {
    /// When the backup was made, Unix milliseconds.
    pub created_at: i64,
    /// The KEK the source keystore used (informational; the backup does not need it).
    pub source_kek_id: String,
    /// Every version, ordered by purpose then version.
    pub versions: Vec<BackupVersion>,
}

/// The public parameters of a backup file, readable without the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// Format version.
    pub format_version: u8,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Length of the encrypted body (tag included).
    pub body_len: u32,
}

/// Latest timestamp a backup may hold: 9999-12-31T23:59:59.999Z, in Unix ms.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// A timestamp from a backup, range-checked: before 1970 or after year 9999 is damage
/// (or a crafted file), and would overflow the due-date arithmetic downstream.
fn timestamp(ms: i64) -> Result<i64> {
    if (0..=MAX_TIMESTAMP_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(KmsError::BackupInvalid("a timestamp out of range"))
    }
}

fn status_code(s: KeyStatus) -> u8 {
    match s {
        KeyStatus::Active => 0,
        KeyStatus::Rotating => 1,
        KeyStatus::Deprecated => 2,
        KeyStatus::Revoked => 3,
        KeyStatus::Destroyed => 4,
    }
}

fn status_from(code: u8) -> Result<KeyStatus> {
    KeyStatus::ALL
        .get(usize::from(code))
        .copied()
        .ok_or(KmsError::BackupInvalid("unknown key state"))
}

fn derive_key(
    password: &BackupPassword,
    salt: &[u8],
    iterations: u32,
) -> Result<aead::LessSafeKey> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(KmsError::BackupInvalid("KDF iterations out of range"));
    }
    let iterations = NonZeroU32::new(iterations).ok_or(KmsError::Crypto)?;
    let mut derived = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.bytes(),
        &mut derived[..],
    );
    aead::UnboundKey::new(&aead::AES_256_GCM, &derived[..])
        .map(aead::LessSafeKey::new)
        .map_err(|_| KmsError::Crypto)
}

fn short_str_len(s: &str, what: &'static str) -> Result<u8> {
    u8::try_from(s.len()).map_err(|_| KmsError::Invalid(what))
}

/// Exact body length, so the buffer is never reallocated (a reallocation would leave an
/// unzeroized copy of key material behind).
fn body_len(c: &BackupContents) -> usize {
    let mut n = 8 + 1 + c.source_kek_id.len() + 4;
    for v in &c.versions {
        n += 1 + v.purpose.as_str().len() + 4 + 1 + 1 + v.algorithm.len() + 8 + 8 + 8;
        n += 2 + v.revoked_reason.as_ref().map_or(0, String::len);
        n += 1 + if v.material.is_some() { KEY_LEN } else { 0 };
    }
    n
}

/// The plaintext body of a backup file: what [`seal`] encrypts. Public (with
/// [`decode_body`]) so the fuzzer can check the body parser without the KDF; nothing
/// outside this module needs it.
pub fn encode_body(c: &BackupContents) -> Result<Zeroizing<Vec<u8>>> {
    let len = body_len(c);
    let mut b = Zeroizing::new(Vec::with_capacity(len + TAG_LEN));
    b.extend_from_slice(&c.created_at.to_be_bytes());
    b.push(short_str_len(&c.source_kek_id, "KEK id")?);
    b.extend_from_slice(c.source_kek_id.as_bytes());
    let count = u32::try_from(c.versions.len()).map_err(|_| KmsError::Invalid("backup size"))?;
    b.extend_from_slice(&count.to_be_bytes());
    for v in &c.versions {
        b.push(short_str_len(v.purpose.as_str(), "purpose")?);
        b.extend_from_slice(v.purpose.as_str().as_bytes());
        b.extend_from_slice(&v.version.get().to_be_bytes());
        b.push(status_code(v.status));
        b.push(short_str_len(&v.algorithm, "algorithm")?);
        b.extend_from_slice(v.algorithm.as_bytes());
        b.extend_from_slice(&v.created_at.to_be_bytes());
        b.extend_from_slice(&v.status_changed_at.to_be_bytes());
        b.extend_from_slice(&v.encryptions.to_be_bytes());
        match &v.revoked_reason {
            Some(r) if r.len() <= MAX_REASON_BYTES => {
                b.extend_from_slice(&(r.len() as u16).to_be_bytes());
                b.extend_from_slice(r.as_bytes());
            }
            Some(_) => return Err(KmsError::Invalid("revocation reason (too long)")),
            None => b.extend_from_slice(&NO_REASON.to_be_bytes()),
        }
        match &v.material {
            Some(k) => {
                b.push(1);
                b.extend_from_slice(hazmat::expose_secret_key(k));
            }
            None => b.push(0),
        }
    }
    if b.len() != len {
        return Err(KmsError::Crypto);
    }
    Ok(b)
}

/// Encrypts `contents` under `password` with `iterations` of PBKDF2 and a fresh salt and
/// nonce from `rng`: the bytes of a backup file.
pub fn seal(
    contents: &BackupContents,
    password: &BackupPassword,
    iterations: u32,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>> {
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt).map_err(|_| KmsError::Randomness)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| KmsError::Randomness)?;
    let key = derive_key(password, &salt, iterations)?;
    let mut body = encode_body(contents)?;
    let sealed_len = u32::try_from(body.len() + TAG_LEN)
        .ok()
        .filter(|n| (*n as usize) + HEADER_LEN <= MAX_FILE_LEN)
        .ok_or(KmsError::Invalid("backup size (over the 64 MiB limit)"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed_len as usize);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(KDF_PBKDF2_SHA256);
    out.extend_from_slice(&iterations.to_be_bytes());
    out.push(SALT_LEN as u8);
    out.extend_from_slice(&salt);
    out.push(CIPHER_AES_256_GCM);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed_len.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(&out[..HEADER_LEN]),
        &mut *body,
    )
    .map_err(|_| KmsError::Crypto)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the header without the password. Every length is checked: a file that is not
/// a backup, of another format version, or truncated/extended is refused here.
pub fn read_header(bytes: &[u8]) -> Result<BackupHeader> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(KmsError::BackupInvalid("larger than the 64 MiB limit"));
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(KmsError::BackupInvalid("not a KeyFlow backup file"));
    }
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(KmsError::BackupInvalid("truncated header"))?;
    let mut r = Reader(&header[MAGIC.len()..]);
    let format_version = r.u8()?;
    if format_version != FORMAT_VERSION {
        return Err(KmsError::BackupInvalid("unsupported format version"));
    }
    if r.u8()? != KDF_PBKDF2_SHA256 {
        return Err(KmsError::BackupInvalid("unsupported KDF"));
    }
    let iterations = r.u32()?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(KmsError::BackupInvalid("KDF iterations out of range"));
    }
    if usize::from(r.u8()?) != SALT_LEN {
        return Err(KmsError::BackupInvalid("unsupported salt length"));
    }
    r.take(SALT_LEN)?;
    if r.u8()? != CIPHER_AES_256_GCM {
        return Err(KmsError::BackupInvalid("unsupported cipher"));
    }
    r.take(NONCE_LEN)?;
    let body_len = r.u32()?;
    if (body_len as usize) < TAG_LEN {
        return Err(KmsError::BackupInvalid("damaged header"));
    }
    if bytes.len() - HEADER_LEN != body_len as usize {
        return Err(KmsError::BackupInvalid(
            "truncated or extended (length does not match the header)",
        ));
    }
    Ok(BackupHeader {
        format_version,
        iterations,
        body_len,
    })
}

/// Decrypts and parses a backup file. A wrong password and a modified byte are the same
/// error, [`KmsError::BackupDecryptionFailed`]; structural problems are
/// [`KmsError::BackupInvalid`].
pub fn open(bytes: &[u8], password: &BackupPassword) -> Result<BackupContents> {
    let header = read_header(bytes)?;
    let salt_at = MAGIC.len() + 1 + 1 + 4 + 1;
    let salt = bytes
        .get(salt_at..salt_at + SALT_LEN)
        .ok_or(KmsError::BackupInvalid("truncated header"))?;
    let nonce_at = salt_at + SALT_LEN + 1;
    let nonce: [u8; NONCE_LEN] = bytes
        .get(nonce_at..nonce_at + NONCE_LEN)
        .and_then(|n| n.try_into().ok())
        .ok_or(KmsError::BackupInvalid("truncated header"))?;
    let key = derive_key(password, salt, header.iterations)?;
    let mut buf = Zeroizing::new(bytes[HEADER_LEN..].to_vec());
    let body = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&bytes[..HEADER_LEN]),
            &mut buf[..],
        )
        .map_err(|_| KmsError::BackupDecryptionFailed)?;
    decode_body(body)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(KmsError::BackupInvalid("truncated content"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    fn str(&mut self, n: usize) -> Result<String> {
        std::str::from_utf8(self.take(n)?)
            .map(str::to_owned)
            .map_err(|_| KmsError::BackupInvalid("text is not UTF-8"))
    }
}

/// Parses a decrypted backup body (the inverse of [`encode_body`]). Everything in it
/// is checked as if crafted: whoever holds the password can write any body.
pub fn decode_body(body: &[u8]) -> Result<BackupContents> {
    let mut r = Reader(body);
    let created_at = timestamp(r.i64()?)?;
    let n = usize::from(r.u8()?);
    let source_kek_id = r.str(n)?;
    let count = r.u32()? as usize;
    // Each version takes at least 36 bytes: bound the allocation by the input.
    if count > body.len() / 36 {
        return Err(KmsError::BackupInvalid(
            "version count does not match the content",
        ));
    }
    let mut versions = Vec::with_capacity(count);
    let mut seen = BTreeSet::new();
    let mut active = BTreeSet::new();
    for _ in 0..count {
        let n = usize::from(r.u8()?);
        let purpose = Purpose::new(&r.str(n)?).map_err(|_| KmsError::BackupInvalid("purpose"))?;
        let version =
            KeyVersion::new(r.u32()?).map_err(|_| KmsError::BackupInvalid("key version"))?;
        let status = status_from(r.u8()?)?;
        let n = usize::from(r.u8()?);
        let algorithm = r.str(n)?;
        let created_at = timestamp(r.i64()?)?;
        let status_changed_at = timestamp(r.i64()?)?;
        if status_changed_at < created_at {
            return Err(KmsError::BackupInvalid(
                "a version whose state changed before it was created",
            ));
        }
        let encryptions = r.u64()?;
        let revoked_reason = match r.u16()? {
            NO_REASON => None,
            // The writer's limit: a longer reason would restore, then fail every later
            // backup (found by the `backup_file` fuzz target).
            n if usize::from(n) > MAX_REASON_BYTES => {
                return Err(KmsError::BackupInvalid("revocation reason too long"))
            }
            n => Some(r.str(usize::from(n))?),
        };
        let material = match r.u8()? {
            0 => None,
            1 => Some(SecretKey::from_slice(r.take(KEY_LEN)?)?),
            _ => return Err(KmsError::BackupInvalid("material flag")),
        };
        if (status == KeyStatus::Destroyed) != material.is_none() {
            return Err(KmsError::BackupInvalid(
                "a destroyed version with material, or a live one without",
            ));
        }
        if !seen.insert((purpose.clone(), version)) {
            return Err(KmsError::BackupInvalid("a version appears twice"));
        }
        if status == KeyStatus::Active && !active.insert(purpose.clone()) {
            return Err(KmsError::BackupInvalid(
                "two active versions of one purpose",
            ));
        }
        versions.push(BackupVersion {
            purpose,
            version,
            status,
            algorithm,
            created_at,
            status_changed_at,
            encryptions,
            revoked_reason,
            material,
        });
    }
    if !r.0.is_empty() {
        return Err(KmsError::BackupInvalid("trailing bytes after the content"));
    }
    Ok(BackupContents {
        created_at,
        source_kek_id,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_core::OsRng;

    fn pw() -> BackupPassword {
        BackupPassword::new("sixteen chars ok".into()).unwrap()
    }

    fn sample() -> BackupContents {
        let p = Purpose::new("userData").unwrap();
        let v = |n: u32, status: KeyStatus, material: bool| BackupVersion {
            purpose: p.clone(),
            version: KeyVersion::new(n).unwrap(),
            status,
            algorithm: "AES-256".into(),
            created_at: 1_700_000_000_000 + i64::from(n),
            status_changed_at: 1_700_000_000_500,
            encryptions: u64::from(n) * 1000,
            revoked_reason: (status == KeyStatus::Destroyed).then(|| "leaked é".to_owned()),
            material: material.then(|| SecretKey::from_slice(&[n as u8; 32]).unwrap()),
        };
        BackupContents {
            created_at: 42,
            source_kek_id: "ab".repeat(16),
            versions: vec![
                v(1, KeyStatus::Destroyed, false),
                v(2, KeyStatus::Rotating, true),
                v(3, KeyStatus::Active, true),
            ],
        }
    }

    /// A crafted backup (sealed with the right password: whoever holds it can) with
    /// times that would overflow the policy arithmetic is refused at open.
    #[test]
    fn out_of_range_timestamps_are_refused() {
        type Damage = fn(&mut BackupContents);
        let cases: [(&str, Damage); 5] = [
            ("created far future", |c| {
                c.versions[1].created_at = i64::MAX
            }),
            ("created negative", |c| c.versions[1].created_at = -1),
            ("changed far future", |c| {
                c.versions[2].status_changed_at = MAX_TIMESTAMP_MS + 1
            }),
            ("changed before created", |c| {
                c.versions[2].status_changed_at = c.versions[2].created_at - 1
            }),
            ("backup time", |c| c.created_at = i64::MIN),
        ];
        for (what, damage) in cases {
            let mut c = sample();
            damage(&mut c);
            let bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
            match open(&bytes, &pw()) {
                Err(KmsError::BackupInvalid(_)) => {}
                other => panic!("{what}: {:?}", other.map(|c| c.versions.len())),
            }
        }
        // The edges themselves are fine.
        let mut c = sample();
        c.versions[2].created_at = 0;
        c.versions[2].status_changed_at = MAX_TIMESTAMP_MS;
        let bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        assert_eq!(open(&bytes, &pw()).unwrap().versions.len(), 3);
    }

    #[test]
    fn round_trip_and_header() {
        let c = sample();
        let bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        let h = read_header(&bytes).unwrap();
        assert_eq!(h.iterations, MIN_ITERATIONS);
        assert_eq!(h.format_version, 1);
        assert_eq!(h.body_len as usize + HEADER_LEN, bytes.len());
        let back = open(&bytes, &pw()).unwrap();
        assert_eq!(back.created_at, 42);
        assert_eq!(back.source_kek_id, c.source_kek_id);
        assert_eq!(back.versions.len(), 3);
        for (a, b) in c.versions.iter().zip(&back.versions) {
            assert_eq!(a.purpose, b.purpose);
            assert_eq!(a.version, b.version);
            assert_eq!(a.status, b.status);
            assert_eq!(a.algorithm, b.algorithm);
            assert_eq!(a.created_at, b.created_at);
            assert_eq!(a.status_changed_at, b.status_changed_at);
            assert_eq!(a.encryptions, b.encryptions);
            assert_eq!(a.revoked_reason, b.revoked_reason);
            match (&a.material, &b.material) {
                (Some(x), Some(y)) => assert!(x.ct_eq(y)),
                (None, None) => {}
                _ => panic!("material mismatch"),
            }
        }
        // Key material never appears in clear in the file.
        assert!(!bytes.windows(32).any(|w| w == [3u8; 32]));
    }

    #[test]
    fn wrong_password_every_bit_flip_truncation_and_extension_are_refused() {
        let bytes = seal(&sample(), &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        let other = BackupPassword::new("sixteen chars no".into()).unwrap();
        assert!(matches!(
            open(&bytes, &other),
            Err(KmsError::BackupDecryptionFailed)
        ));
        // A flip in every byte (one bit each, to keep the test quick with the KDF): the
        // header ones fail structurally or at the tag, the body ones at the tag.
        for i in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(open(&t, &pw()).is_err(), "flip at {i} accepted");
        }
        for cut in [0, 7, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert!(open(&bytes[..cut], &pw()).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            open(&longer, &pw()),
            Err(KmsError::BackupInvalid(_))
        ));
        assert!(matches!(
            read_header(b"{\"not\":\"a backup\"}"),
            Err(KmsError::BackupInvalid("not a KeyFlow backup file"))
        ));
    }

    #[test]
    fn parameters_are_checked() {
        let c = sample();
        assert!(seal(&c, &pw(), MIN_ITERATIONS - 1, &OsRng).is_err());
        let mut bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        bytes[8] = 2; // format version
        assert!(matches!(
            read_header(&bytes),
            Err(KmsError::BackupInvalid("unsupported format version"))
        ));
        assert!(matches!(
            BackupPassword::new("fifteen chars!!".into()),
            Err(KmsError::BackupPasswordTooShort(16))
        ));
        // Characters, not bytes: 16 two-byte characters pass, 15 do not.
        assert!(BackupPassword::new("é".repeat(16)).is_ok());
        assert!(BackupPassword::new("é".repeat(15)).is_err());
    }

    #[test]
    fn inconsistent_content_is_refused_even_when_authentic() {
        let mut c = sample();
        c.versions[0].material = Some(SecretKey::from_slice(&[9; 32]).unwrap());
        let bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        assert!(matches!(
            open(&bytes, &pw()),
            Err(KmsError::BackupInvalid(_))
        ));
        let mut c = sample();
        c.versions[1].status = KeyStatus::Active;
        let bytes = seal(&c, &pw(), MIN_ITERATIONS, &OsRng).unwrap();
        assert!(matches!(
            open(&bytes, &pw()),
            Err(KmsError::BackupInvalid(_))
        ));
    }

    /// The body parser accepts exactly what the writer writes: a reason of the
    /// writer's maximum length reads back, one byte more (crafted) is refused.
    #[test]
    fn a_revocation_reason_longer_than_the_writer_allows_is_refused() {
        let mut c = sample();
        c.versions[0].revoked_reason = Some("r".repeat(MAX_REASON_BYTES));
        let body = encode_body(&c).unwrap();
        let back = decode_body(&body).unwrap();
        assert_eq!(
            back.versions[0].revoked_reason,
            c.versions[0].revoked_reason
        );
        // Created-at, KEK id, count, then version 0 up to its reason's length field.
        let at = 8 + 1 + 32 + 4 + 1 + "userData".len() + 4 + 1 + 1 + "AES-256".len() + 24;
        assert_eq!(body[at..at + 2], (MAX_REASON_BYTES as u16).to_be_bytes());
        let mut long = body[..at].to_vec();
        long.extend_from_slice(&(MAX_REASON_BYTES as u16 + 1).to_be_bytes());
        long.extend_from_slice(&[b'r'; MAX_REASON_BYTES + 1]);
        long.extend_from_slice(&body[at + 2 + MAX_REASON_BYTES..]);
        assert!(matches!(
            decode_body(&long),
            Err(KmsError::BackupInvalid("revocation reason too long"))
        ));
    }

    #[test]
    fn debug_shows_no_secrets() {
        let c = sample();
        let s = format!("{c:?} {:?}", pw());
        assert!(!s.contains("sixteen"), "{s}");
        assert!(!s.contains("3, 3, 3"), "{s}");
    }
}
