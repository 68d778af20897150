//! The audit chain's row hash, and the one-time sealing of rows that a legacy database brings.
//!
//! It lives here, below the audit crate, because sealing is part of migrating: the migration that
//! adds the chain (V3) seals the rows present when it runs, once, in its own transaction. Nothing
//! else ever seals a row, so a row written around the log later stays unsealed and `verify`
//! reports it.
//!
//! `row_hash = hex(SHA-256(prev_hash_hex ‖ field₁ ‖ … ‖ field₁₀))` over the fields id, timestamp
//! (RFC 3339 with milliseconds and `Z`), project_id, task_id, agent, action, category, details
//! (the stored JSON text), user_id, ip_address; each field encoded as `0x00` for NULL or
//! `0x01 ‖ u64 big-endian byte length ‖ bytes`: the UTF-8 text as written, or for a row written
//! around the log whatever bytes it holds. The first row's `prev_hash` is 64 zeros.
//!
//! A row imported from another database's bundle carries its provenance (migrations V12 on
//! SQLite, V6 on PostgreSQL): `origin_id`, `origin_hash` and `origin_source`, the row's id and
//! hash in the database it came from and that database's location. When any of the three is not
//! NULL, the three are hashed after the ten fields, encoded the same way (`origin_id` as its
//! decimal text), so provenance cannot be edited unnoticed; a row without provenance hashes
//! exactly as before, so every row written before provenance existed still verifies.
//!
//! That is version 1 of the row encoding, the encoding of every row whose `hash_version` is
//! NULL. Version 2 (migrations V14 on SQLite, V9 on PostgreSQL), the encoding of every row
//! appended since, covers the audit event's fields too and has no optional part:
//! `hex(SHA-256(prev_hash_hex ‖ "aigentflow-audit/2" ‖ field₁ ‖ … ‖ field₂₅))`, the tag and the
//! fields encoded as above: the ten fields of version 1, then severity, outcome, actor_type,
//! actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before,
//! changes_after, error, then origin_id, origin_hash and origin_source, NULL or not. The tag
//! makes a version 2 row's hash unlike any version 1 hash, so a row's version cannot be changed
//! unseen; a version 1 row that holds an event field the hash does not cover is reported.

use std::borrow::Cow;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use aigentflow_core_states::time;

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields a row hash covers, in order, as the bytes that are stored.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    pub id: i64,
    pub timestamp: &'a [u8],
    pub project_id: Option<&'a [u8]>,
    pub task_id: Option<&'a [u8]>,
    pub agent: Option<&'a [u8]>,
    pub action: &'a [u8],
    pub category: &'a [u8],
    pub details: Option<&'a [u8]>,
    pub user_id: Option<&'a [u8]>,
    pub ip_address: Option<&'a [u8]>,
    /// The row's provenance, for a row imported from another database; None for every other
    /// row (and for a row whose three provenance cells are all NULL).
    pub origin: Option<Origin<'a>>,
    /// The audit event's fields of a version 2 row; None for a version 1 row.
    pub event: Option<EventFields<'a>>,
}

/// The tag a version 2 row's hash starts with, after the previous hash.
pub const VERSION_2_TAG: &[u8] = b"aigentflow-audit/2";

/// The audit event's fields (version 2 of the row encoding), as the bytes that are stored. A
/// cell that is NULL is None.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventFields<'a> {
    pub severity: Option<&'a [u8]>,
    pub outcome: Option<&'a [u8]>,
    pub actor_type: Option<&'a [u8]>,
    pub actor_id: Option<&'a [u8]>,
    pub target_type: Option<&'a [u8]>,
    pub target_id: Option<&'a [u8]>,
    pub session_id: Option<&'a [u8]>,
    pub workflow_id: Option<&'a [u8]>,
    pub correlation_id: Option<&'a [u8]>,
    pub changes_before: Option<&'a [u8]>,
    pub changes_after: Option<&'a [u8]>,
    pub error: Option<&'a [u8]>,
}

impl<'a> EventFields<'a> {
    /// The columns of the event fields, in the order the hash covers them.
    pub const COLUMNS: [&'static str; 12] = [
        "severity",
        "outcome",
        "actor_type",
        "actor_id",
        "target_type",
        "target_id",
        "session_id",
        "workflow_id",
        "correlation_id",
        "changes_before",
        "changes_after",
        "error",
    ];

    /// The fields in [`COLUMNS`](Self::COLUMNS) order.
    pub fn cells(&self) -> [Option<&'a [u8]>; 12] {
        [
            self.severity,
            self.outcome,
            self.actor_type,
            self.actor_id,
            self.target_type,
            self.target_id,
            self.session_id,
            self.workflow_id,
            self.correlation_id,
            self.changes_before,
            self.changes_after,
            self.error,
        ]
    }

    /// The fields of cells given in [`COLUMNS`](Self::COLUMNS) order.
    pub fn from_cells(c: [Option<&'a [u8]>; 12]) -> Self {
        let [severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before, changes_after, error] =
            c;
        Self {
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
        }
    }
}

/// Where an imported row came from, as the bytes that are stored: `id` is the decimal text of
/// `origin_id`. A cell that is NULL is None.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub id: Option<&'a [u8]>,
    pub hash: Option<&'a [u8]>,
    pub source: Option<&'a [u8]>,
}

impl<'a> Origin<'a> {
    /// The provenance of three stored cells: None when all three are NULL.
    pub fn of(
        id: Option<&'a [u8]>,
        hash: Option<&'a [u8]>,
        source: Option<&'a [u8]>,
    ) -> Option<Self> {
        (id.is_some() || hash.is_some() || source.is_some()).then_some(Self { id, hash, source })
    }
}

/// The hash of a row given the previous row's hash: version 2 of the encoding when the row has
/// [`EventFields`], else version 1.
pub fn row_hash(prev_hash: &str, f: &HashedFields<'_>) -> String {
    fn field(h: &mut Sha256, field: Option<&[u8]>) {
        match field {
            None => h.update([0u8]),
            Some(bytes) => {
                h.update([1u8]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    if f.event.is_some() {
        field(&mut h, Some(VERSION_2_TAG));
    }
    let id = f.id.to_string();
    for cell in [
        Some(id.as_bytes()),
        Some(f.timestamp),
        f.project_id,
        f.task_id,
        f.agent,
        Some(f.action),
        Some(f.category),
        f.details,
        f.user_id,
        f.ip_address,
    ] {
        field(&mut h, cell);
    }
    if let Some(event) = f.event {
        for cell in event.cells() {
            field(&mut h, cell);
        }
    }
    // Version 2 covers the provenance cells always; version 1 only when one is set.
    let origin = f.origin.map(|o| [o.id, o.hash, o.source]);
    if let Some(cells) = origin.or(f.event.map(|_| [None; 3])) {
        for cell in cells {
            field(&mut h, cell);
        }
    }
    hex::encode(h.finalize())
}

/// A stored timestamp as the hash covers it and exports show it: RFC 3339 with milliseconds,
/// or the stored text if unreadable.
pub fn hash_time(stored: &str) -> String {
    let mut out = String::with_capacity(24);
    hash_time_into(stored, &mut out);
    out
}

/// [`hash_time`] into a reused buffer. The stored form needs no parsing to print: it is the same
/// text with `T` and `Z` (the date is still checked, so an impossible one stays as stored).
pub fn hash_time_into(stored: &str, out: &mut String) {
    out.clear();
    if time::parse_stored(stored).is_some() {
        out.push_str(&stored[..10]);
        out.push('T');
        out.push_str(&stored[11..]);
        out.push('Z');
    } else {
        match time::parse(stored) {
            Some(ts) => out.push_str(&time::to_rfc3339(ts)),
            None => out.push_str(stored),
        }
    }
}

/// The timestamp cell as the hash covers it: [`hash_time`] of stored text, else the bytes.
pub fn hashed_timestamp(stored: &[u8]) -> Vec<u8> {
    std::str::from_utf8(stored).map_or_else(|_| stored.to_vec(), |t| hash_time(t).into_bytes())
}

/// Seals every row without a hash, in id order, after the last sealed one. Called only by the
/// migration that adds the chain, inside its transaction.
pub(crate) fn seal_legacy_rows(conn: &Connection) -> rusqlite::Result<usize> {
    let (after, mut prev): (i64, String) = conn
        .query_row(
            "SELECT id, row_hash FROM audit_logs WHERE row_hash IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_owned()));
    let mut stmt = conn.prepare(
        "SELECT id, timestamp, project_id, task_id, agent, action, category, details, user_id,
                ip_address
         FROM audit_logs WHERE row_hash IS NULL AND id > ?1 ORDER BY id",
    )?;
    let mut update =
        conn.prepare("UPDATE audit_logs SET prev_hash = ?1, row_hash = ?2 WHERE id = ?3")?;
    let mut rows = stmt.query([after])?;
    let mut sealed = 0;
    while let Some(r) = rows.next()? {
        let cells =
            (1..=9).map(|i| sqlite_cell_bytes(r, i)).collect::<rusqlite::Result<Vec<_>>>()?;
        let cell = |i: usize| cells[i - 1].as_deref();
        let id: i64 = r.get(0)?;
        let timestamp = hashed_timestamp(cell(1).unwrap_or_default());
        let fields = HashedFields {
            id,
            timestamp: &timestamp,
            project_id: cell(2),
            task_id: cell(3),
            agent: cell(4),
            action: cell(5).unwrap_or_default(),
            category: cell(6).unwrap_or_default(),
            details: cell(7),
            user_id: cell(8),
            ip_address: cell(9),
            origin: None,
            event: None,
        };
        let hash = row_hash(&prev, &fields);
        update.execute(params![prev, hash, id])?;
        prev = hash;
        sealed += 1;
    }
    if sealed > 0 {
        tracing::info!(rows = sealed, "sealed legacy audit rows into the hash chain");
    }
    Ok(sealed)
}

/// Text cell `i` of a row as its bytes; NULL is None. A cell stored as a number (written around
/// the log) is read as the text SQLite would cast it to; [`is_text`] tells such cells apart.
pub fn cell_bytes<'r>(r: &crate::Row<'r>, i: usize) -> crate::Result<Option<Cow<'r, [u8]>>> {
    Ok(cell_as_bytes(r.cell(i)?))
}

/// A cell as the bytes the hash covers.
fn cell_as_bytes(cell: crate::Cell<'_>) -> Option<Cow<'_, [u8]>> {
    match cell {
        crate::Cell::Null => None,
        crate::Cell::Text(t) => Some(Cow::Borrowed(t.as_bytes())),
        crate::Cell::Blob(b) => Some(Cow::Borrowed(b)),
        crate::Cell::Integer(n) => Some(Cow::Owned(n.to_string().into_bytes())),
        crate::Cell::Real(f) => Some(Cow::Owned(f.to_string().into_bytes())),
    }
}

/// Whether cell `i` is stored as TEXT (or NULL), as every text column of the log is written.
pub fn is_text(r: &crate::Row<'_>, i: usize) -> crate::Result<bool> {
    Ok(matches!(r.cell(i)?, crate::Cell::Null | crate::Cell::Text(_)))
}

/// [`cell_bytes`] of a SQLite row, for sealing inside the migration.
fn sqlite_cell_bytes<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<Cow<'r, [u8]>>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(Cow::Borrowed(b)),
        ValueRef::Integer(n) => Some(Cow::Owned(n.to_string().into_bytes())),
        ValueRef::Real(f) => Some(Cow::Owned(f.to_string().into_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding of the ten fields as it was before provenance existed, written out again.
    fn legacy_hash(prev: &str, cells: [Option<&[u8]>; 10]) -> String {
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        for cell in cells {
            match cell {
                None => h.update([0u8]),
                Some(b) => {
                    h.update([1u8]);
                    h.update((b.len() as u64).to_be_bytes());
                    h.update(b);
                }
            }
        }
        hex::encode(h.finalize())
    }

    proptest::proptest! {
        /// A row without provenance hashes exactly as every row did before provenance existed
        /// (so legacy rows still verify), and any provenance, or any change to one of its three
        /// cells, gives another hash (so provenance cannot be added, removed or edited unseen).
        #[test]
        fn provenance_is_hashed_only_when_present_and_every_cell_of_it_counts(
            id in proptest::prelude::any::<i64>(),
            texts in proptest::collection::vec(proptest::option::of(".{0,12}"), 8),
            origin_id in proptest::option::of(proptest::prelude::any::<i64>()),
            origin_hash in proptest::option::of("[0-9a-f]{64}"),
            origin_source in proptest::option::of(".{0,20}"),
        ) {
            let b = |i: usize| texts[i].as_deref().map(str::as_bytes);
            let id_text = id.to_string();
            let fields = HashedFields {
                id,
                timestamp: b"2026-01-01T00:00:00.000Z",
                project_id: b(0),
                task_id: b(1),
                agent: b(2),
                action: b(3).unwrap_or(b"a"),
                category: b(4).unwrap_or(b"user"),
                details: b(5),
                user_id: b(6),
                ip_address: b(7),
                origin: None,
                event: None,
            };
            let legacy = legacy_hash(GENESIS, [
                Some(id_text.as_bytes()), Some(fields.timestamp), fields.project_id,
                fields.task_id, fields.agent, Some(fields.action), Some(fields.category),
                fields.details, fields.user_id, fields.ip_address,
            ]);
            proptest::prop_assert_eq!(row_hash(GENESIS, &fields), legacy.clone());
            let oid = origin_id.map(|n| n.to_string());
            let origin = Origin::of(
                oid.as_deref().map(str::as_bytes),
                origin_hash.as_deref().map(str::as_bytes),
                origin_source.as_deref().map(str::as_bytes),
            );
            let with = HashedFields { origin, ..fields };
            let hashed = row_hash(GENESIS, &with);
            proptest::prop_assert_eq!(hashed == legacy, origin.is_none());
            if let Some(o) = origin {
                for edited in [
                    Origin { id: Some(b"-1x"), ..o },
                    Origin { hash: o.hash.map_or(Some(&b"0"[..]), |_| None), ..o },
                    Origin { source: Some(b"elsewhere\x00"), ..o },
                ] {
                    let other = row_hash(GENESIS, &HashedFields { origin: Some(edited), ..fields });
                    proptest::prop_assert_ne!(&other, &hashed);
                }
            }
        }

        /// Version 2 covers every event field and every provenance cell, set or NULL, and its
        /// hash is unlike the version 1 hash of the same fields, so a row's version cannot be
        /// changed unseen.
        #[test]
        fn version_2_covers_every_cell_and_differs_from_version_1(
            id in proptest::prelude::any::<i64>(),
            cells in proptest::collection::vec(proptest::option::of(".{0,8}"), 12),
            origin_source in proptest::option::of(".{0,8}"),
            at in 0usize..15,
        ) {
            let event_cells: [Option<&[u8]>; 12] =
                std::array::from_fn(|i| cells[i].as_deref().map(str::as_bytes));
            let origin = Origin::of(None, None, origin_source.as_deref().map(str::as_bytes));
            let fields = HashedFields {
                id,
                timestamp: b"2026-01-01T00:00:00.000Z",
                project_id: None,
                task_id: None,
                agent: None,
                action: b"a",
                category: b"user",
                details: None,
                user_id: None,
                ip_address: None,
                origin,
                event: Some(EventFields::from_cells(event_cells)),
            };
            let v2 = row_hash(GENESIS, &fields);
            proptest::prop_assert_ne!(&v2, &row_hash(GENESIS, &HashedFields { event: None, ..fields }));
            // One cell changed (set where NULL, NULL where set): another hash.
            fn flip(c: Option<&[u8]>) -> Option<&[u8]> {
                if c.is_some() { None } else { Some(b"") }
            }
            let edited = if at < 12 {
                let mut changed = event_cells;
                changed[at] = flip(changed[at]);
                HashedFields { event: Some(EventFields::from_cells(changed)), ..fields }
            } else {
                let o = origin.unwrap_or(Origin { id: None, hash: None, source: None });
                let o = match at {
                    12 => Origin { id: flip(o.id), ..o },
                    13 => Origin { hash: flip(o.hash), ..o },
                    // Bytes no text is: unlike any source drawn above.
                    _ => Origin { source: Some(b"\xff"), ..o },
                };
                HashedFields { origin: Some(o), ..fields }
            };
            proptest::prop_assert_ne!(&v2, &row_hash(GENESIS, &edited));
        }
    }
}
