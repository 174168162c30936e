//! # keyflow-transport
//!
//! Tower layers that put KeyFlow's transport security in front of any axum 0.8 app:
//! security headers, HTTPS enforcement with proxy-aware client addresses,
//! client-certificate pinning, CORS, the `HEADER_ENCRYPTION_STRICT` check and
//! HMAC request integrity with replay protection.
//!
//! [`layer`] applies all of them in the order below; each is also public on its own.
//! The layers do no TLS and open no sockets: the server terminates TLS and inserts a
//! [`ConnectionInfo`] into every request's extensions; a request without one is
//! treated as plain HTTP from an unknown, untrusted peer.
//!
//! ```
//! use axum::{body::Body, http::Request, routing::post, Router};
//! use keyflow_transport::{ConnectionInfo, IntegritySecret, TransportConfig};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a real server: `let config = TransportConfig::from_env()?;`
//! let config = TransportConfig {
//!     production: true,
//!     public_host: Some("kms.example.com".into()),
//!     integrity_secret: Some(IntegritySecret::new("a shared secret of 32 bytes or more")?),
//!     integrity_required_prefixes: vec!["/v1/keys".into()],
//!     ..TransportConfig::default()
//! };
//! let app = Router::new()
//!     .route("/v1/keys", post(|| async { "created" }))
//!     // After the routes (and fallback), on the outermost router.
//!     .layer(keyflow_transport::try_layer(config)?);
//!
//! // What the server does for each request on a TLS connection it accepted:
//! let mut request = Request::post("/v1/keys").body(Body::empty())?;
//! request.extensions_mut().insert(ConnectionInfo {
//!     peer: "192.0.2.10:50000".parse()?,
//!     tls: true,
//!     client_cert_sha256: None,
//! });
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.status(), 401); // unsigned request on a key-management path
//! assert_eq!(response.headers()["x-frame-options"], "DENY");
//! # Ok(())
//! # }
//! ```
//!
//! ## Layer order
//!
//! Outermost first; this is the one place the order is written down, and
//! [`TransportLayer`] builds exactly this stack:
//!
//! 1. [`SecurityHeadersLayer`] — outermost so that every response gets the headers:
//!    handler responses, 404s, and the refusals of every layer below.
//! 2. [`HttpsEnforcementLayer`] — before anything reads the request: plain HTTP is
//!    redirected or refused before a signature is checked or a nonce consumed over it.
//!    It also settles the effective client ([`ClientAddr`]) for everything inside.
//! 3. [`ClientCertPinningLayer`] — a connection-level identity check, cheap; a client
//!    without a pinned certificate learns nothing more, not even the CORS policy.
//! 4. [`CorsLayer`] — answers preflights, which carry no signature and no sensitive
//!    headers and so must be answered before those checks; and it sits outside them
//!    so their refusals still carry `Access-Control-Allow-Origin` and a browser page
//!    can read the error.
//! 5. [`HeaderEncryptionLayer`] — header-only and cheap, so it runs before any body
//!    is read.
//! 6. [`RequestIntegrityLayer`] — innermost, next to the handler: it buffers the body
//!    (the expensive step) and consumes the nonce, so it runs only for requests that
//!    passed every cheaper check, and nothing after it can refuse a request whose
//!    nonce was already spent.
//!
//! `Router::layer` also wraps the fallback, so 404s pass through the stack; apply it
//! last, on the outermost router, so every route is covered. Path prefixes, redirects
//! and signatures use the URI as the client sent it (axum's `OriginalUri` when
//! present), never a nested router's stripped path.
//!
//! ## Request integrity wire format
//!
//! A signed request carries three headers:
//!
//! | header | value |
//! | --- | --- |
//! | `X-KeyFlow-Timestamp` | Unix time in seconds, decimal digits only |
//! | `X-KeyFlow-Nonce` | 16–128 characters of `[A-Za-z0-9_-]`, new for every request |
//! | `X-KeyFlow-Signature` | HMAC-SHA256 of the canonical string, keyed with `REQUEST_INTEGRITY_SECRET` (its UTF-8 bytes); lowercase hex (64 digits) or base64 (standard or URL-safe, padding optional) |
//!
//! The canonical string is five lines joined by `\n` (no trailing newline):
//!
//! ```text
//! METHOD            as sent, e.g. POST
//! PATH_AND_QUERY    the request target exactly as sent: /v1/keys?limit=10 (not decoded, not normalized)
//! TIMESTAMP         the X-KeyFlow-Timestamp header text
//! NONCE             the X-KeyFlow-Nonce header text
//! BODY_SHA256       lowercase hex SHA-256 of the body bytes (of the empty string if no body)
//! ```
//!
//! The server accepts a timestamp within ±`integrity_window` (5 minutes) of its
//! clock, remembers each nonce until `timestamp + window`, and buffers at most
//! `integrity_max_body` (1 MiB) to hash. [`sign_request`] computes the signature;
//! [`canonical_string`] shows what is signed.
//!
//! ## Errors
//!
//! Refusals are JSON `{"error": "<code>", "message": "<text>"}`; see
//! [`TransportError`] for the codes and statuses. Plain-HTTP `GET`/`HEAD` in
//! production get `308` to `https://{public_host}{path_and_query}` with an
//! `https_required` body.

mod config;
mod connection;
mod cors;
mod environment;
mod error;
mod header_encryption;
mod headers;
mod https;
mod integrity;
mod pinning;
mod util;

use tower::Layer;

pub use config::{
    ConfigError, IntegritySecret, TransportConfig, DEFAULT_INTEGRITY_MAX_BODY,
    DEFAULT_INTEGRITY_MAX_NONCES, DEFAULT_INTEGRITY_WINDOW, DEFAULT_SENSITIVE_HEADERS, ENV_VARS,
    MIN_INTEGRITY_SECRET_LEN,
};
pub use connection::{ClientAddr, ConnectionInfo};
pub use cors::{Cors, CorsLayer, CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_MAX_AGE_SECS};
pub use environment::{Environment, ENVIRONMENT_VARS};
pub use error::TransportError;
pub use header_encryption::{
    is_keyflow_ciphertext, HeaderEncryption, HeaderEncryptionLayer, CIPHERTEXT_PREFIX,
};
pub use headers::{
    apply_security_headers, InlineStyleHash, SecurityHeaders, SecurityHeadersLayer, CSP, HSTS,
    PERMISSIONS_POLICY, SECURITY_HEADERS,
};
pub use https::{HttpsEnforcement, HttpsEnforcementLayer, PlainHttpTurnedAway};
pub use integrity::{
    canonical_string, canonical_string_v2, sign_request, sign_request_v2, IntegrityVerified,
    MemoryNonceStore, NonceFuture, NonceOutcome, NonceStore, RequestIntegrity,
    RequestIntegrityLayer, SignedExtras, NONCE_HEADER, NONCE_MAX_LEN, NONCE_MIN_LEN,
    SIGNATURE_HEADER, SIGNATURE_VERSION_HEADER, TIMESTAMP_HEADER,
};
pub use pinning::{ClientCertPinning, ClientCertPinningLayer};

/// All the layers, in the documented order, for `Router::layer`.
#[derive(Clone, Debug)]
pub struct TransportLayer {
    security_headers: SecurityHeadersLayer,
    https: HttpsEnforcementLayer,
    pinning: ClientCertPinningLayer,
    cors: CorsLayer,
    header_encryption: HeaderEncryptionLayer,
    integrity: RequestIntegrityLayer,
}

/// The service [`TransportLayer`] wraps around an inner service `S`.
pub type TransportService<S> = SecurityHeaders<
    HttpsEnforcement<ClientCertPinning<Cors<HeaderEncryption<RequestIntegrity<S>>>>>,
>;

impl TransportLayer {
    /// Builds every layer from `config` without validating it (see [`layer`]).
    pub fn new(config: &TransportConfig) -> Self {
        Self {
            security_headers: SecurityHeadersLayer::new(),
            https: HttpsEnforcementLayer::from_config(config),
            pinning: ClientCertPinningLayer::from_config(config),
            cors: CorsLayer::from_config(config),
            header_encryption: HeaderEncryptionLayer::from_config(config),
            integrity: RequestIntegrityLayer::from_config(config),
        }
    }
}

impl<S> Layer<S> for TransportLayer {
    type Service = TransportService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = self.integrity.layer(inner);
        let service = self.header_encryption.layer(service);
        let service = self.cors.layer(service);
        let service = self.pinning.layer(service);
        let service = self.https.layer(service);
        self.security_headers.layer(service)
    }
}

/// Every layer, in the documented order: `router.layer(keyflow_transport::layer(cfg))`.
///
/// A configuration that fails [`TransportConfig::validate`] is logged and used anyway,
/// failing closed; prefer [`try_layer`] at startup.
pub fn layer(config: TransportConfig) -> TransportLayer {
    if let Err(err) = config.validate() {
        tracing::error!(%err, "transport configuration is invalid; failing closed where it matters");
    }
    TransportLayer::new(&config)
}

/// Like [`layer`], but refuses a configuration that fails [`TransportConfig::validate`].
pub fn try_layer(config: TransportConfig) -> Result<TransportLayer, ConfigError> {
    config.validate()?;
    Ok(TransportLayer::new(&config))
}
