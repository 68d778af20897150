use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aigentflow_core_states::TaskId;

use crate::redact::redact_text;

/// Text shown in an error message: it went through the redaction policy when it was made, so an
/// error never echoes a secret that came with the input it refuses (decision 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeText(String);

impl SafeText {
    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for SafeText {
    fn from(text: String) -> Self {
        match redact_text(&text) {
            std::borrow::Cow::Borrowed(_) => Self(text),
            std::borrow::Cow::Owned(clean) => Self(clean),
        }
    }
}

impl From<&str> for SafeText {
    fn from(text: &str) -> Self {
        Self(redact_text(text).into_owned())
    }
}

impl fmt::Display for SafeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong in the persistence layer. Messages name the path, table, id or value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database's folder could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    /// A file that must exist does not (opening without `create`).
    #[error("no database at {path}")]
    Missing { path: PathBuf },
    /// The path is a folder, not a database file.
    #[error("{path} is a directory, not a database file")]
    IsADirectory { path: PathBuf },
    /// The path is a device, a FIFO or a socket, not a file: SQLite would read and write it
    /// as one and make its side files (`-journal`, `-wal`) beside its name.
    #[error("{path} is a {kind}, not a database file")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The file is empty (0 bytes): not a database yet.
    #[error("{path} is an empty file, not a database; create one with `aigentflow init`")]
    Empty { path: PathBuf },
    /// The file is a SQLite database with no tables: not an aigentflow database yet.
    #[error("{path} is a SQLite database with no tables, not an aigentflow database; create one with `aigentflow init`")]
    Blank { path: PathBuf },
    /// The file is a SQLite database of something else: none of its tables is aigentflow's.
    #[error("{path} is a SQLite database of something else (tables {tables}), not an aigentflow database; it is left as it is")]
    NotAigentflow { path: PathBuf, tables: SafeText },
    /// The path cannot be examined (permissions, a file where a folder is expected…).
    #[error("cannot access {path}: {source}")]
    Inaccessible { path: PathBuf, source: std::io::Error },
    /// The database is at an older schema and was opened read-only, so it cannot be migrated.
    #[error("database {path} is at schema version {found}, older than this build's {latest}; migrate it with `aigentflow db migrate`")]
    Outdated { path: PathBuf, found: i64, latest: i64 },
    /// A database that can only be read here (its folder or mount is read-only) has a `-wal` or
    /// `-journal` beside it holding changes SQLite must apply first, which a read-only reader
    /// cannot: reading without them would show the database as it was before them.
    #[error("cannot read {path}: its {side} holds changes SQLite must apply first, and this folder cannot be written; copy the database with its {side} to a folder you can write, or run as a user who can write it")]
    PendingChanges { path: PathBuf, side: &'static str },
    /// A database with a hot `-journal` beside it, in a folder that can be written: a writer
    /// stopped in the middle of a transaction, whose pages SQLite must roll back before the
    /// database can be read. A read never writes, so it leaves that to a command that writes.
    #[error("cannot read {path}: its -journal holds a transaction a writer left unfinished (it stopped mid-write), which SQLite must roll back before the database can be read, and a read does not write; any command that writes rolls it back, e.g. `aigentflow db migrate`")]
    UnfinishedTransaction { path: PathBuf },
    /// A write on a handle opened read-only.
    #[error("database {path} is open read-only")]
    ReadOnly { path: PathBuf },
    /// The in-memory database's one connection could not be brought back out of a transaction
    /// (after a panic in a `read`/`write` closure), so its data is gone.
    #[error("database {path} is unusable: its connection was left inside a transaction that could not be rolled back")]
    Unusable { path: PathBuf },
    /// A `read`/`write` of an in-memory database started inside another on the same thread, or a
    /// `write` of a file inside another write of it: it would wait for itself. The inner work
    /// should use the `Tx` it was given.
    #[error("database {path}: a read or write was started inside another one on the same thread; pass the Tx instead")]
    Nested { path: PathBuf },
    /// No connection of an in-memory database became free within the busy timeout.
    #[error("database {path} is busy: its connection stayed in use for {} ms", waited.as_millis())]
    PoolTimeout { path: PathBuf, waited: std::time::Duration },
    /// The file exists but is not a SQLite database.
    #[error("{path} is not a SQLite database")]
    NotADatabase { path: PathBuf },
    /// The file was migrated by a newer version of this layer.
    #[error("database {path} is at schema version {found}, newer than this build knows ({supported}); use a newer aigentflow")]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    /// The database holds an application migration set at a newer version than the program
    /// opening it knows (see [`MigrationSet`](crate::MigrationSet)).
    #[error("database {path} has migration set {set} at version {found}, newer than this program's {supported}; use the newer program that owns the set")]
    NewerSet { path: PathBuf, set: SafeText, found: i64, supported: i64 },
    /// An application migration set is older than the program's, and the handle is read-only,
    /// so it cannot be migrated.
    #[error("database {path} has migration set {set} at version {found}, older than this program's {latest}; open it for writing once to migrate it")]
    OutdatedSet { path: PathBuf, set: SafeText, found: i64, latest: i64 },
    /// A write's statement failed and the closure went on and returned `Ok`: the transaction
    /// was rolled back, on both backends (PostgreSQL cannot commit after a failed statement),
    /// so that nothing of it is half-written. `first` is the failed statement's error.
    #[error("the transaction on {path} was rolled back: a statement in it failed ({first})")]
    Aborted { path: PathBuf, first: SafeText },
    /// The file could not be opened or set up: SQLite's message and its extended result code
    /// (see [`Error::Sqlite`]).
    #[error("cannot open database {path}: {message}")]
    Open { path: PathBuf, code: Option<i32>, message: SafeText },
    /// A migration failed; nothing of it was applied. `reason` is the migration runner's
    /// message: the migration it was applying (version and name) and the database's error.
    #[error("migrating database {path} failed: {reason}")]
    Migrate { path: PathBuf, reason: SafeText },
    /// An INSERT stored fewer rows than it was given, without an error: something in the
    /// database that is not this schema's (a trigger that ignores rows) dropped them.
    #[error("{table}: {given} rows were written and {stored} stored; the database drops rows silently (a trigger that is not this schema's?): run `aigentflow db check`")]
    NotStored { table: SafeText, given: u64, stored: u64 },
    /// No row with this id.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: SafeText },
    /// A stored value cannot be read (malformed JSON, unreadable timestamp…).
    #[error("unreadable {table}.{column} in row {id}: {reason}")]
    CorruptRow { table: &'static str, column: &'static str, id: SafeText, reason: SafeText },
    /// A caller gave a value this layer cannot store.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: SafeText },
    /// The history or checkpoints to save are shorter than the stored ones: a stale copy.
    #[error(
        "task {task_id}: stale save: {stored} {what} are stored, the state to save has {given}"
    )]
    StaleSave { task_id: TaskId, what: &'static str, stored: u64, given: u64 },
    /// The history to save disagrees with the stored one, first at transition `seq`.
    #[error("task {task_id}: the history to save differs from the stored one at transition {seq}: {detail}")]
    HistoryConflict { task_id: TaskId, seq: u64, detail: SafeText },
    /// The checkpoints to save disagree with the stored ones, first at checkpoint `seq`.
    #[error("task {task_id}: the checkpoints to save differ from the stored ones at checkpoint {seq}: {detail}")]
    CheckpointConflict { task_id: TaskId, seq: u64, detail: SafeText },
    /// A backup could not be completed; nothing was left at the destination.
    #[error("backup to {path} failed: {reason}")]
    Backup { path: PathBuf, reason: SafeText },
    /// A copy into a new database file could not be completed; nothing was left at the
    /// destination.
    #[error("copy to {path} failed: {reason}")]
    Copy { path: PathBuf, reason: SafeText },
    /// A new database file would have a journal that is not its own: SQLite applies a `-wal`
    /// or a hot `-journal` at a database's name to the file when it is next opened, so the file
    /// would not hold what was written.
    #[error("refusing to write the database {path}: {journal} is there already, and SQLite would apply it to the new file when it is next opened; move it away first (it may hold a crashed database's last writes)")]
    ForeignJournal { path: PathBuf, journal: PathBuf },
    /// An output path is one of the database's own files (the file, its -wal, -shm or -journal),
    /// by identity or, for a side file not there yet, by name.
    #[error("refusing to write {path}: it is the database's own file {file}")]
    OwnFile { path: PathBuf, file: PathBuf },
    /// An output path that cannot be written: a folder, a missing folder, a name of no file.
    #[error("cannot write {path}: {reason}")]
    OutputPath { path: PathBuf, reason: SafeText },
    /// An output that never replaces a file (a backup) found one at its path.
    #[error("{path} already exists; this command never replaces a file, choose another name")]
    OutputExists { path: PathBuf },
    /// Another writer changed the output path, or the temporary file, while this output was
    /// written; this output was discarded and the path left as the other writer made it.
    #[error("{path} was changed by another writer while this output was written; this output was discarded")]
    OutputChanged { path: PathBuf },
    /// Writing an output failed; nothing replaced the file at the path.
    #[error("cannot write {path}: {action}: {source}")]
    Output { path: PathBuf, action: String, source: std::io::Error },
    /// The background checkpoint thread could not be started.
    #[error("cannot start the WAL checkpoint thread: {0}")]
    Thread(std::io::Error),
    /// Another writer held a lock this transaction needed for the whole busy timeout: SQLite's
    /// lock on the file, or on PostgreSQL a row, table or advisory lock (SQLSTATE 55P03 once
    /// `lock_timeout` ran out). `waited` counts from the start of the transaction.
    #[error("database {path} is locked by another process (waited {})", seconds(*waited))]
    Locked { path: PathBuf, waited: Duration },
    /// A write found no room: the disk or a quota is full (or SQLite's page limit is reached).
    #[error("database {path} cannot grow: the disk is full; free some space and try again")]
    DiskFull { path: PathBuf },
    /// A write went past this process's file size limit (`ulimit -f`, `RLIMIT_FSIZE`), which
    /// the operating system tells as a full disk or a failed write.
    #[error("database {path} cannot grow past this process's file size limit ({limit} bytes, `ulimit -f`); raise the limit and try again")]
    FileSizeLimit { path: PathBuf, limit: u64 },
    /// This process's file size limit is below the size of SQLite's shared-memory file
    /// ([`SHM_BYTES`]), which any connection to a WAL database, a read too, makes beside it:
    /// nothing about the database grows, the limit is too low to open it at all.
    #[error("cannot use database {path}: this process's file size limit ({limit} bytes, `ulimit -f`) is below the {shm} bytes of the shared-memory file SQLite keeps beside it (-shm), which even a read needs; raise the limit and try again", shm = SHM_BYTES)]
    FileSizeLimitBelowShm { path: PathBuf, limit: u64 },
    /// The database cannot be written where it is; `why` says what to change.
    #[error("database {path} cannot be written: {why}")]
    NotWritable { path: PathBuf, why: NotWritable },
    /// SQLite could not open the file; `why` names the part of the path at fault if it can.
    #[error("cannot open database {path}: {why}")]
    CannotOpen { path: PathBuf, why: String },
    /// The operating system reported an I/O error on the database's files.
    #[error("I/O error on database {path}: {reason}; check the disk and its file system")]
    Io { path: PathBuf, reason: String },
    /// Any other SQLite error: SQLite's message and its extended result code (`code & 0xff` is
    /// the primary code: 1 `SQLITE_ERROR`, 5 `SQLITE_BUSY`, 11 `SQLITE_CORRUPT`…), or None for
    /// an error the driver raised itself (a value that does not fit the type read…). The
    /// driver's own error type stays inside this crate, as PostgreSQL's does ([`Error::Postgres`]).
    #[error("database error: {message}")]
    Sqlite { code: Option<i32>, message: SafeText },
    /// The connection was lost after a statement that commits by itself
    /// ([`Database::execute_alone`](crate::Database::execute_alone)) was sent: the server may
    /// have committed it or not, and only a read can tell.
    #[error("the connection to database {path} was lost after a statement was sent; it may or may not have been committed: {reason}")]
    OutcomeUnknown { path: PathBuf, reason: SafeText },
    /// A PostgreSQL server could not be reached, or refused the connection.
    #[error("cannot connect to database {url}: {reason}")]
    Connect { url: SafeText, reason: SafeText },
    /// Any other PostgreSQL error: the server's message and its SQLSTATE code.
    #[error("database error: {message}{}", code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Postgres { code: Option<String>, message: SafeText },
    /// A result column holds another kind of value than the one read.
    #[error("result column {index} holds {found}, not {expected}")]
    ColumnType { index: usize, expected: &'static str, found: &'static str },
    /// A copy's destination already holds rows.
    #[error("{location} is not empty ({table} holds {rows} rows); copy into a fresh database (`aigentflow init`)")]
    NotEmpty { location: PathBuf, table: &'static str, rows: u64 },
    /// A table's column exists in one database of a copy and not in the other: their schemas
    /// differ, and copying would lose that column's data or have no value for it.
    #[error("cannot copy {table}: its column {column} is missing from {location}; bring both databases to the same schema version first")]
    SchemaMismatch { table: &'static str, column: SafeText, location: PathBuf },
    /// A copy met a cell holding bytes, which no store writes and a text column cannot take.
    #[error("cannot copy {table}.{column} of row {row} (in copy order): it holds bytes that are not text, which no store writes")]
    Uncopyable { table: &'static str, column: SafeText, row: u64 },
    /// A copy met text the redaction policy would change in a row a hash seals (the audit
    /// log's, a workflow definition's), written around the stores: redacting it would break the
    /// hash, copying it would store a secret.
    #[error("cannot copy {table}.{column} of row {row} (in copy order): it holds text the redaction policy removes (a secret, or what looks like one), which the row's hash seals, so a copy can neither redact nor keep it; nothing copied")]
    SealedSecret { table: &'static str, column: SafeText, row: u64 },
    /// What this backend does not offer (a SQLite file operation on a server database…).
    #[error("{what} is not available on {backend}")]
    Unsupported { what: &'static str, backend: &'static str },
    /// A value could not be encoded as JSON.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite's primary result codes the predicates below look for (`code & 0xff`).
const SQLITE_ERROR: i32 = 1;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_CORRUPT: i32 = 11;

impl Error {
    /// Whether this is a "no such row" error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// A PostgreSQL driver error, as this crate's error: the server's message and code, or the
    /// driver's description (a closed connection, a type that does not fit).
    pub(crate) fn from_postgres(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Self::Postgres {
                code: Some(db.code().code().to_owned()),
                message: match db.detail() {
                    Some(detail) => format!("{}: {detail}", db.message()).into(),
                    None => db.message().into(),
                },
            },
            // The driver's words ("error serializing parameter 2") with their cause, which is
            // where a value's own refusal is (`Param`'s binding names what it cannot store).
            None => Self::Postgres {
                code: e.code().map(|c| c.code().to_owned()),
                message: match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}").into(),
                    None => e.to_string().into(),
                },
            },
        }
    }

    /// The SQLSTATE code of a PostgreSQL error (`23505` for a unique violation…).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Postgres { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// SQLite's extended result code of a SQLite error ([`Error::Sqlite`], [`Error::Open`]):
    /// `2067` for a unique constraint, `code & 0xff` for the primary code.
    pub fn sqlite_code(&self) -> Option<i32> {
        match self {
            Self::Sqlite { code, .. } | Self::Open { code, .. } => *code,
            _ => None,
        }
    }

    /// The database's own message of a driver error ([`Error::Sqlite`], [`Error::Open`],
    /// [`Error::Postgres`]), without this crate's words around it.
    pub fn db_message(&self) -> Option<&str> {
        match self {
            Self::Sqlite { message, .. }
            | Self::Open { message, .. }
            | Self::Postgres { message, .. } => Some(message.as_str()),
            _ => None,
        }
    }

    /// SQLite's primary result code of a SQLite error.
    fn sqlite_primary(&self) -> Option<i32> {
        self.sqlite_code().map(|c| c & 0xff)
    }

    /// Whether the database reported itself busy or locked (SQLite: `SQLITE_BUSY`,
    /// `SQLITE_LOCKED`, a lock held past the busy timeout, no free connection of an in-memory
    /// database; PostgreSQL: a lock that could not be had, a deadlock or a serialization
    /// failure).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::PoolTimeout { .. } | Self::Locked { .. })
            || matches!(self.sqlstate(), Some("55P03" | "40P01" | "40001"))
            || matches!(self.sqlite_primary(), Some(SQLITE_BUSY | SQLITE_LOCKED))
    }

    /// Whether a statement that commits by itself was sent and its answer lost with the
    /// connection ([`Error::OutcomeUnknown`]): whether it was committed is for a read to tell.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }

    /// Whether the database found its own storage malformed (SQLite: `SQLITE_CORRUPT`, an FTS5
    /// index whose shadow tables were damaged included; PostgreSQL: `XX001` data corrupted,
    /// `XX002` index corrupted).
    pub fn is_corrupt(&self) -> bool {
        self.sqlite_primary() == Some(SQLITE_CORRUPT)
            || matches!(self.sqlstate(), Some("XX001" | "XX002"))
    }

    /// Whether the database refused a statement as written (SQLite: its generic
    /// `SQLITE_ERROR`, which it gives for bad syntax, an unknown table or column, and an FTS5
    /// `MATCH` query it cannot parse; PostgreSQL: SQLSTATE class `42`, syntax error or access
    /// rule violation).
    pub fn is_statement_error(&self) -> bool {
        self.sqlite_primary() == Some(SQLITE_ERROR)
            || self.sqlstate().is_some_and(|c| c.starts_with("42"))
    }

    /// Reads a stored timestamp, or a `CorruptRow` naming the table, column and row.
    pub fn read_time(
        table: &'static str,
        column: &'static str,
        id: impl ToString,
        text: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>> {
        aigentflow_core_states::time::parse(text).ok_or_else(|| Self::CorruptRow {
            table,
            column,
            id: id.to_string().into(),
            reason: format!("not a timestamp: \"{text}\"").into(),
        })
    }

    /// A `CorruptRow` for a JSON column.
    pub fn corrupt_json(
        table: &'static str,
        column: &'static str,
        id: impl ToString,
        err: &serde_json::Error,
    ) -> Self {
        Self::CorruptRow {
            table,
            column,
            id: id.to_string().into(),
            reason: format!("malformed JSON: {err}").into(),
        }
    }
}

/// Why a database cannot be written, each with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotWritable {
    /// Its file system is mounted read-only.
    ReadOnlyMount,
    /// Its folder cannot be written, and SQLite keeps the `-wal`, `-shm` and `-journal` files
    /// beside the database.
    ReadOnlyFolder { dir: PathBuf },
    /// The file itself cannot be written.
    ReadOnlyFile,
    /// SQLite refused to write for another reason (its message).
    Refused(String),
}

impl std::fmt::Display for NotWritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReadOnlyMount => f.write_str(
                "its file system is mounted read-only; copy it to a writable place to change it (reading it works as it is)",
            ),
            Self::ReadOnlyFolder { dir } => write!(
                f,
                "its folder {} is read-only, and SQLite keeps its -wal and -shm files there; make the folder writable",
                dir.display()
            ),
            Self::ReadOnlyFile => {
                f.write_str("the file is read-only; make it writable (e.g. chmod u+w)")
            }
            Self::Refused(message) => write!(f, "SQLite refused the write ({message})"),
        }
    }
}

/// A wait as people read it: tenths of a second below ten seconds, whole seconds above.
fn seconds(waited: Duration) -> String {
    let secs = waited.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else {
        format!("{secs:.0} s")
    }
}

thread_local! {
    /// The file of the database whose transaction runs on this thread (see [`AtPath`]), so that
    /// a SQLite error raised by any store's statement is told with the path it concerns.
    static CURRENT: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// While alive, SQLite errors converted on this thread are classified against `path`
/// ([`Error::DiskFull`], [`Error::NotWritable`], …) instead of becoming [`Error::Sqlite`].
/// Nested guards (a transaction on another database inside a closure) stack.
#[derive(Debug)]
pub(crate) struct AtPath(());

impl AtPath {
    pub(crate) fn enter(path: &Path) -> Self {
        CURRENT.with(|c| c.borrow_mut().push(path.to_path_buf()));
        Self(())
    }
}

impl Drop for AtPath {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

impl Error {
    /// A SQLite driver error as this crate's error: classified against the file of the
    /// transaction running on this thread ([`AtPath`]) when there is one ([`Error::at`]), else
    /// [`Error::Sqlite`]. A function rather than a `From`: a public `From<rusqlite::Error>`
    /// would put the driver's type in the crate's API. Code of this crate converts with
    /// [`SqliteResult::or_error`].
    pub(crate) fn from_sqlite(source: rusqlite::Error) -> Self {
        let path = CURRENT.with(|c| c.borrow().last().cloned());
        match path {
            Some(path) => Self::at(&path, &source),
            None => Self::sqlite(&source),
        }
    }

    /// [`Error::Sqlite`]: the driver's message (as it shows it) and SQLite's extended result
    /// code, with no type of the driver.
    pub(crate) fn sqlite(source: &rusqlite::Error) -> Self {
        let (code, message) = sqlite_parts(source);
        Self::Sqlite { code, message: message.into() }
    }

    /// SQLite's `source` on the database at `path`: a full disk, a file, folder or mount that
    /// cannot be written, a file that cannot be opened or an I/O error become the variant that
    /// says so and what to do (the file system is looked at to tell which); anything else is
    /// [`Error::Sqlite`]. Busy errors stay as they are: only the caller knows how long it waited.
    pub(crate) fn at(path: &Path, source: &rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        let code = source.sqlite_error_code();
        let message = || match source {
            rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
            other => other.to_string(),
        };
        // A full disk or a failed write may be a write past the file size limit instead.
        let limit = matches!(code, Some(C::DiskFull | C::SystemIoFailure))
            .then(|| file_size_limit_reached(&path))
            .flatten();
        if let Some(limit) = limit {
            if limit < SHM_BYTES {
                return Self::FileSizeLimitBelowShm { path, limit };
            }
            return Self::FileSizeLimit { path, limit };
        }
        match code {
            Some(C::NotADatabase) => Self::NotADatabase { path },
            Some(C::DiskFull) => Self::DiskFull { path },
            Some(C::ReadOnly | C::CannotOpen | C::SystemIoFailure | C::PermissionDenied) => {
                if let Some(why) = not_writable(&path) {
                    return Self::NotWritable { path, why };
                }
                match code {
                    Some(C::ReadOnly) => {
                        Self::NotWritable { path, why: NotWritable::Refused(message()) }
                    }
                    Some(C::CannotOpen) => {
                        let why = unreachable_part(&path).unwrap_or_else(message);
                        Self::CannotOpen { path, why }
                    }
                    _ => {
                        let extended = sqlite_parts(source).0.unwrap_or(0);
                        Self::Io { path, reason: format!("{} (SQLite code {extended})", message()) }
                    }
                }
            }
            _ => Self::sqlite(source),
        }
    }

    /// The error for a lock another process held for all of `waited`.
    pub(crate) fn locked(path: &Path, waited: Duration) -> Self {
        Self::Locked { path: path.to_path_buf(), waited }
    }
}

/// SQLite's extended result code of a driver error (None for an error the driver raised
/// itself) and its message as the driver shows it.
fn sqlite_parts(source: &rusqlite::Error) -> (Option<i32>, String) {
    let code = match source {
        rusqlite::Error::SqliteFailure(e, _) | rusqlite::Error::SqlInputError { error: e, .. } => {
            Some(e.extended_code)
        }
        _ => None,
    };
    (code, source.to_string())
}

/// `?` on the SQLite driver's results inside this crate, where a public
/// `From<rusqlite::Error> for Error` would put the driver's type in the crate's API.
pub(crate) trait SqliteResult<T> {
    /// The result, its error as this crate's ([`Error::from_sqlite`]).
    fn or_error(self) -> Result<T>;
}

impl<T> SqliteResult<T> for rusqlite::Result<T> {
    fn or_error(self) -> Result<T> {
        self.map_err(Error::from_sqlite)
    }
}

/// The largest write SQLite makes past a file's end: a WAL frame (a 24-byte header and a page
/// of at most 64 KiB).
const LARGEST_WRITE: u64 = 24 + 64 * 1024;

/// The size SQLite gives a WAL database's `-shm` file as soon as a connection maps it: two
/// 16 KiB regions.
pub const SHM_BYTES: u64 = 32 * 1024;

/// This process's file size limit, when one is set and the database at `path` (or its WAL or
/// journal) has come within one write of it: a write that went past it failed with `EFBIG`
/// (short, which SQLite reports as a full disk, or whole, an I/O error).
fn file_size_limit_reached(path: &Path) -> Option<u64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current?;
    let near = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() + LARGEST_WRITE > limit);
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    (near(path) || near(&side("-wal")) || near(&side("-journal"))).then_some(limit)
}

/// Which part of the file system keeps `path` from being written, if any: the mount, the file
/// or its folder, asked with `access(2)` (so root, who may write anything, is told apart from a
/// read-only mount, which nobody may write).
pub(crate) fn not_writable(path: &Path) -> Option<NotWritable> {
    use rustix::fs::{access, Access};
    let file = path.exists().then(|| access(path, Access::WRITE_OK).err()).flatten();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let folder =
        dir.is_dir().then(|| access(&dir, Access::WRITE_OK | Access::EXEC_OK).err()).flatten();
    why_not_writable(file, folder, dir)
}

/// The cause from what `access(2)` answered for the file (if it exists) and its folder: a
/// read-only file system wherever it is met, then the file, then the folder.
fn why_not_writable(
    file: Option<rustix::io::Errno>,
    folder: Option<rustix::io::Errno>,
    dir: PathBuf,
) -> Option<NotWritable> {
    use rustix::io::Errno;
    let denied = |e: Option<Errno>| matches!(e, Some(Errno::ACCESS | Errno::PERM));
    if file == Some(Errno::ROFS) || folder == Some(Errno::ROFS) {
        Some(NotWritable::ReadOnlyMount)
    } else if denied(file) {
        Some(NotWritable::ReadOnlyFile)
    } else if denied(folder) {
        Some(NotWritable::ReadOnlyFolder { dir })
    } else {
        None
    }
}

/// The first part of `path` that keeps it from being opened: a missing folder, or a file where a
/// folder should be.
fn unreachable_part(path: &Path) -> Option<String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    for ancestor in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        match std::fs::metadata(ancestor) {
            Ok(meta) if !meta.is_dir() => {
                return Some(format!("{} is a file, not a folder", ancestor.display()))
            }
            Ok(_) => {}
            Err(_) => return Some(format!("the folder {} does not exist", ancestor.display())),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Access, ConfigStore, Database, Options, Scope};
    use rusqlite::{Connection, OpenFlags};

    fn one_line(e: &Error) -> String {
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        text
    }

    /// Each answer `access(2)` can give for the file and its folder names one cause; a
    /// read-only mount wins, then the file, then the folder.
    #[test]
    fn the_cause_of_a_refused_write_is_told_from_what_access_answers() {
        use rustix::io::Errno;
        let dir = PathBuf::from("/data");
        let folder = || Some(NotWritable::ReadOnlyFolder { dir: dir.clone() });
        let cases = [
            (None, None, None),
            (Some(Errno::ROFS), None, Some(NotWritable::ReadOnlyMount)),
            (None, Some(Errno::ROFS), Some(NotWritable::ReadOnlyMount)),
            (Some(Errno::ACCESS), Some(Errno::ROFS), Some(NotWritable::ReadOnlyMount)),
            (Some(Errno::ACCESS), None, Some(NotWritable::ReadOnlyFile)),
            (Some(Errno::PERM), Some(Errno::ACCESS), Some(NotWritable::ReadOnlyFile)),
            (None, Some(Errno::ACCESS), folder()),
            (None, Some(Errno::PERM), folder()),
            (Some(Errno::NOENT), Some(Errno::IO), None),
        ];
        for (file, dir_answer, expected) in cases {
            assert_eq!(
                why_not_writable(file, dir_answer, dir.clone()),
                expected,
                "{file:?} {dir_answer:?}"
            );
        }
        for why in [
            NotWritable::ReadOnlyMount,
            NotWritable::ReadOnlyFile,
            NotWritable::ReadOnlyFolder { dir: dir.clone() },
        ] {
            let e = Error::NotWritable { path: dir.join("a.db"), why };
            let text = one_line(&e);
            assert!(text.starts_with("database /data/a.db cannot be written: "), "{text}");
            assert!(text.contains("read-only"), "{text}");
        }
    }

    /// A store's statement that finds no room is `DiskFull` naming the file (SQLite's page limit
    /// stands in for a full disk); the transaction leaves nothing behind.
    #[test]
    fn a_write_that_finds_no_room_is_disk_full_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.db");
        let db = Database::open(&path).unwrap();
        let config = ConfigStore::new(db.clone());
        config.set("kept", &Scope::Global, &serde_json::json!(1)).unwrap();
        let big = serde_json::json!("x".repeat(64 * 1024));
        let err = db
            .write(|tx| -> Result<()> {
                let conn = tx.connection_for("a test").unwrap();
                let pages: i64 =
                    conn.query_row("PRAGMA page_count", [], |r| r.get(0)).or_error()?;
                conn.pragma_update(None, "max_page_count", pages).or_error()?;
                for i in 0..64 {
                    config.set_in(tx, &format!("k{i}"), &Scope::Global, &big)?;
                }
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(&err, Error::DiskFull { path: p } if p == &path), "{err:?}");
        assert!(one_line(&err).contains("the disk is full"));
        drop((db, config));
        let reopened = Database::open_read_only(&path).unwrap();
        assert!(reopened.integrity_check().unwrap().is_empty());
        let keys: Vec<String> =
            ConfigStore::new(reopened).list(None).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["kept"]);
    }

    /// A write that waits out the busy timeout behind another process's lock is one `Locked`
    /// error naming the file and the wait, and still counts as busy.
    #[test]
    fn a_lock_held_past_the_busy_timeout_is_one_locked_error_with_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        Database::open(&path).unwrap().close().unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let busy_timeout = Duration::from_millis(200);
        let options = Options { busy_timeout, access: Access::ReadWrite, ..Options::default() };
        let db = Database::open_with(&path, options).unwrap();
        let store = ConfigStore::new(db.clone());
        let errors = [
            db.write(|_| -> Result<()> { Ok(()) }).unwrap_err(),
            store.set("k", &Scope::Global, &serde_json::json!(1)).unwrap_err(),
        ];
        for err in errors {
            let Error::Locked { path: p, waited } = &err else { panic!("{err:?}") };
            assert_eq!(p, &path);
            assert!(*waited >= busy_timeout, "{waited:?}");
            let text = one_line(&err);
            let expected =
                format!("database {} is locked by another process (waited ", path.display());
            assert!(text.starts_with(&expected) && text.ends_with(" s)"), "{text}");
            assert!(err.is_busy());
        }
        holder.execute_batch("COMMIT").unwrap();
        store.set("k", &Scope::Global, &serde_json::json!(1)).unwrap();
    }

    /// SQLite's "unable to open" and "readonly" become errors that name the path and the part
    /// of it at fault: a file where a folder should be, a missing folder, a read-only handle.
    #[test]
    fn sqlite_open_and_write_refusals_name_the_path_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("a.db");
        let missing = dir.path().join("missing").join("deeper").join("a.db");
        for (path, cause) in [
            (&under_file, format!("{} is a file, not a folder", file.display())),
            (
                &missing,
                format!("the folder {} does not exist", dir.path().join("missing").display()),
            ),
        ] {
            let sqlite = Connection::open(path).unwrap_err();
            let err = Error::at(path, &sqlite);
            assert!(matches!(&err, Error::CannotOpen { path: p, .. } if p == path), "{err:?}");
            assert_eq!(one_line(&err), format!("cannot open database {}: {cause}", path.display()));
        }
        let path = dir.path().join("real.db");
        Database::open(&path).unwrap().close().unwrap();
        let read_only =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let sqlite = read_only.execute("CREATE TABLE t(x)", []).unwrap_err();
        let err = Error::at(&path, &sqlite);
        assert!(matches!(&err, Error::NotWritable { path: p, .. } if p == &path), "{err:?}");
        assert!(
            one_line(&err).starts_with(&format!("database {} cannot be written: ", path.display()))
        );
        let not_db = Connection::open(&path).unwrap().execute("SELECT 1", []).unwrap_err();
        assert!(
            matches!(Error::at(&path, &not_db), Error::Sqlite { .. }),
            "other errors stay as they are"
        );
    }
}
