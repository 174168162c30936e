//! The audit trail, read back: `GET /audit` (admin, auditor). Writing is the audit
//! layer's business ([`crate::audit`]); this reads what the store holds, newest first,
//! a page at a time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use keyflow_kms::access::Role;
use keyflow_kms::audit::{AuditFilter, MAX_PAGE};
use keyflow_kms::KmsError;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::RequestId;
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// Records per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;

/// `GET /audit` query. Every given condition must hold; an empty value is no condition.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Records at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// Records before this RFC 3339 instant.
    pub until: Option<String>,
    /// This actor exactly: a token id, `anonymous`, `cli:<user>`, `scheduler:<instance>`
    /// or `system:<instance>`.
    pub actor: Option<String>,
    /// Records involving this purpose.
    pub purpose: Option<String>,
    /// This operation exactly (`encrypt`, `keys.revoke`, `keys.rotate`, …).
    pub operation: Option<String>,
    /// This result exactly: `ok` or an error code.
    pub result: Option<String>,
    /// Records per page, 1 to 1000 (default 100).
    pub limit: Option<String>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
}

fn bad(what: &str) -> ApiError {
    ApiError::InvalidRequest(what.to_owned())
}

/// A parameter's value; empty counts as absent.
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn instant(v: Option<String>, name: &str) -> ApiResult<Option<i64>> {
    given(v)
        .map(|s| {
            keyflow_kms::clock::parse_rfc3339(&s)
                .ok_or_else(|| bad(&format!("{name}: expected an RFC 3339 instant")))
        })
        .transpose()
}

impl AuditQuery {
    /// The store's filter; 400 for a bad parameter (never quoting its value).
    fn filter(self) -> ApiResult<AuditFilter> {
        let limit = match given(self.limit) {
            None => DEFAULT_PAGE,
            Some(s) => s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| bad(&format!("limit: expected 1 to {MAX_PAGE}")))?,
        };
        let before = given(self.cursor)
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("cursor: expected the nextCursor of a previous page"))
            })
            .transpose()?;
        Ok(AuditFilter {
            since: instant(self.since, "since")?,
            until: instant(self.until, "until")?,
            actor: given(self.actor),
            purpose: given(self.purpose),
            operation: given(self.operation),
            result: given(self.result),
            before,
            limit,
        })
    }
}

/// The longest a read waits for the journal to drain.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Audit records, newest first.
#[utoipa::path(get, path = "/api/encryption/audit", params(AuditQuery),
    responses((status = 200, description = "A page of records, newest first; `nextCursor` is set when the page is full and goes in `cursor` for the next one", body = crate::openapi::status::AuditPage),
              (status = 400, description = "A bad parameter (an instant that is not RFC 3339, a limit outside 1..1000, an unknown parameter)"),
              (status = 401), (status = 403, description = "Admin or auditor only"),
              (status = 503, description = "The audit trail is unavailable (or disabled)")),
    security(("bearer" = [])))]
pub async fn query(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let Query(q) = query.map_err(|_| {
        bad("invalid query: the parameters are since, until, actor, purpose, operation, result, limit and cursor")
    })?;
    let filter = q.filter()?;
    let trail = state.audit.as_ref().ok_or(ApiError::AuditUnavailable)?;
    // Records still in the local journal go to the database first, so a reader sees
    // every request answered before this one. Bounded: a failing database must not
    // hold the read (what is stored already is still answered).
    if let Ok(Err(e)) = tokio::time::timeout(FLUSH_WAIT, trail.log().flush()).await {
        tracing::warn!(error = %e, "audit records in the journal could not be flushed before a read");
    }
    let rows = trail
        .store()
        .audit_query(&filter)
        .await
        .map_err(KmsError::from)?;
    let mut records = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut event = match serde_json::from_str::<Value>(&r.body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ApiError::Internal(format!(
                    "audit record {} is not an event (run `keyflow audit verify`)",
                    r.seq
                )))
            }
        };
        event.insert("seq".into(), json!(r.seq));
        records.push(Value::Object(event));
    }
    let full = u32::try_from(rows.len()).is_ok_and(|n| n >= filter.limit);
    let next = rows
        .last()
        .filter(|_| full)
        .map(|last| last.seq.to_string());
    state.metrics.record(&OpRecord {
        op: Op::Audit,
        actor: who.id(),
        purpose: None,
        key_version: None,
        items: records.len(),
        result: "ok",
        request: &rid,
    });
    Ok(Json(json!({ "records": records, "nextCursor": next })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> ApiResult<AuditFilter> {
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let q: AuditQuery = serde_urlencoded_like(&text)?;
        q.filter()
    }

    /// The parsing `Query` does, without a request.
    fn serde_urlencoded_like(text: &str) -> ApiResult<AuditQuery> {
        let uri: axum::http::Uri = format!("/?{text}").parse().map_err(|_| bad("uri"))?;
        Query::<AuditQuery>::try_from_uri(&uri)
            .map(|Query(q)| q)
            .map_err(|_| bad("query"))
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_400() {
        let f = q(&[]).unwrap();
        assert_eq!(f.limit, DEFAULT_PAGE);
        assert_eq!(f.since, None);
        let f = q(&[
            ("since", "2026-01-01T00:00:00Z"),
            ("until", "2026-01-02T00:00:00Z"),
            ("actor", "abc"),
            ("limit", "5"),
            ("cursor", "42"),
            ("purpose", ""),
        ])
        .unwrap();
        assert_eq!(f.since, Some(1_767_225_600_000));
        assert_eq!(f.until, Some(1_767_312_000_000));
        assert_eq!(
            (f.actor.as_deref(), f.limit, f.before, f.purpose),
            (Some("abc"), 5, Some(42), None)
        );
        for bad in [
            ("since", "yesterday"),
            ("until", "1"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "ten"),
            ("cursor", "0"),
            ("cursor", "x"),
        ] {
            assert!(q(&[bad]).is_err(), "{bad:?}");
        }
        assert!(
            serde_urlencoded_like("limt=5").is_err(),
            "unknown parameter"
        );
    }
}
