//! The one error type the layers answer with, and its JSON response.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};

/// Why a layer refused a request.
///
/// Every variant becomes a JSON body `{"error": "<code>", "message": "<text>"}` with the
/// status from [`TransportError::status`]. The code is stable (clients match on it); the
/// message is for people and may change. Neither ever holds a secret, a signature, a
/// header value or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Plain HTTP in production for a method that cannot be redirected (or no public host
    /// is configured to redirect to). `400 https_required`.
    #[error("this service only accepts HTTPS")]
    HttpsRequired,
    /// A path that requires request integrity arrived without the signature headers.
    /// `401 integrity_required`.
    #[error("this path requires the X-KeyFlow-Timestamp, X-KeyFlow-Nonce and X-KeyFlow-Signature headers")]
    IntegrityRequired,
    /// The signature headers are malformed or the signature does not match.
    /// `401 integrity_invalid`.
    #[error("the request signature is malformed or does not match the request")]
    IntegrityInvalid,
    /// The signed timestamp is outside the accepted window (past or future).
    /// `401 integrity_stale`.
    #[error("the request timestamp is outside the accepted window")]
    IntegrityStale,
    /// The nonce was already used inside the window. `401 integrity_replayed`.
    #[error("this nonce has already been used")]
    IntegrityReplayed,
    /// The request is signed in a format older than the server accepts
    /// (`integrity_min_version`). `401 integrity_outdated`.
    #[error("this server requires request signatures of format {min} or later (X-KeyFlow-Signature-Version)")]
    IntegrityOutdated {
        /// The oldest format accepted.
        min: u8,
    },
    /// Integrity is required but no secret is configured (a server misconfiguration).
    /// `503 integrity_unavailable`.
    #[error("the service is temporarily unavailable")]
    IntegrityUnavailable,
    /// The replay table is full of nonces that are still inside the window.
    /// `503 replay_cache_full`.
    #[error("the service is temporarily unavailable; retry shortly")]
    ReplayCacheFull,
    /// The body is larger than the configured maximum. `413 body_too_large`.
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// The body could not be read from the connection. `400 body_unreadable`.
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// Client-certificate pins are configured and the connection presented no
    /// certificate, or one whose SHA-256 is not pinned. `403 client_cert_not_pinned`.
    #[error("a pinned client certificate is required")]
    ClientCertNotPinned,
    /// A CORS preflight or WebSocket upgrade from an origin that is not allowed.
    /// `403 origin_not_allowed`.
    #[error("this origin is not allowed")]
    OriginNotAllowed,
    /// `HEADER_ENCRYPTION_STRICT` is on and a sensitive header is not a KeyFlow
    /// ciphertext. `400 header_not_encrypted`.
    #[error("header `{0}` must carry a KeyFlow ciphertext (kf1:...)")]
    HeaderNotEncrypted(HeaderName),
}

impl TransportError {
    /// The stable machine-readable code, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HttpsRequired => "https_required",
            Self::IntegrityRequired => "integrity_required",
            Self::IntegrityInvalid => "integrity_invalid",
            Self::IntegrityStale => "integrity_stale",
            Self::IntegrityReplayed => "integrity_replayed",
            Self::IntegrityOutdated { .. } => "integrity_outdated",
            Self::IntegrityUnavailable => "integrity_unavailable",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::ClientCertNotPinned => "client_cert_not_pinned",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::HeaderNotEncrypted(_) => "header_not_encrypted",
        }
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HttpsRequired | Self::BodyUnreadable | Self::HeaderNotEncrypted(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::IntegrityRequired
            | Self::IntegrityInvalid
            | Self::IntegrityStale
            | Self::IntegrityReplayed
            | Self::IntegrityOutdated { .. } => StatusCode::UNAUTHORIZED,
            Self::ClientCertNotPinned | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IntegrityUnavailable | Self::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for TransportError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(
                error = self.code(),
                "transport layer could not serve the request"
            );
        } else {
            tracing::info!(error = self.code(), "transport layer refused the request");
        }
        json_response(status, self.code(), &self.to_string())
    }
}

/// `308 Permanent Redirect` to `location` (an `https://` URL built from configuration),
/// with an `https_required` JSON body for clients that do not follow redirects.
pub(crate) fn https_redirect(location: HeaderValue) -> Response {
    tracing::debug!("redirecting plain HTTP to HTTPS");
    let mut res = json_response(
        StatusCode::PERMANENT_REDIRECT,
        TransportError::HttpsRequired.code(),
        "this service only accepts HTTPS; follow the Location header",
    );
    res.headers_mut().insert(LOCATION, location);
    res
}

fn json_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_stable() {
        let cases = [
            (TransportError::HttpsRequired, "https_required", 400),
            (TransportError::IntegrityRequired, "integrity_required", 401),
            (TransportError::IntegrityInvalid, "integrity_invalid", 401),
            (TransportError::IntegrityStale, "integrity_stale", 401),
            (TransportError::IntegrityReplayed, "integrity_replayed", 401),
            (
                TransportError::IntegrityUnavailable,
                "integrity_unavailable",
                503,
            ),
            (TransportError::ReplayCacheFull, "replay_cache_full", 503),
            (
                TransportError::BodyTooLarge { limit: 1 },
                "body_too_large",
                413,
            ),
            (TransportError::BodyUnreadable, "body_unreadable", 400),
            (
                TransportError::ClientCertNotPinned,
                "client_cert_not_pinned",
                403,
            ),
            (TransportError::OriginNotAllowed, "origin_not_allowed", 403),
            (
                TransportError::HeaderNotEncrypted(HeaderName::from_static("x-ssn")),
                "header_not_encrypted",
                400,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.status().as_u16(), status, "{code}");
        }
    }

    #[test]
    fn response_is_json_with_code_and_message() {
        let res =
            TransportError::HeaderNotEncrypted(HeaderName::from_static("x-ssn")).into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    }
}
