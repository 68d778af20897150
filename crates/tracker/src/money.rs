//! [`Money`]: an exact amount of one currency, stored as whole nano-units (10⁻⁹) and written
//! and read as decimal text, so no cost ever passes through a binary fraction.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// Nano-units in one unit of a currency.
const NANOS: i64 = 1_000_000_000;
/// Fraction digits an amount may have: nano-units are the smallest step.
const SCALE: usize = 9;

/// An exact, non-negative amount of a currency (ISO 4217-like code: three upper-case letters).
/// Parsed from decimal text with at most 9 fraction digits ([`Money::parse`]); shown with at
/// least two fraction digits and no trailing zeros past them (`0.5` shows `0.50`,
/// `0.000000001` shows as it is).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Money {
    nanos: i64,
    currency: String,
}

impl Money {
    /// `amount` (decimal text such as `12`, `0.0123`, `50.00`) of `currency` (three upper-case
    /// letters, e.g. `USD`). Anything else is [`Error::InvalidInput`] naming the text: a sign,
    /// an exponent, more than 9 fraction digits, an amount past 9,223,372,036.854775807.
    pub fn parse(amount: &str, currency: &str) -> Result<Self> {
        let currency = check_currency(currency)?;
        let bad = |why: &str| Error::InvalidInput {
            what: "cost",
            reason: format!("\"{amount}\" is not a decimal amount: {why}").into(),
        };
        let (whole, fraction) = match amount.split_once('.') {
            Some((w, f)) => (w, f),
            None => (amount, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits before any point, like 12 or 0.5"));
        }
        if amount.contains('.') && fraction.is_empty() {
            return Err(bad("expected digits after the point"));
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected only digits after the point"));
        }
        if fraction.len() > SCALE {
            return Err(bad("more than 9 digits after the point"));
        }
        let too_large = || bad("too large");
        let whole: i64 = whole.parse().map_err(|_| too_large())?;
        let mut frac: i64 = if fraction.is_empty() { 0 } else { fraction.parse().unwrap_or(0) };
        for _ in fraction.len()..SCALE {
            frac *= 10;
        }
        let nanos = whole.checked_mul(NANOS).and_then(|n| n.checked_add(frac));
        Ok(Self { nanos: nanos.ok_or_else(too_large)?, currency })
    }

    /// An amount of whole nano-units (10⁻⁹) of `currency`; a negative amount is refused.
    pub fn from_nanos(nanos: i64, currency: &str) -> Result<Self> {
        if nanos < 0 {
            return Err(Error::InvalidInput {
                what: "cost",
                reason: format!("{nanos} nano-units is negative").into(),
            });
        }
        Ok(Self { nanos, currency: check_currency(currency)? })
    }

    /// The amount in nano-units (10⁻⁹) of the currency.
    pub fn nanos(&self) -> i64 {
        self.nanos
    }

    /// The currency code.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The amount as decimal text, without the currency (`12.50`).
    pub fn amount(&self) -> String {
        let whole = self.nanos / NANOS;
        let mut fraction = format!("{:09}", self.nanos % NANOS);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        format!("{whole}.{fraction}")
    }
}

impl fmt::Display for Money {
    /// `12.50 USD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency)
    }
}

impl Serialize for Money {
    /// `{"amount": "12.50", "currency": "USD"}`: the amount as text, exact.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Money", 2)?;
        st.serialize_field("amount", &self.amount())?;
        st.serialize_field("currency", &self.currency)?;
        st.end()
    }
}

fn check_currency(code: &str) -> Result<String> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(Error::InvalidInput {
            what: "currency",
            reason: format!("\"{code}\" is not three upper-case letters like USD").into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every amount of nano-units prints as decimal text that parses back to it exactly,
        /// and that text is the whole units, a point, then the fraction digits.
        #[test]
        fn every_amount_prints_and_parses_back_exactly(nanos in 0..=i64::MAX) {
            let m = Money::from_nanos(nanos, "EUR").unwrap_or_else(|e| panic!("{e}"));
            let text = m.amount();
            prop_assert_eq!(Money::parse(&text, "EUR").map(|p| p.nanos()).ok(), Some(nanos));
            let (whole, fraction) = text.split_once('.').unwrap_or_default();
            prop_assert_eq!(whole.parse::<i64>().ok(), Some(nanos / NANOS));
            prop_assert!((2..=9).contains(&fraction.len()), "{}", text);
        }

        /// Any text is an exact amount or a typed error naming it; never a panic, never a
        /// rounded value.
        #[test]
        fn any_text_is_an_exact_amount_or_a_typed_error(text in "[0-9.eE+-]{0,24}|\\PC{0,12}") {
            match Money::parse(&text, "USD") {
                Ok(m) => {
                    let (w, f) = text.split_once('.').unwrap_or((&text, ""));
                    let digits = format!("{w}{f:0<9}");
                    prop_assert_eq!(digits.trim_start_matches('0').parse::<i64>().unwrap_or(0), m.nanos());
                }
                Err(Error::InvalidInput { what: "cost", reason }) => {
                    let quoted = format!("\"{text}\"");
                    prop_assert!(reason.as_str().contains(&quoted), "{}", reason);
                }
                Err(e) => prop_assert!(false, "{}: {}", text, e),
            }
        }
    }

    #[test]
    fn decimal_text_round_trips_exactly() {
        for (text, nanos, shown) in [
            ("0", 0, "0.00"),
            ("12", 12 * NANOS, "12.00"),
            ("0.5", NANOS / 2, "0.50"),
            ("0.000000001", 1, "0.000000001"),
            ("50.00", 50 * NANOS, "50.00"),
            ("9223372036.854775807", i64::MAX, "9223372036.854775807"),
        ] {
            let m = Money::parse(text, "USD").unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((m.nanos(), m.amount()), (nanos, shown.to_owned()), "{text}");
            assert_eq!(Money::parse(&m.amount(), "USD").ok(), Some(m));
        }
    }

    #[test]
    fn text_that_is_not_a_decimal_amount_is_refused_by_name() {
        for text in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "1,5",
            "0.0000000001",
            "abc",
            " 1",
            "9223372036.854775808",
            "99999999999",
        ] {
            let err = Money::parse(text, "USD").map(|m| m.nanos());
            assert!(
                matches!(&err, Err(Error::InvalidInput { what: "cost", reason }) if reason.as_str().contains(text)),
                "{text}: {err:?}"
            );
        }
        for code in ["usd", "US", "USDX", "", "U$D"] {
            let err = Money::parse("1", code).map(|m| m.nanos());
            assert!(matches!(err, Err(Error::InvalidInput { what: "currency", .. })), "{code}");
        }
    }
}
