//! The answers of `/health`, `/status` and `/audit`, as schemas. Documentation only,
//! like [`super::responses`], and checked against real answers the same way.
#![allow(dead_code)] // documentation only: the types are never built

use std::collections::BTreeMap;

use utoipa::ToSchema;

use super::admin::RotationPolicy;

/// `GET /health` (200 ready, 503 alive but not ready: the same shape).
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct Health {
    /// `ok` or `unavailable`.
    #[schema(pattern = "^(ok|unavailable)$")]
    pub status: String,
    /// Always true (the process answers).
    pub live: bool,
    /// The keystore answers and the key cache is confirmed.
    pub ready: bool,
    /// The checks.
    pub checks: HealthChecks,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// `GET /health` 503: alive but not ready (the health shape), or refused before the
/// handler ran (load shedding: the error shape).
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum HealthUnavailable {
    /// Not ready.
    NotReady(Health),
    /// Shed.
    Refused(super::ErrorBody),
}

/// What `/health` checked.
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct HealthChecks {
    /// `ok` or `unreachable`.
    #[schema(pattern = "^(ok|unreachable)$")]
    pub keystore: String,
    /// Age of the cached keystore check, ms.
    pub keystore_check_age_ms: u64,
    /// `unlocked` (a server cannot run otherwise).
    pub kek: String,
    /// `confirmed` or `unconfirmed`.
    #[schema(pattern = "^(confirmed|unconfirmed)$")]
    pub key_cache: String,
    /// Time since the cached keys were confirmed against the keystore, ms.
    pub key_cache_age_ms: u64,
}

/// `GET /status`: key health metrics (the old shape) plus usage, cache, alerts and the
/// audit writer's figures.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Status {
    /// Key versions.
    pub total: u64,
    /// Active versions.
    pub active: u64,
    /// Active versions due for rotation.
    pub expiring_soon: u64,
    /// Deprecated versions.
    pub deprecated: u64,
    /// Revoked versions.
    pub revoked: u64,
    /// Unwrapped keys in the cache.
    pub cache_size: u64,
    /// Per purpose: an object keyed by purpose, or with `?shape=legacy` the old
    /// `[{_id, count}]`.
    pub by_purpose: ByPurpose,
    /// `healthy`, `warning` or `critical`.
    #[schema(pattern = "^(healthy|warning|critical)$")]
    pub health_status: String,
    /// The active versions' encryption counts against their budgets.
    pub usage: Vec<Usage>,
    /// Key cache counters.
    pub cache: CacheStats,
    /// The alerts (docs/alerts.md).
    pub alerts: Vec<AlertState>,
    /// When the alerts were last evaluated (null before the first evaluation).
    #[schema(required = true, format = DateTime)]
    pub alerts_evaluated_at: Option<String>,
    /// Keystore rows refused since start (failed their integrity check).
    pub refused_rows: u64,
    /// Old KEK files beside the KEK file.
    pub retired_kek_files: Vec<RetiredKekFile>,
    /// The policy of purposes without one.
    pub default_policy: RotationPolicy,
    /// The audit writer and its background verification.
    pub audit: AuditStatus,
    /// Transition reads of the old system's packages.
    pub legacy: LegacyStatus,
}

/// `byPurpose` in either shape.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum ByPurpose {
    /// Keyed by purpose.
    Current(BTreeMap<String, PurposeFigures>),
    /// `?shape=legacy`.
    Legacy(Vec<LegacyPurposeCount>),
}

/// One purpose's figures.
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct PurposeFigures {
    /// Versions.
    pub versions: u64,
    /// The active version (null when none).
    #[schema(required = true)]
    pub active_version: Option<u32>,
    /// Its age, days (null when none).
    #[schema(required = true)]
    pub active_age_days: Option<i64>,
    /// Encryptions over all versions.
    pub encryptions: u64,
    /// The policy (present with an active version).
    pub policy: Option<RotationPolicy>,
}

/// The old clients' aggregate.
#[derive(ToSchema, serde::Serialize)]
pub struct LegacyPurposeCount {
    /// Purpose.
    #[schema(rename = "_id")]
    pub id: String,
    /// Versions.
    pub count: u64,
}

/// One active version's usage.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Usage {
    /// Key ring.
    pub purpose: String,
    /// Active version.
    pub version: u32,
    /// Encryptions made.
    pub encryptions: u64,
    /// The policy's budget.
    pub budget: u64,
    /// encryptions / budget.
    pub budget_used: f64,
}

/// Key cache counters since start.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CacheStats {
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// Entries.
    pub entries: u64,
}

/// One alert.
#[derive(ToSchema)]
pub struct AlertState {
    /// Name (docs/alerts.md).
    pub name: String,
    /// `warning` or `critical`.
    #[schema(pattern = "^(warning|critical)$")]
    pub severity: String,
    /// Firing now.
    pub firing: bool,
    /// Firing since (null when not firing or unknown).
    #[schema(required = true, format = DateTime)]
    pub since: Option<String>,
    /// The measured value.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// What it means.
    pub summary: String,
}

/// An old KEK file.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RetiredKekFile {
    /// Its path.
    pub path: String,
    /// The KEK it holds.
    pub kek_id: String,
    /// `retired` or `orphan`.
    #[schema(pattern = "^(retired|orphan)$")]
    pub kind: String,
}

/// The audit writer's figures (`{enabled: false, failClosed: false}` when disabled).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditStatus {
    /// The trail is written.
    pub enabled: bool,
    /// Requests fail when it cannot be.
    pub fail_closed: bool,
    /// Writes are failing now.
    pub failing: Option<bool>,
    /// Records written since start.
    pub written: Option<u64>,
    /// Records journaled locally since start.
    pub journaled: Option<u64>,
    /// Batches committed.
    pub commits: Option<u64>,
    /// Failed batches.
    pub failures: Option<u64>,
    /// Last write (null when none).
    #[schema(format = DateTime)]
    pub last_write: Option<String>,
    /// Last failure (null when none).
    #[schema(format = DateTime)]
    pub last_failure: Option<String>,
    /// Records waiting.
    pub backlog: Option<u64>,
    /// Sequence number of the chain's head.
    pub head_seq: Option<u64>,
    /// The background verification reached this record (null before its first pass).
    pub verified_through: Option<u64>,
    /// When it did.
    #[schema(format = DateTime)]
    pub verified_at: Option<String>,
    /// Where the chain breaks, once found.
    #[schema(value_type = Option<Value>)]
    pub chain_broken: Option<serde_json::Value>,
}

/// Transition reads (`{enabled: false}` when off).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct LegacyStatus {
    /// Transition reads are on.
    pub enabled: bool,
    /// Legacy values read since start.
    pub values_read: Option<u64>,
    /// Legacy values rewrapped since start.
    pub rewrapped: Option<u64>,
    /// Failed legacy reads since start.
    pub failures: Option<u64>,
    /// The last legacy read (null when none).
    #[schema(format = DateTime)]
    pub last_read_at: Option<String>,
}

/// `GET /audit`: a page of records, newest first.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// Set (a string of digits) when the page is full: the `cursor` of the next page.
    #[schema(required = true, pattern = "^[1-9][0-9]*$")]
    pub next_cursor: Option<String>,
}

/// One audit record: the event as written (absent members were not known), with its
/// chain sequence number. Never plaintext, tokens or key material.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Chain sequence number.
    #[schema(minimum = 1)]
    pub seq: u64,
    /// Unix ms.
    pub time: i64,
    /// `api`, `cli`, `scheduler`, …
    pub source: String,
    /// Token id, `anonymous`, `cli:<user>`, `scheduler:<instance>`, `system:<instance>`.
    pub actor: String,
    /// The token's name.
    pub actor_name: Option<String>,
    /// `encrypt`, `keys.revoke`, …
    pub operation: String,
    /// The route.
    pub route: Option<String>,
    /// Client address.
    pub client: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Purposes involved.
    pub purposes: Option<Vec<String>>,
    /// Key versions involved.
    pub versions: Option<Vec<u32>>,
    /// Items.
    pub items: Option<u64>,
    /// `ok` or an error code.
    pub result: String,
    /// HTTP status.
    pub status: Option<u16>,
    /// Latency, µs.
    pub latency_us: Option<u64>,
    /// Operation-specific facts.
    #[schema(value_type = Option<Value>)]
    pub detail: Option<serde_json::Value>,
}
