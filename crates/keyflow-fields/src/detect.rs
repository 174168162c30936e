//! Value detectors (sensitive data under unexpected names) and document scanning.
//!
//! Each detector is strict enough that near misses do not fire: a card number must
//! pass the Luhn check, an IBAN its mod-97 check, an SSN must use the dashed form with
//! valid area/group/serial numbers. Detectors look at a value only; [`scan`] adds the
//! field-name rules (purpose lists, sensitive authentication data), looks inside free
//! text ([`crate::text::find_in_text`]) when a whole string is not sensitive, and skips
//! values that are already KeyFlow ciphertexts.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::names;
use crate::path::{member, walk, ConcretePath, StepRef};

/// What fired on a value or a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Detector {
    /// 13–19 digits (spaces or dashes allowed) passing the Luhn check.
    CardNumber,
    /// A US social security number `AAA-GG-SSSS` (valid area, group and serial).
    Ssn,
    /// An IBAN with a valid mod-97 checksum.
    Iban,
    /// An e-mail address.
    Email,
    /// A phone number: `+` and 8–15 digits, or a 10-digit North American number.
    Phone,
    /// A member name from one of the purpose lists (`ssn`, `salary`, `apiKey`…).
    SensitiveName,
    /// A sensitive-authentication-data name (`cvv`, `pin`, track data…).
    SensitiveAuthenticationData,
}

impl Detector {
    /// The detector's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Detector::CardNumber => "cardNumber",
            Detector::Ssn => "ssn",
            Detector::Iban => "iban",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::SensitiveName => "sensitiveName",
            Detector::SensitiveAuthenticationData => "sensitiveAuthenticationData",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first value detector that fires on `s`, most specific first.
pub fn detect(s: &str) -> Option<Detector> {
    let s = s.trim();
    if is_card_number(s) {
        Some(Detector::CardNumber)
    } else if is_ssn(s) {
        Some(Detector::Ssn)
    } else if is_iban(s) {
        Some(Detector::Iban)
    } else if is_email(s) {
        Some(Detector::Email)
    } else if is_phone(s) {
        Some(Detector::Phone)
    } else {
        None
    }
}

/// Digits of `s` if it is only digits with single spaces or dashes between groups.
fn digits_with_separators(s: &str) -> Option<Vec<u8>> {
    let mut digits = Vec::with_capacity(s.len());
    let mut prev_sep = true; // no leading separator
    for c in s.chars() {
        match c {
            '0'..='9' => {
                digits.push(c as u8 - b'0');
                prev_sep = false;
            }
            ' ' | '-' if !prev_sep => prev_sep = true,
            _ => return None,
        }
    }
    (!prev_sep).then_some(digits)
}

/// The Luhn (mod 10) check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// 13–19 digits (spaces or dashes between groups allowed), Luhn-valid, not all one
/// digit (`0000 0000 0000 0000` passes Luhn but is no card).
pub fn is_card_number(s: &str) -> bool {
    let Some(d) = digits_with_separators(s) else {
        return false;
    };
    (13..=19).contains(&d.len()) && d.iter().any(|x| *x != d[0]) && luhn_valid(&d)
}

/// `AAA-GG-SSSS` with area not 000, 666 or 900–999, group not 00, serial not 0000.
pub fn is_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 || b[3] != b'-' || b[6] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    match (num(0..3), num(4..6), num(7..11)) {
        (Some(area), Some(group), Some(serial)) => {
            area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        }
        _ => false,
    }
}

/// An IBAN: a country code of the ISO 13616 registry, two check digits, exactly that
/// country's length in letters or digits (single spaces allowed between groups),
/// valid under mod 97.
pub fn is_iban(s: &str) -> bool {
    let compact: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if compact.len() < 5
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact[4..].iter().all(u8::is_ascii_alphanumeric)
        || !s.starts_with(|c: char| c.is_ascii_uppercase())
        || s.contains("  ")
    {
        return false;
    }
    crate::text::iban_length([compact[0], compact[1]]) == Some(compact.len())
        && crate::text::iban_checksum(&compact)
}

/// `local@domain.tld`: a non-empty local part without spaces, a domain of at least two
/// labels of letters, digits and `-`, a top-level label of two or more letters.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
}

/// `+` followed by 8–15 digits (E.164, separators allowed), or a North American number
/// `(555) 123-4567` / `555-123-4567` / `555.123.4567` (area and exchange not starting
/// with 0 or 1). Plain runs of digits are not phones (too many false positives).
pub fn is_phone(s: &str) -> bool {
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')');
    if let Some(rest) = s.strip_prefix('+') {
        let digits = rest.chars().filter(char::is_ascii_digit).count();
        return rest.chars().all(allowed)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '(')
            && (8..=15).contains(&digits)
            && !rest.starts_with('0');
    }
    if !s.chars().all(allowed) || !s.chars().any(|c| matches!(c, ' ' | '-' | '.' | '(')) {
        return false;
    }
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let d = match digits.len() {
        10 => &digits[..],
        11 if digits[0] == 1 => &digits[1..],
        _ => return false,
    };
    // Exactly the shapes 3-3-4 (with optional parentheses around the area code).
    let groups: Vec<&str> = s
        .split([' ', '-', '.', '(', ')'])
        .filter(|g| !g.is_empty())
        .collect();
    let shape_ok = matches!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>()[..],
        [3, 3, 4] | [1, 3, 3, 4]
    );
    shape_ok && d[0] >= 2 && d[3] >= 2
}

/// One sensitive value (or name) found in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where (selector syntax).
    pub path: String,
    /// What fired.
    pub detector: Detector,
    /// For [`Detector::SensitiveName`], the list that matched (`pii`, `financial`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<&'static str>,
}

/// Every path of `doc` holding a sensitive value in clear: value detectors on strings
/// and numbers, sensitive names (purpose lists) and sensitive authentication data on
/// members that are not already KeyFlow ciphertexts (or null). Values are never
/// copied into findings.
pub fn scan(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(doc, |v, at| visit(v, at, &mut out));
    out
}

fn is_ciphertext(v: &Value) -> bool {
    v.as_str().is_some_and(crate::document::is_ciphertext)
}

fn finding(at: &[StepRef<'_>], detector: Detector, list: Option<&'static str>) -> Finding {
    Finding {
        path: ConcretePath::from_refs(at).to_string(),
        detector,
        list,
    }
}

/// What [`scan`] finds at one value; whether to look inside it.
fn visit(v: &Value, at: &[StepRef<'_>], out: &mut Vec<Finding>) -> bool {
    let name_hit = match member(at) {
        Some(_) if v.is_null() || is_ciphertext(v) => None,
        Some(k) if names::is_sensitive_authentication_data(k) => {
            Some((Detector::SensitiveAuthenticationData, None))
        }
        Some(k) => names::list_containing(k).map(|l| (Detector::SensitiveName, Some(l))),
        None => None,
    };
    if let Some((detector, list)) = name_hit {
        // A sensitive member is reported once, whatever it holds.
        out.push(finding(at, detector, list));
        return false;
    }
    match v {
        Value::String(s) => match detect(s) {
            Some(detector) => out.push(finding(at, detector, None)),
            None => {
                // Free text: each detector that fires is reported once for the path.
                let mut seen: Vec<Detector> = Vec::new();
                for f in crate::text::find_in_text(s) {
                    if !seen.contains(&f.detector) {
                        seen.push(f.detector);
                        out.push(finding(at, f.detector, None));
                    }
                }
            }
        },
        Value::Number(n) => {
            if let Some(detector) = detect(&n.to_string()) {
                out.push(finding(at, detector, None));
            }
        }
        Value::Object(_) | Value::Array(_) | Value::Bool(_) | Value::Null => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ciphertext() -> String {
        keyflow_testkit::ciphertext(b"123-45-6789")
    }

    #[test]
    fn card_numbers_need_luhn() {
        for ok in [
            "4532015112830366",
            "4532 0151 1283 0366",
            "4532-0151-1283-0366",
            "378282246310005",
            "6011111111111117",
            "4111111111111111",
        ] {
            assert!(is_card_number(ok), "{ok}");
            assert_eq!(detect(ok), Some(Detector::CardNumber), "{ok}");
        }
        for near in [
            "4532015112830367",     // Luhn off by one
            "4532 0151 1283 036",   // 15 digits, not Luhn
            "0000000000000000",     // all one digit
            "45320151128303661234", // 20 digits
            "4532  0151 1283 0366", // double separator
            "4532O15112830366",     // a letter O
            "123456789012",         // too short
        ] {
            assert!(!is_card_number(near), "{near}");
        }
        assert_ne!(detect("4532015112830367"), Some(Detector::CardNumber));
    }

    #[test]
    fn ssns() {
        assert!(is_ssn("123-45-6789"));
        for near in [
            "000-45-6789",
            "666-45-6789",
            "900-45-6789",
            "123-00-6789",
            "123-45-0000",
            "123456789",
            "123-45-678",
            "12a-45-6789",
        ] {
            assert!(!is_ssn(near), "{near}");
        }
    }

    #[test]
    fn ibans() {
        for ok in [
            "DE89370400440532013000",
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
        ] {
            assert!(is_iban(ok), "{ok}");
            assert_eq!(detect(ok), Some(Detector::Iban));
        }
        for near in [
            "DE89370400440532013001", // checksum
            "GB82WEST12345698765433",
            "de89370400440532013000", // lowercase country
            "DE8937040044",           // too short
            "DEXX370400440532013000",
            "XX89370400440532013000",  // no such country
            "DE893704004405320130000", // one too long for DE
        ] {
            assert!(!is_iban(near), "{near}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["user@example.com", "a.b+tag@sub.example.co.uk"] {
            assert!(is_email(ok), "{ok}");
        }
        for near in [
            "user@example",
            "@example.com",
            "user@.com",
            "user@exa mple.com",
            "user example@x.com",
            "user@example.c0m",
            "user@-x.com",
            "not an email",
        ] {
            assert!(!is_email(near), "{near}");
        }
    }

    #[test]
    fn phones() {
        for ok in [
            "+14155552671",
            "+44 20 7946 0958",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "1 415 555 2671",
        ] {
            assert!(is_phone(ok), "{ok}");
            assert_eq!(detect(ok), Some(Detector::Phone), "{ok}");
        }
        for near in [
            "4155552671", // bare digits: too ambiguous
            "+1234567",   // 7 digits
            "+0155552671",
            "015-555-2671", // area starts with 0
            "415-155-2671", // exchange starts with 1
            "415-5552-671",
            "2024-01-15",
            "12:30",
        ] {
            assert!(!is_phone(near), "{near}");
        }
    }

    #[test]
    fn scan_reports_paths_and_detectors_and_skips_ciphertext() {
        let doc = json!({
            "id": 42,
            "note": "call 415-555-2671",
            "contact": {"work": "user@example.com", "emailAddress": null},
            "payments": [{"ref": "4532015112830366", "cvv": "123"}, {"ref": "4532015112830367"}],
            "ssn": "whatever it holds",
            "taxId": ciphertext(),
            "numbers": [4532015112830366u64],
            "bank": {"acct": "DE89370400440532013000"}
        });
        let found: Vec<(String, &str)> = scan(&doc)
            .into_iter()
            .map(|f| (f.path, f.detector.name()))
            .collect();
        let expect = [
            ("bank.acct", "iban"),
            ("contact.work", "email"),
            ("note", "phone"),
            ("numbers[0]", "cardNumber"),
            ("payments[0].cvv", "sensitiveAuthenticationData"),
            ("payments[0].ref", "cardNumber"),
            ("ssn", "sensitiveName"),
        ];
        let mut found_sorted = found.clone();
        found_sorted.sort();
        assert_eq!(
            found_sorted,
            expect
                .iter()
                .map(|(p, d)| (p.to_string(), *d))
                .collect::<Vec<_>>()
        );
    }
}
