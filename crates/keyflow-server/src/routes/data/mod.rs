//! Data operations: encrypt, decrypt, batches, blind index, mask.
//!
//! The routes are split by seam: `single` (one value), `batch` (many values, one answer),
//! `index_mask` (blind index and mask), with the request reading in `input` and the
//! hand-written JSON answers in `json`.

mod batch;
mod index_mask;
mod input;
mod json;
mod single;

pub use batch::*;
pub use index_mask::*;
pub use single::*;

use keyflow_kms::EncryptionService;
use serde_json::Value;

use super::purpose;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

/// A request field that must be present and not `null`.
fn required(v: Option<Value>, name: &str) -> ApiResult<Value> {
    match v {
        Some(Value::Null) | None => {
            Err(ApiError::InvalidRequest(format!("missing field '{name}'")))
        }
        Some(v) => Ok(v),
    }
}

/// The error code an operation record carries.
fn error_code(e: &ApiError) -> &'static str {
    e.status_and_code().1
}

/// Authorizes a decrypt: the purpose comes from the ciphertext's own header.
fn authorize_ciphertext(who: &Principal, ct: &str) -> ApiResult<(String, u32)> {
    let summary = EncryptionService::summary(ct).map_err(|_| ApiError::DecryptionFailed)?;
    who.require_purpose(&purpose(&summary.purpose)?)?;
    Ok((summary.purpose, summary.key_version))
}
