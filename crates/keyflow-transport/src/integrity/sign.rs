//! The request-integrity wire format: canonical string, signing, header parsing.

use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use http::HeaderName;

use crate::config::IntegritySecret;

/// `X-KeyFlow-Timestamp`: Unix time in seconds, decimal digits.
pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("x-keyflow-timestamp");
/// `X-KeyFlow-Nonce`: 16 to 128 characters of `[A-Za-z0-9_-]`, unique per request.
pub const NONCE_HEADER: HeaderName = HeaderName::from_static("x-keyflow-nonce");
/// `X-KeyFlow-Signature`: HMAC-SHA256 of the canonical string, lowercase hex or base64.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-keyflow-signature");

/// `X-KeyFlow-Signature-Version`: `2` for the [`canonical_string_v2`] format; absent (or
/// `1`) for the original [`canonical_string`], so old clients can be told apart (and
/// refused with `integrity_min_version = 2`).
pub const SIGNATURE_VERSION_HEADER: HeaderName =
    HeaderName::from_static("x-keyflow-signature-version");

/// Shortest accepted nonce, in characters.
pub const NONCE_MIN_LEN: usize = 16;
/// Longest accepted nonce, in characters.
pub const NONCE_MAX_LEN: usize = 128;

/// The string that is signed:
/// `METHOD\nPATH_AND_QUERY\nTIMESTAMP\nNONCE\nhex(SHA-256(body))`.
///
/// `method` is as sent (uppercase, e.g. `POST`); `path_and_query` is the request
/// target exactly as sent, query included, not decoded or normalized (`/` if empty);
/// `timestamp` is the `X-KeyFlow-Timestamp` header text; the body hash is lowercase hex
/// (for an empty body, `e3b0c442...b855`).
pub fn canonical_string(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(digest::digest(&digest::SHA256, body));
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}")
}

/// The string signed in format 2 (`X-KeyFlow-Signature-Version: 2`):
/// `KF2\nMETHOD\nHOST\nPATH_AND_QUERY\nTIMESTAMP\nNONCE\nhex(SHA-256(Authorization))\nhex(SHA-256(body))`.
///
/// Format 1 plus the `Host` (or HTTP/2 `:authority`) as sent, so a signed request
/// cannot be replayed against another host that shares the secret, and the SHA-256 of
/// the `Authorization` header's bytes (of nothing when absent), so a signed request
/// cannot be re-attributed to another bearer token. The leading `KF2` keeps the two
/// formats' strings apart.
pub fn canonical_string_v2(
    method: &str,
    host: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    authorization: &[u8],
    body: &[u8],
) -> String {
    let auth_hash = hex::encode(digest::digest(&digest::SHA256, authorization));
    let body_hash = hex::encode(digest::digest(&digest::SHA256, body));
    format!(
        "KF2\n{method}\n{host}\n{path_and_query}\n{timestamp}\n{nonce}\n{auth_hash}\n{body_hash}"
    )
}

/// What a format-2 signature covers besides format 1's fields.
#[derive(Clone, Copy, Debug)]
pub struct SignedExtras<'a> {
    /// The `Host` header (or `:authority`) exactly as sent.
    pub host: &'a str,
    /// The `Authorization` header's bytes (empty when there is none).
    pub authorization: &'a [u8],
}

/// The format-2 `X-KeyFlow-Signature` value (lowercase hex), for clients and tests;
/// send it with `X-KeyFlow-Signature-Version: 2`.
pub fn sign_request_v2(
    secret: &IntegritySecret,
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    extras: SignedExtras<'_>,
    body: &[u8],
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
    let canonical = canonical_string_v2(
        method,
        extras.host,
        path_and_query,
        &timestamp.to_string(),
        nonce,
        extras.authorization,
        body,
    );
    hex::encode(hmac::sign(&key, canonical.as_bytes()))
}

/// HMAC-SHA256 of the format-2 canonical string.
pub(crate) fn tag_v2(
    key: &hmac::Key,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    extras: SignedExtras<'_>,
    body: &[u8],
) -> [u8; 32] {
    let canonical = canonical_string_v2(
        method,
        extras.host,
        path_and_query,
        timestamp,
        nonce,
        extras.authorization,
        body,
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, canonical.as_bytes()).as_ref());
    out
}

/// The `X-KeyFlow-Signature` value (lowercase hex) for a request, for clients and tests.
///
/// ```
/// use keyflow_transport::{sign_request, IntegritySecret};
/// let secret = IntegritySecret::new("an example secret of at least 32 bytes")?;
/// let sig = sign_request(&secret, "POST", "/v1/keys?x=1", 1_700_000_000, "n0nce-0123456789", b"{}");
/// assert_eq!(sig.len(), 64);
/// # Ok::<(), keyflow_transport::ConfigError>(())
/// ```
pub fn sign_request(
    secret: &IntegritySecret,
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
    let tag = tag(
        &key,
        method,
        path_and_query,
        &timestamp.to_string(),
        nonce,
        body,
    );
    hex::encode(tag)
}

/// HMAC-SHA256 of the canonical string.
pub(crate) fn tag(
    key: &hmac::Key,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> [u8; 32] {
    let canonical = canonical_string(method, path_and_query, timestamp, nonce, body);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, canonical.as_bytes()).as_ref());
    out
}

/// Decimal digits only (no sign, no spaces), at most 19 of them.
pub(crate) fn parse_timestamp(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(crate) fn is_valid_nonce(nonce: &str) -> bool {
    (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 64 hex digits, or base64 (standard or URL-safe, padded or not) of 32 bytes.
pub(crate) fn decode_signature(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() == 64 && hex::decode_to_slice(text, &mut out).is_ok() {
        return Some(out);
    }
    if !(43..=44).contains(&text.len()) {
        return None;
    }
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())?;
    out = bytes.try_into().ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> IntegritySecret {
        IntegritySecret::new("k".repeat(32)).unwrap()
    }

    #[test]
    fn canonical_string_layout() {
        assert_eq!(
            canonical_string("GET", "/v1/keys?a=1", "1700000000", "abcdefghijklmnop", b""),
            "GET\n/v1/keys?a=1\n1700000000\nabcdefghijklmnop\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Pins the format: any change to the canonical string breaks this vector, which
    /// was computed independently (`printf 'POST\n/v1/keys\n1700000000\n...' |
    /// openssl dgst -sha256 -hmac kkkk...`).
    #[test]
    fn known_vector() {
        let sig = sign_request(
            &secret(),
            "POST",
            "/v1/keys",
            1_700_000_000,
            "abcdefghijklmnop",
            b"{\"a\":1}",
        );
        let canonical = canonical_string(
            "POST",
            "/v1/keys",
            "1700000000",
            "abcdefghijklmnop",
            b"{\"a\":1}",
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, "k".repeat(32).as_bytes());
        let direct = hex::encode(hmac::sign(&key, canonical.as_bytes()));
        assert_eq!(sig, direct);
        assert_eq!(sig, KNOWN_SIGNATURE);
    }

    /// Pins format 2 the same way: `printf 'KF2\nPOST\nkms.example.com\n/v1/keys\n1700000000\nabcdefghijklmnop\n<sha256("Bearer t")>\n<sha256({"a":1})>' | openssl dgst -sha256 -hmac kkkk...`.
    #[test]
    fn known_vector_v2_and_what_it_covers() {
        let extras = SignedExtras {
            host: "kms.example.com",
            authorization: b"Bearer t",
        };
        let sign = |e: SignedExtras<'_>| {
            sign_request_v2(
                &secret(),
                "POST",
                "/v1/keys",
                1_700_000_000,
                "abcdefghijklmnop",
                e,
                b"{\"a\":1}",
            )
        };
        let sig = sign(extras);
        assert_eq!(sig, KNOWN_SIGNATURE_V2);
        assert_ne!(sig, KNOWN_SIGNATURE, "distinct from format 1");
        for other in [
            SignedExtras {
                host: "other.example.com",
                ..extras
            },
            SignedExtras {
                authorization: b"Bearer u",
                ..extras
            },
            SignedExtras {
                authorization: b"",
                ..extras
            },
        ] {
            assert_ne!(sign(other), sig);
        }
        let canonical = canonical_string_v2("GET", "h", "/", "1", "n", b"", b"");
        assert!(
            canonical.starts_with("KF2\nGET\nh\n/\n1\nn\ne3b0c442"),
            "{canonical}"
        );
    }

    const KNOWN_SIGNATURE_V2: &str =
        "fa70136309efd61c22de7a63f2f41176f5a3090c6c2c607bea4aa9d377e446b2";

    const KNOWN_SIGNATURE: &str =
        "ea698ac74a83aebebaac18930c7645c8a394330a61029724484982b772f02b23";

    #[test]
    fn signature_encodings() {
        let raw = [0xA5u8; 32];
        let hex_sig = hex::encode(raw);
        assert_eq!(decode_signature(&hex_sig), Some(raw));
        assert_eq!(decode_signature(&hex_sig.to_uppercase()), Some(raw));
        assert_eq!(decode_signature(&STANDARD.encode(raw)), Some(raw));
        assert_eq!(decode_signature(&URL_SAFE_NO_PAD.encode(raw)), Some(raw));
        assert_eq!(decode_signature(&hex_sig[..62]), None);
        assert_eq!(decode_signature(&STANDARD.encode([0u8; 31])), None);
        assert_eq!(decode_signature(""), None);
    }

    #[test]
    fn timestamp_and_nonce_syntax() {
        assert_eq!(parse_timestamp("1700000000"), Some(1_700_000_000));
        for bad in ["", "+17", "-1", " 17", "1.5", "99999999999999999999"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert!(is_valid_nonce("abcdefghijklmnop"));
        assert!(is_valid_nonce(&"A-_9".repeat(32)));
        assert!(!is_valid_nonce("short"));
        assert!(!is_valid_nonce(&"a".repeat(129)));
        assert!(!is_valid_nonce("abcdefghijklmno="));
        assert!(!is_valid_nonce("abcdefghijklmnop\n"));
    }
}
