//! [`AuditLayer`]: the one place that sees every request and its final answer, and
//! writes the audit record before the answer leaves.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use keyflow_kms::audit::{AuditEvent, Source};
use keyflow_transport::{ClientAddr, ConnectionInfo};

use crate::error::{ApiError, ErrorCode};
use crate::extract::RequestId;
use crate::metrics::{Answered, OpOutcome, RouteKey};
use crate::state::AppState;

use super::routes::{classify, code_of_status, Target};
use super::{AuditSlot, AuditTrail, OpDetails};

/// Error bodies larger than this are not read for their code.
const MAX_ERROR_BODY: u64 = 16 * 1024;

/// A code as the API writes them (`[a-z0-9_]`, short): anything else from a body is
/// not trusted into the record.
pub(super) fn is_code(s: &str) -> bool {
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
    let latency = state
        .service
        .ring()
        .clock()
        .monotonic()
        .saturating_sub(started);
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
            let started = self.state.service.ring().clock().monotonic();
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

/// Copies the effective client address into the request's audit slot: the transport
/// stack's client hook (`TransportLayer::on_client`), called once HTTPS enforcement has
/// resolved the address.
pub fn note_client(req: &Request) {
    if let (Some(slot), Some(ClientAddr(ip))) = (
        req.extensions().get::<AuditSlot>(),
        req.extensions().get::<ClientAddr>(),
    ) {
        slot.set_client(*ip);
    }
}
