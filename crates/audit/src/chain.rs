//! The hash chain: how a row's hash is computed (in `aigentflow_persistence::audit_chain`, where
//! the migration that adds the chain seals a legacy database's rows) and how rows are verified.
//!
//! `row_hash = hex(SHA-256(prev_hash_hex ‖ field₁ ‖ … ‖ field₁₀))` over the fields id, timestamp
//! (RFC 3339 with milliseconds and `Z`), project_id, task_id, agent, action, category, details
//! (the stored JSON text), user_id, ip_address; each field encoded as `0x00` for NULL or
//! `0x01 ‖ u64 big-endian byte length ‖ bytes`: the UTF-8 text as written, or for a row written
//! around the log whatever bytes it holds. The first row's `prev_hash` is 64 zeros.
//! An export carries every field of this list plus both hashes, so an auditor can recompute it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

pub use aigentflow_persistence::audit_chain::{row_hash, HashedFields, GENESIS};

/// The end of the chain: how many rows it has and the last row's id and hash. Kept elsewhere
/// (printed by `aigentflow audit head`), it lets `verify` catch a truncated or rewritten log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub rows: u64,
    pub last_id: i64,
    pub hash: String,
}

/// Something wrong with the chain, naming the first bad row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The row's fields no longer give its hash: it was edited.
    Edited { id: i64 },
    /// The row does not follow the one before it: it was inserted before row `id`'s successor.
    Inserted { id: i64 },
    /// One or more rows before this one are gone.
    Missing { before_id: i64 },
    /// The row links to a row that comes later, or appears again: rows were reordered.
    Reordered { id: i64 },
    /// The row carries no hash: it was written around the audit log.
    Unsealed { id: i64 },
    /// A stored value is not in its one canonical form (e.g. a timestamp rewritten to another form
    /// of the same instant, which the hash cannot tell apart but date filters can).
    NotCanonical { id: i64, column: &'static str },
    /// The log ends before the head kept elsewhere: rows at the end are gone.
    Truncated { expected_rows: u64, found_rows: u64 },
    /// The head kept elsewhere is not in the log: it was rewritten.
    HeadMismatch { last_id: i64 },
    /// The log's own count of the ids it appended (`sqlite_sequence` on SQLite, `audit_head` on
    /// PostgreSQL) goes past its last row: rows at the end were deleted.
    TailMissing { after_id: i64, through_id: i64 },
    /// The log's own count of the ids it appended is below a sealed row's id: it was set back
    /// (edited or deleted), as someone hiding a deletion at the end would.
    CounterSetBack { counter: i64, last_id: i64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited { id } => {
                write!(f, "row {id} was edited: its fields do not match its hash")
            }
            Self::Inserted { id } => {
                write!(f, "row {id} was inserted: the next row does not link to it")
            }
            Self::Missing { before_id } => write!(f, "rows before row {before_id} are missing"),
            Self::Reordered { id } => write!(f, "row {id} is out of order"),
            Self::Unsealed { id } => {
                write!(f, "row {id} has no hash: written around the audit log")
            }
            Self::NotCanonical { id, column } => {
                write!(
                    f,
                    "row {id}'s {column} is not in its stored form: rewritten around the audit log"
                )
            }
            Self::Truncated { expected_rows, found_rows } => {
                write!(f, "the log was truncated: {found_rows} rows, the head says {expected_rows}")
            }
            Self::HeadMismatch { last_id } => {
                write!(f, "row {last_id} does not carry the head's hash: the log was rewritten")
            }
            Self::TailMissing { after_id, through_id } => write!(
                f,
                "rows after row {after_id} are missing: the log appended rows up to {through_id}, deleted from the end"
            ),
            Self::CounterSetBack { counter, last_id } => write!(
                f,
                "the log's count of appended ids says {counter}, below row {last_id}: it was set back around the log"
            ),
        }
    }
}

/// Findings a verification lists; past this many only [`Verification::findings_total`] grows.
pub const MAX_FINDINGS: usize = 1000;

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub rows: u64,
    /// The end of the chain: the last sealed row.
    pub head: Option<ChainHead>,
    /// The first problem found, or None if the chain is intact.
    pub finding: Option<Finding>,
    /// Every problem found, in row order (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// How many problems were found in all.
    pub findings_total: u64,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.finding.is_none()
    }
}

/// One row as the verifier sees it.
#[derive(Debug, Clone)]
pub struct ChainRow<'a> {
    pub fields: HashedFields<'a>,
    /// The first column whose stored value is not in its one canonical form, if any: a timestamp
    /// not in the stored form (the hash covers the instant, so another form of it is caught
    /// here), a text column whose cell is not stored as TEXT (a BLOB with the same bytes
    /// hashes the same, but no filter matches it), or a number column (`origin_id`,
    /// `hash_version`) whose cell is not an INTEGER (a BLOB of the same digits hashes the same,
    /// but a bundle export or `db copy` cannot carry it).
    pub not_canonical: Option<&'static str>,
    pub prev_hash: Option<&'a str>,
    pub row_hash: Option<&'a str>,
}

/// Walks rows in id order and reports every finding. A row without a hash stands outside the
/// chain (appends link around it), so the rows after it are still checked.
///
/// Ids are gapless on both backends (every append takes the id after the last one present, in
/// the transaction that writes it, and a rollback takes it back), so an id missing before a
/// sealed row (after the row before it, or before the first) is a deleted row whatever the
/// links say: a row deleted at the
/// end and followed by one append (which links to the row before it), or rows deleted after a
/// row whose hashes were removed (whose next link is not judged).
#[derive(Debug, Default)]
pub struct Verifier {
    rows: u64,
    /// The id of the row before this one, sealed or not.
    last_id: Option<i64>,
    /// The last sealed row: what the next sealed row must link to.
    last: Option<(i64, String)>,
    before_last: Option<String>,
    /// Whether the row before this one carried no hash: it may have been a row of the chain
    /// whose hashes were removed, so a broken link right after it is not a second finding.
    after_unsealed: bool,
    seen: HashSet<String>,
    findings: Vec<Finding>,
    total: u64,
    /// The log's own count of the ids it appended, if the database keeps one.
    counter: Option<i64>,
}

impl Verifier {
    /// Feeds the next row (in id order). `locate` finds the id of the row carrying a given
    /// `row_hash`, to tell a reordered row from a missing one.
    pub fn push(&mut self, row: &ChainRow<'_>, locate: impl Fn(&str) -> Option<i64>) {
        self.rows += 1;
        let id = row.fields.id;
        // The first id is 1; an id at or below the one expected (a row written around the log
        // with an id of 0 or less) leaves no gap. A row without a hash, written around the log
        // with an id of its choosing, is named as such: the ids it skipped were never taken.
        let gap = id > self.last_id.map_or(1, |last| last.saturating_add(1)).max(1);
        self.last_id = Some(id);
        let (Some(prev), Some(hash)) = (row.prev_hash, row.row_hash) else {
            self.record(Finding::Unsealed { id });
            self.after_unsealed = true;
            return;
        };
        if gap {
            self.record(Finding::Missing { before_id: id });
        }
        match self.check(id, prev, hash, row, locate) {
            Some(Finding::Missing { .. }) if gap => {}
            Some(finding) => self.record(finding),
            None => {}
        }
        self.after_unsealed = false;
        // The walk goes on from this row's stored hash, which is what the next row links to.
        self.seen.insert(hash.to_owned());
        self.before_last = self.last.take().map(|(_, h)| h);
        self.last = Some((id, hash.to_owned()));
    }

    fn record(&mut self, finding: Finding) {
        self.total += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(finding);
        }
    }

    fn check(
        &self,
        id: i64,
        prev: &str,
        hash: &str,
        row: &ChainRow<'_>,
        locate: impl Fn(&str) -> Option<i64>,
    ) -> Option<Finding> {
        let expected_prev = self.last.as_ref().map_or(GENESIS, |(_, h)| h.as_str());
        if prev != expected_prev && !self.after_unsealed {
            if self.before_last.as_deref() == Some(prev)
                || (self.last.is_some() && prev == GENESIS && self.before_last.is_none())
            {
                let inserted = self.last.as_ref().map_or(id, |(i, _)| *i);
                return Some(Finding::Inserted { id: inserted });
            }
            if self.seen.contains(prev) || self.seen.contains(hash) || locate(prev).is_some() {
                return Some(Finding::Reordered { id });
            }
            return Some(Finding::Missing { before_id: id });
        }
        if row_hash(prev, &row.fields) != hash {
            return Some(Finding::Edited { id });
        }
        row.not_canonical.map(|column| Finding::NotCanonical { id, column })
    }

    /// The log's own count of the ids it appended, from the snapshot the rows were read in:
    /// the last id handed out (`sqlite_sequence`, which remembers rows that are gone, 0 when
    /// it holds none), or the id of the row the head names (`audit_head`). [`finish`]
    /// compares it with the rows.
    ///
    /// [`finish`]: Self::finish
    pub fn counter(&mut self, handed_out: i64) {
        self.counter = Some(handed_out);
    }

    /// Ends the walk, checking against a head kept elsewhere if given.
    pub fn finish(
        mut self,
        expected: Option<&ChainHead>,
        head_hash_of: impl Fn(i64) -> Option<String>,
    ) -> Verification {
        let head = self.last.as_ref().map(|(id, hash)| ChainHead {
            rows: self.rows,
            last_id: *id,
            hash: hash.clone(),
        });
        if let Some(counter) = self.counter {
            let last_id = self.last_id.unwrap_or(0);
            let last_sealed = self.last.as_ref().map_or(0, |(id, _)| *id);
            if counter > last_id {
                self.record(Finding::TailMissing { after_id: last_id, through_id: counter });
            } else if counter < last_sealed {
                self.record(Finding::CounterSetBack { counter, last_id: last_sealed });
            }
        }
        if let Some(expected) = expected {
            if self.rows < expected.rows {
                self.record(Finding::Truncated {
                    expected_rows: expected.rows,
                    found_rows: self.rows,
                });
            } else if head_hash_of(expected.last_id).as_deref() != Some(expected.hash.as_str()) {
                self.record(Finding::HeadMismatch { last_id: expected.last_id });
            }
        }
        Verification {
            rows: self.rows,
            head,
            finding: self.findings.first().cloned(),
            findings: self.findings,
            findings_total: self.total,
        }
    }
}
