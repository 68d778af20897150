//! A fresh database of one backend for one test: [`EmptyDb`], a place where none exists yet (for
//! what creates it, such as `aigentflow init`), and [`TestDb`], one created, migrated and open.

use std::path::{Path, PathBuf};

use aigentflow_persistence::{Backend, Database};

use crate::pg::{pg_database, without_password, PgDb};

/// What `on_both!` makes fresh for each variant of a test.
pub trait Fresh: Sized {
    /// One on SQLite: a file in a temp dir of its own.
    fn sqlite() -> Self;

    /// One on PostgreSQL, a database of its own on the server of `AIGENTFLOW_PG_URL`; None
    /// (the variant is skipped, said on stderr) when that variable is not set.
    fn postgres() -> Option<Self>;

    /// The path or URL to give `Database::open`, `--db`, `AIGENTFLOW_DB` or another process.
    fn location(&self) -> &str;

    /// The backend it is on.
    fn backend(&self) -> Backend;

    /// A temp dir of the test's own, for the files it writes (exports, backups, copies); on
    /// SQLite the database file is inside it too, at `data/aigentflow.db`.
    fn dir(&self) -> &Path;
}

/// Where a database can be made and nothing is yet: on SQLite a path in a temp dir with no file
/// at it (nor its folder), on PostgreSQL a fresh database with no tables, dropped with this.
#[derive(Debug)]
pub struct EmptyDb {
    location: String,
    backend: Backend,
    // Dropped after the location's users: fields drop in order, and `TestDb` holds its
    // `Database` before its `EmptyDb`.
    dir: tempfile::TempDir,
    _pg: Option<PgDb>,
}

impl EmptyDb {
    /// A path in a new temp dir, `DIR/data/aigentflow.db`, with nothing at it.
    pub fn sqlite() -> Self {
        let dir = temp_dir();
        let path = dir.path().join("data").join("aigentflow.db");
        Self { location: path.display().to_string(), backend: Backend::Sqlite, dir, _pg: None }
    }

    /// A new, empty PostgreSQL database; None when `AIGENTFLOW_PG_URL` is not set.
    pub fn postgres() -> Option<Self> {
        let pg = pg_database()?;
        let location = pg.url().to_owned();
        Some(Self { location, backend: Backend::Postgres, dir: temp_dir(), _pg: Some(pg) })
    }

    /// The path or URL to give `Database::open`, `--db`, `AIGENTFLOW_DB` or another process.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The backend it is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A temp dir of the test's own (see [`Fresh::dir`]).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite file's path (None on PostgreSQL).
    pub fn path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| PathBuf::from(&self.location))
    }
}

impl Fresh for EmptyDb {
    fn sqlite() -> Self {
        Self::sqlite()
    }

    fn postgres() -> Option<Self> {
        Self::postgres()
    }

    fn location(&self) -> &str {
        self.location()
    }

    fn backend(&self) -> Backend {
        self.backend()
    }

    fn dir(&self) -> &Path {
        self.dir()
    }
}

/// A fresh database of one backend for one test, created, migrated and open, and what keeps it
/// alive: a temp dir holding a SQLite file, or a PostgreSQL database dropped when this drops.
#[derive(Debug)]
pub struct TestDb {
    db: Database,
    empty: EmptyDb,
}

impl TestDb {
    /// A new SQLite file in a temp dir, created and migrated.
    pub fn sqlite() -> Self {
        Self::opened(EmptyDb::sqlite())
    }

    /// A new PostgreSQL database, migrated; None (the test is skipped, said on stderr) when
    /// `AIGENTFLOW_PG_URL` is not set.
    pub fn postgres() -> Option<Self> {
        EmptyDb::postgres().map(Self::opened)
    }

    /// A SQLite file copied from `source` (e.g. a fixture) into a temp dir of its own, then
    /// opened, and so migrated.
    pub fn sqlite_copy_of(source: &Path) -> Self {
        let empty = EmptyDb::sqlite();
        let to = Path::new(empty.location());
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(source, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", source.display(), to.display()));
        Self::opened(empty)
    }

    fn opened(empty: EmptyDb) -> Self {
        let db = open(empty.location());
        Self { db, empty }
    }

    /// The handle opened on it.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Another handle on the same database, as a restarted process would open it.
    pub fn reopen(&self) -> Database {
        open(self.empty.location())
    }

    /// The path or URL to give `--db`, `AIGENTFLOW_DB` or another process.
    pub fn location(&self) -> &str {
        self.empty.location()
    }

    /// The backend it is on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A temp dir of the test's own (see [`Fresh::dir`]).
    pub fn dir(&self) -> &Path {
        self.empty.dir()
    }

    /// The SQLite file's path (None on PostgreSQL).
    pub fn path(&self) -> Option<PathBuf> {
        self.empty.path()
    }
}

impl Fresh for TestDb {
    fn sqlite() -> Self {
        Self::sqlite()
    }

    fn postgres() -> Option<Self> {
        Self::postgres()
    }

    fn location(&self) -> &str {
        self.location()
    }

    fn backend(&self) -> Backend {
        self.backend()
    }

    fn dir(&self) -> &Path {
        self.dir()
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("create a temp dir: {e}"))
}

/// Opens (creating and migrating) the database at `location`, panicking with the error's message.
fn open(location: &str) -> Database {
    Database::open(location).unwrap_or_else(|e| panic!("open {}: {e}", without_password(location)))
}
