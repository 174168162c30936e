//! Legacy encrypted packages (the old `/encrypt` route's `encryptedData`):
//! `base64( JSON.stringify({version:"1.0", algorithm:"aes-256-gcm", keyId, keyVersion,
//! iv, authTag, ciphertext, encryptedAt, aad?}) )`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{LegacyError, Result};
use crate::gcm16::{IV_LEN, TAG_LEN};
use crate::text::b64_decode;

const WHAT: &str = "package";

/// A parsed package: names its key, carries IV, tag, ciphertext and optional AAD.
/// Lengths are checked: a 16-byte IV and a 16-byte tag, nothing else.
#[derive(Clone)]
pub struct Package {
    /// The legacy key id.
    pub key_id: String,
    /// The legacy key version the package names.
    pub key_version: u64,
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) tag: [u8; TAG_LEN],
    pub(crate) ciphertext: Vec<u8>,
    /// The GCM AAD, stored in clear in the package.
    pub aad: Option<String>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    algorithm: Cow<'a, str>,
    #[serde(rename = "keyId")]
    key_id: String,
    #[serde(rename = "keyVersion")]
    key_version: u64,
    #[serde(borrow)]
    iv: Cow<'a, str>,
    #[serde(rename = "authTag", borrow)]
    auth_tag: Cow<'a, str>,
    #[serde(borrow)]
    ciphertext: Cow<'a, str>,
    aad: Option<String>,
}

/// A 16-byte IV and a 16-byte tag from their base64 members.
pub(crate) fn iv_and_tag(
    what: &'static str,
    iv: &str,
    tag: &str,
) -> Result<([u8; IV_LEN], [u8; TAG_LEN])> {
    let iv = b64_decode(what, "iv", iv)?;
    let tag = b64_decode(what, "authTag", tag)?;
    let tag: [u8; TAG_LEN] = tag
        .as_slice()
        .try_into()
        .map_err(|_| LegacyError::TagLength(tag.len()))?;
    let iv: [u8; IV_LEN] = iv
        .as_slice()
        .try_into()
        .map_err(|_| LegacyError::IvLength(iv.len()))?;
    Ok((iv, tag))
}

impl Package {
    /// Parses the base64 text of a package (surrounding whitespace and JSON string
    /// quotes are tolerated, so a column copied from JSON reads as well).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        let json = b64_decode(WHAT, "encryptedData", text)?;
        Self::from_json(&json)
    }

    /// Parses the decoded JSON of a package.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let raw: Raw<'_> = serde_json::from_slice(json).map_err(|e| {
            // serde's message names the member, never a value of ours.
            LegacyError::malformed(WHAT, format!("not a legacy package ({})", classify(&e)))
        })?;
        if raw.version != "1.0" {
            return Err(LegacyError::malformed(
                WHAT,
                "unknown 'version' (1.0 is known)",
            ));
        }
        if raw.algorithm != "aes-256-gcm" {
            return Err(LegacyError::Algorithm);
        }
        let (iv, tag) = iv_and_tag(WHAT, &raw.iv, &raw.auth_tag)?;
        Ok(Self {
            key_id: raw.key_id,
            key_version: raw.key_version,
            iv,
            tag,
            ciphertext: b64_decode(WHAT, "ciphertext", &raw.ciphertext)?,
            aad: raw.aad,
        })
    }

    /// True when `text` looks like a legacy package — base64 of a JSON object (`{"`
    /// encodes as `eyJ`) — for routing a value without decrypting it. KeyFlow's own
    /// ciphertexts start with `kf1:` and never match.
    pub fn looks_like(text: &str) -> bool {
        let t = text.trim().trim_matches('"');
        t.starts_with("eyJ")
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    if e.is_data() {
        "a member is missing or has the wrong type"
    } else {
        "not JSON"
    }
}

/// The value the legacy reader returned for a plaintext: its text, parsed as JSON when
/// it starts with `{` or `[` (and parses); `None` when it is not UTF-8 (a Buffer was
/// encrypted: keep it as bytes).
pub fn typed_value(plaintext: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(plaintext).ok()?;
    if text.starts_with('{') || text.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Some(v);
        }
    }
    Some(Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        crate::text::b64_encode(v.to_string().as_bytes())
    }

    fn good() -> Value {
        json!({"version":"1.0","algorithm":"aes-256-gcm","keyId":"k","keyVersion":1,
               "iv":"AAAAAAAAAAAAAAAAAAAAAA==","authTag":"AAAAAAAAAAAAAAAAAAAAAA==","ciphertext":"","encryptedAt":"x"})
    }

    #[test]
    fn parses_and_checks_lengths() {
        let p = Package::parse(&b64(&good())).unwrap();
        assert_eq!(p.key_id, "k");
        assert!(Package::looks_like(&b64(&good())));
        assert!(!Package::looks_like("kf1:AAAA"));
        let mut v = good();
        v["authTag"] = json!("AAAAAA==");
        assert!(matches!(
            Package::parse(&b64(&v)),
            Err(LegacyError::TagLength(4))
        ));
        let mut v = good();
        v["iv"] = json!("AAAAAAAAAAAAAAAA");
        assert!(matches!(
            Package::parse(&b64(&v)),
            Err(LegacyError::IvLength(12))
        ));
        let mut v = good();
        v["algorithm"] = json!("aes-256-ecb");
        assert!(matches!(
            Package::parse(&b64(&v)),
            Err(LegacyError::Algorithm)
        ));
        let mut v = good();
        v.as_object_mut().unwrap().remove("keyId");
        assert!(matches!(
            Package::parse(&b64(&v)),
            Err(LegacyError::Malformed { .. })
        ));
        assert!(Package::parse("%%%").is_err());
    }

    #[test]
    fn typed_values_follow_the_old_reader() {
        assert_eq!(typed_value(b"75000"), Some(json!("75000")));
        assert_eq!(typed_value(br#"{"a":1}"#), Some(json!({"a": 1})));
        assert_eq!(typed_value(b"[1,2]"), Some(json!([1, 2])));
        assert_eq!(typed_value(b"{not json"), Some(json!("{not json")));
        assert_eq!(typed_value(&[0xff, 0xfe]), None);
    }
}
