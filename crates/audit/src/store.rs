//! [`AuditLog`]: appends, queries and verification. All the crate's SQL lives here and in `export.rs`.

use aigentflow_core_states::{time, ProjectId, TaskId};
use aigentflow_persistence::audit_chain::{self, hash_time};
pub(crate) use aigentflow_persistence::audit_chain::{cell_bytes, hash_time_into};
use aigentflow_persistence::Row;
use aigentflow_persistence::{Backend, Clean, Database, Param, Tx};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::{self, ChainHead, ChainRow, HashedFields, Verification, Verifier};
use crate::error::{Error, Result};
use crate::export::EXPORT_COLUMNS;
use crate::model::{
    ActorCount, AuditEntry, AuditOrigin, AuditQuery, AuditRecord, AuditStats, Category,
    CategoryCount, Count, ImportedEntry, Outcome, Severity, StoredEvent,
};

/// Every column of the log ([`COLUMNS`]) as a literal, for the statements built from it with
/// `concat!`.
macro_rules! all_columns {
    () => {
        "id, timestamp, project_id, task_id, agent, action, category, details, user_id, ip_address, prev_hash, row_hash, origin_id, origin_hash, origin_source, severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before, changes_after, error, hash_version"
    };
}

/// The columns of an entry without event fields or provenance: the twelve columns rows always
/// had, and the version (fewer parameters to send).
macro_rules! plain_columns {
    () => {
        "id, timestamp, project_id, task_id, agent, action, category, details, user_id, ip_address, prev_hash, row_hash, hash_version"
    };
}

/// The parameters of `all_columns!` and of `plain_columns!`, in order.
macro_rules! all_params {
    () => {
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28"
    };
}
macro_rules! plain_params {
    () => {
        "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13"
    };
}

/// One entry appended and the PostgreSQL head moved onto it, in one statement: the head's
/// UPDATE reads the inserted row's id from the INSERT, which makes that run first, so the
/// head's trigger finds the row. `$source` gives the row (`VALUES (…)`, or `SELECT … FROM head`).
macro_rules! append_one_pg {
    ($head:expr, $columns:expr, $source:expr) => {
        concat!(
            $head,
            "appended AS (INSERT INTO audit_logs (",
            $columns,
            ") ",
            $source,
            " RETURNING id, row_hash) ",
            "UPDATE audit_head SET id = appended.id, row_hash = appended.row_hash FROM appended"
        )
    };
}

/// The head locked and read in the statement, as a row only if it is still the row before
/// the first entry's id (`?1 - 1`, with the hash `$prev`) and no row with that id or a later
/// one is present (see [`APPEND_AFTER_PG`]).
macro_rules! head_unchanged {
    ($prev:literal) => {
        concat!(
            "WITH head AS (SELECT 1 FROM audit_head h
            WHERE h.id = ?1::bigint - 1 AND h.row_hash = ",
            $prev,
            "
                AND (SELECT COALESCE(MAX(id), 0) FROM audit_logs) < ?1::bigint
            FOR UPDATE OF h), "
        )
    };
}

/// Rows appended after the head in one statement (see [`APPEND_ROWS_AFTER_PG`]): `$arrays`
/// (from `?3`, one per column) read with `unnest`, and the head moved onto the last of them.
macro_rules! append_rows_after_pg {
    ($columns:expr, $arrays:expr) => {
        concat!(
            head_unchanged!("?2"),
            "appended AS (INSERT INTO audit_logs (",
            $columns,
            ") SELECT u.* FROM head, unnest(",
            $arrays,
            ") AS u RETURNING id, row_hash) ",
            "UPDATE audit_head SET id = last.id, row_hash = last.row_hash
            FROM (SELECT id, row_hash FROM appended ORDER BY id DESC LIMIT 1) AS last"
        )
    };
}

/// Every column of the log, in the order of [`EXPORT_COLUMNS`]: the columns rows had before
/// the audit event's fields, then those fields and the row encoding's version.
pub(crate) const COLUMNS: &str = all_columns!();

/// The position in [`COLUMNS`] of the first of the audit event's fields
/// ([`EventFields::COLUMNS`](audit_chain::EventFields::COLUMNS), in that order).
const FIRST_EVENT_COLUMN: usize = 15;
/// The position in [`COLUMNS`] of `origin_id`.
const ORIGIN_ID_COLUMN: usize = 12;
/// The position in [`COLUMNS`] of `hash_version`.
const HASH_VERSION_COLUMN: usize = 27;

/// The version of the row encoding every row is appended with.
const HASH_VERSION: i64 = 2;

/// The last sealed row: appends link to it, so a row written around the log stays outside the
/// chain (and `verify` names it) instead of breaking the link of every row after it. SQLite's one
/// writer makes reading it and appending after it atomic.
const HEAD: &str =
    "SELECT id, row_hash FROM audit_logs WHERE row_hash IS NOT NULL ORDER BY id DESC LIMIT 1";
/// [`HEAD`] on PostgreSQL: the one row of `audit_head` (the id and hash of the last row the log
/// appended; id 0 for an empty log), which every append moves forward.
const HEAD_PG: &str = "SELECT id, row_hash FROM audit_head WHERE id > 0";
/// The id the next one follows on SQLite: the largest ever handed out (`sqlite_sequence`
/// remembers rows that are gone) or present, those written around the log included.
const LAST_ID: &str =
    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_logs'), 0),
                                COALESCE((SELECT MAX(id) FROM audit_logs), 0))";
/// The log's own count of the ids it appended, which `verify` holds the rows against: on
/// SQLite the last id handed out (0 when `sqlite_sequence` has none), which a row deleted from
/// the end leaves behind.
const COUNTER: &str = "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'audit_logs'";
/// [`COUNTER`] on PostgreSQL: the id of the row the head names (0 for an empty log).
const COUNTER_PG: &str = "SELECT id FROM audit_head";
/// The head row on PostgreSQL, locked until the appending transaction ends: concurrent appends
/// queue here, and at READ COMMITTED each reads the head the one before it committed (a row
/// locked after a wait is read again at its latest version). In the same round trip, the
/// highest id present, so that the next id steps over rows written around the log: read in the
/// statement's snapshot, taken before any wait for the lock, which is enough — every row the
/// log appends moves the head, which is read at its latest, so only a row written around the
/// log while this append waited can be missed, and an id it took makes the INSERT fail on the
/// primary key rather than fork the chain.
const LOCK_HEAD_PG: &str = "SELECT h.id, h.row_hash, (SELECT COALESCE(MAX(id), 0) FROM audit_logs)
    FROM audit_head h FOR UPDATE OF h";
/// Moves the PostgreSQL head onto the last row appended (its trigger checks that the row is
/// there with this hash, and that the head only moves forward).
const MOVE_HEAD_PG: &str = "UPDATE audit_head SET id = ?1, row_hash = ?2";
/// One entry appended and the PostgreSQL head moved onto it, in one statement (one round trip
/// where [`INSERT`] and [`MOVE_HEAD_PG`] take two).
const APPEND_ONE_PG: &str =
    append_one_pg!("WITH ", all_columns!(), concat!("VALUES (", all_params!(), ")"));
/// [`APPEND_ONE_PG`] of an entry without event fields or provenance.
const APPEND_ONE_PLAIN_PG: &str =
    append_one_pg!("WITH ", plain_columns!(), concat!("VALUES (", plain_params!(), ")"));
/// [`APPEND_ONE_PG`] as a statement of its own (no transaction around it), after the head this
/// handle last saw: the head row is locked and read in the statement, and the entry goes in
/// only if the head is still that row and no row with its id or a later one is present (one
/// written around the log: the locked append steps over it). It changes one row if it
/// appended, none if another append moved the head first.
///
/// The last id is read as `MAX(id)`, one probe of the primary key's end whatever the plan: a
/// `NOT EXISTS (… WHERE id >= ?1)` is planned, once the server uses a generic plan for the
/// prepared statement, as a scan expected to stop early, and it reads the whole table when, as
/// always here, no row matches.
const APPEND_AFTER_PG: &str = append_one_pg!(
    head_unchanged!("?11"),
    all_columns!(),
    concat!("SELECT ", all_params!(), " FROM head")
);
/// [`APPEND_AFTER_PG`] of an entry without event fields or provenance.
const APPEND_AFTER_PLAIN_PG: &str = append_one_pg!(
    head_unchanged!("?11"),
    plain_columns!(),
    concat!("SELECT ", plain_params!(), " FROM head")
);
/// [`APPEND_AFTER_PG`] of many entries: the first's id `?1` and the hash it links to `?2`,
/// then the rows as one array per column of [`COLUMNS`] (`?3` on), in one statement that
/// appends them all or, the head moved, none.
const APPEND_ROWS_AFTER_PG: &str = append_rows_after_pg!(
    all_columns!(),
    "?3::bigint[], ?4::text[], ?5::text[], ?6::text[], ?7::text[], ?8::text[], ?9::text[], \
     ?10::text[], ?11::text[], ?12::text[], ?13::text[], ?14::text[], ?15::bigint[], \
     ?16::text[], ?17::text[], ?18::text[], ?19::text[], ?20::text[], ?21::text[], \
     ?22::text[], ?23::text[], ?24::text[], ?25::text[], ?26::text[], ?27::text[], \
     ?28::text[], ?29::text[], ?30::smallint[]"
);
/// [`APPEND_ROWS_AFTER_PG`] of entries without event fields or provenance.
const APPEND_ROWS_AFTER_PLAIN_PG: &str = append_rows_after_pg!(
    plain_columns!(),
    "?3::bigint[], ?4::text[], ?5::text[], ?6::text[], ?7::text[], ?8::text[], ?9::text[], \
     ?10::text[], ?11::text[], ?12::text[], ?13::text[], ?14::text[], ?15::smallint[]"
);
/// The most entries [`APPEND_ROWS_AFTER_PG`] takes; a larger batch appends in a transaction.
const MOST_ROWS_ALONE: usize = 1000;
/// Whether the row an append alone sent is stored, when its connection was lost before the
/// answer came: its hash, which covers the previous row's, names it.
const APPENDED: &str = "SELECT 1 FROM audit_logs WHERE id = ?1 AND row_hash = ?2";
/// The SQLSTATEs after which an append alone wrote nothing and the append goes on in a
/// transaction: a unique violation (the id taken by a row written around the log), a
/// serialization failure and a write refused as read-only (a session whose defaults this
/// layer's startup options did not set).
const FALL_BACK_STATES: [&str; 3] = ["23505", "40001", "25006"];
/// Entries per category of a project, most first. A category cell written around the log as
/// a BLOB counts with the text of the same bytes.
/// Each category's first row comes along, to name it if its text is not UTF-8.
const SUMMARY: &str = "SELECT CAST(category AS BLOB) AS c, COUNT(*), MIN(id) FROM audit_logs
    WHERE project_id = ?1 GROUP BY c ORDER BY COUNT(*) DESC, c";
/// [`SUMMARY`] on PostgreSQL, where a column holds only text.
const SUMMARY_PG: &str = "SELECT category AS c, COUNT(*), MIN(id) FROM audit_logs
    WHERE project_id = ?1 GROUP BY c ORDER BY COUNT(*) DESC, c";
/// The appended rows go in with [`Tx::insert_rows`]: one statement per row on SQLite, one
/// statement of an array per column on PostgreSQL. Every column of [`COLUMNS`], in its order.
const INSERT: &str = concat!("INSERT INTO audit_logs (", all_columns!(), ")");
/// [`INSERT`] of entries without event fields or provenance (see [`APPEND_ONE_PLAIN_PG`]).
const INSERT_PLAIN: &str = concat!("INSERT INTO audit_logs (", plain_columns!(), ")");

/// The most entries one [`AuditLog::since`] or [`AuditLog::latest`] call returns: a page a poller
/// reads in one short transaction, whatever the log holds.
pub const MAX_PAGE: u64 = 1000;

/// The audit log of one database.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
    /// On PostgreSQL, the chain's head as the last append through this handle (or a clone of
    /// it) left it, if that append committed: the next [`log`](Self::log) appends after it in
    /// one statement, which checks it under the head's lock.
    head: Arc<Mutex<Option<Head>>>,
}

/// What [`AuditLog::append_alone`] did.
enum Alone {
    /// Appended, with these ids.
    Appended(Vec<i64>),
    /// Wrote nothing.
    NotAppended,
    /// The connection was lost once these rows were sent: they may be stored, or be stored
    /// later by a statement still waiting on the server.
    Unknown(Sent),
}

/// Rows an append alone sent: the head their last would make, and their ids.
struct Sent {
    head: Head,
    ids: Vec<i64>,
}

/// The last row of the chain: its id and hash.
#[derive(Debug, Clone)]
struct Head {
    id: i64,
    hash: String,
}

impl AuditLog {
    /// The audit log over `db`. Opening it reads and writes nothing: the rows a legacy database
    /// brought were sealed by the migration that added the chain, and nothing else seals a row.
    pub fn new(db: Database) -> Self {
        Self { db, head: Arc::default() }
    }

    /// Appends one entry in its own transaction; returns its id. The entry is checked and
    /// redacted before the write lock is taken.
    ///
    /// On PostgreSQL, after an append through this handle, the entry goes in with one
    /// statement that commits by itself (one round trip, where a transaction takes four): it
    /// locks the chain's head and appends only if the head is the row that append left. If
    /// another writer moved it meanwhile, the entry is appended in a transaction as the first
    /// one was. If the connection is lost before the answer comes, that transaction first asks,
    /// once it holds the head, whether the row sent (its id and hash) is stored, and appends it
    /// only if not: the entry is stored once.
    pub fn log(&self, entry: &AuditEntry) -> Result<i64> {
        let ids = self.append_clean(&CleanEntry::all(std::slice::from_ref(entry))?)?;
        Ok(ids[0])
    }

    /// Appends many entries in one transaction; returns their ids. The entries are checked and
    /// redacted before the write lock is taken. On PostgreSQL, up to a thousand entries after
    /// an append through this handle go in as [`log`](Self::log)'s one does: one statement,
    /// which appends them all or none.
    pub fn log_batch(&self, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.append_clean(&CleanEntry::all(entries)?)
    }

    /// Appends clean entries (at least one) in a transaction of their own, or on PostgreSQL
    /// alone after the remembered head (see [`log`](Self::log)); their ids.
    fn append_clean(&self, clean: &[CleanEntry<'_>]) -> Result<Vec<i64>> {
        let sent = match self.append_alone(clean)? {
            Alone::Appended(ids) => return Ok(ids),
            Alone::NotAppended => None,
            Alone::Unknown(sent) => Some(sent),
        };
        let appended = self.db.write(|tx| {
            // A statement whose answer was lost may still be waiting for the head's lock on
            // the server, which runs it even so: under the lock, it has run or never will
            // (the head it expects is moved by this append). It appends all its rows or none,
            // so its last row tells.
            if let Some(sent) = &sent {
                AppendAt::head(tx)?;
                let last = &sent.head;
                let params = [Param::int(last.id), Param::digest(&last.hash)];
                if tx.query_row(APPENDED, &params, |_| Ok(()))?.is_some() {
                    return Ok(Appended { ids: sent.ids.clone(), head: Some(last.clone()) });
                }
            }
            append(tx, clean)
        })?;
        self.remember(appended.head);
        Ok(appended.ids)
    }

    /// Sets (or with None forgets) the head the next [`log`](Self::log) appends after.
    fn remember(&self, head: Option<Head>) {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = head;
    }

    /// The append in one statement after the remembered head, on PostgreSQL (see
    /// [`log`](Self::log)): appended with their ids; not appended, to be appended in a
    /// transaction (no head remembered, another append moved it, a row written around the log
    /// holds an id, more entries than one statement takes); or unknown, the connection lost
    /// once the rows were sent.
    fn append_alone(&self, entries: &[CleanEntry<'_>]) -> Result<Alone> {
        if self.db.backend() != Backend::Postgres || entries.len() > MOST_ROWS_ALONE {
            return Ok(Alone::NotAppended);
        }
        let Some(head) = self.head.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(Alone::NotAppended);
        };
        check_for_postgres(entries)?;
        let Some(id) = head.id.checked_add(1) else { return Ok(Alone::NotAppended) };
        let first = [Param::int(id), Param::digest(head.hash.clone())];
        let rows = Rows::after(entries, AppendAt { prev: head.hash, id }, self.db.now())?;
        let Some(appended) = rows.head() else { return Ok(Alone::NotAppended) };
        let sent = match (rows.narrow(), &rows.cells[..]) {
            (Some(narrow), [_]) => self.db.execute_alone(APPEND_AFTER_PLAIN_PG, &narrow[0]),
            (None, [row]) => self.db.execute_alone(APPEND_AFTER_PG, row),
            (Some(narrow), _) => {
                self.db.execute_alone_rows(APPEND_ROWS_AFTER_PLAIN_PG, &first, &narrow)
            }
            (None, cells) => self.db.execute_alone_rows(APPEND_ROWS_AFTER_PG, &first, cells),
        };
        match sent {
            Ok(1) => {}
            Ok(_) => return Ok(Alone::NotAppended),
            Err(e) if e.is_outcome_unknown() => {
                return Ok(Alone::Unknown(Sent { head: appended, ids: rows.ids }))
            }
            // Nothing was written: an id taken around the log, or the session not set up as
            // this layer's transactions are (a serialization failure, a read-only default).
            Err(e) if e.sqlstate().is_some_and(|c| FALL_BACK_STATES.contains(&c)) => {
                return Ok(Alone::NotAppended)
            }
            Err(e) => return Err(e.into()),
        }
        self.remember(Some(appended));
        Ok(Alone::Appended(rows.ids))
    }

    /// Appends an entry inside a caller's transaction (e.g. with the state save it records).
    /// Every field is redacted first.
    pub fn log_in(&self, tx: &Tx<'_>, entry: &AuditEntry) -> Result<i64> {
        let ids = self.log_all_in(tx, std::slice::from_ref(entry))?;
        Ok(ids[0])
    }

    /// Appends entries inside a caller's transaction: the chain head is read once, and each
    /// entry links to the one before it. Nothing is written if any entry is invalid.
    pub fn log_all_in(&self, tx: &Tx<'_>, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        Ok(append(tx, &CleanEntry::all(entries)?)?.ids)
    }

    /// Entries matching the filters, newest first (ties broken by id).
    pub fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let (sql, values) =
            select(q, "timestamp DESC, id DESC", ProjectPath::Index, self.db.backend())?;
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt.query_map(&values, RawRow::read)?;
            rows.into_iter().map(RawRow::into_record).collect()
        })
    }

    /// Up to `limit` entries whose id is greater than `after_id`, in id order: what a poller has
    /// not read yet. Pass the last id it read (0 before the first) and repeat with the last id
    /// of each page; an empty page means nothing is new. `limit` is 1 to [`MAX_PAGE`], and
    /// `after_id` is 0 or more, else [`Error::InvalidInput`].
    ///
    /// No entry is ever skipped: ids become visible in the order they were given, on both
    /// backends. SQLite has one writer; on PostgreSQL an append takes its ids while it holds the
    /// locked chain head (`audit_head`) and keeps it until it commits, so the append that takes
    /// the next id can read the head only after the one before it is visible. (A row written
    /// around the log, with an id of its own choosing, is outside this promise, as it is outside
    /// the chain: `verify` names it.)
    pub fn since(&self, after_id: i64, limit: u64) -> Result<Vec<AuditRecord>> {
        if after_id < 0 {
            return Err(Error::InvalidInput {
                what: "cursor",
                reason: format!(
                    "{after_id} is negative; ids start at 1, so 0 reads from the start"
                )
                .into(),
            });
        }
        let limit = page_limit(limit)?;
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM audit_logs WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(&[Param::int(after_id), Param::int(limit)], RawRow::read)?;
            rows.into_iter().map(RawRow::into_record).collect()
        })
    }

    /// The last `limit` entries (by id), oldest first: where a follower starts when it wants
    /// the most recent entries and then, by [`since`](Self::since) from the last of them, every
    /// later one. `limit` is 1 to [`MAX_PAGE`], else [`Error::InvalidInput`].
    pub fn latest(&self, limit: u64) -> Result<Vec<AuditRecord>> {
        let limit = page_limit(limit)?;
        self.db.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM audit_logs ORDER BY id DESC LIMIT ?1) AS recent
                 ORDER BY id"
            ))?;
            let rows = stmt.query_map(&[Param::int(limit)], RawRow::read)?;
            rows.into_iter().map(RawRow::into_record).collect()
        })
    }

    /// How many entries match the filters (limit and offset aside): e.g. the length of an export.
    pub fn count(&self, q: &AuditQuery) -> Result<u64> {
        let (clause, values) = where_clause(q, ProjectPath::Index, self.db.backend())?;
        self.db.read(|tx| {
            let n: i64 = tx
                .query_row(&format!("SELECT COUNT(*) FROM audit_logs{clause}"), &values, |r| {
                    r.get(0)
                })?
                .unwrap_or(0);
            Ok(n as u64)
        })
    }

    /// How many entries a project has per category, most first.
    pub fn summary(&self, project_id: &ProjectId) -> Result<Vec<CategoryCount>> {
        let project_id = project_id.as_str();
        if self.db.backend() == Backend::Postgres && holds_nul(project_id) {
            return Ok(Vec::new());
        }
        self.db.read(|tx| {
            let mut stmt = tx.prepare(tx.dialect(SUMMARY, SUMMARY_PG))?;
            let groups = stmt.query_map(&[Param::text(project_id)], |r| {
                Ok((group_key(r, 0)?, r.get::<i64>(1)? as u64, r.get::<i64>(2)?))
            })?;
            groups
                .into_iter()
                .map(|(key, count, first)| {
                    Ok(CategoryCount { category: key_text(tx, key, first, "category")?, count })
                })
                .collect()
        })
    }

    /// The statistics of the entries matching `q` (its limit and offset aside): totals per
    /// category, severity, outcome and day, the `top` actors with the most entries, and the
    /// error rate. All are read in one snapshot, so they add up.
    pub fn stats(&self, q: &AuditQuery, top: u64) -> Result<AuditStats> {
        let (clause, values) = where_clause(q, ProjectPath::Index, self.db.backend())?;
        let top = i64::try_from(top).unwrap_or(i64::MAX);
        // On SQLite keys are grouped by their bytes, so a cell written around the log as a BLOB
        // counts with the text of the same bytes, whole (a cast to TEXT would end it at a NUL,
        // where a query reads it all); a PostgreSQL column holds only text, and keeps its "C"
        // collation this way.
        let text = |column: &str| match self.db.backend() {
            Backend::Sqlite => format!("CAST({column} AS BLOB)"),
            Backend::Postgres => column.to_owned(),
        };
        let literal = |word: &str| match self.db.backend() {
            Backend::Sqlite => format!("CAST('{word}' AS BLOB)"),
            Backend::Postgres => format!("'{word}'"),
        };
        let counts = |tx: &Tx<'_>, key: &str, column: &'static str, order: &str| {
            let sql = format!(
                "SELECT k, COUNT(*), MIN(id) FROM (SELECT {key} AS k, id FROM audit_logs{clause})
                 AS m WHERE k IS NOT NULL GROUP BY k ORDER BY {order}"
            );
            let mut stmt = tx.prepare(&sql)?;
            let groups = stmt.query_map(&values, |r| {
                Ok((group_key(r, 0)?, r.get::<i64>(1)? as u64, r.get::<i64>(2)?))
            })?;
            groups
                .into_iter()
                .map(|(key, count, first)| {
                    Ok(Count { key: key_text(tx, key, first, column)?, count })
                })
                .collect::<Result<Vec<_>>>()
        };
        self.db.read(|tx| {
            let (total, errors) = tx
                .query_row(
                    &format!(
                        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN outcome = 'failure'
                            OR error IS NOT NULL THEN 1 ELSE 0 END), 0) FROM audit_logs{clause}"
                    ),
                    &values,
                    |r| Ok((r.get::<i64>(0)? as u64, r.get::<i64>(1)? as u64)),
                )?
                .unwrap_or((0, 0));
            let by_count = "COUNT(*) DESC, k";
            let by_category = counts(tx, &text("category"), "category", by_count)?;
            let by_severity = counts(tx, &text("severity"), "severity", by_count)?;
            let by_outcome = counts(tx, &text("outcome"), "outcome", by_count)?;
            let day = format!("substr({}, 1, 10)", text("timestamp"));
            let per_day = counts(tx, &day, "timestamp", "k")?;
            let who = format!(
                "SELECT CASE WHEN actor_id IS NOT NULL THEN COALESCE({}, {})
                        WHEN agent IS NOT NULL THEN {} ELSE {} END AS kind,
                        COALESCE({}, {}, {}) AS who, id FROM audit_logs{clause}",
                text("actor_type"),
                literal(""),
                literal("agent"),
                literal("user"),
                text("actor_id"),
                text("agent"),
                text("user_id"),
            );
            let mut stmt = tx.prepare(&format!(
                "SELECT kind, who, COUNT(*), MIN(id) FROM ({who}) AS a WHERE who IS NOT NULL
                 GROUP BY kind, who ORDER BY COUNT(*) DESC, kind, who LIMIT ?"
            ))?;
            let mut with_top = values.clone();
            with_top.push(Param::int(top));
            let groups = stmt.query_map(&with_top, |r| {
                Ok((group_key(r, 0)?, group_key(r, 1)?, r.get::<i64>(2)? as u64, r.get::<i64>(3)?))
            })?;
            let top_actors = groups
                .into_iter()
                .map(|(kind, id, count, first)| {
                    Ok(ActorCount {
                        kind: key_text(tx, kind, first, "actor_type")?,
                        id: key_text(tx, id, first, "actor_id")?,
                        count,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(AuditStats {
                total,
                by_category,
                by_severity,
                by_outcome,
                per_day,
                top_actors,
                errors,
                error_rate: if total == 0 { 0.0 } else { errors as f64 / total as f64 },
            })
        })
    }

    /// The current end of the chain, or None for an empty log.
    pub fn head(&self) -> Result<Option<ChainHead>> {
        self.db.read(read_head)
    }

    /// Walks the whole chain; with `expected`, also checks it still reaches that head.
    pub fn verify(&self, expected: Option<&ChainHead>) -> Result<Verification> {
        self.db.read(|tx| Self::verify_in(tx, expected))
    }

    /// [`verify`](Self::verify) inside a caller's transaction: the chain as that snapshot holds
    /// it (`db copy` checks its source in the snapshot it copies).
    ///
    /// On SQLite the log's table and indexes are checked first (`PRAGMA
    /// integrity_check(audit_logs)`, which reads and writes nothing else): a damaged page can
    /// hide or garble rows in a way the chain alone need not show (a b-tree that still reads,
    /// an index that no longer finds every row), so damage is a finding
    /// ([`Finding::Damaged`](chain::Finding::Damaged)), the first, and the chain is then walked
    /// as far as it can be read. On PostgreSQL the server keeps its own pages sound (a damaged
    /// one is an error when read).
    pub fn verify_in(tx: &Tx<'_>, expected: Option<&ChainHead>) -> Result<Verification> {
        let damage = match tx.backend() {
            Backend::Sqlite => table_damage(tx)?,
            Backend::Postgres => None,
        };
        let walked = Self::walk(tx, expected);
        let Some(damage) = damage else { return walked };
        let mut verification = match walked {
            Ok(verification) => verification,
            // The walk stopped at a damaged page: what it read is not worth more than that.
            Err(Error::Persistence(e)) if e.is_corrupt() => Verification {
                rows: 0,
                head: None,
                finding: None,
                findings: Vec::new(),
                findings_total: 0,
            },
            Err(e) => return Err(e),
        };
        verification.findings.insert(0, damage.clone());
        verification.finding = Some(damage);
        verification.findings_total += 1;
        Ok(verification)
    }

    /// Walks the chain in id order: [`verify_in`](Self::verify_in) without the table's check.
    fn walk(tx: &Tx<'_>, expected: Option<&ChainHead>) -> Result<Verification> {
        let mut verifier = Verifier::against(expected);
        let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM audit_logs ORDER BY id"))?;
        let mut rows = stmt.query(&[])?;
        while let Some(ref r) = rows.next()? {
            let raw = RawRow::read(r)?;
            let ts = raw.hashed_timestamp();
            verifier.push(&raw.chain_row(&ts), |hash| {
                tx.query_row(
                    "SELECT id FROM audit_logs WHERE row_hash = ?1",
                    &[Param::text(hash)],
                    |r| r.get(0),
                )
                .ok()
                .flatten()
            });
        }
        let counter = match tx.backend() {
            Backend::Sqlite => COUNTER,
            Backend::Postgres => COUNTER_PG,
        };
        verifier.counter(tx.query_row(counter, &[], |r| r.get(0))?.unwrap_or(0));
        let hash_of = |id: i64| -> Option<String> {
            tx.query_row("SELECT row_hash FROM audit_logs WHERE id = ?1", &[Param::int(id)], |r| {
                r.get(0)
            })
            .ok()
            .flatten()
            .flatten()
        };
        Ok(verifier.finish(hash_of))
    }

    /// Appends entries imported from another database's bundle inside a caller's transaction,
    /// after the chain's head, in order: each gets a new id and new hashes from this log, and
    /// keeps its own timestamp and its [`Origin`](crate::AuditOrigin) (its id and hash where it
    /// came from), which the new hash covers. Every text is redacted first, as in
    /// [`log_in`](Self::log_in). Nothing is written if any entry is invalid: an empty action or
    /// category, an origin hash that is not 64 lower-case hex digits, an empty source, event
    /// fields an [`AuditEntry`] could not hold ([`StoredEvent::problem`]), or (on PostgreSQL) a
    /// NUL character.
    pub fn append_imported_in(&self, tx: &Tx<'_>, entries: &[ImportedEntry]) -> Result<Vec<i64>> {
        let clean = entries.iter().map(CleanEntry::imported).collect::<Result<Vec<_>>>()?;
        Ok(append(tx, &clean)?.ids)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

/// What SQLite's integrity check of the log's table and its indexes finds wrong, as a finding:
/// its first problem and how many it found (or the error that stopped the check, when a page is
/// too damaged to be read at all), or None when the table is sound. Read-only.
fn table_damage(tx: &Tx<'_>) -> Result<Option<chain::Finding>> {
    let damaged = |problem: String, more: u64| Ok(Some(chain::Finding::Damaged { problem, more }));
    let checked = (|| -> aigentflow_persistence::Result<Vec<String>> {
        let mut stmt = tx.prepare("PRAGMA integrity_check(audit_logs)")?;
        let mut rows = stmt.query(&[])?;
        let mut problems = Vec::new();
        while let Some(r) = rows.next()? {
            let line: String = r.get(0)?;
            if line != "ok" {
                // SQLite heads its first problem with the schema's name on a line of its own.
                let problem = line.strip_prefix("*** in database main ***\n").unwrap_or(&line);
                problems.push(problem.to_owned());
            }
        }
        Ok(problems)
    })();
    match checked {
        Ok(problems) => match problems.first() {
            None => Ok(None),
            Some(first) => damaged(first.clone(), problems.len() as u64 - 1),
        },
        Err(e) if e.is_corrupt() => damaged(e.to_string(), 0),
        Err(e) => Err(e.into()),
    }
}

/// An entry checked and passed through the redaction policy, field by field: what is stored
/// and hashed.
struct CleanEntry<'e> {
    category: Clean<'e>,
    action: Clean<'e>,
    details: Option<Clean<'e>>,
    project_id: Option<Clean<'e>>,
    task_id: Option<Clean<'e>>,
    agent: Option<Clean<'e>>,
    user_id: Option<Clean<'e>>,
    ip_address: Option<Clean<'e>>,
    /// The audit event's fields, in [`EventFields::COLUMNS`](audit_chain::EventFields::COLUMNS)
    /// order.
    event: [Option<Clean<'e>>; 12],
    /// An imported entry's own time and provenance; None for an entry logged now.
    imported: Option<(chrono::DateTime<chrono::Utc>, CleanOrigin<'e>)>,
}

/// An imported entry's provenance, redacted like any text.
struct CleanOrigin<'e> {
    id: i64,
    /// `id` as the hash covers it.
    id_text: String,
    hash: &'e str,
    source: Clean<'e>,
}

/// The error for an entry's field that is given but blank.
fn blank(what: &'static str, field: &str) -> Error {
    Error::InvalidInput { what, reason: format!("the {field} is empty").into() }
}

impl<'e> CleanEntry<'e> {
    /// Every entry checked and redacted, or the first one's error.
    fn all(entries: &'e [AuditEntry]) -> Result<Vec<Self>> {
        entries.iter().map(Self::of).collect()
    }

    fn of(entry: &'e AuditEntry) -> Result<Self> {
        const WHAT: &str = "audit entry";
        let Some(category) = &entry.category else {
            return Err(Error::InvalidInput {
                what: WHAT,
                reason: "a category is required".into(),
            });
        };
        // Every text an entry gives must say something: a blank one is a mistake, not "none".
        let given = |field: &'static str, text: Option<&'e str>| match text {
            Some(t) if t.trim().is_empty() => Err(blank(WHAT, field)),
            t => Ok(t.map(Clean::text)),
        };
        let category = given("category", Some(category.as_str()))?.unwrap_or(Clean::text(""));
        let action = given("action", Some(&entry.action))?.unwrap_or(Clean::text(""));
        let (before, after) = match &entry.changes {
            Some(c) => (c.before.as_ref(), c.after.as_ref()),
            None => (None, None),
        };
        let json = |v: Option<&Value>| v.map(Clean::json).transpose();
        let event = [
            entry.severity.map(|s| Clean::text(s.as_str())),
            entry.outcome.map(|o| Clean::text(o.as_str())),
            given("actor type", entry.actor.as_ref().map(|a| a.kind.as_str()))?,
            given("actor id", entry.actor.as_ref().map(|a| a.id.as_str()))?,
            given("target type", entry.target.as_ref().map(|t| t.kind.as_str()))?,
            given("target id", entry.target.as_ref().map(|t| t.id.as_str()))?,
            given("session id", entry.session_id.as_deref())?,
            given("workflow id", entry.workflow_id.as_deref())?,
            given("correlation id", entry.correlation_id.as_deref())?,
            json(before)?,
            json(after)?,
            given("error", entry.error.as_deref())?,
        ];
        Ok(Self {
            category,
            action,
            details: entry.details.as_ref().map(Clean::json).transpose()?,
            project_id: given("project id", entry.project_id.as_ref().map(|p| p.as_str()))?,
            task_id: given("task id", entry.task_id.as_ref().map(|t| t.as_str()))?,
            agent: given("agent", entry.agent.as_deref())?,
            user_id: given("user id", entry.user_id.as_deref())?,
            ip_address: given("ip address", entry.ip_address.as_deref())?,
            event,
            imported: None,
        })
    }

    /// An imported entry checked and redacted. Its details and changes are the stored JSON
    /// text, redacted as text: the policy reads JSON in text, and leaves text it already
    /// produced as it is.
    fn imported(entry: &'e ImportedEntry) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidInput {
            what: "imported audit entry",
            reason: format!("origin id {}: {reason}", entry.origin.id).into(),
        };
        if entry.category.trim().is_empty() {
            return Err(invalid("the category is empty".into()));
        }
        if entry.action.trim().is_empty() {
            return Err(invalid("the action is empty".into()));
        }
        let hash = entry.origin.hash.as_str();
        if hash.len() != 64
            || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(format!("origin hash {hash:?} is not 64 lower-case hex digits")));
        }
        if entry.origin.source.trim().is_empty() {
            return Err(invalid("the origin source is empty".into()));
        }
        if let Some(problem) = entry.event.problem() {
            return Err(invalid(problem));
        }
        let text = |t: Option<&'e str>| t.map(Clean::text);
        Ok(Self {
            category: Clean::text(&entry.category),
            action: Clean::text(&entry.action),
            details: text(entry.details.as_deref()),
            project_id: text(entry.project_id.as_deref()),
            task_id: text(entry.task_id.as_deref()),
            agent: text(entry.agent.as_deref()),
            user_id: text(entry.user_id.as_deref()),
            ip_address: text(entry.ip_address.as_deref()),
            event: entry.event.cells().map(text),
            imported: Some((
                entry.timestamp,
                CleanOrigin {
                    id: entry.origin.id,
                    id_text: entry.origin.id.to_string(),
                    hash,
                    source: Clean::text(&entry.origin.source),
                },
            )),
        })
    }

    /// The first field whose text holds a NUL character, if any. (Details and changes are JSON
    /// text, where a NUL is written as the escape `\u0000`.)
    fn nul_field(&self) -> Option<&'static str> {
        let optional = |c: &Option<Clean<'_>>| c.as_ref().is_some_and(|c| holds_nul(c));
        [
            ("project_id", optional(&self.project_id)),
            ("task_id", optional(&self.task_id)),
            ("agent", optional(&self.agent)),
            ("action", holds_nul(&self.action)),
            ("category", holds_nul(&self.category)),
            ("details", optional(&self.details)),
            ("user_id", optional(&self.user_id)),
            ("ip_address", optional(&self.ip_address)),
            ("origin_source", self.imported.as_ref().is_some_and(|(_, o)| holds_nul(&o.source))),
        ]
        .into_iter()
        .chain(audit_chain::EventFields::COLUMNS.into_iter().zip(self.event.iter().map(optional)))
        .find_map(|(field, nul)| nul.then_some(field))
    }
}

/// Where the next appended row goes: the hash it links to and its id.
struct AppendAt {
    prev: String,
    id: i64,
}

impl AppendAt {
    /// After the chain's head as this transaction sees it. On PostgreSQL the head row is locked
    /// first and stays locked until the transaction ends, so appends from any number of
    /// connections form one chain with increasing ids; SQLite's one writer does that by itself.
    fn head(tx: &Tx<'_>) -> Result<Self> {
        let (head_id, prev, max_id) = match tx.backend() {
            Backend::Sqlite => {
                let prev = tx.query_row(HEAD, &[], |r| r.get::<Option<String>>(1))?.flatten();
                let last_id: i64 = tx.query_row(LAST_ID, &[], |r| r.get(0))?.unwrap_or(0);
                (0, prev, last_id)
            }
            Backend::Postgres => tx
                .query_row(LOCK_HEAD_PG, &[], |r| {
                    Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?, r.get::<i64>(2)?))
                })?
                .ok_or_else(|| aigentflow_persistence::Error::NotFound {
                    what: "audit chain head",
                    id: "(the one row of audit_head)".into(),
                })?,
        };
        let last = head_id.max(max_id);
        Ok(Self {
            prev: prev.unwrap_or_else(|| chain::GENESIS.to_owned()),
            id: last.checked_add(1).ok_or_else(|| no_id_after(last))?,
        })
    }
}

/// A page size of [`AuditLog::since`] or [`AuditLog::latest`]: 1 to [`MAX_PAGE`].
fn page_limit(limit: u64) -> Result<i64> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::InvalidInput {
            what: "page limit",
            reason: format!("{limit} is not between 1 and {MAX_PAGE}").into(),
        });
    }
    Ok(limit as i64)
}

/// The error for a log whose ids have reached the largest there is.
fn no_id_after(id: i64) -> Error {
    Error::Full { last_id: id }
}

/// Whether `text` holds a NUL character (U+0000), which PostgreSQL text cannot hold: an entry
/// with one is refused there, and a filter with one matches no row.
fn holds_nul(text: &str) -> bool {
    text.contains('\0')
}

/// What an append wrote: the ids, and the chain's new head (None when nothing was appended).
struct Appended {
    ids: Vec<i64>,
    head: Option<Head>,
}

/// Refuses, on PostgreSQL, entries holding a NUL character, which its text cannot hold.
fn check_for_postgres(entries: &[CleanEntry<'_>]) -> Result<()> {
    if let Some(field) = entries.iter().find_map(CleanEntry::nul_field) {
        return Err(Error::InvalidInput {
            what: "audit entry",
            reason: format!(
                "its {field} holds a NUL character (U+0000), which PostgreSQL text cannot hold"
            )
            .into(),
        });
    }
    Ok(())
}

/// Appends clean entries after the chain's head as this transaction sees it.
fn append(tx: &Tx<'_>, entries: &[CleanEntry<'_>]) -> Result<Appended> {
    if entries.is_empty() {
        return Ok(Appended { ids: Vec::new(), head: None });
    }
    if tx.backend() == Backend::Postgres {
        check_for_postgres(entries)?;
    }
    let rows = Rows::after(entries, AppendAt::head(tx)?, tx.now())?;
    match rows.narrow() {
        // The columns left out are NULL, as they would be bound.
        Some(narrow) => {
            insert(tx, &narrow, INSERT_PLAIN, APPEND_ONE_PLAIN_PG, &rows.ids, &rows.hashes)?
        }
        None => insert(tx, &rows.cells, INSERT, APPEND_ONE_PG, &rows.ids, &rows.hashes)?,
    }
    let head = rows.head();
    Ok(Appended { ids: rows.ids, head })
}

/// The rows of entries appended after a head: their ids, their hashes (each row's, which the
/// row after it links to) and their cells, every column of [`INSERT`].
struct Rows<'e> {
    ids: Vec<i64>,
    hashes: Vec<String>,
    cells: Vec<[Param<'e>; 28]>,
    /// Whether no entry has event fields or provenance.
    plain: bool,
}

impl<'e> Rows<'e> {
    /// The rows of `entries` appended after `at`, at `now`.
    fn after(entries: &'e [CleanEntry<'_>], at: AppendAt, now: DateTime<Utc>) -> Result<Self> {
        let AppendAt { prev: first_prev, id: first_id } = at;
        let hashed_now = hash_time(&time::to_db(now));
        let mut ids = Vec::with_capacity(entries.len());
        let mut hashes: Vec<String> = Vec::with_capacity(entries.len());
        fn bytes<'c>(t: &'c Option<Clean<'_>>) -> Option<&'c [u8]> {
            t.as_ref().map(|c| c.as_bytes())
        }
        let mut next = Some(first_id);
        for e in entries {
            let id = next.ok_or_else(|| no_id_after(i64::MAX))?;
            next = id.checked_add(1);
            let own_stamp = e.imported.as_ref().map(|(at, _)| hash_time(&time::to_db(*at)));
            let fields = HashedFields {
                id,
                timestamp: own_stamp.as_deref().unwrap_or(&hashed_now).as_bytes(),
                project_id: bytes(&e.project_id),
                task_id: bytes(&e.task_id),
                agent: bytes(&e.agent),
                action: e.action.as_bytes(),
                category: e.category.as_bytes(),
                details: bytes(&e.details),
                user_id: bytes(&e.user_id),
                ip_address: bytes(&e.ip_address),
                origin: e.imported.as_ref().map(|(_, o)| audit_chain::Origin {
                    id: Some(o.id_text.as_bytes()),
                    hash: Some(o.hash.as_bytes()),
                    source: Some(o.source.as_bytes()),
                }),
                event: Some(audit_chain::EventFields::from_cells(e.event.each_ref().map(bytes))),
            };
            hashes.push(chain::row_hash(hashes.last().unwrap_or(&first_prev), &fields));
            ids.push(id);
        }
        let prevs: Vec<String> =
            std::iter::once(first_prev).chain(hashes.iter().cloned()).take(entries.len()).collect();
        let cells = entries
            .iter()
            .zip(&ids)
            .zip(prevs.into_iter().zip(&hashes))
            .map(|((e, &id), (prev, hash))| {
                let (at, origin) = match &e.imported {
                    Some((at, o)) => (*at, Some(o)),
                    None => (now, None),
                };
                let [severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before, changes_after, error] =
                    e.event.each_ref().map(|c| Param::opt_clean(c.as_ref()));
                [
                    Param::int(id),
                    Param::time(at),
                    Param::opt_clean(e.project_id.as_ref()),
                    Param::opt_clean(e.task_id.as_ref()),
                    Param::opt_clean(e.agent.as_ref()),
                    Param::clean(&e.action),
                    Param::clean(&e.category),
                    Param::opt_clean(e.details.as_ref()),
                    Param::opt_clean(e.user_id.as_ref()),
                    Param::opt_clean(e.ip_address.as_ref()),
                    Param::digest(prev),
                    Param::digest(hash.clone()),
                    origin.map_or(Param::NULL, |o| Param::int(o.id)),
                    origin.map_or(Param::NULL, |o| Param::digest(o.hash)),
                    origin.map_or(Param::NULL, |o| Param::clean(&o.source)),
                    severity,
                    outcome,
                    actor_type,
                    actor_id,
                    target_type,
                    target_id,
                    session_id,
                    workflow_id,
                    correlation_id,
                    changes_before,
                    changes_after,
                    error,
                    Param::int(HASH_VERSION),
                ]
            })
            .collect();
        let plain =
            entries.iter().all(|e| e.imported.is_none() && e.event.iter().all(Option::is_none));
        Ok(Self { ids, hashes, cells, plain })
    }

    /// The rows as the columns of [`INSERT_PLAIN`], if every entry is plain: the first twelve
    /// and the version.
    fn narrow(&self) -> Option<Vec<[Param<'e>; 13]>> {
        self.plain.then(|| {
            self.cells
                .iter()
                .map(|row| {
                    std::array::from_fn(|i| if i < 12 { row[i].clone() } else { row[27].clone() })
                })
                .collect()
        })
    }

    /// The last row, which the chain's head becomes.
    fn head(&self) -> Option<Head> {
        Some(Head { id: *self.ids.last()?, hash: self.hashes.last()?.clone() })
    }
}

/// Inserts the appended rows, and on PostgreSQL moves the head onto the last: one statement for
/// one row (`append_one_pg`), else the rows and then the head.
fn insert<const N: usize>(
    tx: &Tx<'_>,
    rows: &[[Param<'_>; N]],
    insert: &str,
    append_one_pg: &str,
    ids: &[i64],
    hashes: &[String],
) -> Result<()> {
    match (tx.backend(), rows) {
        (Backend::Sqlite, _) => {
            tx.insert_rows(insert, rows)?;
        }
        (Backend::Postgres, [row]) => {
            if tx.execute(append_one_pg, row)? != 1 {
                // Nothing moved: the head row is gone, or the row was dropped on its way in
                // (a trigger that is not this schema's), which left the head nothing to name.
                let head = tx.query_row("SELECT 1 FROM audit_head", &[], |_| Ok(()))?;
                return Err(match head {
                    Some(()) => aigentflow_persistence::Error::NotStored {
                        table: "audit_logs".into(),
                        given: 1,
                        stored: 0,
                    },
                    None => aigentflow_persistence::Error::NotFound {
                        what: "audit chain head",
                        id: "(the one row of audit_head)".into(),
                    },
                }
                .into());
            }
        }
        (Backend::Postgres, _) => {
            tx.insert_rows(insert, rows)?;
            if let (Some(&last), Some(hash)) = (ids.last(), hashes.last()) {
                tx.execute(MOVE_HEAD_PG, &[Param::int(last), Param::digest(hash)])?;
            }
        }
    }
    Ok(())
}

/// A statistic's group key (column `i`) as its bytes; NULL is empty.
fn group_key(r: &Row<'_>, i: usize) -> aigentflow_persistence::Result<Vec<u8>> {
    Ok(cell_bytes(r, i)?.map(|b| b.into_owned()).unwrap_or_default())
}

/// A group key as text. A key that is not UTF-8 comes from a cell written around the log (on
/// SQLite; PostgreSQL text is UTF-8): the statistic fails as a query of the group's first row
/// `first` does, with the `CorruptRow` naming that row and its column (`column` if the row
/// reads, which the key's own bytes rule out).
/// A day's key (`column` timestamp) must also be a date, as a stored timestamp's first ten
/// characters are.
fn key_text(tx: &Tx<'_>, key: Vec<u8>, first: i64, column: &'static str) -> Result<String> {
    let checked = String::from_utf8(key).map_err(|e| e.utf8_error().to_string()).and_then(|k| {
        let day = column == "timestamp";
        if day && chrono::NaiveDate::parse_from_str(&k, "%Y-%m-%d").is_err() {
            return Err(format!("{k:?} does not start with a date"));
        }
        Ok(k)
    });
    checked.or_else(|reason| {
        let row = tx.query_row(
            &format!("SELECT {COLUMNS} FROM audit_logs WHERE id = ?1"),
            &[Param::int(first)],
            RawRow::read,
        )?;
        Err(row.and_then(|row| row.into_record().err()).unwrap_or_else(|| {
            aigentflow_persistence::Error::CorruptRow {
                table: "audit_logs",
                column,
                id: first.to_string().into(),
                reason: reason.into(),
            }
            .into()
        }))
    })
}

/// The end of the chain as seen by this transaction, or None for an empty log.
pub(crate) fn read_head(tx: &Tx<'_>) -> Result<Option<ChainHead>> {
    let rows: i64 =
        tx.query_row("SELECT COUNT(*) FROM audit_logs", &[], |r| r.get(0))?.unwrap_or(0);
    let head = tx.query_row(tx.dialect(HEAD, HEAD_PG), &[], |r| {
        Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?))
    })?;
    Ok(head.map(|(last_id, hash)| ChainHead {
        rows: rows as u64,
        last_id,
        hash: hash.unwrap_or_default(),
    }))
}

/// The full SELECT of a query or an export: filters, `order`, then limit and offset if given.
pub(crate) fn select<'q>(
    q: &'q AuditQuery,
    order: &str,
    path: ProjectPath,
    backend: Backend,
) -> Result<(String, Vec<Param<'q>>)> {
    let (clause, mut values) = where_clause(q, path, backend)?;
    let mut sql = format!("SELECT {COLUMNS} FROM audit_logs{clause} ORDER BY {order}");
    if q.limit.is_some() || q.offset.is_some() {
        // Both backends take i64: past i64::MAX a limit is no limit and an offset skips every
        // row there can be, so both are clamped there (a cast would wrap to a negative offset,
        // which SQLite reads as none and PostgreSQL refuses). No limit is i64::MAX too, as
        // PostgreSQL refuses SQLite's -1.
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sql.push_str(" LIMIT ? OFFSET ?");
        values.push(Param::int(q.limit.map_or(i64::MAX, clamp)));
        values.push(Param::int(q.offset.map_or(0, clamp)));
    }
    Ok((sql, values))
}

/// Stored details text as JSON; text that is not JSON is kept as a string.
pub(crate) fn parse_details(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// A row as stored. Its text cells are kept as bytes: the chain covers what is stored, and a row
/// written around the log may hold bytes that are not UTF-8. The hashes are hex when intact;
/// anything else is read lossily, and verification reports the row.
pub(crate) struct RawRow {
    pub id: i64,
    pub timestamp: Vec<u8>,
    pub project_id: Option<Vec<u8>>,
    pub task_id: Option<Vec<u8>>,
    pub agent: Option<Vec<u8>>,
    pub action: Vec<u8>,
    pub category: Vec<u8>,
    pub details: Option<Vec<u8>>,
    pub user_id: Option<Vec<u8>>,
    pub ip_address: Option<Vec<u8>>,
    pub prev_hash: Option<String>,
    pub row_hash: Option<String>,
    /// The provenance cells of an imported row (origin_id as its decimal text); NULL elsewhere.
    pub origin_id: Option<Vec<u8>>,
    pub origin_hash: Option<Vec<u8>>,
    pub origin_source: Option<Vec<u8>>,
    /// The audit event's fields, in [`EventFields::COLUMNS`](audit_chain::EventFields::COLUMNS)
    /// order.
    pub event: [Option<Vec<u8>>; 12],
    /// The row encoding: None (NULL) is version 1; a cell that is no integer is `Some(None)`.
    pub hash_version: Option<Option<i64>>,
    /// The first column whose cell is not of the column's type (TEXT for a text column,
    /// INTEGER for `origin_id` and `hash_version`; NULL fits any), if any.
    pub not_text: Option<&'static str>,
}

/// The error for a cell that is not UTF-8 where text is needed.
pub(crate) fn not_text(id: i64, column: &'static str, e: std::str::Utf8Error) -> Error {
    aigentflow_persistence::Error::CorruptRow {
        table: "audit_logs",
        column,
        id: id.to_string().into(),
        reason: format!("not UTF-8 text ({e}); a CSV export shows its bytes").into(),
    }
    .into()
}

impl RawRow {
    /// Reads a row selected with [`COLUMNS`].
    pub fn read(r: &Row<'_>) -> aigentflow_persistence::Result<Self> {
        let bytes =
            |i| Ok::<_, aigentflow_persistence::Error>(cell_bytes(r, i)?.map(|b| b.into_owned()));
        let hash = |i| {
            Ok::<_, aigentflow_persistence::Error>(
                cell_bytes(r, i)?.map(|b| String::from_utf8_lossy(&b).into_owned()),
            )
        };
        // Each cell must be of its column's one type: text (or NULL) for the text columns, an
        // integer (or NULL) for the two number columns. A BLOB of the same digits hashes as the
        // number does (the hash covers its decimal text), so its type is what tells the edit.
        let mut not_text = None;
        for (i, column) in EXPORT_COLUMNS.iter().enumerate().skip(1) {
            let canonical = if i == ORIGIN_ID_COLUMN || i == HASH_VERSION_COLUMN {
                matches!(
                    r.cell(i)?,
                    aigentflow_persistence::Cell::Null | aigentflow_persistence::Cell::Integer(_)
                )
            } else {
                audit_chain::is_text(r, i)?
            };
            if !canonical {
                not_text = Some(*column);
                break;
            }
        }
        let hash_version = match r.cell(HASH_VERSION_COLUMN)? {
            aigentflow_persistence::Cell::Null => None,
            aigentflow_persistence::Cell::Integer(n) => Some(Some(n)),
            _ => Some(None),
        };
        let mut event: [Option<Vec<u8>>; 12] = Default::default();
        for (i, cell) in event.iter_mut().enumerate() {
            *cell = bytes(FIRST_EVENT_COLUMN + i)?;
        }
        Ok(Self {
            not_text,
            id: r.get(0)?,
            timestamp: bytes(1)?.unwrap_or_default(),
            project_id: bytes(2)?,
            task_id: bytes(3)?,
            agent: bytes(4)?,
            action: bytes(5)?.unwrap_or_default(),
            category: bytes(6)?.unwrap_or_default(),
            details: bytes(7)?,
            user_id: bytes(8)?,
            ip_address: bytes(9)?,
            prev_hash: hash(10)?,
            row_hash: hash(11)?,
            origin_id: bytes(12)?,
            origin_hash: bytes(13)?,
            origin_source: bytes(14)?,
            event,
            hash_version,
        })
    }

    /// The timestamp as the hash covers it (see [`audit_chain::hashed_timestamp`]).
    pub fn hashed_timestamp(&self) -> Vec<u8> {
        audit_chain::hashed_timestamp(&self.timestamp)
    }

    /// The row as the chain sees it, given its [`hashed_timestamp`](Self::hashed_timestamp).
    /// A version 1 row's hash does not cover the audit event's fields, so one that holds any is
    /// not canonical (it was written around the log), and so is a row of a version this build
    /// does not know, hashed as version 2 (so that a hash that matches tells that only the
    /// version was changed).
    pub fn chain_row<'a>(&'a self, timestamp: &'a [u8]) -> ChainRow<'a> {
        let event =
            audit_chain::EventFields::from_cells(self.event.each_ref().map(|c| c.as_deref()));
        let (event, odd_version) = match self.hash_version {
            None => {
                let set = audit_chain::EventFields::COLUMNS
                    .into_iter()
                    .zip(&self.event)
                    .find_map(|(column, cell)| cell.is_some().then_some(column));
                (None, set)
            }
            Some(Some(HASH_VERSION)) => (Some(event), None),
            Some(_) => (Some(event), Some("hash_version")),
        };
        ChainRow {
            fields: HashedFields {
                id: self.id,
                timestamp,
                project_id: self.project_id.as_deref(),
                task_id: self.task_id.as_deref(),
                agent: self.agent.as_deref(),
                action: &self.action,
                category: &self.category,
                details: self.details.as_deref(),
                user_id: self.user_id.as_deref(),
                ip_address: self.ip_address.as_deref(),
                origin: audit_chain::Origin::of(
                    self.origin_id.as_deref(),
                    self.origin_hash.as_deref(),
                    self.origin_source.as_deref(),
                ),
                event,
            },
            not_canonical: self.not_text.or(odd_version).or_else(|| {
                let stored = std::str::from_utf8(&self.timestamp).ok();
                stored.and_then(time::parse_stored).is_none().then_some("timestamp")
            }),
            prev_hash: self.prev_hash.as_deref(),
            row_hash: self.row_hash.as_deref(),
        }
    }

    /// The row as text, or a `CorruptRow` naming the first cell that is not UTF-8 or the
    /// timestamp that cannot be read.
    pub fn into_record(self) -> Result<AuditRecord> {
        let id = self.id;
        let text = |column, bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|e| not_text(id, column, e.utf8_error()))
        };
        let optional = |column, bytes: Option<Vec<u8>>| bytes.map(|b| text(column, b)).transpose();
        let timestamp = text("timestamp", self.timestamp)?;
        let timestamp =
            aigentflow_persistence::Error::read_time("audit_logs", "timestamp", id, &timestamp)?;
        let details_text = optional("details", self.details)?;
        Ok(AuditRecord {
            id,
            timestamp,
            project_id: optional("project_id", self.project_id)?.map(ProjectId::new),
            task_id: optional("task_id", self.task_id)?.map(TaskId::new),
            agent: optional("agent", self.agent)?,
            action: text("action", self.action)?,
            category: text("category", self.category)?,
            details: details_text.as_deref().map(parse_details),
            details_text,
            user_id: optional("user_id", self.user_id)?,
            ip_address: optional("ip_address", self.ip_address)?,
            prev_hash: self.prev_hash,
            row_hash: self.row_hash,
            origin: match (self.origin_id, self.origin_hash, self.origin_source) {
                (None, None, None) => None,
                (id_text, hash, source) => Some(AuditOrigin {
                    id: id_text
                        .as_deref()
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|t| t.parse().ok()),
                    hash: optional("origin_hash", hash)?,
                    source: optional("origin_source", source)?,
                }),
            },
            event: {
                let mut cells: [Option<String>; 12] = Default::default();
                for ((cell, column), bytes) in
                    cells.iter_mut().zip(audit_chain::EventFields::COLUMNS).zip(self.event)
                {
                    *cell = optional(column, bytes)?;
                }
                StoredEvent::from_cells(cells)
            },
            hash_version: match self.hash_version {
                None => 1,
                Some(v) => v.unwrap_or(0),
            },
        })
    }
}

/// How a project filter reaches the project's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProjectPath {
    /// Through `idx_audit_logs_project`: one lookup in the table per row.
    Index,
    /// Through the table in id order, skipping the other projects' rows.
    Scan,
}

impl ProjectPath {
    /// The cheaper path to `project`'s rows in id order. When nearly all of the log is the
    /// project's, reading the table and skipping the few other rows beats a lookup per row (by
    /// ~7% on a 200k-row export); SQLite's planner keeps the index even with full statistics. The
    /// share is judged from the rows at 16 ids spread over the id range, one seek each.
    /// PostgreSQL's planner weighs the two paths from its statistics itself: there the filter
    /// is always the plain one.
    pub(crate) fn by_id(tx: &Tx<'_>, project: &str) -> Result<Self> {
        if tx.backend() == Backend::Postgres {
            return Ok(Self::Index);
        }
        let hits: i64 = tx
            .query_row(
                "WITH RECURSIVE
                   bounds(lo, hi) AS (
                     SELECT (SELECT min(id) FROM audit_logs), (SELECT max(id) FROM audit_logs)),
                   k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < 15)
                 SELECT count(*) FROM k, bounds
                 WHERE (SELECT project_id FROM audit_logs WHERE id >= lo + (hi - lo) * i / 15
                        ORDER BY id LIMIT 1) IS ?1",
                &[Param::text(project)],
                |r| r.get(0),
            )?
            .unwrap_or(0);
        Ok(if hits >= 15 { Self::Scan } else { Self::Index })
    }
}

/// The WHERE clause of a query, from fixed fragments, with its bound values.
pub(crate) fn where_clause<'q>(
    q: &'q AuditQuery,
    path: ProjectPath,
    backend: Backend,
) -> Result<(String, Vec<Param<'q>>)> {
    let mut parts = Vec::new();
    let mut values = Vec::new();
    let mut eq = |column: &str, v: Option<&'q str>| {
        if let Some(v) = v {
            if backend == Backend::Postgres && holds_nul(&Clean::text(v)) {
                // No stored text holds a NUL there (the server refuses it), so nothing matches;
                // binding it would be refused too.
                parts.push("FALSE".to_owned());
            } else {
                parts.push(format!("{column} = ?"));
                values.push(Param::text(v));
            }
        }
    };
    // A unary `+` keeps SQLite from using an index for the term.
    eq(
        if path == ProjectPath::Scan { "+project_id" } else { "project_id" },
        q.project_id.as_ref().map(ProjectId::as_str),
    );
    eq("task_id", q.task_id.as_ref().map(TaskId::as_str));
    eq("category", q.category.as_ref().map(Category::as_str));
    eq("agent", q.agent.as_deref());
    eq("action", q.action.as_deref());
    eq("user_id", q.user_id.as_deref());
    eq("outcome", q.outcome.map(Outcome::as_str));
    eq("actor_type", q.actor_type.as_deref());
    eq("actor_id", q.actor_id.as_deref());
    eq("target_type", q.target_type.as_deref());
    eq("target_id", q.target_id.as_deref());
    eq("session_id", q.session_id.as_deref());
    eq("workflow_id", q.workflow_id.as_deref());
    eq("correlation_id", q.correlation_id.as_deref());
    if let Some(min) = q.min_severity {
        let at_least: Vec<Severity> = Severity::ALL.into_iter().filter(|s| *s >= min).collect();
        parts.push(format!("severity IN ({})", vec!["?"; at_least.len()].join(", ")));
        values.extend(at_least.into_iter().map(|s| Param::text(s.as_str())));
    }
    let presence = |column: &str, wanted: bool| {
        format!("{column} IS {}NULL", if wanted { "NOT " } else { "" })
    };
    if let Some(wanted) = q.has_error {
        parts.push(presence("error", wanted));
    }
    if let Some(wanted) = q.has_changes {
        let (before, after) =
            (presence("changes_before", wanted), presence("changes_after", wanted));
        parts.push(format!("({before} {} {after})", if wanted { "OR" } else { "AND" }));
    }
    // Both ends are inclusive and in stored form, so a bound compares as text: a bare date
    // covers its whole day (up to 23:59:59.999, so 9999-12-31 needs no day after it).
    if let Some(start) = &q.start {
        parts.push("timestamp >= ?".into());
        values.push(Param::time(parse_bound(start, "start")?.first()));
    }
    if let Some(end) = &q.end {
        parts.push("timestamp <= ?".into());
        values.push(Param::time(parse_bound(end, "end")?.last()));
    }
    let clause =
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) };
    Ok((clause, values))
}

/// A start or end filter as a [`time::Bound`]: unreadable text and dates outside years 0000 to
/// 9999 are [`Error::InvalidInput`].
fn parse_bound(text: &str, which: &'static str) -> Result<time::Bound> {
    time::Bound::parse(text).map_err(|e| Error::InvalidInput {
        what: if which == "start" { "start date" } else { "end date" },
        reason: e.to_string().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Category;

    /// A log whose entries are stamped at the given instants, in order.
    fn log_at(stamps: &[chrono::DateTime<chrono::Utc>]) -> AuditLog {
        use aigentflow_core_states::Clock;
        #[derive(Debug)]
        struct Replay(std::sync::Mutex<Vec<chrono::DateTime<chrono::Utc>>>);
        impl Clock for Replay {
            fn now(&self) -> chrono::DateTime<chrono::Utc> {
                let mut left = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if left.len() > 1 {
                    left.remove(0)
                } else {
                    left.first().copied().unwrap_or_default()
                }
            }
        }
        let clock = std::sync::Arc::new(Replay(std::sync::Mutex::new(stamps.to_vec())));
        let options = aigentflow_persistence::Options { clock, ..Default::default() };
        let log = AuditLog::new(Database::open_in_memory_with(options).unwrap());
        for i in 0..stamps.len() {
            log.log(&AuditEntry::new(format!("a{i}"), Category::User)).unwrap();
        }
        log
    }

    fn ts(text: &str) -> chrono::DateTime<chrono::Utc> {
        time::parse(text).unwrap()
    }

    fn matching(log: &AuditLog, start: Option<&str>, end: Option<&str>) -> Result<usize> {
        let q = AuditQuery {
            start: start.map(Into::into),
            end: end.map(Into::into),
            ..AuditQuery::default()
        };
        Ok(log.query(&q)?.len())
    }

    /// The first and last days of the stored domain are whole days like any other, and a year
    /// the stored form cannot hold is refused instead of comparing wrongly as text.
    #[test]
    fn date_filters_at_the_ends_of_years_0000_to_9999_select_whole_days() {
        let log = log_at(&[
            ts("0000-01-01 00:00:00.000"),
            ts("0000-01-01 23:59:59.999"),
            ts("2026-01-05 00:00:00.000"),
            ts("2026-01-05 23:59:59.999"),
            ts("2026-01-06 00:00:00.000"),
            ts("9999-12-30 12:00:00.000"),
            ts("9999-12-31 23:59:59.999"),
        ]);
        for (start, end, expected) in [
            (None, Some("9999-12-31"), 7),
            (None, Some("9999-12-30"), 6),
            (Some("9999-12-31"), None, 1),
            (Some("9999-12-31"), Some("9999-12-31"), 1),
            (None, Some("0000-01-01"), 2),
            (Some("0000-01-01"), Some("0000-1-1"), 2),
            (Some("2026-1-5"), Some("2026-1-5"), 2),
            (None, Some("2026-1-5"), 4),
            (None, Some(" 2026-01-5 "), 4),
            (None, Some("2026-01-05T23:59:59.999Z"), 4),
            (None, Some("2026-01-05 23:59:59.998"), 3),
            (Some("2026-01-05T23:59:59.9985Z"), Some("2026-01-05"), 1),
        ] {
            assert_eq!(matching(&log, start, end).unwrap(), expected, "{start:?}..{end:?}");
        }
        for (start, end) in [
            (Some("+10000-01-01"), None),
            (None, Some("+10000-01-01")),
            (Some("-0001-01-01"), None),
            (None, Some("9999-12-31T23:00:00-01:00")),
            (Some("2026-02-30"), None),
            (None, Some("")),
        ] {
            let err = matching(&log, start, end).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{start:?}..{end:?}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any u64 limit and offset give the rows a slice of the whole list would: past
        /// i64::MAX a limit is no limit and an offset skips everything.
        #[test]
        fn any_limit_and_offset_select_the_slice_they_name(
            limit in proptest::prop_oneof![0u64..12, (i64::MAX as u64 - 2)..=u64::MAX],
            offset in proptest::prop_oneof![0u64..12, (i64::MAX as u64 - 2)..=u64::MAX],
            use_limit in proptest::bool::ANY,
        ) {
            static LOG: std::sync::LazyLock<AuditLog> = std::sync::LazyLock::new(|| {
                log_at(&(0..9).map(|i| ts(&format!("2026-01-0{} 10:00:00.000", i + 1))).collect::<Vec<_>>())
            });
            let q = AuditQuery { limit: use_limit.then_some(limit), offset: Some(offset), ..AuditQuery::default() };
            let got: Vec<i64> = LOG.query(&q).unwrap().iter().map(|r| r.id).collect();
            let all: Vec<i64> = (1..=9).rev().collect();
            let want: Vec<i64> = all
                .into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(if use_limit { usize::try_from(limit).unwrap_or(usize::MAX) } else { usize::MAX })
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_project_holding_nearly_every_row_is_read_by_scan_any_other_by_index() {
        let log = AuditLog::new(Database::open_in_memory().unwrap());
        let path = |project| log.database().read(|tx| ProjectPath::by_id(tx, project));
        assert_eq!(path("big").unwrap(), ProjectPath::Index, "empty log");
        let entry = |i: usize| {
            let project = match i % 50 {
                7 => "small",
                _ if i >= 990 => "tail",
                _ => "big",
            };
            AuditEntry { project_id: Some(project.into()), ..AuditEntry::new("a", Category::User) }
        };
        log.log_batch(&(0..1000).map(entry).collect::<Vec<_>>()).unwrap();
        assert_eq!(path("big").unwrap(), ProjectPath::Scan);
        for project in ["small", "tail", "none"] {
            assert_eq!(path(project).unwrap(), ProjectPath::Index, "{project}");
        }
    }
}
