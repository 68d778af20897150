//! Closed enums whose stored text is one `as_str`/`FromStr` pair: the categories, outcomes and
//! statuses of the stores. [`closed_enum!`](crate::closed_enum) writes the variants' text once.

/// Text that is none of a closed enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not one of {expected}")]
pub struct UnknownVariant {
    /// What the enum names (e.g. `category`), for messages.
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

/// Declares a closed enum with its stored text: `ALL`, `as_str`, `Display`, `FromStr`
/// (errors are [`UnknownVariant`]) and serde as that text.
///
/// ```
/// aigentflow_core_states::closed_enum! {
///     /// How an attempt ended.
///     pub enum Ending as "ending" { Won = "won", Lost = "lost" }
/// }
/// assert_eq!("won".parse::<Ending>(), Ok(Ending::Won));
/// assert_eq!(Ending::Lost.to_string(), "lost");
/// assert!("draw".parse::<Ending>().is_err());
/// ```
#[macro_export]
macro_rules! closed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
                    $crate::UnknownVariant {
                        what: $what,
                        text: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::UnknownVariant;

    crate::closed_enum! {
        /// A test enum.
        pub enum Colour as "colour" { Red = "red", DarkBlue = "dark-blue" }
    }

    #[test]
    fn every_variant_round_trips_through_its_text_display_and_serde() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue]);
        for c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Colour>(&json).ok(), Some(c));
        }
    }

    #[test]
    fn other_text_is_an_error_naming_the_accepted_names() {
        let err = "Red".parse::<Colour>().unwrap_err();
        assert_eq!(
            err,
            UnknownVariant {
                what: "colour",
                text: "Red".into(),
                expected: "red, dark-blue".into()
            }
        );
        assert_eq!(err.to_string(), "\"Red\" is not one of red, dark-blue");
        assert!(serde_json::from_str::<Colour>("\"blue\"").is_err());
    }
}
