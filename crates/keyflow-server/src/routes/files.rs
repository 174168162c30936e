//! Files: the streaming `POST /files/encrypt` and `POST /files/decrypt` (raw bodies in
//! the KeyFlow file format, docs/file-format.md, never buffered whole), and the JSON
//! `POST /encrypt-file` and `POST /decrypt-file` (base64 in JSON, bounded by the JSON
//! body limit) kept for clients of the system we replace.
//!
//! Streaming bodies have their own limit, [`crate::Limits::file_body_bytes`]
//! (`KEYFLOW_MAX_FILE_BYTES`): a declared `Content-Length` over it is a 413 at once; a
//! chunked body that grows past it is cut off. Because the response streams, its status
//! is chosen before the whole upload is read:
//!
//! * `/files/encrypt` answers 200 once the key is found and streams the encrypted file;
//!   if the upload then fails (client gone, over the limit) the response body is aborted
//!   (HTTP/1.1: the chunked body never terminates; HTTP/2: `RST_STREAM`), so a client can
//!   never mistake a partial file for a whole one — and a partial file never decrypts.
//! * `/files/decrypt` authenticates the header and decrypts up to the first
//!   [`PREVERIFY_BYTES`] before answering: any damage there (and in any file that
//!   small) is a clean `422 decryption_failed`. Beyond that, plaintext is released one
//!   *verified* segment at a time; a segment that fails aborts the body as above, so
//!   the client sees a transport error, never unverified bytes and never a clean end.
//!
//! An error answered before the upload was read to its end (403, 422, …) first reads
//! and discards up to 8 MiB / 2 s of the rest, so a client that writes its whole body
//! before reading gets the error rather than a broken connection; a 413 does not.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use keyflow_kms::access::Role;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_stream::{
    read_header_async, AsyncDecryptor, AsyncEncryptor, Metadata, Sealer, StreamError,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::file_body::{check_declared_len, drain_on_error, is_too_large, BodyReader};
use super::file_slots::{pump, FileSlot};
use super::{granted_purpose, purpose};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, RequestId};
use crate::metrics::{Op, OpRecord};
use crate::state::AppState;

/// Plaintext `/files/decrypt` verifies before it commits to a status (1 MiB).
pub const PREVERIFY_BYTES: usize = 1 << 20;

const FILE_CONTENT_TYPE: &str = "application/vnd.keyflow.file";
const NAME_HEADER: &str = "x-keyflow-file-name";
const SIZE_HEADER: &str = "x-keyflow-file-size";
const VERSION_HEADER: &str = "x-keyflow-key-version";

/// Query of `POST /files/encrypt`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct FileEncryptQuery {
    /// Key ring to use (required).
    #[param(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: Option<String>,
    /// File name to store in the encrypted metadata.
    pub name: Option<String>,
    /// MIME type to store in the encrypted metadata.
    pub mime: Option<String>,
}

/// `POST /encrypt-file`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptFileRequest {
    /// The file's bytes, standard base64.
    #[serde(alias = "fileData")]
    pub data: String,
    /// Key ring to use.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// File name stored in the encrypted metadata.
    #[serde(alias = "filename", alias = "originalName")]
    pub file_name: Option<String>,
    /// MIME type stored in the encrypted metadata.
    #[serde(alias = "contentType")]
    pub mime_type: Option<String>,
}

/// `POST /decrypt-file`
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecryptFileRequest {
    /// The encrypted file (KeyFlow file format), standard base64.
    pub encrypted_data: String,
}

/// Maps the format's errors onto the API's.
fn api_error(e: StreamError, limit: u64) -> ApiError {
    match e {
        StreamError::InvalidHeader => ApiError::InvalidCiphertext,
        StreamError::DecryptionFailed => ApiError::DecryptionFailed,
        StreamError::Invalid(what) => ApiError::InvalidRequest(format!("invalid {what}")),
        StreamError::SizeMismatch { .. } => {
            ApiError::InvalidRequest("the body's length differs from Content-Length".into())
        }
        StreamError::TooLarge => ApiError::PayloadTooLarge(limit as usize),
        StreamError::Io(e) if is_too_large(&e) => ApiError::PayloadTooLarge(limit as usize),
        StreamError::Io(_) => ApiError::InvalidRequest("could not read the request body".into()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` percent-encoded for a header (RFC 3986 unreserved characters kept).
fn percent_encode(name: &str) -> String {
    utf8_percent_encode(name, NOT_UNRESERVED).to_string()
}

/// Encrypts a streamed body.
#[utoipa::path(post, path = "/api/encryption/files/encrypt", params(FileEncryptQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The plaintext, streamed"),
    responses((status = 200, description = "The encrypted file (docs/file-format.md), streamed; `x-keyflow-key-version`. An upload that fails midway aborts the body.", content_type = "application/vnd.keyflow.file", body = Vec<u8>,
                headers(("x-keyflow-key-version" = u32, description = "The key version used"))),
              (status = 400, description = "Missing purpose or bad metadata"), (status = 401), (status = 403),
              (status = 404, description = "Unknown purpose (strict mode)"), (status = 413, description = "Content-Length over KEYFLOW_MAX_FILE_BYTES")),
    security(("bearer" = [])))]
pub async fn encrypt_stream(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    query: Result<Query<FileEncryptQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Refused before the body is read: the connection layer (crate::early) deals with
    // the unread body.
    let slot = state.file_slot().ok_or(ApiError::Overloaded)?;
    let mut reader = Some(BodyReader::new(body, state.limits.file_body_bytes));
    let result = encrypt_stream_inner(state, who, rid, query, headers, &mut reader, slot).await;
    drain_on_error(result, reader).await
}

async fn encrypt_stream_inner(
    state: AppState,
    who: Principal,
    rid: RequestId,
    query: Result<Query<FileEncryptQuery>, QueryRejection>,
    headers: HeaderMap,
    reader: &mut Option<BodyReader>,
    slot: FileSlot,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|_| ApiError::InvalidRequest("invalid query string".into()))?;
    let p =
        purpose(q.purpose.as_deref().ok_or_else(|| {
            ApiError::InvalidRequest("missing query parameter 'purpose'".into())
        })?)?;
    who.require_purpose(&p)?;
    let limit = state.limits.file_body_bytes;
    let declared = check_declared_len(&headers, limit)?;
    let metadata = Metadata {
        name: q.name,
        mime_type: q.mime,
        size: declared,
    };
    let sealed = state
        .service
        .ring()
        .with_active_key(&p, |dk| {
            Sealer::new(dk, &metadata, &OsRng).map(|s| (s, dk.version().get()))
        })
        .await
        .map_err(ApiError::from)
        .and_then(|r| r.map_err(|e| api_error(e, limit)));
    let (sealer, version) = match sealed {
        Ok(s) => s,
        Err(e) => {
            state.metrics.record(
                &OpRecord::new(Op::FileEncrypt, who.id(), &rid)
                    .purpose(Some(p.as_str()))
                    .result(e.status_and_code().1),
            );
            return Err(e);
        }
    };
    let body = reader
        .take()
        .ok_or_else(|| ApiError::Internal("request body already taken".into()))?;
    // The audit record is written when the head goes out, before the stream ends.
    rid.audit().note_key(p.as_str(), Some(version), 1);
    let enc = AsyncEncryptor::new(body, sealer);
    let done = Finish {
        state: state.clone(),
        op: Op::FileEncrypt,
        who: who.id().to_owned(),
        purpose: p.to_string(),
        version,
        rid,
        limit,
    };
    let stream = futures_util::stream::try_unfold((enc, done), |(mut enc, done)| async move {
        match enc.next_chunk().await {
            Ok(Some(chunk)) => {
                let chunk = Bytes::copy_from_slice(chunk);
                Ok(Some((chunk, (enc, done))))
            }
            Ok(None) => {
                done.log("ok");
                Ok(None)
            }
            Err(e) => Err(done.fail(e)),
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(FILE_CONTENT_TYPE),
            ),
            (
                header::HeaderName::from_static(VERSION_HEADER),
                HeaderValue::from(version),
            ),
        ],
        pump(stream, slot, state.limits.file_idle),
    )
        .into_response())
}

/// What a streaming body records when it ends.
struct Finish {
    state: AppState,
    op: Op,
    who: String,
    purpose: String,
    version: u32,
    rid: RequestId,
    limit: u64,
}

impl Finish {
    fn log(&self, result: &str) {
        self.state.metrics.record(
            &OpRecord::new(self.op, &self.who, &self.rid)
                .purpose(Some(&self.purpose))
                .key_version(Some(self.version))
                .result(result),
        );
    }

    /// Records a failure after the status was sent; the error aborts the body.
    fn fail(&self, e: StreamError) -> io::Error {
        let api = api_error(e, self.limit);
        self.log(api.status_and_code().1);
        io::Error::other(api.to_string())
    }
}

/// Decrypts a streamed encrypted file.
#[utoipa::path(post, path = "/api/encryption/files/decrypt",
    request_body(content((Vec<u8> = "application/vnd.keyflow.file"), (Vec<u8> = "application/octet-stream")),
        description = "The encrypted file, streamed (any content type is accepted)"),
    responses((status = 200, description = "The plaintext, streamed, released one verified segment at a time; `content-type` from the metadata (any type; `application/octet-stream` when none), `x-keyflow-file-name` (percent-encoded), `x-keyflow-file-size`. A segment failing after the first MiB aborts the body.", content_type = "*/*", body = Vec<u8>,
                headers(("x-keyflow-key-version" = u32, description = "The file's key version"))),
              (status = 401), (status = 403, description = "Purpose of the file not granted"),
              (status = 413), (status = 422, description = "Not a KeyFlow file, or it does not authenticate (within the first MiB)")),
    security(("bearer" = [])))]
pub async fn decrypt_stream(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let slot = state.file_slot().ok_or(ApiError::Overloaded)?;
    let mut reader = Some(BodyReader::new(body, state.limits.file_body_bytes));
    let result = decrypt_stream_inner(state, who, rid, headers, &mut reader, slot).await;
    drain_on_error(result, reader).await
}

async fn decrypt_stream_inner(
    state: AppState,
    who: Principal,
    rid: RequestId,
    headers: HeaderMap,
    slot: &mut Option<BodyReader>,
    file_slot: FileSlot,
) -> ApiResult<Response> {
    who.require(&[Role::Admin, Role::Service])?;
    let limit = state.limits.file_body_bytes;
    check_declared_len(&headers, limit)?;
    let mut reader = slot
        .take()
        .ok_or_else(|| ApiError::Internal("request body already taken".into()))?;
    let header = match read_header_async(&mut reader).await {
        Ok(h) => h,
        Err(e) => {
            *slot = Some(reader);
            return Err(api_error(e, limit));
        }
    };
    if let Err(e) = who.require_purpose(header.purpose()) {
        *slot = Some(reader);
        return Err(e);
    }
    let p = header.purpose().to_string();
    let version = header.key_version().get();
    let fail = |e: ApiError| {
        state.metrics.record(
            &OpRecord::new(Op::FileDecrypt, who.id(), &rid)
                .purpose(Some(&p))
                .key_version(Some(version))
                .result(e.status_and_code().1),
        );
        e
    };
    let opener = match state
        .service
        .ring()
        .with_decrypt_key(header.purpose(), header.key_version(), |dk| header.open(dk))
        .await
    {
        Ok(Ok(opener)) => opener,
        Ok(Err(e)) => {
            *slot = Some(reader);
            return Err(fail(api_error(e, limit)));
        }
        Err(e) => {
            *slot = Some(reader);
            return Err(fail(ApiError::from(e)));
        }
    };
    let meta = opener.metadata().clone();
    let mut dec = AsyncDecryptor::new(reader, opener);
    let mut head = Vec::new();
    while head.len() < PREVERIFY_BYTES {
        match dec.next_chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(chunk),
            Ok(None) => break,
            Err(e) => {
                *slot = Some(dec.into_inner());
                return Err(fail(api_error(e, limit)));
            }
        }
    }
    let mut resp_headers = HeaderMap::new();
    let content_type = meta
        .mime_type
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp_headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(name) = meta.name.as_deref() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(name)) {
            resp_headers.insert(NAME_HEADER, v);
        }
    }
    if let Some(size) = meta.size {
        resp_headers.insert(SIZE_HEADER, HeaderValue::from(size));
    }
    resp_headers.insert(VERSION_HEADER, HeaderValue::from(version));
    // The audit record is written when the head goes out, before the stream ends.
    rid.audit().note_key(&p, Some(version), 1);
    if dec.is_done() {
        // The whole file verified: an ordinary response with a length.
        state.metrics.record(
            &OpRecord::new(Op::FileDecrypt, who.id(), &rid)
                .purpose(Some(&p))
                .key_version(Some(version)),
        );
        return Ok((resp_headers, head).into_response());
    }
    let done = Finish {
        state: state.clone(),
        op: Op::FileDecrypt,
        who: who.id().to_owned(),
        purpose: p,
        version,
        rid: rid.clone(),
        limit,
    };
    let first = Some(Bytes::from(head));
    let stream = futures_util::stream::try_unfold(
        (dec, done, first),
        |(mut dec, done, mut first)| async move {
            if let Some(head) = first.take() {
                return Ok(Some((head, (dec, done, None))));
            }
            match dec.next_chunk().await {
                Ok(Some(chunk)) => {
                    let chunk = Bytes::copy_from_slice(chunk);
                    Ok(Some((chunk, (dec, done, None))))
                }
                Ok(None) => {
                    done.log("ok");
                    Ok(None)
                }
                Err(e) => Err(done.fail(e)),
            }
        },
    );
    let idle = state.limits.file_idle;
    Ok((resp_headers, pump(stream, file_slot, idle)).into_response())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Encrypts a base64 file in JSON (compatibility route; bounded by the JSON limit).
#[utoipa::path(post, path = "/api/encryption/encrypt-file", request_body = EncryptFileRequest,
    responses((status = 200, description = "The KeyFlow file, base64", body = crate::openapi::responses::EncryptFileResponse),
              (status = 400), (status = 401), (status = 403), (status = 404), (status = 413)),
    security(("bearer" = [])))]
pub async fn encrypt_file_json(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<EncryptFileRequest>,
) -> ApiResult<Json<Value>> {
    let p = granted_purpose(&who, &req.purpose)?;
    let data = zeroize::Zeroizing::new(
        b64()
            .decode(req.data.trim())
            .map_err(|_| ApiError::InvalidRequest("data: not base64".into()))?,
    );
    let metadata = Metadata {
        name: req.file_name,
        mime_type: req.mime_type,
        size: Some(data.len() as u64),
    };
    let limit = state.limits.json_body_bytes as u64;
    let result = state
        .service
        .ring()
        .with_active_key(&p, |dk| {
            let sealer = Sealer::new(dk, &metadata, &OsRng)?;
            let mut out = Vec::with_capacity(data.len() + 1024);
            // In memory already: sealed out of place, without a copy per segment.
            keyflow_stream::encrypt_slice(&data, &mut out, sealer)?;
            Ok::<_, StreamError>((out, dk.version().get()))
        })
        .await
        .map_err(ApiError::from)
        .and_then(|r| r.map_err(|e| api_error(e, limit)));
    let version = result.as_ref().ok().map(|(_, v)| *v);
    state.metrics.record(
        &OpRecord::new(Op::FileEncrypt, who.id(), &rid)
            .purpose(Some(p.as_str()))
            .key_version(version)
            .outcome(&result),
    );
    let (file, version) = result?;
    Ok(Json(json!({
        "encryptedData": b64().encode(&file),
        "keyVersion": version,
        "size": data.len(),
    })))
}

/// Decrypts a base64 KeyFlow file in JSON (compatibility route).
#[utoipa::path(post, path = "/api/encryption/decrypt-file", request_body = DecryptFileRequest,
    responses((status = 200, description = "The file and its metadata", body = crate::openapi::responses::DecryptFileResponse),
              (status = 400), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn decrypt_file_json(
    State(state): State<AppState>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<DecryptFileRequest>,
) -> ApiResult<Json<Value>> {
    who.require(&[Role::Admin, Role::Service])?;
    let limit = state.limits.json_body_bytes as u64;
    let file = b64()
        .decode(req.encrypted_data.trim())
        .map_err(|_| ApiError::InvalidCiphertext)?;
    let mut input = &file[..];
    let header = keyflow_stream::read_header(&mut input).map_err(|e| api_error(e, limit))?;
    who.require_purpose(header.purpose())?;
    let result = state
        .service
        .ring()
        .with_decrypt_key(header.purpose(), header.key_version(), |dk| {
            let opener = header.open(dk)?;
            let meta = opener.metadata().clone();
            let mut out = zeroize::Zeroizing::new(Vec::new());
            keyflow_stream::decrypt_slice(input, &mut *out, opener)?;
            Ok::<_, StreamError>((meta, out))
        })
        .await
        .map_err(ApiError::from)
        .and_then(|r| r.map_err(|e| api_error(e, limit)));
    state.metrics.record(
        &OpRecord::new(Op::FileDecrypt, who.id(), &rid)
            .purpose(Some(header.purpose().as_str()))
            .key_version(Some(header.key_version().get()))
            .outcome(&result),
    );
    let (meta, plain) = result?;
    Ok(Json(json!({
        "data": b64().encode(&plain[..]),
        "fileName": meta.name,
        "mimeType": meta.mime_type,
        "size": plain.len(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_for_headers() {
        assert_eq!(
            percent_encode("rapport été.pdf"),
            "rapport%20%C3%A9t%C3%A9.pdf"
        );
        assert_eq!(percent_encode("a\r\nb"), "a%0D%0Ab");
    }
}
