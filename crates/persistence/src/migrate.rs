//! Runs the embedded refinery migrations inside one `BEGIN IMMEDIATE` transaction, so that when
//! several processes open a fresh file at once exactly one migrates and the others wait, then
//! find nothing left to do.
//!
//! Its public functions take a path and return this crate's [`Error`]: what runs on a driver's
//! connection stays inside the crate (PostgreSQL's migrations are in `pg.rs`).

use std::path::Path;

use refinery_core::traits::sync::{Migrate, Query, Transaction};
use refinery_core::Migration;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::db::Backend;
use crate::error::{Error, Result, SqliteResult};
use crate::sets::{self, AppMigration, History, MigrationSet, Recorded};

refinery::embed_migrations!("../../migrations");

const HISTORY_TABLE: &str = "refinery_schema_history";

/// The migration that adds the audit chain's columns (V3).
const AUDIT_CHAIN_VERSION: i64 = 3;

/// The migration that adds the history of application migration sets (V10).
pub(crate) const SETS_VERSION: i64 = 10;

/// The newest migration this build knows.
pub fn latest_version() -> i64 {
    migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// The newest migration applied to this connection's database (0 for none).
pub(crate) fn applied_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_history: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [HISTORY_TABLE],
        |r| r.get(0),
    )?;
    if !has_history {
        return Ok(0);
    }
    conn.query_row(&format!("SELECT MAX(version) FROM {HISTORY_TABLE}"), [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.unwrap_or(0))
}

/// Brings the database up to the latest version, and `sets` up to theirs, in one transaction;
/// returns the core versions it applied.
pub(crate) fn run(conn: &mut Connection, path: &Path, sets: &[MigrationSet]) -> Result<Vec<i64>> {
    run_to(conn, path, latest_version(), sets)
}

/// Brings the SQLite file at `path` (created if missing) up to migration `target`, and no
/// further; returns the versions it applied. For tests of upgrades from every earlier version:
/// [`crate::Database::open`] migrates to the latest.
#[doc(hidden)]
pub fn run_file_to(path: &Path, target: i64) -> Result<Vec<i64>> {
    let mut conn = Connection::open(crate::db::literal_path(path)).map_err(classify(path))?;
    run_to(&mut conn, path, target, &[])
}

/// Brings the database up to `target`, then `sets` (which need [`SETS_VERSION`]) up to theirs.
pub(crate) fn run_to(
    conn: &mut Connection,
    path: &Path,
    target: i64,
    sets: &[MigrationSet],
) -> Result<Vec<i64>> {
    let latest = latest_version();
    let open_err = classify(path);
    let found = applied_version(conn).map_err(classify(path))?;
    check_not_newer(path, found, latest)?;
    if !sets.is_empty() && target < SETS_VERSION {
        return Err(Error::InvalidInput {
            what: "migration target",
            reason: format!("migration sets need core version {SETS_VERSION}, not {target}").into(),
        });
    }
    let sets_current = found < SETS_VERSION
        || sets::current(&mut SqliteHistory(conn, path), sets, Backend::Sqlite, path)?;
    if found >= target && sets_current {
        return Ok(Vec::new());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&open_err)?;
    // Another process may have migrated while this one waited for the lock.
    let found = applied_version(&tx).map_err(&open_err)?;
    check_not_newer(path, found, latest)?;
    let mut in_tx = InTransaction(&tx);
    let mut applied = Vec::new();
    // The migration that adds the audit chain seals the rows already there (a legacy database's),
    // once, before any later migration runs: V7 refuses every UPDATE of audit_logs from then on.
    // Rows that appear later without a hash were written around the log: nothing seals them,
    // and `verify` reports them.
    if found < AUDIT_CHAIN_VERSION && target >= AUDIT_CHAIN_VERSION {
        applied.extend(migrate_to(&mut in_tx, path, AUDIT_CHAIN_VERSION)?);
        crate::audit_chain::seal_legacy_rows(&tx).map_err(&open_err)?;
    }
    applied.extend(migrate_to(&mut in_tx, path, target)?);
    sets::apply(&mut SqliteHistory(&tx, path), sets, Backend::Sqlite, path)?;
    tx.commit().map_err(&open_err)?;
    tracing::info!(path = %path.display(), ?applied, "migrated database");
    Ok(applied)
}

/// Applies the embedded migrations up to `target` inside the caller's transaction.
fn migrate_to(in_tx: &mut InTransaction<'_>, path: &Path, target: i64) -> Result<Vec<i64>> {
    let report = migrations::runner()
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .set_target(refinery_core::Target::Version(target as _))
        .run(in_tx)
        .map_err(|e| migrate_error(path, &e))?;
    Ok(report.applied_migrations().iter().map(|m| i64::from(m.version())).collect())
}

/// A failed migration as [`Error::Migrate`] with refinery's message (the migration and the
/// database's error). A statement SQLite answered with BUSY or LOCKED stays a busy error
/// (`Open` with its code), so that opening retries it within the busy timeout, and a write
/// past the file size limit is [`Error::FileSizeLimit`].
fn migrate_error(path: &Path, e: &refinery_core::Error) -> Error {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(sqlite) = cause.downcast_ref::<rusqlite::Error>() {
            let classified = classify(path)(sqlite);
            // A write past the file size limit is named as one, as any other write's is.
            let limit = matches!(
                classified,
                Error::FileSizeLimit { .. } | Error::FileSizeLimitBelowShm { .. }
            );
            if classified.is_busy() || limit {
                return classified;
            }
        }
        source = cause.source();
    }
    Error::Migrate { path: path.to_path_buf(), reason: e.to_string().into() }
}

fn check_not_newer(path: &Path, found: i64, supported: i64) -> Result<()> {
    if found > supported {
        return Err(Error::NewerSchema { path: path.to_path_buf(), found, supported });
    }
    Ok(())
}

/// The tables of the seed's schema: a file that has one of them but no migration history is a
/// database written by the TypeScript version, which V1 adopts.
const SEED_TABLES: [&str; 9] = [
    "schema_versions",
    "workflow_states",
    "state_transitions",
    "checkpoints",
    "audit_logs",
    "lessons",
    "execution_traces",
    "agent_invocations",
    "configurations",
];

/// What a file with no migration history holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unmigrated {
    /// No table at all: a fresh file, or an empty SQLite database.
    Blank,
    /// The seed's tables: a database of the TypeScript version, to adopt.
    Legacy,
    /// Tables of something else, named (the first few).
    Foreign(String),
}

/// What an unmigrated file holds (see [`Unmigrated`]).
pub(crate) fn unmigrated(conn: &Connection) -> rusqlite::Result<Unmigrated> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let tables =
        stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(if tables.is_empty() {
        Unmigrated::Blank
    } else if tables.iter().any(|t| SEED_TABLES.contains(&t.as_str())) {
        Unmigrated::Legacy
    } else {
        let mut named = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if tables.len() > 5 {
            named.push_str(", …");
        }
        Unmigrated::Foreign(named)
    })
}

/// Refuses to migrate what is not an aigentflow database: a SQLite file of something else, and
/// (unless `create`) a file with no tables yet, which only `init` makes a database.
pub(crate) fn check_adoptable(conn: &Connection, path: &Path, create: bool) -> Result<()> {
    if applied_version(conn).map_err(classify(path))? > 0 {
        return Ok(());
    }
    match unmigrated(conn).map_err(classify(path))? {
        Unmigrated::Legacy => Ok(()),
        Unmigrated::Blank if create => Ok(()),
        Unmigrated::Blank => Err(Error::Blank { path: path.to_path_buf() }),
        Unmigrated::Foreign(tables) => {
            Err(Error::NotAigentflow { path: path.to_path_buf(), tables: tables.into() })
        }
    }
}

/// An error met while opening the database at `path`: what [`Error::at`] can name (not a
/// database, a full disk, a read-only mount, folder or file, a missing folder, an I/O error)
/// becomes that variant, anything else `Open`.
pub(crate) fn classify<E: std::borrow::Borrow<rusqlite::Error>>(
    path: &Path,
) -> impl Fn(E) -> Error + '_ {
    move |source| match Error::at(path, source.borrow()) {
        Error::Sqlite { code, message } => Error::Open { path: path.to_path_buf(), code, message },
        classified => classified,
    }
}

/// A connection already inside a transaction: refinery's statements run in it without opening
/// transactions of their own, so the whole migration commits or rolls back as one.
struct InTransaction<'c>(&'c Connection);

impl Transaction for InTransaction<'_> {
    type Error = rusqlite::Error;

    fn execute<'a, T: Iterator<Item = &'a str>>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.execute_batch(query)?;
            count += 1;
        }
        Ok(count)
    }
}

impl Query<Vec<Migration>> for InTransaction<'_> {
    fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let mut stmt = self.0.prepare(query)?;
        let rows = stmt.query_map([], |row| {
            let applied_on: String = row.get(2)?;
            let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            let checksum: String = row.get(3)?;
            let checksum = checksum.parse::<u64>().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            Ok(Migration::applied(row.get(0)?, row.get(1)?, applied_on, checksum))
        })?;
        rows.collect()
    }
}

impl Migrate for InTransaction<'_> {}

/// The seed's schema version row (`schema_versions`), e.g. `1.0.0`.
pub(crate) fn seed_version(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(SEED_VERSION, [], |r| r.get(0)).optional()
}

/// The seed's schema version as `schema_versions` records it (the same text on both backends).
pub(crate) const SEED_VERSION: &str =
    "SELECT version FROM schema_versions ORDER BY applied_at DESC, version DESC LIMIT 1";

/// The newest migration applied to the database file at `path`, read without changing it
/// (0 for a file no migration has touched, such as one written by the TypeScript version).
pub fn version_at(path: &Path) -> Result<i64> {
    if !path.exists() {
        return Err(Error::Missing { path: path.to_path_buf() });
    }
    let conn = Connection::open_with_flags(
        crate::db::literal_path(path),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(classify(path))?;
    applied_version(&conn).map_err(classify(path))
}

/// The sets' history on a SQLite connection (inside the opening's transaction when it writes).
pub(crate) struct SqliteHistory<'c>(pub(crate) &'c Connection, pub(crate) &'c Path);

impl History for SqliteHistory<'_> {
    fn recorded(&mut self) -> Result<Vec<Recorded>> {
        let exists: bool = self
            .0
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [sets::HISTORY],
                |r| r.get(0),
            )
            .map_err(classify(self.1))?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut stmt = self.0.prepare(sets::SELECT_HISTORY).map_err(classify(self.1))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(sets::parse_row(
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.get(1).ok().flatten(),
                    r.get(2).ok().flatten(),
                    r.get(3).ok().flatten(),
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(classify(self.1))
    }

    fn same_transaction(&mut self) -> Result<bool> {
        Ok(!self.0.is_autocommit())
    }

    /// Statement by statement, as SQLite's parser splits them (a trigger's body is part of its
    /// CREATE TRIGGER), each refused before it runs if it is transaction control: what ran
    /// before it is undone with the opening's transaction.
    fn apply(&mut self, sql: &str) -> Result<()> {
        use rusqlite::fallible_iterator::FallibleIterator;
        let mut statements = rusqlite::Batch::new(self.0, sql);
        while let Some(mut stmt) = statements.next().or_error()? {
            let text = stmt.expanded_sql().unwrap_or_default();
            if let Some(word) = crate::bind::transaction_control(&text) {
                return Err(sets::transaction_control_refused(word));
            }
            let mut rows = stmt.raw_query();
            while rows.next().or_error()?.is_some() {}
        }
        Ok(())
    }

    fn record(&mut self, set: &str, m: &AppMigration, checksum: &str) -> Result<()> {
        let now = aigentflow_core_states::time::to_db(chrono::Utc::now());
        self.0
            .execute(
                sets::INSERT_HISTORY,
                rusqlite::params![set, m.version(), m.name(), checksum, now],
            )
            .map(drop)
            .map_err(classify(self.1))
    }
}
