//! Copying a whole database into an empty one, across backends (`aigentflow db copy`): SQLite
//! to PostgreSQL to move a team onto a server, PostgreSQL to SQLite for a local copy.
//!
//! The source is read in one snapshot and the destination written in one transaction, table by
//! table in an order that keeps foreign keys satisfied, streaming (memory stays flat whatever
//! the size). Every cell is copied as stored, ids included, so every row is equal and the audit
//! chain's hashes hold on the destination. Every text goes through the redaction policy on its
//! way in, as into any store: what entered the source through a store comes out unchanged, and
//! a secret written around the stores (or by an older version) is not carried over. A row a
//! hash seals (the audit log's, a workflow definition's) cannot be redacted without breaking
//! its hash: text of one that the policy would change stops the copy ([`Error::SealedSecret`]).
//! After
//! the rows, what each backend keeps beside them is set: PostgreSQL's identity sequences and the
//! audit log's head row.

use serde::Serialize;

use crate::bind::{Cell, Clean, Param};
use crate::db::{Backend, Database, Tx};
use crate::error::{Error, Result};

/// The tables a copy moves, parents before children, with the order rows are read in. Their
/// columns are read from each database's schema (see [`columns`]), so a column a migration adds
/// is copied without being named here, and a column one side lacks stops the copy.
const TABLES: [(&str, &str); 14] = [
    ("schema_versions", "version"),
    ("workflow_definitions", "name, version"),
    ("workflow_states", "task_id"),
    ("task_workflows", "task_id"),
    ("state_transitions", "id"),
    ("checkpoints", "task_id, seq, id"),
    ("approval_requests", "id"),
    ("audit_logs", "id"),
    ("lessons", "id"),
    // In feed order: the destination keeps each trace's feed number only if it follows every
    // number before it (the schema's trace feed triggers).
    ("execution_traces", "feed_seq, id"),
    ("agent_invocations", "id"),
    // A span's parent key is checked at commit, so id order serves however spans nest.
    ("spans", "id"),
    ("span_decisions", "id"),
    ("configurations", "key, scope"),
];

/// A table's stored columns in order, generated ones left out (the destination computes them:
/// `agent_invocations.total_tokens`, PostgreSQL's `lessons.search_vector`). SQLite's
/// `table_xinfo` marks generated columns hidden 2 (virtual) or 3 (stored).
const COLUMNS: &str = "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid";
const COLUMNS_PG: &str = "SELECT column_name::TEXT FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = ?1 AND is_generated = 'NEVER'
     ORDER BY ordinal_position";

/// The identity columns of the PostgreSQL schema, whose sequences must move past copied ids.
const IDENTITIES: [&str; 3] = ["state_transitions", "agent_invocations", "span_decisions"];

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Rows copied in all.
    pub rows: u64,
}

/// A check of a copy's source, run in the snapshot the copy reads ([`Database::copy_into_checked`]).
pub type SourceCheck<'c> = &'c dyn Fn(&Tx<'_>) -> Result<()>;

impl Database {
    /// Whether [`Database::copy_into`] takes this database as a source: one that holds
    /// application migration sets is refused ([`Error::InvalidInput`] naming them), their tables
    /// being the programs' that own them. Callers check it before making a destination.
    pub fn check_copy_source(&self) -> Result<()> {
        self.read(|src| refuse_sets(src, self))
    }

    /// Copies every row of this database into `dest`, which must be empty (a fresh `init`:
    /// nothing but the schema's own version row). `progress` is told `(table, rows copied of
    /// the table so far, rows the table has)` as the copy goes. Either everything is copied or,
    /// on any error, nothing is left in `dest`.
    pub fn copy_into(
        &self,
        dest: &Database,
        progress: impl FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        self.copy_into_checked(dest, &|_| Ok(()), progress)
    }

    /// [`copy_into`](Self::copy_into), with `check` run on the source in the snapshot the copy
    /// reads, before any row is written: what it refuses (a log that does not verify) cannot
    /// change between the check and the copy.
    pub fn copy_into_checked(
        &self,
        dest: &Database,
        check: SourceCheck<'_>,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        if dest.is_read_only() {
            return Err(Error::ReadOnly { path: dest.location().to_path_buf() });
        }
        let totals = self.table_counts()?;
        let total = |table: &str| totals.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n);
        self.read(|src| {
            refuse_sets(src, self)?;
            check(src)?;
            dest.write(|dst| {
                check_empty(dst, dest)?;
                if crate::sets::versions(dst, 0)?.len() > 1 {
                    return Err(Error::NotEmpty {
                        location: dest.location().to_path_buf(),
                        table: crate::sets::HISTORY,
                        rows: 1,
                    });
                }
                let mut report = CopyReport { tables: Vec::new(), rows: 0 };
                for (table, order) in TABLES {
                    let columns = shared_columns(src, self, dst, dest, table)?;
                    let copied = copy_table(src, dst, table, &columns, order, |n| {
                        progress(table, n, total(table));
                    })?;
                    report.tables.push((table, copied));
                    report.rows += copied;
                }
                if dst.backend() == Backend::Postgres {
                    after_postgres(dst)?;
                }
                Ok(report)
            })
        })
    }
}

/// Refuses a source that holds application migration sets: their tables are the programs'
/// that own them, which a copy does not know (copying the core tables alone would leave them
/// behind, and copying their history would claim tables the destination lacks).
fn refuse_sets(src: &Tx<'_>, source: &Database) -> Result<()> {
    let sets: Vec<String> = crate::sets::versions(src, 0)?
        .into_iter()
        .skip(1)
        .map(|s| format!("{} at version {}", s.name, s.version))
        .collect();
    if sets.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidInput {
        what: "copy source",
        reason: format!(
            "{} holds the application migration sets {}, whose tables a copy does not know; copy them with the program that owns them (on SQLite, `db backup` copies the whole file)",
            source.location().display(),
            sets.join(", ")
        )
        .into(),
    })
}

/// Refuses a destination that holds any row but the schema's own version rows. On PostgreSQL
/// the tables are first locked against every other writer until the copy commits (SQLite's
/// write transaction already is the only writer): two copies into one empty database at once
/// would otherwise both find it empty and merge their sources.
fn check_empty(dst: &Tx<'_>, dest: &Database) -> Result<()> {
    if dst.backend() == Backend::Postgres {
        let tables: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
        dst.execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", tables.join(", ")), &[])?;
    }
    for (table, _) in TABLES.iter().filter(|(t, _)| *t != "schema_versions") {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let rows = dst.query_row(&sql, &[], |r| r.get::<u64>(0))?.unwrap_or(0);
        if rows > 0 {
            return Err(Error::NotEmpty { location: dest.location().to_path_buf(), table, rows });
        }
    }
    Ok(())
}

/// A table's stored columns.
fn columns(tx: &Tx<'_>, table: &str) -> Result<Vec<String>> {
    tx.prepare(tx.dialect(COLUMNS, COLUMNS_PG))?
        .query_map(&[Param::verbatim(table.to_owned())], |r| r.get::<String>(0))
}

/// The columns of `table` the copy moves: the source's, which the destination must have, all
/// and no more (a column left behind would be data lost; one the source lacks, a schema the
/// two databases do not share).
fn shared_columns(
    src: &Tx<'_>,
    source: &Database,
    dst: &Tx<'_>,
    dest: &Database,
    table: &'static str,
) -> Result<Vec<String>> {
    let from = columns(src, table)?;
    let to = columns(dst, table)?;
    let missing = |column: &String, db: &Database| Error::SchemaMismatch {
        table,
        column: column.as_str().into(),
        location: db.location().to_path_buf(),
    };
    if let Some(column) = from.iter().find(|c| !to.contains(c)) {
        return Err(missing(column, dest));
    }
    if let Some(column) = to.iter().find(|c| !from.contains(c)) {
        return Err(missing(column, source));
    }
    Ok(from)
}

/// Copies one table; `progress` is told how many rows are copied so far.
/// The tables whose rows a hash seals: their text is copied as stored, and refused if the
/// redaction policy would change it (see the module's documentation).
const SEALED: [&str; 2] = ["audit_logs", "workflow_definitions"];

fn copy_table(
    src: &Tx<'_>,
    dst: &Tx<'_>,
    table: &'static str,
    columns: &[String],
    order: &str,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let list = columns.join(", ");
    let select = format!("SELECT {list} FROM {table} ORDER BY {order}");
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    // The seed's version row is already in a fresh destination: it takes the source's.
    let conflict = if table == "schema_versions" {
        " ON CONFLICT(version) DO UPDATE SET applied_at = excluded.applied_at,
              description = excluded.description"
    } else {
        ""
    };
    let insert =
        format!("INSERT INTO {table} ({list}) VALUES ({}){conflict}", placeholders.join(", "));
    let mut read = src.prepare(&select)?;
    let mut write = dst.prepare(&insert)?;
    let mut rows = read.query(&[])?;
    let mut copied = 0u64;
    let sealed = SEALED.contains(&table);
    let mut values: Vec<Param<'static>> = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        values.clear();
        for (i, column) in columns.iter().enumerate() {
            values.push(match row.cell(i)? {
                Cell::Null => Param::NULL,
                Cell::Integer(n) => Param::int(n),
                Cell::Real(r) => Param::real(r),
                // JSON by the policy's JSON form (the text policy over JSON text could break
                // it), other text by the text policy: `Clean::json_text`, as the stores bind.
                Cell::Text(t) => {
                    let clean = Clean::json_text(t)?;
                    if sealed && clean.as_str() != t {
                        return Err(Error::SealedSecret {
                            table,
                            column: column.as_str().into(),
                            row: copied + 1,
                        });
                    }
                    // Cleaned just above; owned to outlive the row it was read from.
                    Param::verbatim(clean.into_owned())
                }
                Cell::Blob(_) => {
                    return Err(Error::Uncopyable {
                        table,
                        column: column.as_str().into(),
                        row: copied + 1,
                    })
                }
            });
        }
        write.execute(&values)?;
        copied += 1;
        if copied.is_multiple_of(1000) {
            progress(copied);
        }
    }
    progress(copied);
    Ok(copied)
}

/// Moves PostgreSQL's identity sequences past the copied ids, and the audit head to the last
/// sealed row (the one the chain continues from).
fn after_postgres(dst: &Tx<'_>) -> Result<()> {
    for table in IDENTITIES {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                 COALESCE((SELECT MAX(id) FROM {table}), 1),
                 (SELECT MAX(id) FROM {table}) IS NOT NULL)"
        );
        dst.query_row(&sql, &[], |_| Ok(()))?;
    }
    dst.execute(
        "UPDATE audit_head SET id = last.id, row_hash = last.row_hash
         FROM (SELECT id, row_hash FROM audit_logs WHERE row_hash IS NOT NULL
               ORDER BY id DESC LIMIT 1) AS last",
        &[],
    )?;
    Ok(())
}
