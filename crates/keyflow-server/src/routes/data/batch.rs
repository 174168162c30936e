//! Many values, one answer: `/batch/encrypt` and `/batch/decrypt`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use keyflow_kms::keyflow_core::envelope::write::{push_text, text_len};
use keyflow_kms::keyflow_core::PayloadKind;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::authorize_ciphertext;
use super::input::{json_str, Payload};
use super::json::{push_decrypted, BatchWriter};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::routes::{context, granted_purpose};
use crate::state::AppState;

/// `POST /batch/encrypt`. Read borrowing from the body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchEncryptRequest<'a> {
    /// Plain values (with `encoding: "base64"`, base64 strings of raw bytes).
    #[serde(borrow)]
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<&'a RawValue>,
    /// As for `/encrypt`, applied to every item.
    pub encoding: Option<String>,
    /// Key ring to use.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Context bound into every item.
    pub context: Option<BTreeMap<String, String>>,
}

/// `POST /batch/decrypt`. Read borrowing from the body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDecryptRequest<'a> {
    /// Ciphertext strings.
    #[serde(borrow)]
    #[schema(value_type = Vec<String>)]
    pub items: Vec<&'a RawValue>,
    /// Context given at encryption.
    pub context: Option<BTreeMap<String, String>>,
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

/// Encrypts a batch; one result per item, in order.
#[utoipa::path(post, path = "/api/encryption/batch/encrypt", request_body = BatchEncryptRequest,
    responses((status = 200, description = "One result per item, in order", body = crate::openapi::responses::BatchEncryptResponse), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("bearer" = [])))]
pub async fn batch_encrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    body: JsonBody,
) -> ApiResult<Response> {
    let req: BatchEncryptRequest<'_> = body.parse()?;
    let p = granted_purpose(&who, &req.purpose)?;
    check_batch_size(&state, req.items.len())?;
    let ctx = context(req.context)?;
    let encoded: Vec<ApiResult<(PayloadKind, Cow<'_, [u8]>)>> = req
        .items
        .iter()
        .map(|raw| Payload::parse(raw, req.encoding.as_deref()).and_then(Payload::into_bytes))
        .collect();
    let mut w = BatchWriter::new(
        encoded
            .iter()
            .map(|e| e.as_ref().map_or(96, |(_, b)| text_len(b.len() + 64) + 48))
            .sum(),
    );
    // Items that could not even be encoded keep their place: before each sealed item,
    // the errors of the items before it are written.
    let mut cursor = encoded.iter();
    let outcome = state
        .service
        .encrypt_batch_each(
            encoded
                .iter()
                .filter_map(|e| e.as_ref().ok().map(|(k, b)| (*k, &b[..]))),
            &p,
            &ctx,
            |sealed| {
                for e in cursor.by_ref() {
                    match e {
                        Err(e) => w.push_err(e),
                        Ok(_) => break,
                    }
                }
                match sealed {
                    Ok(env) => w.push_ok(|out| {
                        out.extend_from_slice(b"\"encryptedData\":\"");
                        push_text(env, out);
                        out.push(b'"');
                        Ok(())
                    }),
                    Err(e) => w.push_err(&ApiError::from(e)),
                }
            },
        )
        .await
        .map_err(ApiError::from);
    for e in cursor {
        if let Err(e) = e {
            w.push_err(e);
        }
    }
    state.metrics.record(
        &OpRecord::new(Op::BatchEncrypt, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(outcome.as_ref().ok().map(|v| v.get()))
            .items(req.items.len())
            .outcome(&outcome),
    );
    outcome?;
    Ok(w.finish())
}

/// Decrypts a batch; each item is authorized by its own purpose.
#[utoipa::path(post, path = "/api/encryption/batch/decrypt", request_body = BatchDecryptRequest,
    responses((status = 200, description = "One result per item, in order", body = crate::openapi::responses::BatchDecryptResponse), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("bearer" = [])))]
pub async fn batch_decrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    body: JsonBody,
) -> ApiResult<Response> {
    who.require(&[
        keyflow_kms::access::Role::Admin,
        keyflow_kms::access::Role::Service,
    ])?;
    let req: BatchDecryptRequest<'_> = body.parse()?;
    check_batch_size(&state, req.items.len())?;
    let ctx = context(req.context)?;
    if state.legacy_reads().is_some()
        && req
            .items
            .iter()
            .any(|raw| json_str(raw).is_some_and(|s| keyflow_legacy::Package::looks_like(&s)))
    {
        return batch_decrypt_with_legacy(&state, &who, &rid, &req.items, &ctx).await;
    }
    // Authorize every item by its own purpose, then decrypt the allowed ones together.
    let checked: Vec<ApiResult<Cow<'_, str>>> = req
        .items
        .iter()
        .map(|raw| {
            let ct = json_str(raw).ok_or_else(|| {
                ApiError::InvalidRequest("item is not a ciphertext string".into())
            })?;
            let (_, version) = authorize_ciphertext(&who, ct.trim())?;
            rid.audit().add_version(version);
            Ok(ct)
        })
        .collect();
    let allowed: Vec<&str> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().map(|ct| ct.trim()))
        .collect();
    let mut decrypted = state
        .service
        .decrypt_batch_raw(&allowed, &ctx)
        .await
        .into_iter();
    let mut w = BatchWriter::new(allowed.iter().map(|ct| ct.len() + 48).sum());
    for c in checked {
        let r = c.and_then(|_| {
            decrypted
                .next()
                .ok_or_else(|| ApiError::Internal("batch result missing".into()))?
                .map_err(ApiError::from)
        });
        match r {
            Ok(pt) => w.push_ok(|out| push_decrypted(&pt, out)),
            Err(e) => w.push_err(&e),
        }
    }
    Ok(finish_batch_decrypt(&state, &who, &rid, req.items.len(), w))
}

/// `/batch/decrypt` when some items are legacy packages (transition reads): item by
/// item, each authorized by its own purpose; legacy answers carry `legacy: true`.
async fn batch_decrypt_with_legacy(
    state: &AppState,
    who: &Principal,
    rid: &RequestId,
    items: &[&RawValue],
    ctx: &keyflow_kms::Context,
) -> ApiResult<Response> {
    let mut w = BatchWriter::new(items.len() * 64);
    for raw in items {
        let Some(ct) = json_str(raw) else {
            w.push_err(&ApiError::InvalidRequest(
                "item is not a ciphertext string".into(),
            ));
            continue;
        };
        let ct = ct.trim();
        if let Some(r) = crate::legacy::decrypt_package(state, who, ct).await {
            match r {
                Ok((answer, _)) => w.push_ok(|out| {
                    let body =
                        serde_json::to_vec(&answer).map_err(|_| ApiError::DecryptionFailed)?;
                    // The answer's members, without its braces, after `"success":true,`.
                    out.extend_from_slice(body.get(1..body.len() - 1).unwrap_or_default());
                    Ok(())
                }),
                Err(e) => w.push_err(&e),
            }
            continue;
        }
        let r = async {
            authorize_ciphertext(who, ct)?;
            Ok::<_, ApiError>(state.service.decrypt_raw(ct, ctx).await?)
        }
        .await;
        match r {
            Ok(pt) => w.push_ok(|out| push_decrypted(&pt, out)),
            Err(e) => w.push_err(&e),
        }
    }
    Ok(finish_batch_decrypt(state, who, rid, items.len(), w))
}

/// Records a `/batch/decrypt` (`ok`, or `partial_failure` when an item failed) and
/// closes its answer: the one ending of both decrypt paths.
fn finish_batch_decrypt(
    state: &AppState,
    who: &Principal,
    rid: &RequestId,
    items: usize,
    w: BatchWriter,
) -> Response {
    state.metrics.record(
        &OpRecord::new(Op::BatchDecrypt, who.id(), rid)
            .items(items)
            .result(if w.all_ok() { "ok" } else { "partial_failure" }),
    );
    w.finish()
}
