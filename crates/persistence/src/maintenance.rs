//! Checks, counts and backups of a database file, for operators (`aigentflow status`, `db check`,
//! `db backup`).

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::db::Database;
use crate::error::{Error, Result};
use crate::output::{self, Output, TempFile};

/// The tables of the schema, in the order a status report lists them.
pub const TABLES: [&str; 9] = [
    "workflow_states",
    "state_transitions",
    "checkpoints",
    "audit_logs",
    "lessons",
    "execution_traces",
    "agent_invocations",
    "configurations",
    "schema_versions",
];

/// What a backup wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Database pages copied.
    pub pages: u64,
    /// Bytes written to the destination.
    pub bytes: u64,
}

/// A row whose foreign key points at nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKeyProblem {
    pub table: String,
    pub rowid: Option<i64>,
    pub parent: String,
}

impl Database {
    /// `PRAGMA integrity_check`: the problems found (empty when the file is sound).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.connection().prepare("PRAGMA integrity_check")?;
            let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let lines = lines.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(lines.into_iter().filter(|l| l != "ok").collect())
        })
    }

    /// `PRAGMA foreign_key_check`: rows whose parent row is missing.
    pub fn foreign_key_problems(&self) -> Result<Vec<ForeignKeyProblem>> {
        self.read(|tx| {
            let mut stmt = tx.connection().prepare("PRAGMA foreign_key_check")?;
            let rows = stmt.query_map([], |r| {
                Ok(ForeignKeyProblem { table: r.get(0)?, rowid: r.get(1)?, parent: r.get(2)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// How many rows each table of [`TABLES`] holds, in one snapshot.
    pub fn table_counts(&self) -> Result<Vec<(&'static str, u64)>> {
        self.read(|tx| {
            TABLES
                .iter()
                .map(|table| {
                    let n: i64 = tx.connection().query_row(
                        &format!("SELECT COUNT(*) FROM {table}"),
                        [],
                        |r| r.get(0),
                    )?;
                    Ok((*table, n as u64))
                })
                .collect()
        })
    }

    /// Bytes on disk: the database file and its WAL (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        let Some(path) = self.path() else { return 0 };
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        [path.to_path_buf(), wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Copies the database to `dest` with SQLite's online backup, as one consistent snapshot
    /// while other connections and processes go on writing. `dest` follows the output rule
    /// ([`Output`]): a new file is written as a temporary file beside it, checked, and renamed
    /// into place, so it is never half-written; a pipe or device gets the checked copy's bytes.
    /// Refuses an existing file ([`Error::OutputExists`]) and the database's own files
    /// ([`Error::OwnFile`]). Returns the number of pages copied.
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        let out = Output::open_new(dest, Some(self))?;
        Ok(self.backup_into(out)?.pages)
    }

    /// Copies the database into `out` (see [`backup_to`](Database::backup_to)), opened by the
    /// caller with [`Output::open_new`] so it can report the [`Output::leftovers`] removed.
    ///
    /// SQLite writes a copy by path. For a file, it writes the output's own temporary file,
    /// created exclusively, and the commit renames it only while that name still is the file
    /// created. For a pipe or device, the copy is made in a temporary file created the same way
    /// in the database's folder, checked, streamed to `out` and removed.
    pub fn backup_into(&self, mut out: Output) -> Result<BackupReport> {
        if let Some(temp) = out.staging_path() {
            let pages = self.copy_to(&temp)?;
            let bytes = out.commit()?;
            return Ok(BackupReport { pages, bytes });
        }
        let near = match self.path() {
            Some(path) => path.to_path_buf(),
            None => std::env::temp_dir().join("aigentflow-memory.db"),
        };
        let (stage, mut file) = TempFile::create_beside(&near)?;
        let pages = self.copy_to(&stage.path())?;
        stage.check_ours(out.path())?;
        output::copy_into(&stage.path(), &mut file, &mut out)?;
        let bytes = out.commit()?;
        Ok(BackupReport { pages, bytes })
    }

    fn copy_to(&self, partial: &Path) -> Result<u64> {
        let open_err = |source| Error::Open { path: partial.to_path_buf(), source };
        // The file exists (created exclusively by the caller); never follow a link to another.
        let mut dest = Connection::open_with_flags(
            crate::db::literal_path(partial),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(open_err)?;
        let pages = self.read(|tx| {
            let backup = Backup::new(tx.connection(), &mut dest)?;
            // All pages in one step: one snapshot, never restarted by a concurrent writer.
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More | StepResult::Busy | StepResult::Locked => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    _ => {}
                }
            }
            Ok::<_, Error>(u64::try_from(backup.progress().pagecount).unwrap_or(0))
        })?;
        let check: String =
            dest.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(open_err)?;
        if check != "ok" {
            return Err(Error::Backup {
                path: partial.to_path_buf(),
                reason: format!("the copy fails its check: {check}").into(),
            });
        }
        dest.close().map_err(|(_, e)| open_err(e))?;
        Ok(pages)
    }
}
