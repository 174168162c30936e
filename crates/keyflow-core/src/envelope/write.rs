//! Writing envelopes.

use base64::Engine;

use super::{Algorithm, Header, FORMAT_V1, NONCE_LEN, TEXT_PREFIX};
use crate::ids::KeyVersion;

/// Appends the binary header to `out`. The header bytes are also the first part of
/// the AAD.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    encode_header_parts(
        h.algorithm,
        h.purpose.as_str().as_bytes(),
        h.key_version,
        &h.nonce,
        out,
    );
}

/// `encode_header` from its parts; `purpose` must come from a valid [`crate::Purpose`]
/// (≤ 64 bytes).
pub(crate) fn encode_header_parts(
    algorithm: Algorithm,
    purpose: &[u8],
    version: KeyVersion,
    nonce: &[u8; NONCE_LEN],
    out: &mut Vec<u8>,
) {
    out.push(FORMAT_V1);
    out.push(algorithm.id());
    out.push(purpose.len() as u8);
    out.extend_from_slice(purpose);
    out.extend_from_slice(&version.get().to_be_bytes());
    out.extend_from_slice(nonce);
}

/// The text form of a binary envelope: `kf1:` + unpadded URL-safe base64.
pub fn to_text(binary: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + binary.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(binary, &mut s);
    s
}
