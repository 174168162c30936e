//! Audit rows (`keyflow_audit`, `keyflow_audit_head`, migration 0004 of both SQL
//! keystores; `keyflow_audit_anchor`, migration 0005) → [`StoredAudit`] / [`ChainHead`]
//! / [`Checkpoint`] and the column encodings both write.

use keyflow_kms::audit::{mac_from_hex, ChainHead, Checkpoint, CheckpointKind, StoredAudit};
use keyflow_kms::keystore::StoreError;

use super::Columns;

/// The `keyflow_audit` columns, in the order both backends select and insert them.
pub const COLUMNS: &str = "seq, kek_id, time, actor, operation, result, purposes, body, mac";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("corrupt keyflow_audit row: {what}"))
}

/// A sequence number for a signed 64-bit column. Saturates: no chain gets that long,
/// and a bound past the last record means the same as `i64::MAX`.
pub fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The purposes column: `,p1,p2,`, or `''` for none, so a purpose filter is a plain
/// substring search for `,name,` (no wildcards to escape, case-sensitive everywhere).
/// `%`, `,` and NUL inside a name are written `%25`, `%2C`, `%00` (valid purpose names
/// hold none of them, so for them the column is exactly `,p1,p2,`).
pub fn purposes_column(purposes: &[String]) -> String {
    if purposes.is_empty() {
        return String::new();
    }
    let mut s = String::from(",");
    for p in purposes {
        s.push_str(&escape_purpose(p));
        s.push(',');
    }
    s
}

/// One purpose as it stands between the commas of [`purposes_column`].
pub fn escape_purpose(p: &str) -> String {
    p.replace('%', "%25")
        .replace(',', "%2C")
        .replace('\0', "%00")
}

/// The inverse of [`purposes_column`]; `None` for text it cannot have written.
pub fn purposes_from_column(s: &str) -> Option<Vec<String>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    let inner = s.strip_prefix(',')?.strip_suffix(',')?;
    inner.split(',').map(unescape_purpose).collect()
}

fn unescape_purpose(p: &str) -> Option<String> {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while let Some(i) = rest.find('%') {
        out.push_str(rest.get(..i)?);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2C" => ',',
            "00" => '\0',
            _ => return None,
        });
        rest = rest.get(i + 3..)?;
    }
    out.push_str(rest);
    Some(out)
}

/// The `mac` column of record `seq`, decoded.
pub fn stored_mac(seq: u64, hex: &str) -> Result<[u8; 32], StoreError> {
    mac_from_hex(hex).ok_or_else(|| corrupt(&format!("record {seq}: mac")))
}

/// A `keyflow_audit` row.
pub fn record(row: &impl Columns) -> Result<StoredAudit, StoreError> {
    let seq = u64::try_from(row.int("seq")?).map_err(|_| corrupt("seq"))?;
    let at = |what: &str| corrupt(&format!("record {seq}: {what}"));
    Ok(StoredAudit {
        seq,
        kek_id: row.text("kek_id")?,
        time: row.int("time")?,
        actor: row.text("actor")?,
        operation: row.text("operation")?,
        result: row.text("result")?,
        purposes: purposes_from_column(&row.text("purposes")?).ok_or_else(|| at("purposes"))?,
        body: row.text("body")?,
        mac: mac_from_hex(&row.text("mac")?).ok_or_else(|| at("mac"))?,
    })
}

/// The `keyflow_audit_head` row.
pub fn head(row: &impl Columns) -> Result<ChainHead, StoreError> {
    let corrupt_head =
        |what| StoreError::Corrupt(format!("corrupt keyflow_audit_head row: {what}"));
    Ok(ChainHead {
        seq: u64::try_from(row.int("seq")?).map_err(|_| corrupt_head("seq"))?,
        mac: mac_from_hex(&row.text("mac")?).ok_or_else(|| corrupt_head("mac"))?,
    })
}

/// The `keyflow_audit_anchor` columns, in the order both backends select and insert them.
pub const ANCHOR_COLUMNS: &str = "version, kind, seq, mac, time, kek_id, tag";

/// The `keyflow_audit_anchor` row. Only the shape is checked: whether the tag verifies
/// is the reader's question.
pub fn anchor(row: &impl Columns) -> Result<Checkpoint, StoreError> {
    let corrupt_anchor =
        |what| StoreError::Corrupt(format!("corrupt keyflow_audit_anchor row: {what}"));
    let kind = match row.text("kind")?.as_str() {
        "checkpoint" => CheckpointKind::Checkpoint,
        "anchor" => CheckpointKind::Anchor,
        _ => return Err(corrupt_anchor("kind")),
    };
    Ok(Checkpoint {
        version: u8::try_from(row.int("version")?).map_err(|_| corrupt_anchor("version"))?,
        kind,
        seq: u64::try_from(row.int("seq")?).map_err(|_| corrupt_anchor("seq"))?,
        mac: row.text("mac")?,
        time: row.int("time")?,
        kek_id: row.text("kek_id")?,
        tag: row.text("tag")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_column_round_trips_and_escapes_separators() {
        for list in [
            vec![],
            vec![String::new()],
            vec!["userData".to_owned()],
            vec!["a".to_owned(), "b_c".to_owned(), String::new()],
            vec![
                "a,b".to_owned(),
                "50%".to_owned(),
                "%2C".to_owned(),
                "n\0l".to_owned(),
            ],
        ] {
            let column = purposes_column(&list);
            assert!(!column.contains('\0'), "PostgreSQL text cannot hold NUL");
            assert_eq!(purposes_from_column(&column), Some(list), "{column}");
        }
        assert_eq!(purposes_column(&["a".into(), "b".into()]), ",a,b,");
        assert_eq!(purposes_column(&["a,b".into()]), ",a%2Cb,");
        for bad in [",", "a,", ",a", ",%2,", ",%zz,", ",%,"] {
            assert_eq!(purposes_from_column(bad), None, "{bad}");
        }
    }
}
