//! Writing envelopes.

use base64::Engine;

use super::{Header, FORMAT_V1, TEXT_PREFIX};

/// Appends the binary header to `out`. The header bytes are also the first part of
/// the AAD.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    let purpose = h.purpose.as_str().as_bytes();
    out.push(FORMAT_V1);
    out.push(h.algorithm.id());
    // Purpose length ≤ 64 is guaranteed by the `Purpose` type.
    out.push(purpose.len() as u8);
    out.extend_from_slice(purpose);
    out.extend_from_slice(&h.key_version.get().to_be_bytes());
    out.extend_from_slice(&h.nonce);
}

/// The text form of a binary envelope: `kf1:` + unpadded URL-safe base64.
pub fn to_text(binary: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + binary.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(binary, &mut s);
    s
}
