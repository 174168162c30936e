//! Reading the value to encrypt from a request: a JSON value, or base64 of raw bytes.

use std::borrow::Cow;

use keyflow_kms::keyflow_core::PayloadKind;
use serde_json::value::RawValue;

use crate::error::{ApiError, ApiResult};

/// A JSON string's text, borrowed when it holds no escapes; `None` when `raw` is not a
/// string.
pub(super) fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    crate::wire::json_string(raw.get())
}

/// Standard base64 with or without padding (SIMD: binary payloads are large).
pub(super) fn base64_engine(text: &str) -> &'static base64_simd::Base64 {
    if text.len().is_multiple_of(4) {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    }
}

pub(super) fn bad_base64() -> ApiError {
    ApiError::InvalidRequest("data is not valid base64 (encoding 'base64')".into())
}

/// A value to encrypt, as the request gives it.
pub(super) enum Payload<'a> {
    /// The bytes to encrypt and their kind.
    Ready(PayloadKind, Cow<'a, [u8]>),
    /// Base64 text of raw bytes, not yet decoded.
    Base64(Cow<'a, str>),
}

impl<'a> Payload<'a> {
    /// From a value as sent and the request's `encoding`. Never quotes the value in an
    /// error.
    pub(super) fn parse(data: &'a RawValue, encoding: Option<&str>) -> ApiResult<Self> {
        match encoding {
            None => crate::wire::encode_json_text(data.get())
                .map(|(kind, bytes)| Payload::Ready(kind, bytes))
                .map_err(ApiError::from),
            Some("base64") => base64_text(data).map(Payload::Base64),
            Some(_) => Err(ApiError::InvalidRequest(
                "encoding: the only encoding is 'base64' (or leave it out for a JSON value)".into(),
            )),
        }
    }

    /// The bytes to encrypt and their kind (decoding base64 into a buffer of its own).
    pub(super) fn into_bytes(self) -> ApiResult<(PayloadKind, Cow<'a, [u8]>)> {
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
