//! Small shared decoders: standard padded base64 and JSON member access with messages
//! that name the member, never its value.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{LegacyError, Result};

/// Decodes standard, padded base64 (the legacy system's `Buffer.toString('base64')`).
pub(crate) fn b64_decode(what: &'static str, field: &str, s: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(s)
        .map_err(|_| LegacyError::malformed(what, format!("'{field}' is not base64")))
}

/// Encodes standard, padded base64.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A required string member.
pub(crate) fn str_member<'a>(
    what: &'static str,
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(LegacyError::malformed(
            what,
            format!("'{name}' is not a string"),
        )),
        None => Err(LegacyError::malformed(what, format!("'{name}' is missing"))),
    }
}

/// A required positive integer member that fits a `u32` (versions).
pub(crate) fn version_member(
    what: &'static str,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<u32> {
    obj.get(name)
        .and_then(Value::as_u64)
        .filter(|&v| v >= 1)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            LegacyError::malformed(
                what,
                format!("'{name}' is not a version number (1 or more)"),
            )
        })
}

/// The object a value must be.
pub(crate) fn as_object<'a>(what: &'static str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| LegacyError::malformed(what, "not a JSON object"))
}
