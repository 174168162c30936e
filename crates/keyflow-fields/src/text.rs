//! Sensitive values *inside* free text ("paid with 4532 0151 1283 0366 yesterday").
//!
//! [`find_in_text`] returns what fired and where (byte offsets), never the value. It is
//! stricter than the whole-value detectors of [`crate::detect`], because in prose a
//! number is rarely alone: order and tracking numbers, timestamps, UUIDs, hashes,
//! dates, amounts, IP addresses and version strings sit next to it. The rules
//! (docs/discovery.md has the reasons):
//!
//! - **Boundaries.** A number glued to a letter, a digit or `_` (`ID4532…`, a hex hash, a
//!   UUID) is never a finding; nor is one continued by `-`, `.`, `/` or `:` into more
//!   digits or letters (`2024-…`, `….pdf`, `12:30`), nor one after `#` (an identifier)
//!   or `+` (a phone). A group found is never cut out of a longer run: a card number
//!   in groups of four followed by a fifth group is part of something longer.
//! - **Card numbers (`pan`):** 13–19 digits, one unbroken run or groups separated by one
//!   consistent single space or dash in a card layout (4-4-4-4, 4-4-4-4-3, 4-6-5,
//!   4-6-4, …); a plausible issuer prefix for the length (Visa, Mastercard, Amex,
//!   Discover, Diners, JCB, UnionPay, Maestro, Mir); Luhn-valid; not one repeated digit.
//! - **SSNs:** `AAA-GG-SSSS` or `AAA GG SSSS` (one consistent separator; nine bare
//!   digits are not reported), area not 000, 666 or 900–999, group not 00, serial
//!   not 0000, not the two numbers the SSA voided (078-05-1120, 219-09-9999).
//! - **IBANs:** a known country code, exactly that country's length (ISO 13616
//!   registry), compact or in groups of four separated by single spaces, mod 97 = 1.
//! - **E-mails:** `local@domain.tld` as [`crate::detect::is_email`] accepts it, not
//!   continued by `/` or `:` (a URL or an scp path), not a file name (`logo@2x.png`).
//! - **Phones:** `+` and 8–15 digits (spaces, dashes, dots, parentheses), or a North
//!   American number in a punctuated form (`(415) 555-2671`, `415-555-2671`,
//!   `415.555.2671`, `415 555 2671`, with an optional leading `1`). Bare digit runs are
//!   not phones. A number that is a phone by these rules is a phone even when its
//!   digits pass the Luhn check: the `+` or the 3-3-4 punctuation says what it is, and
//!   no card layout looks like either.

use std::ops::Range;

use crate::detect::{is_email, luhn_valid, Detector};

/// One sensitive value found in a text: which detector fired and where (byte offsets
/// into the text, on character boundaries). Holds no part of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextFinding {
    /// What fired: [`Detector::CardNumber`], [`Detector::Ssn`], [`Detector::Iban`],
    /// [`Detector::Email`] or [`Detector::Phone`].
    pub detector: Detector,
    /// Where in the text.
    pub span: Range<usize>,
}

/// Every sensitive value in `text`, in order, non-overlapping. One linear pass per
/// detector family; nothing is compiled or allocated unless something is found.
///
/// ```
/// use keyflow_fields::detect::Detector;
/// use keyflow_fields::text::find_in_text;
///
/// let note = "paid with 4532 0151 1283 0366 yesterday, order #100234";
/// let found: Vec<_> = find_in_text(note).collect();
/// assert_eq!(found.len(), 1);
/// assert_eq!(found[0].detector, Detector::CardNumber);
/// assert_eq!(found[0].span, 10..29);
/// ```
pub fn find_in_text(text: &str) -> impl Iterator<Item = TextFinding> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    numbers(b, &mut found);
    ibans(b, &mut found);
    emails(text, &mut found);
    if found.len() > 1 {
        found.sort_by_key(|f| (f.span.start, usize::MAX - f.span.len()));
        let mut end = 0;
        found.retain(|f| {
            let keep = f.span.start >= end;
            if keep {
                end = f.span.end;
            }
            keep
        });
    }
    found.into_iter()
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// True when the value starting at `start` continues what precedes it. `sep` is the
/// separator inside the value (a space-separated value continues a digit before it).
fn glued_left(b: &[u8], start: usize, sep: Option<u8>) -> bool {
    let Some(&c) = start.checked_sub(1).and_then(|i| b.get(i)) else {
        return false;
    };
    let before = start.checked_sub(2).and_then(|i| b.get(i)).copied();
    let digit_before = before.is_some_and(|p| p.is_ascii_digit());
    match c {
        c if is_word(c) => true,
        b'+' | b'#' | b'@' => true,
        b'-' | b'.' | b'/' => before.is_some_and(is_word),
        b':' => digit_before,
        b' ' => sep == Some(b' ') && digit_before,
        _ => false,
    }
}

/// True when the value ending at `end` goes on after it.
fn glued_right(b: &[u8], end: usize, sep: Option<u8>) -> bool {
    let Some(&c) = b.get(end) else {
        return false;
    };
    let next = b.get(end + 1).copied();
    match c {
        c if is_word(c) => true,
        b'@' => true,
        b'-' | b'.' | b'/' => next.is_some_and(is_word),
        b':' => next.is_some_and(|n| n.is_ascii_digit()),
        b' ' => sep == Some(b' ') && next.is_some_and(|n| n.is_ascii_digit()),
        _ => false,
    }
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Most groups a card number, SSN or phone is written in.
const MAX_GROUPS: usize = 6;

/// Digit groups joined by one separator byte, the same throughout.
struct Chain {
    /// (start, end) of each group.
    groups: [(usize, usize); MAX_GROUPS],
    len: usize,
    /// The separator, when there are two groups or more.
    sep: Option<u8>,
    /// More groups follow than [`MAX_GROUPS`].
    overflow: bool,
}

impl Chain {
    /// The longest chain starting with the digit group at `start`, its separator one
    /// of `seps`.
    fn at(b: &[u8], start: usize, seps: &[u8]) -> Self {
        let mut chain = Chain {
            groups: [(0, 0); MAX_GROUPS],
            len: 1,
            sep: None,
            overflow: false,
        };
        let mut end = digits_end(b, start);
        chain.groups[0] = (start, end);
        while let (Some(&s), Some(&d)) = (b.get(end), b.get(end + 1)) {
            let same = chain.sep.map_or(seps.contains(&s), |c| c == s);
            if !same || !d.is_ascii_digit() {
                break;
            }
            if chain.len == MAX_GROUPS {
                chain.overflow = true;
                break;
            }
            chain.sep = Some(s);
            let next = digits_end(b, end + 1);
            chain.groups[chain.len] = (end + 1, next);
            chain.len += 1;
            end = next;
        }
        chain
    }

    fn groups(&self) -> &[(usize, usize)] {
        &self.groups[..self.len]
    }

    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups().iter().map(|(s, e)| e - s)
    }

    fn end(&self) -> usize {
        self.groups[self.len - 1].1
    }

    /// The digits as values 0–9 (at most 6 groups of a bounded length: caller checks).
    fn digits(&self, b: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for &(s, e) in self.groups() {
            out.extend(b[s..e].iter().map(|c| c - b'0'));
        }
    }

    fn free(&self, b: &[u8]) -> bool {
        !self.overflow
            && !glued_left(b, self.groups[0].0, self.sep)
            && !glued_right(b, self.end(), self.sep)
    }
}

/// Card numbers, SSNs and phones: one pass over the digits.
fn numbers(b: &[u8], out: &mut Vec<TextFinding>) {
    let mut digits = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let hit = match c {
            b'+' if !b.get(i.wrapping_sub(1)).is_some_and(|p| is_word(*p)) => {
                e164(b, i).map(|end| (Detector::Phone, end))
            }
            b'(' => nanp(b, i).map(|end| (Detector::Phone, end)),
            b'0'..=b'9' if i == 0 || !b[i - 1].is_ascii_digit() => nanp(b, i)
                .map(|end| (Detector::Phone, end))
                .or_else(|| ssn(b, i).map(|end| (Detector::Ssn, end)))
                .or_else(|| pan(b, i, &mut digits).map(|end| (Detector::CardNumber, end))),
            _ => None,
        };
        match hit {
            Some((detector, end)) => {
                out.push(TextFinding {
                    detector,
                    span: i..end,
                });
                i = end;
            }
            None if c.is_ascii_digit() => i = digits_end(b, i),
            None => i += 1,
        }
    }
}

/// A card number starting at `start`; returns its end.
fn pan(b: &[u8], start: usize, digits: &mut Vec<u8>) -> Option<usize> {
    let chain = Chain::at(b, start, b" -");
    if chain.len >= 2 && chain.free(b) && card_layout(&chain) {
        chain.digits(b, digits);
        if card_digits(digits) {
            return Some(chain.end());
        }
    }
    // One unbroken run: a space after it may start another number.
    let end = digits_end(b, start);
    if (13..=19).contains(&(end - start))
        && !glued_left(b, start, None)
        && !glued_right(b, end, None)
    {
        digits.clear();
        digits.extend(b[start..end].iter().map(|c| c - b'0'));
        if card_digits(digits) {
            return Some(end);
        }
    }
    None
}

/// The ways card numbers are printed: fours with a shorter last group, Amex 4-6-5,
/// Diners 4-6-4.
fn card_layout(chain: &Chain) -> bool {
    let lens: Vec<usize> = chain.lens().collect();
    let fours = lens.len() >= 3
        && lens[..lens.len() - 1].iter().all(|&l| l == 4)
        && (1..=4).contains(&lens[lens.len() - 1]);
    fours || lens == [4, 6, 5] || lens == [4, 6, 4]
}

/// Length, issuer prefix, Luhn, not one repeated digit.
fn card_digits(d: &[u8]) -> bool {
    (13..=19).contains(&d.len())
        && plausible_issuer(d)
        && d.iter().any(|x| *x != d[0])
        && luhn_valid(d)
}

/// Whether the first digits name a card network that issues numbers of this length.
/// Numbers starting with 0, 1, 7, 8 or 9 (timestamps, tracking and account numbers,
/// phones with a trunk prefix) are no card numbers.
fn plausible_issuer(d: &[u8]) -> bool {
    let prefix = |k: usize| d[..k].iter().fold(0u32, |n, x| n * 10 + u32::from(*x));
    let len = d.len();
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        2 => {
            len == 16 && ((2221..=2720).contains(&prefix(4)) || (2200..=2204).contains(&prefix(4)))
        }
        3 => match prefix(2) {
            34 | 37 => len == 15,
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len),
            _ => false,
        },
        5 => match prefix(2) {
            51..=55 => len == 16,
            50 | 56..=59 => (13..=19).contains(&len),
            _ => false,
        },
        6 => (16..=19).contains(&len) || matches!(prefix(2), 63 | 67),
        _ => false,
    }
}

/// `AAA-GG-SSSS` / `AAA GG SSSS` starting at `start`.
fn ssn(b: &[u8], start: usize) -> Option<usize> {
    let chain = Chain::at(b, start, b" -");
    if chain.len != 3 || !chain.lens().eq([3, 2, 4]) || !chain.free(b) {
        return None;
    }
    let num = |(s, e): (usize, usize)| {
        b[s..e]
            .iter()
            .fold(0u32, |n, c| n * 10 + u32::from(c - b'0'))
    };
    let [area, group, serial] = [0, 1, 2].map(|k| num(chain.groups[k]));
    let valid = area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && (area, group, serial) != (78, 5, 1120)
        && (area, group, serial) != (219, 9, 9999);
    valid.then(|| chain.end())
}

/// `+` then 8–15 digits in up to six groups, joined by a space, dash or dot, or by
/// parentheses around a group (`+1 (415) 555-2671`).
fn e164(b: &[u8], plus: usize) -> Option<usize> {
    let mut i = plus + 1;
    let (mut digits, mut groups, mut first) = (0, 0, None);
    loop {
        // A link: up to two of ` -.()`, no byte twice; the first group may open with `(`.
        let link_start = i;
        while i - link_start < 2 && b.get(i).is_some_and(|c| b" -.()".contains(c)) {
            if link_start < i && b[i] == b[i - 1] {
                break;
            }
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            i = link_start;
            break;
        }
        if groups == 0 && link_start < i && b[link_start..i] != *b"(" {
            return None;
        }
        let end = digits_end(b, i);
        first.get_or_insert(b[i]);
        digits += end - i;
        groups += 1;
        i = end;
        if groups > MAX_GROUPS || digits > 15 {
            return None;
        }
    }
    let end = i;
    let ok = (8..=15).contains(&digits) && first != Some(b'0') && !glued_right(b, end, None);
    ok.then_some(end)
}

/// A North American number in a punctuated form starting at `start` (a digit or `(`).
fn nanp(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    // An optional leading `1` and separator.
    let mut country_sep = None;
    if b.get(i) == Some(&b'1') && b.get(i + 1).is_some_and(|c| b" -.".contains(c)) {
        country_sep = Some(b[i + 1]);
        i += 2;
    }
    let paren = b.get(i) == Some(&b'(');
    if paren {
        i += 1;
    }
    let area = group(b, i, 3)?;
    i += 3;
    let sep1 = if paren {
        if b.get(i) != Some(&b')') {
            return None;
        }
        i += 1;
        if b.get(i) == Some(&b' ') {
            i += 1;
        }
        None
    } else {
        let s = *b.get(i).filter(|c| b" -.".contains(c))?;
        i += 1;
        Some(s)
    };
    let exchange = group(b, i, 3)?;
    i += 3;
    let sep2 = *b.get(i).filter(|c| b" -.".contains(c))?;
    i += 1;
    group(b, i, 4)?;
    i += 4;
    let consistent = sep1.is_none_or(|s| s == sep2)
        && country_sep.is_none_or(|s| paren && s == b' ' || s == sep2);
    let sep = country_sep.or(sep1).unwrap_or(sep2);
    let ok = consistent
        && area >= b'2'
        && exchange >= b'2'
        && !glued_left(b, start, Some(sep))
        && !glued_right(b, i, Some(sep2));
    ok.then_some(i)
}

/// Exactly `n` digits at `i` (not followed by another digit); returns the first.
fn group(b: &[u8], i: usize, n: usize) -> Option<u8> {
    (digits_end(b, i) == i + n).then(|| b[i])
}

/// IBANs: a country code at a word start, then exactly that country's length.
fn ibans(b: &[u8], out: &mut Vec<TextFinding>) {
    let mut i = 0;
    while i + 4 <= b.len() {
        let start = i;
        i += 1;
        if !(b[start].is_ascii_uppercase()
            && b[start + 1].is_ascii_uppercase()
            && b[start + 2].is_ascii_digit()
            && b[start + 3].is_ascii_digit())
            || (start > 0 && is_word(b[start - 1]))
        {
            continue;
        }
        let Some(len) = iban_length([b[start], b[start + 1]]) else {
            continue;
        };
        let mut compact = [0u8; 34];
        compact[..4].copy_from_slice(&b[start..start + 4]);
        let spaced = b.get(start + 4) == Some(&b' ');
        let (mut n, mut pos) = (4, start + 4);
        while n < len {
            if spaced && n % 4 == 0 {
                if b.get(pos) != Some(&b' ') {
                    break;
                }
                pos += 1;
            }
            match b.get(pos) {
                Some(&c) if c.is_ascii_uppercase() || c.is_ascii_digit() => compact[n] = c,
                _ => break,
            }
            n += 1;
            pos += 1;
        }
        if n == len
            && !glued_right(b, pos, spaced.then_some(b' '))
            && iban_checksum(&compact[..len])
        {
            out.push(TextFinding {
                detector: Detector::Iban,
                span: start..pos,
            });
            i = pos;
        }
    }
}

/// ISO 13616 mod 97 over a compact, uppercase IBAN.
pub(crate) fn iban_checksum(compact: &[u8]) -> bool {
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// The IBAN length of a country in the ISO 13616 registry (SWIFT, 2024), if it has one.
pub fn iban_length(country: [u8; 2]) -> Option<usize> {
    let len = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FK" | b"FO" | b"GL" | b"NL" | b"SD" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"MN" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"DJ" | b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"NI" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    };
    Some(len)
}

/// Top-level labels that are file extensions, not mail domains (`logo@2x.png`).
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "pdf",
];

/// E-mail addresses: around each `@`, the longest local part and domain.
fn emails(text: &str, out: &mut Vec<TextFinding>) {
    let b = text.as_bytes();
    let local_char = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain_char = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    let mut from = 0;
    while let Some(at) = b[from..].iter().position(|c| *c == b'@').map(|p| p + from) {
        from = at + 1;
        let mut start = at;
        while start > 0 && local_char(b[start - 1]) {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < b.len() && domain_char(b[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let continued = match b.get(end) {
            Some(b'/') | Some(b'@') => true,
            Some(b':') => b.get(end + 1).is_some_and(|c| c.is_ascii_alphanumeric()),
            _ => false,
        };
        let candidate = &text[start..end];
        let file = candidate
            .rsplit_once('.')
            .is_some_and(|(_, tld)| FILE_EXTENSIONS.iter().any(|x| tld.eq_ignore_ascii_case(x)));
        if start < at && !continued && !file && is_email(candidate) {
            out.push(TextFinding {
                detector: Detector::Email,
                span: start..end,
            });
            from = end;
        }
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
