//! Key backup and restore (admin only): `POST /keys/backup`, `POST /keys/restore`.
//!
//! The backup is the file format of `docs/backup-format.md`, returned as bytes; restore
//! takes it base64-encoded inside JSON. Passwords are moved into zeroizing buffers as
//! soon as the body is parsed and never logged.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use keyflow_kms::access::Role;
use keyflow_kms::backup::{BackupPassword, RestoreReport};
use serde::Deserialize;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// `POST /keys/backup`
#[derive(Deserialize, ToSchema)]
pub struct BackupRequest {
    /// The backup password (at least 16 characters).
    pub password: String,
}

/// `POST /keys/restore`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// The backup password.
    pub password: String,
    /// The backup file, base64.
    pub backup: String,
    /// Only report what would happen; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn password(raw: &mut String) -> ApiResult<BackupPassword> {
    BackupPassword::new(std::mem::take(raw))
        .map_err(|e| ApiError::InvalidRequest(format!("password: {e}")))
}

fn decode_backup(text: &str) -> ApiResult<Vec<u8>> {
    let text = text.trim();
    [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| ApiError::InvalidRequest("backup: not base64".into()))
}

/// Returns an encrypted backup of every key version (metadata and material).
#[utoipa::path(post, path = "/api/encryption/keys/backup", request_body = BackupRequest,
    responses((status = 200, description = "The backup file (docs/backup-format.md)", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 400, description = "Password shorter than 16 characters"), (status = 401),
              (status = 403, description = "Admin only")),
    security(("bearer" = [])))]
pub async fn backup(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(mut req): ApiJson<BackupRequest>,
) -> ApiResult<Response> {
    who.require(&[Role::Admin])?;
    let password = password(&mut req.password)?;
    let result = state
        .service
        .keys()
        .backup(&password)
        .await
        .map_err(ApiError::from);
    state
        .metrics
        .record(&OpRecord::new(Op::KeysBackup, who.id(), &rid).outcome(&result));
    let bytes = result?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"keyflow-keys.kfbackup\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Restores a backup (into an empty keystore, or merged); `dryRun` writes nothing.
#[utoipa::path(post, path = "/api/encryption/keys/restore", request_body = RestoreRequest,
    responses((status = 200, description = "What the restore did (or would do)", body = crate::openapi::admin::RestoreResponse),
              (status = 400), (status = 401), (status = 403, description = "Admin only"),
              (status = 409, description = "Conflicts with the keystore; nothing written"),
              (status = 422, description = "Wrong password or damaged file; nothing written")),
    security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(mut req): ApiJson<RestoreRequest>,
) -> ApiResult<Json<RestoreReport>> {
    who.require(&[Role::Admin])?;
    let password = password(&mut req.password)?;
    let bytes = Zeroizing::new(decode_backup(&req.backup)?);
    let result = state
        .service
        .keys()
        .restore(&bytes, &password, req.dry_run)
        .await
        .map_err(ApiError::from);
    state.metrics.record(
        &OpRecord::new(Op::KeysRestore, who.id(), &rid)
            .items(result.as_ref().map_or(0, |r| r.total))
            .outcome(&result),
    );
    Ok(Json(result?))
}
