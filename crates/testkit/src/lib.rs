//! The test harness of the workspace, shared by the root crate's scenarios (`tests/cp0/`) and the
//! `aigentflow` command's tests (`crates/cli/tests/`): a fresh database per test on each backend
//! ([`TestDb`], [`EmptyDb`]), [`on_both!`] to run one test body on SQLite always and on
//! PostgreSQL when `AIGENTFLOW_PG_URL` is set ([`pg_database`]; `AIGENTFLOW_REQUIRE_PG` turns a
//! missing URL into a failure), and [`Driver`], the backend's own driver to read and tamper with
//! what the stores wrote.
//!
//! A dev-dependency only: a failure here is a failed test, so it panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod driver;
mod fixture;
mod pg;

use std::path::{Path, PathBuf};

pub use driver::{stored_bytes, Driver, Raw};
pub use fixture::{EmptyDb, Fresh, TestDb};
pub use pg::{
    database_url, pg_admin_url, pg_database, pg_error, url_as, without_password, PgDb,
    PG_REQUIRE_VAR, PG_URL_VAR,
};

/// Every byte of a SQLite database file and its WAL (free pages and old versions of rows
/// included).
pub fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

/// The names in `dir`, sorted (lossy where not UTF-8).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Defines a test that runs once on each backend: `on_both! { fn name(t) { … } }` makes
/// `name::sqlite` (always) and `name::postgres` (when `AIGENTFLOW_PG_URL` is set), each given a
/// fresh [`TestDb`] as `t`. `fn name(t: EmptyDb)` gives an [`EmptyDb`] instead (any [`Fresh`]
/// type). rustfmt does not format inside the macro: keep the body tidy by hand.
#[macro_export]
macro_rules! on_both {
    ($(#[$meta:meta])* fn $name:ident($t:ident) $body:block) => {
        $crate::on_both! { $(#[$meta])* fn $name($t: $crate::TestDb) $body }
    };
    ($(#[$meta:meta])* fn $name:ident($t:ident: $fresh:ty) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            // Named so that it hides no helper of the test's module that the body calls.
            fn on_both_body($t: &$fresh) $body

            #[test]
            fn sqlite() {
                on_both_body(&<$fresh as $crate::Fresh>::sqlite());
            }

            #[test]
            fn postgres() {
                if let Some(t) = <$fresh as $crate::Fresh>::postgres() {
                    on_both_body(&t);
                }
            }
        }
    };
}
