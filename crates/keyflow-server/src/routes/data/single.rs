//! One value: `/encrypt` and `/decrypt`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyflow_kms::keyflow_core::envelope::write::text_len;
use keyflow_kms::keyflow_core::PayloadKind;
use keyflow_kms::{Encrypt, EncryptMode, EncryptionService, Input, KmsError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::input::{bad_base64, base64_engine, Payload};
use super::json::{json_body, push_decrypted};
use super::{authorize_ciphertext, error_code};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, JsonBody, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::routes::{context, granted_purpose};
use crate::state::AppState;

/// `POST /encrypt`. Read borrowing from the body: a large `data` string is not copied.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest<'a> {
    /// Any JSON value; its type survives decryption. With `encoding: "base64"`, a
    /// base64 string of raw bytes.
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub data: Option<&'a RawValue>,
    /// `"base64"`: `data` is standard base64 (padding optional) of raw bytes, which are
    /// encrypted as bytes; decrypt returns them the same way, with `encoding: "base64"`.
    /// The way to send binary data. Absent: `data` is a JSON value.
    pub encoding: Option<String>,
    /// Key ring to use.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// String pairs bound into the ciphertext; order of keys is irrelevant.
    pub context: Option<BTreeMap<String, String>>,
    /// Deterministic (searchable-equality) encryption.
    #[serde(default)]
    pub deterministic: bool,
    /// Also return the ciphertext's parsed header.
    #[serde(default)]
    pub return_object: bool,
}

/// `POST /decrypt`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    /// The text ciphertext (`kf1:…`), or, with transition reads on
    /// (`KEYFLOW_LEGACY_READS`), a legacy package (answered with `legacy: true`).
    pub encrypted_data: String,
    /// The context given at encryption.
    pub context: Option<BTreeMap<String, String>>,
}

/// Encrypts one value.
#[utoipa::path(post, path = "/api/encryption/encrypt", request_body = EncryptRequest,
    responses((status = 200, description = "The ciphertext; with returnObject also its `envelope`", body = crate::openapi::responses::EncryptResponse),
              (status = 400, description = "Malformed JSON or missing fields"), (status = 401), (status = 403),
              (status = 404, description = "Unknown purpose (strict mode)"), (status = 413)),
    security(("bearer" = [])))]
pub async fn encrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    body: JsonBody,
) -> ApiResult<Response> {
    let req: EncryptRequest<'_> = body.parse()?;
    let p = granted_purpose(&who, &req.purpose)?;
    let data = req
        .data
        .filter(|d| d.get() != "null")
        .ok_or_else(|| ApiError::InvalidRequest("missing field 'data'".into()))?;
    let payload = Payload::parse(data, req.encoding.as_deref())?;
    let ctx = context(req.context)?;
    // The body is written directly (this is the hottest route): the ciphertext's text
    // form (`kf1:` + URL-safe base64) needs no JSON escaping.
    const OPEN: &[u8] = b"{\"encryptedData\":\"";
    let plain_len = match &payload {
        Payload::Ready(_, bytes) => bytes.len(),
        Payload::Base64(text) => base64_engine(text)
            .decoded_length(text.as_bytes())
            .map_err(|_| bad_base64())?,
    };
    let mut out = Vec::with_capacity(OPEN.len() + text_len(plain_len + 128) + 2);
    out.extend_from_slice(OPEN);
    let mode = EncryptMode::deterministic_if(req.deterministic);
    let result = match payload {
        Payload::Ready(kind, bytes) => {
            let request = Encrypt::new(&p, &ctx, Input::Payload(kind, &bytes)).mode(mode);
            state
                .service
                .encrypt_into(request, &mut out)
                .await
                .map_err(ApiError::from)
        }
        Payload::Base64(text) => {
            // Decoded straight into the envelope: a large binary payload is not copied.
            // The decoder's failure is told apart from the service's own errors.
            const UNDECODABLE: &str = "base64 data";
            let mut fill = |buf: &mut Vec<u8>| {
                let start = buf.len();
                buf.resize(start + plain_len, 0);
                let tail = buf.get_mut(start..).unwrap_or_default();
                let out = base64_simd::Out::from_slice(tail);
                match base64_engine(&text).decode(text.as_bytes(), out) {
                    Ok(d) if d.len() == plain_len => Ok(()),
                    _ => Err(keyflow_kms::keyflow_core::Error::Invalid(UNDECODABLE)),
                }
            };
            let input = Input::Filled {
                kind: PayloadKind::Bytes,
                len: plain_len,
                fill: &mut fill,
            };
            state
                .service
                .encrypt_into(Encrypt::new(&p, &ctx, input).mode(mode), &mut out)
                .await
                .map_err(|e| match e {
                    KmsError::Invalid(UNDECODABLE) => bad_base64(),
                    e => ApiError::from(e),
                })
        }
    };
    state.metrics.record(
        &OpRecord::new(Op::Encrypt, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(result.as_ref().ok().map(|v| v.get()))
            .outcome(&result),
    );
    result?;
    if req.return_object {
        let ct = std::str::from_utf8(&out[OPEN.len()..])
            .map_err(|_| ApiError::Internal("ciphertext text form".into()))?;
        let envelope = EncryptionService::summary(ct)?;
        return Ok(Json(json!({ "encryptedData": ct, "envelope": envelope })).into_response());
    }
    out.extend_from_slice(b"\"}");
    Ok(json_body(out))
}
/// Decrypts one value.
#[utoipa::path(post, path = "/api/encryption/decrypt", request_body = DecryptRequest,
    responses((status = 200, description = "The value (bytes come back base64 with `encoding: base64`)", body = crate::openapi::responses::DecryptResponse),
              (status = 400), (status = 401), (status = 403, description = "Purpose of the ciphertext not granted"),
              (status = 422, description = "Ciphertext does not parse or authenticate")),
    security(("bearer" = [])))]
pub async fn decrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> ApiResult<Response> {
    who.require(&[
        keyflow_kms::access::Role::Admin,
        keyflow_kms::access::Role::Service,
    ])?;
    let ctx = context(req.context)?;
    let ct = req.encrypted_data.trim();
    if let Some(result) = crate::legacy::decrypt_package(&state, &who, ct).await {
        return legacy_answer(&state, &who, &rid, result);
    }
    let authorized = authorize_ciphertext(&who, ct);
    let mut out = Vec::with_capacity(ct.len() + 32);
    out.push(b'{');
    let result = match &authorized {
        Ok(_) => match state.service.decrypt_raw(ct, &ctx).await {
            Ok(pt) => push_decrypted(&pt, &mut out),
            Err(e) => Err(ApiError::from(e)),
        },
        Err(_) => Err(ApiError::DecryptionFailed),
    };
    let (p, v) = authorized
        .as_ref()
        .map(|(p, v)| (Some(p.as_str()), Some(*v)))
        .unwrap_or((None, None));
    let outcome = match (&authorized, &result) {
        (Err(e), _) | (Ok(_), Err(e)) => error_code(e),
        _ => "ok",
    };
    state.metrics.record(
        &OpRecord::new(Op::Decrypt, who.id(), &rid)
            .purpose(p)
            .key_version(v)
            .result(outcome),
    );
    authorized?;
    result?;
    out.push(b'}');
    Ok(json_body(out))
}

/// The answer to a legacy package read by `/decrypt` (transition reads, crate::legacy).
fn legacy_answer(
    state: &AppState,
    who: &Principal,
    rid: &RequestId,
    result: ApiResult<(Value, String)>,
) -> ApiResult<Response> {
    let outcome = result.as_ref().err().map_or("ok", error_code);
    state.metrics.record(
        &OpRecord::new(Op::Decrypt, who.id(), rid)
            .purpose(result.as_ref().ok().map(|(_, p)| p.as_str()))
            .result(outcome),
    );
    Ok(Json(result?.0).into_response())
}
