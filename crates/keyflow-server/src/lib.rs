//! # keyflow-server
//!
//! KeyFlow's HTTPS REST API (`/api/encryption/…`, PRODUCT.md §5) over an
//! [`keyflow_kms::EncryptionService`]: bearer API tokens with roles, JSON errors with
//! stable codes, TLS via rustls on aws-lc-rs, request limits, graceful shutdown,
//! Prometheus metrics and an OpenAPI 3.1 document.
//!
//! [`app`] builds the whole `Router` (tests drive it with `tower::ServiceExt::oneshot`);
//! [`serve::serve_with`] runs it on a listener; [`launch`] assembles the whole server
//! from its [`settings`], as `keyflow serve` runs it.
//!
//! ## Layer order
//!
//! The stack is `keyflow-transport`'s, whose crate docs write the order down once, with
//! the reason for each step ([Layer order](keyflow_transport#layer-order)); the server
//! only fills it in:
//!
//! - outside it, the request id — every response, even a refusal, carries
//!   `x-request-id` for support;
//! - in its application slot ([`keyflow_transport::TransportLayer::between`]), the
//!   audit layer ([`audit`]: it sees every request and its final answer, the checks'
//!   refusals included, and feeds `/metrics`; outside the timeout, so a slow audit write
//!   is never mistaken for a slow request), then load shedding, the concurrency limit
//!   and the timeout (excess work gets 503 before anything buffers a body or touches a
//!   key), then the count of what HTTPS enforcement turns away (the
//!   `plain_http_in_production` alert);
//! - its client hook ([`keyflow_transport::TransportLayer::on_client`]) copies the
//!   effective client address into the audit record;
//! - inside it, the body limit (the JSON extractor answers 413 beyond it), then the
//!   routes, whose extractors authenticate and authorize before the body is parsed.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod client;
pub mod compliance;
pub mod early;
pub mod error;
pub mod extract;
pub mod health;
pub mod launch;
pub mod legacy;
pub mod metrics;
pub mod min_rate;
pub mod nonces;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod state;
pub mod tls;
pub mod upkeep;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{BoxError, Router};
use keyflow_kms::keyflow_core::{OsRng, SecureRandom};
use keyflow_transport::{TransportConfig, TransportLayer};
use pin_project_lite::pin_project;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;

pub use audit::{AuditPolicy, AuditTrail};
pub use error::ApiError;
pub use state::{AppState, Limits};

/// Robustness settings of the HTTP stack.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest number of requests in progress; beyond it, 503 at once.
    pub max_concurrency: usize,
    /// Longest a request may take; beyond it, 503.
    pub request_timeout: Duration,
    /// The transport-security configuration.
    pub transport: TransportConfig,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_concurrency: 1024,
            request_timeout: Duration::from_secs(30),
            transport: TransportConfig::default(),
        }
    }
}

/// Request ids: a random per-process prefix and a counter, 24 lowercase hex digits —
/// unique, cheap, and revealing nothing but the order of requests within one process.
/// Written digit by digit: `format!` was ~1 % of a small request's CPU.
fn next_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        let _ = OsRng.fill(&mut b);
        u32::from_be_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let value = (u128::from(prefix) << 64) | u128::from(n);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..24)
        .rev()
        .map(|i| char::from(HEX[((value >> (4 * i)) & 0xF) as usize]))
        .collect()
}

/// Gives every request an id (request extension) and echoes it as `x-request-id`.
/// A plain tower layer: cheaper per request than `axum::middleware::from_fn`.
#[derive(Clone, Copy, Debug, Default)]
struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService(inner)
    }
}

/// Built at compile time; a `&str` name would be checked and classified per response.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Debug)]
struct RequestIdService<S>(S);

impl<S> tower::Service<Request> for RequestIdService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = next_request_id();
        let header = HeaderValue::from_str(&id).ok();
        req.extensions_mut()
            .insert(extract::RequestId(id, audit::AuditSlot::detached()));
        RequestIdFuture {
            inner: self.0.call(req),
            header,
        }
    }
}

pin_project! {
    /// The inner answer with `x-request-id` set: a concrete future, no allocation.
    struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        header: Option<HeaderValue>,
    }
}

impl<F, E> std::future::Future for RequestIdFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(v) = this.header.take() {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
        std::task::Poll::Ready(Ok(resp))
    }
}

async fn overloaded(e: BoxError) -> Response {
    if e.is::<tower::timeout::error::Elapsed>() || e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded.into_response()
    } else {
        ApiError::Internal(e.to_string()).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The API's routes, paths under `/api/encryption`. Each one is also in
/// [`audit::ROUTES`] (with its methods and operation name) or is one of the unaudited
/// probes; a unit test below keeps the two lists together.
fn api_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    use routes::{
        audit as audit_route, backup, compliance, data, fields, files, keys, lifecycle, system,
    };
    vec![
        ("/encrypt", post(data::encrypt)),
        ("/decrypt", post(data::decrypt)),
        ("/batch/encrypt", post(data::batch_encrypt)),
        ("/batch/decrypt", post(data::batch_decrypt)),
        ("/blind-index", post(data::blind_index)),
        ("/encrypt-fields", post(fields::encrypt)),
        ("/decrypt-fields", post(fields::decrypt)),
        ("/mask", post(data::mask)),
        // Streamed bodies: their own limit (Limits::file_body_bytes), checked by the
        // handlers; the JSON body limit below applies only to buffered extractors.
        ("/files/encrypt", post(files::encrypt_stream)),
        ("/files/decrypt", post(files::decrypt_stream)),
        ("/encrypt-file", post(files::encrypt_file_json)),
        ("/decrypt-file", post(files::decrypt_file_json)),
        ("/keys/generate", post(keys::generate)),
        ("/keys/rotate", post(keys::rotate)),
        ("/keys", get(keys::list)),
        ("/keys/backup", post(backup::backup)),
        ("/keys/restore", post(backup::restore)),
        ("/keys/revoke", post(lifecycle::revoke)),
        ("/keys/reinstate", post(lifecycle::reinstate)),
        ("/keys/destroy", post(lifecycle::destroy)),
        (
            "/keys/policy",
            get(lifecycle::get_policy).post(lifecycle::set_policy),
        ),
        ("/keys/rotate-due", post(lifecycle::rotate_due)),
        ("/rewrap", post(lifecycle::rewrap)),
        ("/health", get(system::health)),
        ("/status", get(system::status)),
        ("/audit", get(audit_route::query)),
        ("/compliance", get(compliance::report)),
        ("/openapi.json", get(system::openapi)),
    ]
}

/// How many of the API's routes (method and path) are audited, and how many there are
/// but the unaudited probes: what `/compliance` reports under PCI DSS 10.2.
pub(crate) fn route_coverage() -> (usize, usize) {
    const PROBES: [&str; 2] = ["/health", "/openapi.json"];
    let served: Vec<&str> = api_routes()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !PROBES.contains(p))
        .collect();
    let audited = served
        .iter()
        .filter(|p| audit::ROUTES.iter().any(|(_, r, _)| r == *p))
        .count();
    (audited, served.len())
}

/// The whole application: routes and every layer, in the order documented above.
pub fn app(state: AppState, settings: &HttpSettings) -> Router {
    use routes::system;
    // Full paths rather than `Router::nest`: a nested router adds a prefix-stripping
    // layer to every request.
    const API: &str = "/api/encryption";
    let routes = api_routes();
    let mut router = Router::new();
    for (path, handler) in routes {
        router = router.route(&format!("{API}{path}"), handler);
    }
    let router = router
        .route("/metrics", get(system::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    let body_limit = state.limits.json_body_bytes;
    let t = &settings.transport;
    state.alerts.set_production(t.production);
    let counted = state.clone();
    if let Err(e) = t.validate() {
        // Each layer fails closed on what is wrong; say so once, loudly.
        tracing::error!(error = %e, "transport configuration is invalid");
    }
    // One tower stack around the whole router (the order is documented at the top of
    // this file), instead of one `Router::layer` per layer: `Router::layer` boxes and
    // clones every layer per route and per request, which measured ~10 % of a small
    // request's CPU. The stack is mounted as the router's only (fallback) service, so
    // callers still get a `Router`.
    let within = ServiceBuilder::new()
        .layer(audit::AuditLayer::new(state.clone()))
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(settings.max_concurrency))
        .timeout(settings.request_timeout)
        // Counts what HTTPS enforcement turns away (the plain_http_in_production alert).
        .map_response(move |resp: Response| {
            if resp
                .extensions()
                .get::<keyflow_transport::PlainHttpTurnedAway>()
                .is_some()
            {
                counted.metrics.count_plain_http();
            }
            resp
        });
    let transport = TransportLayer::new(t)
        .on_client(audit::note_client)
        .between(within);
    let stack = ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(transport)
        .layer(DefaultBodyLimit::max(body_limit))
        .service(router);
    Router::new().fallback_service(stack)
}

#[cfg(test)]
mod tests {
    use super::next_request_id;

    #[test]
    fn every_route_is_audited_or_a_named_probe() {
        let served: Vec<&str> = super::api_routes().into_iter().map(|(p, _)| p).collect();
        for p in &served {
            let audited = crate::audit::ROUTES.iter().any(|(_, r, _)| r == p);
            let probe = ["/health", "/openapi.json"].contains(p);
            assert!(audited != probe, "{p}: audited {audited}, probe {probe}");
        }
        for (_, p, _) in crate::audit::ROUTES {
            assert!(served.contains(p), "{p} is in audit::ROUTES but not served");
        }
    }

    #[test]
    fn request_ids_are_24_hex_digits_with_one_prefix_and_a_counter() {
        let (a, b) = (next_request_id(), next_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 24, "{id}");
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_eq!(a[..8], b[..8], "one prefix per process");
        let n = |id: &str| u64::from_str_radix(&id[8..], 16).unwrap();
        assert!(n(&b) > n(&a), "{a} then {b}");
    }
}
