//! The one timestamp form of the project.
//!
//! Stored form (SQLite text): `YYYY-MM-DD HH:MM:SS.SSS`, UTC. It sorts and compares correctly
//! against SQLite's own `datetime('now')` (`YYYY-MM-DD HH:MM:SS`), so documented queries such as
//! `started_at > datetime('now','-7 days')` work. Exported and serialised form: RFC 3339 with
//! milliseconds and `Z`. Readers accept both, plus the legacy forms older data holds.

use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, SubsecRound, Timelike,
    Utc,
};

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
/// It reads stored and legacy text as it is; input from a person goes through [`Bound::parse`],
/// which also checks the years the stored form can hold.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    if let Some(ts) = parse_stored(text) {
        return Some(ts);
    }
    let text = text.trim();
    parse_instant(text).or_else(|| parse_date(text)?.and_hms_opt(0, 0, 0).map(|n| n.and_utc()))
}

/// Any of [`parse`]'s forms that names an instant (a time of day is given).
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
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
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").ok().map(|ts| ts.with_timezone(&Utc))
}

/// A bare date in any spelling chrono reads as `%Y-%m-%d` (`2026-01-05`, `2026-1-5`, `+2026-01-05`).
fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// The first year the stored form can hold: it writes the year with exactly four digits.
pub const MIN_YEAR: i32 = 0;
/// The last year the stored form can hold.
pub const MAX_YEAR: i32 = 9999;

/// Why a date or timestamp given as input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text is no date or timestamp form [`parse`] knows.
    #[error("\"{text}\" is not a date or timestamp (try 2026-11-21 or 2026-11-21T10:00:00Z)")]
    Unreadable { text: String },
    /// The date or instant (in UTC) lies outside years 0000 to 9999, which the stored form holds.
    #[error("\"{text}\" is outside the years 0000 to 9999 that timestamps are stored with")]
    OutOfRange { text: String },
    /// The instant is in a leap second (`23:59:60`), which no stored timestamp is in: time is
    /// kept as UTC without leap seconds, so there is no stored form for it to compare with.
    #[error("\"{text}\" is in a leap second (:60), which timestamps are not stored with; give the second before or after it")]
    LeapSecond { text: String },
}

/// One end of a time range given as input: a bare date stands for the whole day (UTC), any
/// other form for one instant. Both lie within years [`MIN_YEAR`] to [`MAX_YEAR`], so
/// [`first`](Self::first) and [`last`](Self::last) always have a stored form that sorts right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A bare date (`2026-01-05`, `2026-1-5`): the whole day.
    Date(NaiveDate),
    /// A timestamp, to the millisecond.
    Instant(DateTime<Utc>),
}

impl Bound {
    /// Reads a date or timestamp typed by a person or a script. A text is a bare date exactly
    /// when it has no time of day, however its digits are written.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let trimmed = text.trim();
        let bound = match parse_stored(trimmed).or_else(|| parse_instant(trimmed)) {
            Some(ts) => Self::Instant(ts),
            None => match parse_date(trimmed) {
                Some(date) => Self::Date(date),
                None => return Err(TimeError::Unreadable { text: text.to_owned() }),
            },
        };
        let in_range = |ts: DateTime<Utc>| (MIN_YEAR..=MAX_YEAR).contains(&ts.year());
        if !in_range(bound.first()) || !in_range(bound.last()) {
            return Err(TimeError::OutOfRange { text: text.to_owned() });
        }
        // chrono reads `:60` as the second's 1,000,000,000th nanosecond and on.
        if matches!(bound, Self::Instant(ts) if ts.nanosecond() >= 1_000_000_000) {
            return Err(TimeError::LeapSecond { text: text.to_owned() });
        }
        Ok(bound)
    }

    /// The first instant the bound covers, to the millisecond timestamps are stored with:
    /// midnight of a date, else the instant (rounded up: nothing before it is covered).
    pub fn first(&self) -> DateTime<Utc> {
        match self {
            Self::Date(date) => date.and_time(NaiveTime::MIN).and_utc(),
            Self::Instant(ts) => {
                let whole = millis(*ts);
                if whole == *ts {
                    whole
                } else {
                    whole.checked_add_signed(chrono::TimeDelta::milliseconds(1)).unwrap_or(whole)
                }
            }
        }
    }

    /// The last instant the bound covers, to the millisecond: 23:59:59.999 of a date (so
    /// `9999-12-31` needs no next day), else the instant (rounded down).
    pub fn last(&self) -> DateTime<Utc> {
        match self {
            Self::Date(date) => date
                .and_hms_milli_opt(23, 59, 59, 999)
                .map_or_else(|| self.first(), |n| n.and_utc()),
            Self::Instant(ts) => millis(*ts),
        }
    }
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
            .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: \"{text}\"")))
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

    /// Every spelling of a bare date is a date (the whole day); any time of day makes an instant.
    #[test]
    fn a_bound_is_a_date_exactly_when_it_has_no_time_of_day() {
        let day = |y, m, d| Bound::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default());
        for (text, expected) in [
            ("2026-01-05", day(2026, 1, 5)),
            ("2026-1-5", day(2026, 1, 5)),
            ("2026-01-5", day(2026, 1, 5)),
            (" 2026-1-05\t", day(2026, 1, 5)),
            ("+2026-01-05", day(2026, 1, 5)),
            ("0000-01-01", day(0, 1, 1)),
            ("9999-12-31", day(9999, 12, 31)),
        ] {
            assert_eq!(Bound::parse(text), Ok(expected), "{text:?}");
        }
        for text in ["2026-1-5 10:00", "2026-01-05T00:00:00Z", "2026-01-05 00:00:00.000"] {
            assert!(matches!(Bound::parse(text), Ok(Bound::Instant(_))), "{text:?}");
        }
    }

    #[test]
    fn a_bound_outside_years_0000_to_9999_or_unreadable_is_refused() {
        for text in [
            "+10000-01-01",
            "-0001-12-31",
            "9999-12-31T23:00:00-05:00",
            "0000-01-01T00:30:00+01:00",
            "+10000-01-01 00:00:00",
            "9999-12-31T23:59:59.9995Z",
        ] {
            assert!(
                matches!(Bound::parse(text), Err(TimeError::OutOfRange { .. })),
                "{text:?}: {:?}",
                Bound::parse(text)
            );
        }
        for text in ["", " ", "yesterday", "2026-13-01", "2026-02-30", "10000-01-01", "2026-01-05x"]
        {
            assert!(matches!(Bound::parse(text), Err(TimeError::Unreadable { .. })), "{text:?}");
        }
    }

    /// A leap second in every spelling an instant is read in (any offset, a fraction, the stored
    /// form's shape) is refused as such; the seconds around it are bounds.
    #[test]
    fn a_bound_in_a_leap_second_is_refused() {
        for text in [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2017-01-01T00:59:60+01:00",
            "2026-12-31 23:59:60",
            "2026-12-31T23:59:60",
            "2026-12-31 23:59:60.999",
            "2026-12-31 23:59:60+00:00",
            " 2026-06-30T23:59:60.000Z ",
        ] {
            assert!(
                matches!(Bound::parse(text), Err(TimeError::LeapSecond { .. })),
                "{text:?}: {:?}",
                Bound::parse(text)
            );
        }
        for text in ["2016-12-31T23:59:59.999Z", "2017-01-01T00:00:00Z", "2026-12-31 23:59:59.999"]
        {
            assert!(matches!(Bound::parse(text), Ok(Bound::Instant(_))), "{text:?}");
        }
    }

    #[test]
    fn the_last_day_of_9999_ends_at_its_last_millisecond_in_stored_form() {
        let b = Bound::parse("9999-12-31").unwrap_or(Bound::Date(NaiveDate::MIN));
        assert_eq!(to_db(b.first()), "9999-12-31 00:00:00.000");
        assert_eq!(to_db(b.last()), "9999-12-31 23:59:59.999");
        let sub_ms =
            Bound::parse("2026-01-05T10:00:00.0005Z").unwrap_or(Bound::Date(NaiveDate::MIN));
        assert_eq!(to_db(sub_ms.first()), "2026-01-05 10:00:00.001");
        assert_eq!(to_db(sub_ms.last()), "2026-01-05 10:00:00.000");
    }

    /// The date written with or without zero padding, a sign or surrounding blanks.
    fn spellings(date: NaiveDate) -> Vec<String> {
        let (y, m, d) = (date.year(), date.month(), date.day());
        vec![
            format!("{y:04}-{m:02}-{d:02}"),
            format!("{y:04}-{m}-{d}"),
            format!("+{y:04}-{m}-{d:02}"),
            format!(" {y:04}-{m:02}-{d} "),
        ]
    }

    proptest::proptest! {
        /// For any day of years 0000 to 9999 in any spelling and any stored instant, comparing
        /// stored text against the bound's first and last instants is comparing days: the whole
        /// day is in, the days around it are out (also at both ends of the domain).
        #[test]
        fn a_date_bound_selects_exactly_its_day_in_stored_text(
            day in proptest::prop_oneof![
                proptest::strategy::Just(0i64),
                proptest::strategy::Just(DAYS - 1),
                0..DAYS,
            ],
            near in -DAY_MS..2 * DAY_MS,
            anywhere in 0..DAYS * DAY_MS,
            close in proptest::bool::weighted(0.8),
            spelling in 0usize..4,
        ) {
            let date = NaiveDate::from_ymd_opt(0, 1, 1).unwrap_or_default() + chrono::Days::new(day as u64);
            let text = spellings(date)[spelling].clone();
            proptest::prop_assert_eq!(Bound::parse(&text), Ok(Bound::Date(date)), "{:?}", text);
            let bound = Bound::Date(date);
            // Milliseconds since 0000-01-01, near the day or anywhere, kept inside the domain.
            let since_year_0 = if close { (day * DAY_MS + near).clamp(0, DAYS * DAY_MS - 1) } else { anywhere };
            let t = DateTime::from_timestamp_millis(since_year_0 - YEAR_0_MS).unwrap_or_default();
            let stored = to_db(t);
            proptest::prop_assert_eq!(stored.as_str() >= to_db(bound.first()).as_str(), t.date_naive() >= date, "{}", stored);
            proptest::prop_assert_eq!(stored.as_str() <= to_db(bound.last()).as_str(), t.date_naive() <= date, "{}", stored);
        }
    }

    /// Days from 0000-01-01 to 10000-01-01, a day in milliseconds, and 0000-01-01 in Unix ms.
    const DAYS: i64 = 3_652_425;
    const DAY_MS: i64 = 86_400_000;
    const YEAR_0_MS: i64 = 62_167_219_200_000;

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
