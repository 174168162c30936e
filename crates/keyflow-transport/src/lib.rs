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
//! Outermost first. This is the one place the order is written down: [`TransportLayer`]
//! builds exactly this stack, KeyFlow's server runs it (with its own layers in the slot
//! of step 2), and the server's and the architecture docs refer here.
//!
//! 1. [`SecurityHeadersLayer`] — outermost so that every response gets the headers:
//!    handler responses, 404s, and the refusals of every step below.
//! 2. The application's own layers, if any ([`TransportLayer::between`]): KeyFlow's
//!    server puts its audit layer, load shedding, concurrency limit and timeout here,
//!    so they see the checks' refusals and refuse excess work before any check runs.
//! 3. [`TransportChecks`], one service making the check-only decisions in this order:
//!    1. HTTPS enforcement ([`HttpsEnforcementLayer`]) — before anything reads the
//!       request: plain HTTP is redirected or refused before a signature is checked or
//!       a nonce consumed over it. It also settles the effective client
//!       ([`ClientAddr`]) for everything inside, and hands it to the application's
//!       [`TransportLayer::on_client`] hook;
//!    2. client-certificate pinning ([`ClientCertPinningLayer`]) — a connection-level
//!       identity check, cheap; a client without a pinned certificate learns nothing
//!       more, not even the CORS policy;
//!    3. CORS ([`CorsLayer`]) — answers preflights, which carry no signature and no
//!       sensitive headers and so must be answered before those checks; and it finishes
//!       every answer from the steps after it, so their refusals still carry
//!       `Access-Control-Allow-Origin` and a browser page can read the error;
//!    4. the sensitive-header check ([`HeaderEncryptionLayer`]) — header-only and
//!       cheap, so it runs before any body is read.
//! 4. [`RequestIntegrityLayer`] — innermost, next to the handler: it buffers the body
//!    (the expensive step) and consumes the nonce, so it runs only for requests that
//!    passed every cheaper check, and nothing after it can refuse a request whose
//!    nonce was already spent.
//!
//! Each single-check layer is still public and behaves as it did as its own layer; it
//! is the same [`TransportChecks`] service with only its check. Every service returns a
//! concrete future ([`ResponseFuture`]): no allocation per request and layer, except a
//! signed request's integrity check.
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

mod checks;
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

use axum::extract::Request;
use tower::layer::util::Identity;
use tower::Layer;

pub use checks::TransportChecks;
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
pub use util::ResponseFuture;

/// The whole stack, in the documented order (see [Layer order](crate#layer-order)), for
/// `Router::layer` or a `tower::ServiceBuilder`.
///
/// `M` is the application's slot between the security headers and the checks
/// ([`TransportLayer::between`]); [`Identity`] (nothing) by default.
#[derive(Clone, Debug)]
pub struct TransportLayer<M = Identity> {
    security_headers: SecurityHeadersLayer,
    between: M,
    checks: checks::ChecksLayer,
    integrity: RequestIntegrityLayer,
}

/// The service [`TransportLayer`] wraps around an inner service `S`, with `M` in the
/// application's slot.
pub type TransportService<S, M = Identity> =
    SecurityHeaders<<M as Layer<TransportChecks<RequestIntegrity<S>>>>::Service>;

impl TransportLayer {
    /// Builds the whole stack from `config` without validating it (see [`layer`]).
    pub fn new(config: &TransportConfig) -> Self {
        Self {
            security_headers: SecurityHeadersLayer::new(),
            between: Identity::new(),
            checks: checks::ChecksLayer::new(checks::Checks::from_config(config)),
            integrity: RequestIntegrityLayer::from_config(config),
        }
    }
}

impl<M> TransportLayer<M> {
    /// Puts `layer` (a `tower::ServiceBuilder` of several, say) between the security
    /// headers and the checks: its answers get the security headers, and it sees every
    /// refusal of the checks and of request integrity.
    pub fn between<N>(self, layer: N) -> TransportLayer<N> {
        TransportLayer {
            security_headers: self.security_headers,
            between: layer,
            checks: self.checks,
            integrity: self.integrity,
        }
    }

    /// Calls `note` with every request that passed HTTPS enforcement, once its
    /// [`ClientAddr`] is set and before any later check can refuse it (KeyFlow's server
    /// copies the address into the request's audit record).
    pub fn on_client(mut self, note: fn(&Request)) -> Self {
        self.checks = self.checks.on_client(note);
        self
    }
}

impl<S, M> Layer<S> for TransportLayer<M>
where
    M: Layer<TransportChecks<RequestIntegrity<S>>>,
{
    type Service = TransportService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = self.integrity.layer(inner);
        let service = self.checks.layer(service);
        let service = self.between.layer(service);
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
