//! Streaming exports: rows go from one SQLite statement straight to the writer, one at a time,
//! so memory stays flat whatever the row count.

use std::fmt::Write as _;
use std::io::Write;
use std::str::FromStr;

use rusqlite::{params_from_iter, Row};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::chain::ChainHead;
use crate::error::{Error, Result};
use crate::model::AuditQuery;
use crate::store::{hash_time_into, read_head, select, sql_value, AuditLog};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

impl FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "jsonl" | "ndjson" => Ok(Self::Jsonl),
            _ => Err(Error::InvalidInput {
                what: "export format",
                reason: format!("{s:?} is not csv, json or jsonl"),
            }),
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// Filters (limit and offset included); rows are written oldest first.
    pub query: AuditQuery,
    /// Prefix CSV cells that start with `=`, `+`, `-`, `@`, tab or CR with `'`, so a spreadsheet
    /// shows them as text instead of running them as formulas (OWASP). On by default.
    pub neutralize_formulas: bool,
}

impl ExportOptions {
    /// Every row in `format`, formula guard on.
    pub fn new(format: ExportFormat) -> Self {
        Self { format, query: AuditQuery::default(), neutralize_formulas: true }
    }
}

/// What an export wrote, and the chain head it can be checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub rows: u64,
    /// The head of the whole chain when the export was taken (same snapshot as the rows).
    pub chain_head: Option<ChainHead>,
}

/// The columns of every export, in order.
pub const EXPORT_COLUMNS: [&str; 12] = [
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
];

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
    /// The details exactly as stored and hashed.
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

impl<'a> Details<'a> {
    fn of(text: &'a str) -> Self {
        serde_json::from_str(text).map_or(Self::Text(text), Self::Json)
    }
}

/// A row's cells borrowed from SQLite: no copy per row, and no UTF-8 check until a cell is
/// needed as text (CSV writes bytes).
struct Cells<'r> {
    id: i64,
    timestamp: &'r [u8],
    bytes: [Option<&'r [u8]>; 10],
}

impl<'r> Cells<'r> {
    /// Reads a row selected with [`COLUMNS`](crate::store::COLUMNS).
    fn read(r: &'r Row<'_>) -> rusqlite::Result<Self> {
        let cell = |i: usize| -> rusqlite::Result<Option<&'r [u8]>> {
            r.get_ref(i)?.as_bytes_or_null().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        };
        Ok(Self {
            id: r.get(0)?,
            timestamp: cell(1)?.unwrap_or_default(),
            bytes: [
                cell(2)?,
                cell(3)?,
                cell(4)?,
                cell(5)?,
                cell(6)?,
                cell(7)?,
                cell(8)?,
                cell(9)?,
                cell(10)?,
                cell(11)?,
            ],
        })
    }

    fn timestamp(&self) -> rusqlite::Result<&'r str> {
        utf8(1, self.timestamp)
    }

    fn text(&self) -> rusqlite::Result<[Option<&'r str>; 10]> {
        let mut out = [None; 10];
        for (i, (slot, cell)) in out.iter_mut().zip(self.bytes).enumerate() {
            *slot = cell.map(|b| utf8(i + 2, b)).transpose()?;
        }
        Ok(out)
    }
}

fn utf8(column: usize, bytes: &[u8]) -> rusqlite::Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| rusqlite::Error::Utf8Error(column, e))
}

/// Whether a spreadsheet would read the cell as a formula.
fn formula_like(cell: &[u8]) -> bool {
    matches!(cell.first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'))
}

impl AuditLog {
    /// Streams the matching rows to `out`, oldest first, in constant memory, and returns how many
    /// it wrote with the chain head of the same snapshot.
    pub fn export(
        &self,
        out: &mut dyn Write,
        options: &ExportOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<ExportReport> {
        let (sql, values) = select(&options.query, "id")?;
        self.database().read(|tx| {
            let conn = tx.conn();
            let chain_head = read_head(tx)?;
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(values.iter().map(sql_value)))?;
            let mut count = 0u64;
            if options.format == ExportFormat::Csv {
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(&mut *out);
                w.write_record(EXPORT_COLUMNS)?;
                let (mut id, mut stamp, mut guarded) = (String::new(), String::new(), Vec::new());
                while let Some(r) = rows.next()? {
                    let row = Cells::read(r)?;
                    id.clear();
                    write!(id, "{}", row.id).map_err(std::io::Error::other)?;
                    hash_time_into(row.timestamp()?, &mut stamp);
                    let first = [id.as_bytes(), stamp.as_bytes()];
                    for cell in first.into_iter().chain(row.bytes.iter().map(|c| c.unwrap_or_default())) {
                        if options.neutralize_formulas && formula_like(cell) {
                            guarded.clear();
                            guarded.push(b'\'');
                            guarded.extend_from_slice(cell);
                            w.write_field(&guarded)?;
                        } else {
                            w.write_field(cell)?;
                        }
                    }
                    w.write_record(std::iter::empty::<&[u8]>())?;
                    count += 1;
                    if count % 1024 == 0 {
                        progress(count);
                    }
                }
                w.flush()?;
            } else {
                let array = options.format == ExportFormat::Json;
                if array {
                    out.write_all(b"[")?;
                }
                let mut stamp = String::new();
                while let Some(r) = rows.next()? {
                    let cells = Cells::read(r)?;
                    hash_time_into(cells.timestamp()?, &mut stamp);
                    let [project_id, task_id, agent, action, category, details, user_id, ip_address, prev_hash, row_hash] =
                        cells.text()?;
                    let row = JsonRow {
                        id: cells.id,
                        timestamp: &stamp,
                        project_id,
                        task_id,
                        agent,
                        action: action.unwrap_or(""),
                        category: category.unwrap_or(""),
                        details: details.map(Details::of),
                        details_text: details,
                        user_id,
                        ip_address,
                        prev_hash,
                        row_hash,
                    };
                    if array {
                        out.write_all(if count > 0 { b",\n" } else { b"\n" })?;
                    }
                    serde_json::to_writer(&mut *out, &row)?;
                    if !array {
                        out.write_all(b"\n")?;
                    }
                    count += 1;
                    if count % 1024 == 0 {
                        progress(count);
                    }
                }
                if array {
                    out.write_all(if count > 0 { b"\n]\n" } else { b"]\n" })?;
                }
            }
            out.flush()?;
            progress(count);
            Ok(ExportReport { rows: count, chain_head })
        })
    }
}
