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

/// An id ([`name`]'s rule) as its newtype.
pub fn id<T: From<String>>(text: &str) -> Result<T, Refused> {
    name(text).map(T::from)
}

/// A date or timestamp inside years 0000 to 9999 (see [`Bound::parse`]); kept as typed, the
/// library reads it again.
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

/// A window of 0 to [`MAX_DAYS`] days.
pub fn days(text: &str) -> Result<u32, Refused> {
    let days: u64 = number(text, "a whole number of days")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn domain<T: std::fmt::Debug>(r: Result<T, Refused>) -> bool {
        matches!(r, Err(Refused::OutOfDomain(_)))
    }

    fn shape<T: std::fmt::Debug>(r: Result<T, Refused>) -> bool {
        matches!(r, Err(Refused::Shape(_)))
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
        for bad in ["700001", "4294967295", "4294967296", "18446744073709551615"] {
            assert!(domain(days(bad)), "{bad:?}");
        }
        for bad in ["-1", "1e3", "", "x", "18446744073709551616"] {
            assert!(shape(days(bad)), "{bad:?}");
        }
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
