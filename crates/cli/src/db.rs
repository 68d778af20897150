//! `init`, `status` and `db …`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aigentflow_audit::AuditLog;
use aigentflow_lessons::{IndexHealth, LessonsStore};
use aigentflow_persistence::{Backend, Location, Output, SqliteStateStore};
use aigentflow_tracker::ExecutionTracker;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::out::{say, table};
use crate::{Ctx, Done};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Run every check: SQLite integrity, foreign keys, the schema's triggers (none missing,
    /// changed, disabled or added on its tables; on PostgreSQL also no trigger firing only in
    /// replica sessions, no session in replica mode, no rule on its tables and no view in a
    /// table's place), the lessons index, the audit chain. Exits 3 if any finds a problem; a
    /// check that cannot run is such a problem: a damaged page, or a file too damaged to open
    /// (truncated, its header overwritten, or not a database at all), when every check says why
    /// it could not run. A missing database or an empty file is an error (exit 1), and nothing is
    /// created or written.
    Check,
    /// Copy the database to DEST with SQLite's online backup: one consistent snapshot, taken
    /// while the orchestrator goes on writing. A PostgreSQL database is copied into a SQLite
    /// file the same way, every row from one snapshot (as `db copy URL FILE` copies), which
    /// `db copy` takes back to a server. A file DEST must not exist: the copy is written beside
    /// it, checked, and renamed into place, with mode 0600. A pipe, FIFO or device (or `-` for
    /// stdout) gets the checked copy's bytes straight through; that copy is staged beside the
    /// database, or in TMPDIR when the database's folder cannot be written or it is a server's.
    /// The database's own files are refused by any name. A full disk is named as the
    /// destination's (or the staging folder's), never the database's.
    Backup {
        /// Where to write the copy (`-` is stdout).
        dest: PathBuf,
    },
    /// Apply the migrations this build has and the database lacks. A transaction a writer left
    /// unfinished (a hot `-journal`, which every read refuses to touch) is rolled back first,
    /// and said so.
    Migrate,
    /// Copy a whole database into an empty one, across backends: a SQLite file into a
    /// PostgreSQL database to move a team onto a server, or back into a file for a local copy.
    /// SRC and DEST are each a path or a `postgres://` URL (`--db` is not used). SRC is read in
    /// one snapshot at this build's schema (migrate it first), and its audit log must verify (a
    /// copy could not carry what verify finds there, such as rows deleted from the log's end);
    /// DEST is created (a file) and
    /// migrated if needed, and must hold no rows; a file DEST that is a symlink, or whose files
    /// (it, `-wal`, `-journal`, `-shm`) would be SRC's own, is refused. Every row is copied as
    /// stored, ids and audit hashes included, in one transaction: on any error DEST is left as
    /// it was. Text goes through the redaction policy as into any store (a secret written around
    /// the stores is not carried over); a row a hash seals (audit, workflow definitions) is
    /// copied as stored, and one holding text the policy would change stops the copy. A new file DEST is written as a temporary file beside it and renamed into place
    /// when complete (nothing is there after an error), and is refused while a `-wal` or
    /// `-journal` is at its name. The audit chain is then verified on DEST; exit 3 if it has
    /// findings.
    Copy {
        /// The database to copy (a path or a postgres:// URL).
        src: PathBuf,
        /// The empty database to copy into (a path or a postgres:// URL).
        dest: PathBuf,
    },
}

pub fn init(ctx: &Ctx) -> anyhow::Result<Done> {
    let db = ctx.create()?;
    let v = db.schema_version()?;
    let report = json!({"path": ctx.path_text(), "migration": v.migration, "latest": v.latest});
    ctx.out.emit(&report, || {
        say!("database {} at schema version {} (latest {})", ctx.shown(), v.migration, v.latest)
    })?;
    Ok(Done::Ok)
}

pub fn status(ctx: &Ctx) -> anyhow::Result<Done> {
    let db = ctx.read()?;
    let version = db.schema_version()?;
    let counts = db.table_counts()?;
    let per_state: BTreeMap<String, u64> = SqliteStateStore::new(db.clone())
        .count_by_state()?
        .into_iter()
        .map(|(state, n)| (state.as_str().to_owned(), n))
        .collect();
    let traces = ExecutionTracker::new(db.clone()).count_by_status()?;
    let head = AuditLog::new(db.clone()).head()?;
    let engine = db.engine_version()?;
    let sets = db.migration_sets()?;
    let report = json!({
        "path": ctx.path_text(),
        "backend": db.backend(),
        "engine": engine,
        "migration": version.migration,
        "latest": version.latest,
        "migration_sets": sets,
        "bytes": db.size_on_disk(),
        "rows": counts.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "tasks_per_state": per_state,
        "traces_per_status": traces.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "audit_head": head,
    });
    ctx.out.emit(&report, || {
        say!("database   {}", ctx.shown());
        say!("schema     version {} of {} ({engine})", version.migration, version.latest);
        say!("size       {:.1} MB", db.size_on_disk() as f64 / 1e6);
        say!();
        let rows: Vec<Vec<String>> =
            sets.iter().map(|s| vec![s.name.clone(), s.version.to_string()]).collect();
        table(&["MIGRATION SET", "VERSION"], &rows);
        say!();
        let rows: Vec<Vec<String>> =
            counts.iter().map(|(t, n)| vec![t.to_string(), n.to_string()]).collect();
        table(&["TABLE", "ROWS"], &rows);
        say!();
        let rows: Vec<Vec<String>> =
            per_state.iter().map(|(s, n)| vec![s.clone(), n.to_string()]).collect();
        table(&["TASK STATE", "TASKS"], &rows);
        say!();
        let rows: Vec<Vec<String>> =
            traces.iter().map(|(s, n)| vec![s.clone(), n.to_string()]).collect();
        table(&["TRACE STATUS", "TRACES"], &rows);
        say!();
        match &head {
            Some(h) => say!("audit head {} rows, last id {}, hash {}", h.rows, h.last_id, h.hash),
            None => say!("audit head (empty log)"),
        }
    })?;
    Ok(Done::Ok)
}

pub fn run(ctx: &Ctx, command: DbCommand) -> anyhow::Result<Done> {
    match command {
        DbCommand::Check => check(ctx),
        DbCommand::Backup { dest } => {
            let db = ctx.snapshot()?;
            let out = Output::open_new(&dest, Some(&db))?;
            ctx.out.note_leftovers(out.leftovers());
            let to_stdout = out.is_stdout();
            let bar = ctx.out.spinner("backing up");
            let report = db.backup_into(out);
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let report = report?;
            ctx.out.note_leftovers(&report.leftovers);
            // Nothing else goes where the copy went.
            if !to_stdout {
                let json = json!({"dest": dest.to_string_lossy(), "pages": report.pages, "bytes": report.bytes});
                ctx.out.emit(&json, || {
                    say!(
                        "backed up {} to {} ({} pages, {} bytes)",
                        ctx.shown(),
                        dest.display(),
                        report.pages,
                        report.bytes
                    )
                })?;
            }
            Ok(Done::Ok)
        }
        DbCommand::Copy { src, dest } => copy(ctx, src, dest),
        DbCommand::Migrate => {
            // The version before, unless a writer's unfinished transaction keeps the database
            // from being read until opening it to write rolls that back.
            let before = match ctx.snapshot().and_then(|db| Ok(db.schema_version()?)) {
                Ok(v) => Some(v.migration),
                Err(e)
                    if matches!(
                        e.downcast_ref::<aigentflow_persistence::Error>(),
                        Some(aigentflow_persistence::Error::UnfinishedTransaction { .. })
                    ) =>
                {
                    None
                }
                // The same message as every other command's for a file that is not there.
                Err(_) => {
                    ctx.write()?;
                    Some(0)
                }
            };
            let db = ctx.write()?;
            let after = db.schema_version()?;
            let report = json!({"path": ctx.path_text(), "from": before, "to": after.migration, "rolled_back": before.is_none()});
            ctx.out.emit(&report, || match before {
                None => say!(
                    "rolled back the transaction a writer left unfinished in {}; it is at version {}",
                    ctx.shown(),
                    after.migration
                ),
                Some(before) if before == after.migration => {
                    say!("{} is up to date at version {}", ctx.shown(), after.migration)
                }
                Some(before) => {
                    say!("migrated {} from version {before} to {}", ctx.shown(), after.migration)
                }
            })?;
            Ok(Done::Ok)
        }
    }
}

/// The names of `db check`'s checks, in the order it runs and prints them.
const CHECKS: [&str; 5] = ["integrity", "foreign keys", "schema", "lessons index", "audit chain"];

/// Whether opening the database failed because its file is damaged: SQLite finds it malformed
/// (truncated, a page overwritten) or no database at all (its header overwritten, random bytes,
/// which SQLite cannot tell from a file that never was one). That is what a check finds, not an
/// error of the command's. An empty file is not one: it is no database yet, which `init` makes
/// into one, and every command names it so (exit code 1).
fn is_damaged(e: &anyhow::Error) -> bool {
    use aigentflow_persistence::Error;
    e.downcast_ref::<Error>()
        .is_some_and(|e| e.is_corrupt() || matches!(e, Error::NotADatabase { .. }))
}

fn check(ctx: &Ctx) -> anyhow::Result<Done> {
    let db = match ctx.read() {
        Ok(db) => db,
        // No check can run: each says so, and why, as one that meets a damaged page does.
        Err(e) if is_damaged(&e) => {
            let why = format!("could not run: {e:#}");
            return report(ctx, CHECKS.iter().map(|name| (*name, false, why.clone())).collect());
        }
        Err(e) => return Err(e),
    };
    // On PostgreSQL the server checks its own pages and enforces foreign keys as rows are
    // written: there is nothing to ask it, which the report says rather than "ok".
    let server = db.backend() == Backend::Postgres;
    let by_server =
        |ok: String| if server { "kept by the PostgreSQL server".to_owned() } else { ok };
    // A check that cannot run (a damaged page it reads) is a problem it found, told with the
    // check's name; the others still run.
    let failed = |e: &dyn std::fmt::Display| (false, format!("could not run: {e}"));
    let integrity = match if server { Ok(Vec::new()) } else { db.integrity_check() } {
        Ok(found) if found.is_empty() => (true, by_server("ok".to_owned())),
        Ok(found) => (false, found.join("; ")),
        Err(e) => failed(&e),
    };
    let foreign = match if server { Ok(Vec::new()) } else { db.foreign_key_problems() } {
        Ok(found) => match found.first() {
            None => (true, by_server("ok".to_owned())),
            Some(p) => (
                false,
                format!(
                    "{} rows point at nothing (first: {} row {} → {})",
                    found.len(),
                    p.table,
                    p.rowid.map_or("?".into(), |r| r.to_string()),
                    p.parent
                ),
            ),
        },
        Err(e) => failed(&e),
    };
    let schema = match db.schema_problems() {
        Ok(found) if found.is_empty() => {
            (true, "ok (the migrations' triggers, and no other)".to_owned())
        }
        Ok(found) => (false, found.join("; ")),
        Err(e) => failed(&e),
    };
    let index = match LessonsStore::new(db.clone()).check() {
        Ok(IndexHealth::Ok { lessons }) => (true, format!("ok ({lessons} lessons)")),
        Ok(IndexHealth::Damaged { reason }) => {
            (false, format!("{reason}; repair with `aigentflow lessons rebuild`"))
        }
        Err(e) => failed(&e),
    };
    let chain = match AuditLog::new(db.clone()).verify(None) {
        Ok(chain) => match &chain.finding {
            None => (true, format!("ok ({} rows)", chain.rows)),
            Some(f) if chain.findings_total > 1 => (
                false,
                format!(
                    "{f} (and {} more; see `aigentflow audit verify`)",
                    chain.findings_total - 1
                ),
            ),
            Some(f) => (false, f.to_string()),
        },
        Err(e) => failed(&e),
    };
    let checks = CHECKS
        .into_iter()
        .zip([integrity, foreign, schema, index, chain])
        .map(|(name, (ok, detail))| (name, ok, detail))
        .collect();
    report(ctx, checks)
}

/// Prints the checks' outcomes: exit code 3 if any found a problem.
fn report(ctx: &Ctx, checks: Vec<(&str, bool, String)>) -> anyhow::Result<Done> {
    let all_ok = checks.iter().all(|c| c.1);
    let report: Vec<Value> = checks
        .iter()
        .map(|(name, ok, detail)| json!({"check": name, "ok": ok, "detail": detail}))
        .collect();
    ctx.out.emit(&json!({"ok": all_ok, "checks": report}), || {
        for (name, ok, detail) in &checks {
            say!("{} {name:<14} {detail}", ctx.out.mark(*ok));
        }
    })?;
    Ok(if all_ok { Done::Ok } else { Done::Problems })
}

fn copy(ctx: &Ctx, src: PathBuf, dest: PathBuf) -> anyhow::Result<Done> {
    let from = Ctx { path: src, out: ctx.out.clone(), lock_timeout: ctx.lock_timeout };
    let to = Ctx { path: dest, out: ctx.out.clone(), lock_timeout: ctx.lock_timeout };
    let source = from.read()?;
    source.check_copy_source()?;
    // What verify finds in the source, the copy would not carry: rows deleted from the log's
    // end show only in the source's count of appended ids, which a copy cannot take (the
    // destination's head names its last row). The source's chain is verified in the snapshot
    // the copy reads, so nothing done to it in between is copied unseen; a log that does not
    // verify is refused before any row is written.
    let shown = from.shown();
    let check = |tx: &aigentflow_persistence::Tx<'_>| -> aigentflow_persistence::Result<()> {
        let verified = AuditLog::verify_in(tx, None).map_err(|e| match e {
            aigentflow_audit::Error::Persistence(e) => e,
            other => aigentflow_persistence::Error::InvalidInput {
                what: "copy source",
                reason: other.to_string().into(),
            },
        })?;
        match verified.finding {
            None => Ok(()),
            Some(finding) => Err(aigentflow_persistence::Error::InvalidInput {
                what: "copy source",
                reason: format!(
                    "the audit log of {shown} does not verify ({finding}), and a copy would not \
                     show it: see `aigentflow --db {shown} audit verify`; nothing was copied"
                )
                .into(),
            }),
        }
    };
    let bar = ctx.out.spinner("copying");
    let progress = |table: &str, done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_message(format!("copying {table}: {done} of {total} rows"));
        }
    };
    // A file destination, however it is spelled (`sqlite:PATH` too), by the output rule for a
    // database the command makes: a new one is written beside its name and renamed into place
    // once complete; an existing one (an empty database) is opened without following a link,
    // so one planted after the check fails the open, and filled in one transaction.
    let (target, report) = match Location::parse(&to.path)? {
        Location::File(path) if std::fs::symlink_metadata(&path).is_err() => {
            let report = source.copy_into_new_file_checked(&path, &check, progress);
            (None, report)
        }
        Location::File(path) => {
            aigentflow_persistence::check_database_destination(&path, source.path())?;
            let target = to.create_at_no_link()?;
            let report = source.copy_into_checked(&target, &check, progress);
            (Some(target), report)
        }
        Location::Server(_) => {
            let target = to.create()?;
            let report = source.copy_into_checked(&target, &check, progress);
            (Some(target), report)
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    let target = match target {
        Some(target) => target,
        None => to.read()?,
    };
    let chain = AuditLog::new(target.clone()).verify(None)?;
    let json = json!({
        "from": from.path_text(),
        "to": to.path_text(),
        "rows": report.rows,
        "tables": report.tables.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "audit_chain_ok": chain.finding.is_none(),
    });
    ctx.out.emit(&json, || {
        say!("copied {} rows from {} to {}", report.rows, from.shown(), to.shown());
        let rows: Vec<Vec<String>> =
            report.tables.iter().map(|(t, n)| vec![t.to_string(), n.to_string()]).collect();
        table(&["TABLE", "ROWS"], &rows);
        match &chain.finding {
            None => say!(
                "{} audit chain intact on {} ({} rows)",
                ctx.out.mark(true),
                to.shown(),
                chain.rows
            ),
            Some(f) => say!("{} audit chain on {}: {f}", ctx.out.mark(false), to.shown()),
        }
    })?;
    Ok(if chain.finding.is_none() { Done::Ok } else { Done::Problems })
}
