//! Legacy key entries: the `encryptionkeys` collection as `mongoexport` JSON lines,
//! and the key lists inside backups ([`crate::backup`]). Nothing here is trusted: each
//! entry is checked (algorithm, status, version, material) and an entry that fails is
//! kept as a [`Rejected`] with its reason, so one bad document never hides the others.

use serde_json::{Map, Value};

use crate::error::{LegacyError, Result};
use crate::text::{as_object, b64_decode, str_member, version_member};

/// The four states of the legacy system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyStatus {
    /// Encrypting in the legacy system.
    Active,
    /// Being rotated out.
    Rotating,
    /// Decrypt-only.
    Deprecated,
    /// Revoked.
    Revoked,
}

impl LegacyStatus {
    /// Parses one of the four names; anything else is refused.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => Self::Active,
            "rotating" => Self::Rotating,
            "deprecated" => Self::Deprecated,
            "revoked" => Self::Revoked,
            _ => {
                return Err(LegacyError::malformed(
                    "key document",
                    "'status' is not one of active, rotating, deprecated, revoked",
                ))
            }
        })
    }

    /// The legacy name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Rotating => "rotating",
            Self::Deprecated => "deprecated",
            Self::Revoked => "revoked",
        }
    }
}

/// One legacy key as a key document or a backup lists it. The DEK is still wrapped
/// under the legacy KEK.
#[derive(Clone)]
pub struct KeyEntry {
    /// The legacy key id (what packages and field metadata name).
    pub key_id: String,
    /// The purpose, from the `purpose` member (never parsed out of the id).
    pub purpose: String,
    /// The legacy version, from 1 per purpose.
    pub version: u32,
    /// The state; `None` in a 1.0 backup (which holds active and rotating keys only).
    pub status: Option<LegacyStatus>,
    /// Creation time (Unix milliseconds), when given.
    pub created_at: Option<i64>,
    /// `iv ‖ tag ‖ ct` of the wrapped DEK.
    pub encrypted_key: Vec<u8>,
    /// Where it was read (`keys line 3`, `backup key 2`).
    pub source: String,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key_id", &self.key_id)
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .field("status", &self.status)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// An entry that could not be read, with the reason (never a value from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Where it was read.
    pub source: String,
    /// Its key id, when that much could be read.
    pub key_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// Entries read from one source.
#[derive(Clone, Debug, Default)]
pub struct Entries {
    /// Entries that parsed.
    pub keys: Vec<KeyEntry>,
    /// Entries that did not.
    pub rejected: Vec<Rejected>,
}

/// A MongoDB extended-JSON date: `{"$date": "ISO"}`, `{"$date": {"$numberLong": "ms"}}`,
/// `{"$date": ms}`, or a plain ISO string (backups).
fn date_millis(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => keyflow_kms::clock::parse_rfc3339(s),
        Value::Object(o) => match o.get("$date")? {
            Value::String(s) => keyflow_kms::clock::parse_rfc3339(s),
            Value::Number(n) => n.as_i64(),
            Value::Object(l) => l.get("$numberLong")?.as_str()?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Reads one key object (a key document, or a backup's key); `status_required` is false
/// for 1.0 backups, which carry no status.
pub(crate) fn entry(
    obj: &Map<String, Value>,
    source: String,
    status_required: bool,
) -> Result<KeyEntry, Rejected> {
    let key_id = obj.get("keyId").and_then(Value::as_str).map(str::to_owned);
    let reject = |e: LegacyError| Rejected {
        source: source.clone(),
        key_id: key_id.clone(),
        reason: e.to_string(),
    };
    const WHAT: &str = "key document";
    let id = str_member(WHAT, obj, "keyId").map_err(reject)?;
    let algorithm = str_member(WHAT, obj, "algorithm").map_err(reject)?;
    if algorithm != "aes-256-gcm" {
        return Err(reject(LegacyError::Algorithm));
    }
    let purpose = str_member(WHAT, obj, "purpose").map_err(reject)?;
    let version = version_member(WHAT, obj, "version").map_err(reject)?;
    let status = match obj.get("status") {
        Some(Value::String(s)) => Some(LegacyStatus::parse(s).map_err(reject)?),
        None | Some(Value::Null) if !status_required => None,
        _ => return Err(reject(LegacyError::malformed(WHAT, "'status' is missing"))),
    };
    let encrypted_key = match obj.get("encryptedKey") {
        Some(Value::String(s)) if !s.is_empty() => {
            b64_decode(WHAT, "encryptedKey", s).map_err(reject)?
        }
        _ => {
            return Err(reject(LegacyError::malformed(
                WHAT,
                "no key material ('encryptedKey' missing or empty)",
            )))
        }
    };
    Ok(KeyEntry {
        key_id: id.to_owned(),
        purpose: purpose.to_owned(),
        version,
        status,
        created_at: obj.get("createdAt").and_then(date_millis),
        encrypted_key,
        source,
    })
}

/// Reads `mongoexport` JSON lines (one document per line; blank lines skipped). A
/// `[ … ]` array export (`mongoexport --jsonArray`) is accepted as well.
pub fn parse_key_documents(text: &str, source: &str) -> Entries {
    let mut out = Entries::default();
    let mut push = |v: std::result::Result<Value, String>, at: String| {
        let parsed = v.and_then(|v| {
            as_object("key document", &v)
                .cloned()
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok(obj) => match entry(&obj, at, true) {
                Ok(k) => out.keys.push(k),
                Err(r) => out.rejected.push(r),
            },
            Err(reason) => out.rejected.push(Rejected {
                source: at,
                key_id: None,
                reason,
            }),
        }
    };
    if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(text) {
            Ok(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    push(Ok(v), format!("{source} item {}", i + 1));
                }
            }
            Err(_) => push(
                Err("not a JSON array of documents".into()),
                source.to_owned(),
            ),
        }
        return out;
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str::<Value>(line).map_err(|_| "not a JSON document".to_owned());
        push(v, format!("{source} line {}", i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"_id":{"$oid":"a"},"keyId":"user-Data-1-abc","version":2,"algorithm":"aes-256-gcm","encryptedKey":"AAAA","purpose":"user-Data","status":"deprecated","createdAt":{"$date":"2026-03-02T00:00:00.000Z"}}"#;

    #[test]
    fn reads_a_document_and_takes_the_purpose_from_its_member() {
        let e = parse_key_documents(DOC, "keys");
        assert!(e.rejected.is_empty(), "{:?}", e.rejected);
        let k = &e.keys[0];
        assert_eq!(k.purpose, "user-Data");
        assert_eq!(k.version, 2);
        assert_eq!(k.status, Some(LegacyStatus::Deprecated));
        assert_eq!(k.created_at, Some(1_772_409_600_000));
        assert_eq!(k.source, "keys line 1");
    }

    #[test]
    fn bad_documents_are_rejected_one_by_one() {
        let text = [
            DOC.replace("deprecated", "expired"),
            DOC.replace("aes-256-gcm", "aes-256-ecb"),
            DOC.replace(r#""encryptedKey":"AAAA","#, ""),
            DOC.replace(r#""version":2"#, r#""version":0"#),
            "not json".into(),
            String::new(),
            DOC.into(),
        ]
        .join("\n");
        let e = parse_key_documents(&text, "keys");
        assert_eq!(e.keys.len(), 1);
        let reasons: Vec<_> = e.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 5);
        assert!(reasons[0].contains("not one of active, rotating, deprecated, revoked"));
        assert!(reasons[1].contains("unsupported algorithm"));
        assert!(reasons[2].contains("no key material"));
        assert!(reasons[3].contains("'version'"));
        assert_eq!(e.rejected[4].source, "keys line 5");
        assert_eq!(e.rejected[0].key_id.as_deref(), Some("user-Data-1-abc"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["active", "rotating", "deprecated", "revoked"] {
            assert_eq!(LegacyStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(LegacyStatus::parse("Active").is_err());
    }

    #[test]
    fn dates_in_every_extended_json_form() {
        assert_eq!(date_millis(&serde_json::json!({"$date": 5})), Some(5));
        assert_eq!(
            date_millis(&serde_json::json!({"$date": {"$numberLong": "7"}})),
            Some(7)
        );
        assert_eq!(
            date_millis(&serde_json::json!("1970-01-01T00:00:01.000Z")),
            Some(1000)
        );
        assert_eq!(date_millis(&serde_json::json!(null)), None);
    }
}
