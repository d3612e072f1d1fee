//! Times as the store keeps them (RFC 3339 text) and as the APIs send them (Unix ns).

/// Now, Unix nanoseconds.
pub fn now_nanos() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// Unix nanoseconds of an RFC 3339 time; 0 when absent or unreadable.
pub fn nanos(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(
        rfc3339.trim(),
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp_nanos() as i64)
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_nanoseconds() {
        assert_eq!(nanos("1970-01-01T00:00:01.5Z"), 1_500_000_000);
        assert_eq!(nanos(""), 0);
        assert_eq!(nanos("yesterday"), 0);
        assert!(now_nanos() > nanos("2026-01-01T00:00:00Z"));
    }
}
