//! Data operations: encrypt, decrypt, batches, blind index, mask.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use keyflow_kms::keyflow_core::mask::MaskType;
use keyflow_kms::{Decrypted, EncryptionService};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{context, purpose};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// `POST /encrypt`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    /// Any JSON value; its type survives decryption.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Key ring to use.
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
    /// The text ciphertext (`kf1:…`).
    pub encrypted_data: String,
    /// The context given at encryption.
    pub context: Option<BTreeMap<String, String>>,
}

/// `POST /batch/encrypt`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchEncryptRequest {
    /// Plain values.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Key ring to use.
    pub purpose: String,
    /// Context bound into every item.
    pub context: Option<BTreeMap<String, String>>,
}

/// `POST /batch/decrypt`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDecryptRequest {
    /// Ciphertext strings.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Context given at encryption.
    pub context: Option<BTreeMap<String, String>>,
}

/// `POST /blind-index`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlindIndexRequest {
    /// The value to index (a string, or any JSON value).
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Key ring to use.
    pub purpose: String,
    /// The field the value belongs to, used as given; indexes of different fields
    /// differ. Give `field` or `path`.
    pub field: Option<String>,
    /// Instead of `field`: a document field as `/encrypt-fields` indexes it (a selector
    /// such as `phoneNumber` or `cards[*].cardNumber`, normalized the same way).
    pub path: Option<String>,
    /// Bits to keep (8..=256, default 32).
    pub bits: Option<u16>,
    /// Instead of `bits`: the expected number of distinct values; the bits are chosen
    /// so that about two distinct values share each index value.
    pub expected_distinct: Option<u64>,
    /// Also return the index under every key version that may still decrypt, newest
    /// first (`indexes`), so a search matches rows indexed before a rotation.
    #[serde(default)]
    pub all_versions: bool,
}

/// `POST /mask`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaskRequest {
    /// The value to mask.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// card, bankAccount, ssn, phone, email, iban or default.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

fn required(v: Option<Value>, name: &str) -> ApiResult<Value> {
    match v {
        Some(Value::Null) | None => {
            Err(ApiError::InvalidRequest(format!("missing field '{name}'")))
        }
        Some(v) => Ok(v),
    }
}

fn error_code(e: &ApiError) -> &'static str {
    e.status_and_code().1
}

fn decrypted_json(d: Decrypted) -> Value {
    match d {
        Decrypted::Json(v) => json!({ "data": v }),
        Decrypted::Bytes(b) => json!({
            "data": base64::engine::general_purpose::STANDARD.encode(&b[..]),
            "encoding": "base64",
        }),
    }
}

/// Encrypts one value.
#[utoipa::path(post, path = "/api/encryption/encrypt", request_body = EncryptRequest,
    responses((status = 200, description = "`{encryptedData}`; with returnObject also `{envelope}`"),
              (status = 400, description = "Malformed JSON or missing fields"), (status = 401), (status = 403),
              (status = 404, description = "Unknown purpose (strict mode)"), (status = 413)),
    security(("bearer" = [])))]
pub async fn encrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<EncryptRequest>,
) -> ApiResult<Response> {
    let p = purpose(&req.purpose)?;
    who.require_purpose(&p)?;
    let data = required(req.data, "data")?;
    let ctx = context(req.context)?;
    let result = state
        .service
        .encrypt_json(&data, &p, &ctx, req.deterministic)
        .await
        .map_err(ApiError::from);
    let version = result.as_ref().ok().map(|(_, v)| v.get());
    state.metrics.record(&OpRecord {
        op: Op::Encrypt,
        actor: who.id(),
        purpose: Some(p.as_str()),
        key_version: version,
        items: 1,
        result: result.as_ref().map_or_else(error_code, |_| "ok"),
        request_id: &rid.0,
    });
    let (ct, _) = result?;
    if req.return_object {
        let envelope = EncryptionService::summary(&ct)?;
        return Ok(Json(json!({ "encryptedData": ct, "envelope": envelope })).into_response());
    }
    // The text form is `kf1:` + URL-safe base64: nothing in it needs JSON escaping, so
    // the body is written directly (this is the hottest route).
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"encryptedData\":\"{ct}\"}}"),
    )
        .into_response())
}

/// Authorizes a decrypt: the purpose comes from the ciphertext's own header.
fn authorize_ciphertext(who: &Principal, ct: &str) -> ApiResult<(String, u32)> {
    let summary = EncryptionService::summary(ct).map_err(|_| ApiError::DecryptionFailed)?;
    who.require_purpose(&purpose(&summary.purpose)?)?;
    Ok((summary.purpose, summary.key_version))
}

/// Decrypts one value.
#[utoipa::path(post, path = "/api/encryption/decrypt", request_body = DecryptRequest,
    responses((status = 200, description = "`{data}` (bytes come back base64 with `encoding: base64`)"),
              (status = 400), (status = 401), (status = 403, description = "Purpose of the ciphertext not granted"),
              (status = 422, description = "Ciphertext does not parse or authenticate")),
    security(("bearer" = [])))]
pub async fn decrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[
        keyflow_kms::access::Role::Admin,
        keyflow_kms::access::Role::Service,
    ])?;
    let ctx = context(req.context)?;
    let ct = req.encrypted_data.trim();
    let authorized = authorize_ciphertext(&who, ct);
    let result = match &authorized {
        Ok(_) => state
            .service
            .decrypt(ct, &ctx)
            .await
            .map_err(ApiError::from),
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
    state.metrics.record(&OpRecord {
        op: Op::Decrypt,
        actor: who.id(),
        purpose: p,
        key_version: v,
        items: 1,
        result: outcome,
        request_id: &rid.0,
    });
    authorized?;
    Ok(Json(decrypted_json(result?)))
}

fn batch_response(results: Vec<Value>) -> Json<Value> {
    let ok = results.iter().filter(|r| r["success"] == true).count();
    Json(json!({
        "total": results.len(),
        "successful": ok,
        "failed": results.len() - ok,
        "results": results,
    }))
}

fn check_batch_size(state: &AppState, n: usize) -> ApiResult<()> {
    if n > state.limits.batch_items {
        return Err(ApiError::InvalidRequest(format!(
            "too many items: {n} (at most {})",
            state.limits.batch_items
        )));
    }
    Ok(())
}

fn item_error(e: &ApiError) -> Value {
    let mut body = e.body();
    body["success"] = json!(false);
    body
}

/// Encrypts a batch; one result per item, in order.
#[utoipa::path(post, path = "/api/encryption/batch/encrypt", request_body = BatchEncryptRequest,
    responses((status = 200, description = "`{total, successful, failed, results}`"), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("bearer" = [])))]
pub async fn batch_encrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<BatchEncryptRequest>,
) -> ApiResult<Json<Value>> {
    let p = purpose(&req.purpose)?;
    who.require_purpose(&p)?;
    check_batch_size(&state, req.items.len())?;
    let ctx = context(req.context)?;
    let outcome = state
        .service
        .encrypt_batch(&req.items, &p, &ctx)
        .await
        .map_err(ApiError::from);
    state.metrics.record(&OpRecord {
        op: Op::BatchEncrypt,
        actor: who.id(),
        purpose: Some(p.as_str()),
        key_version: None,
        items: req.items.len(),
        result: outcome.as_ref().map_or_else(error_code, |_| "ok"),
        request_id: &rid.0,
    });
    let results = outcome?
        .into_iter()
        .map(|r| match r {
            Ok(ct) => json!({ "success": true, "encryptedData": ct }),
            Err(e) => item_error(&ApiError::from(e)),
        })
        .collect();
    Ok(batch_response(results))
}

/// Decrypts a batch; each item is authorized by its own purpose.
#[utoipa::path(post, path = "/api/encryption/batch/decrypt", request_body = BatchDecryptRequest,
    responses((status = 200, description = "`{total, successful, failed, results}`"), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("bearer" = [])))]
pub async fn batch_decrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<BatchDecryptRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[
        keyflow_kms::access::Role::Admin,
        keyflow_kms::access::Role::Service,
    ])?;
    check_batch_size(&state, req.items.len())?;
    let ctx = context(req.context)?;
    // Authorize every item by its own purpose, then decrypt the allowed ones together.
    let checked: Vec<ApiResult<String>> = req
        .items
        .iter()
        .map(|item| {
            let ct = item
                .as_str()
                .ok_or_else(|| ApiError::InvalidRequest("item is not a ciphertext string".into()))?
                .trim();
            authorize_ciphertext(&who, ct)?;
            Ok(ct.to_owned())
        })
        .collect();
    let allowed: Vec<String> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut decrypted = state
        .service
        .decrypt_batch(&allowed, &ctx)
        .await
        .into_iter();
    let results: Vec<Value> = checked
        .into_iter()
        .map(|c| {
            let r = c.and_then(|_| {
                decrypted
                    .next()
                    .ok_or_else(|| ApiError::Internal("batch result missing".into()))?
                    .map_err(ApiError::from)
            });
            match r {
                Ok(d) => {
                    let mut v = decrypted_json(d);
                    v["success"] = json!(true);
                    v
                }
                Err(e) => item_error(&e),
            }
        })
        .collect();
    let all_ok = results.iter().all(|r| r["success"] == true);
    state.metrics.record(&OpRecord {
        op: Op::BatchDecrypt,
        actor: who.id(),
        purpose: None,
        key_version: None,
        items: req.items.len(),
        result: if all_ok { "ok" } else { "partial_failure" },
        request_id: &rid.0,
    });
    Ok(batch_response(results))
}

/// Computes a blind index under the purpose's active version (with `allVersions`, also
/// under every live version).
#[utoipa::path(post, path = "/api/encryption/blind-index", request_body = BlindIndexRequest,
    responses((status = 200, description = "`{index, keyVersion, bits}`; with allVersions also `indexes: [{index, keyVersion}]`, newest first"), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn blind_index(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<BlindIndexRequest>,
) -> ApiResult<Json<Value>> {
    let p = purpose(&req.purpose)?;
    who.require_purpose(&p)?;
    let data = required(req.data, "data")?;
    let bytes = match &data {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let field = match (req.field, req.path) {
        (Some(f), None) => f,
        (None, Some(path)) => keyflow_fields::blind::label_of(&path)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?,
        _ => {
            return Err(ApiError::InvalidRequest(
                "give exactly one of 'field' (used as given) and 'path' (a document field)".into(),
            ))
        }
    };
    let bits = match (req.bits, req.expected_distinct) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give 'bits' or 'expectedDistinct', not both".into(),
            ))
        }
        (Some(b), None) => b,
        (None, Some(n)) => keyflow_fields::blind::bits_for_distinct_values(n),
        (None, None) => 32,
    };
    if req.all_versions {
        let result = state
            .service
            .blind_indexes(&p, &field, &bytes, bits)
            .await
            .map_err(ApiError::from);
        state.metrics.record(&OpRecord {
            op: Op::BlindIndex,
            actor: who.id(),
            purpose: Some(p.as_str()),
            key_version: result
                .as_ref()
                .ok()
                .and_then(|l| l.first())
                .map(|b| b.key_version.get()),
            items: result.as_ref().map_or(0, Vec::len),
            result: result.as_ref().map_or_else(error_code, |_| "ok"),
            request_id: &rid.0,
        });
        let all = result?;
        let newest = all
            .first()
            .ok_or_else(|| ApiError::Internal("no live key version".into()))?;
        let indexes: Vec<Value> = all
            .iter()
            .map(|b| json!({ "index": b.hex, "keyVersion": b.key_version.get() }))
            .collect();
        return Ok(Json(json!({
            "index": newest.hex,
            "keyVersion": newest.key_version.get(),
            "bits": bits,
            "indexes": indexes,
        })));
    }
    let result = state
        .service
        .blind_index(&p, &field, &bytes, bits)
        .await
        .map_err(ApiError::from);
    state.metrics.record(&OpRecord {
        op: Op::BlindIndex,
        actor: who.id(),
        purpose: Some(p.as_str()),
        key_version: result.as_ref().ok().map(|b| b.key_version.get()),
        items: 1,
        result: result.as_ref().map_or_else(error_code, |_| "ok"),
        request_id: &rid.0,
    });
    let bi = result?;
    Ok(Json(
        json!({ "index": bi.hex, "keyVersion": bi.key_version.get(), "bits": bits }),
    ))
}

/// Masks a value for display.
#[utoipa::path(post, path = "/api/encryption/mask", request_body = MaskRequest,
    responses((status = 200, description = "`{masked, type}`"), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn mask(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<MaskRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[
        keyflow_kms::access::Role::Admin,
        keyflow_kms::access::Role::Service,
    ])?;
    let kind: MaskType = req
        .kind
        .as_deref()
        .unwrap_or("default")
        .parse()
        .map_err(|e| ApiError::InvalidRequest(format!("type: {e}")))?;
    let value = match required(req.data, "data")? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::InvalidRequest(
                "data must be a string or a number".into(),
            ))
        }
    };
    let masked = state.service.mask(&value, kind);
    state.metrics.record(&OpRecord {
        op: Op::Mask,
        actor: who.id(),
        purpose: None,
        key_version: None,
        items: 1,
        result: "ok",
        request_id: &rid.0,
    });
    Ok(Json(json!({ "masked": masked, "type": kind.name() })))
}
