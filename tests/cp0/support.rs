//! Helpers shared by the scenario modules.

use std::path::{Path, PathBuf};

use aigentflow::persistence::Database;

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

/// Every string in the database file and its WAL, as bytes.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
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

/// The variable naming the PostgreSQL server the Postgres variants of the tests run on: a
/// superuser's `postgres://` or `postgresql://` URL (`scripts/pg-throwaway.sh` starts one).
pub const PG_URL_VAR: &str = "AIGENTFLOW_PG_URL";

/// When set to anything non-empty, a missing [`PG_URL_VAR`] fails the test instead of skipping
/// its Postgres variant (CI sets it, so a lost variable cannot turn the Postgres run into skips).
pub const PG_REQUIRE_VAR: &str = "AIGENTFLOW_REQUIRE_PG";

/// A database of its own on the server of `AIGENTFLOW_PG_URL`, empty when made; dropping the
/// guard drops the database, with any connection still open to it.
#[derive(Debug)]
pub struct PgDb {
    url: String,
    name: String,
    admin_url: String,
}

impl PgDb {
    /// The URL of this database: the server's URL with its database name replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Errors are only reported here: a panic in drop would abort a test that is unwinding.
        let dropped =
            postgres::Client::connect(&self.admin_url, postgres::NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&self.name)
                ))
            });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {}", self.name, pg_error(&e));
        }
    }
}

/// A fresh database on the PostgreSQL server of `AIGENTFLOW_PG_URL`, or `None` (after one line on
/// stderr naming the test whose Postgres variant is skipped) when that variable is unset or empty.
/// Panics when `AIGENTFLOW_REQUIRE_PG` is set but the URL is not, or when the server refuses.
pub fn pg_database() -> Option<PgDb> {
    let admin_url =
        match pg_admin_url(std::env::var_os(PG_URL_VAR), std::env::var_os(PG_REQUIRE_VAR)) {
            Ok(Some(url)) => url,
            Ok(None) => {
                let test = std::thread::current().name().unwrap_or("a test").to_owned();
                eprintln!("{test}: PostgreSQL variant skipped ({PG_URL_VAR} is not set)");
                return None;
            }
            Err(message) => panic!("{message}"),
        };
    let name = unique_database_name();
    let url = database_url(&admin_url, &name).unwrap_or_else(|e| panic!("{e}"));
    let shown = without_password(&admin_url);
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to {PG_URL_VAR} {shown}: {}", pg_error(&e)));
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .unwrap_or_else(|e| panic!("create database {name} on {shown}: {}", pg_error(&e)));
    Some(PgDb { url, name, admin_url })
}

/// The server's own message for a refusal (the driver's `Display` says only "db error"), else the
/// driver's, with its cause.
pub fn pg_error(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.message().to_owned(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// What the two variables ask for: the server's URL, no server (skip), or an error message.
pub fn pg_admin_url(
    url: Option<std::ffi::OsString>,
    require: Option<std::ffi::OsString>,
) -> Result<Option<String>, String> {
    match url.filter(|u| !u.is_empty()) {
        Some(url) => url
            .into_string()
            .map(Some)
            .map_err(|u| format!("{PG_URL_VAR} is not UTF-8: {}", u.to_string_lossy())),
        None if require.is_some_and(|r| !r.is_empty()) => {
            Err(format!("{PG_REQUIRE_VAR} is set but {PG_URL_VAR} is not"))
        }
        None => Ok(None),
    }
}

/// `aigentflow_test_<pid>_<counter>_<random>`: unique among this process's databases by the
/// counter, and among processes and runs (a killed run may leave its databases) by pid and random.
fn unique_database_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("aigentflow_test_{}_{counter}_{:016x}", std::process::id(), hasher.finish())
}

/// A quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The parts of a `postgres://` URL as the driver reads it: the scheme, the credentials and hosts
/// (everything to the first `/` or `?` after the first `@`), the path, the query.
fn split_url(url: &str) -> Result<(&str, &str, &str, &str), String> {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|s| url.starts_with(s))
        .ok_or_else(|| format!("{PG_URL_VAR} is not a postgres:// or postgresql:// URL: {url}"))?;
    let rest = &url[scheme.len()..];
    let hosts_from = rest.find('@').map_or(0, |at| at + 1);
    let path_from = rest[hosts_from..].find(['/', '?']).map_or(rest.len(), |i| hosts_from + i);
    let query_from = rest[path_from..].find('?').map_or(rest.len(), |i| path_from + i);
    Ok((scheme, &rest[..path_from], &rest[path_from..query_from], &rest[query_from..]))
}

/// `url` with its database replaced by `name` (a plain identifier, needing no escapes): the path
/// becomes `/name` and any `dbname` parameter of the query, which would win over it, is removed.
pub fn database_url(url: &str, name: &str) -> Result<String, String> {
    let (scheme, authority, _path, query) = split_url(url)?;
    let kept: Vec<&str> = query
        .strip_prefix('?')
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            percent_decoded(key) != "dbname"
        })
        .collect();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    Ok(format!("{scheme}{authority}/{name}{query}"))
}

/// `url` with the password, if any, shown as `***` (for messages).
pub fn without_password(url: &str) -> String {
    let Ok((scheme, authority, path, query)) = split_url(url) else { return url.to_owned() };
    match authority.split_once('@') {
        Some((creds, hosts)) if creds.contains(':') => {
            let user = creds.split(':').next().unwrap_or("");
            format!("{scheme}{user}:***@{hosts}{path}{query}")
        }
        _ => url.to_owned(),
    }
}

/// `%XX` escapes decoded (bytes that are not UTF-8 are replaced: a key so written names no
/// parameter the driver knows).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh database of one backend for one test, and what keeps it alive: a temp dir holding a
/// SQLite file, or a PostgreSQL database dropped when this drops.
#[derive(Debug)]
pub struct TestDb {
    db: Database,
    location: String,
    _keep: Keep,
}

#[derive(Debug)]
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Pg(PgDb),
}

impl TestDb {
    /// A new SQLite file in a temp dir, created and migrated.
    pub fn sqlite() -> Self {
        let (dir, path) = temp_db();
        let db = open(&path);
        Self { db, location: path.display().to_string(), _keep: Keep::Dir(dir) }
    }

    /// A new PostgreSQL database, migrated; None (the test is skipped, said on stderr) when
    /// `AIGENTFLOW_PG_URL` is not set.
    pub fn postgres() -> Option<Self> {
        let pg = pg_database()?;
        let location = pg.url().to_owned();
        let db = Database::open(&location)
            .unwrap_or_else(|e| panic!("open {}: {e}", without_password(&location)));
        Some(Self { db, location, _keep: Keep::Pg(pg) })
    }

    /// The handle opened on it.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Another handle on the same database, as a restarted process would open it.
    pub fn reopen(&self) -> Database {
        Database::open(&self.location)
            .unwrap_or_else(|e| panic!("open {}: {e}", without_password(&self.location)))
    }

    /// The path or URL to give `--db`, `AIGENTFLOW_DB` or another process.
    #[allow(dead_code)]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The backend it is on.
    #[allow(dead_code)]
    pub fn backend(&self) -> aigentflow::persistence::Backend {
        self.db.backend()
    }
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

/// Defines a test that runs once on each backend: `on_both! { fn name(t) { … } }` makes
/// `name::sqlite` (always) and `name::postgres` (when `AIGENTFLOW_PG_URL` is set), each given a
/// fresh [`TestDb`] as `t`.
macro_rules! on_both {
    ($(#[$meta:meta])* fn $name:ident($t:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($t: &$crate::support::TestDb) $body

            #[test]
            fn sqlite() {
                run(&$crate::support::TestDb::sqlite());
            }

            #[test]
            fn postgres() {
                if let Some(t) = $crate::support::TestDb::postgres() {
                    run(&t);
                }
            }
        }
    };
}
pub(crate) use on_both;
