//! Helpers shared by the scenario modules; the two-backend harness (`TestDb`, `on_both!`, a
//! fresh PostgreSQL database per test) is the `aigentflow-testkit` crate's, shared with the
//! `aigentflow` command's tests.

use std::path::{Path, PathBuf};

use aigentflow::persistence::Database;
#[allow(unused_imports)]
pub use aigentflow_testkit::{
    contains, database_url, file_bytes, on_both, pg_admin_url, pg_database, pg_error,
    without_password, PgDb, TestDb, PG_REQUIRE_VAR, PG_URL_VAR,
};

/// The versions of the migration files of `backend`'s folder, ascending, read from their names
/// (`V9__approvals.sql` is 9). Numbers may have gaps: a version is reserved for a migration that
/// is added in parallel.
pub fn migration_versions(backend: aigentflow::persistence::Backend) -> Vec<i64> {
    let folder = match backend {
        aigentflow::persistence::Backend::Sqlite => "migrations",
        aigentflow::persistence::Backend::Postgres => "migrations-postgres",
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut versions: Vec<i64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let number = name.strip_suffix(".sql")?.strip_prefix('V')?.split("__").next()?;
            number.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// A fresh temp dir and a database path inside it (the file does not exist yet).
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("aigentflow.db");
    (dir, path)
}

/// A copy of the TypeScript version's database in a temp dir (the fixture is never opened in place).
pub fn legacy_copy() -> (tempfile::TempDir, PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-aigentflow.db");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.db");
    std::fs::copy(&fixture, &path).unwrap_or_else(|e| panic!("copy {}: {e}", fixture.display()));
    (dir, path)
}

/// A raw SQLite connection to inspect what the stores wrote.
pub fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Opens the database at `path`, panicking with the error's message.
pub fn open(path: &Path) -> Database {
    Database::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Starts the worker binary with its stdin, stdout and stderr piped.
pub fn worker(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_aigentflow-worker"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a worker and asserts it succeeded.
pub fn expect_ok(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "worker failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `test` on `cases` values of `strategy` inside a scenario that already has its database:
/// a property over one database (each case working on rows of its own), where a database per
/// case would cost a server round of CREATE and DROP DATABASE each.
pub fn check<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> proptest::test_runner::TestCaseResult,
) where
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, TestRunner};
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}
