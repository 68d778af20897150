//! Streaming exports. Rows go from one statement to the writer in blocks of about 32 KiB, so
//! memory stays flat whatever the row count (on PostgreSQL the statement is a portal read a batch
//! of rows at a time). Encoding runs on a second thread while the next block is read: reading the
//! rows out of SQLite is about two thirds of an export's work and encoding them the rest, so the
//! two overlap instead of adding up. The whole export is one read transaction (on PostgreSQL a
//! read-only REPEATABLE READ snapshot), and the chain head it reports is read in it.

use std::fmt::Write as _;
use std::io::Write;
use std::ops::Range;
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};

use aigentflow_persistence::TextRow;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::chain::ChainHead;
use crate::error::{Error, Result};
use crate::model::AuditQuery;
use crate::store::{hash_time_into, not_text, read_head, select, AuditLog, ProjectPath};

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
                reason: format!("\"{s}\" is not csv, json or jsonl").into(),
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

/// The columns of every export, in order: every column of the log, so that an auditor can
/// recompute each row's hash (the crate's `chain` module has the encoding). The twelve that
/// came first keep their places; the provenance of imported rows, the audit event's fields and
/// the row encoding's version follow them.
pub const EXPORT_COLUMNS: [&str; 28] = [
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
    "origin_id",
    "origin_hash",
    "origin_source",
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
    "hash_version",
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
    /// The audit event's fields and the provenance, each only when set; the changes as their
    /// stored JSON text, as the hash covers them.
    #[serde(flatten)]
    event: EventJson<'a>,
    /// The row encoding its hash covers: 1 when NULL (rows written before the column), else
    /// as stored, a number or (a cell written around the log) a string.
    hash_version: Stored<'a>,
}

/// A whole-number cell as stored: a number, or the cell's text when it is not one (written
/// around the log), so that a forged cell shows as what it holds, never as another value.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
#[serde(untagged)]
enum Stored<'a> {
    Number(i64),
    Text(&'a str),
}

impl<'a> Stored<'a> {
    fn of(cell: &'a str) -> Self {
        cell.parse::<i64>().map_or(Self::Text(cell), Self::Number)
    }
}

/// The later columns of a [`JsonRow`], named as in [`EXPORT_COLUMNS`], each left out when NULL.
#[derive(Serialize, Default)]
struct EventJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    origin_id: Option<Stored<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin_source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes_before: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes_after: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
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

/// Columns after the id: the timestamp and every one that follows it in [`EXPORT_COLUMNS`].
const TEXT_COLUMNS: usize = EXPORT_COLUMNS.len() - 1;

/// Bytes after which a block of rows, or of encoded output, is handed on.
const BLOCK_BYTES: usize = 32 * 1024;

/// Rows copied out of the database, for the encoder thread.
#[derive(Default)]
struct RowBlock {
    ids: Vec<i64>,
    bytes: Vec<u8>,
    /// [`TEXT_COLUMNS`] cells per row: where each sits in `bytes`, or None for NULL.
    cells: Vec<Option<Range<usize>>>,
}

impl RowBlock {
    /// Copies a row selected with [`COLUMNS`](crate::store::COLUMNS).
    fn push(&mut self, r: &TextRow<'_>) -> Result<()> {
        // The id, as its text, at the end of the block while it is read.
        let at = self.bytes.len();
        r.append(0, &mut self.bytes)?;
        let id = std::str::from_utf8(&self.bytes[at..]).ok().and_then(|id| id.parse().ok());
        self.bytes.truncate(at);
        self.ids.push(id.ok_or(aigentflow_persistence::Error::ColumnType {
            index: 0,
            expected: "a whole number",
            found: "another value",
        })?);
        for i in 1..=TEXT_COLUMNS {
            let start = self.bytes.len();
            let stored = r.append(i, &mut self.bytes)?;
            self.cells.push(stored.then_some(start..self.bytes.len()));
        }
        Ok(())
    }

    /// Empties the block, keeping its room for the next rows.
    fn clear(&mut self) {
        self.ids.clear();
        self.bytes.clear();
        self.cells.clear();
    }

    fn rows(&self) -> impl Iterator<Item = BlockRow<'_>> {
        self.ids.iter().zip(self.cells.chunks_exact(TEXT_COLUMNS)).map(|(&id, cells)| BlockRow {
            id,
            cells,
            bytes: &self.bytes,
        })
    }
}

/// One row of a [`RowBlock`].
struct BlockRow<'b> {
    id: i64,
    cells: &'b [Option<Range<usize>>],
    bytes: &'b [u8],
}

impl<'b> BlockRow<'b> {
    /// Text column `i` (0 is the timestamp) as bytes; NULL is None.
    fn bytes(&self, i: usize) -> Option<&'b [u8]> {
        self.cells.get(i).cloned().flatten().and_then(|range| self.bytes.get(range))
    }

    /// Text column `i` as text; NULL is None.
    fn text(&self, i: usize) -> Result<Option<&'b str>> {
        let column = EXPORT_COLUMNS.get(i + 1).copied().unwrap_or("?");
        self.bytes(i)
            .map(|b| std::str::from_utf8(b).map_err(|e| not_text(self.id, column, e)))
            .transpose()
    }
}

/// Whether a spreadsheet would read the cell as a formula.
fn formula_like(cell: &[u8]) -> bool {
    matches!(cell.first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'))
}

/// Turns rows into the bytes of one export format.
struct Encoder {
    format: ExportFormat,
    neutralize_formulas: bool,
    csv: csv::WriterBuilder,
    rows: u64,
    id: String,
    stamp: String,
    guarded: Vec<u8>,
}

impl Encoder {
    fn new(options: &ExportOptions) -> Self {
        let mut csv = csv::WriterBuilder::new();
        csv.terminator(csv::Terminator::CRLF);
        Self {
            format: options.format,
            neutralize_formulas: options.neutralize_formulas,
            csv,
            rows: 0,
            id: String::new(),
            stamp: String::new(),
            guarded: Vec::new(),
        }
    }

    /// Encodes the blocks as they come and hands on the output in blocks of its own.
    /// Spent blocks go back on `spent`, so that the reading side fills the same few blocks
    /// instead of growing a new one from nothing for every 32 KiB of rows.
    fn run(
        mut self,
        blocks: Receiver<RowBlock>,
        spent: Sender<RowBlock>,
        encoded: Sender<Vec<u8>>,
    ) -> Result<()> {
        let mut out = Vec::with_capacity(2 * BLOCK_BYTES);
        self.begin(&mut out)?;
        for mut block in blocks {
            self.block(&mut out, &block)?;
            block.clear();
            // The reading side may have finished; the block is then dropped here.
            let _ = spent.send(block);
            if out.len() >= BLOCK_BYTES {
                let full = std::mem::replace(&mut out, Vec::with_capacity(2 * BLOCK_BYTES));
                if encoded.send(full).is_err() {
                    // The reading side stopped and reports why.
                    return Ok(());
                }
            }
        }
        self.end(&mut out);
        // As above, a closed channel means the reading side stopped and reports why.
        let _ = encoded.send(out);
        Ok(())
    }

    fn begin(&mut self, out: &mut Vec<u8>) -> Result<()> {
        match self.format {
            ExportFormat::Csv => {
                let mut w = self.csv.from_writer(out);
                w.write_record(EXPORT_COLUMNS)?;
                w.flush()?;
            }
            ExportFormat::Json => out.push(b'['),
            ExportFormat::Jsonl => {}
        }
        Ok(())
    }

    fn block(&mut self, out: &mut Vec<u8>, block: &RowBlock) -> Result<()> {
        if self.format == ExportFormat::Csv {
            let mut w = self.csv.from_writer(&mut *out);
            for row in block.rows() {
                self.csv_row(&mut w, &row)?;
            }
            w.flush()?;
        } else {
            for row in block.rows() {
                self.json_row(out, &row)?;
            }
        }
        Ok(())
    }

    fn csv_row(&mut self, w: &mut csv::Writer<&mut Vec<u8>>, row: &BlockRow<'_>) -> Result<()> {
        hash_time_into(row.text(0)?.unwrap_or_default(), &mut self.stamp);
        self.id.clear();
        write!(self.id, "{}", row.id).map_err(std::io::Error::other)?;
        let first = [self.id.as_bytes(), self.stamp.as_bytes()];
        // The last column is hash_version, NULL (version 1) on rows written before it existed.
        let rest = (1..TEXT_COLUMNS)
            .map(|i| row.bytes(i).unwrap_or(if i == TEXT_COLUMNS - 1 { b"1" } else { b"" }));
        for cell in first.into_iter().chain(rest) {
            if self.neutralize_formulas && formula_like(cell) {
                self.guarded.clear();
                self.guarded.push(b'\'');
                self.guarded.extend_from_slice(cell);
                w.write_field(&self.guarded)?;
            } else {
                w.write_field(cell)?;
            }
        }
        w.write_record(std::iter::empty::<&[u8]>())?;
        self.rows += 1;
        Ok(())
    }

    fn json_row(&mut self, out: &mut Vec<u8>, row: &BlockRow<'_>) -> Result<()> {
        hash_time_into(row.text(0)?.unwrap_or_default(), &mut self.stamp);
        let mut text = [None; TEXT_COLUMNS - 1];
        for (i, slot) in text.iter_mut().enumerate() {
            *slot = row.text(i + 1)?;
        }
        let [project_id, task_id, agent, action, category, details, user_id, ip_address, prev_hash, row_hash, origin_id, origin_hash, origin_source, severity, outcome, actor_type, actor_id, target_type, target_id, session_id, workflow_id, correlation_id, changes_before, changes_after, error, hash_version] =
            text;
        let json = JsonRow {
            id: row.id,
            timestamp: &self.stamp,
            project_id,
            task_id,
            agent,
            action: action.unwrap_or_default(),
            category: category.unwrap_or_default(),
            details: details.map(Details::of),
            details_text: details,
            user_id,
            ip_address,
            prev_hash,
            row_hash,
            event: EventJson {
                origin_id: origin_id.map(Stored::of),
                origin_hash,
                origin_source,
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
            },
            hash_version: hash_version.map_or(Stored::Number(1), Stored::of),
        };
        if self.format == ExportFormat::Json {
            out.extend_from_slice(if self.rows > 0 { b",\n" } else { b"\n" });
        }
        serde_json::to_writer(&mut *out, &json)?;
        if self.format == ExportFormat::Jsonl {
            out.push(b'\n');
        }
        self.rows += 1;
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.format == ExportFormat::Json {
            out.extend_from_slice(if self.rows > 0 { b"\n]\n" } else { b"]\n" });
        }
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
        self.database().read(|tx| {
            let chain_head = read_head(tx)?;
            let path = match &options.query.project_id {
                Some(project) => ProjectPath::by_id(tx, project.as_str())?,
                None => ProjectPath::Index,
            };
            let (sql, values) = select(&options.query, "id", path, tx.backend())?;
            let encoder = Encoder::new(options);
            let sink = &mut *out;
            let count = std::thread::scope(|scope| {
                // One block may wait for the encoder while it encodes another and the next is
                // read; the reading side writes out what the encoder has finished each time it
                // hands over a block. The writer stays on this thread: it need not be `Send`.
                let (to_encoder, blocks) = mpsc::sync_channel::<RowBlock>(1);
                let (to_writer, encoded) = mpsc::channel::<Vec<u8>>();
                let (to_reader, spent) = mpsc::channel::<RowBlock>();
                let worker = std::thread::Builder::new()
                    .name("audit-export".into())
                    .spawn_scoped(scope, move || encoder.run(blocks, to_reader, to_writer))?;
                let read = move || -> Result<u64> {
                    let mut block = RowBlock::default();
                    let mut count = 0u64;
                    let mut encoder_stopped = false;
                    let streamed = tx.text_rows(&sql, &values, |r| -> Result<()> {
                        block.push(r)?;
                        count += 1;
                        if count.is_multiple_of(1024) {
                            progress(count);
                        }
                        if block.bytes.len() >= BLOCK_BYTES {
                            let next = spent.try_recv().unwrap_or_default();
                            if to_encoder.send(std::mem::replace(&mut block, next)).is_err() {
                                encoder_stopped = true;
                                return Err(std::io::Error::other("the encoder stopped").into());
                            }
                            for piece in encoded.try_iter() {
                                sink.write_all(&piece)?;
                            }
                        }
                        Ok(())
                    });
                    if encoder_stopped {
                        // The encoder stopped; its error is the one to report.
                        return Ok(count);
                    }
                    streamed?;
                    if to_encoder.send(block).is_ok() {
                        drop(to_encoder);
                        for piece in encoded {
                            sink.write_all(&piece)?;
                        }
                    }
                    progress(count);
                    Ok(count)
                };
                let count = read();
                worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                count
            })?;
            out.flush()?;
            Ok(ExportReport { rows: count, chain_head })
        })
    }
}
