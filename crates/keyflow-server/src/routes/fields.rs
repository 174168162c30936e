//! Field-level encryption of JSON documents: `POST /encrypt-fields`, `POST /decrypt-fields`
//! (keyflow-fields; selector syntax and AAD binding in docs/field-encryption.md).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use keyflow_fields::path::Segment;
use keyflow_fields::{
    decrypt_fields_with, document::ciphertexts, encrypt_fields, Binding, DecryptOptions,
    EncryptOptions, FieldSpec, FieldsError, Mode, SadPolicy, Selection, Selector,
};
use keyflow_kms::access::Role;
use keyflow_kms::KmsError;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{context, granted_purpose};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// One entry of `fields`: a selector string (`"cards[*].cardNumber"`,
/// `"email:blind_index/16"`) or an object.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FieldEntry {
    /// `path` or `path:mode`.
    Spec(String),
    /// `{path, mode?, bits?}`.
    Detailed {
        /// The selector.
        path: String,
        /// `randomized` (default), `deterministic` or `blindIndex`.
        mode: Option<String>,
        /// Blind-index bits (8..=256, default 32).
        #[serde(default, deserialize_with = "crate::extract::field::optional_integer")]
        bits: Option<u16>,
    },
}

/// `POST /encrypt-fields`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptFieldsRequest {
    /// The document (object or array).
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Fields to encrypt (selectors, with optional modes).
    #[schema(value_type = Option<Vec<Object>>)]
    pub fields: Option<Vec<FieldEntry>>,
    /// Key ring to use.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Also encrypt every member whose name is on the purpose's lists.
    #[serde(default)]
    pub auto_detect: bool,
    /// Document id bound into every value (a ciphertext moved to another document fails).
    #[serde(default, deserialize_with = "crate::extract::field::document_id")]
    pub document_id: Option<String>,
    /// String pairs bound into every value (keys must not start with `kf.`).
    pub context: Option<BTreeMap<String, String>>,
    /// Sensitive authentication data: `strip` (default) or `reject`.
    pub sad_policy: Option<String>,
    /// Also bind each value to its array indexes, so elements of one array cannot be
    /// swapped unnoticed (decrypt with the same flag; moved elements then fail).
    #[serde(default)]
    pub bind_array_index: bool,
}

/// `POST /decrypt-fields`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecryptFieldsRequest {
    /// The document with ciphertexts.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Only these selectors (default: every KeyFlow ciphertext in the document).
    pub fields: Option<Vec<String>>,
    /// The document id given at encryption.
    #[serde(default, deserialize_with = "crate::extract::field::document_id")]
    pub document_id: Option<String>,
    /// The context given at encryption.
    pub context: Option<BTreeMap<String, String>>,
    /// As given at encryption.
    #[serde(default)]
    pub bind_array_index: bool,
}

fn document(v: Option<Value>) -> ApiResult<Value> {
    match v {
        Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
        Some(Value::Null) | None => Err(ApiError::InvalidRequest("missing field 'data'".into())),
        Some(_) => Err(ApiError::InvalidRequest(
            "data must be a JSON object or array".into(),
        )),
    }
}

/// Maps a field-layer error to the API's: 400 for the request's shape, 422 with the
/// path for a value that does not decrypt, the key service's mapping otherwise.
pub(crate) fn api_error(e: FieldsError) -> ApiError {
    match e {
        FieldsError::InvalidSelector { .. }
        | FieldsError::InvalidOption(_)
        | FieldsError::NoDetectionList(_)
        | FieldsError::BlindIndexPlacement(_) => ApiError::InvalidRequest(e.to_string()),
        FieldsError::SensitiveAuthenticationData { paths } => {
            ApiError::SensitiveAuthenticationData(paths.join(", "))
        }
        FieldsError::PlaintextRefused { paths } => ApiError::PlaintextRefused(paths.join(", ")),
        FieldsError::Decrypt { path, source } => match source {
            KmsError::DecryptionFailed | KmsError::InvalidCiphertext => {
                ApiError::FieldDecryptionFailed(path)
            }
            other => ApiError::from(other),
        },
        FieldsError::Encrypt { source, .. } | FieldsError::Kms(source) => ApiError::from(source),
        FieldsError::NotCiphertext | FieldsError::Type(_) => ApiError::DecryptionFailed,
        other => ApiError::Internal(other.to_string()),
    }
}

fn field_spec(entry: FieldEntry) -> ApiResult<FieldSpec> {
    let spec = parse_field_spec(entry)?;
    // A blind index is written beside its field, so only an object member can carry
    // one: a selector ending in an array index is refused whatever the document holds
    // (it used to pass when it matched nothing).
    let on_index = matches!(
        spec.selector.segments().last(),
        Some(Segment::Index(_) | Segment::AnyIndex)
    );
    if on_index && matches!(spec.mode, Mode::BlindIndex { .. }) {
        return Err(ApiError::InvalidRequest(
            "a blind-index field must end in a member name, not an array index".into(),
        ));
    }
    Ok(spec)
}

fn parse_field_spec(entry: FieldEntry) -> ApiResult<FieldSpec> {
    match entry {
        FieldEntry::Spec(s) => s.parse().map_err(api_error),
        FieldEntry::Detailed { path, mode, bits } => {
            let mut mode: Mode = match mode.as_deref() {
                None => Mode::Randomized,
                Some(m) => m.parse().map_err(api_error)?,
            };
            match (&mut mode, bits) {
                (Mode::BlindIndex { bits: b }, Some(n)) => {
                    if !(8..=256).contains(&n) {
                        return Err(ApiError::InvalidRequest(
                            "blind index bits must be 8..=256".into(),
                        ));
                    }
                    *b = n;
                }
                (_, Some(_)) => {
                    return Err(ApiError::InvalidRequest(
                        "only blindIndex fields take 'bits'".into(),
                    ))
                }
                _ => {}
            }
            Ok(FieldSpec {
                selector: path.parse().map_err(api_error)?,
                mode,
            })
        }
    }
}

fn binding(
    document_id: Option<String>,
    ctx: Option<BTreeMap<String, String>>,
) -> ApiResult<Binding> {
    let b = Binding {
        doc_id: document_id,
        context: context(ctx)?,
    };
    b.validate().map_err(api_error)?;
    Ok(b)
}

/// Encrypts the selected (and/or auto-detected) fields of a document.
#[utoipa::path(post, path = "/api/encryption/encrypt-fields", request_body = EncryptFieldsRequest,
    responses((status = 200, description = "The document with the selected values encrypted", body = crate::openapi::responses::EncryptFieldsResponse),
              (status = 400, description = "Malformed document, selector or option; auto-detection for a purpose without a list"),
              (status = 401), (status = 403), (status = 404, description = "Unknown purpose (strict mode)"), (status = 413),
              (status = 422, description = "Sensitive authentication data present and sadPolicy is reject")),
    security(("bearer" = [])))]
pub async fn encrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<EncryptFieldsRequest>,
) -> ApiResult<Json<Value>> {
    let p = granted_purpose(&who, &req.purpose)?;
    let doc = document(req.data)?;
    let fields = req
        .fields
        .unwrap_or_default()
        .into_iter()
        .map(field_spec)
        .collect::<ApiResult<Vec<_>>>()?;
    if fields.is_empty() && !req.auto_detect {
        return Err(ApiError::InvalidRequest(
            "nothing to encrypt: give 'fields' and/or 'autoDetect': true".into(),
        ));
    }
    let selection = Selection {
        fields,
        auto_detect: req.auto_detect,
    };
    let options = EncryptOptions {
        binding: binding(req.document_id, req.context)?,
        sad_policy: match req.sad_policy.as_deref() {
            None => SadPolicy::Strip,
            Some(s) => s.parse().map_err(api_error)?,
        },
        bind_array_index: req.bind_array_index,
    };
    let result = encrypt_fields(&state.service, doc, &selection, &p, &options)
        .await
        .map_err(api_error);
    state.metrics.record(
        &OpRecord::new(Op::EncryptFields, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .items(result.as_ref().map_or(0, |(_, r)| r.encrypted.len()))
            .outcome(&result),
    );
    let (data, report) = result?;
    Ok(Json(json!({
        "data": data,
        "encryptedFields": report.encrypted,
        "alreadyEncrypted": report.already_encrypted,
        "blindIndexes": report.blind_indexes,
        "strippedFields": report.stripped,
    })))
}

/// Decrypts the KeyFlow ciphertexts of a document (each authorized by the purpose in
/// its own header) and removes blind-index members.
#[utoipa::path(post, path = "/api/encryption/decrypt-fields", request_body = DecryptFieldsRequest,
    responses((status = 200, description = "The document in clear", body = crate::openapi::responses::DecryptFieldsResponse),
              (status = 400), (status = 401), (status = 403, description = "A ciphertext's purpose is not granted"),
              (status = 413), (status = 422, description = "A value does not decrypt (the message names its path); `plaintext_refused`: ENCRYPTION_STRICT_MODE and a value that must be a ciphertext is in clear")),
    security(("bearer" = [])))]
pub async fn decrypt(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<DecryptFieldsRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Service])?;
    // Legacy fields first (transition reads; nothing when off or not legacy).
    let (doc, legacy_fields) =
        crate::legacy::decrypt_document(&state, &who, document(req.data)?).await?;
    let selectors = req
        .fields
        .map(|f| {
            f.iter()
                .map(|s| s.parse::<Selector>())
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(api_error)?;
    let b = binding(req.document_id, req.context)?;
    // Authorize every ciphertext before decrypting any.
    let found = ciphertexts(&doc, selectors.as_deref());
    for (path, p) in &found {
        match p {
            Some(p) => who.require_purpose(p)?,
            None => return Err(ApiError::FieldDecryptionFailed(path.to_string())),
        }
    }
    let purposes: Vec<&str> = found
        .iter()
        .filter_map(|(_, p)| p.as_ref().map(|p| p.as_str()))
        .collect();
    let one_purpose = purposes
        .first()
        .filter(|first| purposes.iter().all(|p| p == *first))
        .copied();
    let options = DecryptOptions {
        bind_array_index: req.bind_array_index,
        // ENCRYPTION_STRICT_MODE fails closed on read too: plaintext where a
        // ciphertext is required is refused, not passed through.
        require_ciphertext: state.service.strict_mode(),
    };
    let result = decrypt_fields_with(&state.service, doc, selectors.as_deref(), &b, &options)
        .await
        .map_err(api_error);
    state.metrics.record(
        &OpRecord::new(Op::DecryptFields, who.id(), &rid)
            .purpose(one_purpose)
            .items(found.len())
            .outcome(&result),
    );
    let (data, report) = result?;
    if !legacy_fields.is_empty() {
        let mut decrypted = legacy_fields;
        decrypted.extend(report.decrypted);
        return Ok(Json(
            json!({ "data": data, "decryptedFields": decrypted, "legacy": true }),
        ));
    }
    Ok(Json(
        json!({ "data": data, "decryptedFields": report.decrypted }),
    ))
}
