//! `HEADER_ENCRYPTION_STRICT`: sensitive headers must arrive as KeyFlow ciphertexts.

use axum::extract::Request;
use http::{HeaderMap, HeaderName};
use tower::Layer;

use crate::checks::{Checks, ChecksLayer, Refusal, TransportChecks};
use crate::config::TransportConfig;
use crate::error::TransportError;

/// The prefix of a KeyFlow ciphertext's text form (`keyflow_core::envelope::TEXT_PREFIX`).
pub const CIPHERTEXT_PREFIX: &str = "kf1:";

/// Whether `value` has the shape of a KeyFlow ciphertext in text form: `kf1:` then
/// non-empty unpadded URL-safe base64. Only the shape is checked; whether it decrypts
/// is for whoever holds the key.
pub fn is_keyflow_ciphertext(value: &[u8]) -> bool {
    let Some(b64) = value.strip_prefix(CIPHERTEXT_PREFIX.as_bytes()) else {
        return false;
    };
    !b64.is_empty()
        && b64.len() % 4 != 1
        && b64
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Checks the configured sensitive headers (default
/// [`DEFAULT_SENSITIVE_HEADERS`](crate::DEFAULT_SENSITIVE_HEADERS)).
///
/// Strict: every value of every sensitive header present must be a KeyFlow ciphertext
/// ([`is_keyflow_ciphertext`]), else `400 header_not_encrypted` naming the header (never
/// its value). Not strict: the request goes on and a warning naming the header is
/// logged.
#[derive(Clone, Debug)]
pub struct HeaderEncryptionLayer(ChecksLayer);

/// The sensitive header names, and whether a clear value is refused.
#[derive(Clone, Debug)]
pub(crate) struct HeaderPolicy {
    strict: bool,
    names: Vec<HeaderName>,
}

impl HeaderEncryptionLayer {
    /// Checks `names` (case-insensitive; invalid names are dropped with a warning),
    /// refusing clear values when `strict`.
    pub fn new(strict: bool, names: &[String]) -> Self {
        Self(ChecksLayer::new(Checks {
            header_encryption: Some(HeaderPolicy::new(strict, names)),
            ..Checks::default()
        }))
    }

    /// Takes `header_encryption_strict` and `sensitive_headers` from `config`.
    pub fn from_config(config: &TransportConfig) -> Self {
        Self::new(config.header_encryption_strict, &config.sensitive_headers)
    }
}

impl<S> Layer<S> for HeaderEncryptionLayer {
    type Service = HeaderEncryption<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service made by [`HeaderEncryptionLayer`]: [`TransportChecks`] with only this check.
pub type HeaderEncryption<S> = TransportChecks<S>;

impl HeaderPolicy {
    pub(crate) fn new(strict: bool, names: &[String]) -> Self {
        let names = names
            .iter()
            .filter_map(|n| match HeaderName::from_bytes(n.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(header = %n, "ignoring invalid sensitive header name");
                    None
                }
            })
            .collect();
        Self { strict, names }
    }

    pub(crate) fn from_config(config: &TransportConfig) -> Self {
        Self::new(config.header_encryption_strict, &config.sensitive_headers)
    }

    /// The first sensitive header that carries a clear value.
    fn first_clear(&self, headers: &HeaderMap) -> Option<&HeaderName> {
        self.names.iter().find(|name| {
            headers
                .get_all(*name)
                .iter()
                .any(|v| !is_keyflow_ciphertext(v.as_bytes()))
        })
    }

    /// Strict: refuses a clear sensitive header. Otherwise logs it and lets it through.
    pub(crate) fn check(&self, req: &Request) -> Result<(), Refusal> {
        if let Some(name) = self.first_clear(req.headers()) {
            if self.strict {
                return Err(TransportError::HeaderNotEncrypted(name.clone()).into());
            }
            tracing::warn!(header = %name, "sensitive header arrived unencrypted (HEADER_ENCRYPTION_STRICT is off)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn ciphertext_shape() {
        assert!(is_keyflow_ciphertext(b"kf1:AQEI-_az09"));
        assert!(is_keyflow_ciphertext(b"kf1:AQ"));
        for bad in [
            &b"123-45-6789"[..],
            b"kf1:",
            b"kf1:A",
            b"kf1:AQ==",
            b"kf1:A+B/",
            b"kf1:AQ EI",
            b"KF1:AQEI",
            b"kf2:AQEI",
        ] {
            assert!(
                !is_keyflow_ciphertext(bad),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn every_value_of_a_repeated_header_is_checked() {
        let policy = HeaderPolicy::new(true, &["X-SSN".into(), "bad name".into()]);
        let mut h = HeaderMap::new();
        h.append("x-ssn", HeaderValue::from_static("kf1:AQEI"));
        assert!(policy.first_clear(&h).is_none());
        h.append("x-ssn", HeaderValue::from_static("123-45-6789"));
        assert_eq!(
            policy.first_clear(&h).map(HeaderName::as_str),
            Some("x-ssn")
        );
    }
}
