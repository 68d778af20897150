//! The database handle: one SQLite file (or memory), a small pool of configured connections,
//! read and write transactions, the clock, and the migrations run on open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use aigentflow_core_states::{time, Clock, SystemClock};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::bind::{FirstFailure, Param};
use crate::checkpoint::{Checkpointer, SAFETY_NET_PAGES};
use crate::error::{Error, Result, SqliteResult};
use crate::location::Location;
use crate::migrate;
use crate::sets::{MigrationSet, SetVersion};

/// The environment variable that overrides the default database path.
pub const DB_ENV: &str = "AIGENTFLOW_DB";
/// The default database path, relative to the working directory.
pub const DEFAULT_PATH: &str = "orchestrator-data/aigentflow.db";

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: no commit is lost when a process crashes and the file is
    /// never corrupt after power loss, but the last commits may be lost on power loss.
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives power loss.
    Full,
}

/// What an opening may do to the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Create the file (and its folder) when missing, and migrate it: what `init` does.
    #[default]
    Create,
    /// The file must exist and hold a database (a missing or 0-byte file is an error); migrate it.
    ReadWrite,
    /// The file must exist and be at this build's schema. It is opened read-only: nothing is ever
    /// written, sealed, migrated or created, so this also reads a copy the process cannot write.
    /// An older schema is [`Error::Outdated`]; [`Database::write`] is [`Error::ReadOnly`].
    ReadOnly,
    /// As [`ReadOnly`](Access::ReadOnly), at whatever schema the file is at, older or newer: for
    /// copying the file whole (`db backup` before `db migrate`). The stores may not be able to
    /// read a schema other than this build's.
    Snapshot,
}

impl Access {
    /// Whether a handle opened so never writes.
    fn reads_only(self) -> bool {
        matches!(self, Self::ReadOnly | Self::Snapshot)
    }
}

/// How a [`Database`] is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Commit durability.
    pub durability: Durability,
    /// How long a connection waits for another writer before giving up: SQLite's busy
    /// timeout; on PostgreSQL each connection's `lock_timeout` (at least 1 ms), for row, table
    /// and advisory locks alike, and how long connecting may take (at least a second). A write
    /// that waits longer fails with [`Error::Locked`] naming the database.
    pub busy_timeout: Duration,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Whether the file may be created, migrated or written.
    pub access: Access,
    /// Whether a SQLite file's path may be a symlink (SQLite then opens what it leads to). A
    /// file the command makes at a path it was given (a copy's destination) is opened with
    /// this off: a link planted at the path fails the open, whenever it was planted.
    pub follow_link: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            access: Access::Create,
            follow_link: true,
        }
    }
}

/// The schema a database is at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    /// The seed's version row in `schema_versions` (`1.0.0`).
    pub seed: Option<String>,
    /// The newest applied migration.
    pub migration: i64,
    /// The newest migration this build knows.
    pub latest: i64,
}

/// Which kind of database a handle works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An embedded SQLite file (or memory): the default, one machine.
    Sqlite,
    /// A PostgreSQL server, chosen by a `postgres://` or `postgresql://` URL.
    Postgres,
}

impl Backend {
    /// The backend's name as people write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// How to open a [`Database`] with the application's own migration sets beside the core schema
/// (see [`MigrationSet`]): `Database::builder(url).migrations(set)?.open()`.
#[derive(Debug, Clone)]
pub struct Builder {
    /// None: in memory.
    location: Option<PathBuf>,
    options: Options,
    sets: Vec<MigrationSet>,
}

impl Builder {
    /// Opens with `options` (default: [`Options::default`]).
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Adds an application migration set, applied at open after the core migrations and the
    /// sets added before it. A second set of the same name is [`Error::InvalidInput`].
    pub fn migrations(mut self, set: MigrationSet) -> Result<Self> {
        if self.sets.iter().any(|s| s.name() == set.name()) {
            return Err(Error::InvalidInput {
                what: "migration set",
                reason: format!("set {} is added twice", set.name()).into(),
            });
        }
        self.sets.push(set);
        Ok(self)
    }

    /// Opens the database as [`Database::open_with`] does, and applies what the sets lack in
    /// the transaction that applies the core's (a read-only opening refuses a set it would
    /// have to migrate: [`Error::OutdatedSet`]). A set the database holds newer than given
    /// here is [`Error::NewerSet`]; sets not given here are left as they are.
    pub fn open(self) -> Result<Database> {
        match &self.location {
            Some(location) => Database::open_sets(location, self.options, &self.sets),
            None => Database::open_in_memory_sets(self.options, &self.sets),
        }
    }
}

/// A cheap, cloneable, thread-safe handle to one aigentflow database.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Handle>,
}

/// What a handle holds, per backend.
#[derive(Debug)]
enum Handle {
    Sqlite(Inner),
    Postgres { pg: crate::pg::PgInner, options: Options, key: PathBuf },
}

#[derive(Debug)]
struct Inner {
    /// None for an in-memory database.
    path: Option<PathBuf>,
    options: Options,
    pool: Mutex<Pool>,
    returned: Condvar,
    /// Checkpoints the WAL of a file database off the commit path; started by the first write
    /// (a handle that only reads never needs it). None inside: it could not start.
    checkpointer: OnceLock<Option<Checkpointer>>,
}

/// The connections not in use, and (in memory) who holds the one connection.
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Connection>,
    /// In memory: the thread whose transaction holds the one connection, if any.
    holder: Option<ThreadId>,
    /// In memory: the one connection was lost (it could not be brought back to autocommit), so
    /// the database is gone; every call fails with [`Error::Unusable`] instead of waiting.
    lost: bool,
}

thread_local! {
    /// The database files this thread holds a write transaction on.
    static WRITING: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's write transaction on one file, from its start to its end (panics included).
struct Writing(PathBuf);

impl Writing {
    /// Marks `file` as written by this thread; a write already under way on it (through any
    /// handle) is [`Error::Nested`], where SQLite would wait for the lock this thread holds.
    fn enter(file: &Path) -> Result<Self> {
        WRITING.with(|writing| {
            let mut writing = writing.borrow_mut();
            if writing.iter().any(|f| f == file) {
                return Err(Error::Nested { path: file.to_path_buf() });
            }
            writing.push(file.to_path_buf());
            Ok(Self(file.to_path_buf()))
        })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.with(|writing| {
            let mut writing = writing.borrow_mut();
            if let Some(at) = writing.iter().position(|f| *f == self.0) {
                writing.swap_remove(at);
            }
        });
    }
}

/// A connection lent to one transaction. Dropping it (on return, error or unwinding panic)
/// gives the connection back to the pool, so no path out of a transaction loses it.
struct Lease<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Connection {
        // Only `Drop` takes the connection out.
        self.conn.as_mut().expect("a lease holds its connection until it drops")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.give_back(conn);
        }
    }
}

/// The `tracing` target of the slow-transaction warning, so a program can route or silence it.
pub const SLOW_TARGET: &str = "aigentflow_persistence::slow";

/// A transaction (waiting for the lock included) that takes this long is logged as slow.
const SLOW_TRANSACTION: Duration = Duration::from_millis(500);

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;

impl Database {
    /// Opens (creating if needed) the database at `path` with default options, and migrates it.
    /// `path` is a file path, `sqlite:PATH`, or a `postgres://` URL (see [`Location::parse`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Options::default())
    }

    /// Opens the database at `path` read-only: see [`Access::ReadOnly`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Options { access: Access::ReadOnly, ..Options::default() })
    }

    /// Opens the database at `path` as `options.access` allows, migrating it unless read-only.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        Self::open_sets(path.as_ref(), options, &[])
    }

    /// A [`Builder`] for the database at `location` (a path, `sqlite:PATH` or a `postgres://`
    /// URL): options, and the application's own [`MigrationSet`]s to apply beside the core
    /// schema.
    pub fn builder(location: impl AsRef<Path>) -> Builder {
        Builder {
            location: Some(location.as_ref().to_path_buf()),
            options: Options::default(),
            sets: Vec::new(),
        }
    }

    /// A [`Builder`] for a fresh in-memory database.
    pub fn builder_in_memory() -> Builder {
        Builder { location: None, options: Options::default(), sets: Vec::new() }
    }

    /// Every migration set the database records, with its newest applied version: the core
    /// schema first (named `core`), then each application set by name, whichever program it
    /// belongs to.
    pub fn migration_sets(&self) -> Result<Vec<SetVersion>> {
        let core = self.schema_version()?.migration;
        self.read(|tx| crate::sets::versions(tx, core))
    }

    fn open_sets(path: &Path, options: Options, sets: &[MigrationSet]) -> Result<Self> {
        let path = match Location::parse(path)? {
            Location::Server(url) => return Self::open_postgres(&url, options, sets),
            Location::File(path) => path,
        };
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(Error::InvalidInput {
                what: "database path",
                reason: format!(
                    "\"{}\" is not a file; use Database::open_in_memory for a database in memory",
                    path.display()
                )
                .into(),
            });
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(Error::IsADirectory { path }),
            Ok(meta) if !meta.is_file() => {
                let kind = crate::output::file_kind(&meta);
                return Err(Error::NotAFile { path, kind });
            }
            Ok(meta) if meta.len() == 0 && options.access != Access::Create => {
                return Err(Error::Empty { path })
            }
            Ok(_) => {}
            // A file where a folder of the path should be is reported by creating the folder.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                if options.access != Access::Create {
                    return Err(Error::Missing { path });
                }
                // SQLite would take a `-wal` or `-journal` at the name as the new file's own:
                // reset it (a crashed database's last writes, lost) or apply it. The rule of
                // every database file the command makes (`Output::hold_database`): refused while
                // one is there, unless the file appeared meanwhile (another process made it).
                for suffix in ["-wal", "-journal"] {
                    let mut journal = path.as_os_str().to_os_string();
                    journal.push(suffix);
                    let journal = PathBuf::from(journal);
                    if std::fs::symlink_metadata(&journal).is_ok()
                        && std::fs::symlink_metadata(&path).is_err()
                    {
                        return Err(Error::ForeignJournal { path, journal });
                    }
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| Error::CreateDir { path: dir.to_path_buf(), source })?;
                }
            }
            Err(source) => return Err(Error::Inaccessible { path, source }),
        }
        let _span = tracing::debug_span!("open", path = %path.display()).entered();
        if options.access.reads_only() {
            return Self::open_read_only_at(path, options, sets);
        }
        let inner = Inner::new(Some(path), options);
        // Switching a fresh file to WAL and the first migration can meet another process doing
        // the same; SQLite answers some of those steps with BUSY without waiting on the busy
        // handler, so the whole sequence is retried within the busy timeout.
        let started = std::time::Instant::now();
        let conn = loop {
            let attempt = inner.connect_first().and_then(|mut conn| {
                migrate::run(&mut conn, inner.display_path(), sets)?;
                Ok(conn)
            });
            match attempt {
                Err(e) if e.is_busy() && started.elapsed() < inner.options.busy_timeout => {
                    tracing::debug!(error = %e, "database busy while opening; retrying");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.is_busy() => {
                    return Err(Error::locked(inner.display_path(), started.elapsed()))
                }
                other => break other?,
            }
        };
        inner.give_back(conn);
        Ok(Self { inner: Arc::new(Handle::Sqlite(inner)) })
    }

    fn open_read_only_at(path: PathBuf, options: Options, sets: &[MigrationSet]) -> Result<Self> {
        let inner = Inner::new(Some(path), options);
        let conn = inner.connect()?;
        let found =
            migrate::applied_version(&conn).map_err(migrate::classify(inner.display_path()))?;
        let latest = migrate::latest_version();
        let path = inner.display_path().to_path_buf();
        if found == 0 {
            // Not an aigentflow database (yet): say so rather than asking for a migration.
            migrate::check_adoptable(&conn, &path, false)?;
        }
        if inner.options.access == Access::Snapshot {
            inner.give_back(conn);
            return Ok(Self { inner: Arc::new(Handle::Sqlite(inner)) });
        }
        if found > latest {
            return Err(Error::NewerSchema { path, found, supported: latest });
        }
        if found < latest {
            return Err(Error::Outdated { path, found, latest });
        }
        crate::sets::check_read_only(
            &mut migrate::SqliteHistory(&conn, &path),
            sets,
            Backend::Sqlite,
            &path,
        )?;
        inner.give_back(conn);
        Ok(Self { inner: Arc::new(Handle::Sqlite(inner)) })
    }

    /// Opens the PostgreSQL database at `url`, migrating it as `options.access` allows
    /// (the server's database must exist; `Access::Create` and `ReadWrite` migrate it).
    fn open_postgres(url: &str, options: Options, sets: &[MigrationSet]) -> Result<Self> {
        let read_only = options.access.reads_only();
        let migrate = !read_only;
        let pg = crate::pg::PgInner::open(
            url,
            read_only,
            migrate,
            options.access == Access::Snapshot,
            options.busy_timeout,
            sets,
        )?;
        let key = PathBuf::from(pg.shown());
        Ok(Self { inner: Arc::new(Handle::Postgres { pg, options, key }) })
    }

    /// Opens a fresh in-memory database with default options.
    pub fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with(Options::default())
    }

    /// Opens a fresh in-memory database. It has one connection, which callers take in turn.
    pub fn open_in_memory_with(options: Options) -> Result<Self> {
        Self::open_in_memory_sets(options, &[])
    }

    fn open_in_memory_sets(options: Options, sets: &[MigrationSet]) -> Result<Self> {
        let inner = Inner::new(None, options);
        let mut conn = inner.connect()?;
        migrate::run(&mut conn, inner.display_path(), sets)?;
        inner.give_back(conn);
        Ok(Self { inner: Arc::new(Handle::Sqlite(inner)) })
    }

    /// Opens the default database: `$AIGENTFLOW_DB`, else `orchestrator-data/aigentflow.db`.
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_path())
    }

    /// `$AIGENTFLOW_DB` if set and not empty, else `orchestrator-data/aigentflow.db`.
    pub fn default_path() -> PathBuf {
        std::env::var_os(DB_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// The file, or None for an in-memory or server database.
    pub fn path(&self) -> Option<&Path> {
        match &*self.inner {
            Handle::Sqlite(inner) => inner.path.as_deref(),
            Handle::Postgres { .. } => None,
        }
    }

    /// On PostgreSQL, the exchanges with the server that this database's connections have made
    /// so far, each a round trip (a statement, a BEGIN or COMMIT, a fetch of rows); None on
    /// SQLite, where a statement is a function call. For tests and benchmarks that count what a
    /// call costs.
    pub fn round_trips(&self) -> Option<u64> {
        self.pg_stats().map(crate::pg::Stats::round_trips)
    }

    /// What the PostgreSQL backend asked of the server so far (None on SQLite).
    pub(crate) fn pg_stats(&self) -> Option<&crate::pg::Stats> {
        match &*self.inner {
            Handle::Postgres { pg, .. } => Some(pg.stats()),
            Handle::Sqlite(_) => None,
        }
    }

    /// The backend this handle works on.
    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Handle::Sqlite(_) => Backend::Sqlite,
            Handle::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Where the database is, as people read it: the file, `:memory:`, or the server's URL
    /// without its password.
    pub fn location(&self) -> &Path {
        match &*self.inner {
            Handle::Sqlite(inner) => inner.display_path(),
            Handle::Postgres { key, .. } => key,
        }
    }

    fn options(&self) -> &Options {
        match &*self.inner {
            Handle::Sqlite(inner) => &inner.options,
            Handle::Postgres { options, .. } => options,
        }
    }

    /// Whether this handle was opened read-only ([`Access::ReadOnly`]).
    pub fn is_read_only(&self) -> bool {
        match &*self.inner {
            Handle::Sqlite(inner) => inner.options.access.reads_only() && inner.path.is_some(),
            Handle::Postgres { options, .. } => options.access.reads_only(),
        }
    }

    /// The current instant from the injected clock, truncated to milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        time::millis(self.options().clock.now())
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options().clock
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<SchemaVersion> {
        self.read(|tx| match tx.conn() {
            Conn::Sqlite(conn) => Ok(SchemaVersion {
                seed: migrate::seed_version(conn).or_error()?,
                migration: migrate::applied_version(conn).or_error()?,
                latest: migrate::latest_version(),
            }),
            Conn::Postgres(_) => Ok(SchemaVersion {
                seed: tx.query_row(migrate::SEED_VERSION, &[], |r| r.get::<String>(0))?,
                migration: crate::pg::applied_in(tx)?,
                latest: crate::pg::latest_version(),
            }),
        })
    }

    /// A [`Watch`](crate::Watch) that wakes when other connections (of any process) commit
    /// `what`: on PostgreSQL a connection of its own LISTENs for the schema's notifications; on
    /// a SQLite file a read-only connection of its own looks at `PRAGMA data_version`. It never
    /// writes, so a read-only handle may watch. An in-memory database has no other connection to
    /// wait for: [`Error::Unsupported`].
    pub fn watch(&self, what: crate::Watched) -> Result<crate::Watch> {
        match &*self.inner {
            Handle::Postgres { pg, .. } => Ok(crate::Watch::postgres(pg.listen(what.channel())?)),
            Handle::Sqlite(inner) => match &inner.path {
                Some(path) => {
                    let conn = open_read_only(path)?;
                    conn.busy_timeout(inner.options.busy_timeout)
                        .map_err(migrate::classify(path))?;
                    crate::Watch::sqlite(conn, path.clone())
                }
                None => Err(Error::Unsupported {
                    what: "waiting for the commits of other connections",
                    backend: "an in-memory SQLite database",
                }),
            },
        }
    }

    /// Runs `f` in a read transaction: every query in it sees one consistent snapshot.
    ///
    /// Whatever `f` does (returns, fails or panics), its transaction ends and the connection goes
    /// back to the pool. In an in-memory database a `read` or `write` inside `f` is
    /// [`Error::Nested`], as is a `write` inside a `write` of the same file: pass the [`Tx`] on
    /// instead.
    pub fn read<T, E: From<Error>>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        self.run(TransactionBehavior::Deferred, f)
    }

    /// Runs `f` in a write transaction, started `IMMEDIATE` so writers queue on the busy timeout
    /// instead of failing. It commits if `f` returns `Ok`, and rolls back everything `f` wrote
    /// otherwise (a panic in `f` included, before the panic goes on), so several stores can write
    /// atomically together.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.is_read_only() {
            return Err(Error::ReadOnly { path: self.location().to_path_buf() }.into());
        }
        self.run(TransactionBehavior::Immediate, f)
    }

    /// Runs one statement as a transaction of its own; returns how many rows it changed. On
    /// PostgreSQL it is sent without BEGIN and COMMIT and commits by itself: one round trip
    /// where a [`write`](Self::write) of it takes three. On SQLite it is a `write` of it.
    ///
    /// For a write that is one statement, and that can tell from what it changed whether it
    /// did its work (a conditional INSERT, an UPDATE … WHERE). Should the connection be lost
    /// once the statement is sent, the error is [`Error::OutcomeUnknown`]: the server may
    /// have committed it, and a read must tell before it is tried again.
    pub fn execute_alone(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        match self.alone(sql)? {
            Some((pg, key)) => Self::sent_alone(key, || pg.execute_alone(sql, params)),
            None => self.write(|tx| tx.execute(sql, params)).map(|n| n as u64),
        }
    }

    /// [`execute_alone`](Self::execute_alone) of a statement that also takes rows: up to a
    /// thousand rows written by one statement that commits by itself. `sql` takes `params` as
    /// `?1` to `?M` and `rows` as one array per column, `?M+1` to `?M+N`, which its text casts
    /// to their column's type and reads with `unnest` (`… SELECT * FROM unnest(?3::bigint[],
    /// ?4::text[])`).
    ///
    /// PostgreSQL only: SQLite has no arrays (and its transactions cost no round trip), so
    /// there it is [`Error::InvalidInput`], as are no rows, more than a thousand, and rows of
    /// different widths.
    pub fn execute_alone_rows<const N: usize>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        rows: &[[Param<'_>; N]],
    ) -> Result<u64> {
        let refused = |reason: String| Error::InvalidInput { what: "rows", reason: reason.into() };
        if rows.is_empty() || rows.len() > crate::pg::INSERT_CHUNK {
            return Err(refused(format!(
                "{} rows; a statement run alone takes 1 to {}",
                rows.len(),
                crate::pg::INSERT_CHUNK
            )));
        }
        match self.alone(sql)? {
            Some((pg, key)) => Self::sent_alone(key, || {
                let rows: Vec<&[Param<'_>]> = rows.iter().map(|row| &row[..]).collect();
                pg.execute_alone_rows(sql, params, &rows)
            }),
            None => Err(refused(
                "rows bound as arrays need PostgreSQL; on SQLite write them in a transaction"
                    .to_owned(),
            )),
        }
    }

    /// Whether `sql` may run alone here: on PostgreSQL its pool and key (None on SQLite);
    /// refused on a read-only handle, and for transaction control.
    fn alone(&self, sql: &str) -> Result<Option<(&crate::pg::PgInner, &Path)>> {
        if self.is_read_only() {
            return Err(Error::ReadOnly { path: self.location().to_path_buf() });
        }
        match &*self.inner {
            Handle::Postgres { pg, key, .. } => {
                if let Some(word) = crate::bind::transaction_control(sql) {
                    return Err(Error::InvalidInput {
                        what: "statement",
                        reason: format!("{word} is transaction control; a statement run alone is its own transaction").into(),
                    });
                }
                Ok(Some((pg, key)))
            }
            Handle::Sqlite(_) => Ok(None),
        }
    }

    /// Sends a statement alone on PostgreSQL, as a write (see [`alone`](Self::alone)).
    fn sent_alone(key: &Path, send: impl FnOnce() -> Result<u64>) -> Result<u64> {
        let started = Instant::now();
        // A write inside a write on the same thread would wait for its own row locks.
        let _writing = Writing::enter(key)?;
        let changed = send();
        if !matches!(changed, Err(Error::Locked { .. })) {
            slow(started, true, key);
        }
        changed
    }

    fn run<T, E: From<Error>>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let inner = match &*self.inner {
            Handle::Sqlite(inner) => inner,
            Handle::Postgres { pg, key, .. } => {
                let started = Instant::now();
                let write = matches!(behavior, TransactionBehavior::Immediate);
                // A write inside a write on the same thread would wait for its own row locks.
                let _writing = if write { Some(Writing::enter(key)?) } else { None };
                // A transaction that gave up waiting for a lock says so in its error (`Locked`,
                // from `lock_timeout`, which the busy timeout sets); a warning would be a second line.
                let gave_up = std::cell::Cell::new(false);
                let result = pg.run_noting(write, &gave_up, |pgtx| {
                    let tx = Tx::new(Conn::Postgres(pgtx), self, write);
                    let value = f(&tx)?;
                    tx.check_failures()?;
                    Ok(value)
                });
                if !gave_up.get() {
                    slow(started, write, key);
                }
                return result;
            }
        };
        let started = Instant::now();
        let path = inner.display_path();
        // A write inside a write of the same file on the same thread would wait for itself.
        let _writing = match (&inner.path, behavior) {
            (Some(file), TransactionBehavior::Immediate) => Some(Writing::enter(file)?),
            _ => None,
        };
        // SQLite errors raised on this thread until the transaction ends name this file.
        let _at = crate::error::AtPath::enter(path);
        let mut lease = inner.take()?;
        // Waiting out the busy timeout at BEGIN or COMMIT is one error that says how long.
        let gave_up = std::cell::Cell::new(false);
        let locked = |e: rusqlite::Error| match Error::from_sqlite(e) {
            e if e.is_busy() => {
                gave_up.set(true);
                Error::locked(path, started.elapsed())
            }
            e => e,
        };
        let result = (|| {
            let changed_before = lease.conn().total_changes();
            let tx = lease.conn().transaction_with_behavior(behavior).map_err(locked)?;
            let write = matches!(behavior, TransactionBehavior::Immediate);
            let value = {
                let tx = Tx::new(Conn::Sqlite(&tx), self, write);
                let value = f(&tx)?;
                tx.check_failures()?;
                value
            };
            tx.commit().map_err(locked)?;
            if matches!(behavior, TransactionBehavior::Immediate) {
                if let Some(checkpointer) = inner.checkpointer() {
                    let rows = lease.conn().total_changes().saturating_sub(changed_before);
                    checkpointer.committed(rows);
                }
            }
            Ok(value)
        })();
        // A panic in `f` unwinds through here too: the transaction rolls back as it drops, and
        // the lease gives the connection back.
        drop(lease);
        // A transaction that gave up waiting says so in its error; a warning would be a second line.
        if !gave_up.get() {
            slow(started, matches!(behavior, TransactionBehavior::Immediate), path);
        }
        result
    }

    /// Closes the database if this is its last handle, reporting any error SQLite gives on
    /// closing (the WAL is checkpointed when its last connection closes). While other clones are
    /// alive, this only drops this handle: they keep working.
    pub fn close(self) -> Result<()> {
        // Of handles closed at the same time, exactly one gets the pool.
        let Some(handle) = Arc::into_inner(self.inner) else {
            return Ok(());
        };
        let Handle::Sqlite(inner) = handle else {
            // The pool closes its connections as it drops.
            return Ok(());
        };
        let Inner { pool, checkpointer, .. } = inner;
        // The checkpoint thread's connection closes first, so the last close is one reported here.
        drop(checkpointer);
        let pool = pool.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut first_error = None;
        for conn in pool.idle {
            if let Err((_, e)) = conn.close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(Error::from_sqlite(e)))
    }
}

#[cfg(test)]
impl Database {
    /// The SQLite side of this handle (tests of the pool).
    fn sqlite_inner(&self) -> &Inner {
        match &*self.inner {
            Handle::Sqlite(inner) => inner,
            Handle::Postgres { .. } => unreachable!("a test of the SQLite pool opened PostgreSQL"),
        }
    }
}

/// Logs a transaction that took [`SLOW_TRANSACTION`] or longer (waiting for locks included).
fn slow(started: Instant, write: bool, location: &Path) {
    let elapsed = started.elapsed();
    if elapsed >= SLOW_TRANSACTION {
        let kind = if write { "write" } else { "read" };
        tracing::warn!(target: SLOW_TARGET, ms = elapsed.as_millis() as u64, kind, path = %location.display(), "slow transaction");
    }
}

impl Inner {
    /// A handle's state before any connection is made.
    fn new(path: Option<PathBuf>, options: Options) -> Self {
        Self {
            path,
            options,
            pool: Mutex::default(),
            returned: Condvar::new(),
            checkpointer: OnceLock::new(),
        }
    }

    /// The checkpoint thread of a file database, started on first use. Without it the database
    /// still works: commits then checkpoint themselves past the safety net.
    fn checkpointer(&self) -> Option<&Checkpointer> {
        self.path.as_ref()?;
        self.checkpointer
            .get_or_init(|| {
                match self.connect().and_then(|c| Checkpointer::start(c).map_err(Error::Thread)) {
                    Ok(checkpointer) => Some(checkpointer),
                    Err(e) => {
                        tracing::warn!(error = %e, "no background checkpoints for this handle");
                        None
                    }
                }
            })
            .as_ref()
    }

    fn display_path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(":memory:"))
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, a new one for a file, or (in memory) the one connection once free.
    /// In memory, waiting is bounded by the busy timeout, a call from inside a transaction on the
    /// same thread is refused (it would wait for itself), and a lost connection is reported.
    fn take(&self) -> Result<Lease<'_>> {
        let mut pool = self.lock_pool();
        if self.path.is_some() {
            let conn = match pool.idle.pop() {
                Some(conn) => conn,
                None => {
                    drop(pool);
                    self.connect()?
                }
            };
            return Ok(Lease { inner: self, conn: Some(conn) });
        }
        let me = std::thread::current().id();
        let deadline = Instant::now() + self.options.busy_timeout;
        loop {
            if pool.lost {
                return Err(Error::Unusable { path: self.display_path().to_path_buf() });
            }
            if let Some(conn) = pool.idle.pop() {
                pool.holder = Some(me);
                return Ok(Lease { inner: self, conn: Some(conn) });
            }
            if pool.holder == Some(me) {
                return Err(Error::Nested { path: self.display_path().to_path_buf() });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::PoolTimeout {
                    path: self.display_path().to_path_buf(),
                    waited: self.options.busy_timeout,
                });
            }
            pool = self.returned.wait_timeout(pool, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Returns a connection to the pool, first bringing it back to autocommit: a transaction
    /// still open (a panic unwound past it, or the caller's own SQL began one) is rolled back.
    fn give_back(&self, conn: Connection) {
        let conn = if conn.is_autocommit() {
            Some(conn)
        } else {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, path = %self.display_path().display(), "cannot roll back a returned connection");
            }
            conn.is_autocommit().then_some(conn)
        };
        self.put(conn);
    }

    /// Puts a connection back, or records that it is gone: a file database opens another when
    /// needed; an in-memory database is then lost, and every waiter is told so.
    fn put(&self, conn: Option<Connection>) {
        let mut pool = self.lock_pool();
        pool.holder = None;
        let spare = match conn {
            Some(conn) if pool.idle.len() < MAX_IDLE => {
                pool.idle.push(conn);
                None
            }
            Some(conn) => Some(conn),
            None => {
                if self.path.is_none() {
                    tracing::error!("the in-memory database's connection is lost");
                    pool.lost = true;
                }
                None
            }
        };
        drop(pool);
        drop(spare);
        self.returned.notify_all();
    }

    /// The first connection of a handle: the only one that may create the file (`Access::Create`).
    /// Before anything is written to it (not even the switch to WAL), the file is checked to be
    /// an aigentflow database, or one this opening may make one of.
    fn connect_first(&self) -> Result<Connection> {
        self.open_connection(Some(self.options.access == Access::Create))
    }

    /// Another connection to a database that exists: if its file was removed under a live
    /// handle, this fails instead of creating a new, empty database.
    fn connect(&self) -> Result<Connection> {
        self.open_connection(None)
    }

    /// A configured connection; `first` (with whether it may create the file) for the first.
    fn open_connection(&self, first: Option<bool>) -> Result<Connection> {
        let create = first == Some(true);
        let path = self.display_path();
        let classify = migrate::classify(path);
        let read_only = self.options.access.reads_only();
        let conn = match &self.path {
            Some(p) if read_only => open_read_only(p)?,
            Some(p) => {
                let create =
                    if create { OpenFlags::SQLITE_OPEN_CREATE } else { OpenFlags::empty() };
                let link = if self.options.follow_link {
                    OpenFlags::empty()
                } else {
                    OpenFlags::SQLITE_OPEN_NOFOLLOW
                };
                Connection::open_with_flags(
                    literal_path(p),
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | create
                        | link
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(&classify)?
            }
            None => Connection::open_in_memory().map_err(&classify)?,
        };
        conn.busy_timeout(self.options.busy_timeout).map_err(&classify)?;
        if let (Some(create), Some(_)) = (first, &self.path) {
            if !read_only {
                migrate::check_adoptable(&conn, path, create)?;
            }
        }
        conn.set_prepared_statement_cache_capacity(64);
        // Query-planner stability: plans never depend on bound values, so cached statements are
        // not re-prepared each time a new value is bound (the bundled SQLite has STAT4 on).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(&classify)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(&classify)?;
        if read_only {
            return Ok(conn);
        }
        let synchronous = match self.options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        if self.path.is_some() {
            let mode: String =
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(&classify)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), mode, "WAL mode not available");
            }
        }
        conn.pragma_update(None, "synchronous", synchronous).map_err(&classify)?;
        // What a writer deletes or overwrites is zeroed in the file, not left in free space:
        // deleting a lesson or a configuration value that held a secret removes its bytes.
        conn.pragma_update(None, "secure_delete", "ON").map_err(&classify)?;
        if self.path.is_some() {
            // The checkpoint thread keeps the WAL short; a commit checkpoints only past this.
            conn.pragma_update(None, "wal_autocheckpoint", SAFETY_NET_PAGES).map_err(&classify)?;
        }
        Ok(conn)
    }
}

/// A path as SQLite must be given it to take it literally. The bundled SQLite reads a file name
/// that starts with `file:` as a URI (with `mode=memory`, `immutable=1`… options), so such a
/// relative path gets a leading `./`: a path is always a file, never a URI.
pub(crate) fn literal_path(path: &Path) -> std::borrow::Cow<'_, Path> {
    use std::os::unix::ffi::OsStrExt;
    if path.is_relative() && path.as_os_str().as_bytes().starts_with(b"file:") {
        std::borrow::Cow::Owned(Path::new(".").join(path))
    } else {
        std::borrow::Cow::Borrowed(path)
    }
}

/// A read-only connection. A database in a folder that cannot hold SQLite's `-shm` (a read-only
/// folder or mount) is read as immutable, but only when nothing beside it holds changes that
/// immutable reading would ignore: a `-wal` with frames, or a `-journal` to roll back. A hot
/// `-journal` in a folder that can be written is a writer's unfinished transaction, which a read
/// leaves to a command that writes.
fn open_read_only(path: &Path) -> Result<Connection> {
    let classify = migrate::classify(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(literal_path(path), flags).map_err(&classify)?;
    // The first read is what meets a missing `-shm` in a folder that cannot hold one.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        Ok(()) => Ok(conn),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
            ) =>
        {
            drop(conn);
            for side in ["-wal", "-journal"] {
                let side_path = PathBuf::from(format!("{}{side}", path.display()));
                if std::fs::metadata(&side_path).is_ok_and(|m| m.len() > 0) {
                    // A hot journal stops a read-only reader wherever it is; only where nothing
                    // could roll it back is the folder the cause.
                    let path = path.to_path_buf();
                    return Err(match side {
                        "-journal" if crate::error::not_writable(&path).is_none() => {
                            Error::UnfinishedTransaction { path }
                        }
                        _ => Error::PendingChanges { path, side },
                    });
                }
            }
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(&classify)
        }
        Err(e) => Err(classify(e)),
    }
}

/// A path as the path part of a `file:` URI: every byte but unreserved ones and `/` escaped.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A transaction on the database, handed to the closure of [`Database::read`] or [`Database::write`].
/// Stores take it in their `*_in` methods so that one transaction can span several stores.
pub struct Tx<'a> {
    conn: Conn<'a>,
    db: &'a Database,
    /// Whether it runs inside [`Database::write`].
    write: bool,
    /// The first of its statements that failed.
    failed: FirstFailure,
}

/// The driver side of a [`Tx`].
#[derive(Clone, Copy)]
pub(crate) enum Conn<'a> {
    Sqlite(&'a Connection),
    Postgres(&'a (dyn crate::pg::PgAccess + 'a)),
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

impl<'a> Tx<'a> {
    fn new(conn: Conn<'a>, db: &'a Database, write: bool) -> Self {
        Self { conn, db, write, failed: FirstFailure::default() }
    }

    /// Where the statement methods note their first failure.
    pub(crate) fn failures(&self) -> &FirstFailure {
        &self.failed
    }

    /// [`Error::Aborted`] when a statement of this write failed, though its closure returned
    /// `Ok`: the write is then rolled back on both backends (a read has nothing to lose).
    fn check_failures(&self) -> Result<()> {
        match self.failed.first() {
            Some(first) if self.write => {
                Err(Error::Aborted { path: self.db.location().to_path_buf(), first: first.into() })
            }
            _ => Ok(()),
        }
    }

    /// The PostgreSQL transaction, on PostgreSQL (None on SQLite, and from inside a
    /// [`Tx::text_rows`] callback, while the connection streams its rows), lent to `f`: with
    /// [`Tx::sqlite`], the escape hatch to the backend's driver for what [`Tx::prepare`] and its
    /// kin do not cover (COPY, LISTEN, types the neutral API has no [`Param`] for). What passes
    /// through it bypasses the redaction policy (decision 9) and returns the driver's errors; a
    /// statement that fails in it must fail the closure too (PostgreSQL rolls the whole
    /// transaction back at commit after a failed statement, and only the neutral API notices).
    ///
    /// [`Param`]: crate::Param
    pub fn postgres<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'_>) -> T) -> Option<T> {
        match self.conn {
            Conn::Sqlite(_) => None,
            Conn::Postgres(c) => {
                let mut f = Some(f);
                let mut out = None;
                c.with_transaction(&mut |tx| {
                    if let Some(f) = f.take() {
                        out = Some(f(tx));
                    }
                });
                out
            }
        }
    }

    /// The SQLite connection, on SQLite (None on PostgreSQL): the escape hatch, and the one
    /// driver type in this crate's public API, kept on purpose. Tests that play an attacker with
    /// file access use it to write around the stores (forged rows, a page limit standing in for
    /// a full disk) where [`Tx::prepare`] and friends, which bind only redacted [`Param`]s, cannot.
    /// Text bound through it bypasses the redaction policy (decision 9) and its errors are the
    /// driver's, so the workspace's clippy configuration forbids it (`disallowed-methods`)
    /// outside those tests.
    ///
    /// [`Param`]: crate::Param
    pub fn sqlite(&self) -> Option<&'a Connection> {
        match self.conn {
            Conn::Sqlite(conn) => Some(conn),
            Conn::Postgres(_) => None,
        }
    }

    pub(crate) fn conn(&self) -> Conn<'a> {
        self.conn
    }

    /// The SQLite connection for this crate's SQLite-only work, or [`Error::Unsupported`]
    /// naming `what` on another backend.
    pub(crate) fn connection_for(&self, what: &'static str) -> Result<&'a Connection> {
        match self.conn {
            Conn::Sqlite(conn) => Ok(conn),
            Conn::Postgres(_) => {
                Err(Error::Unsupported { what, backend: Backend::Postgres.name() })
            }
        }
    }

    /// Whether this transaction runs inside [`Database::write`] (it may write), not
    /// [`Database::read`].
    pub(crate) fn is_write(&self) -> bool {
        self.write
    }

    /// The backend this transaction runs on.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL: the text of a statement whose dialects
    /// differ.
    pub fn dialect<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self.conn {
            Conn::Sqlite(_) => sqlite,
            Conn::Postgres(_) => postgres,
        }
    }

    /// The database this transaction belongs to.
    pub fn database(&self) -> &'a Database {
        self.db
    }

    /// The current instant from the database's clock, truncated to milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        self.db.now()
    }
}

#[cfg(test)]
mod tests;
