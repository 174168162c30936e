//! CORS and WebSocket origin checks against an exact allow-list.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tower::Layer;

use crate::checks::{Checks, ChecksLayer, Refusal, TransportChecks};
use crate::config::{normalize_origin, TransportConfig};
use crate::error::TransportError;
use crate::util::Finish;

/// Methods a preflight allows.
pub const CORS_ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a preflight always allows; the configured sensitive headers are
/// added to these.
pub const CORS_ALLOW_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "x-keyflow-timestamp",
    "x-keyflow-nonce",
    "x-keyflow-signature",
];
/// How long a browser may cache a preflight answer, in seconds.
pub const CORS_MAX_AGE_SECS: u32 = 600;

/// CORS from an exact allow-list (`FRONTEND_URL`, `ALLOWED_WS_ORIGINS`); never `*`.
///
/// - No `Origin`: nothing to do.
/// - Preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`): from an
///   allowed origin, `204` with the allowed methods and headers; otherwise
///   `403 origin_not_allowed`. Preflights never reach the inner service.
/// - WebSocket upgrade (`Upgrade: websocket`) from an origin not allowed:
///   `403 origin_not_allowed` (browsers apply no CORS to WebSockets, so the server must).
/// - Any other request goes on; the response gets `Vary: Origin`, and, for an allowed
///   origin, `Access-Control-Allow-Origin` echoing it. Other origins get no CORS
///   headers, so browsers keep the response from the page.
///
/// No `Access-Control-Allow-Credentials`: KeyFlow authenticates with the
/// `Authorization` header, not cookies.
#[derive(Clone, Debug)]
pub struct CorsLayer(ChecksLayer);

/// The allowed origins (normalized) and the preflight's allowed request headers.
#[derive(Clone, Debug)]
pub(crate) struct CorsPolicy {
    origins: Vec<String>,
    allow_headers: HeaderValue,
}

impl CorsLayer {
    /// Allows exactly `origins` (each normalized to `scheme://host[:port]`; `*`,
    /// `null` and unparsable entries are dropped with a warning) and, besides
    /// [`CORS_ALLOW_HEADERS`], the request headers in `extra_allowed_headers`.
    pub fn new(origins: &[String], extra_allowed_headers: &[String]) -> Self {
        Self(ChecksLayer::new(Checks {
            cors: Some(CorsPolicy::new(origins, extra_allowed_headers)),
            ..Checks::default()
        }))
    }

    /// Takes `allowed_origins` and (as extra allowed headers) `sensitive_headers` from
    /// `config`.
    pub fn from_config(config: &TransportConfig) -> Self {
        Self::new(&config.allowed_origins, &config.sensitive_headers)
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service made by [`CorsLayer`]: [`TransportChecks`] with only this check.
pub type Cors<S> = TransportChecks<S>;

impl CorsPolicy {
    pub(crate) fn new(origins: &[String], extra_allowed_headers: &[String]) -> Self {
        let mut normalized = Vec::new();
        for origin in origins {
            match normalize_origin(origin) {
                Ok(o) if !normalized.contains(&o) => normalized.push(o),
                Ok(_) => {}
                Err(reason) => tracing::warn!(%origin, reason, "ignoring invalid allowed origin"),
            }
        }
        let mut headers: Vec<String> = CORS_ALLOW_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        for h in extra_allowed_headers {
            let h = h.to_ascii_lowercase();
            if !headers.contains(&h) {
                headers.push(h);
            }
        }
        // Names that would not form a valid header value are left out.
        headers.retain(|h| HeaderValue::from_str(h).is_ok() && !h.contains(','));
        let allow_headers = HeaderValue::from_str(&headers.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static("authorization, content-type"));
        Self {
            origins: normalized,
            allow_headers,
        }
    }

    pub(crate) fn from_config(config: &TransportConfig) -> Self {
        Self::new(&config.allowed_origins, &config.sensitive_headers)
    }

    /// Answers a preflight, refuses a WebSocket upgrade from an origin not allowed;
    /// otherwise says how to finish the answer (nothing without an `Origin`).
    pub(crate) fn check(&self, req: &Request) -> Result<Finish, Refusal> {
        let headers = req.headers();
        if !headers.contains_key(ORIGIN) {
            return Ok(Finish::Nothing);
        }
        let allowed = self.allowed_origin(headers);
        let is_preflight =
            req.method() == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            return Err(match allowed {
                Some(origin) => Refusal::Preflight {
                    origin,
                    allow_headers: self.allow_headers.clone(),
                },
                None => TransportError::OriginNotAllowed.into(),
            });
        }
        if allowed.is_none() && is_websocket_upgrade(headers) {
            return Err(TransportError::OriginNotAllowed.into());
        }
        Ok(Finish::Cors(allowed))
    }

    /// The request's single `Origin` if it is on the list (more than one `Origin`
    /// header is never allowed).
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut values = headers.get_all(ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }
}

/// `204` to an allowed preflight: the methods and request headers allowed, for
/// [`CORS_MAX_AGE_SECS`].
pub(crate) fn preflight(origin: HeaderValue, allow_headers: HeaderValue) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_ALLOW_METHODS),
    );
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(CORS_MAX_AGE_SECS));
    h.insert(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    res
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_single_origins_match() {
        let p = CorsPolicy::new(
            &["https://App.example.com/".into(), "*".into(), "null".into()],
            &[],
        );
        assert_eq!(p.origins, vec!["https://app.example.com"]);
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert!(p.allowed_origin(&h).is_some());
        h.append(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert!(p.allowed_origin(&h).is_none(), "two Origin headers");
        for other in [
            "https://app.example.com.evil.com",
            "http://app.example.com",
            "null",
            "*",
        ] {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static(other));
            assert!(p.allowed_origin(&h).is_none(), "{other}");
        }
    }

    #[test]
    fn sensitive_headers_are_allowed_in_preflight() {
        let policy = CorsPolicy::new(&[], &["X-SSN".into()]);
        let v = policy.allow_headers.to_str().unwrap();
        assert!(v.ends_with("x-keyflow-signature, x-ssn"), "{v}");
    }

    #[test]
    fn websocket_upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("h2c, WebSocket"));
        assert!(is_websocket_upgrade(&h));
        assert!(!is_websocket_upgrade(&HeaderMap::new()));
    }
}
