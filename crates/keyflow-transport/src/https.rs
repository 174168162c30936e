//! HTTPS enforcement and the effective client address.

use std::net::IpAddr;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method};
use tower::Layer;

use crate::checks::{Checks, ChecksLayer, Refusal, TransportChecks};
use crate::config::{parse_public_host, TransportConfig};
use crate::connection::{resolve, ClientAddr, ConnectionInfo};
use crate::error::{https_redirect, TransportError};
use crate::util::original_uri;

/// Resolves the effective client (believing `X-Forwarded-*` only from trusted
/// proxies), inserts [`ClientAddr`], and in production turns plain HTTP away:
/// `GET`/`HEAD` get a `308` to `https://{public_host}{path_and_query}`, every other
/// method (or any method when no valid `public_host` is configured) gets
/// `400 https_required`. The redirect host never comes from the request.
#[derive(Clone, Debug)]
pub struct HttpsEnforcementLayer(ChecksLayer);

/// What HTTPS enforcement decides from: its part of the [`TransportConfig`], resolved.
#[derive(Clone, Debug)]
pub(crate) struct HttpsPolicy {
    production: bool,
    public_host: Option<String>,
    trusted_proxies: Vec<IpAddr>,
}

impl HttpsEnforcementLayer {
    /// Takes `production`, `public_host` and `trusted_proxies` from `config`. An
    /// invalid `public_host` is dropped (plain HTTP is then refused, not redirected).
    pub fn from_config(config: &TransportConfig) -> Self {
        Self(ChecksLayer::new(Checks {
            https: Some(HttpsPolicy::from_config(config)),
            ..Checks::default()
        }))
    }
}

impl<S> Layer<S> for HttpsEnforcementLayer {
    type Service = HttpsEnforcement<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service made by [`HttpsEnforcementLayer`]: [`TransportChecks`] with only this check.
pub type HttpsEnforcement<S> = TransportChecks<S>;

/// Response extension on every answer that turned plain HTTP away in production
/// (redirect or refusal), so an outer layer can count them (KeyFlow's
/// `plain_http_in_production` alert) without repeating the proxy-trust logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainHttpTurnedAway;

impl HttpsPolicy {
    pub(crate) fn from_config(config: &TransportConfig) -> Self {
        let public_host = config
            .public_host
            .as_deref()
            .and_then(|h| match parse_public_host(h) {
                Ok(h) => Some(h),
                Err(reason) => {
                    tracing::warn!(%reason, "ignoring invalid public_host");
                    None
                }
            });
        Self {
            production: config.production,
            public_host,
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// Inserts [`ClientAddr`]; in production, turns plain HTTP away.
    pub(crate) fn check(&self, req: &mut Request) -> Result<(), Refusal> {
        let resolved = resolve(
            req.extensions().get::<ConnectionInfo>(),
            req.headers(),
            &self.trusted_proxies,
        );
        if let Some(client) = resolved.client {
            req.extensions_mut().insert(ClientAddr(client));
        }
        if !self.production || resolved.https {
            return Ok(());
        }
        let redirect = if req.method() == Method::GET || req.method() == Method::HEAD {
            self.location(req)
        } else {
            None
        };
        Err(Refusal::PlainHttp(redirect))
    }

    fn location(&self, req: &Request) -> Option<HeaderValue> {
        let host = self.public_host.as_deref()?;
        let path = original_uri(req)
            .path_and_query()
            .map_or("/", |p| p.as_str());
        // `*` (OPTIONS) and anything not starting with `/` has no https URL.
        if !path.starts_with('/') {
            return None;
        }
        HeaderValue::try_from(format!("https://{host}{path}")).ok()
    }
}

/// The answer to plain HTTP in production: a redirect to `location`, or without one
/// `400 https_required`; marked [`PlainHttpTurnedAway`] either way.
pub(crate) fn turned_away(location: Option<HeaderValue>) -> Response {
    let mut resp = match location {
        Some(location) => https_redirect(location),
        None => TransportError::HttpsRequired.into_response(),
    };
    resp.extensions_mut().insert(PlainHttpTurnedAway);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn answer(config: &TransportConfig, method: &str, tls: bool) -> Response {
        let inner = tower::service_fn(|_req: Request| async {
            Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
        });
        let svc = HttpsEnforcementLayer::from_config(config).layer(inner);
        let mut req = Request::builder()
            .method(method)
            .uri("/x")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectionInfo {
            peer: "198.51.100.20:1".parse().unwrap(),
            tls,
            client_cert_sha256: None,
        });
        svc.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)] // tests fail by panicking
    async fn plain_http_turned_away_is_marked_for_counting() {
        let production = TransportConfig {
            production: true,
            public_host: Some("api.example".into()),
            ..TransportConfig::default()
        };
        for method in ["GET", "POST"] {
            let r = answer(&production, method, false).await;
            assert!(r.status().is_redirection() || r.status().is_client_error());
            assert!(
                r.extensions().get::<PlainHttpTurnedAway>().is_some(),
                "{method}"
            );
        }
        // Served: TLS in production, or anything in development.
        let r = answer(&production, "POST", true).await;
        assert!(r.extensions().get::<PlainHttpTurnedAway>().is_none());
        let r = answer(&TransportConfig::default(), "POST", false).await;
        assert!(r.extensions().get::<PlainHttpTurnedAway>().is_none());
    }
}
