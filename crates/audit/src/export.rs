//! Streaming exports: rows go from one SQLite statement straight to the writer, one at a time,
//! so memory stays flat whatever the row count.

use std::io::Write;
use std::str::FromStr;

use rusqlite::params_from_iter;
use serde::Serialize;
use serde_json::Value;

use crate::chain::ChainHead;
use crate::error::{Error, Result};
use crate::model::AuditQuery;
use crate::store::{hash_time, parse_details, read_head, select, sql_value, AuditLog, RawRow};

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
    timestamp: String,
    project_id: Option<&'a str>,
    task_id: Option<&'a str>,
    agent: Option<&'a str>,
    action: &'a str,
    category: &'a str,
    details: Option<Value>,
    /// The details exactly as stored and hashed.
    details_text: Option<&'a str>,
    user_id: Option<&'a str>,
    ip_address: Option<&'a str>,
    prev_hash: Option<&'a str>,
    row_hash: Option<&'a str>,
}

fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
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
                while let Some(r) = rows.next()? {
                    let raw = RawRow::read(r)?;
                    let id = raw.id.to_string();
                    let timestamp = hash_time(&raw.timestamp);
                    let cells = [
                        Some(id.as_str()),
                        Some(timestamp.as_str()),
                        raw.project_id.as_deref(),
                        raw.task_id.as_deref(),
                        raw.agent.as_deref(),
                        Some(raw.action.as_str()),
                        Some(raw.category.as_str()),
                        raw.details.as_deref(),
                        raw.user_id.as_deref(),
                        raw.ip_address.as_deref(),
                        raw.prev_hash.as_deref(),
                        raw.row_hash.as_deref(),
                    ];
                    for cell in cells {
                        let cell = cell.unwrap_or("");
                        let cell = if options.neutralize_formulas {
                            neutralize(cell)
                        } else {
                            cell.into()
                        };
                        w.write_field(cell.as_bytes())?;
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
                while let Some(r) = rows.next()? {
                    let raw = RawRow::read(r)?;
                    let row = JsonRow {
                        id: raw.id,
                        timestamp: hash_time(&raw.timestamp),
                        project_id: raw.project_id.as_deref(),
                        task_id: raw.task_id.as_deref(),
                        agent: raw.agent.as_deref(),
                        action: &raw.action,
                        category: &raw.category,
                        details: raw.details.as_deref().map(parse_details),
                        details_text: raw.details.as_deref(),
                        user_id: raw.user_id.as_deref(),
                        ip_address: raw.ip_address.as_deref(),
                        prev_hash: raw.prev_hash.as_deref(),
                        row_hash: raw.row_hash.as_deref(),
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
