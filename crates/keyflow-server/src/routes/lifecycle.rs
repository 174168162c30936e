//! Key lifecycle routes (admin): revoke, reinstate, destroy, rotation policies, a
//! scheduler pass on demand, and rewrap (admin or service).

use axum::extract::State;
use axum::Json;
use keyflow_kms::access::Role;
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::scheduler::ActionOutcome;
use keyflow_kms::{KeyVersion, Policy, Purpose, VersionChange};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::{context, purpose};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// Most items in one rewrap request.
const MAX_REWRAP_ITEMS: usize = 1000;

/// `POST /keys/revoke`, `/keys/reinstate`, `/keys/destroy`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionRequest {
    /// Key ring.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Version number.
    #[serde(deserialize_with = "crate::extract::field::integer")]
    pub version: u32,
    /// Why (required to revoke).
    pub reason: Option<String>,
    /// Must be `true` to destroy (irreversible).
    #[serde(default)]
    pub confirm: bool,
}

/// `POST /keys/policy`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRequest {
    /// Key ring.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Rotation period, days (default 90).
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
    pub rotation_days: Option<u32>,
    /// Grace period after rotation, days (default 30).
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
    pub grace_days: Option<u32>,
    /// Warn window before the rotation date, days (default 7).
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
    pub warn_days: Option<u32>,
    /// Encryptions per version before rotation (default 2^30).
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
    pub max_encryptions: Option<u64>,
}

/// `GET /keys/policy` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Key ring.
    #[param(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
}

/// `POST /keys/rotate-due`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateDueRequest {
    /// Evaluate the policies as of this RFC 3339 instant (default now).
    pub at: Option<String>,
    /// Only report what would be done.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /rewrap`: one value or `items`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewrapRequest {
    /// One ciphertext.
    pub encrypted_data: Option<String>,
    /// Several ciphertexts.
    pub items: Option<Vec<String>>,
    /// The context given at encryption (kept).
    pub context: Option<std::collections::BTreeMap<String, String>>,
}

fn version(n: u32) -> ApiResult<KeyVersion> {
    KeyVersion::new(n).map_err(|e| ApiError::InvalidRequest(format!("version: {e}")))
}

/// Which change a route asks for (the revoke reason comes from the body).
#[derive(Clone, Copy)]
enum Action {
    Revoke,
    Reinstate,
    Destroy,
}

async fn change(
    state: AppState,
    who: Principal,
    rid: RequestId,
    req: VersionRequest,
    action: Action,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin])?;
    let p = purpose(&req.purpose)?;
    let v = version(req.version)?;
    if let (Action::Revoke, Some(reason)) = (action, req.reason.as_deref()) {
        // The admin's stated reason is part of the record (it is not data).
        rid.audit().set_detail(json!({ "reason": reason }));
    }
    let change = match action {
        Action::Revoke => VersionChange::Revoke(
            req.reason
                .as_deref()
                .ok_or_else(|| ApiError::InvalidRequest("missing field 'reason'".into()))?,
        ),
        Action::Reinstate => VersionChange::Reinstate,
        Action::Destroy if !req.confirm => {
            return Err(ApiError::InvalidRequest(
                "destroying key material is irreversible: send \"confirm\": true".into(),
            ))
        }
        Action::Destroy => VersionChange::Destroy,
    };
    let result = state
        .service
        .keys()
        .change_version(&p, v, change)
        .await
        .map_err(ApiError::from);
    state.metrics.record(
        &OpRecord::new(Op::KeysLifecycle, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(Some(v.get()))
            .outcome(&result),
    );
    Ok(Json(crate::wire::key_metadata(&result?)))
}

/// Revokes a version: it no longer decrypts (reversible). The active version cannot
/// be revoked.
#[utoipa::path(post, path = "/api/encryption/keys/revoke", request_body = crate::openapi::admin::RevokeRequest,
    responses((status = 200, description = "The version's metadata", body = crate::openapi::admin::KeyMetadata), (status = 400), (status = 401),
              (status = 403, description = "Admin only"), (status = 404, description = "Unknown version"),
              (status = 409, description = "Active or already revoked")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<VersionRequest>,
) -> ApiResult<Json<Value>> {
    change(state, who, rid, req, Action::Revoke).await
}

/// Reinstates a revoked version (as `deprecated`).
#[utoipa::path(post, path = "/api/encryption/keys/reinstate", request_body = crate::openapi::admin::ReinstateRequest,
    responses((status = 200, description = "The version's metadata", body = crate::openapi::admin::KeyMetadata), (status = 401), (status = 403),
              (status = 404), (status = 409, description = "Not revoked")),
    security(("bearer" = [])))]
pub async fn reinstate(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<VersionRequest>,
) -> ApiResult<Json<Value>> {
    change(state, who, rid, req, Action::Reinstate).await
}

/// Destroys a revoked version's material (crypto-shredding; irreversible). Needs
/// `"confirm": true`.
#[utoipa::path(post, path = "/api/encryption/keys/destroy", request_body = crate::openapi::admin::DestroyRequest,
    responses((status = 200, description = "The version's metadata", body = crate::openapi::admin::KeyMetadata), (status = 400, description = "Not confirmed"),
              (status = 401), (status = 403), (status = 404), (status = 409, description = "Not revoked")),
    security(("bearer" = [])))]
pub async fn destroy(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<VersionRequest>,
) -> ApiResult<Json<Value>> {
    change(state, who, rid, req, Action::Destroy).await
}

/// Records a policy request and answers with the purpose's policy.
fn policy_answer(
    state: &AppState,
    who: &Principal,
    rid: &RequestId,
    purpose: &Purpose,
    result: ApiResult<Policy>,
) -> ApiResult<Json<Value>> {
    state.metrics.record(
        &OpRecord::new(Op::KeysPolicy, who.id(), rid)
            .purpose(Some(purpose.as_str()))
            .outcome(&result),
    );
    Ok(Json(
        json!({ "purpose": purpose.as_str(), "policy": result? }),
    ))
}

/// A purpose's rotation policy (the default when none was set).
#[utoipa::path(get, path = "/api/encryption/keys/policy", params(PolicyQuery),
    responses((status = 200, description = "The purpose's policy", body = crate::openapi::admin::PolicyResponse), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let p = purpose(&q.purpose)?;
    let result = state
        .service
        .keys()
        .policy(&p)
        .await
        .map_err(ApiError::from);
    policy_answer(&state, &who, &rid, &p, result)
}

/// Sets a purpose's rotation policy; omitted fields keep their current value.
#[utoipa::path(post, path = "/api/encryption/keys/policy", request_body = PolicyRequest,
    responses((status = 200, description = "The purpose's policy", body = crate::openapi::admin::PolicyResponse), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn set_policy(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<PolicyRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin])?;
    let p = purpose(&req.purpose)?;
    let result = async {
        let mut policy = state.service.keys().policy(&p).await?;
        policy.rotation_days = req.rotation_days.unwrap_or(policy.rotation_days);
        policy.grace_days = req.grace_days.unwrap_or(policy.grace_days);
        policy.warn_days = req.warn_days.unwrap_or(policy.warn_days);
        policy.max_encryptions = req.max_encryptions.unwrap_or(policy.max_encryptions);
        state.service.keys().set_policy(&p, &policy).await?;
        Ok::<_, keyflow_kms::KmsError>(policy)
    }
    .await
    .map_err(ApiError::from);
    policy_answer(&state, &who, &rid, &p, result)
}

/// Runs one scheduler pass now (or plans one with `dryRun`), as of `at`.
#[utoipa::path(post, path = "/api/encryption/keys/rotate-due", request_body = RotateDueRequest,
    responses((status = 200, description = "The pass report", body = crate::openapi::admin::PassReport),
              (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn rotate_due(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<RotateDueRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin])?;
    let now = SystemClock.now_millis();
    let at = match req.at.as_deref() {
        None => now,
        Some(s) => parse_rfc3339(s)?,
    };
    // A pass on demand uses a short lease so it does not block the periodic one.
    let holder = format!("api:{}", rid.0);
    let result = state
        .service
        .keys()
        .scheduler_pass(at, req.dry_run, &holder, 60_000)
        .await
        .map_err(ApiError::from);
    if result.is_ok() && !req.dry_run {
        let _ = state
            .service
            .keys()
            .release_lease(keyflow_kms::scheduler::SCHEDULER_LEASE, &holder)
            .await;
    }
    state
        .metrics
        .record(&OpRecord::new(Op::KeysRotateDue, who.id(), &rid).outcome(&result));
    let report = result?;
    // The keys this pass changed, in the request's audit record.
    for a in report
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Applied)
    {
        rid.audit().add_purpose(a.purpose.as_str());
        rid.audit().add_version(a.version.get());
    }
    rid.audit().set_detail(json!({
        "dryRun": report.dry_run,
        "ran": report.ran,
        "actions": report.actions.len(),
        "failed": report.failures(),
    }));
    Ok(Json(
        serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

fn parse_rfc3339(s: &str) -> ApiResult<i64> {
    keyflow_kms::clock::parse_rfc3339(s)
        .ok_or_else(|| ApiError::InvalidRequest("at: expected an RFC 3339 instant".into()))
}

/// Re-encrypts ciphertexts under their purpose's active version; the plaintext never
/// leaves the server. A value already under the active version comes back unchanged.
#[utoipa::path(post, path = "/api/encryption/rewrap", request_body = RewrapRequest,
    responses((status = 200, description = "`Rewrapped` for `encryptedData`, `{results}` for `items`", body = crate::openapi::admin::RewrapResponse),
              (status = 400), (status = 401), (status = 403, description = "Purpose not granted"),
              (status = 422, description = "Ciphertext does not parse or authenticate")),
    security(("bearer" = [])))]
pub async fn rewrap(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<RewrapRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Service])?;
    let ctx = context(req.context)?;
    let one = |ct: String| {
        let state = &state;
        let who = &who;
        let ctx = &ctx;
        async move {
            if let Some(r) = crate::legacy::rewrap_package(state, who, ct.trim(), ctx).await {
                return r;
            }
            let summary = keyflow_kms::EncryptionService::summary(ct.trim())
                .map_err(|_| ApiError::DecryptionFailed)?;
            who.require_purpose(&purpose(&summary.purpose)?)?;
            let r = state.service.rewrap(ct.trim(), ctx).await?;
            Ok::<_, ApiError>(json!({
                "encryptedData": r.ciphertext,
                "fromVersion": r.from_version.get(),
                "toVersion": r.to_version.get(),
                "changed": r.changed,
            }))
        }
    };
    match (req.encrypted_data, req.items) {
        (Some(ct), None) => {
            let result = one(ct).await;
            state
                .metrics
                .record(&OpRecord::new(Op::Rewrap, who.id(), &rid).outcome(&result));
            Ok(Json(result?))
        }
        (None, Some(items)) => {
            if items.len() > MAX_REWRAP_ITEMS {
                return Err(ApiError::InvalidRequest(format!(
                    "items: at most {MAX_REWRAP_ITEMS} per request"
                )));
            }
            let mut results = Vec::with_capacity(items.len());
            for ct in items {
                results.push(one(ct).await.unwrap_or_else(|e| e.body()));
            }
            state
                .metrics
                .record(&OpRecord::new(Op::Rewrap, who.id(), &rid).items(results.len()));
            Ok(Json(json!({ "results": results })))
        }
        _ => Err(ApiError::InvalidRequest(
            "send either 'encryptedData' or 'items'".into(),
        )),
    }
}
