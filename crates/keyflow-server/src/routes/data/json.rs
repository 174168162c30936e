//! The JSON answers of the data routes, written by hand straight into the body.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyflow_kms::keyflow_core::data_key::Plaintext;
use keyflow_kms::keyflow_core::PayloadKind;
use serde::de::IgnoredAny;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};

/// Appends a decrypted value's members — `"data":…` (bytes as base64 with
/// `"encoding":"base64"`) — to a JSON object being written. A text or JSON plaintext
/// that is not what its kind says fails like any undecryptable ciphertext.
pub(super) fn push_decrypted(pt: &Plaintext, out: &mut Vec<u8>) -> ApiResult<()> {
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
pub(super) fn json_body(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Writes a batch answer, `{"results":[…],"total":n,"successful":k,"failed":n-k}`,
/// item by item straight into the body.
pub(super) struct BatchWriter {
    out: Vec<u8>,
    total: usize,
    ok: usize,
}

impl BatchWriter {
    /// An empty answer with room for `capacity` bytes of items.
    pub(super) fn new(capacity: usize) -> Self {
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
    pub(super) fn push_ok(&mut self, write: impl FnOnce(&mut Vec<u8>) -> ApiResult<()>) {
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
    pub(super) fn push_err(&mut self, e: &ApiError) {
        self.separate();
        // Serializing a `Value` of strings and a bool into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &item_error(e));
    }

    /// Closes the list and appends the counts.
    pub(super) fn finish(mut self) -> Response {
        let tail = format!(
            "],\"total\":{},\"successful\":{},\"failed\":{}}}",
            self.total,
            self.ok,
            self.total - self.ok
        );
        self.out.extend_from_slice(tail.as_bytes());
        json_body(self.out)
    }

    /// Whether every item written so far succeeded.
    pub(super) fn all_ok(&self) -> bool {
        self.ok == self.total
    }
}

/// A failed item's object: the error body with `"success":false`.
fn item_error(e: &ApiError) -> Value {
    let mut body = e.body();
    body["success"] = json!(false);
    body
}
