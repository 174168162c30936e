//! Writing envelopes.

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
    let mut s = String::with_capacity(text_len(binary.len()));
    s.push_str(TEXT_PREFIX);
    base64_simd::URL_SAFE_NO_PAD.encode_append(binary, &mut s);
    s
}

/// Appends the text form of a binary envelope to `out` — e.g. straight into a JSON
/// response body (the text form needs no escaping), without an intermediate string.
pub fn push_text(binary: &[u8], out: &mut Vec<u8>) {
    out.reserve(text_len(binary.len()));
    out.extend_from_slice(TEXT_PREFIX.as_bytes());
    base64_simd::URL_SAFE_NO_PAD.encode_append(binary, out);
}

/// Length of the text form of a binary envelope of `binary_len` bytes.
pub fn text_len(binary_len: usize) -> usize {
    TEXT_PREFIX.len() + (binary_len * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_text_appends_exactly_the_text_form() {
        for n in 0..40u8 {
            let binary: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let mut out = b"{\"x\":\"".to_vec();
            push_text(&binary, &mut out);
            let want = format!("{{\"x\":\"{}", to_text(&binary));
            assert_eq!(out, want.as_bytes(), "length {n}");
            assert_eq!(to_text(&binary).len(), text_len(binary.len()));
        }
    }
}
