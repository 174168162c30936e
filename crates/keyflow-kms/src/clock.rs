//! Wall-clock time, passed in as a value so tests can control it.

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn now_millis(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

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
