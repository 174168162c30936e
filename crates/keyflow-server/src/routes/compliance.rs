//! `GET /compliance` (admin, auditor): the compliance report computed from live state
//! ([`crate::compliance`] gathers, `keyflow-compliance` evaluates), as JSON, Markdown or
//! one self-contained HTML page. `?at=` evaluates the time-dependent controls at
//! another instant.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyflow_compliance::{AuditFacts, Verification};
use keyflow_kms::access::Role;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::RequestId;
use crate::state::AppState;

/// `GET /compliance` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ComplianceQuery {
    /// Evaluate the time-dependent controls at this RFC 3339 instant (default now).
    pub at: Option<String>,
    /// `json` (default), `markdown` or `html`.
    pub format: Option<String>,
}

/// The output forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Markdown,
    Html,
}

impl ComplianceQuery {
    fn parse(self) -> ApiResult<(Option<i64>, Format)> {
        let bad = |m: &str| ApiError::InvalidRequest(m.to_owned());
        let at = self
            .at
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                keyflow_kms::clock::parse_rfc3339(s.trim())
                    .ok_or_else(|| bad("at: expected an RFC 3339 instant"))
            })
            .transpose()?;
        let format = match self.format.as_deref().map(str::trim) {
            None | Some("") | Some("json") => Format::Json,
            Some("markdown") | Some("md") => Format::Markdown,
            Some("html") => Format::Html,
            Some(_) => return Err(bad("format: expected json, markdown or html")),
        };
        Ok((at, format))
    }
}

/// The longest the report waits for the audit journal to reach the database.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The audit trail's state as this server knows it.
fn audit_facts(state: &AppState, head_seq: u64) -> AuditFacts {
    let (routes_audited, routes_total) = crate::compliance::audited_routes();
    let Some(trail) = &state.audit else {
        return AuditFacts {
            routes_audited,
            routes_total,
            ..AuditFacts::default()
        };
    };
    let check = state.chain_check();
    let verification = match (check.verified, check.verified_at, &check.broken) {
        (_, _, Some(broken)) => Some(Verification {
            at: check.verified_at.unwrap_or_else(|| trail.now_millis()),
            through_seq: check.verified.map_or(0, |h| h.seq),
            broken: Some(broken.clone()),
            by: "server".into(),
        }),
        (Some(head), Some(at), None) => Some(Verification {
            at,
            through_seq: head.seq,
            broken: None,
            by: "server".into(),
        }),
        _ => None,
    };
    AuditFacts {
        enabled: true,
        journaled: state.deployment().is_some_and(|d| d.audit_journaled),
        fail_closed: trail.fail_closed(),
        failing: trail.log().failing(),
        head_seq,
        routes_audited,
        routes_total,
        verification,
    }
}

/// The compliance report.
#[utoipa::path(get, path = "/api/encryption/compliance", params(ComplianceQuery),
    responses((status = 200, description = "The report: JSON (`?format=json`, the default), Markdown (`markdown`) or one self-contained HTML page (`html`)",
                content((ComplianceReport = "application/json"), (String = "text/markdown"), (String = "text/html"))),
              (status = 400, description = "`at` is not RFC 3339, `format` is not json, markdown or html, or an unknown parameter"),
              (status = 401), (status = 403, description = "Admin or auditor only")),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    query: Result<Query<ComplianceQuery>, QueryRejection>,
) -> ApiResult<Response> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let Query(q) = query.map_err(|_| {
        ApiError::InvalidRequest("invalid query: the parameters are at and format".into())
    })?;
    let (at, format) = q.parse()?;
    // Usage counts still in memory belong in the inventory.
    if let Err(e) = state.service.ring().flush_usage().await {
        tracing::warn!(error = %e, "usage flush before the compliance report failed");
    }
    let store = state.audit.as_ref().map(|t| t.store().clone());
    if let Some(trail) = &state.audit {
        if let Ok(Err(e)) = tokio::time::timeout(FLUSH_WAIT, trail.log().flush()).await {
            tracing::warn!(error = %e, "audit records in the journal could not be flushed before the compliance report");
        }
    }
    let head_seq = match &store {
        Some(s) => {
            s.audit_head()
                .await
                .map_err(keyflow_kms::KmsError::from)?
                .seq
        }
        None => 0,
    };
    let now = state.service.ring().clock().now_millis();
    let deployment = state.deployment().cloned().unwrap_or_default();
    let snapshot = crate::compliance::gather(
        &state.service,
        store.as_deref(),
        audit_facts(&state, head_seq),
        &deployment,
        state.kek_path(),
        (now, at.unwrap_or(now)),
    )
    .await?;
    let report = keyflow_compliance::evaluate(&snapshot);
    rid.audit().set_detail(json!({
        "format": match format { Format::Json => "json", Format::Markdown => "markdown", Format::Html => "html" },
        "at": report.evaluated_at,
        "overall": report.overall.as_str(),
    }));
    Ok(match format {
        Format::Json => Json(report).into_response(),
        Format::Markdown => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            keyflow_compliance::markdown::render(&report),
        )
            .into_response(),
        Format::Html => {
            // The page's one inline style sheet may apply (by hash); nothing else.
            static STYLE: std::sync::LazyLock<keyflow_transport::InlineStyleHash> =
                std::sync::LazyLock::new(|| {
                    keyflow_transport::InlineStyleHash::of(keyflow_compliance::html::STYLE)
                });
            let mut resp = (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                keyflow_compliance::html::render(&report),
            )
                .into_response();
            resp.extensions_mut().insert(STYLE.clone());
            resp
        }
    })
}

/// `GET /compliance` (JSON): the report. Documentation only (the handler serializes
/// `keyflow_compliance::Report`).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ComplianceReport {
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// The instant the time-dependent controls were evaluated at (`?at=`).
    pub evaluated_at: String,
    /// `pass`, `warn` or `fail`.
    pub overall: String,
    /// Counts per status.
    pub summary: ComplianceSummary,
    /// The controls per standard (the old report's names).
    pub standards: ComplianceStandards,
    /// How this deployment implements the cryptography.
    pub implementation: serde_json::Value,
    /// Every key version: purpose, algorithm, status, created, cryptoperiod, usage.
    pub inventory: Vec<keyflow_compliance::report::InventoryItem>,
    /// The old report's labels (PCI DSS 3.2.1, ISO/IEC 27001:2013) and the controls that
    /// answer them.
    pub legacy_mapping: Vec<LegacyEntry>,
}

/// Counts per status.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ComplianceSummary {
    /// All controls.
    pub total: u32,
    /// Passing.
    pub pass: u32,
    /// Warning.
    pub warn: u32,
    /// Failing.
    pub fail: u32,
    /// Not applicable or not evaluable here.
    pub not_applicable: u32,
}

/// The four standards.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ComplianceStandards {
    /// PCI DSS v4.0.1.
    pub pci_dss: Vec<ComplianceControl>,
    /// GDPR.
    pub gdpr: Vec<ComplianceControl>,
    /// NIST SP 800-57 Part 1 (and SP 800-38D).
    pub nist: Vec<ComplianceControl>,
    /// ISO/IEC 27001:2022.
    pub iso27001: Vec<ComplianceControl>,
}

/// One control.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ComplianceControl {
    /// Requirement number (`3.7.4`, `Art. 32(1)(c)`, `A.8.24`).
    pub id: String,
    /// What it asks.
    pub title: String,
    /// `pass`, `warn`, `fail` or `not_applicable`.
    pub status: String,
    /// The measured facts.
    pub evidence: Vec<String>,
    /// The same facts as numbers (absent when none).
    pub measurements: Option<serde_json::Value>,
    /// What to do (absent when passing).
    pub remediation: Option<String>,
}

/// An old label.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct LegacyEntry {
    /// `PCI DSS 3.2.1` or `ISO/IEC 27001:2013`.
    pub standard: String,
    /// `3.4`, `A.10.1`, …
    pub requirement: String,
    /// What it asked.
    pub title: String,
    /// `standard/id` of the answering controls.
    pub controls: Vec<String>,
    /// The worst status among them.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(at: Option<&str>, format: Option<&str>) -> ApiResult<(Option<i64>, Format)> {
        ComplianceQuery {
            at: at.map(str::to_owned),
            format: format.map(str::to_owned),
        }
        .parse()
    }

    #[test]
    fn query_parses_and_refuses_bad_values() {
        assert_eq!(q(None, None).unwrap(), (None, Format::Json));
        assert_eq!(
            q(Some("2027-03-01T00:00:00Z"), Some("html")).unwrap(),
            (Some(1_803_859_200_000), Format::Html)
        );
        assert_eq!(q(None, Some("md")).unwrap().1, Format::Markdown);
        assert!(q(Some("tomorrow"), None).is_err());
        assert!(q(None, Some("pdf")).is_err());
    }
}
