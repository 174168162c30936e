//! Key backups of the legacy `POST /keys/backup`: the password envelope of
//! [`crate::envelope`] around format 1.0 (`{version, exportedAt, keys}`) or 2.0
//! (`{backup: {version: "2.0", …, keyCount, keys}, checksum}`, checksum = SHA-256 hex
//! of `JSON.stringify(backup)`). The DEKs inside stay wrapped under the legacy KEK.

use aws_lc_rs::digest;
use serde_json::value::RawValue;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::envelope;
use crate::error::{LegacyError, Result};
use crate::keys::{entry, Entries, Rejected};
use crate::text::{as_object, str_member};

/// Which backup format was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupFormat {
    /// The older build: active and rotating keys, no status, no checksum.
    V1,
    /// The newer build: every key with its status, and a checksum.
    V2,
}

impl BackupFormat {
    /// `1.0` or `2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// A decrypted, checked backup.
#[derive(Debug)]
pub struct Backup {
    /// Its format.
    pub format: BackupFormat,
    /// The PBKDF2 count that opened it.
    pub iterations: u32,
    /// Its keys (still wrapped under the legacy KEK) and the entries refused.
    pub entries: Entries,
}

const WHAT: &str = "backup";

/// Opens a backup file's text with its password, trying `iterations` in order, and
/// reads it (see [`parse`]).
pub fn open(text: &str, password: &[u8], iterations: &[u32]) -> Result<Backup> {
    let opened = envelope::open(text, password, iterations, WHAT)?;
    let (format, entries) = parse(&opened.plaintext)?;
    Ok(Backup {
        format,
        iterations: opened.iterations,
        entries,
    })
}

/// Reads decrypted backup JSON. A 2.0 checksum mismatch, an unknown version, or a key
/// count that differs from the list fails the whole backup; a bad key entry is only
/// rejected on its own.
pub fn parse(json: &[u8]) -> Result<(BackupFormat, Entries)> {
    let top: Value =
        serde_json::from_slice(json).map_err(|_| LegacyError::malformed(WHAT, "not JSON"))?;
    let top = as_object(WHAT, &top)?;
    if top.contains_key("backup") {
        // The checksum covers `JSON.stringify(backup)`, which is exactly the text of the
        // `backup` member inside `JSON.stringify({backup, checksum})`: hash that text as
        // it is, rather than re-serializing (number and escape formats would differ).
        #[derive(serde::Deserialize)]
        struct V2<'a> {
            #[serde(borrow)]
            backup: &'a RawValue,
            checksum: String,
        }
        let v2: V2<'_> = serde_json::from_slice(json)
            .map_err(|_| LegacyError::malformed(WHAT, "'backup' or 'checksum' missing"))?;
        let sum = keyflow_kms::keyflow_core::to_hex(
            digest::digest(&digest::SHA256, v2.backup.get().as_bytes()).as_ref(),
        );
        if !bool::from(
            sum.as_bytes()
                .ct_eq(v2.checksum.to_ascii_lowercase().as_bytes()),
        ) {
            return Err(LegacyError::ChecksumMismatch);
        }
        let inner: Value = serde_json::from_str(v2.backup.get())
            .map_err(|_| LegacyError::malformed(WHAT, "'backup' is not JSON"))?;
        let inner = as_object(WHAT, &inner)?;
        if str_member(WHAT, inner, "version")? != "2.0" {
            return Err(LegacyError::malformed(
                WHAT,
                "unknown version inside a 2.0 envelope",
            ));
        }
        let entries = keys(inner.get("keys"), true)?;
        let count = inner.get("keyCount").and_then(Value::as_u64);
        let listed = (entries.keys.len() + entries.rejected.len()) as u64;
        if count.is_some_and(|c| c != listed) {
            return Err(LegacyError::malformed(
                WHAT,
                "'keyCount' differs from the number of keys listed",
            ));
        }
        return Ok((BackupFormat::V2, entries));
    }
    match str_member(WHAT, top, "version")? {
        "1.0" => Ok((BackupFormat::V1, keys(top.get("keys"), false)?)),
        _ => Err(LegacyError::malformed(
            WHAT,
            "unknown version (1.0 and 2.0 are known)",
        )),
    }
}

fn keys(list: Option<&Value>, status_required: bool) -> Result<Entries> {
    let items = list
        .and_then(Value::as_array)
        .ok_or_else(|| LegacyError::malformed(WHAT, "'keys' is not a list"))?;
    let mut out = Entries::default();
    for (i, item) in items.iter().enumerate() {
        let source = format!("backup key {}", i + 1);
        match item.as_object() {
            Some(obj) => match entry(obj, source, status_required) {
                Ok(k) => out.keys.push(k),
                Err(r) => out.rejected.push(r),
            },
            None => out.rejected.push(Rejected {
                source,
                key_id: None,
                reason: "not a JSON object".into(),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write;
    use serde_json::json;

    fn key(id: &str, status: &str) -> Value {
        json!({"keyId": id, "version": 1, "algorithm": "aes-256-gcm", "encryptedKey": "AAAA",
               "purpose": "p", "status": status, "createdAt": "2026-03-02T00:00:00.000Z"})
    }

    #[test]
    fn v2_checksum_is_verified() {
        let doc = write::backup_v2(&[key("a", "active"), key("b", "revoked")]);
        let (f, e) = parse(doc.as_bytes()).unwrap();
        assert_eq!(f, BackupFormat::V2);
        assert_eq!(e.keys.len(), 2);
        // One changed byte inside `backup`: the checksum no longer matches.
        let tampered = doc.replacen("\"revoked\"", "\"rotated\"", 1);
        assert!(matches!(
            parse(tampered.as_bytes()),
            Err(LegacyError::ChecksumMismatch)
        ));
        let bad_sum = doc.replace("\"checksum\":\"", "\"checksum\":\"0");
        assert!(matches!(
            parse(bad_sum.as_bytes()),
            Err(LegacyError::ChecksumMismatch)
        ));
    }

    #[test]
    fn v2_key_count_and_status_are_checked() {
        let mut inner = json!({"version": "2.0", "exportedAt": "x", "keyCount": 3,
                               "keys": [key("a", "active")]});
        let doc = write::backup_v2_raw(&inner);
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(LegacyError::Malformed { .. })
        ));
        inner["keyCount"] = json!(2);
        inner["keys"] = json!([key("a", "active"), key("b", "archived")]);
        let (_, e) = parse(write::backup_v2_raw(&inner).as_bytes()).unwrap();
        assert_eq!(e.keys.len(), 1);
        assert!(e.rejected[0].reason.contains("not one of"));
    }

    #[test]
    fn v1_has_no_status() {
        let doc = json!({"version": "1.0", "exportedAt": "x", "keys": [
            {"keyId": "a", "version": 1, "algorithm": "aes-256-gcm", "encryptedKey": "AAAA", "purpose": "p", "metadata": {}}
        ]});
        let (f, e) = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(f, BackupFormat::V1);
        assert_eq!(e.keys[0].status, None);
        let doc = json!({"version": "3.0", "keys": []});
        assert!(parse(doc.to_string().as_bytes()).is_err());
    }
}
