//! Small helpers: time arithmetic, number formatting and escaping.

use crate::snapshot::{KeyFact, PolicyFact, Snapshot};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Whole days from `then` to `at` (0 when `then` is later).
pub fn age_days(at: i64, then: i64) -> i64 {
    at.saturating_sub(then).max(0) / DAY_MS
}

/// `12 days ago`, `today`.
pub fn days_ago(days: i64) -> String {
    match days {
        0 => "today".into(),
        1 => "1 day ago".into(),
        n => format!("{n} days ago"),
    }
}

/// RFC 3339 (UTC) of Unix milliseconds; the number itself if out of range.
pub fn when(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `18,224`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// How many `keys` satisfy `f`.
pub fn count(keys: &[KeyFact], f: impl Fn(&KeyFact) -> bool) -> usize {
    keys.iter().filter(|k| f(k)).count()
}

/// The policy of `purpose` (the default one when the snapshot lists none for it).
pub fn policy_for(s: &Snapshot, purpose: &str) -> PolicyFact {
    s.policies
        .iter()
        .find(|p| p.purpose == purpose)
        .cloned()
        .unwrap_or_else(|| default_policy(purpose))
}

/// KeyFlow's default policy (90-day rotation, 30-day grace, 7-day warning, 2^30
/// encryptions), for a purpose the snapshot gives no policy for.
pub fn default_policy(purpose: &str) -> PolicyFact {
    PolicyFact {
        purpose: purpose.to_owned(),
        rotation_days: 90,
        grace_days: 30,
        warn_days: 7,
        max_encryptions: 1 << 30,
        explicit: false,
    }
}

/// `text` with `&`, `<` and `>` as HTML entities (both renderers' outputs may be read
/// as HTML), and each character `more` maps replaced by what it maps to.
pub fn escape_with(text: &str, more: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match (ch, more(ch)) {
            (_, Some(replacement)) => out.push_str(replacement),
            ('&', None) => out.push_str("&amp;"),
            ('<', None) => out.push_str("&lt;"),
            ('>', None) => out.push_str("&gt;"),
            (c, None) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(18_224), "18,224");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(when(0), "1970-01-01T00:00:00Z");
        assert_eq!(age_days(DAY_MS * 3 - 1, 0), 2);
        assert_eq!(age_days(0, DAY_MS), 0);
        assert_eq!(days_ago(1), "1 day ago");
    }
}
