//! Stored rows → records, shared by the SQL keystores (SQLite, PostgreSQL): the checks
//! that turn a damaged row into a clear [`StoreError`] are written once, and each
//! backend only says how to read a column ([`Columns`]).

use std::str::FromStr;

use keyflow_core::{KeyVersion, Purpose};
use keyflow_kms::access::TokenRecord;
use keyflow_kms::keystore::StoreError;
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, Policy};
use keyflow_kms::row_mac::RowSealer;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::db_error;

pub mod audit;

/// Reads one column of a row, by name. Backend errors (missing column, wrong type)
/// become [`StoreError`]s.
pub trait Columns {
    /// A non-null text column.
    fn text(&self, column: &str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// A non-null integer column.
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A nullable binary column.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// A driver row, read through [`Columns`] (both backends' rows decode the same Rust
/// types).
pub struct SqlRow<R>(pub R);

impl<R> From<R> for SqlRow<R> {
    fn from(row: R) -> Self {
        SqlRow(row)
    }
}

impl<R> Columns for SqlRow<R>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.0.try_get(column).map_err(db_error)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.0.try_get(column).map_err(db_error)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.0.try_get(column).map_err(db_error)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.0.try_get(column).map_err(db_error)
    }
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.try_get(column).map_err(db_error)
    }
}

fn corrupt(table: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("corrupt {table} row: {what}"))
}

/// A purpose name as stored.
pub fn purpose(name: &str, table: &str) -> Result<Purpose, StoreError> {
    Purpose::new(name).map_err(|_| corrupt(table, "purpose"))
}

/// A count (usage counter, budget) for a signed 64-bit column; saturates, which no
/// real count reaches.
pub fn count_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A token's purposes as stored: comma-separated (purpose names cannot hold commas).
pub fn purposes_column(purposes: &[Purpose]) -> String {
    purposes
        .iter()
        .map(Purpose::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// A `key_versions` row.
pub fn version_record(row: &impl Columns) -> Result<KeyVersionRecord, StoreError> {
    const T: &str = "key_versions";
    Ok(KeyVersionRecord {
        purpose: purpose(&row.text("purpose")?, T)?,
        version: u32::try_from(row.int("version")?)
            .ok()
            .and_then(|v| KeyVersion::new(v).ok())
            .ok_or_else(|| corrupt(T, "version"))?,
        status: KeyStatus::from_str(&row.text("status")?).map_err(|_| corrupt(T, "status"))?,
        algorithm: row.text("algorithm")?,
        wrapped_key: row.opt_bytes("wrapped_key")?,
        kek_id: row.text("kek_id")?,
        created_at: row.int("created_at")?,
        status_changed_at: row.int("status_changed_at")?,
        encryptions: u64::try_from(row.int("encryptions")?)
            .map_err(|_| corrupt(T, "encryptions"))?,
        revoked_reason: row.opt_text("revoked_reason")?,
    })
}

/// The stored `row_mac` column (NULL for rows not sealed yet).
pub fn row_mac(row: &impl Columns) -> Result<Option<Vec<u8>>, StoreError> {
    row.opt_bytes("row_mac")
}

/// A `key_versions` row whose `row_mac` matches it; any other row is refused.
pub fn verified_version(
    row: &impl Columns,
    sealer: &RowSealer,
) -> Result<KeyVersionRecord, StoreError> {
    let record = version_record(row)?;
    sealer.check_version(&record, row_mac(row)?.as_deref())?;
    Ok(record)
}

/// An `api_tokens` row whose `row_mac` matches it; any other row is refused.
pub fn verified_token(row: &impl Columns, sealer: &RowSealer) -> Result<TokenRecord, StoreError> {
    let record = token_record(row)?;
    sealer.check_token(&record, row_mac(row)?.as_deref())?;
    Ok(record)
}

/// The `key_versions` rows that pass their MAC check; a row that fails is refused —
/// counted, logged and reported by the sealer (the server's `/status` alert and audit
/// record) — and left out, so listings, `/status` and the scheduler keep working and
/// never act on a forged state. Single-version reads ([`verified_version`]) refuse
/// with an error instead, and a KEK rotation refuses to run at all.
pub fn trusted_versions<C: Columns>(
    rows: impl IntoIterator<Item = C>,
    sealer: &RowSealer,
) -> Result<Vec<KeyVersionRecord>, StoreError> {
    trusted(rows, version_record, |r, mac| {
        sealer.check_version(r, mac).is_ok()
    })
}

/// The `api_tokens` rows that pass their MAC check. A row that fails is refused —
/// counted, logged and reported by the sealer — and left out, so one forged or
/// tampered row cannot lock every other token out; a row that cannot be decoded
/// at all is an error, as before.
pub fn trusted_tokens<C: Columns>(
    rows: impl IntoIterator<Item = C>,
    sealer: &RowSealer,
) -> Result<Vec<TokenRecord>, StoreError> {
    trusted(rows, token_record, |r, mac| {
        sealer.check_token(r, mac).is_ok()
    })
}

/// The records of `rows` whose MAC `passes` its check; a row that does not decode is
/// an error.
fn trusted<C: Columns, R>(
    rows: impl IntoIterator<Item = C>,
    decode: impl Fn(&C) -> Result<R, StoreError>,
    passes: impl Fn(&R, Option<&[u8]>) -> bool,
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let record = decode(&row)?;
        if passes(&record, row_mac(&row)?.as_deref()) {
            out.push(record);
        }
    }
    Ok(out)
}

/// A `key_policies` row whose `row_mac` matches it; any other row is refused.
pub fn verified_policy(
    row: &impl Columns,
    sealer: &RowSealer,
) -> Result<(Purpose, Policy), StoreError> {
    let (purpose, policy) = policy_record(row)?;
    sealer.check_policy(&purpose, &policy, row_mac(row)?.as_deref())?;
    Ok((purpose, policy))
}

/// An `api_tokens` row.
pub fn token_record(row: &impl Columns) -> Result<TokenRecord, StoreError> {
    const T: &str = "api_tokens";
    Ok(TokenRecord {
        id: row.text("id")?,
        secret_hash: row
            .opt_bytes("secret_hash")?
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| corrupt(T, "hash"))?,
        role: row.text("role")?.parse().map_err(|_| corrupt(T, "role"))?,
        purposes: row
            .text("purposes")?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| purpose(p, T))
            .collect::<Result<_, _>>()?,
        name: row.text("name")?,
        created_at: row.int("created_at")?,
        expires_at: row.opt_int("expires_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

/// A `key_policies` row.
pub fn policy_record(row: &impl Columns) -> Result<(Purpose, Policy), StoreError> {
    const T: &str = "key_policies";
    let days = |c: &str| -> Result<u32, StoreError> {
        u32::try_from(row.int(c)?).map_err(|_| corrupt(T, c))
    };
    Ok((
        purpose(&row.text("purpose")?, T)?,
        Policy {
            rotation_days: days("rotation_days")?,
            grace_days: days("grace_days")?,
            warn_days: days("warn_days")?,
            max_encryptions: u64::try_from(row.int("max_encryptions")?)
                .map_err(|_| corrupt(T, "max_encryptions"))?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A row as a map; `None` values are NULL.
    struct Map(HashMap<&'static str, Option<Value>>);
    #[derive(Clone)]
    enum Value {
        T(String),
        I(i64),
        B(Vec<u8>),
    }

    impl Map {
        fn get(&self, c: &str) -> Result<Option<Value>, StoreError> {
            self.0
                .get(c)
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("no column {c}")))
        }
    }

    impl Columns for Map {
        fn text(&self, c: &str) -> Result<String, StoreError> {
            self.opt_text(c)?
                .ok_or_else(|| StoreError::Corrupt("null".into()))
        }
        fn opt_text(&self, c: &str) -> Result<Option<String>, StoreError> {
            match self.get(c)? {
                Some(Value::T(s)) => Ok(Some(s)),
                None => Ok(None),
                _ => Err(StoreError::Corrupt("type".into())),
            }
        }
        fn int(&self, c: &str) -> Result<i64, StoreError> {
            self.opt_int(c)?
                .ok_or_else(|| StoreError::Corrupt("null".into()))
        }
        fn opt_int(&self, c: &str) -> Result<Option<i64>, StoreError> {
            match self.get(c)? {
                Some(Value::I(n)) => Ok(Some(n)),
                None => Ok(None),
                _ => Err(StoreError::Corrupt("type".into())),
            }
        }
        fn opt_bytes(&self, c: &str) -> Result<Option<Vec<u8>>, StoreError> {
            match self.get(c)? {
                Some(Value::B(b)) => Ok(Some(b)),
                None => Ok(None),
                _ => Err(StoreError::Corrupt("type".into())),
            }
        }
    }

    fn token_row(hash_len: usize, role: &str, purposes: &str) -> Map {
        Map(HashMap::from([
            ("id", Some(Value::T("00000000000000aa".into()))),
            ("secret_hash", Some(Value::B(vec![7; hash_len]))),
            ("role", Some(Value::T(role.into()))),
            ("purposes", Some(Value::T(purposes.into()))),
            ("name", Some(Value::T("n".into()))),
            ("created_at", Some(Value::I(1))),
            ("expires_at", None),
            ("revoked_at", Some(Value::I(2))),
        ]))
    }

    #[test]
    fn tokens_decode_and_damage_is_named() {
        let t = token_record(&token_row(32, "service", "userData,financialData")).unwrap();
        assert_eq!(t.purposes.len(), 2);
        assert_eq!((t.expires_at, t.revoked_at), (None, Some(2)));
        assert_eq!(
            purposes_column(&t.purposes),
            "userData,financialData",
            "round trip of the purposes column"
        );
        for (row, what) in [
            (token_row(31, "service", ""), "hash"),
            (token_row(32, "root", ""), "role"),
            (token_row(32, "service", "bad name!"), "purpose"),
        ] {
            let e = token_record(&row).unwrap_err().to_string();
            assert_eq!(e, format!("corrupt api_tokens row: {what}"));
        }
    }

    #[test]
    fn versions_and_policies_refuse_out_of_range_numbers() {
        let mut row = Map(HashMap::from([
            ("purpose", Some(Value::T("userData".into()))),
            ("version", Some(Value::I(0))),
            ("status", Some(Value::T("active".into()))),
            ("algorithm", Some(Value::T("AES-256".into()))),
            ("wrapped_key", None),
            ("kek_id", Some(Value::T("k".into()))),
            ("created_at", Some(Value::I(1))),
            ("status_changed_at", Some(Value::I(1))),
            ("encryptions", Some(Value::I(5))),
            ("revoked_reason", None),
        ]));
        let e = version_record(&row).unwrap_err().to_string();
        assert_eq!(e, "corrupt key_versions row: version");
        row.0.insert("version", Some(Value::I(3)));
        assert_eq!(version_record(&row).unwrap().encryptions, 5);
        row.0.insert("encryptions", Some(Value::I(-1)));
        assert!(version_record(&row).is_err());
        let p = Map(HashMap::from([
            ("purpose", Some(Value::T("userData".into()))),
            ("rotation_days", Some(Value::I(90))),
            ("grace_days", Some(Value::I(-3))),
            ("warn_days", Some(Value::I(7))),
            ("max_encryptions", Some(Value::I(10))),
        ]));
        assert_eq!(
            policy_record(&p).unwrap_err().to_string(),
            "corrupt key_policies row: grace_days"
        );
        assert_eq!(count_column(u64::MAX), i64::MAX);
    }
}
