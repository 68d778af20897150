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
///
/// `rows` counts every row the log held when the head was taken: the rows up to `last_id`
/// (the last sealed row), and rows written around the log after it, which carry no hash. Read
/// back, a head refuses unknown fields, as a verification report does: a field the head does
/// not have would be ignored, so the file would say something `verify` never checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub rows: u64,
    pub last_id: i64,
    pub hash: String,
}

/// Why a head kept elsewhere is not one `aigentflow audit head` could have printed, so that
/// `verify` cannot hold the log against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Not the JSON of a head: not JSON, a field missing, unknown or of another type.
    #[error("not a head printed by `aigentflow audit head`: {0}")]
    NotAHead(String),
    /// A head counts at least its own row; an empty log's head is `null`.
    #[error("a head with 0 rows names no row (the head of an empty log is null)")]
    NoRows,
    /// The log's ids start at 1.
    #[error("its last_id {0} is not an id the log gives (ids start at 1)")]
    BadId(i64),
    /// A row's hash is a SHA-256 in lower-case hex.
    #[error("its hash {0:?} is not 64 lower-case hex digits")]
    BadHash(String),
}

impl ChainHead {
    /// A head as `aigentflow audit head` prints it: `null` (an empty log, which every log
    /// extends) or a head of at least one row, whose id is 1 or more and whose hash is 64
    /// lower-case hex digits. A head of a log whose last row's hash was rewritten to another
    /// form is refused too: `verify` names that row without a head.
    pub fn parse(text: &str) -> Result<Option<Self>, HeadError> {
        let head: Option<Self> =
            serde_json::from_str(text).map_err(|e| HeadError::NotAHead(e.to_string()))?;
        if let Some(head) = &head {
            head.check()?;
        }
        Ok(head)
    }

    /// Whether the head is one the log could have had (see [`parse`](Self::parse)).
    pub fn check(&self) -> Result<(), HeadError> {
        if self.rows == 0 {
            return Err(HeadError::NoRows);
        }
        if self.last_id < 1 {
            return Err(HeadError::BadId(self.last_id));
        }
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if self.hash.len() != 64 || !self.hash.bytes().all(hex) {
            return Err(HeadError::BadHash(self.hash.clone()));
        }
        Ok(())
    }
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
    /// The log holds the head's last row with the head's hash, but not the head's count of rows
    /// up to it: the head was edited, or rows up to it were deleted or added since.
    HeadCount { last_id: i64, expected_rows: u64, found_rows: u64 },
    /// The log's own count of the ids it appended (`sqlite_sequence` on SQLite, `audit_head` on
    /// PostgreSQL) goes past its last row: rows at the end were deleted.
    TailMissing { after_id: i64, through_id: i64 },
    /// The log's own count of the ids it appended is below a sealed row's id: it was set back
    /// (edited or deleted), as someone hiding a deletion at the end would.
    CounterSetBack { counter: i64, last_id: i64 },
    /// SQLite found the pages of the log's table or of its indexes damaged (its integrity
    /// check of `audit_logs`): the first problem it names, and how many more it found. Rows
    /// can be missing from what a read gives, or from an index, without the chain showing it.
    Damaged { problem: String, more: u64 },
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
            Self::HeadCount { last_id, expected_rows, found_rows } => write!(
                f,
                "the head counts {expected_rows} rows up to row {last_id}, the log holds {found_rows}: the head was edited, or rows up to it were deleted or added since"
            ),
            Self::TailMissing { after_id, through_id } => write!(
                f,
                "rows after row {after_id} are missing: the log appended rows up to {through_id}, deleted from the end"
            ),
            Self::CounterSetBack { counter, last_id } => write!(
                f,
                "the log's count of appended ids says {counter}, below row {last_id}: it was set back around the log"
            ),
            Self::Damaged { problem, more: 0 } => write!(
                f,
                "the log's table or an index of it is damaged (SQLite's integrity check of audit_logs: {problem}): its rows cannot be trusted; restore it from a backup"
            ),
            Self::Damaged { problem, more } => write!(
                f,
                "the log's table or an index of it is damaged (SQLite's integrity check of audit_logs: {problem}, and {more} more problems): its rows cannot be trusted; restore it from a backup"
            ),
        }
    }
}

/// Findings of rows a verification lists; past this many only [`Verification::findings_total`]
/// grows. The findings about the whole log (at most two) are listed after them in any case.
pub const MAX_FINDINGS: usize = 1000;

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub rows: u64,
    /// The end of the chain: the last sealed row.
    pub head: Option<ChainHead>,
    /// The first problem found, or None if the chain is intact.
    pub finding: Option<Finding>,
    /// Every problem found, in row order (at most [`MAX_FINDINGS`] of rows, then those about
    /// the whole log).
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
    /// The hash the last sealed row's fields give, where it is not the hash stored with it (a
    /// row named as edited). A next row that links to it links to that row as it was
    /// written: only the stored hash was changed, which that row's finding already names.
    last_content: Option<String>,
    /// A head kept elsewhere to hold the log against, and what the walk counted for it.
    expected: Option<Expected>,
}

/// What a head kept elsewhere is checked against: the rows it counted are the rows up to its
/// last row and the rows without a hash right after it (written around the log, as the head's
/// count includes them; an append takes an id after every row present, so it cannot come
/// between).
#[derive(Debug)]
struct Expected {
    head: ChainHead,
    /// Rows with an id up to the head's.
    through: u64,
    /// Rows without a hash after the head's row, before the next sealed row.
    unsealed_after: u64,
    /// Whether a sealed row after the head's was seen.
    sealed_after: bool,
}

impl Verifier {
    /// A verifier that also holds the log against `head`, a head kept elsewhere (see
    /// [`finish`](Self::finish)); [`Verifier::default`] holds it against none.
    pub fn against(head: Option<&ChainHead>) -> Self {
        Self {
            expected: head.map(|head| Expected {
                head: head.clone(),
                through: 0,
                unsealed_after: 0,
                sealed_after: false,
            }),
            ..Self::default()
        }
    }

    /// Feeds the next row (in id order). `locate` finds the id of the row carrying a given
    /// `row_hash`, to tell a reordered row from a missing one.
    pub fn push(&mut self, row: &ChainRow<'_>, locate: impl Fn(&str) -> Option<i64>) {
        self.rows += 1;
        let id = row.fields.id;
        if let Some(e) = &mut self.expected {
            let sealed = row.prev_hash.is_some() && row.row_hash.is_some();
            if id <= e.head.last_id {
                e.through += 1;
            } else if !sealed && !e.sealed_after {
                e.unsealed_after += 1;
            } else {
                e.sealed_after = true;
            }
        }
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
        let (finding, content) = self.check(id, prev, hash, row, locate);
        match finding {
            Some(Finding::Missing { .. }) if gap => {}
            Some(finding) => self.record(finding),
            None => {}
        }
        self.last_content = content;
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

    /// [`record`](Self::record) of a finding about the whole log (its tail, its counter, a
    /// kept head), listed past [`MAX_FINDINGS`] too: a log with many broken rows, truncated
    /// later, still says so in the list a signed report is compared with.
    fn record_whole(&mut self, finding: Finding) {
        self.total += 1;
        self.findings.push(finding);
    }

    /// The row's finding, if any, and the hash its fields give if that is not its stored hash.
    fn check(
        &self,
        id: i64,
        prev: &str,
        hash: &str,
        row: &ChainRow<'_>,
        locate: impl Fn(&str) -> Option<i64>,
    ) -> (Option<Finding>, Option<String>) {
        let expected_prev = self.last.as_ref().map_or(GENESIS, |(_, h)| h.as_str());
        // A link to the hash the row before gives (not the one stored with it) holds: that
        // row's hash alone was rewritten, and it is named as edited, not this one as missing
        // rows before it.
        let to_content = self.last_content.as_deref() == Some(prev);
        if prev != expected_prev && !self.after_unsealed && !to_content {
            if self.before_last.as_deref() == Some(prev)
                || (self.last.is_some() && prev == GENESIS && self.before_last.is_none())
            {
                let inserted = self.last.as_ref().map_or(id, |(i, _)| *i);
                return (Some(Finding::Inserted { id: inserted }), None);
            }
            if self.seen.contains(prev) || self.seen.contains(hash) || locate(prev).is_some() {
                return (Some(Finding::Reordered { id }), None);
            }
            return (Some(Finding::Missing { before_id: id }), None);
        }
        let content = row_hash(prev, &row.fields);
        if content != hash {
            return (Some(Finding::Edited { id }), Some(content));
        }
        (row.not_canonical.map(|column| Finding::NotCanonical { id, column }), None)
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

    /// Ends the walk, checking against the head kept elsewhere if one was given
    /// ([`against`](Self::against)): the log must hold as many rows, its row `last_id` must
    /// carry the head's hash (`head_hash_of` reads a row's stored hash), and the rows up to it
    /// (with the unhashed ones right after it) must be as many as the head counts.
    pub fn finish(mut self, head_hash_of: impl Fn(i64) -> Option<String>) -> Verification {
        let head = self.last.as_ref().map(|(id, hash)| ChainHead {
            rows: self.rows,
            last_id: *id,
            hash: hash.clone(),
        });
        if let Some(counter) = self.counter {
            let last_id = self.last_id.unwrap_or(0);
            let last_sealed = self.last.as_ref().map_or(0, |(id, _)| *id);
            if counter > last_id {
                self.record_whole(Finding::TailMissing { after_id: last_id, through_id: counter });
            } else if counter < last_sealed {
                self.record_whole(Finding::CounterSetBack { counter, last_id: last_sealed });
            }
        }
        if let Some(Expected { head: expected, through, unsealed_after, .. }) = self.expected.take()
        {
            if self.rows < expected.rows {
                self.record_whole(Finding::Truncated {
                    expected_rows: expected.rows,
                    found_rows: self.rows,
                });
            } else if head_hash_of(expected.last_id).as_deref() != Some(expected.hash.as_str()) {
                self.record_whole(Finding::HeadMismatch { last_id: expected.last_id });
            } else if !(through..=through + unsealed_after).contains(&expected.rows) {
                self.record_whole(Finding::HeadCount {
                    last_id: expected.last_id,
                    expected_rows: expected.rows,
                    found_rows: through,
                });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` read as a head: Ok(None) for `null`, Ok(Some) for a head, else the error's text.
    fn check(text: &str, expected: Result<Option<(u64, i64)>, &str>) {
        let got = ChainHead::parse(text)
            .map(|h| h.map(|h| (h.rows, h.last_id)))
            .map_err(|e| e.to_string());
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "{text}"),
            (Err(g), Err(e)) => assert!(g.contains(e), "{text}: {g}"),
            _ => panic!("{text}: {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn a_head_reads_back_only_as_audit_head_prints_it() {
        let hash = "0123456789abcdef".repeat(4);
        let head = |rows: i64, last_id: i64, hash: &str| {
            serde_json::json!({"rows": rows, "last_id": last_id, "hash": hash}).to_string()
        };
        check("null", Ok(None));
        check(&head(27, 27, &hash), Ok(Some((27, 27))));
        // Counts that differ from the id are the log's to judge, not the file's form.
        check(&head(1, 27, &hash), Ok(Some((1, 27))));
        check(&head(30, 27, &hash), Ok(Some((30, 27))));
        let extra = format!(r#"{{"rows":1,"last_id":1,"hash":"{hash}","note":"x"}}"#);
        check(&extra, Err("unknown field `note`"));
        let verified = format!(r#"{{"rows":1,"last_id":1,"hash":"{hash}","ok":true}}"#);
        check(&verified, Err("unknown field `ok`"));
        check(r#"{"rows":1,"last_id":1}"#, Err("missing field `hash`"));
        check(r#"{"rows":-1,"last_id":1,"hash":""}"#, Err("not a head printed"));
        check("", Err("not a head printed"));
        check(&head(0, 0, ""), Err("0 rows"));
        check(&head(0, 5, &hash), Err("0 rows"));
        check(&head(1, 0, &hash), Err("last_id 0"));
        check(&head(1, -3, &hash), Err("last_id -3"));
        for bad in [
            "",
            "ff",
            &hash.to_uppercase(),
            &format!("{hash}0"),
            &hash[1..],
            &format!("{}g", &hash[1..]),
        ] {
            check(&head(1, 1, bad), Err("is not 64 lower-case hex digits"));
        }
        check(&head(1, 1, GENESIS), Ok(Some((1, 1))));
    }
}
