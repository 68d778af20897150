use std::fmt;
use std::path::PathBuf;

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
    /// The file is empty (0 bytes): not a database yet.
    #[error("{path} is an empty file, not a database; create one with `aigentflow init`")]
    Empty { path: PathBuf },
    /// The path cannot be examined (permissions, a file where a folder is expected…).
    #[error("cannot access {path}: {source}")]
    Inaccessible { path: PathBuf, source: std::io::Error },
    /// The database is at an older schema and was opened read-only, so it cannot be migrated.
    #[error("database {path} is at schema version {found}, older than this build's {latest}; migrate it with `aigentflow db migrate`")]
    Outdated { path: PathBuf, found: i64, latest: i64 },
    /// A write on a handle opened read-only.
    #[error("database {path} is open read-only")]
    ReadOnly { path: PathBuf },
    /// The in-memory database's one connection could not be brought back out of a transaction
    /// (after a panic in a `read`/`write` closure), so its data is gone.
    #[error("database {path} is unusable: its connection was left inside a transaction that could not be rolled back")]
    Unusable { path: PathBuf },
    /// A `read`/`write` of an in-memory database started inside another on the same thread: it
    /// would wait for itself. The inner work should use the `Tx` it was given.
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
    /// The file could not be opened or set up.
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// A migration failed; nothing of it was applied.
    #[error("migrating database {path} failed: {source}")]
    Migrate { path: PathBuf, source: Box<refinery_core::Error> },
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
    /// The background checkpoint thread could not be started.
    #[error("cannot start the WAL checkpoint thread: {0}")]
    Thread(std::io::Error),
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value could not be encoded as JSON.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a "no such row" error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Whether SQLite reported the database busy or locked, anywhere in the error's chain.
    pub fn is_busy(&self) -> bool {
        if matches!(self, Self::PoolTimeout { .. }) {
            return true;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = next {
            if let Some(e) = err.downcast_ref::<rusqlite::Error>() {
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) {
                    return true;
                }
            }
            next = err.source();
        }
        false
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
            reason: format!("not a timestamp: {text:?}").into(),
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
