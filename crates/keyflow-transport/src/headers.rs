//! Security headers on every response.

use std::sync::LazyLock;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use tower::{Layer, Service};

use crate::util::{Finish, ResponseFuture};

/// `Strict-Transport-Security`: one year, subdomains, preload-list eligible.
pub const HSTS: &str = "max-age=31536000; includeSubDomains; preload";
/// `Content-Security-Policy`: an API serves no active content, so nothing may load,
/// frame it, or be posted from it. No `unsafe-*` source.
pub const CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// `Permissions-Policy`: every powerful browser feature off.
pub const PERMISSIONS_POLICY: &str = "accelerometer=(), autoplay=(), camera=(), \
display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), \
magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
publickey-credentials-get=(), screen-wake-lock=(), sync-xhr=(), usb=(), \
xr-spatial-tracking=()";

/// Every header this layer sets, with its value.
///
/// The values overwrite whatever the handler set: a handler cannot weaken them (an
/// app that needs, say, a cacheable response should not put this layer in front of it).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("strict-transport-security", HSTS),
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", PERMISSIONS_POLICY),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
    ("pragma", "no-cache"),
];

/// A response extension: the `'sha256-…'` source of the one inline style sheet a page
/// served by the handler carries (e.g. the compliance report's HTML form). The layer
/// then appends `style-src '<hash>'` to [`CSP`]: that exact sheet may apply, nothing
/// else — no `unsafe-inline`, and every other directive unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineStyleHash(pub String);

impl InlineStyleHash {
    /// The hash source of `sheet` (the text between `<style>` and `</style>`).
    pub fn of(sheet: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sheet.as_bytes());
        Self(format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        ))
    }
}

fn allow_inline_style(headers: &mut HeaderMap, hash: &InlineStyleHash) {
    // Only base64 characters after the prefix: nothing can close the quote.
    let well_formed = hash.0.strip_prefix("sha256-").is_some_and(|b| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    });
    if let (true, Ok(v)) = (
        well_formed,
        HeaderValue::from_str(&format!("{CSP}; style-src '{}'", hash.0)),
    ) {
        headers.insert(http::header::CONTENT_SECURITY_POLICY, v);
    }
}

/// Puts [`SECURITY_HEADERS`] on every response the inner service returns (`200`s,
/// handler errors, `404`s and the refusals of inner layers alike), in every mode.
/// HSTS is sent even over plain HTTP, where browsers ignore it; the spec asks for it
/// on every response.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecurityHeadersLayer;

impl SecurityHeadersLayer {
    /// The layer (it has no configuration).
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeaders { inner }
    }
}

/// The service made by [`SecurityHeadersLayer`].
#[derive(Clone, Debug)]
pub struct SecurityHeaders<S> {
    inner: S,
}

/// [`SECURITY_HEADERS`] as header names and values, built once: `from_static` checks
/// and classifies a name on every call, which cost ~2 % of a small request.
static PARSED_SECURITY_HEADERS: LazyLock<Vec<(HeaderName, HeaderValue)>> = LazyLock::new(|| {
    SECURITY_HEADERS
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
});

/// Sets [`SECURITY_HEADERS`] on `headers`, replacing earlier values.
pub fn apply_security_headers(headers: &mut HeaderMap) {
    headers.reserve(SECURITY_HEADERS.len());
    for (name, value) in PARSED_SECURITY_HEADERS.iter() {
        headers.insert(name.clone(), value.clone());
    }
}

/// Sets [`SECURITY_HEADERS`] on a response on its way out, widening the CSP for an
/// [`InlineStyleHash`] the handler attached.
pub(crate) fn finish_security_headers(res: &mut Response) {
    apply_security_headers(res.headers_mut());
    if let Some(hash) = res.extensions_mut().remove::<InlineStyleHash>() {
        allow_inline_style(res.headers_mut(), &hash);
    }
}

impl<S> Service<Request> for SecurityHeaders<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        ResponseFuture::inner(self.inner.call(req), Finish::SecurityHeaders)
    }
}

#[cfg(test)]
mod tests {
    use http::header::CACHE_CONTROL;

    use super::*;

    #[test]
    fn applied_set_matches_the_documented_list() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=600"),
        );
        apply_security_headers(&mut h);
        assert_eq!(h.len(), SECURITY_HEADERS.len());
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(h.get_all(*name).iter().count(), 1, "{name}");
            assert_eq!(h[*name], *value, "{name}");
        }
    }

    #[test]
    fn csp_has_no_unsafe_source() {
        assert!(!CSP.contains("unsafe"));
    }

    #[test]
    fn an_inline_style_hash_extends_only_style_src() {
        let mut h = HeaderMap::new();
        apply_security_headers(&mut h);
        let hash = InlineStyleHash::of("body{color:red}");
        assert!(
            hash.0.starts_with("sha256-") && hash.0.len() == 7 + 44,
            "{}",
            hash.0
        );
        allow_inline_style(&mut h, &hash);
        assert_eq!(
            h[http::header::CONTENT_SECURITY_POLICY],
            format!("{CSP}; style-src '{}'", hash.0).as_str()
        );
        // Anything but a hash is ignored: the policy stays as it was.
        for bad in ["sha256-x'; script-src *", "unsafe-inline", "sha256-"] {
            let mut h = HeaderMap::new();
            apply_security_headers(&mut h);
            allow_inline_style(&mut h, &InlineStyleHash(bad.into()));
            assert_eq!(h[http::header::CONTENT_SECURITY_POLICY], CSP, "{bad}");
        }
    }
}
