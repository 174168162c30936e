//! The envelope format: the self-describing container of every KeyFlow ciphertext.
//!
//! The parser ([`read`]) and the writer ([`write`]) sit side by side; the full
//! specification is `docs/envelope-format.md`. Binary layout (v1):
//!
//! ```text
//! offset   size  field
//! 0        1     format version = 0x01
//! 1        1     algorithm id (0x01 AES-256-GCM, 0x02 AES-256-GCM-SIV deterministic)
//! 2        1     purpose length L (1..=64)
//! 3        L     purpose (ASCII)
//! 3+L      4     key version, u32 big-endian, ≥ 1
//! 7+L      12    nonce
//! 19+L     n+16  ciphertext ‖ 128-bit tag (n ≥ 1: the payload-kind byte, then the data)
//! ```
//!
//! The text form is `kf1:` followed by the unpadded URL-safe base64 of the binary form.

pub mod read;
pub mod write;

use crate::ids::{KeyVersion, Purpose};

/// The format version this code writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "kf1:";
/// Nonce length (96 bits) for both algorithms.
pub const NONCE_LEN: usize = 12;
/// Tag length (128 bits), pinned: shorter tags do not exist in this format.
pub const TAG_LEN: usize = 16;
/// Fixed bytes of the header besides the purpose: version, algorithm, purpose length,
/// key version, nonce.
pub const FIXED_HEADER_LEN: usize = 1 + 1 + 1 + 4 + NONCE_LEN;
/// The smallest possible envelope: a 1-byte purpose and a 1-byte plaintext.
pub const MIN_ENVELOPE_LEN: usize = FIXED_HEADER_LEN + 1 + 1 + TAG_LEN;

/// The encryption algorithm named in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Randomized AES-256-GCM, 96-bit random nonce, 128-bit tag.
    Aes256Gcm,
    /// Deterministic AES-256-GCM-SIV with a nonce derived from the key and the context.
    Aes256GcmSivDeterministic,
}

impl Algorithm {
    /// The id byte in the header.
    pub fn id(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 0x01,
            Algorithm::Aes256GcmSivDeterministic => 0x02,
        }
    }

    /// Parses an id byte.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(Algorithm::Aes256Gcm),
            0x02 => Some(Algorithm::Aes256GcmSivDeterministic),
            _ => None,
        }
    }

    /// The name shown by `summary` / `keyflow inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "AES-256-GCM",
            Algorithm::Aes256GcmSivDeterministic => "AES-256-GCM-SIV-DET",
        }
    }

    /// True for the deterministic mode.
    pub fn is_deterministic(self) -> bool {
        matches!(self, Algorithm::Aes256GcmSivDeterministic)
    }
}

/// What the plaintext is, so that types survive a round trip. Stored as the first byte
/// *inside* the ciphertext, so it is authenticated and not visible to an observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadKind {
    /// Raw bytes.
    Bytes,
    /// A UTF-8 string (returned as a string, even if it looks like JSON).
    Text,
    /// A JSON value other than a string (number, boolean, null, object, array).
    Json,
}

impl PayloadKind {
    pub(crate) fn byte(self) -> u8 {
        match self {
            PayloadKind::Bytes => 0x00,
            PayloadKind::Text => 0x01,
            PayloadKind::Json => 0x02,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x00 => Some(PayloadKind::Bytes),
            0x01 => Some(PayloadKind::Text),
            0x02 => Some(PayloadKind::Json),
            _ => None,
        }
    }
}

/// The parsed header of an envelope: everything needed to pick the key, nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Algorithm (and so the mode) used.
    pub algorithm: Algorithm,
    /// Key ring.
    pub purpose: Purpose,
    /// Key version within the ring.
    pub key_version: KeyVersion,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + self.purpose.as_str().len()
    }
}
