//! Routes, grouped by resource. `crate::app` assembles them.

pub mod audit;
pub mod backup;
pub mod compliance;
pub mod data;
pub mod fields;
mod file_body;
pub mod file_slots;
pub mod files;
pub mod keys;
pub mod lifecycle;
pub mod system;

use std::collections::BTreeMap;

use keyflow_kms::{Context, Purpose};

use crate::auth::Principal;
use crate::error::ApiError;

/// Parses a `purpose` field.
pub(crate) fn purpose(name: &str) -> Result<Purpose, ApiError> {
    Purpose::new(name).map_err(|e| ApiError::InvalidRequest(format!("purpose: {e}")))
}

/// Parses a `purpose` field and requires the caller to hold a data-operation role
/// granted it (a malformed name is a 400 before any role check).
pub(crate) fn granted_purpose(who: &Principal, name: &str) -> Result<Purpose, ApiError> {
    let p = purpose(name)?;
    who.require_purpose(&p)?;
    Ok(p)
}

/// Builds a context from the request's `context` object (key order irrelevant).
pub(crate) fn context(pairs: Option<BTreeMap<String, String>>) -> Result<Context, ApiError> {
    let ctx = Context::from_pairs(pairs.unwrap_or_default())
        .map_err(|e| ApiError::InvalidRequest(format!("context: {e}")))?;
    // The field layer's namespace: accepting it here would let a caller mint (or
    // open) field-layer ciphertexts bound to any document and path.
    if let Some(key) = ctx.reserved_key() {
        return Err(ApiError::InvalidRequest(format!(
            "context key '{key}' is reserved (keys starting with '{}' are set by KeyFlow's field layer)",
            keyflow_kms::keyflow_core::context::RESERVED_PREFIX
        )));
    }
    Ok(ctx)
}
