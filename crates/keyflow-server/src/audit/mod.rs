//! The audit layer: the one place that records every API request in the audit trail
//! ([`keyflow_kms::audit`]), after the handler answered and *before* the answer leaves.
//!
//! How a request's record is put together:
//!
//! 1. [`AuditLayer`] (just inside the security headers, outside load shedding, so even
//!    an overload refusal is recorded) classifies the request by method and path into
//!    an operation name and route ([`ROUTES`]), and puts a fresh [`AuditSlot`] into the
//!    request's extensions;
//! 2. [`note_client`], the transport stack's client hook, copies the effective client
//!    address ([`ClientAddr`], the real client behind trusted proxies) into the slot
//!    once HTTPS enforcement has resolved it;
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

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::Extensions;
use keyflow_kms::audit::log::{AuditError, AuditLog};
use keyflow_kms::audit::{AuditEvent, AuditSealer, AuditStore};
use keyflow_kms::clock::Clock;

use crate::metrics::{Op, OpRecord};

mod layer;
mod routes;
#[cfg(test)]
mod tests;

pub use layer::{note_client, AuditLayer, AuditService};
pub(crate) use routes::API;
pub use routes::{ROUTES, UNKNOWN};

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
