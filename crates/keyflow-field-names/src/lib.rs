//! Field names: normalization and the sensitive-field lists of each purpose
//! (PRODUCT.md §3, kept from the system KeyFlow replaces).
//!
//! This crate depends on nothing but `std`: the derive macro (`keyflow-derive`) uses it
//! to auto-detect fields at compile time and `keyflow-fields` (as `keyflow_fields::names`)
//! at run time, so the macro and the runtime can never disagree about a list.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Card data (PCI DSS level 1). `cvv`, `cardSecurityCode` and `pin` are sensitive
/// authentication data: the field layer strips or refuses them instead of encrypting.
pub const PCI_LEVEL1: &[&str] = &["cardNumber", "cvv", "cardSecurityCode", "pin"];
/// Card data (PCI DSS level 2). `serviceCode` (the card's three-digit service code) is
/// cardholder data, not sensitive authentication data: it may be stored, encrypted (the
/// old docs: "Service Code: encrypted if present").
pub const PCI_LEVEL2: &[&str] = &[
    "cardholderName",
    "expirationDate",
    "cardBrand",
    "serviceCode",
];
/// Personal data.
pub const PII: &[&str] = &[
    "ssn",
    "socialSecurityNumber",
    "taxId",
    "nationalId",
    "passport",
    "driverLicense",
    "dateOfBirth",
    "email",
    "phoneNumber",
    "address",
    "fullName",
];
/// Financial data.
pub const FINANCIAL: &[&str] = &[
    "bankAccountNumber",
    "routingNumber",
    "iban",
    "swift",
    "accountBalance",
    "salary",
    "income",
    "netWorth",
    "investmentValue",
    "cryptoWalletAddress",
    "cryptoPrivateKey",
];
/// Credentials and secrets.
pub const AUTHENTICATION: &[&str] = &[
    "password",
    "passwordHash",
    "privateKey",
    "apiKey",
    "accessToken",
    "refreshToken",
    "secret",
    "oauthToken",
];
/// Health data.
pub const HEALTH: &[&str] = &[
    "medicalRecordNumber",
    "healthInsuranceNumber",
    "diagnosis",
    "prescription",
    "biometric",
];

/// Sensitive authentication data (PCI DSS 3.3.1): never stored, not even encrypted.
/// Card verification codes, PINs and PIN blocks, full track (magnetic stripe / chip)
/// data.
pub const SENSITIVE_AUTHENTICATION_DATA: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "cav2",
    "cardSecurityCode",
    "cardVerificationCode",
    "cardVerificationValue",
    "securityCode",
    "pin",
    "pinBlock",
    "trackData",
    "track1",
    "track2",
    "track1Data",
    "track2Data",
    "fullTrackData",
    "magneticStripe",
    "magneticStripeData",
    "magstripe",
];

/// The lists that make up one purpose, by name.
///
/// The four product purposes (`userData`, `financialData`, `healthData`, `documents`)
/// and the list names themselves (`pii`, `financial`, `pciLevel1`, …) are known; any
/// other purpose has no auto-detection list (`None`). Purpose names are compared
/// exactly (they are key-ring names, where case matters).
pub fn lists_for_purpose(purpose: &str) -> Option<&'static [&'static [&'static str]]> {
    Some(match purpose {
        "userData" => &[PII, AUTHENTICATION],
        "financialData" => &[FINANCIAL, PCI_LEVEL1, PCI_LEVEL2],
        "healthData" => &[HEALTH],
        "documents" => &[FINANCIAL, PII],
        "pciLevel1" => &[PCI_LEVEL1],
        "pciLevel2" => &[PCI_LEVEL2],
        "pii" => &[PII],
        "financial" => &[FINANCIAL],
        "authentication" => &[AUTHENTICATION],
        "health" => &[HEALTH],
        _ => return None,
    })
}

/// The purposes [`lists_for_purpose`] knows, for error messages.
pub const KNOWN_PURPOSES: &[&str] = &[
    "userData",
    "financialData",
    "healthData",
    "documents",
    "pciLevel1",
    "pciLevel2",
    "pii",
    "financial",
    "authentication",
    "health",
];

/// Every named list with its name (scanning reports which list a name matched).
pub const ALL_LISTS: &[(&str, &[&str])] = &[
    ("pciLevel1", PCI_LEVEL1),
    ("pciLevel2", PCI_LEVEL2),
    ("pii", PII),
    ("financial", FINANCIAL),
    ("authentication", AUTHENTICATION),
    ("health", HEALTH),
];

/// True when `a` and `b` are the same name in any of the styles camelCase,
/// PascalCase, snake_case, kebab-case (or with spaces or dots): letters compared
/// case-insensitively, the separators `_`, `-`, ` ` and `.` ignored. Allocation-free.
pub fn same_name(a: &str, b: &str) -> bool {
    let mut x = a.chars().filter(|c| !is_separator(*c));
    let mut y = b.chars().filter(|c| !is_separator(*c));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(c), Some(d)) if c.to_lowercase().eq(d.to_lowercase()) => {}
            _ => return false,
        }
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '_' | '-' | ' ' | '.')
}

/// The normalized form of a name: lowercase, separators removed
/// (`phoneNumber`, `phone_number`, `phone-number`, `PhoneNumber` → `phonenumber`).
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !is_separator(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// True when `name` normalizes to `normalized` (already lowercase, without
/// separators). One pass and no allocation for ASCII names — the hot path of matching
/// selectors against every member of a document.
pub fn normalized_eq(name: &str, normalized: &str) -> bool {
    if !name.is_ascii() {
        return normalize(name) == normalized;
    }
    let mut want = normalized.bytes();
    for b in name.bytes() {
        if matches!(b, b'_' | b'-' | b' ' | b'.') {
            continue;
        }
        if want.next() != Some(b.to_ascii_lowercase()) {
            return false;
        }
    }
    want.next().is_none()
}

/// Runs `f` on the normalized form of `name`, built on the stack for short ASCII names.
fn with_normalized<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    if name.is_ascii() && name.len() <= buf.len() {
        let mut n = 0;
        for b in name.bytes() {
            if !matches!(b, b'_' | b'-' | b' ' | b'.') {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = b.to_ascii_lowercase();
                }
                n += 1;
            }
        }
        if let Some(Ok(s)) = buf.get(..n).map(std::str::from_utf8) {
            return f(s);
        }
    }
    f(&normalize(name))
}

const BIT_SAD: u8 = 1 << 7;

/// Normalized name → bit set: bit `i` = member of `ALL_LISTS[i]`, [`BIT_SAD`] =
/// sensitive authentication data. Built once.
fn table() -> &'static HashMap<String, u8> {
    static TABLE: OnceLock<HashMap<String, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: HashMap<String, u8> = HashMap::new();
        for (i, (_, list)) in ALL_LISTS.iter().enumerate() {
            for n in *list {
                *t.entry(normalize(n)).or_default() |= 1 << i;
            }
        }
        for n in SENSITIVE_AUTHENTICATION_DATA {
            *t.entry(normalize(n)).or_default() |= BIT_SAD;
        }
        t
    })
}

fn bits_of(name: &str) -> u8 {
    with_normalized(name, |n| table().get(n).copied().unwrap_or(0))
}

/// The names of the lists that make up `purpose` (the same composition as
/// [`lists_for_purpose`]; a test keeps them in step).
fn purpose_list_names(purpose: &str) -> Option<&'static [&'static str]> {
    Some(match purpose {
        "userData" => &["pii", "authentication"],
        "financialData" => &["financial", "pciLevel1", "pciLevel2"],
        "healthData" => &["health"],
        "documents" => &["financial", "pii"],
        "pciLevel1" => &["pciLevel1"],
        "pciLevel2" => &["pciLevel2"],
        "pii" => &["pii"],
        "financial" => &["financial"],
        "authentication" => &["authentication"],
        "health" => &["health"],
        _ => return None,
    })
}

/// The lists of `purpose` as a bit set (bit `i` = `ALL_LISTS[i]`); `None` without lists.
pub fn purpose_mask(purpose: &str) -> Option<u8> {
    purpose_list_names(purpose).map(|names| {
        names.iter().fold(0, |m, n| {
            m | ALL_LISTS
                .iter()
                .position(|(list, _)| list == n)
                .map_or(0, |i| 1 << i)
        })
    })
}

/// True when `name` is on one of the lists in `mask` (from [`purpose_mask`]).
pub fn in_mask(name: &str, mask: u8) -> bool {
    bits_of(name) & mask & !BIT_SAD != 0
}

/// True when `name` is in one of `lists`.
pub fn in_lists(name: &str, lists: &[&[&str]]) -> bool {
    lists.iter().any(|l| l.iter().any(|n| same_name(n, name)))
}

/// True when `name` is sensitive for `purpose` (false for a purpose without a list).
pub fn is_sensitive_for(purpose: &str, name: &str) -> bool {
    purpose_mask(purpose).is_some_and(|m| in_mask(name, m))
}

/// True when `name` names sensitive authentication data (never stored).
pub fn is_sensitive_authentication_data(name: &str) -> bool {
    bits_of(name) & BIT_SAD != 0
}

/// The first list (by name) that contains `name`, if any.
pub fn list_containing(name: &str) -> Option<&'static str> {
    let bits = bits_of(name);
    ALL_LISTS
        .iter()
        .enumerate()
        .find(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, (list, _))| *list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_naming_styles_match() {
        for style in ["phoneNumber", "phone_number", "phone-number", "PhoneNumber"] {
            assert!(same_name(style, "phoneNumber"), "{style}");
            assert_eq!(normalize(style), "phonenumber");
            assert!(is_sensitive_for("userData", style), "{style}");
        }
        assert!(same_name("PHONE_NUMBER", "phoneNumber"));
        assert!(!same_name("phoneNumbers", "phoneNumber"));
        assert!(!same_name("phone", "phoneNumber"));
        assert!(!same_name("", "x"));
        assert!(same_name("", "_"));
    }

    #[test]
    fn purposes_compose_the_lists() {
        assert!(is_sensitive_for("userData", "ssn"));
        assert!(is_sensitive_for("userData", "api_key"));
        assert!(!is_sensitive_for("userData", "iban"));
        assert!(is_sensitive_for("financialData", "iban"));
        assert!(is_sensitive_for("financialData", "card_number"));
        assert!(is_sensitive_for("financialData", "cardholder-name"));
        assert!(!is_sensitive_for("financialData", "email"));
        assert!(is_sensitive_for("documents", "email"));
        assert!(is_sensitive_for("documents", "salary"));
        assert!(is_sensitive_for("healthData", "Diagnosis"));
        assert!(!is_sensitive_for("customPurpose", "ssn"));
        for p in KNOWN_PURPOSES {
            assert!(lists_for_purpose(p).is_some(), "{p}");
            // The bit set and the lists agree on every listed name.
            let mask = purpose_mask(p).unwrap();
            for (_, list) in ALL_LISTS {
                for n in *list {
                    assert_eq!(
                        in_mask(n, mask),
                        in_lists(n, lists_for_purpose(p).unwrap()),
                        "{p}/{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn sensitive_authentication_data_names() {
        for n in [
            "cvv",
            "CVV",
            "cvc",
            "cvv2",
            "card_security_code",
            "securityCode",
            "pin",
            "track2",
            "track_data",
        ] {
            assert!(is_sensitive_authentication_data(n), "{n}");
        }
        for n in ["pinned", "cardNumber", "spin", "tracking"] {
            assert!(!is_sensitive_authentication_data(n), "{n}");
        }
    }

    #[test]
    fn normalized_comparison() {
        assert!(normalized_eq("Phone_Number", "phonenumber"));
        assert!(normalized_eq("phone-number", "phonenumber"));
        assert!(!normalized_eq("phone_numbers", "phonenumber"));
        assert!(!normalized_eq("phone", "phonenumber"));
        assert!(normalized_eq("Ünïcode_Name", &normalize("ünïcodeName")));
        let long = "a".repeat(100);
        assert!(is_sensitive_authentication_data("c_v_v"));
        assert!(!is_sensitive_authentication_data(&long));
        assert_eq!(purpose_mask("nope"), None);
        assert!(in_lists("IBAN", &[FINANCIAL]));
        assert!(!in_lists("IBAN", &[PII]));
    }

    #[test]
    fn the_service_code_is_card_data_under_financial_data() {
        for style in ["serviceCode", "service_code", "service-code", "ServiceCode"] {
            assert!(is_sensitive_for("financialData", style), "{style}");
            assert!(is_sensitive_for("pciLevel2", style), "{style}");
        }
        assert!(!is_sensitive_for("userData", "serviceCode"));
        assert!(
            !is_sensitive_authentication_data("serviceCode"),
            "storable, encrypted"
        );
        assert_eq!(list_containing("service_code"), Some("pciLevel2"));
    }

    #[test]
    fn list_lookup() {
        assert_eq!(list_containing("bank_account_number"), Some("financial"));
        assert_eq!(list_containing("cvv"), Some("pciLevel1"));
        assert_eq!(list_containing("nickname"), None);
    }
}
