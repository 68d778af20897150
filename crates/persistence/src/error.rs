use std::path::PathBuf;

use aigentflow_core_states::TaskId;

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
    NotFound { what: &'static str, id: String },
    /// A stored value cannot be read (malformed JSON, unreadable timestamp…).
    #[error("unreadable {table}.{column} in row {id}: {reason}")]
    CorruptRow { table: &'static str, column: &'static str, id: String, reason: String },
    /// A caller gave a value this layer cannot store.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: String },
    /// The history to save is shorter than the stored one: a stale copy of the task.
    #[error("task {task_id}: stale save: {stored} transitions are stored, the state to save has {given}")]
    StaleSave { task_id: TaskId, stored: u64, given: u64 },
    /// The history to save disagrees with the stored one.
    #[error("task {task_id}: the history to save differs from the stored one at transition {seq}")]
    HistoryConflict { task_id: TaskId, seq: u64 },
    /// A backup could not be completed; nothing was left at the destination.
    #[error("backup to {path} failed: {reason}")]
    Backup { path: PathBuf, reason: String },
    /// An output path is one of the database's own files (the file, its -wal, -shm or -journal),
    /// by identity or, for a side file not there yet, by name.
    #[error("refusing to write {path}: it is the database's own file {file}")]
    OwnFile { path: PathBuf, file: PathBuf },
    /// An output path that cannot be written: a folder, a missing folder, a name of no file.
    #[error("cannot write {path}: {reason}")]
    OutputPath { path: PathBuf, reason: String },
    /// An output that never replaces a file (a backup) found one at its path.
    #[error("{path} already exists; a backup never replaces a file, choose another name")]
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
            id: id.to_string(),
            reason: format!("not a timestamp: {text:?}"),
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
            id: id.to_string(),
            reason: format!("malformed JSON: {err}"),
        }
    }
}
