//! The domains of the command's values, checked while the command line is parsed. A value of
//! the wrong shape (not a number, not one of the listed words) is clap's usage error, exit code
//! 2; a value of the right shape outside its domain (an empty name, a number out of range, a date
//! outside years 0000 to 9999) is [`OutOfDomain`], exit code 1. Both are one line naming the
//! flag. Each rule is stated again in the flag's `--help`.

use std::time::Duration;

use aigentflow_core_states::time::Bound;

/// Why a value was refused: its shape (a usage error, exit code 2) or its domain (exit code 1).
#[derive(Debug)]
pub enum Refused {
    /// Not a value of the flag's type at all, e.g. not a number.
    Shape(String),
    /// Of the right type, outside the flag's domain.
    OutOfDomain(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shape(reason) | Self::OutOfDomain(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Refused {}

/// Whether clap's error is a value of the right shape refused by one of this module's domains.
pub fn is_out_of_domain(e: &clap::Error) -> bool {
    use std::error::Error;
    e.kind() == clap::error::ErrorKind::ValueValidation
        && e.source()
            .and_then(|s| s.downcast_ref::<Refused>())
            .is_some_and(|r| matches!(r, Refused::OutOfDomain(_)))
}

/// Text that names or identifies something (an id, a project, an agent, a key, a title…): not
/// empty and not only blanks. Leaving an option out is how to give none.
pub fn name(text: &str) -> Result<String, Refused> {
    if text.trim().is_empty() {
        return Err(Refused::OutOfDomain(
            "it is empty; give a value, or leave the flag out".into(),
        ));
    }
    Ok(text.to_owned())
}

/// Tags given as one comma-separated text (`--tags react,testing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags(pub Vec<String>);

/// The tags of one `--tags` text, none empty ([`name`]'s rule). The text goes through the
/// redaction policy whole before it is split: a secret holding a comma
/// (`password=ab,cd`) would otherwise be cut in two, and its second part, alone, would look like
/// a tag and be kept.
pub fn tags(text: &str) -> Result<Tags, Refused> {
    let clean = aigentflow_persistence::redact::redact_text(text);
    clean.split(',').map(name).collect::<Result<_, _>>().map(Tags)
}

/// Every tag of repeated `--tags` flags, in order.
pub fn all_tags(given: Vec<Tags>) -> Vec<String> {
    given.into_iter().flat_map(|t| t.0).collect()
}

/// An id ([`name`]'s rule) as its newtype.
pub fn id<T: From<String>>(text: &str) -> Result<T, Refused> {
    name(text).map(T::from)
}

/// A date or timestamp inside years 0000 to 9999 and not in a leap second (see
/// [`Bound::parse`]); kept as typed, the library reads it again. Every time flag of every
/// command (`--start`, `--end`, `--since`, `--until`) takes its value through here, named
/// `DATE` in its help.
pub fn date(text: &str) -> Result<String, Refused> {
    Bound::parse(text).map(|_| text.to_owned()).map_err(|e| Refused::OutOfDomain(e.to_string()))
}

/// The largest `--days`: 700,000 days (about 1,916 years) back from any day since 1917 starts
/// after year 0000, the first a timestamp is stored with.
pub const MAX_DAYS: u32 = 700_000;

/// A number of type `T`, or [`Refused::Shape`] naming what was expected.
fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, Refused> {
    text.trim().parse().map_err(|_| Refused::Shape(format!("not {what}")))
}

/// A whole number written in decimal digits, with an optional sign: `Some(value)` for one that
/// fits, `None` for a non-negative one too large for any integer type here.
fn whole(text: &str, what: &str) -> Result<Option<i128>, Refused> {
    let t = text.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::Shape(format!("not {what}")));
    }
    match t.parse::<i128>() {
        Ok(n) => Ok(Some(n)),
        Err(_) if t.starts_with('-') => Ok(Some(i128::MIN)),
        Err(_) => Ok(None),
    }
}

/// A count (`--limit`, `--offset`): any whole number from 0; one past `u64::MAX` means as many
/// as there can be, the same as `u64::MAX` (the stores read anything past 2^63 − 1 as all).
pub fn count(text: &str) -> Result<u64, Refused> {
    match whole(text, "a whole number")? {
        None => Ok(u64::MAX),
        Some(n) if n < 0 => {
            Err(Refused::OutOfDomain(format!("{n} is negative; give a whole number from 0")))
        }
        Some(n) => Ok(u64::try_from(n).unwrap_or(u64::MAX)),
    }
}

/// A cursor (`audit tail --after`): an id, a whole number from 0 to 2^63 − 1 (0 is before the
/// first). Empty or blank, it is refused as every empty id is.
pub fn cursor(text: &str) -> Result<i64, Refused> {
    name(text)?;
    let out_of_range =
        || Refused::OutOfDomain(format!("{} is not between 0 and {}", text.trim(), i64::MAX));
    match whole(text, "a whole number")? {
        Some(n) if n >= 0 => i64::try_from(n).map_err(|_| out_of_range()),
        _ => Err(out_of_range()),
    }
}

/// A page size (`audit tail --limit`): 1 to `max`, the most one read returns.
pub fn page(text: &str, max: u64) -> Result<u64, Refused> {
    let out_of_range =
        || Refused::OutOfDomain(format!("{} is not between 1 and {max}", text.trim()));
    match whole(text, "a whole number")? {
        Some(n) => u64::try_from(n).ok().filter(|n| (1..=max).contains(n)).ok_or_else(out_of_range),
        None => Err(out_of_range()),
    }
}

/// A small count (`--lease-minutes`, `--max-attempts`): a whole number from 0 to 4294967295.
pub fn count32(text: &str) -> Result<u32, Refused> {
    let out_of_range =
        || Refused::OutOfDomain(format!("{} is not between 0 and {}", text.trim(), u32::MAX));
    match whole(text, "a whole number")? {
        Some(n) => u32::try_from(n).map_err(|_| out_of_range()),
        None => Err(out_of_range()),
    }
}

/// A window of 0 to [`MAX_DAYS`] days.
pub fn days(text: &str) -> Result<u32, Refused> {
    let days = match whole(text, "a whole number of days")? {
        Some(n) if n < 0 => {
            return Err(Refused::OutOfDomain(format!("{n} days is negative; give 0 or more")))
        }
        Some(n) => u64::try_from(n).unwrap_or(u64::MAX),
        None => u64::MAX,
    };
    u32::try_from(days).ok().filter(|d| *d <= MAX_DAYS).ok_or_else(|| {
        Refused::OutOfDomain(format!(
            "{days} days is more than {MAX_DAYS} (the window may not start before year 0000)"
        ))
    })
}

/// A confidence from 0 to 1.
pub fn confidence(text: &str) -> Result<f64, Refused> {
    let c: f64 = number(text, "a number")?;
    if !(0.0..=1.0).contains(&c) {
        return Err(Refused::OutOfDomain(format!("{c} is not between 0 and 1")));
    }
    Ok(c)
}

/// The longest `--lock-timeout`, in seconds.
const MAX_WAIT_SECONDS: f64 = 3600.0;

/// A wait of 0 to 3600 seconds, fractions allowed.
pub fn seconds(text: &str) -> Result<Duration, Refused> {
    let s: f64 = number(text, "a number of seconds")?;
    if !(0.0..=MAX_WAIT_SECONDS).contains(&s) {
        return Err(Refused::OutOfDomain(format!(
            "{s} seconds is not between 0 and {MAX_WAIT_SECONDS}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// JSON text as its value, refused when a number in it would be stored other than as written:
/// serde_json reads a number into a 64-bit integer or a double, so an integer past 64 bits
/// (`123456789012345678901234567890`) or a decimal with more digits than a double holds would
/// be stored rounded, silently. The error names where the number starts, not the number (the
/// text may hold a secret).
pub fn exact_json(text: &str) -> Result<serde_json::Value, String> {
    let value = serde_json::from_str(text).map_err(|e| format!("is not JSON ({e})"))?;
    match inexact_number(text) {
        None => Ok(value),
        Some(at) => Err(format!(
            "holds a number at character {} that would be stored rounded (more than a 64-bit \
             integer or a double holds); write it as a string",
            text[..at].chars().count() + 1
        )),
    }
}

/// Where the first number of JSON text starts whose value a 64-bit integer or a double does
/// not hold as written, if any.
fn inexact_number(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'-' | b'0'..=b'9' if !in_string => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    i += 1;
                }
                if !number_is_exact(&text[start..i]) {
                    return Some(start);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether a JSON number is held as written: an integer by an i64 or u64, a decimal by a
/// double whose shortest decimal form has the same digits and exponent.
fn number_is_exact(literal: &str) -> bool {
    // Read by serde_json itself, whose reading is what is stored (its default parser may land
    // a unit in the last place away from the nearest double: `0.9999999999999999` gives 1).
    let Ok(number) = serde_json::from_str::<serde_json::Number>(literal) else { return false };
    if !literal.contains(['.', 'e', 'E']) {
        // An integer is held as one; `-0` alone is read as the double -0.0, of equal value.
        return !number.is_f64() || number.as_f64() == Some(0.0);
    }
    // A mantissa with a digit other than 0 has significant digits: none (an exponent past
    // i64) is a value no double holds.
    let mantissa = literal.split(['e', 'E']).next().unwrap_or(literal);
    let zero = !mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    let digits = significant(literal);
    number.as_f64().is_some_and(|f| {
        f.is_finite() && (zero || digits.is_some()) && digits == significant(&format!("{f:e}"))
    })
}

/// A decimal number's significant digits and the power of ten of the point before its first
/// (`0.0125` and `1.25e-2`: `("125", -1)`); zero has none.
fn significant(literal: &str) -> Option<(String, i64)> {
    let unsigned = literal.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let kept = digits.trim_start_matches('0').trim_end_matches('0');
    if kept.is_empty() {
        return None;
    }
    let point = (whole.len() as i64).checked_sub(leading as i64)?.checked_add(exponent)?;
    Some((kept.to_owned(), point))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain<T: std::fmt::Debug>(r: Result<T, Refused>) -> bool {
        matches!(r, Err(Refused::OutOfDomain(_)))
    }

    fn shape<T: std::fmt::Debug>(r: Result<T, Refused>) -> bool {
        matches!(r, Err(Refused::Shape(_)))
    }

    /// Numbers a 64-bit integer or a double holds as written pass, at any place in the text;
    /// those it would round are refused, and digits inside strings are not numbers.
    #[test]
    fn json_whose_numbers_would_be_stored_rounded_is_refused() {
        let exact = [
            "0",
            "-0",
            "42",
            "-9223372036854775808",
            "9223372036854775807",
            "18446744073709551615",
            "0.1",
            "1.5",
            "-2.25e-3",
            "1e10",
            "1E+2",
            "0.000001",
            "123456.789",
            "1.7976931348623157e308",
            "5e-324",
            "0.0",
            "1.50",
            "100e-2",
        ];
        let rounded = [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "3.14159265358979323846",
            "0.1000000000000000055511151231257827",
            "9007199254740993.0",
            "1e400",
            "-1e400",
            "1.00000000000000000001",
            "0.9999999999999999",
            "1.5777777777770001",
            "0.01e-9223372036854775808",
            "1e9223372036854775807",
            // serde_json's reading of it is a unit in the last place off.
            "9007199254740993.0e-5",
        ];
        for n in exact {
            for text in [n.to_owned(), format!("[1, {n}]"), format!("{{\"a\": {{\"b\": {n}}}}}")] {
                assert!(exact_json(&text).is_ok(), "{text}");
            }
        }
        for n in rounded {
            for text in [n.to_owned(), format!("[1, {n}]"), format!("{{\"a\": {{\"b\": {n}}}}}")] {
                let error = exact_json(&text).expect_err(&text);
                assert!(!error.contains(n.trim_start_matches('-')), "{error}");
            }
        }
        for kept in [r#"{"n": "123456789012345678901234567890"}"#, r#"["a\"1e400", 1]"#] {
            assert!(exact_json(kept).is_ok(), "{kept}");
        }
    }

    #[test]
    fn each_domain_takes_its_edges_and_tells_a_wrong_shape_from_a_value_out_of_range() {
        for ok in ["a", " a ", "x\u{1b}"] {
            assert!(name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", " ", "\t\n"] {
            assert!(domain(name(bad)), "{bad:?}");
        }
        for ok in ["0", "1", "30", "700000"] {
            assert!(days(ok).is_ok(), "{ok:?}");
        }
        for bad in ["700001", "4294967295", "4294967296", "18446744073709551616", "-1", "-0x"] {
            if bad == "-0x" {
                assert!(shape(days(bad)), "{bad:?}");
            } else {
                assert!(domain(days(bad)), "{bad:?}");
            }
        }
        for bad in ["1e3", "", "x", "+", "-", "1.5"] {
            assert!(shape(days(bad)), "{bad:?}");
        }
        // Counts: any whole number from 0, past u64::MAX as many as there can be.
        for (ok, want) in [("0", 0), ("7", 7), ("18446744073709551615", u64::MAX)] {
            assert_eq!(count(ok).ok(), Some(want), "{ok:?}");
        }
        assert_eq!(count(&"9".repeat(60)).ok(), Some(u64::MAX));
        for bad in ["-1", "-18446744073709551616", &format!("-{}", "9".repeat(60))] {
            assert!(domain(count(bad)), "{bad:?}");
        }
        for bad in ["", "x", "1e3", "0x10", "1.0"] {
            assert!(shape(count(bad)), "{bad:?}");
        }
        for (ok, want) in [("0", 0), ("4294967295", u32::MAX)] {
            assert_eq!(count32(ok).ok(), Some(want), "{ok:?}");
        }
        for bad in ["4294967296", "-1", &"9".repeat(60)] {
            assert!(domain(count32(bad)), "{bad:?}");
        }
        // Cursors: 0 to i64::MAX; page sizes: 1 to the maximum.
        for (ok, want) in [("0", 0), ("12", 12), ("9223372036854775807", i64::MAX)] {
            assert_eq!(cursor(ok).ok(), Some(want), "{ok:?}");
        }
        for bad in ["-1", "9223372036854775808", &"9".repeat(60)] {
            assert!(domain(cursor(bad)), "{bad:?}");
        }
        for (ok, want) in [("1", 1), ("1000", 1000)] {
            assert_eq!(page(ok, 1000).ok(), Some(want), "{ok:?}");
        }
        for bad in ["0", "1001", "-1", &"9".repeat(60)] {
            assert!(domain(page(bad, 1000)), "{bad:?}");
        }
        for bad in ["x", "1.5", "-"] {
            assert!(shape(cursor(bad)) && shape(page(bad, 1000)), "{bad:?}");
        }
        assert!(domain(cursor("")) && domain(cursor(" ")), "an empty id");
        for ok in ["0", "1", "0.5", "1.0"] {
            assert!(confidence(ok).is_ok(), "{ok:?}");
        }
        for bad in ["-0.1", "1.01", "NaN", "inf", "-inf"] {
            assert!(domain(confidence(bad)), "{bad:?}");
        }
        for bad in ["", "x", "0,5"] {
            assert!(shape(confidence(bad)), "{bad:?}");
        }
        for ok in ["0", "0.25", "30", "3600"] {
            assert!(seconds(ok).is_ok(), "{ok:?}");
        }
        for bad in ["-1", "3600.5", "NaN", "inf", "1e300"] {
            assert!(domain(seconds(bad)), "{bad:?}");
        }
        for ok in ["2026-1-5", "9999-12-31", "0000-01-01", "2026-11-01T09:00:00Z"] {
            assert!(date(ok).is_ok(), "{ok:?}");
        }
        for bad in ["+10000-01-01", "-0001-01-01", "", "tomorrow", "2026-02-30"] {
            assert!(domain(date(bad)), "{bad:?}");
        }
    }
}
