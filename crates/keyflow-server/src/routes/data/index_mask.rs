//! Values derived without encryption: `/blind-index` and `/mask`.

use axum::extract::State;
use axum::Json;
use keyflow_kms::keyflow_core::mask::MaskType;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::required;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::routes::granted_purpose;
use crate::state::AppState;

/// `POST /blind-index`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlindIndexRequest {
    /// The value to index (a string, or any JSON value).
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Key ring to use.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// The field the value belongs to, used as given; indexes of different fields
    /// differ. Give `field` or `path`.
    pub field: Option<String>,
    /// Instead of `field`: a document field as `/encrypt-fields` indexes it (a selector
    /// such as `phoneNumber` or `cards[*].cardNumber`, normalized the same way).
    pub path: Option<String>,
    /// Bits to keep (8..=256, default 32).
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
    pub bits: Option<u16>,
    /// Instead of `bits`: the expected number of distinct values; the bits are chosen
    /// so that about two distinct values share each index value.
    #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
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
/// Computes a blind index under the purpose's active version (with `allVersions`, also
/// under every live version).
#[utoipa::path(post, path = "/api/encryption/blind-index", request_body = BlindIndexRequest,
    responses((status = 200, description = "The index; with allVersions also `indexes`, newest first", body = crate::openapi::responses::BlindIndexResponse), (status = 400), (status = 401), (status = 403),
              (status = 404, description = "Unknown purpose")),
    security(("bearer" = [])))]
pub async fn blind_index(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<BlindIndexRequest>,
) -> ApiResult<Json<Value>> {
    let p = granted_purpose(&who, &req.purpose)?;
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
    // Newest first: with `allVersions` every live version's index, else the active one.
    let result = if req.all_versions {
        state.service.blind_indexes(&p, &field, &bytes, bits).await
    } else {
        state
            .service
            .blind_index(&p, &field, &bytes, bits)
            .await
            .map(|b| vec![b])
    }
    .map_err(ApiError::from);
    let active = result.as_ref().ok().and_then(|l| l.first());
    state.metrics.record(
        &OpRecord::new(Op::BlindIndex, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(active.map(|b| b.key_version.get()))
            .items(match &result {
                Ok(all) => all.len(),
                Err(_) if req.all_versions => 0,
                Err(_) => 1,
            })
            .outcome(&result),
    );
    let all = result?;
    let newest = all
        .first()
        .ok_or_else(|| ApiError::Internal("no live key version".into()))?;
    let mut body = json!({
        "index": newest.hex,
        "keyVersion": newest.key_version.get(),
        "bits": bits,
    });
    if req.all_versions {
        body["indexes"] = all
            .iter()
            .map(|b| json!({ "index": b.hex, "keyVersion": b.key_version.get() }))
            .collect();
    }
    Ok(Json(body))
}

/// Masks a value for display.
#[utoipa::path(post, path = "/api/encryption/mask", request_body = MaskRequest,
    responses((status = 200, description = "The masked value", body = crate::openapi::responses::MaskResponse), (status = 400), (status = 401), (status = 403)),
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
    state
        .metrics
        .record(&OpRecord::new(Op::Mask, who.id(), &rid));
    Ok(Json(json!({ "masked": masked, "type": kind.name() })))
}
