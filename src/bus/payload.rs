//! The plain-text fields of what travels on the bus: event times and session
//! ids. (The Prompt payload and its validation live in [`crate::prompt`],
//! below the pipeline, which queues prompts too.) Pure functions only.

use time::OffsetDateTime;

/// The current time as RFC 3339 (UTC, milliseconds), the `at` of every event.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A fresh random session id (128 bits, hex): always a valid one.
pub fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Is `id` acceptable as a client-chosen session id (for resuming)?
pub fn valid_session_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_unique_hex() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(valid_session_id(&a));
    }

    #[test]
    fn session_ids_for_resume() {
        assert!(valid_session_id("0123456789abcdef"));
        assert!(valid_session_id("user-42_tab-1"));
        assert!(!valid_session_id("short"));
        assert!(!valid_session_id("has space in it"));
        assert!(!valid_session_id("dots.are.subject.separators"));
        assert!(!valid_session_id(&"x".repeat(65)));
    }

    #[test]
    fn timestamps_are_rfc3339_millis() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("t");
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }
}
