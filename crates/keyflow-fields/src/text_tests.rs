#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

/// (detector name, matched text) of every finding.
fn found(text: &str) -> Vec<(&'static str, &str)> {
    find_in_text(text)
        .map(|f| (f.detector.name(), &text[f.span]))
        .collect()
}

fn none(text: &str) {
    assert_eq!(found(text), Vec::<(&str, &str)>::new(), "{text:?}");
}

/// Each text holds exactly one finding: `detector` matching the given part.
fn each_found(detector: &str, cases: &[(&str, &str)]) {
    for &(text, matched) in cases {
        assert_eq!(found(text), [(detector, matched)], "{text}");
    }
}

/// No text yields a finding of `detector` (others may match).
fn none_by(detector: &str, texts: &[&str]) {
    for &text in texts {
        assert!(
            !found(text).iter().any(|(d, _)| *d == detector),
            "{text}: {:?}",
            found(text)
        );
    }
}

#[test]
fn card_numbers_in_sentences() {
    each_found(
        "cardNumber",
        &[
            (
                "paid with 4532 0151 1283 0366 yesterday",
                "4532 0151 1283 0366",
            ),
            ("paid with 4532015112830366 yesterday", "4532015112830366"),
            ("card: 4532-0151-1283-0366.", "4532-0151-1283-0366"),
            ("amex 3782 822463 10005, thanks", "3782 822463 10005"),
            ("(6011111111111117)", "6011111111111117"),
            ("pan=5555555555554444;", "5555555555554444"),
            ("mir 2200 0000 0000 0004 ok", "2200 0000 0000 0004"),
            ("\"4111111111111111\"", "4111111111111111"),
            (
                "Kartennummer 4532015112830366 für Müller",
                "4532015112830366",
            ),
        ],
    );
    assert_eq!(
        found("4532015112830366 and 4111 1111 1111 1111"),
        [
            ("cardNumber", "4532015112830366"),
            ("cardNumber", "4111 1111 1111 1111")
        ]
    );
    // Two numbers next to each other in prose stay two numbers.
    assert_eq!(
        found("4532015112830366 415-555-2671"),
        [
            ("cardNumber", "4532015112830366"),
            ("phone", "415-555-2671")
        ]
    );
}

#[test]
fn card_near_misses() {
    none_by(
        "cardNumber",
        &[
            "ref 4532 0151 1283 0367 ",             // Luhn
            "order 45320151128303661 shipped",      // 17 digits, Visa is 13/16/19
            "id 94001000000000000000001 sent",      // USPS-like 23 digits
            "ts 1700000000123 ms",                  // ms timestamp (prefix 1)
            "acct 7992739871300001 closed",         // Luhn-valid, no network starts with 7
            "Order #4532015112830366",              // an identifier after '#'
            "x4532015112830366",                    // glued to a letter
            "4532015112830366abc",                  // glued to a letter
            "12345532015112830366",                 // embedded in a longer run
            "2024-4532015112830366",                // continued by a dash
            "4532015112830366-01",                  // continued by a dash
            "4532 0151 1283 0366 7777 done",        // a fifth group: something longer
            "1111 4532 0151 1283 0366",             // a group before: something longer
            "4532 0151-1283 0366",                  // mixed separators
            "4532  0151  1283  0366",               // double spaces
            "45 3201 5112 8303 66",                 // no card layout
            "file 4532015112830366.pdf",            // a file name
            "v4532015112830366",                    // a version-like token
            "0000 0000 0000 0000",                  // one repeated digit
            "total 4532015112830366.25 EUR",        // an amount with decimals
            "550e8400-e29b-41d4-a716-446655440000", // a UUID
            "d41d8cd98f00b204e9800998ecf8427e",     // an MD5
            "+4532015112830366",                    // after '+': a phone's digits
        ],
    );
}

#[test]
fn ssns_in_sentences() {
    assert_eq!(found("SSN 123-45-6789, DOB"), [("ssn", "123-45-6789")]);
    assert_eq!(found("ssn: 123 45 6789"), [("ssn", "123 45 6789")]);
    none_by(
        "ssn",
        &[
            "ssn 123456789", // bare: not reported
            "000-45-6789",
            "666-45-6789",
            "912-45-6789",
            "123-00-6789",
            "123-45-0000",
            "078-05-1120",      // voided by the SSA
            "123-45 6789",      // mixed
            "9123-45-6789",     // longer first group
            "123-45-6789-0",    // continued
            "2023-123-45-6789", // continued before
            "123-45-67890",
            "part 123-45-6789a",
        ],
    );
}

#[test]
fn ibans_in_sentences() {
    each_found(
        "iban",
        &[
            ("to DE89370400440532013000 today", "DE89370400440532013000"),
            (
                "IBAN: GB82 WEST 1234 5698 7654 32.",
                "GB82 WEST 1234 5698 7654 32",
            ),
            (
                "(FR1420041010050500013M02606)",
                "FR1420041010050500013M02606",
            ),
            ("NO9386011117947 ok", "NO9386011117947"),
            ("BE68 5390 0754 7034, merci", "BE68 5390 0754 7034"),
        ],
    );
    none_by(
        "iban",
        &[
            "DE89370400440532013001",          // checksum
            "DE8937040044053201300",           // one short for DE
            "DE893704004405320130001",         // one long for DE
            "XX89370400440532013000",          // no such country
            "de89370400440532013000",          // lower case
            "ADE89370400440532013000",         // glued
            "GB82 WEST 12345698 7654 32",      // irregular groups
            "ref DE89-3704-0044-0532-0130-00", // dashes
        ],
    );
    assert_eq!(iban_length(*b"DE"), Some(22));
    assert_eq!(iban_length(*b"US"), None);
}

#[test]
fn emails_in_sentences() {
    each_found(
        "email",
        &[
            ("write to ada@example.com.", "ada@example.com"),
            ("<a.b+tag@sub.example.co.uk>", "a.b+tag@sub.example.co.uk"),
            ("mailto:ops@example.org?subject=x", "ops@example.org"),
            ("4155552671@vtext.com", "4155552671@vtext.com"),
        ],
    );
    none_by(
        "email",
        &[
            "logo@2x.png",
            "pkg@1.2.3",
            "@mention here",
            "user@localhost",
            "git@github.com:org/repo.git",
            "https://example.com/@user/post",
            "a@b",
        ],
    );
}

#[test]
fn phones_in_sentences() {
    each_found(
        "phone",
        &[
            ("call +1 415 555 2671 now", "+1 415 555 2671"),
            ("call +14155552671", "+14155552671"),
            ("tel +44 20 7946 0958.", "+44 20 7946 0958"),
            ("tel +1 (415) 555-2671", "+1 (415) 555-2671"),
            ("call (415) 555-2671 now", "(415) 555-2671"),
            ("call (415)555-2671", "(415)555-2671"),
            ("call 415-555-2671.", "415-555-2671"),
            ("call 415.555.2671", "415.555.2671"),
            ("call 415 555 2671", "415 555 2671"),
            ("call 1-800-555-0199", "1-800-555-0199"),
            ("call 1 (800) 555-0199", "1 (800) 555-0199"),
        ],
    );
    none_by(
        "phone",
        &[
            "call 4155552671", // bare digits
            "call 415-555-26710",
            "call 015-555-2671", // area code starts with 0
            "call 415-155-2671", // exchange starts with 1
            "call 415-555.2671", // mixed
            "ip 192.168.100.200",
            "v415.555.2671",
            "+0 415 555 2671",
            "+1234567",          // 7 digits
            "+1234567890123456", // 16 digits
            "2024-01-15 12:30:45",
            "x+14155552671",
        ],
    );
}

#[test]
fn luhn_valid_phones_are_phones() {
    // Luhn-valid with a Visa prefix and length; with '+' it is a phone.
    let s = text_of(&with_check_digit(vec![4, 9, 1, 5, 1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(found(&format!("{s} ")), [("cardNumber", s.as_str())]);
    let spaced = format!("+{} {} {}", &s[..2], &s[2..6], &s[6..]);
    assert_eq!(found(&spaced), [("phone", spaced.as_str())]);
    let compact = format!("+{s}");
    assert_eq!(found(&compact), [("phone", compact.as_str())]);
}

#[test]
fn everyday_text_is_clean() {
    for text in [
        "",
        "nothing to see",
        "Order ORD-2024-000123 shipped 2024-01-15 via UPS 1Z999AA10123456784",
        "Invoice #100234: $1,234.56 due 15/01/2024, ref 7946-0958",
        "build 1.22.333 on 10.0.0.1:8443 at 1700000000 (1700000000123 ms)",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "FedEx 123456789012, USPS 9400 1000 0000 0000 0000 00",
        "room 101, floor 3, 42 people, 2.5 kg, 99.9 %",
        "KF1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        none(text);
    }
}

#[test]
fn spans_are_char_boundaries_in_unicode_text() {
    let text = "Zahlung €12 — Karte 4532015112830366 — ✓ ada@example.com";
    for f in find_in_text(text) {
        assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
    }
    assert_eq!(found(text).len(), 2);
}

/// Digits of a random number with a Luhn check digit appended.
fn with_check_digit(mut digits: Vec<u8>) -> Vec<u8> {
    digits.push(0);
    let d = (0..10).find(|&d| {
        *digits.last_mut().unwrap() = d;
        luhn_valid(&digits)
    });
    *digits.last_mut().unwrap() = d.unwrap();
    digits
}

fn text_of(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Realistic near misses: none may be reported as anything.
fn near_miss() -> impl Strategy<Value = String> {
    prop_oneof![
        (1_000_000_000_000u64..2_000_000_000_000).prop_map(|t| t.to_string()),
        (1_000_000_000u64..2_000_000_000).prop_map(|t| format!("at {t}")),
        any::<u128>().prop_map(|u| {
            let h = format!("{u:032x}");
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }),
        prop::collection::vec(any::<u8>(), 16..=32).prop_map(|b| hex(&b)),
        (100_000u32..99_999_999).prop_map(|n| format!("ORD-{n}")),
        (0u8..10, 1_000_000_000_000u64..9_999_999_999_999_999)
            .prop_map(|(p, n)| format!("#{p}{n}")),
        (0u64..1_000_000_000_000_000_000).prop_map(|n| format!("94{n:020}")),
        (100_000_000_000u64..999_999_999_999).prop_map(|n| format!("FedEx {n}")),
        (1990u32..2040, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y}-{m:02}-{d:02}")),
        (1u32..29, 1u32..13, 1990u32..2040).prop_map(|(d, m, y)| format!("{d:02}/{m:02}/{y}")),
        (0u64..10_000_000, 0u32..100).prop_map(|(a, c)| format!("${a}.{c:02}")),
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        (0u32..100, 0u32..1000, 0u32..10_000).prop_map(|(a, b, c)| format!("v{a}.{b}.{c}")),
        // A valid card number inside a longer run of digits.
        (
            prop::collection::vec(0u8..10, 15),
            prop::collection::vec(0u8..10, 1..4),
            prop::collection::vec(0u8..10, 0..4)
        )
            .prop_map(|(body, pre, post)| {
                let mut d = vec![4];
                d.extend(body);
                let pan = with_check_digit(d);
                format!("{}{}{}", text_of(&pre), text_of(&pan), text_of(&post))
            })
            // The longer run may itself be a valid card number by chance (a 19-digit Visa).
            .prop_filter("the whole run is a card number", |s| {
                !card_digits(&s.bytes().map(|c| c - b'0').collect::<Vec<_>>())
            }),
        // A valid card number in groups of four, then a fifth group.
        prop::collection::vec(0u8..10, 14).prop_map(|body| {
            let mut d = vec![4];
            d.extend(body);
            let pan = with_check_digit(d);
            let s = text_of(&pan);
            format!("{} {} {} {} 1234", &s[..4], &s[4..8], &s[8..12], &s[12..])
        }),
    ]
}

proptest! {
    #[test]
    fn near_misses_are_not_reported(miss in near_miss(), pre in "[a-z]{0,8}", post in "[a-z]{0,8}") {
        for text in [miss.clone(), format!("{pre} {miss} {post}"), format!("({miss}), ")] {
            prop_assert!(found(&text).is_empty(), "{text:?}: {:?}", found(&text));
        }
    }

    #[test]
    fn card_numbers_are_found_in_any_layout(
        body in prop::collection::vec(0u8..10, 14),
        layout in 0usize..3,
        pre in "[A-Za-z ,:(]{0,10}",
        post in "(\\. |[ ,)])[a-z ]{0,10}",
    ) {
        let mut d = vec![4];
        d.extend(body);
        let s = text_of(&with_check_digit(d));
        let pan = match layout {
            0 => s,
            1 => format!("{} {} {} {}", &s[..4], &s[4..8], &s[8..12], &s[12..]),
            _ => format!("{}-{}-{}-{}", &s[..4], &s[4..8], &s[8..12], &s[12..]),
        };
        let pre = if pre.ends_with(|c: char| c.is_ascii_alphabetic()) { format!("{pre} ") } else { pre };
        let text = format!("{pre}{pan}{post}");
        prop_assert_eq!(found(&text), vec![("cardNumber", pan.as_str())]);
    }

    #[test]
    fn luhn_valid_international_phones_are_phones(
        cc in 1u8..10,
        rest in prop::collection::vec(0u8..10, 10..13),
    ) {
        let mut d = vec![cc];
        d.extend(rest);
        let s = text_of(&with_check_digit(d));
        for phone in [format!("+{s}"), format!("+{} {} {}", &s[..2], &s[2..6], &s[6..])] {
            let text = format!("call {phone} today");
            prop_assert_eq!(found(&text), vec![("phone", phone.as_str())]);
        }
    }
}

proptest! {
    /// Any text: no panic; spans in order, non-overlapping, on character boundaries.
    #[test]
    fn any_text_gives_ordered_spans_on_boundaries(
        text in prop_oneof![any::<String>(), "[0-9 +()\\-.@#:/A-Za-z_é€]{0,80}"],
    ) {
        let mut end = 0;
        for f in find_in_text(&text) {
            prop_assert!(f.span.start >= end && f.span.start < f.span.end);
            prop_assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
            end = f.span.end;
        }
    }
}
