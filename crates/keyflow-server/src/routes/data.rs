//! Data operations: encrypt, decrypt, batches, blind index, mask.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyflow_kms::keyflow_core::data_key::Plaintext;
use keyflow_kms::keyflow_core::envelope::write::{push_text, text_len};
use keyflow_kms::keyflow_core::mask::MaskType;
use keyflow_kms::keyflow_core::PayloadKind;
use keyflow_kms::{EncryptionService, KmsError};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{context, purpose};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, JsonBody, RequestId};
use crate::metrics::{Op, OpRecord};
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

/// A JSON string's text, borrowed when it holds no escapes; `None` when `raw` is not a
/// string.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    keyflow_kms::json_string(raw.get())
}

/// Standard base64 with or without padding (SIMD: binary payloads are large).
fn base64_engine(text: &str) -> &'static base64_simd::Base64 {
    if text.len().is_multiple_of(4) {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    }
}

fn bad_base64() -> ApiError {
    ApiError::InvalidRequest("data is not valid base64 (encoding 'base64')".into())
}

/// A value to encrypt, as the request gives it.
enum Payload<'a> {
    /// The bytes to encrypt and their kind.
    Ready(PayloadKind, Cow<'a, [u8]>),
    /// Base64 text of raw bytes, not yet decoded.
    Base64(Cow<'a, str>),
}

impl<'a> Payload<'a> {
    /// From a value as sent and the request's `encoding`. Never quotes the value in an
    /// error.
    fn parse(data: &'a RawValue, encoding: Option<&str>) -> ApiResult<Self> {
        match encoding {
            None => keyflow_kms::encode_json_text(data.get())
                .map(|(kind, bytes)| Payload::Ready(kind, bytes))
                .map_err(ApiError::from),
            Some("base64") => base64_text(data).map(Payload::Base64),
            Some(_) => Err(ApiError::InvalidRequest(
                "encoding: the only encoding is 'base64' (or leave it out for a JSON value)".into(),
            )),
        }
    }

    /// The bytes to encrypt and their kind (decoding base64 into a buffer of its own).
    fn into_bytes(self) -> ApiResult<(PayloadKind, Cow<'a, [u8]>)> {
        match self {
            Payload::Ready(kind, bytes) => Ok((kind, bytes)),
            Payload::Base64(text) => base64_engine(&text)
                .decode_to_vec(text.as_bytes())
                .map(|b| (PayloadKind::Bytes, Cow::Owned(b)))
                .map_err(|_| bad_base64()),
        }
    }
}

/// The text of a base64 `data` string. Without escapes (base64 needs none) it is the
/// raw text between the quotes, read in place: one fast scan for `\\` instead of a
/// second JSON string scan of a large payload; the decoder checks every character.
fn base64_text(data: &RawValue) -> ApiResult<Cow<'_, str>> {
    let raw = data.get();
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
            return Ok(Cow::Borrowed(inner));
        }
    }
    json_str(data).ok_or_else(|| {
        ApiError::InvalidRequest("with encoding 'base64', data must be a string".into())
    })
}

/// Appends a decrypted value's members — `"data":…` (bytes as base64 with
/// `"encoding":"base64"`) — to a JSON object being written. A text or JSON plaintext
/// that is not what its kind says fails like any undecryptable ciphertext.
fn push_decrypted(pt: &Plaintext, out: &mut Vec<u8>) -> ApiResult<()> {
    out.extend_from_slice(b"\"data\":");
    match pt.kind() {
        PayloadKind::Text => {
            let text =
                std::str::from_utf8(pt.as_bytes()).map_err(|_| ApiError::DecryptionFailed)?;
            serde_json::to_writer(&mut *out, text).map_err(|_| ApiError::DecryptionFailed)?;
        }
        PayloadKind::Json => {
            // Written by `serde_json` at encryption; checked, then copied as it is.
            serde_json::from_slice::<IgnoredAny>(pt.as_bytes())
                .map_err(|_| ApiError::DecryptionFailed)?;
            out.extend_from_slice(pt.as_bytes());
        }
        _ => {
            out.push(b'"');
            base64_simd::STANDARD.encode_append(pt.as_bytes(), out);
            out.extend_from_slice(b"\",\"encoding\":\"base64\"");
        }
    }
    Ok(())
}

/// A JSON body already serialized.
fn json_body(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
    body: JsonBody,
) -> ApiResult<Response> {
    let req: EncryptRequest<'_> = body.parse()?;
    let p = purpose(&req.purpose)?;
    who.require_purpose(&p)?;
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
    let result = match payload {
        Payload::Ready(kind, bytes) => state
            .service
            .encrypt_payload_into(kind, &bytes, &p, &ctx, req.deterministic, &mut out)
            .await
            .map_err(ApiError::from),
        Payload::Base64(text) => {
            // Decoded straight into the envelope: a large binary payload is not copied.
            // The decoder's failure is told apart from the service's own errors.
            const UNDECODABLE: &str = "base64 data";
            let fill = |buf: &mut Vec<u8>| {
                let start = buf.len();
                buf.resize(start + plain_len, 0);
                let tail = buf.get_mut(start..).unwrap_or_default();
                let out = base64_simd::Out::from_slice(tail);
                match base64_engine(&text).decode(text.as_bytes(), out) {
                    Ok(d) if d.len() == plain_len => Ok(()),
                    _ => Err(keyflow_kms::keyflow_core::Error::Invalid(UNDECODABLE)),
                }
            };
            state
                .service
                .encrypt_filled_into(
                    PayloadKind::Bytes,
                    plain_len,
                    fill,
                    &p,
                    &ctx,
                    req.deterministic,
                    &mut out,
                )
                .await
                .map_err(|e| match e {
                    KmsError::Invalid(UNDECODABLE) => bad_base64(),
                    e => ApiError::from(e),
                })
        }
    };
    state.metrics.record(&OpRecord {
        op: Op::Encrypt,
        actor: who.id(),
        purpose: Some(p.as_str()),
        key_version: result.as_ref().ok().map(|v| v.get()),
        items: 1,
        result: result.as_ref().map_or_else(error_code, |_| "ok"),
        request: &rid,
    });
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
    state.metrics.record(&OpRecord {
        op: Op::Decrypt,
        actor: who.id(),
        purpose: p,
        key_version: v,
        items: 1,
        result: outcome,
        request: &rid,
    });
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
    state.metrics.record(&OpRecord {
        op: Op::Decrypt,
        actor: who.id(),
        purpose: result.as_ref().ok().map(|(_, p)| p.as_str()),
        key_version: None,
        items: 1,
        result: outcome,
        request: rid,
    });
    Ok(Json(result?.0).into_response())
}

/// Writes a batch answer, `{"results":[…],"total":n,"successful":k,"failed":n-k}`,
/// item by item straight into the body.
struct BatchWriter {
    out: Vec<u8>,
    total: usize,
    ok: usize,
}

impl BatchWriter {
    fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + 64);
        out.extend_from_slice(b"{\"results\":[");
        Self {
            out,
            total: 0,
            ok: 0,
        }
    }

    fn separate(&mut self) {
        if self.total > 0 {
            self.out.push(b',');
        }
        self.total += 1;
    }

    /// One successful item: `write` appends its members after `"success":true,`. If it
    /// fails, what it wrote is dropped and its error is the item's result.
    fn push_ok(&mut self, write: impl FnOnce(&mut Vec<u8>) -> ApiResult<()>) {
        let start = self.out.len();
        let total = self.total;
        self.separate();
        self.out.extend_from_slice(b"{\"success\":true,");
        match write(&mut self.out) {
            Ok(()) => {
                self.out.push(b'}');
                self.ok += 1;
            }
            Err(e) => {
                self.out.truncate(start);
                self.total = total;
                self.push_err(&e);
            }
        }
    }

    /// One failed item: `{"success":false,"error":…,"message":…}`.
    fn push_err(&mut self, e: &ApiError) {
        self.separate();
        // Serializing a `Value` of strings and a bool into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &item_error(e));
    }

    fn finish(mut self) -> Response {
        let tail = format!(
            "],\"total\":{},\"successful\":{},\"failed\":{}}}",
            self.total,
            self.ok,
            self.total - self.ok
        );
        self.out.extend_from_slice(tail.as_bytes());
        json_body(self.out)
    }
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
    body: JsonBody,
) -> ApiResult<Response> {
    let req: BatchEncryptRequest<'_> = body.parse()?;
    let p = purpose(&req.purpose)?;
    who.require_purpose(&p)?;
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
    state.metrics.record(&OpRecord {
        op: Op::BatchEncrypt,
        actor: who.id(),
        purpose: Some(p.as_str()),
        key_version: outcome.as_ref().ok().map(|v| v.get()),
        items: req.items.len(),
        result: outcome.as_ref().map_or_else(error_code, |_| "ok"),
        request: &rid,
    });
    outcome?;
    Ok(w.finish())
}

/// Decrypts a batch; each item is authorized by its own purpose.
#[utoipa::path(post, path = "/api/encryption/batch/decrypt", request_body = BatchDecryptRequest,
    responses((status = 200, description = "`{total, successful, failed, results}`"), (status = 400), (status = 401), (status = 403), (status = 413)),
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
    state.metrics.record(&OpRecord {
        op: Op::BatchDecrypt,
        actor: who.id(),
        purpose: None,
        key_version: None,
        items: req.items.len(),
        result: if w.ok == w.total {
            "ok"
        } else {
            "partial_failure"
        },
        request: &rid,
    });
    Ok(w.finish())
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
    state.metrics.record(&OpRecord {
        op: Op::BatchDecrypt,
        actor: who.id(),
        purpose: None,
        key_version: None,
        items: items.len(),
        result: if w.ok == w.total {
            "ok"
        } else {
            "partial_failure"
        },
        request: rid,
    });
    Ok(w.finish())
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
            request: &rid,
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
        request: &rid,
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
        request: &rid,
    });
    Ok(Json(json!({ "masked": masked, "type": kind.name() })))
}
