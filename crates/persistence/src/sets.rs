//! Application migration sets: a program's own tables in the database the stores use, migrated
//! at open beside the core schema, under the same lock and in the same transaction.
//!
//! A program that builds on the stores (an orchestrator's approvals, model usage, feature flags…)
//! names its migrations as a [`MigrationSet`] and opens the database with
//! [`Database::builder`](crate::Database::builder). Each set keeps its own history in
//! `aigentflow_migration_sets` (set, version, name, checksum, when), so sets version
//! independently of the core schema and of each other:
//!
//! * a migration the database lacks is applied at open, in the transaction that applies the
//!   core's, after them: both commit or neither does, and of processes opening at once one
//!   applies them and the others find nothing left to do;
//! * a set the database holds at a newer version than the program's is refused
//!   ([`Error::NewerSet`], naming the set and both versions), as is an applied migration whose
//!   text changed since or that the program no longer has ([`Error::Migrate`]);
//! * a set the program does not name is left alone: it is another program's.
//!
//! A migration's SQL may differ per backend ([`AppMigration::per_backend`]); each is applied as
//! it is written, without parameters, so it must be fixed text of the program, never a caller's.

use std::borrow::Cow;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::db::Backend;
use crate::error::{Error, Result};

/// The table that records every set's applied migrations (core migration V10 on SQLite, V4 on
/// PostgreSQL).
pub(crate) const HISTORY: &str = "aigentflow_migration_sets";

/// The name the core schema goes by in listings; no set may take it.
pub const CORE_SET: &str = "core";

/// Longest set name (PostgreSQL's identifier length, so a set may name its tables after itself).
const MAX_NAME: usize = 63;

/// One migration of a [`MigrationSet`]: a version, a name, and the SQL that applies it on each
/// backend (the same text for both unless built with [`AppMigration::per_backend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMigration {
    version: u32,
    name: Cow<'static, str>,
    sqlite: Cow<'static, str>,
    postgres: Cow<'static, str>,
}

impl AppMigration {
    /// Migration `version` (from 1), applied by the same `sql` on both backends; usable in a
    /// `const` table of `include_str!` files.
    pub const fn new(version: u32, name: &'static str, sql: &'static str) -> Self {
        Self::per_backend(version, name, sql, sql)
    }

    /// Migration `version` with one text for SQLite and another for PostgreSQL, where their
    /// dialects differ (types, identity columns, triggers).
    pub const fn per_backend(
        version: u32,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Self {
            version,
            name: Cow::Borrowed(name),
            sqlite: Cow::Borrowed(sqlite),
            postgres: Cow::Borrowed(postgres),
        }
    }

    /// As [`AppMigration::per_backend`], from text built at run time.
    pub fn owned(version: u32, name: String, sqlite: String, postgres: String) -> Self {
        Self {
            version,
            name: Cow::Owned(name),
            sqlite: Cow::Owned(sqlite),
            postgres: Cow::Owned(postgres),
        }
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SQL it runs on `backend`.
    pub fn sql(&self, backend: Backend) -> &str {
        match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        }
    }

    /// What the history records of it on `backend`: a digest of its version, name and SQL, so an
    /// applied migration whose text changed since is found.
    fn checksum(&self, backend: Backend) -> String {
        let mut hash = Sha256::new();
        hash.update(self.version.to_be_bytes());
        hash.update(self.name.as_bytes());
        hash.update([0]);
        hash.update(self.sql(backend).as_bytes());
        hex::encode(hash.finalize())
    }
}

/// A named, ordered list of migrations a program applies to the database beside the core
/// schema's (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSet {
    name: String,
    migrations: Vec<AppMigration>,
}

impl MigrationSet {
    /// The set `name` of `migrations`, checked: the name is 1 to 63 of `a-z`, `0-9` and `_`,
    /// starting with a letter, and not `core`; versions start from 1 and rise; each migration
    /// has a name and SQL for both backends. Anything else is [`Error::InvalidInput`].
    pub fn new(name: &str, migrations: impl IntoIterator<Item = AppMigration>) -> Result<Self> {
        let invalid =
            |reason: String| Error::InvalidInput { what: "migration set", reason: reason.into() };
        let well_formed = name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(invalid(format!(
                "{name:?} is not a set name: use 1 to {MAX_NAME} of a-z, 0-9 and _, starting with a letter"
            )));
        }
        if name == CORE_SET {
            return Err(invalid(format!("\"{CORE_SET}\" is the core schema's name")));
        }
        let migrations: Vec<AppMigration> = migrations.into_iter().collect();
        if migrations.is_empty() {
            return Err(invalid(format!("set {name} has no migration")));
        }
        let mut last = 0;
        for m in &migrations {
            if m.version <= last {
                return Err(invalid(format!(
                    "set {name}: version {} follows version {last}; versions start from 1 and rise",
                    m.version
                )));
            }
            last = m.version;
            if m.name.trim().is_empty() {
                return Err(invalid(format!("set {name}: migration {} has no name", m.version)));
            }
            for backend in [Backend::Sqlite, Backend::Postgres] {
                if m.sql(backend).trim().is_empty() {
                    return Err(invalid(format!(
                        "set {name}: migration {} ({}) has no SQL for {}",
                        m.version,
                        m.name,
                        backend.name()
                    )));
                }
            }
        }
        Ok(Self { name: name.to_owned(), migrations })
    }

    /// [`MigrationSet::new`] of a `const` table of migrations compiled into the program.
    pub fn embedded(name: &str, migrations: &'static [AppMigration]) -> Result<Self> {
        Self::new(name, migrations.iter().cloned())
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its migrations, in order.
    pub fn migrations(&self) -> &[AppMigration] {
        &self.migrations
    }

    /// The newest version it has.
    pub fn latest(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }
}

/// A set as a database records it: its name and newest applied version (`aigentflow status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetVersion {
    /// The set's name; [`CORE_SET`] for the core schema.
    pub name: String,
    /// The newest migration of it the database has applied.
    pub version: i64,
}

/// One row of the history.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub set: String,
    pub version: i64,
    pub name: String,
    pub checksum: String,
}

/// The refusal of a migration whose SQL holds transaction control (`COMMIT`, `ROLLBACK`,
/// `BEGIN`, `SAVEPOINT`…): given before any of it runs, so nothing of it is committed.
pub(crate) fn transaction_control_refused(word: &str) -> Error {
    Error::InvalidInput {
        what: "migration",
        reason: format!(
            "its SQL holds {word}, transaction control: a migration runs inside the opening's transaction, so remove it (nothing of this migration ran)"
        )
        .into(),
    }
}

/// What a connection does for the sets, on either backend, inside the opening's transaction.
pub(crate) trait History {
    /// Every row of the history, ordered by set and version (none when the table is missing).
    fn recorded(&mut self) -> Result<Vec<Recorded>>;
    /// Runs a migration's SQL, refusing it whole ([`transaction_control_refused`]) if any of
    /// its statements is transaction control.
    fn apply(&mut self, sql: &str) -> Result<()>;
    /// Records an applied migration.
    fn record(&mut self, set: &str, m: &AppMigration, checksum: &str) -> Result<()>;
    /// Whether the opening's transaction is still the one the sets began in: a migration whose
    /// SQL holds COMMIT or ROLLBACK ends it, and what follows would run outside it.
    fn same_transaction(&mut self) -> Result<bool>;
}

/// The migrations of `set` that `recorded` (the whole history) lacks; a newer, changed or
/// missing applied migration is an error naming the set.
fn pending<'s>(
    set: &'s MigrationSet,
    recorded: &[Recorded],
    backend: Backend,
    location: &Path,
) -> Result<Vec<&'s AppMigration>> {
    let applied: Vec<&Recorded> = recorded.iter().filter(|r| r.set == set.name).collect();
    if let Some(bad) = applied.iter().find(|r| r.version < 1) {
        return Err(Error::Migrate {
            path: location.to_path_buf(),
            reason: format!(
                "migration set {}: its history holds a row whose version is not a number from 1 ({})",
                set.name, bad.name
            )
            .into(),
        });
    }
    if let Some(newest) = applied.iter().map(|r| r.version).max() {
        if newest > i64::from(set.latest()) {
            return Err(Error::NewerSet {
                path: location.to_path_buf(),
                set: set.name.clone().into(),
                found: newest,
                supported: i64::from(set.latest()),
            });
        }
    }
    let divergent = |reason: String| Error::Migrate {
        path: location.to_path_buf(),
        reason: format!("migration set {}: {reason}", set.name).into(),
    };
    for r in &applied {
        match set.migrations.iter().find(|m| i64::from(m.version) == r.version) {
            None => {
                return Err(divergent(format!(
                    "version {} ({}) was applied but this program does not have it",
                    r.version, r.name
                )))
            }
            Some(m) if m.checksum(backend) != r.checksum => {
                return Err(divergent(format!(
                    "version {} ({}) differs from the one applied; add a new migration instead of editing an applied one",
                    r.version, m.name
                )))
            }
            Some(_) => {}
        }
    }
    Ok(set
        .migrations
        .iter()
        .filter(|m| !applied.iter().any(|r| r.version == i64::from(m.version)))
        .collect())
}

/// Whether every set is applied whole (`Ok(false)`: some migration is pending). A set the
/// database holds newer, or with a changed or missing migration, is an error.
pub(crate) fn current(
    history: &mut dyn History,
    sets: &[MigrationSet],
    backend: Backend,
    location: &Path,
) -> Result<bool> {
    if sets.is_empty() {
        return Ok(true);
    }
    let recorded = history.recorded()?;
    for set in sets {
        if !pending(set, &recorded, backend, location)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// As [`current`], for a handle that cannot migrate: a pending migration is
/// [`Error::OutdatedSet`].
pub(crate) fn check_read_only(
    history: &mut dyn History,
    sets: &[MigrationSet],
    backend: Backend,
    location: &Path,
) -> Result<()> {
    if sets.is_empty() {
        return Ok(());
    }
    let recorded = history.recorded()?;
    for set in sets {
        let missing = pending(set, &recorded, backend, location)?;
        if !missing.is_empty() {
            let found =
                recorded.iter().filter(|r| r.set == set.name).map(|r| r.version).max().unwrap_or(0);
            return Err(Error::OutdatedSet {
                path: location.to_path_buf(),
                set: set.name.clone().into(),
                found,
                latest: i64::from(set.latest()),
            });
        }
    }
    Ok(())
}

/// Applies what each set lacks, in the order of `sets` and of their versions; returns the
/// `(set, version)` pairs applied. Runs inside the opening's transaction, which the caller
/// commits (or rolls back on an error here, so a set applies whole or not at all).
pub(crate) fn apply(
    history: &mut dyn History,
    sets: &[MigrationSet],
    backend: Backend,
    location: &Path,
) -> Result<Vec<(String, u32)>> {
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let recorded = history.recorded()?;
    // What "the same transaction" is, taken before any migration runs.
    history.same_transaction()?;
    let mut applied = Vec::new();
    for set in sets {
        for m in pending(set, &recorded, backend, location)? {
            let failed = |e: String| Error::Migrate {
                path: location.to_path_buf(),
                reason: format!(
                    "migration set {} version {} ({}): {e}",
                    set.name, m.version, m.name
                )
                .into(),
            };
            history.apply(m.sql(backend)).map_err(|e| failed(e.to_string()))?;
            if !history.same_transaction().map_err(|e| failed(e.to_string()))? {
                return Err(failed(
                    "its SQL ends the opening's transaction (COMMIT, END or ROLLBACK); a migration runs inside the opening's transaction, so remove the transaction control".to_owned(),
                ));
            }
            history
                .record(&set.name, m, &m.checksum(backend))
                .map_err(|e| failed(e.to_string()))?;
            applied.push((set.name.clone(), m.version));
        }
    }
    if !applied.is_empty() {
        tracing::info!(path = %location.display(), ?applied, "migrated application sets");
    }
    Ok(applied)
}

/// Every set's newest applied version, core first, by name.
pub(crate) fn versions(tx: &crate::Tx<'_>, core: i64) -> Result<Vec<SetVersion>> {
    let mut out = vec![SetVersion { name: CORE_SET.to_owned(), version: core }];
    let exists = match tx.backend() {
        Backend::Sqlite => tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            &[crate::Param::text(HISTORY)],
            |r| r.get::<bool>(0),
        )?,
        Backend::Postgres => {
            tx.query_row(crate::pg::TABLE_EXISTS, &[crate::Param::text(HISTORY)], |r| {
                r.get::<bool>(0)
            })?
        }
    };
    if exists != Some(true) {
        return Ok(out);
    }
    // Rows another program wrote are listed as they can be read: a version that is not a
    // whole number (SQLite lets one in) is not one, and no set may be named like the core.
    let mut stmt = tx.prepare(tx.dialect(VERSIONS, VERSIONS_PG))?;
    out.extend(stmt.query_map(&[], |r| {
        Ok(SetVersion { name: r.get::<String>(0)?, version: r.get::<Option<i64>>(1)?.unwrap_or(0) })
    })?);
    Ok(out)
}

const VERSIONS: &str = "SELECT set_name,
        MAX(CASE WHEN typeof(version) = 'integer' THEN version END)
    FROM aigentflow_migration_sets WHERE set_name <> 'core' GROUP BY set_name ORDER BY set_name";
const VERSIONS_PG: &str = "SELECT set_name, MAX(version)
    FROM aigentflow_migration_sets WHERE set_name <> 'core' GROUP BY set_name ORDER BY set_name";

/// A history row read as text (see [`SELECT_HISTORY`]); a version that is not a number reads
/// as -1, which [`pending`] refuses for a set the program names and ignores for any other.
pub(crate) fn parse_row(
    set: String,
    version: Option<String>,
    name: Option<String>,
    checksum: Option<String>,
) -> Recorded {
    Recorded {
        version: version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(-1),
        set,
        name: name.unwrap_or_default(),
        checksum: checksum.unwrap_or_default(),
    }
}

/// The history's rows, as [`History::recorded`] reads them: every column as text, so a row
/// another program wrote badly cannot stop this one from reading its own.
pub(crate) const SELECT_HISTORY: &str = "SELECT set_name, CAST(version AS TEXT), name, checksum
    FROM aigentflow_migration_sets ORDER BY set_name, version";

/// Records an applied migration (`?1` set, `?2` version, `?3` name, `?4` checksum, `?5` when).
pub(crate) const INSERT_HISTORY: &str = "INSERT INTO aigentflow_migration_sets (set_name, version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)";

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: u32) -> AppMigration {
        AppMigration::new(version, "step", "CREATE TABLE t (x INTEGER)")
    }

    #[test]
    fn set_names_and_versions_outside_their_rules_are_refused_naming_the_problem() {
        for name in ["", "Core", "core", "1abc", "a-b", "a b", "é", &"a".repeat(64), "_x"] {
            let e = MigrationSet::new(name, [m(1)]).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { what: "migration set", .. }), "{name}: {e}");
        }
        for versions in [vec![], vec![0], vec![2, 1], vec![1, 1], vec![1, 3, 2]] {
            let e = MigrationSet::new("app", versions.iter().map(|&v| m(v))).unwrap_err();
            assert!(e.to_string().contains("app"), "{versions:?}: {e}");
        }
        let e = MigrationSet::new("app", [AppMigration::new(1, " ", "SELECT 1")]).unwrap_err();
        assert!(e.to_string().contains("no name"), "{e}");
        let e = MigrationSet::new("app", [AppMigration::per_backend(1, "x", "SELECT 1", " ")])
            .unwrap_err();
        assert!(e.to_string().contains("PostgreSQL"), "{e}");
        let ok = MigrationSet::new("a_1", [m(1), m(2), m(10)]).unwrap();
        assert_eq!((ok.name(), ok.latest()), ("a_1", 10));
    }

    #[test]
    fn a_checksum_changes_with_each_part_of_a_migration_and_only_on_its_backend() {
        let base = AppMigration::per_backend(1, "a", "S", "P");
        let variants = [
            AppMigration::per_backend(2, "a", "S", "P"),
            AppMigration::per_backend(1, "b", "S", "P"),
            AppMigration::per_backend(1, "a", "S2", "P"),
        ];
        for v in &variants {
            assert_ne!(v.checksum(Backend::Sqlite), base.checksum(Backend::Sqlite), "{v:?}");
        }
        let pg_only = AppMigration::per_backend(1, "a", "S", "P2");
        assert_eq!(pg_only.checksum(Backend::Sqlite), base.checksum(Backend::Sqlite));
        assert_ne!(pg_only.checksum(Backend::Postgres), base.checksum(Backend::Postgres));
    }
}
