//! Time, passed in as a value so tests can control it: the [`Clock`] trait and its two
//! providers live in `keyflow_core::clock` (re-exported here); this module adds the
//! RFC 3339 formatting that key metadata and reports use.

pub use keyflow_core::clock::{Clock, ManualClock, SystemClock};

/// Formats Unix milliseconds as RFC 3339 (UTC), e.g. `2026-11-28T10:26:08.123Z`.
pub fn rfc3339(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| millis.to_string())
}

/// Parses an RFC 3339 instant (e.g. `2027-03-01T00:00:00Z`) to Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_861_568_123), "2026-11-28T10:26:08.123Z");
        assert!(SystemClock.now_millis() > 1_700_000_000_000);
        assert_eq!(
            parse_rfc3339("2026-11-28T10:26:08.123Z"),
            Some(1_795_861_568_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-28T11:26:08.123+01:00"),
            Some(1_795_861_568_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
