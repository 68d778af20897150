//! Where a database is, read from the text an operator or a program gives (`--db`,
//! `AIGENTFLOW_DB`, [`Database::open`]): one rule for every entry point, so a URL of a backend
//! this build does not have is refused instead of becoming a folder named `mysql:`.
//!
//! - `postgres://…` or `postgresql://…` (scheme in any case): a PostgreSQL server.
//! - `sqlite:PATH` or `sqlite://PATH` (`sqlite:///abs/path` for an absolute one): a SQLite file
//!   at PATH, taken as it is (no query options).
//! - any other `scheme://…`: refused, naming the scheme.
//! - anything else: a SQLite file path, as it is (`C:x`, `a:b.db` and non-UTF-8 paths included).
//!
//! [`Database::open`]: crate::Database::open

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg;

/// A database's place: a file, or a server's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL server's URL (with its password, if it has one: see [`Location::shown`]).
    Server(String),
}

impl Location {
    /// Reads `text` by the rule of this module.
    pub fn parse(text: impl AsRef<Path>) -> Result<Self> {
        let path = text.as_ref();
        let Some(text) = path.to_str() else { return Ok(Self::File(path.to_path_buf())) };
        if pg::is_url(text) {
            return Ok(Self::Server(text.to_owned()));
        }
        let Some((scheme, rest)) = scheme(text) else { return Ok(Self::File(path.to_path_buf())) };
        if !scheme.eq_ignore_ascii_case("sqlite") {
            return Err(Error::InvalidInput {
                what: "database location",
                reason: format!(
                    "{scheme}:// is not a database this build can open; give a file path, \
                     sqlite:PATH, or a postgres:// URL"
                )
                .into(),
            });
        }
        let file = rest.strip_prefix("//").unwrap_or(rest);
        if file.is_empty() {
            return Err(Error::InvalidInput {
                what: "database location",
                reason: format!("\"{text}\" names no file; give sqlite:PATH").into(),
            });
        }
        Ok(Self::File(PathBuf::from(OsStr::new(file))))
    }

    /// The place as people read it: the path, or the URL with its password hidden.
    pub fn shown(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Server(url) => pg::display_url(url),
        }
    }
}

/// The scheme of `text` and what follows its `:`, if `text` is `sqlite:…` or `scheme://…`
/// (a scheme as RFC 3986 spells it: a letter, then letters, digits, `+`, `-` or `.`).
fn scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (well_formed && (rest.starts_with("//") || scheme.eq_ignore_ascii_case("sqlite")))
        .then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn file(text: &str) -> PathBuf {
        match Location::parse(text).unwrap() {
            Location::File(path) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn every_spelling_of_each_backend_is_read_as_that_backend() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "POSTGRES://u@h/db",
            "PostgreSQL://u:p@h:5432/db?sslmode=disable",
        ] {
            assert_eq!(Location::parse(url).unwrap(), Location::Server(url.to_owned()));
        }
        for (text, path) in [
            ("sqlite:app.db", "app.db"),
            ("sqlite://app.db", "app.db"),
            ("sqlite:///var/lib/app.db", "/var/lib/app.db"),
            ("SQLite:dir/app.db", "dir/app.db"),
            ("sqlite:/abs.db", "/abs.db"),
            ("app.db", "app.db"),
            ("/abs/app.db", "/abs/app.db"),
            ("C:app.db", "C:app.db"),
            ("a:b.db", "a:b.db"),
            ("./x://y", "./x://y"),
            ("1x://y", "1x://y"),
            ("orchestrator-data/aigentflow.db", "orchestrator-data/aigentflow.db"),
        ] {
            assert_eq!(file(text), PathBuf::from(path), "{text}");
        }
    }

    #[test]
    fn a_url_of_another_backend_is_refused_naming_its_scheme() {
        for text in
            ["mysql://u@h/db", "http://h/x", "file:///tmp/x.db", "postgre://h/db", "s3://b/k"]
        {
            let err = Location::parse(text).unwrap_err();
            let scheme = text.split_once(':').unwrap().0;
            assert!(matches!(err, Error::InvalidInput { .. }), "{text}: {err}");
            assert!(err.to_string().contains(&format!("{scheme}://")), "{text}: {err}");
        }
        for text in ["sqlite:", "sqlite://"] {
            assert!(Location::parse(text).is_err(), "{text}");
        }
    }

    proptest! {
        /// Whatever the text, parsing never panics, and a path with no `:` is always that path.
        #[test]
        fn any_text_is_read_without_panicking_and_plain_paths_stay_paths(text in "\\PC{0,40}") {
            let parsed = Location::parse(&text);
            if !text.contains(':') {
                prop_assert_eq!(parsed.unwrap(), Location::File(PathBuf::from(&text)));
            }
        }

        /// `sqlite:` before any path gives that path back, in both of its spellings.
        #[test]
        fn the_sqlite_prefix_gives_back_any_path(path in "[^\\x00]{1,40}") {
            prop_assume!(!path.starts_with("//"));
            prop_assert_eq!(file(&format!("sqlite:{path}")), PathBuf::from(&path));
            prop_assert_eq!(file(&format!("sqlite://{path}")), PathBuf::from(&path));
        }
    }
}
