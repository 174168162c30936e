//! The audit layer: the one place that records every API request in the audit trail
//! ([`keyflow_kms::audit`]), after the handler answered and *before* the answer leaves.
//!
//! How a request's record is put together:
//!
//! 1. [`AuditLayer`] (just inside the security headers, outside load shedding, so even
//!    an overload refusal is recorded) classifies the request by method and path into
//!    an operation name and route ([`ROUTES`]), and puts a fresh [`AuditSlot`] into the
//!    request's extensions;
//! 2. a small map just inside `HttpsEnforcementLayer` copies the effective client
//!    address ([`ClientAddr`], the real client behind trusted proxies) into the slot;
//! 3. the [`Principal`](crate::auth::Principal) extractor notes the actor once the
//!    token is valid (so a 403 has an actor), and every purpose it is checked against;
//!    [`Metrics::record`](crate::metrics::Metrics::record), which every handler calls,
//!    notes purposes, key versions, the item count and a non-error result
//!    (`partial_failure`);
//! 4. with the response in hand, the layer reads the result (`ok`, the error code of the
//!    JSON error body, or one derived from the status), builds one [`AuditEvent`] and
//!    awaits [`AuditLog::record`]: the group-commit writer answers once the record is
//!    durable. A streamed response is recorded when its head is produced.
//!
//! **Metrics come from the same place.** With the answer known, the layer hands
//! [`Metrics::observe`](crate::metrics::Metrics) the figures of that record — route,
//! operation, the status sent, latency, and the operation the handler recorded with its
//! outcome and item count — so `/metrics` and the trail cannot disagree. This happens
//! with auditing disabled too: the layer then classifies the request, attaches a slot
//! and counts it, but writes nothing, authenticates nothing and reads no body.
//!
//! **Fail closed.** When the record cannot be written and the policy is fail-closed
//! (production's default), the response is replaced by `503 audit_unavailable`: the
//! client never receives the result of an unrecorded operation. (A key change made by
//! the handler has still happened; the refusal up front below keeps that window to the
//! first failure.) While [`AuditLog::failing`], new requests are refused up front
//! — but their refusal is still offered to the writer, which is how the trail notices
//! that the store is back. `status` and `audit` reads are exempt, so operators can see
//! the outage; in fail-open mode (development's default) the response goes out and the
//! failure is logged as an error.
//!
//! Not audited: `/api/encryption/health`, `/api/encryption/openapi.json` and `/metrics`
//! — probes and documents polled by machines, touching no key and no data; auditing
//! them would bury the trail in noise. Everything else is, unknown routes included.
//!
//! Records never hold plaintext, ciphertext, tokens or key material: only the metadata
//! listed in [`AuditEvent`]. An unknown route's path is not recorded either (it is
//! whatever the client sent).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::{Extensions, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use keyflow_kms::audit::log::{AuditError, AuditLog};
use keyflow_kms::audit::{AuditEvent, AuditSealer, AuditStore, Source};
use keyflow_kms::clock::Clock;
use keyflow_transport::{ClientAddr, ConnectionInfo};

use crate::error::{ApiError, ErrorCode};
use crate::extract::RequestId;
use crate::metrics::{Answered, Op, OpOutcome, OpRecord, RouteKey};
use crate::state::AppState;

/// Whether requests are audited, and what happens when the trail cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Record every request (refused in production when off).
    pub enabled: bool,
    /// When a record cannot be written, answer `503 audit_unavailable` instead of the
    /// operation's result, and refuse new operations until the trail is writable.
    pub fail_closed: bool,
}

impl AuditPolicy {
    /// Production's default: audited, fail closed.
    pub const PRODUCTION: Self = Self {
        enabled: true,
        fail_closed: true,
    };
    /// Development's default: audited, fail open (a loud error, the response goes out).
    pub const DEVELOPMENT: Self = Self {
        enabled: true,
        fail_closed: false,
    };
    /// Not audited (development only).
    pub const OFF: Self = Self {
        enabled: false,
        fail_closed: false,
    };
}

impl Default for AuditPolicy {
    /// The safe one: [`AuditPolicy::PRODUCTION`].
    fn default() -> Self {
        Self::PRODUCTION
    }
}

/// A running audit trail: the writer, the store it writes (and `/audit` reads), the
/// clock events are stamped with, and the failure policy. Cheap to clone.
#[derive(Clone)]
pub struct AuditTrail {
    log: AuditLog,
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    fail_closed: bool,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("log", &self.log)
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Starts the writer (on the current tokio runtime) when `policy` enables auditing;
    /// `None` otherwise.
    pub fn start(
        store: Arc<dyn AuditStore>,
        sealer: AuditSealer,
        clock: Arc<dyn Clock>,
        policy: AuditPolicy,
    ) -> Option<Self> {
        policy.enabled.then(|| Self {
            log: AuditLog::start(store.clone(), sealer, clock.clone()),
            store,
            clock,
            fail_closed: policy.fail_closed,
        })
    }

    /// [`start`](Self::start) with a journaled writer
    /// ([`AuditLog::start_journaled`]): records go to a local journal in `dir` before
    /// the answer, and reach `store` in the background. What `keyflow serve` runs.
    pub fn start_journaled(
        store: Arc<dyn AuditStore>,
        sealer: AuditSealer,
        clock: Arc<dyn Clock>,
        policy: AuditPolicy,
        dir: &std::path::Path,
    ) -> std::io::Result<Option<Self>> {
        if !policy.enabled {
            return Ok(None);
        }
        Ok(Some(Self {
            log: AuditLog::start_journaled(store.clone(), sealer, clock.clone(), dir)?,
            store,
            clock,
            fail_closed: policy.fail_closed,
        }))
    }

    /// The writer.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// The store records go to.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Whether an unwritable trail refuses operations.
    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Now, on the trail's clock (Unix ms).
    pub fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Records `event`; returns once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.log.record(event).await
    }
}

/// What the handling of one request noted for its audit record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpDetails {
    /// The token id, once authenticated.
    pub actor: Option<String>,
    /// Whether the handler checked the request's token (whatever the outcome).
    pub token_checked: bool,
    /// The token's name.
    pub actor_name: Option<String>,
    /// The effective client address.
    pub client: Option<IpAddr>,
    /// Purposes involved (each once, in the order first noted).
    pub purposes: Vec<String>,
    /// Key versions involved (each once).
    pub versions: Vec<u32>,
    /// Items processed.
    pub items: Option<u64>,
    /// A result other than `ok` on a successful answer (e.g. `partial_failure`).
    pub result: Option<String>,
    /// Further non-sensitive facts (an admin's reason).
    pub detail: Option<serde_json::Value>,
}

/// What an attached slot holds.
#[derive(Debug, Default)]
struct Noted {
    details: OpDetails,
    /// The operation [`Metrics::record`](crate::metrics::Metrics::record) was told of,
    /// for `/metrics`.
    op: Option<Op>,
    /// The layer has taken the details: later notes are not its to count.
    closed: bool,
}

/// Where the extractors and handlers of one request note what the audit record (and
/// `/metrics`) says about it. The audit layer puts an attached slot into the request's
/// extensions; one taken from a request that is not audited is detached and notes
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct AuditSlot(Option<Arc<Mutex<Noted>>>);

impl AuditSlot {
    fn attached() -> Self {
        Self(Some(Arc::default()))
    }

    /// A slot that notes nothing.
    pub fn detached() -> Self {
        Self(None)
    }

    /// The slot of the request with these extensions (detached if there is none).
    pub fn of(extensions: &Extensions) -> Self {
        extensions.get::<AuditSlot>().cloned().unwrap_or_default()
    }

    fn with_noted<T>(&self, f: impl FnOnce(&mut Noted) -> T) -> Option<T> {
        // A panic elsewhere cannot leave these plain fields half-written.
        let m = self.0.as_ref()?;
        Some(f(&mut m.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    fn with(&self, f: impl FnOnce(&mut OpDetails)) {
        self.with_noted(|n| f(&mut n.details));
    }

    /// The details noted so far.
    pub fn details(&self) -> OpDetails {
        let mut d = OpDetails::default();
        self.with(|x| d = x.clone());
        d
    }

    /// Notes that the request's token was checked (before the outcome is known).
    pub fn set_token_checked(&self) {
        self.with(|d| d.token_checked = true);
    }

    /// Notes the authenticated actor.
    pub fn set_actor(&self, id: &str, name: &str) {
        self.with(|d| {
            d.actor = Some(id.to_owned());
            d.actor_name = (!name.is_empty()).then(|| name.to_owned());
        });
    }

    /// Notes a purpose involved.
    pub fn add_purpose(&self, purpose: &str) {
        self.with(|d| {
            if !d.purposes.iter().any(|p| p == purpose) {
                d.purposes.push(purpose.to_owned());
            }
        });
    }

    /// Notes a key version involved.
    pub fn add_version(&self, version: u32) {
        self.with(|d| {
            if !d.versions.contains(&version) {
                d.versions.push(version);
            }
        });
    }

    /// Notes a purpose, a version and the item count at once.
    pub fn note_key(&self, purpose: &str, version: Option<u32>, items: u64) {
        self.add_purpose(purpose);
        if let Some(v) = version {
            self.add_version(v);
        }
        self.with(|d| d.items = Some(items));
    }

    /// Notes further non-sensitive facts (never a value from a request's data).
    pub fn set_detail(&self, detail: serde_json::Value) {
        self.with(|d| d.detail = Some(detail));
    }

    /// Notes what [`Metrics::record`](crate::metrics::Metrics::record) was told.
    /// Whether the layer will count the operation: false for a detached slot and once
    /// the layer has taken the details ([`AuditSlot::close`]).
    pub(crate) fn note(&self, r: &OpRecord<'_>) -> bool {
        if self.0.is_none() {
            return false;
        }
        if let Some(p) = r.purpose {
            self.add_purpose(p);
        }
        if let Some(v) = r.key_version {
            self.add_version(v);
        }
        self.with_noted(|n| {
            n.op = Some(r.op);
            n.details.items = Some(r.items as u64);
            if r.result != "ok" {
                n.details.result = Some(r.result.to_owned());
            }
            !n.closed
        })
        .unwrap_or(false)
    }

    /// Takes the details and the recorded operation, once the answer is known; what is
    /// noted afterwards (a streamed body's outcome) is counted by whoever notes it.
    fn close(&self) -> (OpDetails, Option<Op>) {
        self.with_noted(|n| {
            n.closed = true;
            (std::mem::take(&mut n.details), n.op)
        })
        .unwrap_or_default()
    }

    fn set_client(&self, ip: IpAddr) {
        self.with(|d| d.client = Some(ip));
    }
}

/// The API's base path.
pub(crate) const API: &str = "/api/encryption";

/// Paths never audited (see the module documentation).
const UNAUDITED: [&str; 3] = [
    "/api/encryption/health",
    "/api/encryption/openapi.json",
    "/metrics",
];

/// Every audited route `crate::app` serves: method, path under [`API`], and the
/// operation name in audit records. The names are those of `/metrics`
/// ([`Op::name`]), except that revoke, reinstate and destroy are told apart.
// Key administration uses the same dotted names as the CLI (`keys.rotate`, …) so one
// filter finds an action whichever door it came through; data operations keep the
// metrics names.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/encrypt", Op::Encrypt.name()),
    ("POST", "/decrypt", Op::Decrypt.name()),
    ("POST", "/batch/encrypt", Op::BatchEncrypt.name()),
    ("POST", "/batch/decrypt", Op::BatchDecrypt.name()),
    ("POST", "/blind-index", Op::BlindIndex.name()),
    ("POST", "/encrypt-fields", Op::EncryptFields.name()),
    ("POST", "/decrypt-fields", Op::DecryptFields.name()),
    ("POST", "/mask", Op::Mask.name()),
    ("POST", "/files/encrypt", Op::FileEncrypt.name()),
    ("POST", "/files/decrypt", Op::FileDecrypt.name()),
    ("POST", "/encrypt-file", Op::FileEncrypt.name()),
    ("POST", "/decrypt-file", Op::FileDecrypt.name()),
    ("POST", "/keys/generate", "keys.generate"),
    ("POST", "/keys/rotate", "keys.rotate"),
    ("GET", "/keys", "keys.list"),
    ("POST", "/keys/backup", "keys.backup"),
    ("POST", "/keys/restore", "keys.restore"),
    ("POST", "/keys/revoke", "keys.revoke"),
    ("POST", "/keys/reinstate", "keys.reinstate"),
    ("POST", "/keys/destroy", "keys.destroy"),
    ("GET", "/keys/policy", "keys.policy.read"),
    ("POST", "/keys/policy", "keys.policy"),
    ("POST", "/keys/rotate-due", "keys.rotate_due"),
    ("POST", "/rewrap", Op::Rewrap.name()),
    ("GET", "/status", Op::Status.name()),
    ("GET", "/audit", Op::Audit.name()),
    ("GET", "/compliance", "compliance"),
];

/// The operation of a request matching no route (or a route with another method).
pub const UNKNOWN: &str = "unknown";

/// Reads that stay available while the trail cannot be written (operators need them to
/// see the outage); they are still recorded when possible.
const MONITORING: [&str; 3] = [Op::Status.name(), Op::Audit.name(), "compliance"];

/// What the layer knows of a request before it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    operation: &'static str,
    /// Its `route` and `operation` labels in `/metrics`.
    key: RouteKey,
    /// `METHOD /path` of a known path (never a raw unknown path).
    route: Option<String>,
    /// Refused (fail-closed) when the trail cannot be written.
    guarded: bool,
}

/// `None`: not audited.
fn classify(method: &Method, path: &str) -> Option<Target> {
    if UNAUDITED.contains(&path) {
        return None;
    }
    let sub = path.strip_prefix(API);
    // axum answers HEAD with the GET handler.
    let served_as = if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    };
    let mut path_at = None;
    let mut route_at = None;
    for (i, (m, p, op)) in ROUTES.iter().enumerate() {
        if sub == Some(*p) {
            path_at = path_at.or(Some(i));
            if *m == served_as {
                route_at = Some((i, *op));
            }
        }
    }
    let (key, operation) = match (route_at, path_at) {
        (Some((i, op)), _) => (RouteKey::Route(i), op),
        (None, Some(i)) => (RouteKey::OtherMethod(i), UNKNOWN),
        (None, None) => (RouteKey::Unmatched, UNKNOWN),
    };
    let route = path_at.map(|_| format!("{method} {path}"));
    Some(Target {
        operation,
        key,
        route,
        guarded: !MONITORING.contains(&operation),
    })
}

/// The stable code of a status when the body names none.
fn code_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        503 => "unavailable",
        300..=399 => "redirect",
        500..=599 => "internal_error",
        _ => "error",
    }
}

/// Error bodies larger than this are not read for their code.
const MAX_ERROR_BODY: u64 = 16 * 1024;

/// A code as the API writes them (`[a-z0-9_]`, short): anything else from a body is
/// not trusted into the record.
fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The `error` member of a small JSON error body not made by [`ApiError`] (the
/// transport layers'), and the response rebuilt around the bytes read.
async fn code_of_body(resp: Response) -> (Response, Option<String>) {
    let (parts, body) = resp.into_parts();
    if body.size_hint().upper().is_none_or(|n| n > MAX_ERROR_BODY) {
        return (Response::from_parts(parts, body), None);
    }
    match axum::body::to_bytes(body, MAX_ERROR_BODY as usize).await {
        Ok(bytes) => {
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .filter(|c| is_code(c));
            (Response::from_parts(parts, Body::from(bytes)), code)
        }
        Err(_) => (Response::from_parts(parts, Body::empty()), None),
    }
}

/// The record's `result`: `ok` (or the handler's non-error outcome) for a success, the
/// error code otherwise.
async fn result_of(resp: Response, noted: Option<String>) -> (Response, String) {
    let status = resp.status();
    if status.is_success() {
        return (resp, noted.unwrap_or_else(|| "ok".into()));
    }
    if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
        let code = (*code).to_owned();
        return (resp, code);
    }
    let (resp, code) = code_of_body(resp).await;
    let code = code.unwrap_or_else(|| code_of_status(status).to_owned());
    (resp, code)
}

/// Facts about a request taken before it is handled.
struct Pending {
    state: AppState,
    trail: AuditTrail,
    /// The `Authorization` header, for a request whose handler never checked it.
    authorization: Option<HeaderValue>,
    target: Target,
    time: i64,
    started: Duration,
    request_id: Option<String>,
    peer: Option<IpAddr>,
}

impl Pending {
    /// Time since the request arrived.
    fn elapsed(&self) -> Duration {
        self.trail.clock.monotonic().saturating_sub(self.started)
    }

    fn event(
        &self,
        d: OpDetails,
        status: StatusCode,
        result: String,
        latency: Duration,
    ) -> AuditEvent {
        let actor = d.actor.unwrap_or_else(|| "anonymous".into());
        let mut e = AuditEvent::new(self.time, Source::Http, actor, self.target.operation);
        e.actor_name = d.actor_name;
        e.route = self.target.route.clone();
        // The peer only when the request never reached the layer that resolves the
        // client (an overload refusal): behind a proxy, that is the proxy.
        e.client = d.client.or(self.peer).map(|ip| ip.to_string());
        e.request_id = self.request_id.clone();
        e.purposes = d.purposes;
        e.versions = d.versions;
        e.items = d.items;
        e.result = result;
        e.status = Some(status.as_u16());
        e.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        e.detail = d.detail;
        e
    }

    /// The actor of a request no handler authenticated (an unknown route, a refusal
    /// by a layer): a token is checked here so that the record says who it was;
    /// `anonymous` stays for requests without a valid token.
    async fn identify(&self, d: &mut OpDetails) {
        if d.token_checked || d.actor.is_some() {
            return;
        }
        let header = self.authorization.as_ref().and_then(|h| h.to_str().ok());
        if header.is_some() {
            if let Ok(who) = self.state.tokens.authenticate(header).await {
                d.actor = Some(who.id().to_owned());
                d.actor_name = (!who.name().is_empty()).then(|| who.name().to_owned());
            }
        }
    }

    /// Writes the record of `resp` and counts it in `/metrics`; answers `resp`, or the
    /// fail-closed refusal.
    async fn finish(self, resp: Response, slot: AuditSlot) -> Response {
        // Latency to the response head, not including this record's own cost.
        let latency = self.elapsed();
        let (mut d, op) = slot.close();
        self.identify(&mut d).await;
        let status = resp.status();
        let (resp, result) = result_of(resp, d.result.take()).await;
        let event = self.event(d, status, result, latency);
        // The operation's figures, from the record (before it moves to the writer).
        let op = op.map(|op| OpOutcome {
            op,
            ok: event.result == "ok",
            items: event.items.unwrap_or(0),
        });
        let resp = match self.trail.record(event).await {
            Ok(_) => resp,
            Err(e) if self.trail.fail_closed && self.target.guarded => {
                tracing::error!(error = %e, operation = self.target.operation, status = status.as_u16(),
                    "audit record not written: the response is withheld (503 audit_unavailable)");
                ApiError::AuditUnavailable.into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, operation = self.target.operation, status = status.as_u16(),
                    "AUDIT RECORD LOST: answered without its audit record (failure policy open, or a monitoring read)");
                resp
            }
        };
        // The status the client gets (a withheld answer's 503); the operation still
        // counts as what its handler did.
        self.state.metrics.observe(&Answered {
            route: self.target.key,
            status: resp.status(),
            latency,
            op,
        });
        resp
    }

    /// The trail is failing and the policy is fail-closed: refuses at once, offering the
    /// refusal's record to the writer (a success is how the trail notices it is back).
    async fn refuse(self) -> Response {
        let latency = self.elapsed();
        let mut d = OpDetails::default();
        self.identify(&mut d).await;
        let event = self.event(
            d,
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable".into(),
            latency,
        );
        if let Err(e) = self.trail.record(event).await {
            tracing::debug!(error = %e, "audit trail still failing; request refused");
        }
        let resp = ApiError::AuditUnavailable.into_response();
        self.state.metrics.observe(&Answered {
            route: self.target.key,
            status: resp.status(),
            latency,
            op: None,
        });
        resp
    }
}

/// Counts the answer to an audited request when auditing is disabled: the same figures
/// as [`Pending::finish`] gives `/metrics`, without the record (so no token check and
/// no error body read: `ok` is a success status with no other result noted).
async fn count_unrecorded<E>(
    state: AppState,
    route: RouteKey,
    started: Duration,
    slot: AuditSlot,
    answer: impl Future<Output = Result<Response, E>>,
) -> Result<Response, E> {
    let resp = answer.await?;
    let latency = state.service.clock().monotonic().saturating_sub(started);
    let (d, op) = slot.close();
    let status = resp.status();
    let op = op.map(|op| OpOutcome {
        op,
        ok: status.is_success() && d.result.is_none(),
        items: d.items.unwrap_or(0),
    });
    state.metrics.observe(&Answered {
        route,
        status,
        latency,
        op,
    });
    Ok(resp)
}

/// Records every request (see the module documentation) in the state's audit trail, and
/// counts it in the state's metrics. Without a trail it only counts.
#[derive(Clone)]
pub struct AuditLayer {
    state: AppState,
}

impl AuditLayer {
    /// A layer writing to `state.audit` (none: auditing disabled); `state.tokens`
    /// identifies the callers of requests no handler authenticated.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service made by [`AuditLayer`].
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    state: AppState,
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S> tower::Service<Request> for AuditService<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Some(target) = classify(req.method(), req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let Some(trail) = self.state.audit.clone() else {
            let started = self.state.service.clock().monotonic();
            let slot = AuditSlot::attached();
            req.extensions_mut().insert(slot.clone());
            let answer = self.inner.call(req);
            return Box::pin(count_unrecorded(
                self.state.clone(),
                target.key,
                started,
                slot,
                answer,
            ));
        };
        let pending = Pending {
            state: self.state.clone(),
            authorization: req.headers().get(AUTHORIZATION).cloned(),
            time: trail.clock.now_millis(),
            started: trail.clock.monotonic(),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            peer: req
                .extensions()
                .get::<ConnectionInfo>()
                .map(|c| c.peer.ip().to_canonical()),
            trail,
            target,
        };
        if pending.trail.fail_closed && pending.target.guarded && pending.trail.log.failing() {
            return Box::pin(async move { Ok(pending.refuse().await) });
        }
        let slot = AuditSlot::attached();
        req.extensions_mut().insert(slot.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(pending.finish(resp, slot).await)
        })
    }
}

/// Copies the effective client address into the request's audit slot; mounted just
/// inside `HttpsEnforcementLayer`, which resolves it.
pub fn note_client(req: Request) -> Request {
    if let (Some(slot), Some(ClientAddr(ip))) = (
        req.extensions().get::<AuditSlot>(),
        req.extensions().get::<ClientAddr>(),
    ) {
        slot.set_client(*ip);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routes_methods_and_unknown_paths() {
        let t = |m: Method, p: &str| classify(&m, p);
        let enc = t(Method::POST, "/api/encryption/encrypt").unwrap();
        assert_eq!(enc.operation, "encrypt");
        assert_eq!(enc.route.as_deref(), Some("POST /api/encryption/encrypt"));
        assert_eq!(enc.key, RouteKey::Route(0));
        assert!(enc.guarded);
        assert_eq!(
            t(Method::POST, "/api/encryption/keys/destroy")
                .unwrap()
                .operation,
            "keys.destroy"
        );
        let head = t(Method::HEAD, "/api/encryption/keys").unwrap();
        assert_eq!(
            (head.operation, head.route.as_deref()),
            ("keys.list", Some("HEAD /api/encryption/keys"))
        );
        let status = t(Method::GET, "/api/encryption/status").unwrap();
        assert_eq!(status.operation, "status");
        assert!(!status.guarded);
        // A known path with another method: the route, but no operation.
        let wrong = t(Method::GET, "/api/encryption/encrypt").unwrap();
        assert_eq!(
            (wrong.operation, wrong.route.as_deref()),
            (UNKNOWN, Some("GET /api/encryption/encrypt"))
        );
        assert_eq!(wrong.key, RouteKey::OtherMethod(0));
        // Both methods of one path: each its own route.
        let policy = |m| t(m, "/api/encryption/keys/policy").unwrap();
        let (read, write) = (policy(Method::GET), policy(Method::POST));
        assert_eq!(
            (read.operation, write.operation),
            ("keys.policy.read", "keys.policy")
        );
        assert_ne!(read.key, write.key);
        // An unknown path: never the raw path.
        let unknown = t(Method::GET, "/api/encryption/keys/4532015112830366").unwrap();
        assert_eq!((unknown.operation, unknown.route), (UNKNOWN, None));
        assert_eq!(unknown.key, RouteKey::Unmatched);
        assert_eq!(t(Method::GET, "/favicon.ico").unwrap().operation, UNKNOWN);
        for p in UNAUDITED {
            assert_eq!(t(Method::GET, p), None, "{p}");
        }
    }

    #[test]
    fn codes_from_bodies_are_checked() {
        assert!(is_code("audit_unavailable"));
        assert!(!is_code("4532 0151 1283 0366"));
        assert!(!is_code(""));
        assert_eq!(
            code_of_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "unsupported_media_type"
        );
        assert_eq!(code_of_status(StatusCode::BAD_GATEWAY), "internal_error");
    }

    #[test]
    fn a_detached_slot_notes_nothing() {
        let s = AuditSlot::detached();
        s.set_actor("id", "name");
        s.add_purpose("p");
        assert_eq!(s.details(), OpDetails::default());
        let s = AuditSlot::attached();
        s.set_actor("id", "");
        s.note_key("p", Some(2), 3);
        s.add_purpose("p");
        s.add_version(2);
        let d = s.details();
        assert_eq!(d.actor.as_deref(), Some("id"));
        assert_eq!(d.actor_name, None);
        assert_eq!(
            (d.purposes, d.versions, d.items),
            (vec!["p".into()], vec![2], Some(3))
        );
    }

    #[test]
    fn the_layer_counts_what_is_noted_before_it_closes_the_slot() {
        let slot = AuditSlot::attached();
        let rid = RequestId("r".into(), slot.clone());
        let record = |result| OpRecord {
            op: Op::FileEncrypt,
            actor: "a",
            purpose: Some("p"),
            key_version: Some(1),
            items: 1,
            result,
            request: &rid,
        };
        assert!(slot.note(&record("ok")), "the layer counts it");
        let (d, op) = slot.close();
        assert_eq!(
            (op, d.items, d.result),
            (Some(Op::FileEncrypt), Some(1), None)
        );
        // A streamed body's outcome, after the answer's head: for the caller to count.
        assert!(!slot.note(&record("decryption_failed")));
        assert!(!AuditSlot::detached().note(&record("ok")));
    }
}
