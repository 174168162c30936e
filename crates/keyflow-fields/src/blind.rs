//! Blind-index search: the bit length for a field, and the search terms of a value
//! across every live key version.
//!
//! ## The leakage trade-off
//!
//! A blind index is a keyed hash (HMAC-SHA256 under a per-purpose subkey, keyed by the
//! field label) truncated to `bits`. Whoever reads the table sees which rows share an
//! index value:
//!
//! - **too many bits** and every distinct value gets its own index: the column leaks
//!   equality exactly like deterministic encryption (frequency analysis: the most common
//!   index is the most common e-mail domain's user…);
//! - **too few bits** and many distinct values share each index: searches return false
//!   positives, which the application removes by decrypting the candidates and comparing.
//!
//! [`bits_for_distinct_values`] picks the middle: about two distinct values per index
//! value, so an index never singles out one value, and a search decrypts about two
//! candidate values' rows — cheap. [`expected_false_positives`] gives the number for
//! any choice.

use keyflow_kms::{EncryptionService, KmsError, Purpose};
use serde_json::Value;

use crate::error::{FieldsError, Result};
use crate::path::ConcretePath;

/// Fewest bits KeyFlow computes (the core refuses fewer).
pub const MIN_BITS: u16 = 8;
/// Most bits [`bits_for_distinct_values`] recommends; beyond it an index is unique in
/// practice for any realistic table.
pub const MAX_RECOMMENDED_BITS: u16 = 32;

/// The blind-index length for a field expected to hold `distinct` different values:
/// `floor(log2(distinct)) - 1`, so that each index value is shared by two or more
/// distinct values on average, clamped to 8..=32.
///
/// `1_000` values → 8 bits; `1_000_000` → 18 bits; `10^9` → 28 bits.
pub fn bits_for_distinct_values(distinct: u64) -> u16 {
    let log2 = if distinct == 0 {
        0
    } else {
        63 - distinct.leading_zeros() as u16
    };
    log2.saturating_sub(1).clamp(MIN_BITS, MAX_RECOMMENDED_BITS)
}

/// Expected number of *other* distinct values sharing one value's index, for a field
/// with `distinct` values and `bits`-bit indexes: each is a false positive a search
/// must filter out by decrypting.
pub fn expected_false_positives(distinct: u64, bits: u16) -> f64 {
    let buckets = 2f64.powi(i32::from(bits.min(1023)));
    (distinct.saturating_sub(1)) as f64 / buckets
}

/// The label a field's blind index is keyed with, from a path or plain member name
/// (`phoneNumber`, `phone_number` → `phonenumber`; `cards[*].cardNumber` →
/// `cards[].cardnumber`). Equal to the label [`crate::encrypt_fields`] uses.
pub fn label_of(field: &str) -> Result<String> {
    let sel: crate::Selector = field.parse()?;
    let mut path = ConcretePath::root();
    for seg in sel.segments() {
        match seg {
            crate::path::Segment::Key(k) => path.push(crate::path::Step::Key(k.clone())),
            crate::path::Segment::Index(_) | crate::path::Segment::AnyIndex => {
                path.push(crate::path::Step::Index(0))
            }
            crate::path::Segment::AnyKey => {
                return Err(FieldsError::InvalidSelector {
                    selector: field.to_owned(),
                    reason: "a blind-index field names one member ('*' matches many)",
                })
            }
        }
    }
    Ok(path.label())
}

/// The bytes a value is indexed as: a string's UTF-8, anything else its JSON text.
pub fn index_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// The index values to search for `value` in `field`: one per key version of `purpose`
/// that may still decrypt, newest first, as stored by [`crate::encrypt_fields`] and
/// the derive macro. Use them as `WHERE email_bidx IN (…)`; rows indexed before a
/// rotation keep matching until their version is retired (re-encrypt them before).
pub async fn search_terms(
    service: &EncryptionService,
    purpose: &Purpose,
    field: &str,
    value: &Value,
    bits: u16,
) -> Result<Vec<String>> {
    let label = label_of(field)?;
    let mut terms: Vec<String> = service
        .blind_indexes(purpose, &label, &index_bytes(value), bits)
        .await
        .map_err(|e: KmsError| FieldsError::Kms(e))?
        .into_iter()
        .map(|b| b.hex)
        .collect();
    // Two versions may (rarely, with few bits) give the same term.
    let mut seen = std::collections::HashSet::new();
    terms.retain(|t| seen.insert(t.clone()));
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_cardinality() {
        assert_eq!(bits_for_distinct_values(0), 8);
        assert_eq!(bits_for_distinct_values(2), 8);
        assert_eq!(bits_for_distinct_values(1_000), 8);
        assert_eq!(bits_for_distinct_values(1 << 10), 9);
        assert_eq!(bits_for_distinct_values(1_000_000), 18);
        assert_eq!(bits_for_distinct_values(1_000_000_000), 28);
        assert_eq!(bits_for_distinct_values(u64::MAX), 32);
        for n in [1u64 << 12, 1_000_000, 50_000_000] {
            let fp = expected_false_positives(n, bits_for_distinct_values(n));
            assert!((1.0..4.0).contains(&fp), "{n}: {fp}");
        }
        assert!(expected_false_positives(1_000_000, 64) < 1e-12);
    }

    #[test]
    fn labels_match_the_document_engine() {
        assert_eq!(label_of("phone_number").unwrap(), "phonenumber");
        assert_eq!(label_of("PhoneNumber").unwrap(), "phonenumber");
        assert_eq!(
            label_of("cards[*].cardNumber").unwrap(),
            "cards[].cardnumber"
        );
        assert!(label_of("a.*").is_err());
    }
}
