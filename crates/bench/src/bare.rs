//! The bare baselines: each workload's work done with the `postgres` crate directly, on a fresh
//! database of the same server holding the same schema (`migrations-postgres/V1__schema.sql`,
//! run as it is), with the least work PostgreSQL allows — prepared statements, one round trip
//! where one statement does, `COPY` where rows move in bulk, no hashing, no redaction, no
//! checks, no pool. W8's also runs on SQLite, with `rusqlite` directly on a file of its own
//! ([`BareSpans`]).
//!
//! Rows are loaded with `COPY … FROM STDIN` (untimed); what is timed mirrors what the project's
//! API does for the same workload (see each method).

use std::collections::HashMap;
use std::io::Write;

use aigentflow_audit::AuditEntry;
use aigentflow_core_states::{
    time, Checkpoint, Event, PersistedState, StateContext, StateTransition, WorkflowState,
};
use aigentflow_lessons::NewLesson;
use aigentflow_tracker::{FinishedSpan, Money, NewInvocation};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Statement};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::server::{FreshDatabase, Server};

/// The PostgreSQL schema the project migrates to, run as it is on each bare database.
pub const SCHEMA: &str = include_str!("../../../migrations-postgres/V1__schema.sql");

/// A row hash's width of text (the bare rows carry one of the same size, not computed).
const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A fresh database with the schema, and a plain connection to it.
pub struct Bare {
    /// Declared first, so it closes before the database is dropped.
    pub client: Client,
    db: FreshDatabase,
}

impl std::fmt::Debug for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bare").field("db", &self.db.name()).finish_non_exhaustive()
    }
}

impl Bare {
    /// A read-only REPEATABLE READ transaction: the one snapshot a listing or export reads.
    pub fn snapshot(&mut self) -> Result<postgres::Transaction<'_>> {
        Ok(self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?)
    }

    /// A fresh database on `server` named after `label`, with the schema.
    pub fn fresh(server: &Server, label: &str) -> Result<Self> {
        let db = server.fresh(label)?;
        let mut client = db.connect()?;
        let mut tx = client.transaction()?;
        tx.batch_execute(SCHEMA).context("run migrations-postgres/V1__schema.sql")?;
        tx.commit()?;
        Ok(Self { client, db })
    }

    /// A fresh database on `server` named after `label`, migrated by the project as it opens
    /// one (every migration, its triggers included), then a plain connection to it: where a
    /// baseline does the project's own statements, on the project's own schema.
    pub fn fresh_migrated(server: &Server, label: &str) -> Result<Self> {
        let db = server.fresh(label)?;
        drop(aigentflow_persistence::Database::open(db.url()).context("migrate")?);
        let client = db.connect()?;
        Ok(Self { client, db })
    }

    /// Vacuums and analyses every table, as autovacuum would on a server left alone.
    pub fn settle(&mut self) -> Result<()> {
        settle(&mut self.client)
    }

    /// Loads rows with `COPY table (columns) FROM STDIN` in text format.
    pub fn copy_in(&mut self, table_columns: &str, rows: &CopyRows) -> Result<u64> {
        let mut writer = self.client.copy_in(&format!("COPY {table_columns} FROM STDIN"))?;
        writer.write_all(&rows.buf)?;
        Ok(writer.finish()?)
    }
}

/// `VACUUM (ANALYZE)` of the database `client` is connected to.
pub fn settle(client: &mut Client) -> Result<()> {
    client.batch_execute("VACUUM (ANALYZE)").context("vacuum and analyse")
}

/// Rows in `COPY`'s text format: fields separated by tabs, rows by newlines, `\N` for NULL,
/// backslash, tab, newline and carriage return escaped.
#[derive(Debug)]
pub struct CopyRows {
    buf: Vec<u8>,
    at_row_start: bool,
}

impl Default for CopyRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyRows {
    pub fn new() -> Self {
        Self { buf: Vec::new(), at_row_start: true }
    }

    /// Appends a text field (None is NULL).
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.separator();
        match value {
            None => self.buf.extend_from_slice(b"\\N"),
            Some(text) => {
                for &b in text.as_bytes() {
                    match b {
                        b'\\' => self.buf.extend_from_slice(b"\\\\"),
                        b'\t' => self.buf.extend_from_slice(b"\\t"),
                        b'\n' => self.buf.extend_from_slice(b"\\n"),
                        b'\r' => self.buf.extend_from_slice(b"\\r"),
                        _ => self.buf.push(b),
                    }
                }
            }
        }
        self
    }

    /// Appends a number field (None is NULL).
    pub fn number(&mut self, value: Option<impl std::fmt::Display>) -> &mut Self {
        self.separator();
        match value {
            None => self.buf.extend_from_slice(b"\\N"),
            // Writing to a Vec cannot fail.
            Some(n) => {
                let _ = write!(self.buf, "{n}");
            }
        }
        self
    }

    /// Ends the current row.
    pub fn end(&mut self) {
        self.buf.push(b'\n');
        self.at_row_start = true;
    }

    fn separator(&mut self) {
        if !self.at_row_start {
            self.buf.push(b'\t');
        }
        self.at_row_start = false;
    }
}

// ---- W0 ---------------------------------------------------------------------------------------

/// W0's bare fresh open: connect, run the schema in one transaction, disconnect.
pub fn fresh_open(db: &FreshDatabase) -> Result<()> {
    let mut client = db.connect()?;
    let mut tx = client.transaction()?;
    tx.batch_execute(SCHEMA)?;
    tx.commit()?;
    Ok(())
}

/// W0's bare reopen: connect, read the schema version, disconnect.
pub fn reopen(db: &FreshDatabase) -> Result<()> {
    let mut client = db.connect()?;
    client.query_one("SELECT MAX(version) FROM schema_versions", &[])?;
    Ok(())
}

// ---- W1 ---------------------------------------------------------------------------------------

/// W1's bare saves: per save, one transaction that inserts (first save) or updates the task's
/// row and inserts the new transition and checkpoint rows.
pub struct BareStates {
    bare: Bare,
    insert_state: Statement,
    update_state: Statement,
    insert_transition: Statement,
    insert_checkpoint: Statement,
    transitions: usize,
    checkpoints: usize,
}

impl BareStates {
    pub fn new(mut bare: Bare) -> Result<Self> {
        let c = &mut bare.client;
        let insert_state = c.prepare(
            "INSERT INTO workflow_states (task_id, project_id, state, context, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )?;
        let update_state = c.prepare(
            "UPDATE workflow_states SET state = $2, context = $3, updated_at = $4 WHERE task_id = $1",
        )?;
        let insert_transition = c.prepare(
            "INSERT INTO state_transitions (task_id, seq, from_state, to_state, event, metadata, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        let insert_checkpoint = c.prepare(
            "INSERT INTO checkpoints (id, task_id, seq, state, context, artifacts, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        Ok(Self {
            bare,
            insert_state,
            update_state,
            insert_transition,
            insert_checkpoint,
            transitions: 0,
            checkpoints: 0,
        })
    }

    /// Saves what is new in `state` (this side knows what it stored: no reads).
    pub fn save(&mut self, state: &PersistedState) -> Result<()> {
        let task = state.task_id.as_str();
        let context = serde_json::to_string(&state.context.without_checkpoints())?;
        let now = time::to_db(Utc::now());
        let mut tx = self.bare.client.transaction()?;
        // The task's row first: the others refer to it.
        if self.transitions == 0 && self.checkpoints == 0 {
            let project = state.project_id.as_str();
            let params: [&(dyn ToSql + Sync); 5] =
                [&task, &project, &state.state.as_str(), &context, &now];
            tx.execute(&self.insert_state, &params)?;
        } else {
            tx.execute(&self.update_state, &[&task, &state.state.as_str(), &context, &now])?;
        }
        for (i, t) in state.history.iter().enumerate().skip(self.transitions) {
            let metadata = t.metadata.as_ref().map(serde_json::to_string).transpose()?;
            tx.execute(
                &self.insert_transition,
                &[
                    &task,
                    &(i as i64 + 1),
                    &t.from.as_str(),
                    &t.to.as_str(),
                    &t.event.as_str(),
                    &metadata,
                    &time::to_db(t.timestamp),
                ],
            )?;
        }
        let checkpoints = &state.context.checkpoints;
        for (i, c) in checkpoints.iter().enumerate().skip(self.checkpoints) {
            tx.execute(
                &self.insert_checkpoint,
                &[
                    &c.id.as_str(),
                    &task,
                    &(i as i64 + 1),
                    &c.state.as_str(),
                    &serde_json::to_string(&c.context)?,
                    &serde_json::to_string(&c.artifacts)?,
                    &time::to_db(c.timestamp),
                ],
            )?;
        }
        tx.commit()?;
        self.transitions = state.history.len();
        self.checkpoints = checkpoints.len();
        Ok(())
    }
}

// ---- W2, W3 -----------------------------------------------------------------------------------

/// The columns of an audit row, in the table's order.
const AUDIT_COLUMNS: &str = "id, timestamp, project_id, task_id, agent, action, category, \
    details, user_id, ip_address, prev_hash, row_hash";

/// An audit entry as a row's values (details as JSON text).
struct AuditRow<'e> {
    id: i64,
    timestamp: String,
    entry: &'e AuditEntry,
    project_id: Option<&'e str>,
    task_id: Option<&'e str>,
    category: &'e str,
    details: Option<String>,
}

impl<'e> AuditRow<'e> {
    fn new(id: i64, entry: &'e AuditEntry, timestamp: String) -> Result<Self> {
        Ok(Self {
            id,
            timestamp,
            entry,
            project_id: entry.project_id.as_ref().map(|p| p.as_str()),
            task_id: entry.task_id.as_ref().map(|t| t.as_str()),
            category: entry.category.as_ref().map_or("", |c| c.as_str()),
            details: entry.details.as_ref().map(serde_json::to_string).transpose()?,
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        let e = self.entry;
        [
            &self.id,
            &self.timestamp,
            &self.project_id,
            &self.task_id,
            &e.agent,
            &e.action,
            &self.category,
            &self.details,
            &e.user_id,
            &e.ip_address,
            &HASH,
            &HASH,
        ]
    }

    fn copy(&self, out: &mut CopyRows) {
        let e = self.entry;
        out.number(Some(self.id))
            .text(Some(&self.timestamp))
            .text(self.project_id)
            .text(self.task_id)
            .text(e.agent.as_deref())
            .text(Some(&e.action))
            .text(Some(self.category))
            .text(self.details.as_deref())
            .text(e.user_id.as_deref())
            .text(e.ip_address.as_deref())
            .text(Some(HASH))
            .text(Some(HASH))
            .end();
    }
}

/// W2's bare appends: `INSERT … RETURNING id` of the same row, each in its own transaction
/// (autocommit: one round trip), and one multi-row `INSERT` per batch.
pub struct BareAudit {
    bare: Bare,
    insert: Statement,
    /// The multi-row insert for full batches, and its size.
    insert_batch: Option<(usize, Statement)>,
    next_id: i64,
}

impl BareAudit {
    pub fn new(mut bare: Bare) -> Result<Self> {
        let insert = bare.client.prepare(&format!(
            "INSERT INTO audit_logs ({AUDIT_COLUMNS}) VALUES ({}) RETURNING id",
            placeholders(0, 12)
        ))?;
        Ok(Self { bare, insert, insert_batch: None, next_id: 1 })
    }

    /// Appends one entry in a transaction of its own; returns its id.
    pub fn log(&mut self, entry: &AuditEntry) -> Result<i64> {
        let row = AuditRow::new(self.next_id, entry, time::to_db(Utc::now()))?;
        let id: i64 = self.bare.client.query_one(&self.insert, &row.params())?.get(0);
        self.next_id += 1;
        Ok(id)
    }

    /// Appends the entries with one multi-row `INSERT` (one transaction).
    pub fn log_batch(&mut self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = time::to_db(Utc::now());
        let rows = entries
            .iter()
            .enumerate()
            .map(|(i, e)| AuditRow::new(self.next_id + i as i64, e, now.clone()))
            .collect::<Result<Vec<_>>>()?;
        let params: Vec<&(dyn ToSql + Sync)> = rows.iter().flat_map(AuditRow::params).collect();
        let statement = match &self.insert_batch {
            Some((size, s)) if *size == entries.len() => s.clone(),
            _ => {
                let s = self.bare.client.prepare(&multi_row_insert(entries.len()))?;
                self.insert_batch = Some((entries.len(), s.clone()));
                s
            }
        };
        self.bare.client.execute(&statement, &params)?;
        self.next_id += entries.len() as i64;
        Ok(())
    }
}

/// W2's chained appends: the statements the project's `log()` and `log_batch()` send on
/// PostgreSQL, sent bare on the project's schema — the least work of an append under the locked
/// head, with none of the project's (no redaction, no hashing: a row's hash is its id as hex,
/// which the head's trigger takes as well as any). Beside [`BareAudit`], it shows how much of
/// W2's distance to a bare `INSERT` is the chain's, on the server, and how much the project's.
pub struct BareChain {
    bare: Bare,
    /// One entry after the head, in one autocommitted statement (the project's
    /// `APPEND_AFTER_PG`: the head locked and checked, the row appended, the head moved).
    append: Statement,
    /// Many entries after the head in one autocommitted statement (the project's
    /// `APPEND_ROWS_AFTER_PG`).
    append_rows: Statement,
    next_id: i64,
}

/// The head locked and checked as the project's statements do (the first id `$1`, the hash it
/// links to `$prev`), then the INSERT of the twelve columns, up to the rows it takes.
macro_rules! chain_head {
    ($prev:literal) => {
        concat!(
            "WITH head AS (SELECT 1 FROM audit_head h
        WHERE h.id = $1::bigint - 1 AND h.row_hash IS NOT DISTINCT FROM ",
            $prev,
            "
            AND (SELECT COALESCE(MAX(id), 0) FROM audit_logs) < $1::bigint
        FOR UPDATE OF h),
    appended AS (INSERT INTO audit_logs (id, timestamp, project_id, task_id, agent, action,
            category, details, user_id, ip_address, prev_hash, row_hash)
        "
        )
    };
}

/// [`BareChain`]'s append of rows after the head: the project's statement, its twelve columns
/// as arrays.
const CHAIN_APPEND_ROWS: &str = concat!(
    chain_head!("$2"),
    "SELECT u.* FROM head, unnest($3::bigint[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[]) AS u
        RETURNING id, row_hash)
    UPDATE audit_head SET id = last.id, row_hash = last.row_hash
        FROM (SELECT id, row_hash FROM appended ORDER BY id DESC LIMIT 1) AS last"
);

/// [`BareChain`]'s append after the head: the project's statement, its twelve columns.
const CHAIN_APPEND: &str = concat!(
    chain_head!("$11"),
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM head
        RETURNING id, row_hash)
    UPDATE audit_head SET id = appended.id, row_hash = appended.row_hash FROM appended"
);

impl BareChain {
    pub fn new(mut bare: Bare) -> Result<Self> {
        let append = bare.client.prepare(CHAIN_APPEND)?;
        let append_rows = bare.client.prepare(CHAIN_APPEND_ROWS)?;
        Ok(Self { bare, append, append_rows, next_id: 1 })
    }

    /// The stand-in hash of row `id` (None before the first).
    fn hash(id: i64) -> Option<String> {
        (id > 0).then(|| format!("{id:064x}"))
    }

    /// Appends one entry after the head in one autocommitted statement.
    pub fn log(&mut self, entry: &AuditEntry) -> Result<()> {
        let row = AuditRow::new(self.next_id, entry, time::to_db(Utc::now()))?;
        let (prev, hash) = (Self::hash(self.next_id - 1), Self::hash(self.next_id));
        let mut params = row.params();
        params[10] = &prev;
        params[11] = &hash;
        let appended = self.bare.client.execute(&self.append, &params)?;
        anyhow::ensure!(appended == 1, "the chained baseline's head moved under it");
        self.next_id += 1;
        Ok(())
    }

    /// Appends the entries after the head in one autocommitted statement, as the project's
    /// batch does: the rows as one array per column.
    pub fn log_batch(&mut self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = time::to_db(Utc::now());
        let first = self.next_id;
        let rows = entries
            .iter()
            .enumerate()
            .map(|(i, e)| AuditRow::new(first + i as i64, e, now.clone()))
            .collect::<Result<Vec<_>>>()?;
        let hashes: Vec<Option<String>> =
            (first - 1..first + entries.len() as i64).map(Self::hash).collect();
        let column = |f: for<'r> fn(&'r AuditRow<'r>) -> Option<&'r str>| -> Vec<Option<&str>> {
            rows.iter().map(f).collect()
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let timestamps = column(|r| Some(&r.timestamp));
        let projects = column(|r| r.project_id);
        let tasks = column(|r| r.task_id);
        let agents = column(|r| r.entry.agent.as_deref());
        let actions = column(|r| Some(&r.entry.action));
        let categories = column(|r| Some(r.category));
        let details = column(|r| r.details.as_deref());
        let users = column(|r| r.entry.user_id.as_deref());
        let ips = column(|r| r.entry.ip_address.as_deref());
        let prevs: Vec<Option<&str>> = hashes[..rows.len()].iter().map(Option::as_deref).collect();
        let own: Vec<Option<&str>> = hashes[1..].iter().map(Option::as_deref).collect();
        let appended = self.bare.client.execute(
            &self.append_rows,
            &[
                &first,
                &prevs[0],
                &ids,
                &timestamps,
                &projects,
                &tasks,
                &agents,
                &actions,
                &categories,
                &details,
                &users,
                &ips,
                &prevs,
                &own,
            ],
        )?;
        anyhow::ensure!(appended == 1, "the chained baseline's head moved under it");
        self.next_id = first + entries.len() as i64;
        Ok(())
    }
}

/// `INSERT INTO audit_logs (…) VALUES ($1, …, $12), ($13, …)` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let values: Vec<String> =
        (0..rows).map(|r| format!("({})", placeholders(r * 12, 12))).collect();
    format!("INSERT INTO audit_logs ({AUDIT_COLUMNS}) VALUES {}", values.join(", "))
}

/// `$from+1, …, $from+n`.
fn placeholders(from: usize, n: usize) -> String {
    (from + 1..=from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// W3's bare exports of one project's audit rows.
pub struct BareExport {
    pub bare: Bare,
    rows: CopyRows,
    next_id: i64,
}

/// A JSON row as the project's export writes it (details as JSON, and as the stored text).
#[derive(Serialize)]
struct JsonRow<'a> {
    id: i64,
    timestamp: &'a str,
    project_id: Option<&'a str>,
    task_id: Option<&'a str>,
    agent: Option<&'a str>,
    action: &'a str,
    category: &'a str,
    details: Option<Details<'a>>,
    details_text: Option<&'a str>,
    user_id: Option<&'a str>,
    ip_address: Option<&'a str>,
    prev_hash: Option<&'a str>,
    row_hash: Option<&'a str>,
}

/// Stored details: JSON written through verbatim, or text that is not JSON as a string.
#[derive(Serialize)]
#[serde(untagged)]
enum Details<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

impl BareExport {
    pub fn new(bare: Bare) -> Self {
        Self { bare, rows: CopyRows::new(), next_id: 1 }
    }

    /// Adds entries to the next load.
    pub fn add(&mut self, entries: &[AuditEntry]) -> Result<()> {
        let now = time::to_db(Utc::now());
        for e in entries {
            AuditRow::new(self.next_id, e, now.clone())?.copy(&mut self.rows);
            self.next_id += 1;
        }
        Ok(())
    }

    /// Loads the added entries.
    pub fn load(&mut self) -> Result<u64> {
        let rows = std::mem::take(&mut self.rows);
        self.bare.copy_in(&format!("audit_logs ({AUDIT_COLUMNS})"), &rows)
    }

    /// `COPY (SELECT … ORDER BY id) TO STDOUT (FORMAT csv, HEADER)` of `project`'s rows, read
    /// through the driver into `sink`; returns the bytes written.
    pub fn csv(&mut self, project: &str, sink: &mut dyn Write) -> Result<u64> {
        let sql = format!(
            "COPY (SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE project_id = {} ORDER BY id)
             TO STDOUT (FORMAT csv, HEADER)",
            quote_literal(project)
        );
        let mut reader = self.bare.client.copy_out(&sql)?;
        Ok(std::io::copy(&mut reader, sink)?)
    }

    /// `project`'s rows read as `COPY (SELECT … ORDER BY id) TO STDOUT (FORMAT binary)` (the
    /// least work that reads rows, as the project's export reads them), each written as the
    /// project's JSON row (a JSON array when `lines` is false, one object per line when true);
    /// returns the rows written.
    pub fn json(&mut self, project: &str, lines: bool, sink: &mut dyn Write) -> Result<u64> {
        let mut tx = self.bare.snapshot()?;
        let sql = format!(
            "COPY (SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE project_id = {} ORDER BY id)
             TO STDOUT (FORMAT binary)",
            quote_literal(project)
        );
        let mut stream = Vec::new();
        let mut reader = tx.copy_out(&sql)?;
        let mut out = Vec::with_capacity(64 * 1024);
        let mut count = 0u64;
        if !lines {
            out.push(b'[');
        }
        // The binary COPY format: an 11-byte signature, flags, a header extension; per row a
        // cell count and, per cell, a length (-1: NULL) and its bytes; a count of -1 ends it.
        let mut header = true;
        let mut cells: Vec<Option<std::ops::Range<usize>>> = Vec::with_capacity(12);
        loop {
            let chunk = std::io::BufRead::fill_buf(&mut reader)?;
            if chunk.is_empty() {
                anyhow::bail!("the COPY ended without its trailer");
            }
            stream.extend_from_slice(chunk);
            let n = chunk.len();
            std::io::BufRead::consume(&mut reader, n);
            let mut at = 0;
            if header {
                let Some(ext) = stream.get(15..19) else { continue };
                let ext = usize::try_from(i32::from_be_bytes(ext.try_into()?))?;
                if stream.len() < 19 + ext {
                    continue;
                }
                at = 19 + ext;
                header = false;
            }
            let mut ended = false;
            while let Some(count_bytes) = stream.get(at..at + 2) {
                let fields = i16::from_be_bytes(count_bytes.try_into()?);
                if fields == -1 {
                    ended = true;
                    break;
                }
                cells.clear();
                let mut i = at + 2;
                for _ in 0..fields {
                    let Some(len) = stream.get(i..i + 4) else { break };
                    let len = i32::from_be_bytes(len.try_into()?);
                    i += 4;
                    if len < 0 {
                        cells.push(None);
                        continue;
                    }
                    let len = usize::try_from(len)?;
                    if stream.len() < i + len {
                        break;
                    }
                    cells.push(Some(i..i + len));
                    i += len;
                }
                if cells.len() < usize::try_from(fields)? {
                    break;
                }
                let cell = |k: usize| cells[k].clone().map(|r| &stream[r]);
                let text = |k: usize| -> Result<Option<&str>> {
                    Ok(cell(k).map(std::str::from_utf8).transpose()?)
                };
                let id = i64::from_be_bytes(cell(0).unwrap_or_default().try_into()?);
                let details = text(7)?;
                let row = JsonRow {
                    id,
                    timestamp: text(1)?.unwrap_or_default(),
                    project_id: text(2)?,
                    task_id: text(3)?,
                    agent: text(4)?,
                    action: text(5)?.unwrap_or_default(),
                    category: text(6)?.unwrap_or_default(),
                    details: details.map(|text| {
                        serde_json::from_str(text).map_or(Details::Text(text), Details::Json)
                    }),
                    details_text: details,
                    user_id: text(8)?,
                    ip_address: text(9)?,
                    prev_hash: text(10)?,
                    row_hash: text(11)?,
                };
                if !lines {
                    out.extend_from_slice(if count > 0 { b",\n" } else { b"\n" });
                }
                serde_json::to_writer(&mut out, &row)?;
                if lines {
                    out.push(b'\n');
                }
                count += 1;
                if out.len() >= 32 * 1024 {
                    sink.write_all(&out)?;
                    out.clear();
                }
                at = i;
            }
            stream.drain(..at);
            if ended {
                break;
            }
        }
        drop(reader);
        if !lines {
            out.extend_from_slice(if count > 0 { b"\n]\n" } else { b"]\n" });
        }
        sink.write_all(&out)?;
        tx.commit()?;
        Ok(count)
    }
}

/// A quoted SQL string literal (standard_conforming_strings, on since PostgreSQL 9.1).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

// ---- W4 ---------------------------------------------------------------------------------------

/// The lesson columns a search reads.
const LESSON_COLUMNS: &str = "id, project_id, category, title, summary, details, tags, \
    source_agent, source_file, confidence, application_count, created_at, updated_at";

/// W4's bare search: the tsvector query ranked by `ts_rank_cd` with the title : summary :
/// details weights 4 : 2 : 1 (ties in the store's order: confidence, applications, id), one
/// statement, the rows read through the driver.
pub struct BareLessons {
    pub bare: Bare,
    rows: CopyRows,
    next_id: u64,
    search: Option<Statement>,
}

impl BareLessons {
    pub fn new(bare: Bare) -> Self {
        Self { bare, rows: CopyRows::new(), next_id: 1, search: None }
    }

    /// Adds lessons to the next load.
    pub fn add(&mut self, lessons: &[NewLesson], now: DateTime<Utc>) -> Result<()> {
        let now = time::to_db(now);
        for l in lessons {
            let tags = (!l.tags.is_empty()).then(|| serde_json::to_string(&l.tags)).transpose()?;
            self.rows
                .text(Some(&format!("lesson-{:08}", self.next_id)))
                .text(l.project_id.as_ref().map(|p| p.as_str()))
                .text(Some(l.category.as_str()))
                .text(Some(&l.title))
                .text(Some(&l.summary))
                .text(l.details.as_deref())
                .text(tags.as_deref())
                .text(l.source_agent.as_deref())
                .text(l.source_file.as_deref())
                .number(Some(l.confidence.unwrap_or(1.0)))
                .number(Some(0))
                .text(Some(&now))
                .text(Some(&now))
                .end();
            self.next_id += 1;
        }
        Ok(())
    }

    /// Loads the added lessons.
    pub fn load(&mut self) -> Result<u64> {
        let rows = std::mem::take(&mut self.rows);
        self.bare.copy_in(&format!("lessons ({LESSON_COLUMNS})"), &rows)
    }

    /// The best `limit` lessons for `words`; returns how many were found.
    pub fn search(&mut self, words: &str, limit: i64) -> Result<usize> {
        let statement = match &self.search {
            Some(s) => s.clone(),
            None => {
                let s = self.bare.client.prepare(&format!(
                    "SELECT {LESSON_COLUMNS}, ts_rank_cd('{{0.1, 0.25, 0.5, 1.0}}', search_vector, q) AS score
                     FROM lessons, plainto_tsquery('english', $1) AS q
                     WHERE search_vector @@ q
                     ORDER BY score DESC, confidence DESC NULLS LAST,
                        application_count DESC NULLS LAST, id
                     LIMIT $2"
                ))?;
                self.search = Some(s.clone());
                s
            }
        };
        let rows = self.bare.client.query(&statement, &[&words, &limit])?;
        for r in &rows {
            for i in [0, 2, 3, 4, 11, 12] {
                let _: &str = r.try_get(i)?;
            }
            for i in [1, 5, 6, 7, 8] {
                let _: Option<&str> = r.try_get(i)?;
            }
            let _: Option<f64> = r.try_get(9)?;
            let _: Option<i64> = r.try_get(10)?;
            let _: f32 = r.try_get(13)?;
        }
        Ok(rows.len())
    }
}

// ---- W5 ---------------------------------------------------------------------------------------

/// W5's bare metrics: the aggregate of one agent's invocations since a time, one statement.
pub struct BareTracker {
    pub bare: Bare,
    traces: CopyRows,
    invocations: CopyRows,
    metrics: Option<Statement>,
}

/// One agent's figures over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub total: i64,
    pub successes: i64,
    pub failures: i64,
    pub avg_quality: Option<f64>,
    pub avg_tokens: Option<f64>,
}

impl BareTracker {
    pub fn new(bare: Bare) -> Self {
        Self { bare, traces: CopyRows::new(), invocations: CopyRows::new(), metrics: None }
    }

    /// Adds a trace (its id is the invocations' `trace_id`) to the next load.
    pub fn add_trace(&mut self, id: &str, project: &str, task: &str, now: DateTime<Utc>) {
        let now = time::to_db(now);
        self.traces
            .text(Some(id))
            .text(Some(project))
            .text(Some(task))
            .text(Some("bench"))
            .text(Some(&now))
            .text(Some("running"))
            .number(Some(std::process::id()))
            .text(Some(&now))
            .number(Some(0))
            .end();
    }

    /// Adds an invocation of the trace `trace` to the next load.
    pub fn add_invocation(&mut self, trace: &str, new: &NewInvocation) -> Result<()> {
        let usage = new.token_usage.as_ref().map(serde_json::to_string).transpose()?;
        self.invocations
            .text(Some(trace))
            .text(Some(&new.agent))
            .text(new.task_fragment.as_deref())
            .text(Some(&time::to_db(new.started_at)))
            .text(new.completed_at.map(time::to_db).as_deref())
            .text(new.outcome.map(|o| o.as_str()))
            .number(new.quality_score)
            .text(usage.as_deref())
            .text(new.output_summary.as_deref())
            .text(new.error.as_deref())
            .end();
        Ok(())
    }

    /// Loads the added traces, then the added invocations.
    pub fn load(&mut self) -> Result<u64> {
        let traces = std::mem::take(&mut self.traces);
        self.bare.copy_in(
            "execution_traces (id, project_id, task_id, prompt, started_at, status, owner_pid,
                 heartbeat_at, recovery_attempts)",
            &traces,
        )?;
        let invocations = std::mem::take(&mut self.invocations);
        self.bare.copy_in(
            "agent_invocations (trace_id, agent, task_fragment, started_at, completed_at, outcome,
                 quality_score, token_usage, output_summary, error)",
            &invocations,
        )
    }

    /// `agent`'s figures over the `days` days before now.
    pub fn metrics(&mut self, agent: &str, days: i64) -> Result<Metrics> {
        let statement = match &self.metrics {
            Some(s) => s.clone(),
            None => {
                let s = self.bare.client.prepare(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome = 'success'),
                        COUNT(*) FILTER (WHERE outcome = 'failure'), AVG(quality_score),
                        AVG(total_tokens)::DOUBLE PRECISION
                     FROM agent_invocations WHERE agent = $1 AND started_at >= $2",
                )?;
                self.metrics = Some(s.clone());
                s
            }
        };
        let since = time::to_db(Utc::now() - chrono::Duration::days(days));
        let r = self.bare.client.query_one(&statement, &[&agent, &since])?;
        Ok(Metrics {
            total: r.try_get(0)?,
            successes: r.try_get(1)?,
            failures: r.try_get(2)?,
            avg_quality: r.try_get(3)?,
            avg_tokens: r.try_get(4)?,
        })
    }
}

// ---- W6 ---------------------------------------------------------------------------------------

/// W6's bare listing: a project's task rows, their transitions and their checkpoints, three
/// statements in one read-only snapshot, every column read through the driver.
pub struct BareListing {
    pub bare: Bare,
    states: CopyRows,
    transitions: CopyRows,
    checkpoints: CopyRows,
}

/// W6's three listing statements: the store's, a project's tasks, then their transitions and
/// their checkpoints, ordered by task.
const LIST_STATES: &str = "SELECT task_id, project_id, state, context, created_at, updated_at
    FROM workflow_states WHERE project_id = $1 ORDER BY created_at, task_id";
const LIST_TRANSITIONS: &str =
    "SELECT t.task_id, t.id, t.from_state, t.to_state, t.event, t.metadata, t.created_at
    FROM state_transitions t JOIN workflow_states w ON w.task_id = t.task_id
    WHERE w.project_id = $1 ORDER BY t.task_id, t.seq, t.id";
const LIST_CHECKPOINTS: &str =
    "SELECT c.task_id, c.id, c.state, c.context, c.artifacts, c.created_at
    FROM checkpoints c JOIN workflow_states w ON w.task_id = c.task_id
    WHERE w.project_id = $1 ORDER BY c.task_id, c.seq, c.created_at";

/// What a listing read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub states: usize,
    pub transitions: usize,
    pub checkpoints: usize,
}

impl BareListing {
    pub fn new(bare: Bare) -> Self {
        Self {
            bare,
            states: CopyRows::new(),
            transitions: CopyRows::new(),
            checkpoints: CopyRows::new(),
        }
    }

    /// Adds a task's rows to the next load.
    pub fn add(&mut self, state: &PersistedState, now: DateTime<Utc>) -> Result<()> {
        let task = state.task_id.as_str();
        let now = time::to_db(now);
        let context = serde_json::to_string(&state.context.without_checkpoints())?;
        self.states
            .text(Some(task))
            .text(Some(state.project_id.as_str()))
            .text(Some(state.state.as_str()))
            .text(Some(&context))
            .text(Some(&now))
            .text(Some(&now))
            .end();
        for (i, t) in state.history.iter().enumerate() {
            let metadata = t.metadata.as_ref().map(serde_json::to_string).transpose()?;
            self.transitions
                .text(Some(task))
                .number(Some(i + 1))
                .text(Some(t.from.as_str()))
                .text(Some(t.to.as_str()))
                .text(Some(t.event.as_str()))
                .text(metadata.as_deref())
                .text(Some(&time::to_db(t.timestamp)))
                .end();
        }
        for (i, c) in state.context.checkpoints.iter().enumerate() {
            self.checkpoints
                .text(Some(c.id.as_str()))
                .text(Some(task))
                .number(Some(i + 1))
                .text(Some(c.state.as_str()))
                .text(Some(&serde_json::to_string(&c.context)?))
                .text(Some(&serde_json::to_string(&c.artifacts)?))
                .text(Some(&time::to_db(c.timestamp)))
                .end();
        }
        Ok(())
    }

    /// Loads the added rows (tasks first: the others refer to them).
    pub fn load(&mut self) -> Result<u64> {
        let states = std::mem::take(&mut self.states);
        self.bare.copy_in(
            "workflow_states (task_id, project_id, state, context, created_at, updated_at)",
            &states,
        )?;
        let transitions = std::mem::take(&mut self.transitions);
        self.bare.copy_in(
            "state_transitions (task_id, seq, from_state, to_state, event, metadata, created_at)",
            &transitions,
        )?;
        let checkpoints = std::mem::take(&mut self.checkpoints);
        self.bare.copy_in(
            "checkpoints (id, task_id, seq, state, context, artifacts, created_at)",
            &checkpoints,
        )
    }

    /// Lists `project`'s tasks with their transitions and checkpoints.
    pub fn list(&mut self, project: &str) -> Result<Listed> {
        let mut tx = self.bare.snapshot()?;
        let states = tx.query(LIST_STATES, &[&project])?;
        for r in &states {
            for i in 0..6 {
                let _: &str = r.try_get(i)?;
            }
        }
        let transitions = tx.query(LIST_TRANSITIONS, &[&project])?;
        for r in &transitions {
            let _: i64 = r.try_get(1)?;
            let _: Option<&str> = r.try_get(5)?;
            for i in [0, 2, 3, 4, 6] {
                let _: &str = r.try_get(i)?;
            }
        }
        let checkpoints = tx.query(LIST_CHECKPOINTS, &[&project])?;
        for r in &checkpoints {
            for i in 0..6 {
                let _: &str = r.try_get(i)?;
            }
        }
        tx.commit()?;
        Ok(Listed {
            states: states.len(),
            transitions: transitions.len(),
            checkpoints: checkpoints.len(),
        })
    }

    /// The same three statements, built into the states the store returns: what a program that
    /// needs the states, not only their rows, does at the least. Each context is parsed straight
    /// into its type (the store reads it as JSON first, to set aside the copies of checkpoints a
    /// TypeScript context holds and fill ids a hand-made one lacks).
    pub fn build(&mut self, project: &str) -> Result<Vec<PersistedState>> {
        let mut tx = self.bare.snapshot()?;
        let rows = tx.query(LIST_STATES, &[&project])?;
        let mut states = Vec::with_capacity(rows.len());
        let mut at = HashMap::with_capacity(rows.len());
        for r in &rows {
            let task: &str = r.try_get(0)?;
            let mut context: StateContext = serde_json::from_str(r.try_get(3)?)?;
            context.checkpoints.clear();
            at.insert(task.to_owned(), states.len());
            states.push(PersistedState {
                task_id: task.into(),
                project_id: r.try_get::<_, &str>(1)?.into(),
                state: WorkflowState::parse(r.try_get(2)?),
                context,
                history: Vec::new(),
            });
        }
        let stamp = |text: &str| time::parse(text).context("a stored time");
        for r in &tx.query(LIST_TRANSITIONS, &[&project])? {
            let i = *at.get(r.try_get::<_, &str>(0)?).context("a listed task")?;
            let metadata: Option<&str> = r.try_get(5)?;
            states[i].history.push(StateTransition {
                from: WorkflowState::parse(r.try_get(2)?),
                to: WorkflowState::parse(r.try_get(3)?),
                event: Event::parse(r.try_get(4)?),
                timestamp: stamp(r.try_get(6)?)?,
                metadata: metadata.map(serde_json::from_str).transpose()?,
            });
        }
        for r in &tx.query(LIST_CHECKPOINTS, &[&project])? {
            let i = *at.get(r.try_get::<_, &str>(0)?).context("a listed task")?;
            states[i].context.checkpoints.push(Checkpoint {
                id: r.try_get::<_, &str>(1)?.into(),
                state: WorkflowState::parse(r.try_get(2)?),
                timestamp: stamp(r.try_get(5)?)?,
                context: serde_json::from_str(r.try_get(3)?)?,
                artifacts: serde_json::from_str(r.try_get(4)?)?,
            });
        }
        tx.commit()?;
        Ok(states)
    }
}

// ---- W8 ---------------------------------------------------------------------------------------

/// The PostgreSQL migration that makes the spans table and its indexes, run after [`SCHEMA`]
/// on W8's bare database.
pub const SPANS_SCHEMA: &str = include_str!("../../../migrations-postgres/V7__spans.sql");

/// The columns a finished span's row is written with, as the project writes them.
const SPAN_COLUMNS: &str = "id, trace_id, parent_id, kind, name, status, started_at, ended_at, \
    attributes, project_id, session_id, agent, model, provider, input_tokens, output_tokens, \
    cost_nanos, currency, latency_ms";

/// How many columns [`SPAN_COLUMNS`] names.
const SPAN_WIDTH: usize = 19;

/// W8's rollup: calls, tokens and cost of LLM spans per day, model and currency.
const SPAN_ROLLUP: &str = "SELECT substr(started_at, 1, 10), model, currency, COUNT(*),
        SUM(input_tokens), SUM(output_tokens), SUM(cost_nanos)
    FROM spans WHERE kind = 'llm' GROUP BY 1, 2, 3";

/// [`SPAN_ROLLUP`] in PostgreSQL's dialect (a sum of BIGINT is NUMERIC there).
const SPAN_ROLLUP_PG: &str = "SELECT substr(started_at, 1, 10), model, currency, COUNT(*),
        SUM(input_tokens)::BIGINT, SUM(output_tokens)::BIGINT, SUM(cost_nanos)::BIGINT
    FROM spans WHERE kind = 'llm' GROUP BY 1, 2, 3";

/// The WAL size in pages at which a SQLite commit checkpoints, as the project sets it.
const SQLITE_SAFETY_NET_PAGES: i64 = 16_384;

/// NULL in a text column.
static NO_TEXT: Option<&str> = None;

/// A top-level finished span as its row's values (no parent, no agent: W8's spans have none).
struct SpanRow<'s> {
    id: &'s str,
    trace_id: &'s str,
    kind: &'s str,
    name: &'s str,
    status: &'s str,
    started_at: String,
    ended_at: String,
    attributes: Option<String>,
    project_id: &'s str,
    session_id: Option<&'s str>,
    model: Option<&'s str>,
    provider: Option<&'s str>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_nanos: Option<i64>,
    currency: Option<&'s str>,
    latency_ms: Option<i64>,
}

impl<'s> SpanRow<'s> {
    fn new(span: &'s FinishedSpan, project_id: &'s str) -> Result<Self> {
        let (start, end) = (&span.start, &span.end);
        let call = span.llm.as_ref();
        let cost = call.and_then(|c| c.cost.as_ref());
        Ok(Self {
            id: span.id.as_str(),
            trace_id: start.trace_id.as_str(),
            kind: start.kind.as_str(),
            name: &start.name,
            status: end.status.as_str(),
            started_at: time::to_db(start.started_at.context("a W8 span has its start")?),
            ended_at: time::to_db(end.ended_at.context("a W8 span has its end")?),
            attributes: end.attributes.as_ref().map(serde_json::to_string).transpose()?,
            project_id,
            session_id: start.session_id.as_deref(),
            model: call.map(|c| c.model.as_str()),
            provider: call.map(|c| c.provider.as_str()),
            input_tokens: call.map(|c| c.input_tokens),
            output_tokens: call.map(|c| c.output_tokens),
            cost_nanos: cost.map(Money::nanos),
            currency: cost.map(Money::currency),
            latency_ms: call.and_then(|c| c.latency_ms),
        })
    }

    fn pg(&self) -> [&(dyn ToSql + Sync); SPAN_WIDTH] {
        [
            &self.id,
            &self.trace_id,
            &NO_TEXT,
            &self.kind,
            &self.name,
            &self.status,
            &self.started_at,
            &self.ended_at,
            &self.attributes,
            &self.project_id,
            &self.session_id,
            &NO_TEXT,
            &self.model,
            &self.provider,
            &self.input_tokens,
            &self.output_tokens,
            &self.cost_nanos,
            &self.currency,
            &self.latency_ms,
        ]
    }

    fn sqlite(&self) -> [&dyn rusqlite::ToSql; SPAN_WIDTH] {
        [
            &self.id,
            &self.trace_id,
            &NO_TEXT,
            &self.kind,
            &self.name,
            &self.status,
            &self.started_at,
            &self.ended_at,
            &self.attributes,
            &self.project_id,
            &self.session_id,
            &NO_TEXT,
            &self.model,
            &self.provider,
            &self.input_tokens,
            &self.output_tokens,
            &self.cost_nanos,
            &self.currency,
            &self.latency_ms,
        ]
    }
}

/// `INSERT INTO spans (…) VALUES (?1, …, ?19), (?20, …)` for `rows` rows, `?N` or `$N`.
fn span_insert(rows: usize, sign: char) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let row: Vec<String> =
                (1..=SPAN_WIDTH).map(|c| format!("{sign}{}", r * SPAN_WIDTH + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect();
    format!("INSERT INTO spans ({SPAN_COLUMNS}) VALUES {}", values.join(", "))
}

/// A rollup's total: rows, calls, input and output tokens, cost in nanos (to check that both
/// sides added up the same spans).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupTotal {
    pub rows: usize,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: i64,
}

impl RollupTotal {
    /// Adds a row of the rollup.
    pub fn add(&mut self, calls: i64, input: i64, output: i64, cost: Option<i64>) {
        self.rows += 1;
        self.calls += calls;
        self.input_tokens += input;
        self.output_tokens += output;
        self.cost_nanos += cost.unwrap_or(0);
    }
}

/// W8's bare spans: per batch one transaction holding its rows, and the rollup as one `GROUP BY`
/// query, every column read through the driver. On PostgreSQL the rows go in one multi-row
/// `INSERT` (prepared once per batch size); on SQLite, where a statement costs no round trip,
/// in a prepared one-row `INSERT` per row, the least work there (one multi-row `INSERT` of the
/// 1,000 rows measured 1.3–1.4× slower). On SQLite a file of the project's schema opened with the
/// project's settings (WAL, synchronous NORMAL, foreign keys on, a commit checkpointing only a
/// WAL of 16,384 pages), its WAL checkpointed outside the timed part ([`BareSpans::checkpoint`]);
/// on PostgreSQL a fresh database of its own.
pub enum BareSpans {
    Sqlite(rusqlite::Connection),
    Postgres { bare: Box<Bare>, inserts: Vec<(usize, Statement)> },
}

impl BareSpans {
    /// A SQLite file at `path`, made by the project's migrations (untimed), opened directly.
    pub fn sqlite(path: &std::path::Path) -> Result<Self> {
        aigentflow_persistence::Database::open(path)?.close()?;
        let conn = rusqlite::Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "{}: journal mode {mode}",
            path.display()
        );
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "wal_autocheckpoint", SQLITE_SAFETY_NET_PAGES)?;
        Ok(Self::Sqlite(conn))
    }

    /// On SQLite, a PASSIVE checkpoint of the WAL, which the bench runs after every batch
    /// outside the timed part: the project's checkpoints run on a thread of their own, so
    /// none is timed on this side either (a commit would otherwise checkpoint a WAL of 16,384
    /// pages itself).
    pub fn checkpoint(&mut self) -> Result<()> {
        if let Self::Sqlite(conn) = self {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// A fresh database on `server` with the schema and the spans table.
    pub fn postgres(server: &Server, label: &str) -> Result<Self> {
        let mut bare = Bare::fresh(server, label)?;
        bare.client.batch_execute(SPANS_SCHEMA).context("run migrations-postgres/V7__spans.sql")?;
        Ok(Self::Postgres { bare: Box::new(bare), inserts: Vec::new() })
    }

    /// Records the batch's spans, all of the trace of project `project`, in one transaction.
    pub fn record(&mut self, spans: &[FinishedSpan], project: &str) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let rows = spans.iter().map(|s| SpanRow::new(s, project)).collect::<Result<Vec<_>>>()?;
        match self {
            Self::Sqlite(conn) => {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut insert = tx.prepare_cached(&span_insert(1, '?'))?;
                for row in &rows {
                    insert.execute(row.sqlite().as_slice())?;
                }
                drop(insert);
                tx.commit()?;
            }
            Self::Postgres { bare, inserts } => {
                let insert = match inserts.iter().find(|(n, _)| *n == rows.len()) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let s = bare.client.prepare(&span_insert(rows.len(), '$'))?;
                        inserts.push((rows.len(), s.clone()));
                        s
                    }
                };
                let params: Vec<&(dyn ToSql + Sync)> = rows.iter().flat_map(SpanRow::pg).collect();
                let mut tx = bare.client.transaction()?;
                tx.execute(&insert, &params)?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Vacuums and analyses a PostgreSQL database, as autovacuum would on a server left alone.
    pub fn settle(&mut self) -> Result<()> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres { bare, .. } => bare.settle(),
        }
    }

    /// Calls, tokens and cost of LLM spans per day, model and currency; returns their total.
    pub fn rollup(&mut self) -> Result<RollupTotal> {
        let mut total = RollupTotal::default();
        match self {
            Self::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(SPAN_ROLLUP)?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let _: (String, Option<String>, Option<String>) =
                        (r.get(0)?, r.get(1)?, r.get(2)?);
                    total.add(r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
                }
            }
            Self::Postgres { bare, .. } => {
                let mut tx = bare.snapshot()?;
                for r in tx.query(SPAN_ROLLUP_PG, &[])? {
                    let _: (&str, Option<&str>, Option<&str>) =
                        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    total.add(r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?);
                }
                tx.commit()?;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Needs a server: None (with a line on stderr) unless AIGENTFLOW_PG_URL is set.
    fn server() -> Option<Server> {
        match std::env::var("AIGENTFLOW_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Server::connect(&url).unwrap()),
            _ => {
                eprintln!("skipped: AIGENTFLOW_PG_URL is not set");
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Any text (PostgreSQL refuses NUL) and NULL arrive through COPY as they were: the
        /// bare loads hold the same rows as the project's.
        #[test]
        fn copy_rows_arrive_unchanged(
            cells in prop::collection::vec(
                prop::option::of(prop_oneof![
                    "[^\u{0}]{0,40}",
                    "[\\\\\t\n\r\\\\N ]{0,12}",
                    Just("\\N".to_owned()),
                    Just(String::new()),
                ]),
                1..40,
            ),
        ) {
            let Some(server) = server() else { return Ok(()) };
            let db = server.fresh("copy").unwrap();
            let mut client = db.connect().unwrap();
            client.batch_execute("CREATE TABLE t (n BIGINT, x TEXT)").unwrap();
            let mut rows = CopyRows::new();
            for (i, cell) in cells.iter().enumerate() {
                rows.number(Some(i)).text(cell.as_deref()).end();
            }
            let mut writer = client.copy_in("COPY t (n, x) FROM STDIN").unwrap();
            writer.write_all(&rows.buf).unwrap();
            writer.finish().unwrap();
            let back: Vec<Option<String>> = client
                .query("SELECT x FROM t ORDER BY n", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            prop_assert_eq!(back, cells);
        }
    }

    /// W8's bare side stores the project's spans and its rollup adds up what the project's
    /// does, on SQLite and (with a server) on PostgreSQL, batch sizes varying.
    #[test]
    fn the_w8_baseline_adds_up_what_the_project_records() {
        use aigentflow_tracker::{
            CostGroup, CostQuery, ExecutionTracker, LlmCall, NewSpan, SpanEnd, SpanId, SpanKind,
            SpanStatus,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut sides = vec![BareSpans::sqlite(&dir.path().join("bare.db")).unwrap()];
        if let Some(server) = server() {
            sides.push(BareSpans::postgres(&server, "t_w8").unwrap());
        }
        let db = aigentflow_persistence::Database::open(dir.path().join("ours.db")).unwrap();
        let tracker = ExecutionTracker::new(db);
        let trace = tracker.start_trace(&"p".into(), &"t".into(), "x").unwrap().id;
        let day = |i: i64| Utc::now() - chrono::Duration::hours(7 * i);
        let spans: Vec<FinishedSpan> = (0..250i64)
            .map(|i| {
                let start = NewSpan {
                    started_at: Some(day(i % 40)),
                    ..NewSpan::new(trace.clone(), SpanKind::Llm, format!("call {i}"))
                };
                let end = SpanEnd {
                    status: SpanStatus::Ok,
                    ended_at: Some(day(i % 40)),
                    attributes: Some(serde_json::json!({"i": i})),
                };
                let cost = (i % 7 != 0).then(|| Money::from_nanos(i * 1_000_003, "USD").unwrap());
                FinishedSpan::new(SpanId::new(format!("s{i}")), start, end).with_llm(LlmCall {
                    model: ["a", "b", "c"][i as usize % 3].into(),
                    provider: "p".into(),
                    input_tokens: i * 10,
                    output_tokens: i,
                    cost,
                    latency_ms: Some(i),
                })
            })
            .collect();
        for chunk in [&spans[..100], &spans[100..101], &spans[101..200], &spans[200..]] {
            tracker.record_spans(chunk).unwrap();
            for side in &mut sides {
                side.record(chunk, "p").unwrap();
            }
        }
        let query = CostQuery { project: None, by: CostGroup::Model, since: None, until: None };
        let mut ours = RollupTotal::default();
        for r in tracker.cost_rollup(&query).unwrap() {
            ours.add(r.calls as i64, r.input_tokens, r.output_tokens, r.cost.map(|c| c.nanos()));
        }
        assert_eq!(ours.calls, 250);
        for side in &mut sides {
            side.checkpoint().unwrap();
            side.settle().unwrap();
            assert_eq!(side.rollup().unwrap(), ours);
        }
    }

    /// The bare baselines' SQL runs on the schema and finds the rows it loaded.
    #[test]
    fn baselines_run_on_the_schema() {
        let Some(server) = server() else { return };
        let entries: Vec<AuditEntry> = (0..250)
            .map(|i| AuditEntry {
                project_id: Some(if i % 5 == 0 { "other" } else { "p" }.into()),
                details: Some(serde_json::json!({"i": i, "note": "a, \"b\"\nc ✓"})),
                ..AuditEntry::new(format!("act-{i}"), aigentflow_audit::Category::File)
            })
            .collect();
        let mut audit = BareAudit::new(Bare::fresh(&server, "t_w2").unwrap()).unwrap();
        assert_eq!(audit.log(&entries[0]).unwrap(), 1);
        audit.log_batch(&entries[..100]).unwrap();
        audit.log_batch(&entries[..7]).unwrap();
        let count: i64 =
            audit.bare.client.query_one("SELECT COUNT(*) FROM audit_logs", &[]).unwrap().get(0);
        assert_eq!(count, 108);

        let mut export = BareExport::new(Bare::fresh(&server, "t_w3").unwrap());
        // Loaded in two parts, as W3 does.
        export.add(&entries[..100]).unwrap();
        assert_eq!(export.load().unwrap(), 100);
        export.add(&entries[100..]).unwrap();
        assert_eq!(export.load().unwrap(), 150);
        let mut sink = Vec::new();
        let bytes = export.csv("p", &mut sink).unwrap();
        assert_eq!(bytes, sink.len() as u64);
        let mut reader = csv::Reader::from_reader(&sink[..]);
        assert_eq!(reader.records().count(), 200);
        for lines in [false, true] {
            let mut sink = Vec::new();
            assert_eq!(export.json("p", lines, &mut sink).unwrap(), 200);
            let values: Vec<serde_json::Value> = if lines {
                sink.split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect()
            } else {
                serde_json::from_slice::<Vec<serde_json::Value>>(&sink).unwrap()
            };
            assert_eq!(values.len(), 200);
            assert_eq!(values[0]["details"]["note"], "a, \"b\"\nc ✓");
            assert_eq!(values[0]["action"], "act-1");
        }

        let mut states = BareStates::new(Bare::fresh(&server, "t_w1").unwrap()).unwrap();
        let mut listing = BareListing::new(Bare::fresh(&server, "t_w6").unwrap());
        let mut m = aigentflow_core_states::StateMachine::new(
            aigentflow_core_states::StateContext::new("p".into(), "t".into(), "a task"),
        );
        use aigentflow_core_states::Event as E;
        for (i, event) in
            [E::Start, E::AnalysisComplete, E::Error, E::StartRecovery].into_iter().enumerate()
        {
            m.apply(event, Some(serde_json::json!({"i": i}))).unwrap();
            if i % 2 == 1 {
                m.create_checkpoint(vec![format!("f{i}")]);
            }
            states.save(m.persisted()).unwrap();
        }
        let c = &mut states.bare.client;
        let count = |c: &mut Client, sql: &str| c.query_one(sql, &[]).unwrap().get::<_, i64>(0);
        assert_eq!(count(c, "SELECT COUNT(*) FROM state_transitions"), 4);
        assert_eq!(count(c, "SELECT COUNT(*) FROM checkpoints"), 2);
        assert_eq!(count(c, "SELECT COUNT(*) FROM workflow_states"), 1);
        listing.add(m.persisted(), Utc::now()).unwrap();
        listing.load().unwrap();
        let listed = listing.list("p").unwrap();
        assert_eq!(Listed { states: 1, transitions: 4, checkpoints: 2 }, listed);

        let mut lessons = BareLessons::new(Bare::fresh(&server, "t_w4").unwrap());
        let new = |title: &str, summary: &str| NewLesson {
            tags: vec!["sql".into()],
            ..NewLesson::new(aigentflow_lessons::Category::ALL[0], title, summary)
        };
        lessons
            .add(
                &[new("hooks in react", "state"), new("state", "hooks"), new("sql", "joins")],
                Utc::now(),
            )
            .unwrap();
        lessons.load().unwrap();
        assert_eq!(lessons.search("hooks", 20).unwrap(), 2);
        assert_eq!(lessons.search("hooks", 1).unwrap(), 1);
        assert_eq!(lessons.search("nothing", 20).unwrap(), 0);

        let mut tracker = BareTracker::new(Bare::fresh(&server, "t_w5").unwrap());
        tracker.add_trace("tr", "p", "t", Utc::now());
        for (i, outcome) in aigentflow_tracker::Outcome::ALL.iter().enumerate() {
            let invocation = NewInvocation {
                outcome: Some(*outcome),
                quality_score: Some(0.5),
                token_usage: Some(aigentflow_tracker::TokenUsage::new(10 * i as u64, 0)),
                ..NewInvocation::new(
                    "tr".into(),
                    "a",
                    Utc::now() - chrono::Duration::days(i as i64),
                )
            };
            tracker.add_invocation("tr", &invocation).unwrap();
        }
        tracker.load().unwrap();
        let metrics = tracker.metrics("a", 365).unwrap();
        let outcomes = aigentflow_tracker::Outcome::ALL.len() as i64;
        assert_eq!((metrics.total, metrics.successes, metrics.failures), (outcomes, 1, 1));
        assert_eq!(metrics.avg_quality, Some(0.5));
        assert_eq!(metrics.avg_tokens, Some(5.0 * (outcomes - 1) as f64));
    }
}
