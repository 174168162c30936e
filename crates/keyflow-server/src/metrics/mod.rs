//! Operation records and Prometheus metrics.
//!
//! Every handler ends by calling [`Metrics::record`]: one structured `tracing` event
//! (target `keyflow::ops`) with actor, operation, purpose, key version, item count,
//! result and request id — never plaintext, ciphertext, tokens or keys. The same call
//! fills the request's audit slot ([`crate::audit::AuditSlot`]) with the purpose,
//! version, item count and result.
//!
//! The counters of `/metrics` are fed from one place: the audit layer
//! ([`crate::audit::AuditLayer`]), which sees every request and its final answer and
//! hands `Metrics::observe` the same facts it writes into the audit record — also when
//! the audit trail is disabled. The one exception: an outcome a handler records after
//! the answer's head went out (a streamed body that ends or fails later) is counted by
//! [`Metrics::record`] itself, since the layer has finished with that request.
//!
//! Series (text format 0.0.4, rendered by `prometheus-client`):
//!
//! | name | labels | from |
//! |---|---|---|
//! | `keyflow_operations_total` | `operation` ([`Op::name`]), `result` (`ok`/`error`) | requests whose handler recorded the operation; every series exists from the start |
//! | `keyflow_operation_items_total` | `operation` | the items those operations processed |
//! | `keyflow_requests_total` | `route`, `operation`, `status` | every audited request, refusals included |
//! | `keyflow_request_duration_seconds` | `route`, `operation`, `status_class` | time to the answer's head, as in the audit record |
//! | `keyflow_key_cache_hits_total`, `keyflow_key_cache_misses_total`, `keyflow_key_cache_entries` | | the key cache |
//! | `keyflow_uptime_seconds` | | the server |
//! | `keyflow_audit_records_total`, `keyflow_audit_failures_total` | | the audit writer (absent when auditing is off) |
//! | `keyflow_plain_http_requests_total` | | plain-HTTP requests turned away in production |
//! | `keyflow_alert_firing`, `keyflow_keys_expiring_soon`, `keyflow_rotation_failures`, `keyflow_alerts_evaluated_timestamp_seconds` | `alert`, `severity` (the first) | the last alert evaluation ([`crate::alerts::render_metrics`]; absent before it) |
//!
//! `route` is the path of a served route (`/api/encryption/encrypt`), or `unmatched`
//! (never a client's raw path); `operation` is the audit record's (`unknown` when the
//! method matches no route), so both label sets are bounded. Their series appear when
//! first seen (a family with none is not rendered), in no particular order.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use keyflow_kms::audit::log::AuditHealth;
use keyflow_kms::CacheStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::{API, ROUTES, UNKNOWN};
use crate::error::ApiError;
use crate::extract::RequestId;

mod op;
#[cfg(test)]
mod tests;

pub use op::{Op, DECRYPT_OPS};
use op::{OPS, OP_COUNT};

/// Upper bounds of the request-duration buckets, seconds: 50 µs (a refusal by a layer)
/// to 10 s (a large batch or file), 1-2.5-5 per decade.
const DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The statuses whose `keyflow_requests_total` handles each route caches (see
/// [`RouteMetrics`]): those the API answers with. Any other goes through the family's
/// lock.
const CACHED_STATUSES: [u16; 18] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 502, 503,
];

/// `status_class` label values, by `status / 100 - 1`; codes 600–999 are `other`.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The `route` of a request on no served path.
const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    operation: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: String,
    operation: &'static str,
    status_class: &'static str,
}

type Requests = Family<RequestLabels, Counter>;
type Durations = Family<DurationLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Where a request falls among the routes of [`ROUTES`], for its `route` and `operation`
/// labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKey {
    /// `ROUTES[i]`: its path and operation.
    Route(usize),
    /// The path of `ROUTES[i]` with a method none of its routes serves (`unknown`).
    OtherMethod(usize),
    /// A path no route serves.
    Unmatched,
}

impl RouteKey {
    /// Position in [`Metrics`]' table of route handles.
    fn index(self) -> usize {
        match self {
            RouteKey::Route(i) => i,
            RouteKey::OtherMethod(i) => ROUTES.len() + i,
            RouteKey::Unmatched => 2 * ROUTES.len(),
        }
    }
}

/// One (route, operation)'s series, created on first use and then kept.
///
/// Cost: a labelled family in `prometheus-client` takes its lock and hashes the label
/// set (route, operation, status) on every lookup. The layer instead finds this struct
/// by index ([`RouteKey`]) and the series by status in small arrays of `OnceLock`s,
/// filled through the family once; after that a request costs an atomic add and the
/// histogram's own (uncontended) mutex. Only a status outside [`CACHED_STATUSES`] still
/// looks its counter up. Series appear lazily, so `/metrics` lists only what happened.
struct RouteMetrics {
    route: String,
    operation: &'static str,
    requests: [OnceLock<Counter>; CACHED_STATUSES.len()],
    durations: [OnceLock<Histogram>; STATUS_CLASSES.len()],
}

impl RouteMetrics {
    fn new(route: String, operation: &'static str) -> Self {
        Self {
            route,
            operation,
            requests: std::array::from_fn(|_| OnceLock::new()),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn count(&self, family: &Requests, status: u16) {
        let labels = || RequestLabels {
            route: self.route.clone(),
            operation: self.operation,
            status,
        };
        match CACHED_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.requests[i]
                .get_or_init(|| family.get_or_create_owned(&labels()))
                .inc(),
            None => family.get_or_create(&labels()).inc(),
        };
    }

    fn time(&self, family: &Durations, status: u16, latency: Duration) {
        let class = usize::from(status / 100)
            .checked_sub(1)
            .filter(|c| *c < STATUS_CLASSES.len() - 1)
            .unwrap_or(STATUS_CLASSES.len() - 1);
        self.durations[class]
            .get_or_init(|| {
                family.get_or_create_owned(&DurationLabels {
                    route: self.route.clone(),
                    operation: self.operation,
                    status_class: STATUS_CLASSES[class],
                })
            })
            .observe(latency.as_secs_f64());
    }
}

/// The operation a handler recorded for a request, as the audit layer read it from the
/// request's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpOutcome {
    /// The operation ([`OpRecord::op`]).
    pub(crate) op: Op,
    /// Whether the audit record's result is `ok` (anything else, `partial_failure`
    /// included, counts as an error).
    pub(crate) ok: bool,
    /// Items processed.
    pub(crate) items: u64,
}

/// One answered request, as the audit layer saw it: the figures of its audit record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answered {
    /// Its route.
    pub(crate) route: RouteKey,
    /// The status the client received.
    pub(crate) status: StatusCode,
    /// Time to the answer's head (the audit record's `latencyUs`).
    pub(crate) latency: Duration,
    /// The operation its handler recorded, if it got that far.
    pub(crate) op: Option<OpOutcome>,
}

/// The server's metrics: per-operation and per-route series, and their registry.
pub struct Metrics {
    registry: Registry,
    /// `[ok, error]` per operation, in [`OPS`] order.
    operations: [[Counter; 2]; OP_COUNT],
    items: [Counter; OP_COUNT],
    requests: Requests,
    durations: Durations,
    /// Indexed by [`RouteKey::index`].
    routes: Vec<RouteMetrics>,
    /// Plain-HTTP requests turned away in production (`keyflow_plain_http_requests_total`).
    plain_http: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One operation's record.
#[derive(Debug)]
pub struct OpRecord<'a> {
    /// What was done.
    pub op: Op,
    /// Token id of the caller.
    pub actor: &'a str,
    /// Purpose involved, if one.
    pub purpose: Option<&'a str>,
    /// Key version involved, if one.
    pub key_version: Option<u32>,
    /// Items (fields, batch entries) processed.
    pub items: usize,
    /// Outcome: `ok`, or the error code.
    pub result: &'a str,
    /// The request (its id, also in the `x-request-id` response header, and its audit
    /// slot).
    pub request: &'a RequestId,
}

impl<'a> OpRecord<'a> {
    /// One item of `op` by `actor` in `request`, `ok`, no purpose nor version: the
    /// methods below set what differs.
    pub fn new(op: Op, actor: &'a str, request: &'a RequestId) -> Self {
        Self {
            op,
            actor,
            purpose: None,
            key_version: None,
            items: 1,
            result: "ok",
            request,
        }
    }

    /// The purpose involved, if one.
    pub fn purpose(self, purpose: Option<&'a str>) -> Self {
        Self { purpose, ..self }
    }

    /// The key version involved, if one.
    pub fn key_version(self, key_version: Option<u32>) -> Self {
        Self {
            key_version,
            ..self
        }
    }

    /// Items (fields, batch entries) processed.
    pub fn items(self, items: usize) -> Self {
        Self { items, ..self }
    }

    /// The outcome as given (`ok`, an error code, `partial_failure`).
    pub fn result(self, result: &'a str) -> Self {
        Self { result, ..self }
    }

    /// The outcome of `result`: `ok`, or its error's code.
    pub fn outcome<T>(self, result: &Result<T, ApiError>) -> Self {
        self.result(
            result
                .as_ref()
                .map_or_else(|e| e.status_and_code().1, |_| "ok"),
        )
    }
}

impl Metrics {
    /// Registers every family; the per-operation series exist (at 0) from the start.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let operations = Family::<OpLabels, Counter>::default();
        let items = Family::<ItemLabels, Counter>::default();
        let requests = Requests::default();
        let durations = Durations::new_with_constructor(duration_histogram);
        // Names without `_total`: the encoder appends it to counters.
        registry.register(
            "keyflow_operations",
            "API operations by result",
            operations.clone(),
        );
        registry.register(
            "keyflow_operation_items",
            "Items processed by operation",
            items.clone(),
        );
        registry.register(
            "keyflow_requests",
            "Audited API requests by route, operation and response status",
            requests.clone(),
        );
        registry.register(
            "keyflow_request_duration_seconds",
            "Time to the response head of audited API requests",
            durations.clone(),
        );
        let plain_http = Counter::default();
        registry.register(
            "keyflow_plain_http_requests",
            "Plain-HTTP requests turned away (redirected or refused) in production",
            plain_http.clone(),
        );
        let op_counter = |op: Op, result| {
            operations.get_or_create_owned(&OpLabels {
                operation: op.name(),
                result,
            })
        };
        let mut routes: Vec<RouteMetrics> = ROUTES
            .iter()
            .map(|(_, path, op)| RouteMetrics::new(format!("{API}{path}"), op))
            .collect();
        routes.extend(
            ROUTES
                .iter()
                .map(|(_, path, _)| RouteMetrics::new(format!("{API}{path}"), UNKNOWN)),
        );
        routes.push(RouteMetrics::new(UNMATCHED.to_owned(), UNKNOWN));
        Self {
            operations: OPS.map(|op| [op_counter(op, "ok"), op_counter(op, "error")]),
            items: OPS.map(|op| {
                items.get_or_create_owned(&ItemLabels {
                    operation: op.name(),
                })
            }),
            registry,
            requests,
            durations,
            routes,
            plain_http,
        }
    }

    /// Counts one plain-HTTP request turned away in production.
    pub fn count_plain_http(&self) {
        self.plain_http.inc();
    }

    /// Plain-HTTP requests turned away since start.
    pub fn plain_http_requests(&self) -> u64 {
        self.plain_http.get()
    }

    /// Decrypt operations answered since start, and how many of them failed: `decrypt`,
    /// `batch_decrypt` (a batch with any failed item counts as failed), `decrypt_fields`
    /// and `file_decrypt` — the `decrypt_error_rate` alert's figures.
    pub fn decrypt_totals(&self) -> (u64, u64) {
        DECRYPT_OPS.iter().fold((0, 0), |(total, failed), op| {
            let c = &self.operations[op.index()];
            let (ok, err) = (c[0].get(), c[1].get());
            (total + ok + err, failed + err)
        })
    }

    /// Logs one operation and notes it in the request's audit slot; the audit layer
    /// counts it when the answer is known. Counted here instead when no layer will:
    /// the request has no slot, or its answer already went out (a streamed body's
    /// final outcome).
    pub fn record(&self, r: &OpRecord<'_>) {
        if !r.request.audit().note(r) {
            self.count_operation(r.op, r.result == "ok", r.items as u64);
        }
        tracing::info!(
            target: "keyflow::ops",
            actor = r.actor,
            operation = r.op.name(),
            purpose = r.purpose,
            key_version = r.key_version,
            items = r.items,
            result = r.result,
            request_id = r.request.0.as_str(),
        );
    }

    fn count_operation(&self, op: Op, ok: bool, items: u64) {
        let i = op.index();
        if let Some(c) = self.operations.get(i) {
            c[usize::from(!ok)].inc();
        }
        if let Some(c) = self.items.get(i) {
            c.inc_by(items);
        }
    }

    /// Counts one answered request (called by the audit layer for every audited
    /// request, whether or not the trail is enabled).
    pub(crate) fn observe(&self, a: &Answered) {
        if let Some(o) = a.op {
            self.count_operation(o.op, o.ok, o.items);
        }
        if let Some(r) = self.routes.get(a.route.index()) {
            let status = a.status.as_u16();
            r.count(&self.requests, status);
            r.time(&self.durations, status, a.latency);
        }
    }

    /// Prometheus text exposition (format 0.0.4): the registered families, then the
    /// figures read at scrape time (key cache, uptime, audit writer).
    pub fn render(
        &self,
        cache: CacheStats,
        uptime: Duration,
        audit: Option<AuditHealth>,
    ) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut now = Registry::default();
        now.register(
            "keyflow_key_cache_hits",
            "Key cache hits",
            ConstCounter::new(cache.hits),
        );
        now.register(
            "keyflow_key_cache_misses",
            "Key cache misses",
            ConstCounter::new(cache.misses),
        );
        now.register(
            "keyflow_key_cache_entries",
            "Key versions cached",
            ConstGauge::new(cache.entries as u64),
        );
        now.register(
            "keyflow_uptime_seconds",
            "Seconds since start",
            ConstGauge::new(uptime.as_secs()),
        );
        if let Some(h) = audit {
            now.register(
                "keyflow_audit_records",
                "Audit records written since start",
                ConstCounter::new(h.written),
            );
            now.register(
                "keyflow_audit_failures",
                "Failed audit appends since start (a group commit counts once)",
                ConstCounter::new(h.failures),
            );
        }
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.registry)?;
        encode(&mut out, &now)?;
        Ok(out)
    }
}
