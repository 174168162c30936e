//! Wire-format helpers of the API: reading a JSON value to encrypt from a request's
//! text without re-parsing it, and the JSON shape of a key version (which the CLI
//! prints too).

use std::borrow::Cow;

use keyflow_kms::keyflow_core::PayloadKind;
use keyflow_kms::{KeyVersionRecord, KmsError, Result};
use serde_json::Value;

/// Encodes one JSON value given as its JSON text (e.g. a `serde_json::value::RawValue`
/// from a request) exactly as [`keyflow_kms::Input::Json`] encodes the parsed value: a
/// string is encrypted as its UTF-8 text — borrowed from `json` when it holds no
/// escapes — and anything else as compact JSON (object keys sorted). Errors when `json`
/// is not one JSON value.
pub fn encode_json_text(json: &str) -> Result<(PayloadKind, Cow<'_, [u8]>)> {
    let json = json.trim();
    if json.starts_with('"') {
        let s = json_string(json).ok_or(KmsError::Invalid("JSON value"))?;
        return Ok((PayloadKind::Text, cow_bytes(s)));
    }
    let value: Value = serde_json::from_str(json).map_err(|_| KmsError::Invalid("JSON value"))?;
    let bytes = serde_json::to_vec(&value).map_err(|_| KmsError::Invalid("JSON value"))?;
    Ok((PayloadKind::Json, Cow::Owned(bytes)))
}

/// The text of a JSON string token (`"…"`), borrowed when it holds no escape — then the
/// token's inside *is* the text, found with one vectorizable scan instead of a second
/// parse. `None` when `json` is not a valid string token.
pub fn json_string(json: &str) -> Option<Cow<'_, str>> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    // A control character or a lone quote would make the token invalid JSON; a caller
    // holding an already-parsed token (a `RawValue`) never has one, but a raw `&str`
    // might, so only a plain token takes the shortcut.
    // Branch-free per 64-byte chunk so the check vectorizes (large values are base64
    // payloads of a MiB and more).
    let special = |c: &[u8]| {
        c.iter().fold(false, |acc, &b| {
            acc | (b == b'\\') | (b == b'"') | (b < 0x20)
        })
    };
    if !inner.as_bytes().chunks(64).any(special) {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(json).ok().map(Cow::Owned)
}

fn cow_bytes(s: Cow<'_, str>) -> Cow<'_, [u8]> {
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

/// A key version's metadata as the API and the CLI show it (never material).
pub fn key_metadata(record: &KeyVersionRecord) -> Value {
    let mut v = serde_json::json!({
        "keyId": keyflow_kms::keyflow_core::key_id(&record.purpose, record.version),
        "purpose": record.purpose.as_str(),
        "version": record.version.get(),
        "status": record.status.as_str(),
        "algorithm": record.algorithm,
        "createdAt": keyflow_kms::clock::rfc3339(record.created_at),
        "statusChangedAt": keyflow_kms::clock::rfc3339(record.status_changed_at),
        "encryptions": record.encryptions,
    });
    // Only revoked (and later destroyed) versions carry a reason.
    if let Some(reason) = &record.revoked_reason {
        v["revokedReason"] = serde_json::json!(reason);
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail by panicking
mod tests {
    use super::*;
    use keyflow_kms::keyflow_core::{Context, KeyVersion, Purpose};
    use keyflow_kms::{Decrypted, ServiceConfig};
    use keyflow_testkit::Env;

    /// The encoding of a value given as JSON text (what the server reads from a request)
    /// is the encoding of the parsed value: the same plaintext comes back either way.
    #[tokio::test]
    async fn json_text_encodes_like_the_parsed_value() {
        let env = Env::new();
        let s = env.service(ServiceConfig::default()).await;
        let p = Purpose::new("userData").unwrap();
        // A plain string is borrowed, not copied; an escaped one is unescaped.
        let (_, plain) = encode_json_text(r#""123-45-6789""#).unwrap();
        assert!(matches!(plain, Cow::Borrowed(b"123-45-6789")));
        let texts = [
            r#""123-45-6789""#,
            r#""quote \" backslash \\ newline \n \u00e9 \ud83d\ude00""#,
            "42",
            "-1.5e3",
            "true",
            "null",
            r#"{ "b": [1, {"c": null}], "a": "x" }"#,
            "[]",
        ];
        let mut encoded = Vec::new();
        for text in texts {
            encoded.push(encode_json_text(text).unwrap());
        }
        let mut cts = Vec::new();
        let version = s
            .encrypt_batch_each(
                encoded.iter().map(|(k, b)| (*k, &b[..])),
                &p,
                &Context::new(),
                |r| {
                    cts.push(keyflow_kms::keyflow_core::envelope::write::to_text(
                        r.unwrap(),
                    ))
                },
            )
            .await
            .unwrap();
        assert_eq!(version, KeyVersion::FIRST);
        assert_eq!(cts.len(), texts.len());
        for (text, ct) in texts.iter().zip(&cts) {
            let want: Value = serde_json::from_str(text).unwrap();
            match s.decrypt(ct, &Context::new()).await.unwrap() {
                Decrypted::Json(got) => assert_eq!(got, want, "{text}"),
                Decrypted::Bytes(_) => panic!("{text} came back as bytes"),
            }
        }
        // String tokens: the shortcut never accepts what a parser would refuse.
        let long = format!("\"{}\"", "QUJD".repeat(5000));
        assert!(matches!(json_string(&long), Some(Cow::Borrowed(s)) if s.len() == 20_000));
        assert_eq!(json_string(r#""a\"b""#).as_deref(), Some("a\"b"));
        for bad in [
            r#""a"b""#,
            r#""abc"#,
            "abc",
            "\"tab\there\"",
            r#"""#,
            r#""\""#,
        ] {
            assert_eq!(json_string(bad), None, "{bad:?}");
        }
        for bad in ["", "{", "1 2", r#""unterminated"#, "nul", "\"a\u{1}\""] {
            assert!(
                matches!(encode_json_text(bad), Err(KmsError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
