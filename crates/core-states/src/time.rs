//! The one timestamp form of the project.
//!
//! Stored form (SQLite text): `YYYY-MM-DD HH:MM:SS.SSS`, UTC. It sorts and compares correctly
//! against SQLite's own `datetime('now')` (`YYYY-MM-DD HH:MM:SS`), so documented queries such as
//! `started_at > datetime('now','-7 days')` work. Exported and serialised form: RFC 3339 with
//! milliseconds and `Z`. Readers accept both, plus the legacy forms older data holds.

use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, SubsecRound, Utc};

/// `YYYY-MM-DD HH:MM:SS.SSS`: the stored form.
pub fn to_db(ts: DateTime<Utc>) -> String {
    // The format is parsed once, not on every call (every write stamps at least one row).
    static STORED: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
        StrftimeItems::new("%Y-%m-%d %H:%M:%S%.3f").parse_to_owned().unwrap_or_default()
    });
    ts.format_with_items(STORED.iter()).to_string()
}

/// RFC 3339 with milliseconds and `Z`: the exported form.
pub fn to_rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Truncates to the millisecond, the precision everything is stored with.
pub fn millis(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.trunc_subsecs(3)
}

/// Parses any timestamp form the project has met: RFC 3339 (any offset), `YYYY-MM-DD HH:MM:SS[.fff]`
/// and `YYYY-MM-DDTHH:MM:SS[.fff]` without offset (taken as UTC), or a bare date (midnight UTC).
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    if let Some(ts) = parse_stored(text) {
        return Some(ts);
    }
    let text = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Some(ts.with_timezone(&Utc));
    }
    for format in
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
    {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    if let Ok(ts) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(ts.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

/// Parses exactly the stored form `YYYY-MM-DD HH:MM:SS.SSS`, without a format parser (readers
/// of many rows meet it on every row). None for any other text or an impossible date.
pub fn parse_stored(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let shape = b.len() == 23
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.';
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time =
        NaiveTime::from_hms_milli_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?)?;
    Some(date.and_time(time).and_utc())
}

/// Serde helpers: serialise as RFC 3339 with milliseconds, read any form [`parse`] accepts.
pub mod serde_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as RFC 3339 with milliseconds and `Z`.
    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_rfc3339(*ts))
    }

    /// Reads any timestamp form [`super::parse`] accepts.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_db: &str) {
        let ts = parse(input).unwrap_or_else(|| panic!("{input} should parse"));
        assert_eq!(to_db(ts), expected_db, "{input}");
    }

    #[test]
    fn parses_every_form_to_one_stored_form() {
        check("2026-11-21 20:52:30", "2026-11-21 20:52:30.000");
        check("2026-11-21T20:52:30.690Z", "2026-11-21 20:52:30.690");
        check("2026-11-21T22:52:30.690+02:00", "2026-11-21 20:52:30.690");
        check("2026-11-21 20:52:30.5", "2026-11-21 20:52:30.500");
        check("2026-11-21T20:52:30", "2026-11-21 20:52:30.000");
        check("2026-11-21", "2026-11-21 00:00:00.000");
        assert!(parse("yesterday").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn stored_form_sorts_against_sqlite_datetime() {
        let ours = to_db(parse("2026-11-21T20:52:30.690Z").unwrap_or_default());
        assert!(ours.as_str() > "2026-11-21 20:52:30");
        assert!(ours.as_str() < "2026-11-21 20:52:31");
        assert!(ours.as_str() > "2026-11-20 23:59:59");
    }

    #[test]
    fn exported_form_is_rfc3339_with_millis_and_z() {
        let ts = parse("2026-11-21 20:52:30").unwrap_or_default();
        assert_eq!(to_rfc3339(ts), "2026-11-21T20:52:30.000Z");
    }

    proptest::proptest! {
        /// The fast reader of the stored form agrees with the general parser on any instant,
        /// and refuses what the general parser refuses.
        #[test]
        fn stored_form_fast_path_agrees_with_the_parser(ms in 0i64..253_402_300_799_999) {
            let ts = DateTime::from_timestamp_millis(ms).unwrap_or_default();
            let stored = to_db(ts);
            proptest::prop_assert_eq!(parse_stored(&stored), Some(ts));
            let slow = NaiveDateTime::parse_from_str(&stored, "%Y-%m-%d %H:%M:%S%.f").map(|n| n.and_utc()).ok();
            proptest::prop_assert_eq!(slow, Some(ts));
        }
    }

    #[test]
    fn the_fast_path_refuses_impossible_dates_and_other_shapes() {
        for text in [
            "2026-02-30 10:00:00.000",
            "2026-11-21 24:00:00.000",
            "2026-11-21T20:52:30.690",
            "2026-11-21 20:52:30",
            "2026-1a-21 20:52:30.690",
        ] {
            assert_eq!(parse_stored(text), None, "{text}");
        }
    }
}
