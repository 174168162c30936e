//! Request integrity: HMAC-SHA256 over method, target, timestamp, nonce and body hash.

mod nonce;
mod sign;

use std::error::Error as StdError;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_lc_rs::hmac;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use keyflow_core::clock::{Clock, SystemClock};

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::util::{original_uri, Finish, ResponseFuture};
pub use nonce::{MemoryNonceStore, NonceFuture, NonceOutcome, NonceStore};
pub use sign::{
    canonical_string, canonical_string_v2, sign_request, sign_request_v2, SignedExtras,
    NONCE_HEADER, NONCE_MAX_LEN, NONCE_MIN_LEN, SIGNATURE_HEADER, SIGNATURE_VERSION_HEADER,
    TIMESTAMP_HEADER,
};

/// Inserted into the extensions of a request whose signature was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegrityVerified {
    /// The signed `X-KeyFlow-Timestamp`.
    pub timestamp: u64,
    /// The signature format: 1 (method, target, timestamp, nonce, body) or 2 (also
    /// `Host` and the `Authorization` hash).
    pub version: u8,
}

/// Verifies request signatures (see the crate docs for the wire format).
///
/// On a path under one of `integrity_required_prefixes` the three `X-KeyFlow-*`
/// headers are mandatory. Elsewhere a request is checked only if it carries any of
/// them and a secret is configured (a client that signs is told when it got it
/// wrong). A checked request is let through with its body unchanged and an
/// [`IntegrityVerified`] extension, or refused:
///
/// | check, in order | refusal |
/// | --- | --- |
/// | required path but no secret configured | `503 integrity_unavailable` |
/// | a header missing | `401 integrity_required` |
/// | a header repeated, not ASCII, or malformed (an unknown signature version, a format-2 request without `Host`) | `401 integrity_invalid` |
/// | format older than `integrity_min_version` | `401 integrity_outdated` |
/// | timestamp more than the window from now, past or future | `401 integrity_stale` |
/// | body over `integrity_max_body` | `413 body_too_large` |
/// | signature does not match (constant-time compare) | `401 integrity_invalid` |
/// | nonce seen inside the window | `401 integrity_replayed` |
/// | nonce table full of live nonces | `503 replay_cache_full` |
/// | shared nonce store unreachable | `503 integrity_unavailable` |
///
/// Only requests with a valid signature reach the nonce table, so without the secret
/// nobody can fill it.
#[derive(Clone, Debug)]
pub struct RequestIntegrityLayer {
    policy: Arc<IntegrityPolicy>,
}

struct IntegrityPolicy {
    /// The window and the nonce table read this clock's wall time.
    clock: Arc<dyn Clock>,
    key: Option<hmac::Key>,
    required_prefixes: Vec<String>,
    window_secs: u64,
    max_body: usize,
    min_version: u8,
    nonces: Arc<dyn NonceStore>,
}

impl std::fmt::Debug for IntegrityPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrityPolicy")
            .field("has_key", &self.key.is_some())
            .field("required_prefixes", &self.required_prefixes)
            .field("window_secs", &self.window_secs)
            .field("max_body", &self.max_body)
            .field("min_version", &self.min_version)
            .field("nonces", &self.nonces)
            .finish_non_exhaustive()
    }
}

impl RequestIntegrityLayer {
    /// Takes `integrity_secret`, `integrity_required_prefixes`, `integrity_window`,
    /// `integrity_max_body`, `integrity_min_version` and the nonce store (`nonce_store`,
    /// else an in-process table of `integrity_max_nonces`) from `config`.
    pub fn from_config(config: &TransportConfig) -> Self {
        Self::from_config_and_clock(config, Arc::new(SystemClock))
    }

    /// [`Self::from_config`] with the clock that the timestamp window and the nonce
    /// table read (tests pass a `keyflow_core::ManualClock`).
    pub fn from_config_and_clock(config: &TransportConfig, clock: Arc<dyn Clock>) -> Self {
        let key = config
            .integrity_secret
            .as_ref()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose()));
        Self {
            policy: Arc::new(IntegrityPolicy {
                clock,
                key,
                required_prefixes: config.integrity_required_prefixes.clone(),
                window_secs: config.integrity_window.as_secs(),
                max_body: config.integrity_max_body,
                min_version: config.integrity_min_version,
                nonces: config.nonce_store.clone().unwrap_or_else(|| {
                    Arc::new(MemoryNonceStore::new(config.integrity_max_nonces))
                }),
            }),
        }
    }
}

impl<S> Layer<S> for RequestIntegrityLayer {
    type Service = RequestIntegrity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIntegrity {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`RequestIntegrityLayer`].
#[derive(Clone, Debug)]
pub struct RequestIntegrity<S> {
    inner: S,
    policy: Arc<IntegrityPolicy>,
}

/// Whether `path` is `prefix` or below it (`/v1/keys` covers `/v1/keys/1`, not
/// `/v1/keysets`).
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The single value of `name` as text; `Ok(None)` if absent.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, TransportError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TransportError::IntegrityInvalid);
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| TransportError::IntegrityInvalid)
}

fn is_length_limit(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

impl IntegrityPolicy {
    /// Whether `req` is checked at all: on a required path, or signed while a secret
    /// is configured. The common case (an unsigned request on a route that needs no
    /// signature) is not, and passes without copying or allocating anything.
    fn applies_to(&self, req: &Request) -> bool {
        let headers = req.headers();
        let signed = [&TIMESTAMP_HEADER, &NONCE_HEADER, &SIGNATURE_HEADER]
            .iter()
            .any(|h| headers.contains_key(*h));
        let path = original_uri(req).path();
        let required = self.required_prefixes.iter().any(|p| under_prefix(path, p));
        required || (signed && self.key.is_some())
    }

    /// `Ok(request)` (body re-attached) to go on, `Err` to refuse; for a request
    /// [`Self::applies_to`].
    async fn verify(&self, req: Request) -> Result<Request, TransportError> {
        let headers = req.headers();
        let uri = original_uri(&req).clone();
        let Some(key) = &self.key else {
            return Err(TransportError::IntegrityUnavailable);
        };

        let version = match single_header(headers, &SIGNATURE_VERSION_HEADER)? {
            None | Some("1") => 1u8,
            Some("2") => 2,
            Some(_) => return Err(TransportError::IntegrityInvalid),
        };
        let timestamp_text = single_header(headers, &TIMESTAMP_HEADER)?;
        let nonce = single_header(headers, &NONCE_HEADER)?;
        let signature = single_header(headers, &SIGNATURE_HEADER)?;
        let (Some(timestamp_text), Some(nonce), Some(signature)) =
            (timestamp_text, nonce, signature)
        else {
            return Err(TransportError::IntegrityRequired);
        };
        let timestamp =
            sign::parse_timestamp(timestamp_text).ok_or(TransportError::IntegrityInvalid)?;
        if !sign::is_valid_nonce(nonce) {
            return Err(TransportError::IntegrityInvalid);
        }
        let presented =
            sign::decode_signature(signature).ok_or(TransportError::IntegrityInvalid)?;
        if version < self.min_version {
            return Err(TransportError::IntegrityOutdated {
                min: self.min_version,
            });
        }
        // Format 2 also signs the host (HTTP/2 `:authority`, else `Host`) and the
        // `Authorization` header's bytes.
        let host = match uri.authority() {
            Some(a) => Some(a.as_str().to_owned()),
            None => single_header(headers, &HOST)?.map(str::to_owned),
        };
        let authorization = {
            let mut values = headers.get_all(AUTHORIZATION).iter();
            let first = values
                .next()
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            if values.next().is_some() {
                return Err(TransportError::IntegrityInvalid);
            }
            first
        };
        if version == 2 && host.is_none() {
            return Err(TransportError::IntegrityInvalid);
        }
        let now = u64::try_from(self.clock.now_millis() / 1000).unwrap_or(0);
        if now.abs_diff(timestamp) > self.window_secs {
            return Err(TransportError::IntegrityStale);
        }

        let too_large = TransportError::BodyTooLarge {
            limit: self.max_body,
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body as u64) {
            return Err(too_large);
        }
        let timestamp_text = timestamp_text.to_owned();
        let nonce = nonce.to_owned();

        let (mut parts, body) = req.into_parts();
        let body = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if is_length_limit(e.as_ref()) => return Err(too_large),
            Err(_) => return Err(TransportError::BodyUnreadable),
        };

        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let expected = match (version, &host) {
            (2, Some(host)) => sign::tag_v2(
                key,
                parts.method.as_str(),
                path_and_query,
                &timestamp_text,
                &nonce,
                SignedExtras {
                    host,
                    authorization: &authorization,
                },
                &body,
            ),
            _ => sign::tag(
                key,
                parts.method.as_str(),
                path_and_query,
                &timestamp_text,
                &nonce,
                &body,
            ),
        };
        if !bool::from(expected.ct_eq(&presented)) {
            return Err(TransportError::IntegrityInvalid);
        }

        let expires_at = timestamp.saturating_add(self.window_secs);
        let outcome = match self.nonces.check_and_insert(&nonce, expires_at, now).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "the nonce store is unavailable: signed request refused");
                return Err(TransportError::IntegrityUnavailable);
            }
        };
        match outcome {
            NonceOutcome::Fresh => {}
            NonceOutcome::Replayed => return Err(TransportError::IntegrityReplayed),
            NonceOutcome::Full => return Err(TransportError::ReplayCacheFull),
        }

        if version == 1 {
            tracing::debug!("request signed in format 1 (no Host / Authorization binding)");
        }
        parts
            .extensions
            .insert(IntegrityVerified { timestamp, version });
        Ok(Request::from_parts(parts, Body::from(body)))
    }
}

impl<S> Service<Request> for RequestIntegrity<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !self.policy.applies_to(&req) {
            return ResponseFuture::inner(self.inner.call(req), Finish::Nothing);
        }
        // Verification is async (body, nonce store) and has no nameable future type:
        // boxed, which is nothing next to buffering the body and the HMAC. The service
        // that was polled ready is the one to call; leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        ResponseFuture::boxed(Box::pin(async move {
            match policy.verify(req).await {
                Ok(req) => inner.call(req).await,
                Err(err) => Ok(err.into_response()),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_respects_segments() {
        assert!(under_prefix("/v1/keys", "/v1/keys"));
        assert!(under_prefix("/v1/keys/abc", "/v1/keys"));
        assert!(under_prefix("/v1/keys/abc", "/v1/keys/"));
        assert!(!under_prefix("/v1/keysets", "/v1/keys"));
        assert!(!under_prefix("/v1", "/v1/keys"));
        assert!(under_prefix("/anything", "/"));
    }
}
