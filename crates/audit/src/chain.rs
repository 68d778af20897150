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
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub rows: u64,
    pub head: Option<ChainHead>,
    /// The first problem found, or None if the chain is intact.
    pub finding: Option<Finding>,
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
    /// Whether the stored timestamp is in the stored form (`YYYY-MM-DD HH:MM:SS.SSS`): the hash
    /// covers the instant, so another form of it is caught here.
    pub canonical_timestamp: bool,
    pub prev_hash: Option<&'a str>,
    pub row_hash: Option<&'a str>,
}

/// Walks rows in id order and remembers the first finding.
#[derive(Debug, Default)]
pub struct Verifier {
    rows: u64,
    last: Option<(i64, String)>,
    before_last: Option<String>,
    seen: HashSet<String>,
    finding: Option<Finding>,
}

impl Verifier {
    /// Feeds the next row (in id order). `locate` finds the id of the row carrying a given
    /// `row_hash`, to tell a reordered row from a missing one.
    pub fn push(&mut self, row: &ChainRow<'_>, locate: impl Fn(&str) -> Option<i64>) {
        self.rows += 1;
        let id = row.fields.id;
        if self.finding.is_none() {
            self.finding = self.check(row, locate);
        }
        let hash = row.row_hash.unwrap_or_default().to_owned();
        self.seen.insert(hash.clone());
        self.before_last = self.last.take().map(|(_, h)| h);
        self.last = Some((id, hash));
    }

    fn check(&self, row: &ChainRow<'_>, locate: impl Fn(&str) -> Option<i64>) -> Option<Finding> {
        let id = row.fields.id;
        let (Some(prev), Some(hash)) = (row.prev_hash, row.row_hash) else {
            return Some(Finding::Unsealed { id });
        };
        let expected_prev = self.last.as_ref().map_or(GENESIS, |(_, h)| h.as_str());
        if prev != expected_prev {
            if self.before_last.as_deref() == Some(prev)
                || (self.last.is_some() && prev == GENESIS && self.rows == 2)
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
        if !row.canonical_timestamp {
            return Some(Finding::NotCanonical { id, column: "timestamp" });
        }
        None
    }

    /// Ends the walk, checking against a head kept elsewhere if given.
    pub fn finish(
        self,
        expected: Option<&ChainHead>,
        head_hash_of: impl Fn(i64) -> Option<String>,
    ) -> Verification {
        let head = self.last.as_ref().map(|(id, hash)| ChainHead {
            rows: self.rows,
            last_id: *id,
            hash: hash.clone(),
        });
        let mut finding = self.finding;
        if finding.is_none() {
            if let Some(expected) = expected {
                if self.rows < expected.rows {
                    finding = Some(Finding::Truncated {
                        expected_rows: expected.rows,
                        found_rows: self.rows,
                    });
                } else if head_hash_of(expected.last_id).as_deref() != Some(expected.hash.as_str())
                {
                    finding = Some(Finding::HeadMismatch { last_id: expected.last_id });
                }
            }
        }
        Verification { rows: self.rows, head, finding }
    }
}
