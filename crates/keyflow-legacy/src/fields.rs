//! Legacy field-level documents: each encrypted field holds the bare ciphertext
//! base64 and its metadata sits in `doc._encrypted[field] = {keyId, keyVersion, iv,
//! authTag, algorithm, encryptedAt?}`, with `doc._encryptionVersion = "1.0"`.

use serde_json::{Map, Value};

use crate::error::{LegacyError, Result};
use crate::gcm16::{IV_LEN, TAG_LEN};
use crate::package::iv_and_tag;
use crate::text::{b64_decode, str_member};

/// The metadata member.
pub const ENCRYPTED: &str = "_encrypted";
/// The version member.
pub const ENCRYPTION_VERSION: &str = "_encryptionVersion";

const WHAT: &str = "field document";

/// One encrypted field of a legacy document.
#[derive(Clone)]
pub struct LegacyField {
    /// The name as `_encrypted` lists it (may be a dotted Mongoose path).
    pub name: String,
    /// The members leading to the value in the document.
    pub path: Vec<String>,
    /// The legacy key id.
    pub key_id: String,
    /// The legacy key version.
    pub key_version: u64,
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) tag: [u8; TAG_LEN],
    pub(crate) ciphertext: Vec<u8>,
}

impl std::fmt::Debug for LegacyField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyField")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// True when `doc` carries legacy `_encrypted` metadata.
pub fn is_legacy_document(doc: &Value) -> bool {
    doc.get(ENCRYPTED).is_some_and(Value::is_object)
}

/// Where the field `name` is: a member of that exact name, or else the dotted path
/// through nested objects (Mongoose stores nested fields either way).
fn locate(doc: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    if doc.contains_key(name) {
        return Some(vec![name.to_owned()]);
    }
    let parts: Vec<String> = name.split('.').map(str::to_owned).collect();
    let mut at = doc;
    for (i, p) in parts.iter().enumerate() {
        let v = at.get(p)?;
        if i + 1 == parts.len() {
            return Some(parts);
        }
        at = v.as_object()?;
    }
    None
}

/// The value at `path` (members only).
pub(crate) fn value_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, p| v.get(p))
}

/// Mutable access to the value at `path`.
pub(crate) fn value_at_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, p| v.get_mut(p))
}

/// The encrypted fields of a legacy document, checked: every field listed in
/// `_encrypted` must exist, hold a base64 string, and have a 16-byte IV and tag.
pub fn legacy_fields(doc: &Value) -> Result<Vec<LegacyField>> {
    let obj = doc
        .as_object()
        .ok_or_else(|| LegacyError::malformed(WHAT, "not a JSON object"))?;
    let meta = obj
        .get(ENCRYPTED)
        .and_then(Value::as_object)
        .ok_or_else(|| LegacyError::malformed(WHAT, "no '_encrypted' metadata"))?;
    if let Some(v) = obj.get(ENCRYPTION_VERSION) {
        if v.as_str() != Some("1.0") {
            return Err(LegacyError::malformed(
                WHAT,
                "unknown '_encryptionVersion' (1.0 is known)",
            ));
        }
    }
    let mut out = Vec::with_capacity(meta.len());
    for (name, m) in meta {
        let m = m.as_object().ok_or_else(|| {
            LegacyError::malformed(WHAT, format!("metadata of '{name}' is not an object"))
        })?;
        if m.get("algorithm")
            .and_then(Value::as_str)
            .is_some_and(|a| a != "aes-256-gcm")
        {
            return Err(LegacyError::Algorithm);
        }
        let path = locate(obj, name).ok_or_else(|| {
            LegacyError::malformed(
                WHAT,
                format!("field '{name}' listed in '_encrypted' is missing"),
            )
        })?;
        let ct = value_at(doc, &path)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                LegacyError::malformed(WHAT, format!("field '{name}' is not a ciphertext string"))
            })?;
        let (iv, tag) = iv_and_tag(
            WHAT,
            str_member(WHAT, m, "iv")?,
            str_member(WHAT, m, "authTag")?,
        )?;
        let key_version = m.get("keyVersion").and_then(Value::as_u64).ok_or_else(|| {
            LegacyError::malformed(WHAT, format!("'keyVersion' of '{name}' is not a number"))
        })?;
        out.push(LegacyField {
            name: name.clone(),
            key_id: str_member(WHAT, m, "keyId")?.to_owned(),
            key_version,
            iv,
            tag,
            ciphertext: b64_decode(WHAT, name, ct)?,
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Value {
        json!({"keyId": "k", "keyVersion": 1, "iv": "AAAAAAAAAAAAAAAAAAAAAA==",
               "authTag": "AAAAAAAAAAAAAAAAAAAAAA==", "algorithm": "aes-256-gcm"})
    }

    #[test]
    fn finds_flat_dotted_and_nested_fields() {
        let doc = json!({"a": "AA==", "b.c": "AA==", "d": {"e": "AA=="},
                         "_encrypted": {"a": meta(), "b.c": meta(), "d.e": meta()},
                         "_encryptionVersion": "1.0"});
        let f = legacy_fields(&doc).unwrap();
        let paths: Vec<_> = f.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["a", "b.c", "d/e"]);
        assert!(is_legacy_document(&doc));
        assert!(!is_legacy_document(&json!({"a": 1})));
    }

    #[test]
    fn refuses_missing_fields_short_tags_and_unknown_versions() {
        let doc = json!({"_encrypted": {"a": meta()}});
        assert!(legacy_fields(&doc)
            .unwrap_err()
            .to_string()
            .contains("'a' listed in '_encrypted' is missing"));
        let mut m = meta();
        m["authTag"] = json!("AAAAAA==");
        let doc = json!({"a": "AA==", "_encrypted": {"a": m}});
        assert!(matches!(
            legacy_fields(&doc),
            Err(LegacyError::TagLength(4))
        ));
        let doc = json!({"a": "AA==", "_encrypted": {"a": meta()}, "_encryptionVersion": "2.0"});
        assert!(legacy_fields(&doc).is_err());
        let doc = json!({"a": 5, "_encrypted": {"a": meta()}});
        assert!(legacy_fields(&doc).is_err());
    }
}
