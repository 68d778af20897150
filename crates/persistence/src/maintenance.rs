//! Checks, counts and backups of a database, for operators (`aigentflow status`, `db check`,
//! `db backup`).

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::copy::CopyReport;
use crate::db::{Access, Backend, Database, Options, Tx};
use crate::error::{Error, Result, SqliteResult};
use crate::output::{self, Leftover, Output, TempFile};

/// The tables of the schema, in the order a status report lists them.
pub const TABLES: [&str; 14] = [
    "workflow_definitions",
    "workflow_states",
    "task_workflows",
    "state_transitions",
    "checkpoints",
    "approval_requests",
    "audit_logs",
    "lessons",
    "execution_traces",
    "agent_invocations",
    "spans",
    "span_decisions",
    "configurations",
    "schema_versions",
];

/// The triggers the PostgreSQL migrations make, as (table, trigger, fingerprint). The fingerprint
/// is [`trigger_fingerprint`] of what decides what a trigger does: when it fires (its events,
/// timing and level, a WHEN condition, the columns it watches, deferral) and the function it
/// calls (name, language, body, security and settings). A freshly migrated server's are checked
/// against these by `schema_fingerprints_are_a_fresh_servers_on_postgres`, which prints this
/// table anew when a migration changes a trigger.
const POSTGRES_TRIGGERS: [(&str, &str, &str); 13] = [
    ("audit_head", "audit_head_no_delete", "66ea4d0aa3954b93"),
    ("audit_head", "audit_head_no_truncate", "0022d6e1455d9533"),
    ("audit_head", "audit_head_update", "cc1cdf28b6e887fc"),
    ("audit_logs", "audit_logs_no_delete", "38fcc3e38c46a738"),
    ("audit_logs", "audit_logs_no_truncate", "64002189cd6e7041"),
    ("audit_logs", "audit_logs_no_update", "3c9c9563145845a1"),
    ("audit_logs", "audit_logs_notify", "3fe2dfa2daa62300"),
    ("execution_traces", "execution_traces_feed_kept", "5a03f48374b13069"),
    ("execution_traces", "execution_traces_feed_next", "21c6f5bc5ef70890"),
    ("trace_feed", "trace_feed_no_delete", "618ec5f364eb79eb"),
    ("trace_feed", "trace_feed_no_truncate", "d477d35bc1f13b76"),
    ("trace_feed", "trace_feed_update", "3e35e9d46c4e94bf"),
    ("workflow_definitions", "workflow_definitions_no_update", "a3108bb9094be756"),
];

/// What a PostgreSQL trigger does, in one line of the catalog's fields (see
/// [`POSTGRES_TRIGGERS`]), as the first 16 hex digits of its SHA-256.
fn trigger_fingerprint(definition: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(definition.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The schema's tables' triggers on a PostgreSQL server: (table, trigger, when it fires
/// (`tgenabled`: `O` in ordinary sessions, as the migrations leave it; `D` never; `R` only in
/// replica sessions; `A` always), fingerprint).
/// A function body that names the schema's own tables by the schema they were migrated into
/// (`public.audit_logs`) is read without that name, so that a schema other than `public` has
/// the same fingerprints; one that names another schema's table is a change.
fn postgres_triggers(tx: &Tx<'_>) -> Result<Vec<(String, String, String, String)>> {
    tx.prepare(
            "SELECT c.relname::text, t.tgname::text,
                    t.tgenabled::text,
                    concat_ws(E'\\n', t.tgtype::text, (t.tgqual IS NULL)::text, t.tgattr::text,
                              t.tgdeferrable::text, t.tginitdeferred::text, t.tgnargs::text,
                              encode(t.tgargs, 'hex'), (p.pronamespace = c.relnamespace)::text,
                              p.proname::text, l.lanname::text, p.prosecdef::text,
                              COALESCE(p.proconfig::text, ''),
                              replace(p.prosrc, format('%I.', current_schema()), ''))
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                  JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang
             WHERE NOT t.tgisinternal AND c.relnamespace = quote_ident(current_schema())::regnamespace
             ORDER BY 2",
        )?
        .query_map(&[], |r| {
            Ok((
                r.text(0)?.to_owned(),
                r.text(1)?.to_owned(),
                r.text(2)?.to_owned(),
                trigger_fingerprint(r.text(3)?),
            ))
        })
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Database pages copied.
    pub pages: u64,
    /// Bytes written to the destination.
    pub bytes: u64,
    /// Temporary files of gone writers removed from the folder the copy was staged in (a backup
    /// to a pipe or device), to be told like [`Output::leftovers`].
    #[serde(skip)]
    pub leftovers: Vec<Leftover>,
}

/// A row whose foreign key points at nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKeyProblem {
    pub table: String,
    pub rowid: Option<i64>,
    pub parent: String,
}

impl Database {
    /// `PRAGMA integrity_check`: the problems found (empty when the file is sound). On
    /// PostgreSQL the server keeps its own files sound (a damaged page is an error on reading
    /// it), so there is nothing the database can be asked: [`Error::Unsupported`].
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx
                .connection_for("this maintenance step")?
                .prepare("PRAGMA integrity_check")
                .or_error()?;
            let lines = stmt.query_map([], |r| r.get::<_, String>(0)).or_error()?;
            let lines = lines.collect::<rusqlite::Result<Vec<_>>>().or_error()?;
            Ok(lines.into_iter().filter(|l| l != "ok").collect())
        })
    }

    /// The schema's triggers, and only them, on its tables: what keeps the audit log
    /// append-only, the lessons index in step and the trace feed in order. Every trigger on
    /// one of the schema's tables that this build's migrations did not make (one that drops
    /// rows as they are written, `RAISE(IGNORE)`), every one they made that is missing (an
    /// append-only guard dropped) or changed, and every table of the schema that is not a
    /// table, each as a line. On SQLite the triggers' SQL is compared with a database this build
    /// makes in memory; on PostgreSQL what each does (when it fires, and the name, body and
    /// settings of the function it calls; see [`POSTGRES_TRIGGERS`]) and whether it is enabled.
    /// Empty when all is as the migrations left it. Triggers of
    /// an application's own tables are the application's and are not looked at.
    pub fn schema_problems(&self) -> Result<Vec<String>> {
        match self.backend() {
            Backend::Sqlite => self.sqlite_schema_problems(),
            Backend::Postgres => self.postgres_schema_problems(),
        }
    }

    fn sqlite_schema_problems(&self) -> Result<Vec<String>> {
        // Every object of the schema: (type, name, table, sql).
        fn objects(db: &Database) -> Result<Vec<(String, String, String, String)>> {
            db.read(|tx| {
                tx.prepare(
                    "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master
                     WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
                )?
                .query_map(&[], |r| {
                    Ok((
                        r.text(0)?.to_owned(),
                        r.text(1)?.to_owned(),
                        r.text(2)?.to_owned(),
                        r.text(3)?.to_owned(),
                    ))
                })
            })
        }
        let made = objects(&Database::open_in_memory()?)?;
        let found = objects(self)?;
        let tables: std::collections::BTreeSet<&str> =
            made.iter().filter(|o| o.0 == "table").map(|o| o.1.as_str()).collect();
        let mut problems = Vec::new();
        for table in &tables {
            if let Some(o) = found.iter().find(|o| o.1 == *table && o.0 != "table") {
                problems.push(format!("{table} is a {}, not the schema's table", o.0));
            }
        }
        for (_, name, table, sql) in made.iter().filter(|o| o.0 == "trigger") {
            match found.iter().find(|o| o.0 == "trigger" && o.1 == *name) {
                None => problems.push(format!("trigger {name} on {table} is missing")),
                Some(o) if o.3 != *sql || o.2 != *table => {
                    problems.push(format!("trigger {name} on {table} was changed"))
                }
                Some(_) => {}
            }
        }
        for (_, name, table, _) in found.iter().filter(|o| o.0 == "trigger") {
            if tables.contains(table.as_str())
                && !made.iter().any(|m| m.0 == "trigger" && m.1 == *name)
            {
                problems.push(format!("trigger {name} on {table} is not the schema's"));
            }
        }
        Ok(problems)
    }

    fn postgres_schema_problems(&self) -> Result<Vec<String>> {
        // One snapshot: the triggers, and what keeps every trigger from firing or rewrites
        // writes before any does: sessions in replica mode (set on the database or role), rules,
        // and a view in a table's place.
        let (found, role, rules, not_tables) = self.read(|tx| {
            let pairs = |sql: &str| {
                tx.prepare(sql)?
                    .query_map(&[], |r| Ok((r.text(0)?.to_owned(), r.text(1)?.to_owned())))
            };
            let role = tx
                .query_row("SELECT current_setting('session_replication_role')", &[], |r| {
                    Ok(r.text(0)?.to_owned())
                })?
                .unwrap_or_default();
            let rules = pairs(
                "SELECT c.relname::text, r.rulename::text FROM pg_rewrite r
                 JOIN pg_class c ON c.oid = r.ev_class
                 WHERE c.relnamespace = quote_ident(current_schema())::regnamespace
                   AND r.rulename <> '_RETURN' ORDER BY 1, 2",
            )?;
            let not_tables = pairs(
                "SELECT c.relname::text, c.relkind::text FROM pg_class c
                 WHERE c.relnamespace = quote_ident(current_schema())::regnamespace
                   AND c.relkind NOT IN ('r', 'p', 'i', 'I', 'S', 'c', 't') ORDER BY 1",
            )?;
            Ok::<_, Error>((postgres_triggers(tx)?, role, rules, not_tables))
        })?;
        let ours =
            |table: &str| TABLES.contains(&table) || matches!(table, "audit_head" | "trace_feed");
        let mut problems = Vec::new();
        for (table, name, fingerprint) in POSTGRES_TRIGGERS {
            match found.iter().find(|f| f.1 == name) {
                None => problems.push(format!("trigger {name} on {table} is missing")),
                Some(f) if f.0 != table || f.3 != fingerprint => {
                    problems.push(format!("trigger {name} on {table} was changed"))
                }
                Some(f) => match f.2.as_str() {
                    "O" => {}
                    "D" => problems.push(format!("trigger {name} on {table} is disabled")),
                    "R" => problems
                        .push(format!("trigger {name} on {table} fires only in replica sessions")),
                    _ => problems.push(format!("trigger {name} on {table} was changed")),
                },
            }
        }
        if role != "origin" {
            problems.push(format!(
                "sessions here run with session_replication_role = {role}: no trigger of the schema fires"
            ));
        }
        for (table, rule) in rules.iter().filter(|(t, _)| ours(t)) {
            problems.push(format!("rule {rule} on {table} is not the schema's"));
        }
        for (table, kind) in not_tables.iter().filter(|(t, _)| ours(t)) {
            let kind = match kind.as_str() {
                "v" => "view",
                "m" => "materialized view",
                "f" => "foreign table",
                _ => "relation",
            };
            problems.push(format!("{table} is a {kind}, not the schema's table"));
        }
        for (table, name, _, _) in &found {
            if ours(table) && !POSTGRES_TRIGGERS.iter().any(|(_, n, _)| n == name) {
                problems.push(format!("trigger {name} on {table} is not the schema's"));
            }
        }
        Ok(problems)
    }

    /// `PRAGMA foreign_key_check`: rows whose parent row is missing.
    pub fn foreign_key_problems(&self) -> Result<Vec<ForeignKeyProblem>> {
        self.read(|tx| {
            let mut stmt = tx
                .connection_for("this maintenance step")?
                .prepare("PRAGMA foreign_key_check")
                .or_error()?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ForeignKeyProblem { table: r.get(0)?, rowid: r.get(1)?, parent: r.get(2)? })
                })
                .or_error()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().or_error()
        })
    }

    /// How many rows each table of [`TABLES`] holds, in one snapshot.
    pub fn table_counts(&self) -> Result<Vec<(&'static str, u64)>> {
        self.read(|tx| {
            TABLES
                .iter()
                .map(|table| {
                    let n = tx
                        .query_row(&format!("SELECT COUNT(*) FROM {table}"), &[], |r| {
                            r.get::<u64>(0)
                        })?
                        .unwrap_or(0);
                    Ok((*table, n))
                })
                .collect()
        })
    }

    /// The database engine and its version: this build's SQLite, or the server's PostgreSQL.
    pub fn engine_version(&self) -> Result<String> {
        match self.backend() {
            crate::Backend::Sqlite => Ok(format!("SQLite {}", rusqlite::version())),
            crate::Backend::Postgres => self.read(|tx| {
                let v = tx.query_row("SELECT current_setting('server_version')", &[], |r| {
                    r.get::<String>(0)
                })?;
                Ok(format!("PostgreSQL {}", v.unwrap_or_default()))
            }),
        }
    }

    /// Bytes the database takes: on SQLite the file and its WAL (0 in memory), on PostgreSQL
    /// the server's `pg_database_size` (0 if it cannot be read).
    pub fn size_on_disk(&self) -> u64 {
        if self.backend() == crate::Backend::Postgres {
            return self
                .read(|tx| {
                    tx.query_row("SELECT pg_database_size(current_database())", &[], |r| {
                        r.get::<u64>(0)
                    })
                })
                .ok()
                .flatten()
                .unwrap_or(0);
        }
        let Some(path) = self.path() else { return 0 };
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        [path.to_path_buf(), wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Copies the database to `dest` with SQLite's online backup, as one consistent snapshot
    /// while other connections and processes go on writing; a PostgreSQL database is copied the
    /// same way into a SQLite file, every row from one read-only snapshot (as [`copy_into`]
    /// copies), which `Database::open` and `aigentflow db copy` read back. `dest` follows the
    /// output rule ([`Output`]): a new file is written as a temporary file beside it, checked,
    /// and renamed into place, so it is never half-written; a pipe or device gets the checked
    /// copy's bytes. Refuses an existing file ([`Error::OutputExists`]) and the database's own
    /// files ([`Error::OwnFile`]). Returns the number of pages copied (of the SQLite copy).
    ///
    /// [`copy_into`]: Database::copy_into
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        let out = Output::open_new(dest, Some(self))?;
        Ok(self.backup_into(out)?.pages)
    }

    /// Copies the database into `out` (see [`backup_to`](Database::backup_to)), opened by the
    /// caller with [`Output::open_new`] so it can report the [`Output::leftovers`] removed.
    ///
    /// SQLite writes a copy by path. For a file, it writes the output's own temporary file,
    /// created exclusively, and the commit renames it only while that name still is the file
    /// created. For a pipe or device, the copy is staged in a temporary file created the same
    /// way beside the database, or in the system's temporary folder (`TMPDIR`) when the
    /// database's folder cannot take one (a read-only folder or mount) or it has none (a server's
    /// database), checked, streamed to `out` and removed; the leftovers that staging removed are
    /// in the report.
    ///
    /// An error in writing the copy names the destination and the copy, not the database: a
    /// full disk is the destination's ([`Error::Backup`] saying so), as is a file size limit.
    pub fn backup_into(&self, mut out: Output) -> Result<BackupReport> {
        let dest = out.path().to_path_buf();
        out.hold_database()?;
        if let Some(temp) = out.staging_path() {
            let pages = self.copy_to(&temp, &dest, Copy::Destination)?;
            let bytes = out.commit()?;
            return Ok(BackupReport { pages, bytes, leftovers: Vec::new() });
        }
        let near = match (self.path(), self.backend()) {
            (Some(path), _) => path.to_path_buf(),
            (None, Backend::Sqlite) => std::env::temp_dir().join("aigentflow-memory.db"),
            (None, Backend::Postgres) => std::env::temp_dir().join("aigentflow-server.db"),
        };
        let (stage, mut file, leftovers) = TempFile::stage(&near, Some(self), &dest)?;
        let pages = self.copy_to(&stage.path(), &dest, Copy::Staging)?;
        stage.check_ours(&dest)?;
        output::copy_into(&stage.path(), &mut file, &mut out)?;
        let bytes = out.commit()?;
        Ok(BackupReport { pages, bytes, leftovers })
    }

    /// Copies the database into the file `copy` (created exclusively by the caller) for `dest`.
    fn copy_to(&self, copy: &Path, dest: &Path, role: Copy) -> Result<u64> {
        match self.backend() {
            Backend::Sqlite => self.copy_with(copy, dest, role, |_| Ok(())),
            Backend::Postgres => self.copy_server_to(copy, dest, role),
        }
    }

    /// Copies a server's database into the SQLite file `copy` (created empty by the caller) for
    /// `dest`, as [`copy_rows_to`](Self::copy_rows_to) copies.
    fn copy_server_to(&self, copy: &Path, dest: &Path, role: Copy) -> Result<u64> {
        Ok(self.copy_rows_to(copy, dest, role, &|_| Ok(()), |_, _, _| {})?.1)
    }

    /// Copies every row into the SQLite file `copy` (created empty by the caller) for `dest`:
    /// the schema is made in it, every row copied from one read-only snapshot
    /// ([`Database::copy_into`], told to `progress`), and the copy checked as a SQLite backup's
    /// copy is, then closed. An error that names `copy` happened to the copy, and is told as
    /// [`copy_to`](Self::copy_to) tells it (a full disk is the destination's); any other is the
    /// database's (what the server answers, or a damaged source file). Returns what was copied
    /// and the copy's pages.
    fn copy_rows_to(
        &self,
        copy: &Path,
        dest: &Path,
        role: Copy,
        check: crate::copy::SourceCheck<'_>,
        progress: impl FnMut(&str, u64, u64),
    ) -> Result<(CopyReport, u64)> {
        let copy_name = copy.display().to_string();
        let copy_err = |e: Error| match e {
            Error::Postgres { .. } | Error::Connect { .. } => e,
            e if self.backend() == Backend::Sqlite && !e.to_string().contains(&copy_name) => e,
            other => copy_failure(dest, copy, role, other),
        };
        // A source the copy refuses (it holds application sets) is the source's problem, told
        // before the destination is made.
        self.check_copy_source()?;
        let options = Options { access: Access::Create, ..Options::default() };
        let target = Database::open_with(copy, options).map_err(copy_err)?;
        let report = self.copy_into_checked(&target, check, progress).map_err(|e| match e {
            // What the source's check refused is the source's, not the copy's failure.
            e @ Error::InvalidInput { what: "copy source", .. } => e,
            e => copy_err(e),
        })?;
        let (pages, check) = target
            .read(|tx| {
                let conn = tx.connection_for("this maintenance step")?;
                let pages: i64 =
                    conn.query_row("PRAGMA page_count", [], |r| r.get(0)).or_error()?;
                let check: String =
                    conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).or_error()?;
                Ok::<_, Error>((u64::try_from(pages).unwrap_or(0), check))
            })
            .map_err(copy_err)?;
        if check != "ok" {
            let reason = format!("the copy {} fails its check: {check}", copy.display());
            return Err(role.failed(dest, reason));
        }
        // The last handle: its WAL is checkpointed into the copy, and the -wal and -shm removed.
        target.close().map_err(copy_err)?;
        Ok((report, pages))
    }

    /// Copies every row of this database into a new SQLite file at `dest`, as
    /// [`copy_into`](Database::copy_into) copies into an empty database, by the output rule
    /// ([`Output`]): the file is made as a temporary file beside `dest`, migrated, filled,
    /// checked and renamed into place, so on any error (a full disk, a file size limit, a kill)
    /// nothing is at `dest`. Refused: an existing file or link at `dest`
    /// ([`Error::OutputExists`], [`Error::OutputPath`]), a pipe, device or descriptor
    /// ([`Error::NotAFile`]), one of this database's own files ([`Error::OwnFile`]), and a
    /// `-wal` or `-journal` already at `dest`'s name ([`Error::ForeignJournal`]).
    pub fn copy_into_new_file(
        &self,
        dest: &Path,
        progress: impl FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        self.copy_into_new_file_checked(dest, &|_| Ok(()), progress)
    }

    /// [`copy_into_new_file`](Self::copy_into_new_file), with `check` run on the source in the
    /// snapshot the copy reads ([`copy_into_checked`](Self::copy_into_checked)).
    pub fn copy_into_new_file_checked(
        &self,
        dest: &Path,
        check: crate::copy::SourceCheck<'_>,
        progress: impl FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        output::check_database_destination(dest, self.path())?;
        let mut out = Output::open_new_file(dest, Some(self))?;
        let Some(copy) = out.staging_path() else {
            return Err(Error::NotAFile { path: dest.to_path_buf(), kind: "special file" });
        };
        out.hold_database()?;
        let (report, _) = self.copy_rows_to(&copy, dest, Copy::NewDatabase, check, progress)?;
        out.commit()?;
        Ok(report)
    }

    /// [`copy_to`](Self::copy_to), with `prepare` run on the copy's connection first (tests
    /// set a page limit there, as a full disk).
    fn copy_with(
        &self,
        copy: &Path,
        dest: &Path,
        role: Copy,
        prepare: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> Result<u64> {
        let copy_err = |e| copy_error(dest, copy, role, e);
        // The file exists (created exclusively by the caller); never follow a link to another.
        let mut conn = Connection::open_with_flags(
            crate::db::literal_path(copy),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(copy_err)?;
        prepare(&conn).map_err(copy_err)?;
        let source = self.path().map(Path::to_path_buf);
        let pages = self.read(|tx| {
            // Errors here are told by hand: the read transaction's guard would name the database
            // for any SQLite error, and the backup mostly writes the copy.
            let backup = Backup::new(tx.connection_for("this maintenance step")?, &mut conn)
                .map_err(copy_err)?;
            // All pages in one step: one snapshot, never restarted by a concurrent writer.
            loop {
                let step = backup.step(-1).map_err(|e| match (&source, reads_the_source(&e)) {
                    (Some(source), true) => Error::at(source, &e),
                    _ => copy_err(e),
                })?;
                match step {
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
            conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(copy_err)?;
        if check != "ok" {
            return Err(Error::Backup {
                path: dest.to_path_buf(),
                reason: format!("the copy {} fails its check: {check}", copy.display()).into(),
            });
        }
        conn.close().map_err(|(_, e)| copy_err(e))?;
        Ok(pages)
    }
}

/// What the file a backup writes by path is to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// The destination's own temporary file, renamed into place once checked.
    Destination,
    /// A copy staged for a pipe or device, in another folder than the destination's.
    Staging,
    /// A new database's own temporary file, renamed into place once filled and checked (a copy
    /// of the rows rather than a backup of the pages).
    NewDatabase,
}

impl Copy {
    /// The error of a copy for `dest` that failed for `reason`: a backup's, or a new database's.
    fn failed(self, dest: &Path, reason: String) -> Error {
        match self {
            Copy::Destination | Copy::Staging => {
                Error::Backup { path: dest.to_path_buf(), reason: reason.into() }
            }
            Copy::NewDatabase => Error::Copy { path: dest.to_path_buf(), reason: reason.into() },
        }
    }
}

/// Whether a backup step's error comes from reading the database rather than writing the copy:
/// a damaged database, or a failed read. Everything else (a full disk, a refused or failed
/// write) is the copy's: the database is only read.
fn reads_the_source(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(failure, _) = e else { return false };
    const IOERR_READ: i32 = rusqlite::ffi::SQLITE_IOERR_READ;
    const IOERR_SHORT_READ: i32 = rusqlite::ffi::SQLITE_IOERR_SHORT_READ;
    matches!(failure.code, C::DatabaseCorrupt | C::NotADatabase)
        || matches!(failure.extended_code, IOERR_READ | IOERR_SHORT_READ)
}

/// SQLite's error on the file `copy` a backup to `dest` writes, as an error that names both and
/// says what to do: a full disk or a file size limit is the destination's (or the staging
/// folder's), never the database's.
fn copy_error(dest: &Path, copy: &Path, role: Copy, e: rusqlite::Error) -> Error {
    copy_failure(dest, copy, role, Error::at(copy, &e))
}

/// An error on the file `copy` a backup to `dest` writes (already told with `copy`'s path), as
/// [`copy_error`] tells it.
fn copy_failure(dest: &Path, copy: &Path, role: Copy, e: Error) -> Error {
    let at = |what: &str| match role {
        Copy::Destination | Copy::NewDatabase => {
            format!("{what} the destination's copy {}", copy.display())
        }
        Copy::Staging => format!("{what} the copy staged in {}", copy.display()),
    };
    let reason = match e {
        Error::DiskFull { .. } => match role {
            Copy::Destination | Copy::NewDatabase => format!(
                "the destination's disk is full ({}); free some space there or write to another place",
                at("no room for")
            ),
            Copy::Staging => format!(
                "the disk of the staging folder is full ({}); free some space there, or set TMPDIR to a folder with room",
                at("no room for")
            ),
        },
        Error::FileSizeLimit { limit, .. } => format!(
            "{} reached this process's file size limit ({limit} bytes, `ulimit -f`); raise it or copy a smaller database",
            at("writing")
        ),
        Error::NotWritable { why, .. } => format!("{}: {why}", at("cannot write")),
        Error::CannotOpen { why, .. } => format!("{}: {why}", at("cannot open")),
        Error::Io { reason, .. } => format!("{}: {reason}", at("I/O error on")),
        other => format!("{}: {other}", at("writing")),
    };
    role.failed(dest, reason)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::error::SqliteResult;
    use crate::Access;

    /// A file database with a few hundred pages, open read-only as `db backup` opens it.
    fn database() -> (tempfile::TempDir, Database, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.db");
        let db = Database::open(&path).unwrap();
        db.write(|tx| {
            tx.connection_for("this maintenance step")?.execute_batch(
                "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
                 INSERT INTO t SELECT randomblob(2000) FROM n",
            ).or_error()?;
            Ok::<_, Error>(())
        })
        .unwrap();
        db.close().unwrap();
        let options = crate::Options { access: Access::ReadOnly, ..Default::default() };
        (dir, Database::open_with(&path, options).unwrap(), path)
    }

    /// The fingerprints of `POSTGRES_TRIGGERS` are those of a freshly migrated server; when a
    /// migration changes a trigger, the failure prints the table to paste.
    #[test]
    fn schema_fingerprints_are_a_fresh_servers_on_postgres() {
        let Some(fresh) = crate::pg::tests::fresh() else { return };
        let db = Database::open(&fresh.url).unwrap();
        let found = db.read(postgres_triggers).unwrap();
        let table: Vec<String> = found
            .iter()
            .map(|(table, name, _, fingerprint)| {
                format!("    (\"{table}\", \"{name}\", \"{fingerprint}\"),")
            })
            .collect();
        let expected: Vec<String> = POSTGRES_TRIGGERS
            .iter()
            .map(|(table, name, fingerprint)| {
                format!("    (\"{table}\", \"{name}\", \"{fingerprint}\"),")
            })
            .collect();
        assert_eq!(expected, table, "POSTGRES_TRIGGERS should be:\n{}", table.join("\n"));
        assert!(found.iter().all(|f| f.2 == "O"), "{found:?}");
        assert_eq!(db.schema_problems().unwrap(), Vec::<String>::new());
        db.close().unwrap();
        // Migrated into another schema, the same.
        let mut admin = postgres::Client::connect(&fresh.url, postgres::NoTls).unwrap();
        admin.batch_execute("CREATE SCHEMA \"Elsewhere2\"").unwrap();
        let url = format!("{}&options=-c%20search_path%3D%22Elsewhere2%22", fresh.url);
        let db = Database::open(&url).unwrap();
        let there = db.read(postgres_triggers).unwrap();
        assert_eq!(there.len(), found.len());
        assert_eq!(db.schema_problems().unwrap(), Vec::<String>::new());
        db.close().unwrap();
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A copy that finds no room (SQLite's page limit on the copy stands in for a full disk) is
    /// the destination's error, naming the destination and the copy, never the database, at
    /// every page limit; nothing of the copy stays behind, SQLite's journal included.
    #[test]
    fn a_full_destination_is_named_as_the_destination_and_leaves_nothing() {
        let (dir, db, path) = database();
        let before = names_in(dir.path());
        for max_pages in [1u32, 2, 10, 100, 200] {
            let limit = |c: &Connection| c.pragma_update(None, "max_page_count", max_pages);
            // A file destination: its own temporary file is the copy.
            let dest = dir.path().join("copy.db");
            let out = Output::open_new(&dest, Some(&db)).unwrap();
            let copy = out.staging_path().unwrap();
            let e = db.copy_with(&copy, &dest, Copy::Destination, limit).unwrap_err();
            let text = e.to_string();
            assert!(matches!(&e, Error::Backup { path: p, .. } if p == &dest), "{e:?}");
            assert!(text.contains("the destination's disk is full"), "{text}");
            assert!(text.contains(&copy.display().to_string()), "{text}");
            assert!(!text.contains(&path.display().to_string()), "names the database: {text}");
            assert_eq!(text.lines().count(), 1);
            drop(out);
            assert_eq!(names_in(dir.path()), before, "{max_pages} pages: a copy stayed");
            // A pipe or device destination: the staged copy's folder is the one that is full.
            let dest = Path::new("-");
            let (stage, _file, _) = TempFile::stage(&path, Some(&db), dest).unwrap();
            let e = db.copy_with(&stage.path(), dest, Copy::Staging, limit).unwrap_err();
            let text = e.to_string();
            assert!(matches!(&e, Error::Backup { path: p, .. } if p == dest), "{e:?}");
            assert!(text.contains("the disk of the staging folder is full"), "{text}");
            assert!(text.contains(&stage.path().display().to_string()), "{text}");
            assert!(text.contains("TMPDIR"), "{text}");
            drop(stage);
            assert_eq!(names_in(dir.path()), before, "{max_pages} pages: a staged copy stayed");
        }
        assert!(db.integrity_check().unwrap().is_empty());
        let copy = dir.path().join("whole.db");
        assert!(db.backup_to(&copy).unwrap() > 200);
    }

    /// Only a damaged database or a failed read is the database's; every other failure of a
    /// backup step is the copy's.
    #[test]
    fn a_step_error_is_the_databases_only_when_reading_it_failed() {
        use rusqlite::ffi;
        let failure = |extended: i32| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(extended), None)
        };
        for code in [
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_IOERR_READ,
            ffi::SQLITE_IOERR_SHORT_READ,
        ] {
            assert!(reads_the_source(&failure(code)), "{code}");
        }
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_TRUNCATE,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_PERM,
            ffi::SQLITE_IOERR,
        ] {
            assert!(!reads_the_source(&failure(code)), "{code}");
        }
    }
}
