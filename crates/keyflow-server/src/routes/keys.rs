//! Key management: generate, rotate (admin), list metadata (admin, auditor).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keyflow_kms::access::Role;
use keyflow_kms::{KeyStatus, VersionFilter};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::purpose;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// `POST /keys/generate`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    /// The new purpose.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Only `aes-256` (the default) exists; the old system's names for it are accepted:
    /// `data` (its `keyType` of data keys) and `aes-256-gcm` (its `algorithm`).
    pub key_type: Option<String>,
}

/// The accepted `keyType` values, all meaning a 256-bit data key: KeyFlow's names and
/// the old system's (`data` was the `keyType` of its data keys, as its key documents
/// show, and `aes-256-gcm` their `algorithm`).
const KEY_TYPES: [&str; 4] = ["aes-256", "aes256", "data", "aes-256-gcm"];

/// `POST /keys/rotate`
#[derive(Deserialize, ToSchema)]
pub struct RotateRequest {
    /// The purpose to rotate.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
}

/// `GET /keys` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this purpose.
    #[param(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: Option<String>,
    /// Only this state.
    pub status: Option<String>,
}

/// Creates version 1 of a new purpose.
#[utoipa::path(post, path = "/api/encryption/keys/generate", request_body = GenerateRequest,
    responses((status = 201, description = "The new key's metadata", body = crate::openapi::admin::KeyMetadata), (status = 400), (status = 401),
              (status = 403, description = "Admin only"), (status = 409, description = "Purpose exists")),
    security(("bearer" = [])))]
pub async fn generate(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    who.require(&[Role::Admin])?;
    let p = purpose(&req.purpose)?;
    if let Some(t) = req.key_type.as_deref() {
        if !KEY_TYPES.iter().any(|k| t.trim().eq_ignore_ascii_case(k)) {
            return Err(ApiError::InvalidRequest(
                "keyType: only aes-256 is supported (also accepted: aes256, data, aes-256-gcm)"
                    .into(),
            ));
        }
    }
    let result = state
        .service
        .keys()
        .generate(&p)
        .await
        .map_err(ApiError::from);
    state.metrics.record(
        &OpRecord::new(Op::KeysGenerate, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(result.as_ref().ok().map(|r| r.version.get()))
            .outcome(&result),
    );
    Ok((
        StatusCode::CREATED,
        Json(crate::wire::key_metadata(&result?)),
    ))
}

/// Rotates a purpose.
#[utoipa::path(post, path = "/api/encryption/keys/rotate", request_body = RotateRequest,
    responses((status = 200, description = "The old and the new version", body = crate::openapi::admin::RotateResponse), (status = 400), (status = 401),
              (status = 403, description = "Admin only"), (status = 404, description = "Unknown purpose")),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<RotateRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin])?;
    let p = purpose(&req.purpose)?;
    let result = state
        .service
        .keys()
        .rotate(&p)
        .await
        .map_err(ApiError::from);
    state.metrics.record(
        &OpRecord::new(Op::KeysRotate, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(result.as_ref().ok().map(|r| r.new_version.get()))
            .outcome(&result),
    );
    let r = result?;
    Ok(Json(json!({
        "purpose": r.purpose.as_str(),
        "oldVersion": r.old_version.get(),
        "newVersion": r.new_version.get(),
    })))
}

/// Lists key metadata.
#[utoipa::path(get, path = "/api/encryption/keys", params(ListQuery),
    responses((status = 200, description = "The versions matching the filter", body = crate::openapi::admin::KeyList), (status = 400), (status = 401),
              (status = 403, description = "Admin or auditor only")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let filter = VersionFilter {
        purpose: q.purpose.as_deref().map(purpose).transpose()?,
        status: q
            .status
            .as_deref()
            .map(|s| {
                s.parse::<KeyStatus>()
                    .map_err(|e| ApiError::InvalidRequest(format!("status: {e}")))
            })
            .transpose()?,
    };
    let keys = state.service.keys().list(&filter).await?;
    state.metrics.record(
        &OpRecord::new(Op::KeysList, who.id(), &rid)
            .purpose(filter.purpose.as_ref().map(|p| p.as_str()))
            .items(keys.len()),
    );
    Ok(Json(json!({
        "total": keys.len(),
        "keys": keys.iter().map(crate::wire::key_metadata).collect::<Vec<_>>(),
    })))
}
