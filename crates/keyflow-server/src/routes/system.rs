//! Health, status, metrics and the OpenAPI document.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use keyflow_kms::access::Role;
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::{KeyStatus, VersionFilter};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::alerts::{Alert, Severity};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

const DAY_MS: i64 = keyflow_kms::model::DAY_MS;

/// Liveness and readiness: the keystore answers and the KEK is unlocked. The keystore
/// check is cached ([`crate::health`]): at most one keystore query per second.
#[utoipa::path(get, path = "/api/encryption/health",
    responses((status = 200, description = "Ready", body = crate::openapi::status::Health), (status = 503, description = "Alive but not ready (the health shape), or overloaded (the error shape)", body = crate::openapi::status::HealthUnavailable)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let check = crate::health::keystore_check(&state).await;
    let keystore_ok = check.ok;
    // With a staleness bound (servers), cached keys are only used while recently
    // confirmed against the keystore; past the bound this instance is not ready.
    let staleness = state.service.ring().cache_staleness();
    let cache_ok = state
        .service
        .ring()
        .max_staleness()
        .is_none_or(|bound| staleness < bound);
    let ready = keystore_ok && cache_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ok" } else { "unavailable" },
            "live": true,
            "ready": ready,
            "checks": {
                "keystore": if keystore_ok { "ok" } else { "unreachable" },
                "keystoreCheckAgeMs": u64::try_from(check.at.elapsed().as_millis()).unwrap_or(u64::MAX),
                // The service cannot exist without an unlocked KEK.
                "kek": "unlocked",
                "keyCache": if cache_ok { "confirmed" } else { "unconfirmed" },
                "keyCacheAgeMs": u64::try_from(staleness.as_millis()).unwrap_or(u64::MAX),
            },
            "uptimeSeconds": state.uptime().as_secs(),
        })),
    )
}

/// Key health metrics (the old shape) plus usage and cache figures.
#[utoipa::path(get, path = "/api/encryption/status", params(StatusQuery),
    responses((status = 200, description = "Key health metrics (the old shape: `total, active, expiringSoon, deprecated, revoked, cacheSize, byPurpose, healthStatus`) plus usage, cache, alerts (docs/alerts.md) and the audit writer's figures; `?shape=legacy` makes `byPurpose` the old `[{_id, count}]`", body = crate::openapi::status::Status),
              (status = 401), (status = 403, description = "Admin or auditor only")),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let legacy_shape = match q.shape.as_deref() {
        None | Some("current") => false,
        Some("legacy") => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "shape: expected current or legacy".into(),
            ))
        }
    };
    // Persist pending counts so the figures are current.
    if let Err(e) = state.service.ring().flush_usage().await {
        tracing::warn!(error = %e, "usage flush before status failed");
    }
    let versions = state.service.keys().list(&VersionFilter::default()).await?;
    let policies: std::collections::HashMap<_, _> =
        state.service.keys().policies().await?.into_iter().collect();
    let now = SystemClock.now_millis();
    let count = |s: KeyStatus| versions.iter().filter(|r| r.status == s).count();
    let mut by_purpose: BTreeMap<String, Value> = BTreeMap::new();
    let mut expiring = 0;
    let mut usage = Vec::new();
    for r in &versions {
        let entry = by_purpose.entry(r.purpose.to_string()).or_insert_with(|| {
            json!({ "versions": 0, "activeVersion": null, "activeAgeDays": null, "encryptions": 0 })
        });
        entry["versions"] = json!(entry["versions"].as_u64().unwrap_or(0) + 1);
        entry["encryptions"] = json!(entry["encryptions"].as_u64().unwrap_or(0) + r.encryptions);
        if r.status == KeyStatus::Active {
            let policy = policies.get(&r.purpose).copied().unwrap_or_default();
            let age_days = now.saturating_sub(r.created_at).max(0) / DAY_MS;
            entry["activeVersion"] = json!(r.version.get());
            entry["activeAgeDays"] = json!(age_days);
            entry["policy"] = json!(policy);
            if now >= policy.due_at(r.created_at) {
                expiring += 1;
            }
            usage.push(json!({
                "purpose": r.purpose.as_str(),
                "version": r.version.get(),
                "encryptions": r.encryptions,
                "budget": policy.max_encryptions,
                "budgetUsed": r.encryptions as f64 / policy.max_encryptions as f64,
            }));
        }
    }
    let deprecated = count(KeyStatus::Deprecated);
    let cache = state.service.ring().cache_stats();
    let audit = audit_status(&state);
    // Rows written without the KEK (a forged token, a flipped state) are refused on
    // read; any since this server started is an alert (details in the log and trail).
    let refused_rows = state.service.ring().refused_rows();
    // The five alerts of the old design, as the background evaluation left them (none
    // evaluated yet right after start), then the integrity alerts, read live.
    let (mut alerts, evaluated_at) = state.alerts.current();
    alerts.extend(integrity_alerts(&state, refused_rows));
    let firing = |sev: Severity| alerts.iter().any(|a| a.firing && a.severity == sev);
    let health = if firing(Severity::Critical) {
        "critical"
    } else if firing(Severity::Warning) || expiring > 0 || deprecated > 0 {
        "warning"
    } else {
        "healthy"
    };
    let by_purpose = if legacy_shape {
        // The old clients' aggregate: `[{_id: purpose, count: versions}]`.
        json!(by_purpose
            .iter()
            .map(|(p, v)| json!({ "_id": p, "count": v["versions"] }))
            .collect::<Vec<_>>())
    } else {
        json!(by_purpose)
    };
    state
        .metrics
        .record(&OpRecord::new(Op::Status, who.id(), &rid).items(versions.len()));
    Ok(Json(json!({
        "total": versions.len(),
        "active": count(KeyStatus::Active),
        "expiringSoon": expiring,
        "deprecated": deprecated,
        "revoked": count(KeyStatus::Revoked),
        "cacheSize": cache.entries,
        "byPurpose": by_purpose,
        "healthStatus": health,
        "usage": usage,
        "cache": { "hits": cache.hits, "misses": cache.misses, "hitRate": cache.hit_rate(), "entries": cache.entries },
        "alerts": alerts.iter().map(crate::alerts::alert_json).collect::<Vec<_>>(),
        "alertsEvaluatedAt": evaluated_at.map(keyflow_kms::clock::rfc3339),
        "refusedRows": refused_rows,
        "retiredKekFiles": retired_kek_files(&state),
        "defaultPolicy": keyflow_kms::Policy::default(),
        "audit": audit,
        "legacy": crate::legacy::status(&state),
    })))
}

/// `GET /status` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// `current` (default): `byPurpose` is an object keyed by purpose; `legacy`: the old
    /// clients' array `[{_id, count}]` (count = key versions), the rest unchanged.
    pub shape: Option<String>,
}

/// The integrity alerts, read live (cheap reads of in-memory state): the audit trail
/// cannot be written, the audit chain does not verify, keystore rows were refused.
fn integrity_alerts(state: &AppState, refused_rows: u64) -> Vec<Alert> {
    let failing = state.audit.as_ref().is_some_and(|t| t.log().failing());
    let last_failure = state
        .audit
        .as_ref()
        .map(|t| t.log().health().last_failure)
        .filter(|t| *t > 0);
    let broken = state.chain_check().broken;
    let alert = |name, firing: bool, since, value: f64, summary: String| Alert {
        name,
        severity: Severity::Critical,
        firing,
        since: if firing { since } else { None },
        value,
        threshold: 0.0,
        summary,
    };
    vec![
        alert(
            "audit_trail_failing",
            failing,
            last_failure,
            f64::from(u8::from(failing)),
            if failing {
                "the audit trail cannot be written".to_owned()
            } else {
                "the audit trail is written (or disabled)".to_owned()
            },
        ),
        alert(
            "audit_chain_broken",
            broken.is_some(),
            None,
            f64::from(u8::from(broken.is_some())),
            match &broken {
                Some(b) => format!("the audit chain does not verify: {b}"),
                None => "no break found by the background verification".to_owned(),
            },
        ),
        alert(
            "keystore_rows_refused",
            refused_rows > 0,
            None,
            refused_rows as f64,
            if refused_rows > 0 {
                format!("{refused_rows} keystore row reads failed their integrity check and were refused (rows written without the KEK?)")
            } else {
                "no keystore row refused".to_owned()
            },
        ),
    ]
}

/// The old KEK files beside the KEK file (`[{path, kekId, kind}]`): each still unlocks
/// dumps of the keystore from its time, until `keyflow kek retire --yes` removes it.
fn retired_kek_files(state: &AppState) -> Value {
    let Some(path) = state.kek_path() else {
        return json!([]);
    };
    match keyflow_kms::kek_retire::old_kek_files(path) {
        Ok(files) => json!(files
            .iter()
            .map(|f| json!({ "path": f.path.display().to_string(), "kekId": f.kek_id, "kind": f.kind }))
            .collect::<Vec<_>>()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list old KEK files");
            json!([])
        }
    }
}

/// The audit writer's figures: `{enabled, failClosed, written, journaled, commits,
/// failures, lastWrite, backlog, headSeq}` (counts since this server started), and what the
/// background verification found: `verifiedThrough`, `verifiedAt` (null until the first
/// pass) and, once it found a break, `chainBroken`.
fn audit_status(state: &AppState) -> Value {
    let Some(trail) = &state.audit else {
        return json!({ "enabled": false, "failClosed": false });
    };
    let h = trail.log().health();
    let at = |ms: i64| (ms > 0).then(|| keyflow_kms::clock::rfc3339(ms));
    let check = state.chain_check();
    let mut status = json!({
        "enabled": true,
        "failClosed": trail.fail_closed(),
        "failing": trail.log().failing(),
        "written": h.written,
        "journaled": h.journaled,
        "commits": h.commits,
        "failures": h.failures,
        "lastWrite": at(h.last_write),
        "lastFailure": at(h.last_failure),
        "backlog": h.backlog,
        "headSeq": h.head_seq,
        "verifiedThrough": check.verified.map(|v| v.seq),
        "verifiedAt": check.verified_at.map(keyflow_kms::clock::rfc3339),
    });
    if let Some(broken) = check.broken {
        status["chainBroken"] = json!(broken);
    }
    status
}

/// Prometheus metrics (admin or auditor token).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<impl IntoResponse> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let audit = state.audit.as_ref().map(|t| t.log().health());
    let mut body = state
        .metrics
        .render(state.service.ring().cache_stats(), state.uptime(), audit)
        .map_err(|e| ApiError::Internal(format!("metrics encoding: {e}")))?;
    body.push_str(
        &crate::alerts::render_metrics(&state.alerts)
            .map_err(|e| ApiError::Internal(format!("metrics encoding: {e}")))?,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// The OpenAPI 3.1 document of every route.
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
