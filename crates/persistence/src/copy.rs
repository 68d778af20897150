//! Copying a whole database into an empty one, across backends (`aigentflow db copy`): SQLite
//! to PostgreSQL to move a team onto a server, PostgreSQL to SQLite for a local copy.
//!
//! The source is read in one snapshot and the destination written in one transaction, table by
//! table in an order that keeps foreign keys satisfied, streaming (memory stays flat whatever
//! the size). Every cell is copied as stored, ids included, so every row is equal and the audit
//! chain's hashes hold on the destination. Text is not passed through the redaction policy
//! again: it went through it when it entered the source (rows of a legacy database are copied
//! as the older version wrote them, as the audit hashes sealed them). After
//! the rows, what each backend keeps beside them is set: PostgreSQL's identity sequences and the
//! audit log's head row.

use serde::Serialize;

use crate::bind::{Cell, Param};
use crate::db::{Backend, Database, Tx};
use crate::error::{Error, Result};

/// The tables a copy moves, parents before children, with the columns it copies (generated
/// columns are left out: the destination computes them) and the order rows are read in.
const TABLES: [(&str, &[&str], &str); 9] = [
    ("schema_versions", &["version", "applied_at", "description"], "version"),
    (
        "workflow_states",
        &["task_id", "project_id", "state", "context", "created_at", "updated_at"],
        "task_id",
    ),
    (
        "state_transitions",
        &["id", "task_id", "from_state", "to_state", "event", "metadata", "created_at", "seq"],
        "id",
    ),
    (
        "checkpoints",
        &["id", "task_id", "state", "context", "artifacts", "created_at", "seq"],
        "task_id, seq, id",
    ),
    (
        "audit_logs",
        &[
            "id",
            "timestamp",
            "project_id",
            "task_id",
            "agent",
            "action",
            "category",
            "details",
            "user_id",
            "ip_address",
            "prev_hash",
            "row_hash",
        ],
        "id",
    ),
    (
        "lessons",
        &[
            "id",
            "project_id",
            "category",
            "title",
            "summary",
            "details",
            "tags",
            "source_agent",
            "source_file",
            "confidence",
            "application_count",
            "created_at",
            "updated_at",
        ],
        "id",
    ),
    (
        "execution_traces",
        &[
            "id",
            "project_id",
            "task_id",
            "prompt",
            "started_at",
            "completed_at",
            "success",
            "duration_ms",
            "token_usage",
            "metadata",
            "status",
            "owner_pid",
            "owner_started_at",
            "owner_host",
            "heartbeat_at",
            "recovery_attempts",
        ],
        "id",
    ),
    (
        "agent_invocations",
        &[
            "id",
            "trace_id",
            "agent",
            "task_fragment",
            "started_at",
            "completed_at",
            "outcome",
            "quality_score",
            "token_usage",
            "output_summary",
            "error",
        ],
        "id",
    ),
    ("configurations", &["key", "value", "scope", "updated_at"], "key, scope"),
];

/// The identity columns of the PostgreSQL schema, whose sequences must move past copied ids.
const IDENTITIES: [&str; 2] = ["state_transitions", "agent_invocations"];

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Rows copied in all.
    pub rows: u64,
}

impl Database {
    /// Copies every row of this database into `dest`, which must be empty (a fresh `init`:
    /// nothing but the schema's own version row). `progress` is told `(table, rows copied of
    /// the table so far, rows the table has)` as the copy goes. Either everything is copied or,
    /// on any error, nothing is left in `dest`.
    pub fn copy_into(
        &self,
        dest: &Database,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        if dest.is_read_only() {
            return Err(Error::ReadOnly { path: dest.location().to_path_buf() });
        }
        let totals = self.table_counts()?;
        let total = |table: &str| totals.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n);
        self.read(|src| {
            dest.write(|dst| {
                check_empty(dst, dest)?;
                let mut report = CopyReport { tables: Vec::new(), rows: 0 };
                for (table, columns, order) in TABLES {
                    let copied = copy_table(src, dst, table, columns, order, |n| {
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

/// Refuses a destination that holds any row but the schema's own version rows.
fn check_empty(dst: &Tx<'_>, dest: &Database) -> Result<()> {
    for (table, _, _) in TABLES.iter().filter(|(t, _, _)| *t != "schema_versions") {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let rows = dst.query_row(&sql, &[], |r| r.get::<u64>(0))?.unwrap_or(0);
        if rows > 0 {
            return Err(Error::NotEmpty { location: dest.location().to_path_buf(), table, rows });
        }
    }
    Ok(())
}

/// Copies one table; `progress` is told how many rows are copied so far.
fn copy_table(
    src: &Tx<'_>,
    dst: &Tx<'_>,
    table: &'static str,
    columns: &[&'static str],
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
    let mut values: Vec<Param<'static>> = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        values.clear();
        for (i, column) in columns.iter().enumerate() {
            values.push(match row.cell(i)? {
                Cell::Null => Param::NULL,
                Cell::Integer(n) => Param::int(n),
                Cell::Real(r) => Param::real(r),
                Cell::Text(t) => Param::verbatim(t.to_owned()),
                Cell::Blob(_) => {
                    return Err(Error::CorruptRow {
                        table,
                        column,
                        id: format!("{}", copied + 1).into(),
                        reason: "holds bytes that are not text, which no store writes".into(),
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
